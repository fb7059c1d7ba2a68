"""The tuning helpers: validation split, early stopping that keeps the best step, grid search."""

import numpy as np
import pytest

from recsys_helpers.interactions import Interactions, rating_batches, training_mean
from recsys_helpers.models import LatentFactorModel, fit, make_train_step, tf
from recsys_helpers.tuning import (
    Budget,
    EarlyStopping,
    grid_search,
    train_with_early_stopping,
    validation_mse,
    validation_split,
)


def _ratings(n=3_000, n_users=100, n_items=60, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.integers(n_users, size=n).astype(np.int32)
    i = rng.integers(n_items, size=n).astype(np.int32)
    b_u, b_i = rng.normal(0, 0.7, n_users), rng.normal(0, 0.7, n_items)
    r = np.clip(np.rint(3.5 + b_u[u] + b_i[i] + rng.normal(0, 0.8, n)), 1, 5).astype(np.float32)
    return Interactions(u, i, r, np.arange(n_users), np.arange(n_items))


def test_validation_split_is_disjoint_and_seeded():
    data = _ratings()
    a, b = validation_split(data, 0.1, seed=3)
    assert len(a) + len(b) == len(data) and len(b) == 300
    a2, b2 = validation_split(data, 0.1, seed=3)
    assert np.array_equal(b.user, b2.user) and np.array_equal(b.item, b2.item)
    assert a.user_ids is data.user_ids and a.item_ids is data.item_ids
    rows = lambda s: {tuple(x) for x in np.c_[s.user, s.item, s.rating].tolist()}  # noqa: E731
    assert rows(a) | rows(b) <= rows(data)


def test_separate_lambdas_regularise_what_they_name():
    m = LatentFactorModel(3.0, 4, 5, 2, 0.5, seed=0, lamb_factors=0.0)
    for v in (m.beta_u, m.beta_i, m.gamma_u, m.gamma_i):
        v.assign(tf.ones_like(v))
    assert float(m.reg()) == pytest.approx(0.5 * (4 + 5))
    same = LatentFactorModel(3.0, 4, 5, 2, 0.5, seed=0)  # the book's single lambda
    for v in (same.beta_u, same.beta_i, same.gamma_u, same.gamma_i):
        v.assign(tf.ones_like(v))
    assert float(same.reg()) == pytest.approx(0.5 * (4 + 5 + 8 + 10))


def test_early_stopping_stops_and_restores_the_best_step():
    v = tf.Variable(0.0)
    curve = [5.0, 3.0, 1.0, 2.0, 4.0, 6.0, 0.5]
    stopper = EarlyStopping([v], monitor="loss", mode="min", patience=2)
    stopped_at = None
    for step, value in enumerate(curve, start=1):
        v.assign(float(step))
        if stopper(step, {"loss": value}):
            stopped_at = step
            break
    assert stopped_at == 5 and stopper.best_step == 3 and stopper.best_value == 1.0
    stopper.restore()
    assert float(v) == 3.0


def test_fit_stops_when_told():
    m = LatentFactorModel(3.5, 100, 60, 2, 1e-4, seed=0)
    data = _ratings()
    history = fit(make_train_step(m, tf.keras.optimizers.Adam(0.05)), rating_batches(data, 256, 0),
                  50, every=5, stop=lambda step, figures: step >= 15, progress=False)
    assert list(history["step"]) == [5, 10, 15]


def test_early_stopping_keeps_a_model_better_than_the_mean_on_validation():
    data = _ratings()
    fit_part, validation = validation_split(data, 0.2, seed=0)
    mu = training_mean(fit_part)
    model = LatentFactorModel(mu, data.n_users, data.n_items, 0, 1e-4, seed=0)
    history, stopper = train_with_early_stopping(
        model, rating_batches(fit_part, 512, 0), lambda m: validation_mse(m, validation),
        learning_rate=0.05, budget=Budget(max_steps=400, every=10, patience=3), progress=False)
    mean_mse = float(np.mean((validation.rating - mu) ** 2))
    assert stopper.best_value == pytest.approx(validation_mse(model, validation), rel=1e-5)
    assert stopper.best_value == pytest.approx(history["validation_mse"].min())
    assert stopper.best_value < 0.9 * mean_mse


def test_grid_search_tries_every_setting_with_the_same_budget_and_keeps_the_best():
    data = _ratings()
    fit_part, validation = validation_split(data, 0.2, seed=0)
    mu = training_mean(fit_part)
    budget = Budget(max_steps=60, every=10, patience=None)
    tuned = grid_search(
        lambda lamb, lamb_factors: LatentFactorModel(mu, data.n_users, data.n_items, 2, lamb,
                                                     lamb_factors=lamb_factors),
        {"lamb": [1e-4, 1.0], "lamb_factors": [1e-3], "learning_rate": [0.05]},
        batches=lambda: rating_batches(fit_part, 512, 0),
        validate=lambda m: validation_mse(m, validation), budget=budget, progress=False)
    assert len(tuned.trials) == 2
    assert all(t.history["step"][-1] == 60 for t in tuned.trials)  # no patience: full budget
    assert tuned.params["lamb"] == 1e-4  # a huge lambda on the biases pins them at zero
    assert tuned.value == min(t.value for t in tuned.trials)
    assert tuned.value == pytest.approx(validation_mse(tuned.model, validation), rel=1e-5)
    assert list(tuned.table()["lamb"]) == [1e-4, 1.0]
    assert "lamb = 0.0001" in tuned.summary()


class _PythonLambdas(LatentFactorModel):
    """The book's way: lambdas kept as Python numbers, which a compiled step bakes in."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lamb, self.lamb_factors = float(self.lamb), float(self.lamb_factors)


@pytest.mark.parametrize("model_class, grid, checked", [
    # the third candidate follows one trained with another lambda and learning rate
    (LatentFactorModel, {"lamb": [1.0, 1e-4], "learning_rate": [0.05, 0.01]}, [0, 2]),
    (_PythonLambdas, {"lamb": [1.0, 1e-4]}, [1])])
def test_grid_search_trains_each_candidate_as_if_alone(model_class, grid, checked):
    """One compiled step serves the candidates (lambdas in variables) or, where a lambda
    is baked in, each candidate gets its own: either way, a candidate's figure is the one
    it reaches when trained on its own, whatever was trained before it."""
    data = _ratings()
    fit_part, validation = validation_split(data, 0.2, seed=0)
    mu = training_mean(fit_part)
    budget = Budget(max_steps=40, every=10, patience=2)

    def make(lamb):
        return model_class(mu, data.n_users, data.n_items, 2, lamb, seed=0)

    tuned = grid_search(make, grid, batches=lambda: rating_batches(fit_part, 512, 0),
                        validate=lambda m: validation_mse(m, validation), budget=budget,
                        learning_rate=0.05, progress=False)
    alone = []
    for trial in [tuned.trials[k] for k in checked]:
        model = make(trial.params["lamb"])
        _, stopper = train_with_early_stopping(
            model, rating_batches(fit_part, 512, 0), lambda m: validation_mse(m, validation),
            trial.params.get("learning_rate", 0.05), budget, progress=False)
        alone.append((stopper.best_value, stopper.best_step))
    assert [(tuned.trials[k].value, tuned.trials[k].step) for k in checked] == [
        (pytest.approx(v, rel=1e-6), s) for v, s in alone]
    assert len({t.value for t in tuned.trials}) == len(tuned.trials)  # the settings matter
    # the chosen model holds its own values, not those of the candidates tried after it
    assert validation_mse(tuned.model, validation) == pytest.approx(tuned.value, rel=1e-6)
    assert float(tuned.model.lamb) == pytest.approx(tuned.params["lamb"])


def test_budget_rejects_nonsense():
    with pytest.raises(ValueError):
        Budget(max_steps=0)
    with pytest.raises(ValueError):
        Budget(patience=0)


def test_a_parallel_coordinate_search_takes_the_same_path():
    """Coarse passes fitted in forked workers: the same settings tried, the same scores,
    the same choice as one after the other."""
    import os

    from recsys_helpers.surprise_tools import coordinate_search

    def bowl(s):
        pids.add(os.getpid())
        return (s["a"] - 3) ** 2 + (s["b"] - 20) ** 2 + 0.1 * s["c"] + 1

    ladders = {"a": [1, 2, 3, 4, 5], "b": [5, 10, 20, 50], "c": [0, 1, 2]}
    pids = set()
    serial = coordinate_search(bowl, ladders, {"a": 1, "b": 50, "c": 2})
    assert pids == {os.getpid()}
    parallel = coordinate_search(bowl, ladders, {"a": 1, "b": 50, "c": 2}, workers=2)
    assert parallel.best == serial.best == {"a": 3, "b": 20, "c": 0}
    assert parallel.table.equals(serial.table) and parallel.path.equals(serial.path)


def test_each_candidate_a_search_trains_is_counted_once(tmp_path, monkeypatch):
    """The count the runner reports (timing.json's ``candidates``): one per setting a
    search evaluated, also when the coarse passes run in forked workers."""
    from recsys_helpers.surprise_tools import coordinate_search
    from recsys_helpers.tuning import CANDIDATE_LOG, candidates_counted

    def bowl(s):
        return (s["a"] - 3) ** 2 + (s["b"] - 20) ** 2 + 1

    ladders = {"a": [1, 2, 3, 4, 5], "b": [5, 10, 20, 50]}
    log = tmp_path / "candidates"
    monkeypatch.setenv(CANDIDATE_LOG, str(log))
    serial = coordinate_search(bowl, ladders, {"a": 1, "b": 50})
    assert candidates_counted(log) == len(serial.table) > 4
    parallel = coordinate_search(bowl, ladders, {"a": 1, "b": 50}, workers=2)
    # with workers, a refinement fits both neighbours at once: the one its path does not
    # visit is trained too, and counted
    in_parallel = candidates_counted(log) - len(serial.table)
    assert len(parallel.table) <= in_parallel <= len(parallel.table) + 2 * len(ladders)
    monkeypatch.delenv(CANDIDATE_LOG)
    coordinate_search(bowl, ladders, {"a": 1, "b": 50})
    assert candidates_counted(log) == len(serial.table) + in_parallel
    assert candidates_counted(tmp_path / "none") == 0


@pytest.mark.parametrize("biased", [True, False])
def test_learning_curve_and_scores_predict_as_surprise_does(biased):
    """The training MSE of the learning curve and the ranking scores are Surprise's own
    predictions, also for SVD without bias terms (the factors' product alone)."""
    import pandas as pd
    from surprise import SVD, Dataset, Reader, accuracy

    from recsys_helpers.surprise_tools import _training_mse, score_matrix

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"u": rng.integers(30, size=400), "i": rng.integers(20, size=400),
                          "r": rng.integers(1, 6, size=400).astype(float)})
    train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    model = SVD(n_factors=3, biased=biased, random_state=0).fit(train)
    predictions = model.test(train.build_testset())
    assert _training_mse(model, train) == pytest.approx(accuracy.mse(predictions, verbose=False),
                                                        abs=1e-12)
    scores = score_matrix(model)
    for p in predictions[:50]:
        raw = model.estimate(train.to_inner_uid(p.uid), train.to_inner_iid(p.iid))
        assert scores[train.to_inner_uid(p.uid), train.to_inner_iid(p.iid)] == pytest.approx(raw)


def _surprise_ratings(n=3_000, users=120, items=60, seed=0):
    import pandas as pd
    from surprise import Dataset, Reader

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"u": [f"u{k}" for k in rng.integers(users, size=n)],
                          "i": [f"b{k}" for k in rng.integers(items, size=n)],
                          "r": rng.integers(1, 6, size=n).astype(float)})
    return Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))


