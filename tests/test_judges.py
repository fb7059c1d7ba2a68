"""The hidden tests' judges, as the grader runs them: right results pass, wrong ones,
results for other inputs, malformed or missing ones fail, with a label in words."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys_helpers import judges
from recsys_helpers.judges import TESTS, HiddenCheckFailed, judge_payload, seed_of

BASE = 12345


def _mse(p, y):
    p, y = np.asarray(p, float), np.asarray(y, float)
    return float(np.mean((p - y) ** 2))


def _user_auc(pos, neg):
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return float((np.sum(pos > neg) + 0.5 * np.sum(pos == neg)) / pos.size)


def _parts(p, y):
    p, y = np.asarray(p, float), np.asarray(y, float)
    d = np.floor(p + 0.5) - p
    return float(np.mean(d * d)), float(2 * np.mean(d * (p - y)))


RIGHT = {  # reference answers for the tests on random inputs (no model needed)
    ("exercise_5_1", "test_mse"): {"mse": _mse},
    ("exercise_5_4", "test_user_auc"): {"user_auc": _user_auc},
    ("exercise_5_3", "test_round"): {"round_predictions": lambda p: np.floor(np.asarray(p, float) + 0.5)},
    ("exercise_5_3", "test_parts"): {"rounding_parts": _parts},
}
WRONG = {
    ("exercise_5_1", "test_mse"): {"mse": lambda p, y: _mse(p, y) * 1.001},
    ("exercise_5_4", "test_user_auc"): {"user_auc": lambda pos, neg: float(np.mean(np.asarray(pos) > np.asarray(neg)))},
    ("exercise_5_3", "test_round"): {"round_predictions": lambda p: np.round(np.asarray(p, float))},
    ("exercise_5_3", "test_parts"): {"rounding_parts": lambda p, y: _parts(p, y)[::-1]},
}


def _payload(key, ns, base=BASE):
    spec = TESTS[key]
    inputs = spec.draw(np.random.default_rng(seed_of(*key, base)))
    results = json.loads(json.dumps(spec.collect(ns, inputs)))
    return {"exercise": key[0], "test": key[1], "results": results}


@pytest.mark.parametrize("key", sorted(RIGHT), ids="/".join)
def test_right_results_pass_and_wrong_ones_fail_with_a_label(key):
    assert judge_payload(*key, [_payload(key, RIGHT[key])], BASE, {}) is None
    failure = judge_payload(*key, [_payload(key, WRONG[key])], BASE, {})
    assert isinstance(failure, HiddenCheckFailed) and failure.label and not any(
        ch.isdigit() for ch in failure.label)  # the label names the check, without figures


@pytest.mark.parametrize("key", sorted(RIGHT), ids="/".join)
def test_results_for_inputs_of_another_seed_fail(key):
    """The kernel's seed is the student's to change: results for other inputs earn nothing."""
    assert judge_payload(*key, [_payload(key, RIGHT[key], base=BASE + 1)], BASE, {}) is not None


def test_missing_malformed_and_extra_results_fail_without_raising():
    key = ("exercise_5_1", "test_mse")
    assert judge_payload(*key, [], BASE, {}).label == "the hidden checks gave no result"
    for results in (None, {"values": "x"}, {"values": [[1, 2]] * 5}, {"values": [["a", "b"]] * 5},
                    {"module": "x", "values": [[float("nan")] * 2] * 5}):
        payload = {"exercise": key[0], "test": key[1], "results": results}
        assert isinstance(judge_payload(*key, [payload], BASE, {}), HiddenCheckFailed), results
    # every result shown for the test must pass: a right one beside a wrong one fails
    right, wrong = _payload(key, RIGHT[key]), _payload(key, WRONG[key])
    assert judge_payload(*key, [right, wrong], BASE, {}) is not None
    # a malformed array is refused before it is read
    with pytest.raises(HiddenCheckFailed):
        judges._unpack({"shape": [10**9], "b64": ""}, "an array")


def test_the_package_mse_is_refused():
    key = ("exercise_5_1", "test_mse")
    from recsys_helpers.metrics import mse

    assert judge_payload(*key, [_payload(key, {"mse": mse})], BASE, {}).label == "mse is your own"


def test_seeds_differ_by_test_and_by_base():
    seeds = {seed_of(*key, BASE) for key in TESTS}
    assert len(seeds) == len(TESTS)
    assert seed_of("exercise_5_1", "test_mse", BASE) != seed_of("exercise_5_1", "test_mse", BASE + 1)


def test_an_untrained_search_fails_the_tune_check():
    """A `tune` that keeps the lowest validation MSE of models it never trained satisfies
    every bookkeeping check; the judge asks that training lowered the validation MSE."""
    key = ("exercise_5_2", "test_tune")
    c = TESTS[key].draw(np.random.default_rng(seed_of(*key, BASE)))
    nu, ni, val = c["nu"], c["ni"], c["val"]
    untrained = {"alpha": np.float64(c["mu"]), "beta_u": np.zeros(nu), "beta_i": np.zeros(ni),
                 "gamma_u": np.zeros((nu, 2)), "gamma_i": np.zeros((ni, 2))}
    value = float(np.mean((c["mu"] - val.rating.astype(float)) ** 2))
    results = {"trials": [[[["lamb", lamb]], 1, 1, value] for lamb in c["grid"]["lamb"]],
               "chosen": value, "model": {k: judges._pack(v) for k, v in untrained.items()}}
    payload = {"exercise": key[0], "test": key[1], "results": json.loads(json.dumps(results))}
    failure = judge_payload(*key, [payload], BASE, {})
    assert failure is not None and failure.label == "the candidates are trained on the fit part"
