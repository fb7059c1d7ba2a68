"""The exercises' hidden tests, judged where the student's code cannot reach.

A hidden test has three parts: ``draw`` makes its inputs from a seed, ``collect`` calls the
student's code on them (in the student's kernel) and returns plain results, and ``judge``
computes what it expects and compares.  In a test cell the hidden block is one call,
``hidden_test(exercise, test, globals())``: it draws and collects; then, in any run but a
graded one, it judges the results at once (so a run of the solutions checks them), and in a
graded one it shows them as an output of the cell, for the grader.

When a class is graded, no judgement in the kernel could count: everything in the
student's kernel is the student's to change — the test's frames, the package's modules,
even the replies the kernel sends.  The grader takes the results the cell showed, draws the
inputs again from the seed it gave the kernel (``RECSYS_HIDDEN_SEED``), and judges them in
its own process, with the parameters of the course's own notebook and its own split of the
data; a cell scores only if that judgement passes.  So a test passes only with results that
are right for inputs drawn for that run: knowing this file does not help.

The checks of figures recompute the student's figures from the parameters of the student's
model (not from its ``predict``, which could look the answers up).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["MIME", "HiddenCheckFailed", "TESTS", "hidden_test", "judge_payload", "seed_of"]

MIME = "application/vnd.recsys.hidden+json"
_MAX_VALUES = 5_000_000  # numbers in one result array (the largest model holds ~80,000)


class HiddenCheckFailed(AssertionError):
    """A hidden check failed: ``label`` says which, in words; ``detail`` gives the figures
    (for the teacher: never shown on a student's feedback page)."""

    def __init__(self, label: str, detail: str = ""):
        super().__init__(f"{label}: {detail}" if detail else label)
        self.label, self.detail = label, detail


def _check(condition, label: str, detail: str = "") -> None:
    if not condition:
        raise HiddenCheckFailed(label, detail)


# ---- plain data in and out -------------------------------------------------------------

def _pack(values) -> dict:
    a = np.array(values, dtype=np.float64, order="C")  # (ascontiguousarray makes 0-d 1-d)
    return {"shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode("ascii")}


def _unpack(packed, label: str) -> np.ndarray:
    try:
        shape = [int(n) for n in packed["shape"]]
        raw = base64.b64decode(packed["b64"], validate=True)
        _check(all(n >= 0 for n in shape) and int(np.prod(shape)) <= _MAX_VALUES
               and len(raw) == 8 * int(np.prod(shape)), label, "a malformed array")
        return np.frombuffer(raw, dtype=np.float64).reshape(shape)
    except HiddenCheckFailed:
        raise
    except Exception as exc:
        raise HiddenCheckFailed(label, f"a malformed array ({type(exc).__name__})") from None


def _number(value, label: str) -> float:
    _check(isinstance(value, (int, float)) and not isinstance(value, bool), label, "not a number")
    return float(value)


def _numbers(values, label: str) -> list[float]:
    _check(isinstance(values, list), label, "not a list")
    return [_number(v, label) for v in values]


def _model(model, names) -> dict:
    """A model's variables, by name, as packed arrays (read with numpy, not its methods)."""
    return {n: _pack(np.asarray(getattr(model, n).numpy(), dtype=float)) for n in names}


def _vars(results, key, names, label) -> dict:
    _check(isinstance(results.get(key), dict), label, f"no {key}")
    return {n: _unpack(results[key].get(n), f"{label} ({n})") for n in names}


# ---- the data a check of figures recomputes --------------------------------------------

def _splits(params, lab=False, rating=True):
    """The notebook's splits, made again from the data with its parameters."""
    from .datasets import load
    from .interactions import Interactions, train_test_split
    from .tuning import validation_split

    fields = ["user_id", "book_id", "rating"] if rating else ["user_id", "book_id"]
    frame = load("comics_reviews", fields=fields, lab=lab)
    data = Interactions.from_frame(frame) if rating else Interactions.from_frame(frame, rating=None)
    train, test = train_test_split(data, test_size=params["TEST_SIZE"], seed=params["SEED"])
    fit_part, validation = validation_split(train, params["VALIDATION_SIZE"], seed=params["SEED"] + 1)
    return data, train, test, fit_part, validation


def _comparable(test, params) -> bool:
    return len(test) >= params["MIN_TEST_RATINGS"] and np.ptp(test.rating) > 0


def _lfm_predict(v, users, items):
    p = v["alpha"] + v["beta_u"][users] + v["beta_i"][items]
    if "gamma_u" in v:
        p = p + np.sum(v["gamma_u"][users] * v["gamma_i"][items], axis=1)
    return p


def _mse_of(p, ratings) -> float:
    return float(np.mean(np.square(p - np.asarray(ratings, dtype=float))))


# ---- 5.1 -------------------------------------------------------------------------------

def _draw_mse(rng):
    return [(rng.normal(3.0, 2.0, n), rng.integers(0, 6, n)) for n in rng.integers(1, 3_000, 5)]


def _collect_mse(ns, inputs):
    mse = ns["mse"]
    return {"module": str(getattr(mse, "__module__", None)),
            "values": [[float(mse(p.copy(), y.copy())), float(mse(list(p), list(y)))]
                       for p, y in inputs]}


def _judge_mse(inputs, results, params):
    _check(results.get("module") != "recsys_helpers.metrics", "mse is your own", "write mse yourself")
    values = results.get("values")
    _check(isinstance(values, list) and len(values) == len(inputs), "mse on random pairs", "results missing")
    for (p, y), pair in zip(inputs, values):
        expected = float(np.sum(np.square(p - y)) / p.size)
        for got in _numbers(pair, "mse on random pairs"):
            _check(abs(got - expected) <= 1e-9 * max(1.0, expected), "mse on random pairs",
                   f"{p.size} pairs: expected {expected!r}, got {got!r}")


def _draw_bias_model(rng):
    cases = []
    for _ in range(3):
        nu, ni, n = (int(x) for x in (*rng.integers(2, 60, 2), rng.integers(1, 200)))
        cases.append(dict(nu=nu, ni=ni, mu=float(rng.uniform(1, 5)), lamb=float(rng.uniform(0.01, 2)),
                          seed=int(rng.integers(1_000)), bu=rng.normal(0, 1, nu).astype(np.float32),
                          bi=rng.normal(0, 1, ni).astype(np.float32), u=rng.integers(0, nu, n),
                          i=rng.integers(0, ni, n), r=rng.integers(0, 6, n).astype(np.float32)))
    return cases


def _collect_bias_model(ns, cases):
    import tensorflow as tf

    out = []
    for c in cases:
        m = ns["BiasOnlyModel"](c["mu"], c["nu"], c["ni"], c["lamb"], seed=c["seed"])
        shapes = sorted([int(d) for d in v.shape] for v in m.trainable_variables)
        alpha = float(m.alpha.numpy())
        m.beta_u.assign(c["bu"].copy())
        m.beta_i.assign(c["bi"].copy())
        out.append({"module": bool(isinstance(m, tf.Module)), "shapes": shapes, "alpha": alpha,
                    "predict": _pack(np.asarray(m.predict(c["u"].copy(), c["i"].copy()), dtype=float)),
                    "reg": float(m.reg()), "loss": float(m.loss(c["u"].copy(), c["i"].copy(), c["r"].copy()))})
    return out


def _judge_bias_model(cases, results, params):
    _check(isinstance(results, list) and len(results) == len(cases), "the model on random parameters", "results missing")
    for c, got in zip(cases, results):
        _check(got.get("module") is True, "BiasOnlyModel is a tf.Module")
        _check(got.get("shapes") == sorted([[], [c["nu"]], [c["ni"]]]), "exactly a scalar, one bias per user and per item",
               f"found shapes {got.get('shapes')}")
        _check(abs(_number(got.get("alpha"), "alpha") - c["mu"]) < 1e-5, "alpha starts at the mean")
        expected = c["mu"] + c["bu"][c["u"]].astype(float) + c["bi"][c["i"]].astype(float)
        p = _unpack(got.get("predict"), "predict")
        _check(p.shape == expected.shape and np.max(np.abs(p - expected)) < 1e-4, "predict on random parameters")
        reg = c["lamb"] * float(np.sum(np.square(c["bu"], dtype=float)) + np.sum(np.square(c["bi"], dtype=float)))
        _check(abs(_number(got.get("reg"), "reg") - reg) <= 1e-4 * max(1.0, reg), "reg on random parameters",
               f"expected {reg}, got {got.get('reg')}")
        loss = 0.5 * float(np.mean(np.square(expected - c["r"]))) + reg
        _check(abs(_number(got.get("loss"), "loss") - loss) <= 1e-4 * max(1.0, loss), "loss on random parameters",
               f"expected {loss}, got {got.get('loss')}")


def _draw_bias_training(rng):
    nu, ni, n = int(rng.integers(10, 30)), int(rng.integers(10, 30)), 1_500
    bu, bi = rng.normal(0, 1, nu), rng.normal(0, 1, ni)
    u, i = rng.integers(0, nu, n), rng.integers(0, ni, n)
    return dict(nu=nu, ni=ni, u=u, i=i, r=(3.0 + bu[u] + bi[i]).astype(np.float32), seed=int(rng.integers(1_000)))


def _collect_bias_training(ns, c):
    import tensorflow as tf

    m = ns["BiasOnlyModel"](float(c["r"].mean()), c["nu"], c["ni"], 1e-7, seed=c["seed"])
    step = ns["make_train_step"](m, tf.keras.optimizers.Adam(0.05))
    for _ in range(300):
        step(c["u"].copy(), c["i"].copy(), c["r"].copy())
    return {"model": _model(m, ("alpha", "beta_u", "beta_i")),
            "predict": _pack(np.asarray(m.predict(c["u"].copy(), c["i"].copy()), dtype=float))}


def _judge_bias_training(c, results, params):
    v = _vars(results, "model", ("alpha", "beta_u", "beta_i"), "training recovers planted biases")
    _check(v["alpha"].shape == () and v["beta_u"].shape == (c["nu"],) and v["beta_i"].shape == (c["ni"],),
           "one bias per user and per item")
    fitted = _lfm_predict(v, c["u"], c["i"])
    p = _unpack(results.get("predict"), "predict")
    _check(p.shape == fitted.shape and np.max(np.abs(p - fitted)) < 1e-4, "predict is alpha + beta_u + beta_i")
    error, limit = _mse_of(fitted, c["r"]), 0.02 * float(np.var(c["r"]))
    _check(error < limit, "training recovers planted biases", f"MSE {error:.4f}, expected below {limit:.4f}")


def _collect_figures_5_1(ns, _):
    model, tuned = ns["model"], ns["tuned"]
    return {"figures": [float(ns["mse_always_mean"]), float(ns["mse_bias_only"])],
            "shapes": sorted([int(d) for d in v.shape] for v in model.trainable_variables),
            "model": _model(model, ("alpha", "beta_u", "beta_i")), "chosen": float(tuned.value),
            "trials": [[float(t.params["lamb"]), float(t.value)] for t in tuned.trials]}


def _judge_figures_5_1(_, results, params):
    from .interactions import training_mean

    data, train, test, _, validation = _splits(params)
    always_mean, bias_only = _numbers(results.get("figures"), "the figures")
    v = _vars(results, "model", ("alpha", "beta_u", "beta_i"), "the bias-only model")
    _check(results.get("shapes") == sorted([[], [data.n_users], [data.n_items]])
           and v["beta_u"].shape == (data.n_users,) and v["beta_i"].shape == (data.n_items,),
           "the bias-only model holds a scalar and one bias per user and per item")
    expected = _mse_of(np.full(len(test), training_mean(train)), test.rating)
    _check(abs(always_mean - expected) < 1e-6, "always-the-mean's test MSE", f"expected {expected}, got {always_mean}")
    expected = _mse_of(_lfm_predict(v, test.user, test.item), test.rating)
    _check(abs(bias_only - expected) < 1e-5, "the bias-only model's test MSE", f"expected {expected}, got {bias_only}")
    chosen = _number(results.get("chosen"), "the search")
    expected = _mse_of(_lfm_predict(v, validation.user, validation.item), validation.rating)
    _check(abs(chosen - expected) < 1e-5, "the chosen model's validation MSE", f"expected {expected}, got {chosen}")
    trials = results.get("trials")
    _check(isinstance(trials, list) and [_number(t[0], "the search") for t in trials] == [float(x) for x in params["LAMBDAS"]],
           "every candidate lambda is tried")
    _check(chosen == min(_number(t[1], "the search") for t in trials), "the lowest validation MSE is kept")
    if _comparable(test, params):
        _check(bias_only < always_mean, "the tuned biases beat always-the-mean",
               f"{bias_only:.4f} against {always_mean:.4f}")


# ---- 5.2 -------------------------------------------------------------------------------

def _draw_tune(rng):
    from .interactions import Interactions
    from .tuning import validation_split

    nu, ni, n = int(rng.integers(20, 40)), int(rng.integers(10, 25)), int(rng.integers(400, 700))
    u, i = rng.integers(0, nu, n), rng.integers(0, ni, n)
    r = np.clip(np.rint(3.5 + rng.normal(0, 1, nu)[u] + rng.normal(0, 1, ni)[i]), 0, 5).astype(np.float32)
    fit_part, val = validation_split(Interactions(u, i, r, np.arange(nu), np.arange(ni)),
                                     fraction=float(rng.uniform(0.15, 0.3)), seed=int(rng.integers(1_000)))
    grid = {"lamb": sorted(float(x) for x in 10.0 ** rng.uniform(-6, -2, 2))}
    budget = dict(max_steps=int(rng.integers(20, 41)), every=int(rng.integers(3, 8)), patience=int(rng.integers(1, 3)))
    return dict(nu=nu, ni=ni, fit=fit_part, val=val, grid=grid, budget=budget,
                mu=float(np.mean(fit_part.rating)), seed=int(rng.integers(1_000)))


def _copy(split):
    from .interactions import Interactions

    return Interactions(split.user.copy(), split.item.copy(), split.rating.copy(),
                        split.user_ids, split.item_ids)


def _collect_tune(ns, c):
    from .models import LatentFactorModel
    from .tuning import Budget

    t = ns["tune"](lambda lamb: LatentFactorModel(c["mu"], c["nu"], c["ni"], 2, lamb, seed=c["seed"]),
                   {k: list(v) for k, v in c["grid"].items()}, _copy(c["fit"]), _copy(c["val"]),
                   Budget(**c["budget"]))
    return {"trials": [[sorted([str(k), float(v)] for k, v in trial.params.items()), int(trial.step),
                        len(trial.history["step"]), float(trial.value)] for trial in t.trials],
            "chosen": float(t.value),
            "model": _model(t.model, ("alpha", "beta_u", "beta_i", "gamma_u", "gamma_i"))}


def _judge_tune(c, results, params):
    import itertools

    trials, b = results.get("trials"), c["budget"]
    _check(isinstance(trials, list), "tune tries every combination once")
    combos = sorted([[k, float(v)] for k, v in zip(c["grid"], combo)] for combo in itertools.product(*c["grid"].values()))
    _check(sorted(t[0] for t in trials) == combos, "tune tries every combination once")
    for _, step, checks, _ in trials:
        _check(0 < step <= b["max_steps"], "each candidate stays within the budget", f"{step} steps")
        _check(checks <= -(-b["max_steps"] // b["every"]), "no more checks than the budget allows")
    chosen = _number(results.get("chosen"), "tune")
    _check(chosen == min(_number(t[3], "tune") for t in trials), "the lowest validation MSE is kept")
    v = _vars(results, "model", ("alpha", "beta_u", "beta_i", "gamma_u", "gamma_i"), "the chosen model")
    _check(v["beta_u"].shape == (c["nu"],) and v["gamma_i"].shape == (c["ni"], 2), "the chosen model is one of the candidates")
    expected = _mse_of(_lfm_predict(v, c["val"].user, c["val"].item), c["val"].rating)
    _check(abs(chosen - expected) < 1e-5, "the kept value is the chosen model's MSE on the validation split given",
           f"expected {expected}, got {chosen}")
    # the data hold strong biases: training on the fit part lowers the validation MSE far
    # below always-the-mean's (to under a tenth of it); an untrained model stays near it
    mean = _mse_of(np.full(len(c["val"]), c["mu"]), c["val"].rating)
    _check(chosen < 0.5 * mean, "the candidates are trained on the fit part",
           f"validation MSE {chosen:.4f} against always-the-mean's {mean:.4f}")


def _draw_factor_term(rng):
    nu, ni, k, n = (int(x) for x in (rng.integers(2, 50), rng.integers(2, 50), rng.integers(1, 12), rng.integers(1, 300)))
    return dict(nu=nu, ni=ni, k=k, gu=rng.normal(0, 1, (nu, k)).astype(np.float32),
                gi=rng.normal(0, 1, (ni, k)).astype(np.float32), u=rng.integers(0, nu, n), i=rng.integers(0, ni, n))


def _collect_factor_term(ns, c):
    from .models import LatentFactorModel

    m = LatentFactorModel(3.0, c["nu"], c["ni"], c["k"], 0.0)
    m.gamma_u.assign(c["gu"].copy())
    m.gamma_i.assign(c["gi"].copy())
    return {"values": _pack(np.asarray(ns["factor_term"](m, c["u"].copy(), c["i"].copy()), dtype=float))}


def _judge_factor_term(c, results, params):
    got = _unpack(results.get("values"), "factor_term on random factors")
    expected = np.sum(c["gu"][c["u"]].astype(float) * c["gi"][c["i"]].astype(float), axis=1)
    _check(got.shape == expected.shape and np.max(np.abs(got - expected)) < 1e-4, "factor_term on random factors")


_LFM = ("alpha", "beta_u", "beta_i", "gamma_u", "gamma_i")


def _collect_no_worse(ns, _):
    def side(suffix):
        b, f = ns["bias_only" + suffix], ns["full" + suffix]
        return {"figures": [float(ns["mse_bias_only" + suffix]), float(ns["mse_full" + suffix])],
                "bias_only": _model(b.model, _LFM), "full": _model(f.model, _LFM),
                "lambdas": [float(f.model.lamb_factors), float(f.params["lamb_factors"]),
                            float(f.model.lamb), float(b.params["lamb"])],
                "tried_b": [float(t.params["lamb"]) for t in b.trials],
                "tried_f": [float(t.params["lamb_factors"]) for t in f.trials],
                "steps": [int(t.step) for t in list(b.trials) + list(f.trials)]}
    return {"K": int(ns["K"]), "goodreads": side(""), "lab": side("_lab")}


def _judge_no_worse(_, results, params):
    _check(results.get("K") == params["K"] == 10, "K = 10")
    grids = [float(x) for x in params["LAMBDAS_BIASES"]], [float(x) for x in params["LAMBDAS_FACTORS"]]
    for name, lab in (("goodreads", False), ("lab", True)):
        side = results.get(name)
        _check(isinstance(side, dict), "both models on both data sets")
        data, _, test, fit_part, _ = _splits(params, lab=lab)
        bias_only, full = _numbers(side.get("figures"), "the figures")
        b = _vars(side, "bias_only", _LFM, "the bias-only model")
        f = _vars(side, "full", _LFM, "the full model")
        _check(f["gamma_u"].shape == (data.n_users, params["K"]) and f["gamma_i"].shape == (data.n_items, params["K"]),
               "the full model has K factors per user and per item")
        _check(b["gamma_u"].shape == (data.n_users, 0) and b["beta_i"].shape == (data.n_items,),
               "the bias-only model has no factors")
        for got, v, what in ((bias_only, b, "bias-only"), (full, f, "full")):
            expected = _mse_of(_lfm_predict(v, test.user, test.item), test.rating)
            _check(abs(got - expected) < 1e-5, f"the {what} model's test MSE", f"expected {expected}, got {got}")
            # a model fitted where it should: no better on the test split than on the
            # ratings it was trained on (one fitted on the test split would be)
            trained = _mse_of(_lfm_predict(v, fit_part.user, fit_part.item), fit_part.rating)
            _check(expected >= 0.9 * trained, f"the {what} model is trained on the training split",
                   f"test MSE {expected:.4f} against {trained:.4f} on its training ratings")
        lf, lf_param, lamb, lamb_b = _numbers(side.get("lambdas"), "the lambdas")
        _check(np.isclose(lf, lf_param, rtol=1e-6), "the factors' own lambda is used")
        _check(np.isclose(lamb, lamb_b, rtol=1e-6), "the full model keeps the biases' lambda bias-only chose")
        _check(_numbers(side.get("tried_b"), "the searches") == grids[0], "every lambda of the biases tried")
        _check(_numbers(side.get("tried_f"), "the searches") == grids[1], "every lambda of the factors tried")
        _check(all(s <= params["MAX_STEPS"] for s in _numbers(side.get("steps"), "the searches")),
               "the budget holds for every candidate")
        if lab:
            _check(full <= params["LAB_GAIN"] * bias_only, "on the laboratory the factors lower the test MSE",
                   f"{full:.4f} against {bias_only:.4f}")
        elif _comparable(test, params):
            _check(full <= (1 + params["TOLERANCE"]) * bias_only, "the tuned full model is at most 1 % worse",
                   f"{full:.4f} against {bias_only:.4f}")
    for grid in grids:
        _check(np.all(np.diff(np.log10(sorted(grid))) <= np.log10(10 / 3) + 1e-9), "no gap in the grids")


# ---- 5.3 -------------------------------------------------------------------------------

def _draw_round(rng):
    return rng.uniform(-1, 6, size=int(rng.integers(1, 20_000))), rng.integers(0, 5, size=50) + 0.5


def _collect_round(ns, inputs):
    x, halves = inputs
    raw = ns["round_predictions"](x.copy())
    return {"array": bool(isinstance(raw, np.ndarray)), "values": _pack(np.asarray(raw, dtype=float)),
            "halves": _pack(np.asarray(ns["round_predictions"](list(halves)), dtype=float))}


def _judge_round(inputs, results, params):
    x, halves = inputs
    got = _unpack(results.get("values"), "rounding random predictions")
    _check(results.get("array") is True and got.shape == x.shape, "a numpy array of the same shape")
    wrong = int(np.count_nonzero(got != np.floor(x + 0.5)))
    _check(wrong == 0, "rounding random predictions", f"{wrong} rounded wrongly")
    _check(np.array_equal(_unpack(results.get("halves"), "halves go up"), halves + 0.5), "halves go up (from a list too)")


def _draw_parts(rng):
    n = int(rng.integers(1, 5_000))
    return rng.uniform(-0.5, 5.5, n), rng.integers(0, 6, n).astype(float)


def _collect_parts(ns, inputs):
    p, y = inputs
    return {"parts": [float(v) for v in ns["rounding_parts"](list(p), list(y))]}


def _judge_parts(inputs, results, params):
    p, y = inputs
    got = _numbers(results.get("parts"), "the two parts on random inputs")
    d = np.floor(p + 0.5) - p
    expected = (float(np.sum(d * d) / p.size), float(2 * np.sum(d * (p - y)) / p.size))
    _check(len(got) == 2 and np.allclose(got, expected, rtol=1e-9, atol=1e-12), "the two parts on random inputs",
           f"expected {expected}, got {got}")


def _collect_rounding_hurts(ns, _):
    return {"figures": [float(ns["mse_raw"]), float(ns["mse_rounded"])], "model": _model(ns["model"], _LFM)}


def _judge_rounding_hurts(_, results, params):
    data, _, test, _, _ = _splits(params)
    raw, rounded = _numbers(results.get("figures"), "the figures")
    v = _vars(results, "model", _LFM, "the model")
    _check(v["gamma_u"].shape == (data.n_users, params["K"]), "the model has K factors")
    p = _lfm_predict(v, test.user, test.item)
    expected = (_mse_of(p, test.rating), _mse_of(np.floor(p + 0.5), test.rating))
    _check(np.allclose([raw, rounded], expected, atol=1e-5), "the raw and the rounded test MSE",
           f"expected {expected}, got {(raw, rounded)}")
    if _comparable(test, params):
        _check(rounded > raw, "rounding makes the squared error worse", f"{rounded:.4f} against {raw:.4f}")


# ---- 5.4 -------------------------------------------------------------------------------

def _draw_user_auc(rng):
    return [(rng.integers(0, 4, n).astype(float), rng.integers(0, 4, n).astype(float))
            for n in rng.integers(1, 500, 5)]


def _collect_user_auc(ns, inputs):
    return {"values": [float(ns["user_auc"](pos.copy(), neg.copy())) for pos, neg in inputs]}


def _judge_user_auc(inputs, results, params):
    values = _numbers(results.get("values"), "user_auc on random scores")
    _check(len(values) == len(inputs), "user_auc on random scores")
    for (pos, neg), got in zip(inputs, values):
        expected = float((np.sum(pos > neg) + 0.5 * np.sum(pos == neg)) / pos.size)
        _check(abs(got - expected) <= 1e-12, "user_auc on random scores", f"expected {expected!r}, got {got!r}")


def _draw_sampled_auc(rng):
    nu, ni = int(rng.integers(150, 300)), int(rng.integers(40, 90))
    inter, held = np.zeros((nu, ni), bool), np.zeros((nu, ni), bool)
    for u in range(nu):
        k = int(rng.integers(2, min(30, ni - 2)))
        items = rng.choice(ni, size=k, replace=False)
        inter[u, items] = True
        held[u, items[:int(rng.integers(1, k))]] = True
    inter[int(rng.integers(nu))] = True         # one user interacted with every item: no negative
    H = held.astype(float)
    return dict(held=held, inter=inter, users=np.flatnonzero(held.any(axis=1)), n=int(rng.integers(3, 13)),
                S=np.round(H * float(rng.uniform(0.2, 2.0)) + rng.normal(0, 1, (nu, ni)), 1),
                seeds=[int(s) for s in rng.integers(2**32, size=8)])


def _collect_sampled_auc(ns, c):
    import scipy.sparse as sp

    sampled_auc = ns["sampled_auc"]

    def auc(table, seed, record=None):
        def scorer(u, i):
            u, i = np.asarray(u), np.asarray(i)
            if record is not None:
                record.append((u.ravel().tolist(), i.ravel().tolist()))
                return scores.random(i.shape)
            return table[u, i]
        scorer.__name__ = scorer.__qualname__ = "s" + secrets.token_hex(6)
        return float(sampled_auc(scorer, sp.csr_matrix(c["held"], dtype=np.float32),
                                 sp.csr_matrix(c["inter"], dtype=np.float32), c["users"].copy(), c["n"],
                                 np.random.default_rng(seed)))

    H, A, s = c["held"].astype(float), c["inter"].astype(float), c["seeds"]
    exact = [auc(H, s[0]), auc(-H, s[1]), auc(A, s[2])]
    calls, scores = [], np.random.default_rng(s[3])
    auc(None, s[4], calls)
    noisy = [auc(c["S"], seed) for seed in (s[5], s[5], s[6], s[7])]
    return {"exact": exact, "calls": calls, "noisy": noisy}


def _judge_sampled_auc(c, results, params):
    held, inter, n = c["held"], c["inter"], c["n"]
    _check(_numbers(results.get("exact"), "exact answers") == [1.0, 0.0, 1.0],
           "a scorer that knows the held-out items gets 1, one that avoids them 0, interacted-first 1")
    calls = results.get("calls")
    _check(isinstance(calls, list) and all(isinstance(x, list) and len(x) == 2 for x in calls), "the items scored")
    try:
        su = np.array([u for x in calls for u in x[0]], dtype=np.int64)
        si = np.array([i for x in calls for i in x[1]], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise HiddenCheckFailed("the items scored", "not integers") from None
    _check(su.shape == si.shape and (si.size == 0 or (si.min() >= 0 and si.max() < held.shape[1])), "the items scored")
    for u in c["users"]:   # per kept user, n held-out and n never-interacted items, all distinct
        got = si[su == u]
        k = min(n, int(held[u].sum()), int((~inter[u]).sum()))
        pos, neg = got[held[u, got]], got[~inter[u, got]]
        _check(pos.size == k and neg.size == k and got.size == 2 * k,
               "per user, n held-out and n never-interacted items are scored",
               f"user {u}: expected {k} and {k}; got {pos.size}, {neg.size} of {got.size}")
        _check(np.unique(pos).size == k and np.unique(neg).size == k, "no item is drawn twice for a user")
    exact, counts = [], []
    for u in c["users"]:
        pos, neg = c["S"][u, held[u]], c["S"][u, ~inter[u]]
        if neg.size:
            exact.append(float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))))
            counts.append(min(n, pos.size, neg.size))
    expected = float(np.mean(exact))
    tolerance = 6 * float(np.sqrt(np.sum(0.25 / np.asarray(counts)))) / len(counts)
    noisy = _numbers(results.get("noisy"), "a noisy scorer")
    _check(len(noisy) == 4, "a noisy scorer")
    _check(abs(noisy[0] - expected) <= tolerance, "the sampled AUC estimates the exact one for a noisy scorer",
           f"expected {expected:.4f} within {tolerance:.4f}; got {noisy[0]:.4f}")
    _check(noisy[1] == noisy[0], "the same rng seed gives the same result")
    _check(len(set(noisy[1:])) > 1, "the draws come from rng")


_BPR = ("beta_i", "gamma_u", "gamma_i")


def _eval_users(held_out, params):
    """The notebook's evaluation users, and the users its exact AUC is limited to."""
    test_users = np.flatnonzero(np.diff(held_out.indptr))
    size = params["EVAL_USERS"]
    if size == "auto":
        size = None if test_users.size <= 20_000 else 5_000
    users = test_users if size is None else np.sort(
        np.random.default_rng(params["SEED"]).choice(test_users, size=size, replace=False))
    return users, (2_000 if size else None)


def _draw_model_auc(rng):
    return dict(noise_seed=int(rng.integers(2**32)), scale=float(rng.uniform(1, 3)), seed=int(rng.integers(2**32)))


def _blur(v, users, c, n_users, n_items):
    noise = np.random.default_rng(c["noise_seed"])
    zu, zi = noise.normal(0, 1, (n_users, 8)), noise.normal(0, 1, (n_items, 8))
    spread = float(np.std(v["gamma_u"][users[:50]] @ v["gamma_i"].T + v["beta_i"]))
    return zu, zi, c["scale"] * spread / np.sqrt(8)


def _collect_model_auc(ns, c):
    model, data = ns["model"], ns["data"]
    v = {n: np.asarray(getattr(model, n).numpy(), dtype=float) for n in _BPR}
    users = np.array(ns["eval_users"][:2_000])
    zu, zi, scale = _blur(v, users, c, data.n_users, data.n_items)

    def blurred(u, i):
        u, i = np.asarray(u), np.asarray(i)
        return v["beta_i"][i] + np.sum(v["gamma_u"][u] * v["gamma_i"][i], axis=1) + scale * np.sum(zu[u] * zi[i], axis=1)
    blurred.__name__ = blurred.__qualname__ = "s" + secrets.token_hex(6)
    got = float(ns["sampled_auc"](blurred, ns["held_out"].copy(), ns["interacted"].copy(), users.copy(),
                                  int(ns["N_PER_USER"]), np.random.default_rng(c["seed"])))
    return {"blurred": got, "figures": [float(ns["auc_s"]), float(ns["auc_e"])], "model": _model(model, _BPR)}


def _judge_model_auc(c, results, params):
    from .interactions import per_user_items
    from .metrics import auc_exact

    data, train, test, _, _ = _splits(params, rating=False)
    held = per_user_items(test.user, test.item, data.n_users, data.n_items)
    inter = per_user_items(data.user, data.item, data.n_users, data.n_items)
    v = _vars(results, "model", _BPR, "the model")
    _check(v["gamma_u"].shape == (data.n_users, params["K"]) and v["gamma_i"].shape == (data.n_items, params["K"])
           and v["beta_i"].shape == (data.n_items,), "the model has K factors per user and per item")
    users, max_users = _eval_users(held, params)
    users = users[:2_000]
    zu, zi, scale = _blur(v, users, c, data.n_users, data.n_items)
    exact, counts = [], []
    block = max(1, 500_000 // data.n_items)  # users scored at once: about 4 MB a matrix
    for start in range(0, users.size, block):
        chunk = users[start:start + block]
        scores = v["gamma_u"][chunk] @ v["gamma_i"].T + v["beta_i"] + scale * (zu[chunk] @ zi.T)
        for row, u in zip(scores, chunk):
            mask = np.ones(data.n_items, bool)
            mask[inter.indices[inter.indptr[u]:inter.indptr[u + 1]]] = False
            pos, neg = row[held.indices[held.indptr[u]:held.indptr[u + 1]]], row[mask]
            if neg.size:
                exact.append(float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))))
                counts.append(min(params["N_PER_USER"], pos.size, neg.size))
    expected = float(np.mean(exact))
    tolerance = 4.5 * float(np.sqrt(np.sum(0.25 / np.asarray(counts)))) / len(counts)
    got = _number(results.get("blurred"), "the sampled AUC of the model's blurred scores")
    _check(abs(got - expected) <= tolerance, "the sampled AUC of the model's blurred scores estimates the exact one",
           f"expected {expected:.4f} within {tolerance:.4f}, got {got:.4f}")
    sampled, exact_auc = _numbers(results.get("figures"), "the figures")
    gu, gi, bi = (v[n].astype(np.float32) for n in ("gamma_u", "gamma_i", "beta_i"))  # as TF scores
    mine = auc_exact(lambda u: gu[u] @ gi.T + bi, train.csr(), test.csr(), max_users=max_users,
                     seed=params["SEED"])
    _check(abs(exact_auc - mine) < 1e-4, "the exact AUC is the model's", f"expected {mine:.6f}, got {exact_auc:.6f}")
    if len(test) >= params["MIN_TEST_INTERACTIONS"]:
        _check(sampled > 0.5 and mine > 0.5, "the model ranks held-out books above chance",
               f"sampled {sampled:.4f}, exact {mine:.4f}")