@pytest.mark.parametrize("sampled", [False, True])
def test_the_validation_split_is_the_one_surprise_would_build(sampled, monkeypatch):
    """``validation_split`` builds its parts from arrays: the same training split
    (inner IDs, ``ur``, ``ir``) and the same validation ratings as Surprise's own
    ``train_test_split`` of those ratings (after the same random sample, if any)."""
    import pandas as pd
    from surprise import Dataset, Reader
    from surprise.model_selection import train_test_split

    from recsys_helpers import surprise_tools

    train = surprise_tools.faster(_surprise_ratings().build_full_trainset())
    if sampled:
        monkeypatch.setattr(surprise_tools, "TUNE_AUTO_ABOVE", 2_000)
        monkeypatch.setattr(surprise_tools, "TUNE_AUTO_SAMPLE", 1_500)
    fit_part, validation = surprise_tools.validation_split(train, 0.1, "auto", seed=4)
    frame = pd.DataFrame(train.build_testset(), columns=["user", "item", "rating"])
    if sampled:
        frame = frame.sample(n=1_500, random_state=4)
    data = Dataset.load_from_df(frame, Reader(rating_scale=train.rating_scale))
    expected, held = train_test_split(data, test_size=0.1, random_state=4)
    assert validation == held and fit_part.n_ratings == expected.n_ratings
    assert dict(fit_part.ur) == dict(expected.ur) and dict(fit_part.ir) == dict(expected.ir)
    assert fit_part._raw2inner_id_users == expected._raw2inner_id_users
    assert fit_part._raw2inner_id_items == expected._raw2inner_id_items


