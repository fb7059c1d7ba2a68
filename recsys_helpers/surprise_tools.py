"""Plumbing for notebook 01 (Surprise): a faster training split, a validation split, a
search of settings that refines around its best point, and what a fitted model shows.

The notebook keeps the ideas (the model, the book's code, "choose on validation, test
once"); this module keeps the loops:

* :func:`faster` hands Surprise's SGD the same training ratings in the same order from
  plain lists: identical results, several times faster;
* :func:`validation_split` carves a validation split out of the training ratings (on
  large data, out of a random sample of them);
* :func:`coordinate_search` and :func:`tune` choose settings on that split: a coarse
  pass along each setting's whole ladder, then a refinement that moves one setting at a
  time to a neighbouring value while that lowers the validation MSE;
* :func:`epoch_curve` is the learning curve of a setting: training and validation MSE
  after each number of passes;
* :func:`score_matrix`, :func:`top_unseen` and :func:`top_popular` rank the books a user
  has not rated; :func:`rating_summary` and :func:`large_errors` describe the data and the
  errors.

Surprise is imported only where it is needed, so that the module imports without it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .tuning import count_candidate, forked_map

__all__ = ["SVD_DEFAULTS", "BASELINE_DEFAULTS", "TUNE_AUTO_ABOVE", "TUNE_AUTO_SAMPLE",
           "compact", "faster", "baseline_als", "validation_split", "Search",
           "coordinate_search", "estimates", "predict_frame", "surprise_mse", "readers_share",
           "tune",
           "epoch_curve", "score_matrix", "top_unseen", "top_popular", "rating_summary",
           "large_errors"]

#: Surprise's defaults for ``SVD`` (the book's model, ``SVD()``), in the names its
#: constructor takes: ``lr_all`` and ``reg_all`` set the learning rate and the
#: regularisation of all four kinds of parameters at once.
SVD_DEFAULTS = {"lr_all": 0.005, "n_factors": 100, "reg_all": 0.02, "n_epochs": 20}

#: Surprise's defaults for ``BaselineOnly`` fitted by alternating least squares.
BASELINE_DEFAULTS = {"reg_u": 15, "reg_i": 10}

#: ``validation_split(..., max_ratings="auto")``: all training ratings up to this many,
#: else a random :data:`TUNE_AUTO_SAMPLE` of them (on the real file, about 2.6 million).
TUNE_AUTO_ABOVE = 1_000_000
TUNE_AUTO_SAMPLE = 500_000


# ---------------------------------------------------------------- a leaner Dataset

def compact(data):
    """The same Surprise ``Dataset``, holding one Python object per distinct user id, book
    id and rating value instead of one per line.

    Surprise's reader makes new strings for the ids (and a new float for the rating) on
    every line it reads.  The test split keeps a copy per line, and the memory of the
    copies freed is not given back to the system: on a full-size synthetic file (3.2M
    lines), the notebook held 1.81 GB after the book's split (and after deleting the
    Dataset), 1.40 GB with this.  The ratings keep their values and their order, so the
    splits and the models fitted on them are identical:

    >>> import pandas as pd
    >>> from surprise import Dataset, Reader
    >>> frame = pd.DataFrame({"u": ["a", "a", "b"], "i": ["x", "y", "x"], "r": [5.0, 3.0, 5.0]})
    >>> data = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5)))
    >>> before = list(data.raw_ratings)
    >>> compact(data).raw_ratings == before
    True
    >>> data.raw_ratings[0][2] is data.raw_ratings[2][2]  # one object per distinct value
    True
    >>> numeric = pd.DataFrame({"u": [5, 5], "i": [1, 2], "r": [5.0, 4.0]})  # user 5, 5 stars
    >>> [tuple(map(type, t[:3])) for t in compact(Dataset.load_from_df(numeric, Reader(
    ...     rating_scale=(1, 5)))).raw_ratings] == [(int, int, float)] * 2
    True
    """
    raw = data.raw_ratings
    users, items, ratings = {}.setdefault, {}.setdefault, {}.setdefault  # apart: 5 == 5.0
    for k, (user, item, rating, stamp) in enumerate(raw):  # in place: no second list
        raw[k] = (users(user, user), items(item, item), ratings(rating, rating), stamp)
    return data


# ---------------------------------------------------------------- a faster training split

def faster(trainset):
    """The same Surprise ``Trainset``, handing its ratings to the SGD several times faster.

    Surprise's ``SVD`` asks ``trainset.all_ratings()`` for every rating once per pass, and
    the default is a Python generator over nested dictionaries: on a few tens of
    thousands of ratings that generator takes most of the training time.  The copy
    returned here hands over the same ``(user, item, rating)`` triples, in the same order,
    from three lists (about 24 bytes per rating), so a fitted model is identical:

    >>> import pandas as pd
    >>> from surprise import SVD, Dataset, Reader
    >>> frame = pd.DataFrame({"u": [0, 0, 1, 1, 2], "i": [0, 1, 0, 2, 1],
    ...                       "r": [5.0, 3.0, 4.0, 1.0, 2.0]})
    >>> train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    >>> quick = faster(train)
    >>> list(quick.all_ratings()) == list(train.all_ratings())
    True
    >>> a, b = SVD(random_state=0).fit(train), SVD(random_state=0).fit(quick)
    >>> bool((a.qi == b.qi).all() and (a.bu == b.bu).all())
    True
    """
    from surprise import Trainset

    fast = _fast_class(Trainset)
    return trainset if isinstance(trainset, fast) else fast(trainset)


_FastTrainset = None  # the class, built on first use (Surprise is imported lazily)


def _fast_class(base):
    global _FastTrainset
    if _FastTrainset is None:
        _route_als()
        class FastTrainset(base):
            """A Surprise ``Trainset`` whose ``all_ratings()`` reads three lists."""

            def __init__(self, trainset):
                self.__dict__.update(trainset.__dict__)
                users = list(range(self.n_users))   # shared int objects: 8 bytes a rating
                items = list(range(self.n_items))
                values: dict = {}
                u, i, r = [], [], []
                for uid, rated in self.ur.items():
                    for iid, rating in rated:
                        u.append(users[uid])
                        i.append(items[iid])
                        r.append(values.setdefault(rating, rating))
                self._columns, self._arrays = (u, i, r), None

            def all_ratings(self):
                return zip(*self._columns)

            def arrays(self):
                """The training ratings as three arrays, made once and kept: user and item
                inner IDs (int32), ratings."""
                if self._arrays is None:
                    u, i, r = self._columns
                    self._arrays = (np.asarray(u, dtype=np.int32), np.asarray(i, dtype=np.int32),
                                    np.asarray(r, dtype=float))
                return self._arrays

        _FastTrainset = FastTrainset
    return _FastTrainset


def _route_als():
    """Send Surprise's alternating least squares of the biases (``BaselineOnly``, and the
    baselines of ``KNNBaseline``) to :func:`baseline_als` when the training split is
    :func:`faster`'s; any other training split keeps Surprise's own loop."""
    from surprise.prediction_algorithms import algo_base

    surprise_als = algo_base.baseline_als
    if getattr(surprise_als, "routed", False):
        return

    def als(algorithm):
        if isinstance(algorithm.trainset, _FastTrainset):
            return baseline_als(algorithm.trainset, **{k: algorithm.bsl_options[k] for k in
                                                       ("n_epochs", "reg_u", "reg_i")
                                                       if k in algorithm.bsl_options})
        return surprise_als(algorithm)

    als.routed = True
    algo_base.baseline_als = als


def baseline_als(trainset, n_epochs: int = 10, reg_u: float = 15, reg_i: float = 10):
    """Surprise's alternating least squares of the biases (``bsl_options={"method": "als"}``),
    with numpy: the same updates in the same order, each pass a sum per book and a sum per
    user (:func:`numpy.bincount`) instead of a Python loop over every rating.

    Each pass sets every book's bias to the mean of its ratings' deviations from the global
    mean and the user's bias, shrunk by ``reg_i`` (``b_i = sum(r - mu - b_u) / (reg_i +
    n_i)``), then every user's bias likewise with ``reg_u``.  :func:`faster`'s training
    split fits ``BaselineOnly`` with it: the biases equal Surprise's but for the rounding of
    the sums (which add in another order):

    >>> import pandas as pd
    >>> from surprise import BaselineOnly, Dataset, Reader
    >>> from surprise.prediction_algorithms.optimize_baselines import baseline_als as loop
    >>> frame = pd.DataFrame({"u": [0, 0, 1, 1, 2, 2, 3], "i": [0, 1, 0, 2, 1, 2, 0],
    ...                       "r": [5.0, 3.0, 4.0, 1.0, 2.0, 4.0, 3.0]})
    >>> train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    >>> slow = BaselineOnly(bsl_options={"reg_u": 2, "reg_i": 3}, verbose=False)
    >>> slow.trainset = train
    >>> bu, bi = loop(slow)
    >>> quick = BaselineOnly(bsl_options={"reg_u": 2, "reg_i": 3}, verbose=False)
    >>> quick = quick.fit(faster(train))
    >>> bool(np.allclose(quick.bu, bu, rtol=0, atol=1e-12) and
    ...      np.allclose(quick.bi, bi, rtol=0, atol=1e-12))
    True
    """
    u, i, r = faster(trainset).arrays()
    deviation = r - trainset.global_mean
    per_item = np.bincount(i, minlength=trainset.n_items)
    per_user = np.bincount(u, minlength=trainset.n_users)
    bu, bi = np.zeros(trainset.n_users), np.zeros(trainset.n_items)
    for _ in range(int(n_epochs)):
        bi = np.bincount(i, weights=deviation - bu[u], minlength=trainset.n_items)
        bi /= reg_i + per_item
        bu = np.bincount(u, weights=deviation - bi[i], minlength=trainset.n_users)
        bu /= reg_u + per_user
    return bu, bi


# ---------------------------------------------------------------- the validation split

def validation_split(trainset, size: float = 0.1, max_ratings="auto", seed: int = 0):
    """Carve ``(fit_part, validation)`` out of a Surprise training split.

    Parameters
    ----------
    trainset : surprise.Trainset
        The training split; the test split is not touched.
    size : float
        Fraction of the (sampled) training ratings held out for validation.
    max_ratings : int, None or "auto"
        Compare settings on at most this many training ratings, drawn at random (one line
        says so).  ``"auto"``: all of them up to :data:`TUNE_AUTO_ABOVE`, else a random
        :data:`TUNE_AUTO_SAMPLE` (a search fits dozens of models: on the real file, with
        2.6 million training ratings, that would take long).  ``None``: all.
    seed : int
        Seeds the sample and the split.

    Returns
    -------
    fit_part : surprise.Trainset
        The ratings the candidates are fitted on (made :func:`faster`).
    validation : list of (user, item, rating)
        The ratings they are compared on, in Surprise's testset format.
    """
    from math import ceil

    fast = faster(trainset)
    users, items, ratings = fast.arrays()
    rows = np.arange(users.size)
    if max_ratings == "auto":
        max_ratings = None if rows.size <= TUNE_AUTO_ABOVE else TUNE_AUTO_SAMPLE
    if max_ratings is not None and rows.size > max_ratings:
        rows = pd.Series(rows).sample(n=int(max_ratings), random_state=seed).to_numpy()
        print(f"large data: the settings are compared on a random {int(max_ratings):,} "
              "of the training ratings")
    # what Surprise's train_test_split(test_size=size, random_state=seed) makes of these
    # ratings, without a Dataset of them: the same permutation, the first part to fit on
    order = rows[np.random.RandomState(seed).permutation(rows.size)]
    part, held = np.split(order, [rows.size - ceil(size * rows.size)])
    raw_users = [fast.to_raw_uid(u) for u in range(fast.n_users)]
    raw_items = [fast.to_raw_iid(i) for i in range(fast.n_items)]
    validation = [(raw_users[u], raw_items[i], r) for u, i, r in
                  zip(users[held].tolist(), items[held].tolist(), ratings[held].tolist())]
    return _subset(fast, part), validation


def _subset(fast, rows):
    """The Surprise ``Trainset`` (made :func:`faster`) that Surprise builds from the
    ratings ``rows`` of the :func:`faster` training split ``fast``, in that order: inner IDs
    numbered by first appearance, ``ur`` and ``ir`` in the order of ``rows``."""
    from collections import defaultdict

    from surprise import Trainset

    users, items, ratings = fast.arrays()
    user_codes, user_inner = pd.factorize(users[rows])
    item_codes, item_inner = pd.factorize(items[rows])
    ur, ir = defaultdict(list), defaultdict(list)
    for u, i, r in zip(user_codes.tolist(), item_codes.tolist(), ratings[rows].tolist()):
        ur[u].append((i, r))
        ir[i].append((u, r))
    return faster(Trainset(ur, ir, len(ur), len(ir), int(len(rows)), fast.rating_scale,
                           {fast.to_raw_uid(u): k for k, u in enumerate(user_inner.tolist())},
                           {fast.to_raw_iid(i): k for k, i in enumerate(item_inner.tolist())}))


# ---------------------------------------------------------------- the search

@dataclass
class Search:
    """What a :func:`coordinate_search` tried and chose.

    ``start`` and ``best`` are settings (dicts) and ``score`` the best's validation MSE;
    ``table`` has one row per setting tried (``stage``: where it was first tried, the
    settings, ``validation MSE``); ``path`` one row per move (the start, then each change
    kept); ``edges`` names the settings whose chosen value is the last of its ladder while
    the value beside it is worse by more than the margin (the best may lie beyond).
    """

    name: str
    start: dict
    best: dict
    score: float
    table: pd.DataFrame
    path: pd.DataFrame
    margin: float
    edges: list = field(default_factory=list)
    screened: pd.DataFrame | None = None
    screening: str = ""

    @property
    def start_score(self) -> float:
        """The validation MSE of the starting settings."""
        return float(self.table["validation MSE"].iloc[0])

    @property
    def changes(self) -> str:
        """The settings the search changed, in words: ``"n_factors 100 -> 2, ..."``."""
        moved = [f"{k} {self.start[k]:g} -> {v:g}" for k, v in self.best.items()
                 if v != self.start.get(k)]
        return ", ".join(moved) or "nothing"

    def __str__(self) -> str:
        def shown(settings):
            return ", ".join(f"{k}={v:g}" for k, v in settings.items())

        screened = "" if self.screened is None else (
            f"{len(self.screened)} settings screened on {self.screening or 'part of the data'}"
            ", the best of each coarse pass and the refinement's on all of it: ")
        text = (f"{self.name}: {screened}{len(self.table)} settings tried on the validation "
                f"split; start ({shown(self.start)}): validation MSE {self.start_score:.3f}; "
                f"chosen ({shown(self.best)}): {self.score:.3f}.")
        for name in self.edges:
            text += (f"\n  {name}={self.best[name]:g} is the end of its ladder and the value "
                     f"beside it is over {self.margin:.0%} worse: the best may lie beyond "
                     "(extend the ladder).")
        return text

    __repr__ = __str__


def coordinate_search(evaluate: Callable[[dict], float], ladders: Mapping[str, Sequence],
                      start: Mapping, margin: float = 0.01, max_rounds: int = 10,
                      name: str = "search", progress=None, workers: int = 1,
                      screen: Callable[[dict], float] | None = None, keep: int = 2,
                      screening: str = "") -> Search:
    """Choose settings that minimise ``evaluate(settings)``, one setting at a time.

    1. **Coarse pass.**  For each setting in the order of ``ladders``, every value of its
       ladder is tried with the other settings held; the best value is kept if it beats
       the current settings by more than ``margin`` (relative).  With ``screen``, a
       cheaper estimate of ``evaluate`` (the same model fitted on part of the data), every
       value is first *screened* with it and only the ``keep`` best are evaluated:
       successive halving, many candidates on little data and the few best on all of it
       (``screening`` says on what, for the summary).
    2. **Refinement.**  Round after round, each setting moves to a neighbouring value of
       its ladder, and on in the same direction, while each move beats the current
       settings by more than ``margin``; it stops when a whole round moves nothing (or
       after ``max_rounds`` rounds).

    A change smaller than ``margin`` is not worth a different setting: it is within what
    another random seed moves.  Every setting is evaluated once (a cache), and the search
    is deterministic when ``evaluate`` is.  The order of ``ladders`` matters: put first
    what makes the others comparable (for an SGD, the learning rate: a model that has
    barely moved from its start tells little about its size or its regularisation).
    Settings of ``start`` without a ladder are passed as they are; a ladder without a
    start value starts from its first value.  With ``workers`` > 1 (an int, or a function
    asked before each parallel step) the values of a coarse
    pass, which do not depend on each other, are evaluated in that many forked processes
    at once (``evaluate`` must be deterministic: the search then takes the same path).

    >>> bowl = lambda s: (s["a"] - 3) ** 2 + (s["b"] - 20) ** 2 + 1
    >>> found = coordinate_search(bowl, {"a": [1, 2, 3, 4, 5], "b": [5, 10, 20, 50]},
    ...                           {"a": 1, "b": 50})
    >>> found.best, found.score
    ({'a': 3, 'b': 20}, 1.0)
    >>> found.path[["stage", "a", "b"]].values.tolist()
    [['start', 1, 50], ['coarse: b', 1, 20], ['refine 1: a', 2, 20], ['refine 1: a', 3, 20]]
    >>> coordinate_search(bowl, {"a": [1, 2], "b": [20]}, {"a": 1, "b": 20}).edges
    ['a']
    """
    ladders = {k: list(v) for k, v in ladders.items()}
    start = {**{k: ladder[0] for k, ladder in ladders.items() if k not in start}, **start}
    for key, ladder in ladders.items():
        if start[key] not in ladder:
            raise ValueError(f"the start value {key}={start[key]!r} is not in its ladder "
                             f"{ladder}")
    trials = _Trials(evaluate, ladders, margin, progress, workers, screen, keep)
    best = trials.move(dict(start), "start")
    for key in ladders:
        best = _coarse(trials, best, key)
    for round_ in range(1, max_rounds + 1):
        before = best
        for key in ladders:
            best = _refine(trials, best, key, f"refine {round_}: {key}")
        if best == before:
            break
    edges = [key for key in ladders if _at_edge(trials, best, key)]
    return Search(name, dict(start), best, trials(best, ""), pd.DataFrame(trials.rows),
                  pd.DataFrame(trials.moves), margin, edges,
                  None if screen is None else pd.DataFrame(trials.screened), screening)


class _Trials:
    """The settings a search has tried, each evaluated once, and the moves it made."""

    def __init__(self, evaluate, ladders, margin, progress, workers=1, screen=None, keep=2):
        self.evaluate, self.ladders, self.margin = evaluate, ladders, margin
        self.progress, self.cache, self.rows, self.moves = progress, {}, [], []
        self.workers, self.ahead = workers, {}
        self.screen, self.keep, self.screened = screen, keep, []

    def _workers(self) -> int:
        return self.workers() if callable(self.workers) else self.workers

    def prefetch(self, candidates: list[dict]) -> None:
        """Evaluate ``candidates`` not seen yet in forked worker processes, in parallel;
        :meth:`__call__` then records each in order as if it had been evaluated there."""
        todo = [c for c in candidates if self._key(c) not in self.cache
                and self._key(c) not in self.ahead]
        workers = self._workers()
        if workers < 2 or len(todo) < 2:
            return
        for c, value in zip(todo, _in_parallel(self.evaluate, todo, workers)):
            self.ahead[self._key(c)] = value
            count_candidate("coordinate_search")  # trained, whether or not the path visits it

    def shortlist(self, best: dict, key: str, stage: str) -> list:
        """The ``keep`` values of ``key``'s ladder that screen best (in ladder order), every
        value screened with the others held (in parallel, with workers)."""
        ladder = self.ladders[key]
        candidates = [{**best, key: v} for v in ladder]
        scores = _in_parallel(self.screen, candidates, self._workers())
        for c, value in zip(candidates, scores):
            count_candidate("coordinate_search")
            self.screened.append({"stage": stage, **c, "screened MSE": value})
        if self.progress is not None:
            self.progress.update(len(candidates))
        scores = [v if np.isfinite(v) else np.inf for v in scores]
        return [ladder[j] for j in sorted(np.argsort(scores, kind="stable")[:self.keep])]

    def _key(self, settings) -> tuple:
        return tuple(settings[k] for k in self.ladders)

    def __call__(self, settings, stage) -> float:
        key = self._key(settings)
        if key not in self.cache:
            if key in self.ahead:
                value = self.ahead.pop(key)
            else:
                value = float(self.evaluate(dict(settings)))
                count_candidate("coordinate_search")
            self.cache[key] = value if np.isfinite(value) else np.inf
            self.rows.append({"stage": stage, **settings, "validation MSE": value})
            if self.progress is not None:
                self.progress.update(1)
        return self.cache[key]

    def beats(self, candidate: dict, current: dict, stage: str) -> bool:
        """Whether ``candidate`` scores lower than ``current`` by more than the margin."""
        now = self(current, stage)
        return self(candidate, stage) < now - self.margin * abs(now)

    def move(self, settings: dict, stage: str) -> dict:
        self.moves.append({"stage": stage, **settings,
                           "validation MSE": self(settings, stage)})
        return settings


def _in_parallel(evaluate, candidates: list[dict], workers: int) -> list[float]:
    """``[evaluate(c) for c in candidates]``, in ``workers`` forked processes if more than
    one."""
    if workers < 2 or len(candidates) < 2:
        return [float(evaluate(dict(c))) for c in candidates]
    return [float(v) for v in forked_map(lambda c: evaluate(dict(c)), candidates, workers)]


def _coarse(trials: _Trials, best: dict, key: str) -> dict:
    """Every value of ``key``'s ladder (with screening, the values it shortlists), the others
    held; the best if it beats ``best``."""
    stage, ladder = f"coarse: {key}", trials.ladders[key]
    if trials.screen is not None:
        ladder = trials.shortlist(best, key, stage)
    trials.prefetch([{**best, key: v} for v in ladder])
    scores = [trials({**best, key: v}, stage) for v in ladder]
    candidate = {**best, key: ladder[int(np.argmin(scores))]}
    return trials.move(candidate, stage) if trials.beats(candidate, best, stage) else best


def _refine(trials: _Trials, best: dict, key: str, stage: str) -> dict:
    """Move ``key`` up its ladder while that helps, else down while that helps.  (With
    workers, both neighbours are fitted at once first: the path is the same, and the one
    not needed costs a core that would otherwise wait.)"""
    ladder = trials.ladders[key]
    at = ladder.index(best[key])
    trials.prefetch([{**best, key: ladder[j]} for j in (at + 1, at - 1) if 0 <= j < len(ladder)])
    for step in (1, -1):
        j = at + step
        while 0 <= j < len(ladder) and trials.beats({**best, key: ladder[j]}, best, stage):
            best = trials.move({**best, key: ladder[j]}, stage)
            j += step
        if best[key] != ladder[at]:
            break
    return best


def _at_edge(trials: _Trials, best: dict, key: str) -> bool:
    """Whether ``key``'s chosen value ends its ladder and beats the value beside it by more
    than the margin (the best may lie beyond the ladder)."""
    ladder = trials.ladders[key]
    at = ladder.index(best[key])
    if len(ladder) < 2 or at not in (0, len(ladder) - 1):
        return False
    inner = {**best, key: ladder[1 if at == 0 else at - 1]}
    return trials.beats(best, inner, f"edge check: {key}")


def _encoded(trainset, ratings):
    """``(users, items, ratings)`` arrays of a Surprise testset in ``trainset``'s inner IDs
    (-1 for a user or an item unknown to it)."""
    users = np.array([trainset._raw2inner_id_users.get(u, -1) for u, _, _ in ratings])
    items = np.array([trainset._raw2inner_id_items.get(i, -1) for _, i, _ in ratings])
    return (users.astype(np.int64), items.astype(np.int64),
            np.array([r for _, _, r in ratings], dtype=float))


def estimates(algorithm, ratings, encoded=None) -> np.ndarray:
    """What ``algorithm.test(ratings)`` predicts for each ``(user, item, rating)`` of a
    Surprise testset (``est``, clipped to the rating scale), without a Python call per
    rating, for a fitted ``SVD`` or ``BaselineOnly``.

    Surprise predicts ``mu``, plus ``b_u`` if the user is known, plus ``b_i`` if the item is
    known, plus ``q_i . p_u`` if both are, clipped to the rating scale.  Other algorithms
    (and ``SVD(biased=False)``) go through Surprise's own ``test``.  ``encoded`` is the
    testset already in inner IDs (see :func:`tune`, which encodes the validation split
    once for all its candidates).

    >>> import pandas as pd
    >>> from surprise import SVD, BaselineOnly, Dataset, Reader
    >>> frame = pd.DataFrame({"u": [0, 0, 1, 1, 2, 2], "i": [0, 1, 0, 2, 1, 2],
    ...                       "r": [5.0, 3.0, 4.0, 1.0, 2.0, 4.0]})
    >>> train = Dataset.load_from_df(frame, Reader(rating_scale=(1, 5))).build_full_trainset()
    >>> ratings = [(0, 2, 4.0), (1, 1, 2.0), (9, 0, 3.0), (2, 9, 5.0), (9, 9, 1.0)]
    >>> for algorithm in (SVD(n_factors=3, random_state=0), BaselineOnly(verbose=False)):
    ...     slow = [p.est for p in algorithm.fit(train).test(ratings)]
    ...     print(np.allclose(estimates(algorithm, ratings), slow, rtol=0, atol=1e-12))
    True
    True
    """
    from surprise import SVD, BaselineOnly

    plain = isinstance(algorithm, BaselineOnly) or (isinstance(algorithm, SVD)
                                                     and algorithm.biased)
    if not plain:
        return np.array([p.est for p in algorithm.test(ratings)], dtype=float)
    trainset = algorithm.trainset
    u, i, _ = encoded if encoded is not None else _encoded(trainset, ratings)
    ku, ki = u >= 0, i >= 0
    est = np.full(u.size, trainset.global_mean)
    est[ku] += algorithm.bu[u[ku]]
    est[ki] += algorithm.bi[i[ki]]
    if isinstance(algorithm, SVD):  # a block of ratings at a time: the gathered factor
        both = np.flatnonzero(ku & ki)   # rows of 850,000 test ratings would take 1.4 GB
        for start in range(0, both.size, 65_536):
            k = both[start:start + 65_536]
            est[k] += np.einsum("nk,nk->n", algorithm.pu[u[k]], algorithm.qi[i[k]])
    lo, hi = trainset.rating_scale
    return np.clip(est, lo, hi)


def predict_frame(algorithm, ratings) -> pd.DataFrame:
    """``algorithm.test(ratings)`` as a DataFrame (``uid``, ``iid``, ``r_ui``, ``est``),
    computed by :func:`estimates`: on a large testset, much faster than a list of
    Surprise ``Prediction`` objects, and a fraction of their memory."""
    frame = pd.DataFrame(ratings, columns=["uid", "iid", "r_ui"])
    frame["r_ui"] = frame["r_ui"].astype(float)
    frame["est"] = estimates(algorithm, ratings)
    return frame


def surprise_mse(algorithm, ratings, encoded=None) -> float:
    """The MSE of a fitted algorithm on a Surprise testset, as
    ``accuracy.mse(algorithm.test(ratings))`` computes it (see :func:`estimates`)."""
    u, i, r = encoded if encoded is not None else _encoded(algorithm.trainset, ratings)
    if r.size == 0:
        return float("nan")
    return float(np.mean((estimates(algorithm, ratings, (u, i, r)) - r) ** 2))


#: Seconds of the starting settings' fit from which :func:`tune` fits the candidates of a
#: coarse pass in parallel (a shorter fit takes less than starting a process).
PARALLEL_SECONDS = 0.5

#: :func:`tune` screens candidates (successive halving) when the settings are compared on
#: at least this many training ratings: on a random :data:`SCREEN_SHARE` of the readers.
SCREEN_ABOVE = 200_000
SCREEN_SHARE = 0.25


def readers_share(fit_part, validation, share: float = SCREEN_SHARE, seed: int = 0):
    """``(part, part_validation)``: the ratings of a random ``share`` of the readers of
    ``fit_part`` (all of each chosen reader's ratings, so that a reader has as many as
    before), and the validation ratings of the same readers."""
    fast = faster(fit_part)
    chosen = np.random.default_rng(seed).random(fast.n_users) < share
    users, _, _ = fast.arrays()
    part = _subset(fast, np.flatnonzero(chosen[users]))
    known = part._raw2inner_id_users
    return part, [t for t in validation if t[0] in known]


def tune(make: Callable[..., object], ladders: Mapping[str, Sequence], start: Mapping,
         fit_part, validation, margin: float = 0.01, name: str | None = None,
         seed: int = 0) -> Search:
    """:func:`coordinate_search` of a Surprise algorithm's settings on a validation split.

    ``make(**settings)`` returns an unfitted algorithm (e.g. ``SVD(random_state=0,
    **settings)``); each candidate is fitted on ``fit_part`` and scored by its MSE on
    ``validation`` (both from :func:`validation_split`; see :func:`surprise_mse`).  A
    progress bar counts the fits.

    Where the fits take long, they use the machine's cores and less data:

    * when the starting settings' fit takes :data:`PARALLEL_SECONDS` or more, the
      candidates of a coarse pass (and both neighbours of a refinement) are fitted on
      every core at once (Surprise is single-threaded; the search takes the same path);
    * from :data:`SCREEN_ABOVE` training ratings, each coarse pass first screens every
      value of its ladder on the ratings of a random quarter of the readers
      (:func:`readers_share`, seeded by ``seed``) and fits only the best two on all of
      ``fit_part`` (successive halving); the refinement compares its neighbours on all of
      it, so a value the screening passed over is still reached when it is better.
    """
    from .progress import tqdm

    name = name or type(make(**{**start, **{k: v[0] for k, v in ladders.items()
                                              if k not in start}})).__name__
    encoded = _encoded(fit_part, validation)
    first = []  # the seconds of the first fit, the starting settings' (in this process)

    def evaluate(settings):
        began = time.perf_counter()
        algorithm = make(**settings).fit(fit_part)
        if not first:
            first.append(time.perf_counter() - began)
        return surprise_mse(algorithm, validation, encoded)

    def workers():  # Surprise is single-threaded: long fits go to every core at once
        return (os.cpu_count() or 1) if first and first[0] >= PARALLEL_SECONDS else 1

    screen, screening = None, ""
    if fit_part.n_ratings >= SCREEN_ABOVE:
        part, part_validation = readers_share(fit_part, validation, SCREEN_SHARE, seed)
        part_encoded = _encoded(part, part_validation)
        screening = (f"a random {SCREEN_SHARE:.0%} of the readers ({part.n_ratings:,} "
                     "training ratings)")

        def screen(settings):
            return surprise_mse(make(**settings).fit(part), part_validation, part_encoded)

    with tqdm(desc=f"{name} search", unit=" fits") as bar:
        found = coordinate_search(evaluate, ladders, start, margin, name=name, progress=bar,
                                  workers=workers, screen=screen, screening=screening)
    sys.stderr.flush()  # the bar's last line before whatever is printed next
    return found


# ---------------------------------------------------------------- the learning curve

def _training_mse(algorithm, trainset) -> float:
    """The MSE of a fitted ``SVD`` on its training ratings, as Surprise predicts them
    (every user and item known; the estimate clipped to the rating scale; with
    ``biased=False``, the factors' product alone)."""
    u, i, r = faster(trainset).arrays()
    est = np.einsum("nk,nk->n", algorithm.pu[u], algorithm.qi[i])
    if algorithm.biased:
        est = est + algorithm.trainset.global_mean + algorithm.bu[u] + algorithm.bi[i]
    lo, hi = trainset.rating_scale
    return float(np.mean((np.clip(est, lo, hi) - r) ** 2))


def epoch_curve(make: Callable[..., object], settings: Mapping, fit_part, validation,
                epochs: Sequence[int] | None = None) -> dict:
    """Training and validation MSE of ``make(**settings)`` after each number of passes.

    Surprise's SGD starts from the same random factors and visits the ratings in the same
    order on every fit, so a model fitted for ``e`` passes is exactly the longer run seen
    after its ``e``-th pass: the curve is drawn by refitting (cheap with :func:`faster`).
    ``epochs`` defaults to doubling counts up to twice ``settings["n_epochs"]``.

    Returns ``{"step": epochs, "training_mse": [...], "validation_mse": [...]}``, the
    format of :func:`recsys_helpers.plotting.learning_curve`.
    """
    if epochs is None:
        last = 2 * int(settings["n_epochs"])
        epochs = sorted({int(e) for e in (1, 2, 5, 10, 20, 40, 80, 160, 320, 640)
                         if e <= last} | {int(settings["n_epochs"])})
    curve = {"step": [], "training_mse": [], "validation_mse": []}
    encoded = _encoded(fit_part, validation)
    for e in epochs:
        algorithm = make(**{**settings, "n_epochs": int(e)})
        algorithm.fit(fit_part)
        curve["step"].append(int(e))
        curve["training_mse"].append(_training_mse(algorithm, fit_part))
        curve["validation_mse"].append(surprise_mse(algorithm, validation, encoded))
    return curve


# ---------------------------------------------------------------- what a model ranks

def score_matrix(algorithm) -> np.ndarray:
    """Every user's predicted rating of every item (users x items, inner IDs) of a fitted
    ``SVD`` or ``BaselineOnly``: ``mu + b_u + b_i`` (+ ``q_i . p_u``), unclipped, for
    ranking (``SVD(biased=False)``: ``q_i . p_u`` alone, as Surprise predicts)."""
    trainset = algorithm.trainset
    if hasattr(algorithm, "pu") and not algorithm.biased:
        return algorithm.pu @ algorithm.qi.T
    if hasattr(algorithm, "pu"):
        bu, bi = algorithm.bu, algorithm.bi
        scores = algorithm.pu @ algorithm.qi.T
    else:  # BaselineOnly
        bu, bi = algorithm.bu, algorithm.bi
        scores = np.zeros((trainset.n_users, trainset.n_items))
    return scores + trainset.global_mean + bu[:, None] + bi[None, :]


def _train_csr(trainset):
    import scipy.sparse as sp

    u, i, _ = faster(trainset).arrays()
    return sp.csr_matrix((np.ones(u.size), (u, i)), shape=(trainset.n_users, trainset.n_items))


def _ranked(scores: np.ndarray, trainset, k: int):
    from .metrics import top_k

    top = top_k(lambda users: scores[users], _train_csr(trainset),
                np.arange(trainset.n_users), k)
    users = np.array([trainset.to_raw_uid(u) for u in range(trainset.n_users)], dtype=object)
    raw_items = np.array([trainset.to_raw_iid(i) for i in range(trainset.n_items)], dtype=object)
    return users, raw_items[top], np.take_along_axis(scores, top, axis=1)


def top_unseen(algorithm, k: int = 10):
    """Each user's ``k`` best-predicted books among those not rated in training.

    Returns ``(user_ids, book_ids, scores)``: raw user IDs (one per user of the training
    split), and ``(n_users, k)`` arrays of raw book IDs and predicted ratings, best first.
    """
    return _ranked(score_matrix(algorithm), algorithm.trainset, k)


def top_popular(trainset, k: int = 10):
    """The popularity baseline: each user's ``k`` most-rated books (in training) among
    those the user has not rated; same return as :func:`top_unseen` (scores: counts)."""
    counts = np.array([len(trainset.ir[i]) for i in range(trainset.n_items)], dtype=float)
    return _ranked(np.broadcast_to(counts, (trainset.n_users, trainset.n_items)).copy(),
                   trainset, k)


# ---------------------------------------------------------------- describing data and errors

def rating_summary(ratings: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Size and density of rating tables (``user``, ``item``, ``rating``), one row each.

    Columns: ratings, users, books, ratings per user (mean and median), ratings per book
    (mean), the mean rating and its standard deviation.  A table whose ratings are all
    equal is named in a printed line: there is nothing for a model to learn.

    >>> frame = pd.DataFrame({"user": ["a", "a", "b"], "item": ["x", "y", "x"],
    ...                       "rating": [4.0, 4.0, 4.0]})
    >>> rating_summary({"tiny": frame})[["ratings", "users", "ratings per user"]]
    every rating of tiny is 4: there is nothing for a model to learn.
          ratings  users  ratings per user
    tiny        3      2               1.5
    """
    rows = {}
    for name, df in ratings.items():
        per_user = df.groupby("user", observed=True).size()
        per_book = df.groupby("item", observed=True).size()
        rows[name] = {"ratings": len(df), "users": per_user.size, "books": per_book.size,
                      "ratings per user": round(float(per_user.mean()), 2),
                      "median per user": float(per_user.median()),
                      "ratings per book": round(float(per_book.mean()), 2),
                      "mean rating": round(float(df["rating"].mean()), 2),
                      "standard deviation": round(float(df["rating"].std(ddof=0)), 2)}
        if df["rating"].nunique() <= 1:
            print(f"every rating of {name} is {df['rating'].iloc[0]:g}: there is nothing "
                  "for a model to learn.")
    return pd.DataFrame.from_dict(rows, orient="index")


def large_errors(predictions, trainset, threshold: float = 2.0) -> dict:
    """Where the large errors of a model's test predictions come from.

    Parameters
    ----------
    predictions : DataFrame of :func:`predict_frame`, or a list of surprise.Prediction
    trainset : surprise.Trainset
        The training split (for each user's and book's mean training rating).
    threshold : float
        An error is large when the prediction misses the rating by more than this.

    Returns
    -------
    dict with ``by_rating`` (a DataFrame by true rating: share of the test ratings, mean
    prediction, MSE, share of the total squared error) and, over the large errors:
    ``share`` (of all test ratings), ``low_share`` (the share of them that are ratings
    below the prediction), ``rating``, ``prediction``, ``user_mean`` and ``book_mean``
    (means over the large errors of the true rating, the prediction, and the user's and
    the book's mean training rating; NaN where unknown), and ``sentence``, which says it
    in words.
    """
    if not isinstance(predictions, pd.DataFrame):
        predictions = pd.DataFrame([(p.uid, p.iid, p.r_ui, p.est) for p in predictions],
                                   columns=["uid", "iid", "r_ui", "est"])
    truth = predictions["r_ui"].to_numpy(dtype=float)
    est = predictions["est"].to_numpy(dtype=float)
    err2 = (est - truth) ** 2
    frame = pd.DataFrame({"rating": truth, "prediction": est, "squared error": err2})
    total = err2.sum() or 1.0
    by_rating = frame.groupby("rating").agg(**{
        "share of the test ratings": ("prediction", lambda s: len(s) / len(frame)),
        "mean prediction": ("prediction", "mean"),
        "MSE": ("squared error", "mean"),
        "share of the squared error": ("squared error", lambda s: s.sum() / total)})
    large = np.abs(est - truth) > threshold

    def mean_of(ids, inner, table):
        out = []
        for n, raw in enumerate(ids):
            if not large[n]:
                continue
            try:
                out.append(np.mean([r for _, r in table[inner(raw)]]))
            except ValueError:  # unknown in training
                out.append(np.nan)
        return float(np.nanmean(out)) if out and not np.all(np.isnan(out)) else float("nan")

    figures = {
        "by_rating": by_rating.round(3),
        "share": float(large.mean()) if large.size else 0.0,
        "low_share": float((truth[large] < est[large]).mean()) if large.any() else float("nan"),
        "rating": float(truth[large].mean()) if large.any() else float("nan"),
        "prediction": float(est[large].mean()) if large.any() else float("nan"),
        "user_mean": mean_of(predictions["uid"], trainset.to_inner_uid, trainset.ur),
        "book_mean": mean_of(predictions["iid"], trainset.to_inner_iid, trainset.ir),
    }
    lo = trainset.rating_scale[0]
    low = truth <= lo + 1
    if not large.any():
        figures["sentence"] = f"No test rating is missed by more than {threshold:g} stars."
    else:
        figures["sentence"] = (
            f"{int(large.sum()):,} of the {truth.size:,} test ratings ({figures['share']:.2%}) "
            f"are missed by more than {threshold:g} stars, {figures['low_share']:.0%} of them "
            f"by a prediction above the rating. On them the rating averages "
            f"{figures['rating']:.2f} stars and the prediction {figures['prediction']:.2f}; "
            f"the same users' training ratings average {figures['user_mean']:.2f} and the "
            f"same books' {figures['book_mean']:.2f}. Ratings of {lo:g} or "
            f"{lo + 1:g} stars are {low.mean():.0%} of the test ratings and make "
            f"{err2[low].sum() / total:.0%} of the squared error.")
    return figures