# ---- the register ------------------------------------------------------------------------

@dataclass(frozen=True)
class Hidden:
    collect: Callable
    judge: Callable
    draw: Callable | None = None
    params: tuple = field(default=())


TESTS = {
    ("exercise_5_1", "test_mse"): Hidden(_collect_mse, _judge_mse, _draw_mse),
    ("exercise_5_1", "test_bias_model"): Hidden(_collect_bias_model, _judge_bias_model, _draw_bias_model),
    ("exercise_5_1", "test_bias_training"): Hidden(_collect_bias_training, _judge_bias_training, _draw_bias_training),
    ("exercise_5_1", "test_figures"): Hidden(_collect_figures_5_1, _judge_figures_5_1, params=(
        "SEED", "TEST_SIZE", "VALIDATION_SIZE", "LAMBDAS", "MIN_TEST_RATINGS")),
    ("exercise_5_2", "test_tune"): Hidden(_collect_tune, _judge_tune, _draw_tune),
    ("exercise_5_2", "test_factor_term"): Hidden(_collect_factor_term, _judge_factor_term, _draw_factor_term),
    ("exercise_5_2", "test_no_worse"): Hidden(_collect_no_worse, _judge_no_worse, params=(
        "SEED", "TEST_SIZE", "VALIDATION_SIZE", "K", "LAMBDAS_BIASES", "LAMBDAS_FACTORS", "MAX_STEPS",
        "LAB_GAIN", "TOLERANCE", "MIN_TEST_RATINGS")),
    ("exercise_5_3", "test_round"): Hidden(_collect_round, _judge_round, _draw_round),
    ("exercise_5_3", "test_parts"): Hidden(_collect_parts, _judge_parts, _draw_parts),
    ("exercise_5_3", "test_rounding_hurts"): Hidden(_collect_rounding_hurts, _judge_rounding_hurts, params=(
        "SEED", "TEST_SIZE", "VALIDATION_SIZE", "K", "MIN_TEST_RATINGS")),
    ("exercise_5_4", "test_user_auc"): Hidden(_collect_user_auc, _judge_user_auc, _draw_user_auc),
    ("exercise_5_4", "test_sampled_auc"): Hidden(_collect_sampled_auc, _judge_sampled_auc, _draw_sampled_auc),
    ("exercise_5_4", "test_model_auc"): Hidden(_collect_model_auc, _judge_model_auc, _draw_model_auc, params=(
        "SEED", "TEST_SIZE", "VALIDATION_SIZE", "K", "N_PER_USER", "EVAL_USERS", "MIN_TEST_INTERACTIONS")),
}