def test_screening_keeps_whole_readers_and_still_finds_the_best():
    """Successive halving: a reader screened keeps every rating; the screen fits fewer
    ratings; a coarse pass fits only the values screening best on all the data, and the
    refinement still reaches the best value the screening passed over."""
    from recsys_helpers.surprise_tools import coordinate_search, faster, readers_share

    train = faster(_surprise_ratings().build_full_trainset())
    validation = [(train.to_raw_uid(u), train.to_raw_iid(i), r)
                  for u, i, r in list(train.all_ratings())[:300]]
    part, part_validation = readers_share(train, validation, 0.25, seed=1)
    assert 0.1 * train.n_users < part.n_users < 0.4 * train.n_users
    for raw, inner in part._raw2inner_id_users.items():
        assert len(part.ur[inner]) == len(train.ur[train.to_inner_uid(raw)])
    assert {u for u, _, _ in part_validation} <= set(part._raw2inner_id_users)
    assert len(part_validation) == sum(u in part._raw2inner_id_users for u, _, _ in validation)

    def bowl(s):
        return (s["a"] - 4) ** 2 + (s["b"] - 20) ** 2 + 1

    def screen(s):  # a cheaper estimate that prefers a = 2 (and b = 20)
        return (s["a"] - 2) ** 2 + (s["b"] - 20) ** 2 + 1

    ladders = {"a": [1, 2, 3, 4, 5], "b": [5, 10, 20, 50]}
    plain = coordinate_search(bowl, ladders, {"a": 1, "b": 50})
    for workers in (1, 2):
        halved = coordinate_search(bowl, ladders, {"a": 1, "b": 50}, screen=screen, keep=2,
                                   workers=workers, screening="a quarter")
        assert halved.best == plain.best == {"a": 4, "b": 20}
        assert len(halved.screened) == sum(map(len, ladders.values()))
        coarse = halved.table[halved.table.stage.str.startswith("coarse")]
        assert len(coarse) <= 2 * len(ladders) < len(plain.table)
        assert "screened on a quarter" in str(halved)