def seed_of(exercise: str, test: str, base: int | None = None) -> int:
    """The seed of one hidden test: from ``base`` (``RECSYS_HIDDEN_SEED``, which the grader
    draws for each notebook it grades; otherwise drawn here) and the test's name."""
    if base is None:
        env = os.environ.get("RECSYS_HIDDEN_SEED", "")
        base = int(env) if env.isdigit() else secrets.randbits(63)
    return int(np.random.SeedSequence([base, zlib.crc32(f"{exercise}/{test}".encode())]).generate_state(1)[0])


def _inputs(spec: Hidden, seed: int):
    return spec.draw(np.random.default_rng(seed)) if spec.draw is not None else None


def hidden_test(exercise: str, test: str, ns: dict) -> None:
    """Run one hidden test in a notebook: collect the student's results, show them as an
    output of the cell (for the grader), and judge them here (for any other run)."""
    from IPython.display import display

    spec = TESTS[(exercise, test)]
    seed = seed_of(exercise, test)
    inputs = _inputs(spec, seed)
    results = spec.collect(ns, inputs)
    if os.environ.get("RECSYS_HIDDEN_SEED"):  # graded: the grader reads and judges them
        display({MIME: {"exercise": exercise, "test": test, "results": results},
                 "text/plain": "(the results of the hidden checks, for the grader)"}, raw=True)
    else:
        spec.judge(inputs, json.loads(json.dumps(results)), {k: ns[k] for k in spec.params})


def judge_payload(exercise: str, test: str, payloads: list, base: int, params: dict) -> HiddenCheckFailed | None:
    """The grader's judgement of the results a test cell showed (None if it passed)."""
    spec = TESTS.get((exercise, test))
    if spec is None:
        return HiddenCheckFailed("this test is unknown to the grader")
    mine = [p for p in payloads if isinstance(p, dict) and p.get("exercise") == exercise
            and p.get("test") == test]
    if not mine:
        return HiddenCheckFailed("the hidden checks gave no result", "no results were shown")
    inputs = _inputs(spec, seed_of(exercise, test, base))
    try:
        for payload in mine:  # every result shown for this test must pass
            spec.judge(inputs, payload.get("results"), {k: params[k] for k in spec.params})
    except HiddenCheckFailed as failure:
        return failure
    except Exception as exc:  # malformed results: the student's, not the grader's
        return HiddenCheckFailed("the results could not be checked", f"{type(exc).__name__}: {exc}"[:300])
    return None