def test_a_learning_rate_walk_two_candidates_at_a_time_takes_the_same_steps(tmp_path,
                                                                            monkeypatch):
    """``search_learning_rate`` with workers: candidates trained in forked processes, each
    on one thread, give the walk, the figures and the choice of one at a time; a candidate
    trained ahead that the walk does not reach is counted, not listed."""
    import scipy.sparse as sp

    from recsys_helpers.implicit_tools import search_learning_rate
    from recsys_helpers.tuning import CANDIDATE_LOG, candidates_counted

    X = sp.random(60, 80, density=0.1, format="csr", random_state=0)
    X.data[:] = 1
    log = tmp_path / "candidates"
    monkeypatch.setenv(CANDIDATE_LOG, str(log))
    settings = dict(start=0.01, max_iterations=20, every=10, min_iterations=10, factors=4,
                    random_state=0, num_threads=1, progress=False)
    # the validation figure peaks at 10 ** peak, and depends on what the model learned
    for peak, walked, chosen, ahead in ((-1.2, [0.01, 0.03, 0.1, 0.3], 0.1, 0),
                                        (-1.5, [0.01, 0.03, 0.1], 0.03, 1)):
        def validate(model, peak=peak):
            return {"validation_auc": -abs(np.log10(model.learning_rate) - peak)
                    + 1e-3 * float(np.tanh(model.item_factors).mean())}

        alone = search_learning_rate(X, validate, **settings)
        assert sorted(alone.trials) == walked and alone.learning_rate == chosen
        assert candidates_counted(log) == len(walked)
        log.unlink()
        together = search_learning_rate(X, validate, workers=2, **settings)
        assert list(together.trials) == list(alone.trials)
        assert (together.learning_rate, together.iterations, together.value) == (
            alone.learning_rate, alone.iterations, alone.value)
        for lr, t in alone.trials.items():
            assert together.trials[lr].history == t.history
        assert candidates_counted(log) == len(walked) + ahead
        log.unlink()
