"""``implicit``'s BPR in the course (notebook 2): the plumbing behind one call each.

Notebook 2 shows the ideas — the model, its recommendations, what its factors found, the
metrics and what they say.  This module holds what would bury them:

* :func:`scale_for` — the settings that depend only on the data's size (threads, how many
  users are evaluated and tuned on), decided once, with one line saying which;
* :func:`train_bpr` — ``implicit``'s BPR trained in rounds of ``every`` iterations
  (calling ``fit`` again continues training), with early stopping on a validation figure
  that keeps the best factors (:class:`~recsys_helpers.tuning.EarlyStopping` with the
  factor arrays as its state, :func:`factor_state`);
* :func:`search_learning_rate` — the learning rate and the number of iterations chosen on
  a validation split: a walk along a ladder of learning rates in half-decade steps, from
  the book's value in the direction that improves, until it stops improving;
* :class:`Validation` and :class:`HeldOut` — the figures a model is judged on, on the
  validation split (while tuning) and on the test split (once, at the end), and
  :func:`top_k_profile` — what fills each model's top-k lists;
* :class:`Scorer` — a model (or popularity) as the scoring functions the metrics take;
* :func:`record_figures`, :func:`verdict_if_recorded`, :func:`shown_figures` — recording
  the figures and stating verdicts on them, also on data where one cannot be computed.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .interactions import Interactions, PositiveSet
from .metrics import auc_exact, auc_sampled, precision_recall_at_k, top_k
from .progress import tqdm
from .results import record, recorded
from .tuning import EarlyStopping, count_candidate, forked_map

__all__ = ["LADDER", "Scale", "scale_for", "tuning_part", "Scorer", "factor_state", "Trained",
           "train_bpr", "Validation", "Search", "search_learning_rate", "HeldOut",
           "rank_correlation", "top_k_profile", "record_figures", "shown_figures",
           "verdict_if_recorded"]

#: Learning rates in half-decade steps (each about 3.16 times the previous).
LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)

#: Above this many users, the data counts as large (see :func:`scale_for`).
LARGE_FROM = 20_000


_LIMITED = False


def _one_blas_thread(func):
    """Run ``func`` with OpenBLAS (numpy's matrix products) on one thread.

    ``implicit``'s BPR trains single-threaded C code between numpy's products (the
    validation figures); OpenBLAS's idle threads keep spinning after each product and
    compete with it for the cores: on two cores, the learning-rate search of notebook 2
    took twice the CPU time without this limit.
    """
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        global _LIMITED
        if _LIMITED:
            return func(*args, **kwargs)
        from threadpoolctl import threadpool_limits

        _LIMITED = True
        try:
            with threadpool_limits(limits=1, user_api="blas"):
                return func(*args, **kwargs)
        finally:
            _LIMITED = False

    return wrapper


# ------------------------------------------------------------------ the data's size

@dataclass(frozen=True)
class Scale:
    """Settings that depend only on the data's size.

    ``num_threads``: ``implicit``'s threads (1: the same numbers every run; 0: all
    cores, faster, results vary a little).  ``eval_users``: how many test users are
    ranked against every book (``None``: all).  ``tune_users``: the users whose training
    interactions the candidate settings are compared on (``None``: all).  ``workers``:
    how many candidates of a search train at once, each on one thread (large data: two,
    one per core, which is what the learning-rate walk can use).
    """

    large: bool
    num_threads: int
    eval_users: int | None
    tune_users: int | None
    workers: int = 1

    def __str__(self) -> str:
        threads = ("1 thread (the same numbers every run)" if self.num_threads == 1
                   else "all cores (faster; the numbers vary a little between runs)"
                   if self.num_threads == 0 else f"{self.num_threads} threads")
        evaluated = ("every test user ranked against every book" if self.eval_users is None
                     else f"{self.eval_users:,} random test users ranked against every book")
        tuned = ("every training interaction used for tuning" if self.tune_users is None
                 else f"settings compared on {self.tune_users:,} random users")
        if self.workers > 1:
            tuned += f", {self.workers} candidates at a time (one thread each)"
        return f"{'large' if self.large else 'small'} data: {threads}; {evaluated}; {tuned}"


def scale_for(n_users: int, *, num_threads="auto", eval_users="auto", tune_users="auto",
              workers="auto", large_from: int = LARGE_FROM, verbose: bool = True) -> Scale:
    """The :class:`Scale` for data with ``n_users`` users; ``"auto"`` picks by size.

    Small data (at most ``large_from`` users): one thread, every test user evaluated,
    every training interaction used for tuning.  Large data (the real Goodreads file:
    256,088 users): all cores, 2,000 random test users (ranking 250,000 books per user is
    slow), candidates compared on 20,000 random users, two at a time.  Any
    setting can be given instead.
    """
    large = n_users > large_from
    scale = Scale(large=large,
                  num_threads=(0 if large else 1) if num_threads == "auto" else int(num_threads),
                  eval_users=(2_000 if large else None) if eval_users == "auto" else eval_users,
                  tune_users=(20_000 if large else None) if tune_users == "auto" else tune_users,
                  workers=(min(2, os.cpu_count() or 1) if large else 1) if workers == "auto"
                  else int(workers))
    if verbose:
        print(f"{n_users:,} users, {scale}")
    return scale


def tuning_part(train: Interactions, users: int | None, seed=0) -> Interactions:
    """The training interactions the candidate settings are compared on: all of them, or
    those of ``users`` random users (large data)."""
    if users is None or train.n_users <= users:
        return train
    chosen = np.random.default_rng(seed).choice(train.n_users, users, replace=False)
    part = train.subset(np.isin(train.user, chosen))
    print(f"large data: the candidates are compared on the {len(part):,} training "
          f"interactions of {users:,} random users")
    return part


# ------------------------------------------------------------------ scores

@dataclass(frozen=True)
class Scorer:
    """A ranking model as the two scoring functions the metrics take.

    ``pairs(users, items) -> scores`` scores pairs (arrays of equal length);
    ``users(users) -> (len(users), n_items)`` scores every item for each user.  For
    ``implicit``'s models the score is ``user_factors[u] · item_factors[i]``, which is
    :math:`\\beta_i + \\gamma_u \\cdot \\gamma_i` for BPR (the last item column holds
    :math:`\\beta_i`, the users' last column is 1).
    """

    pairs: Callable
    users: Callable

    @classmethod
    def of_model(cls, model) -> Scorer:
        """The scores of a fitted ``implicit`` model (its factors as they are now)."""
        def pairs(users, items):
            return np.einsum("nk,nk->n", model.user_factors[users], model.item_factors[items])

        def users_(users):
            return model.user_factors[users] @ model.item_factors.T

        return cls(pairs, users_)

    @classmethod
    def of_popularity(cls, counts) -> Scorer:
        """Every user gets the same scores: the items' interaction counts.

        >>> s = Scorer.of_popularity([5, 1, 3])
        >>> s.pairs(np.array([0, 1]), np.array([2, 0])).tolist()
        [3.0, 5.0]
        >>> s.users(np.array([0, 1])).tolist()
        [[5.0, 1.0, 3.0], [5.0, 1.0, 3.0]]
        """
        counts = np.asarray(counts, dtype=float)
        return cls(lambda users, items: counts[items],
                   lambda users: np.broadcast_to(counts, (len(users), counts.size)).copy())


def factor_state(model) -> tuple[Callable, Callable]:
    """``(get_state, set_state)`` of an ``implicit`` model's factor arrays, for
    :class:`~recsys_helpers.tuning.EarlyStopping` (copies, so that training goes on)."""
    def get_state():
        return model.user_factors.copy(), model.item_factors.copy()

    def set_state(state):
        model.user_factors, model.item_factors = state

    return get_state, set_state


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two arrays (ties broken by order): +1 when ``b``
    ranks the entries as ``a`` does, 0 when unrelated, -1 when in reverse.

    >>> round(rank_correlation([1, 2, 3, 4], [10, 20, 40, 30]), 3)
    0.8
    >>> rank_correlation([1, 2, 3], [30, 20, 10])
    -1.0
    """
    ra = np.argsort(np.argsort(np.asarray(a), kind="stable"), kind="stable")
    rb = np.argsort(np.argsort(np.asarray(b), kind="stable"), kind="stable")
    return float(np.corrcoef(ra, rb)[0, 1])


# ------------------------------------------------------------------ validation figures

class Validation:
    """The figures a candidate setting is judged on: ``validation(model) -> dict``.

    * ``validation_auc``: :func:`~recsys_helpers.metrics.auc_sampled` of the validation
      pairs, the negatives drawn uniformly among the books the user has no *training*
      interaction with (``known``: the fit part and the validation split; the test split
      stays untouched);
    * ``validation_precision_at_{k}``: of each validation user's top ``k`` books (among
      those not in the user's fit part), the share that are in their validation split,
      averaged over users — what :func:`~recsys_helpers.metrics.precision_recall_at_k`
      computes, counted here from each user's ``k``-th highest score: a validation book is
      in the top ``k`` when its score reaches it (cheaper at every check; ties aside, the
      same).

    ``max_users``: the precision on that many random validation users only (1,000 by
    default: a curve to look at, computed at every check; ``None``: all of them).
    """

    def __init__(self, fit_part: Interactions, validation: Interactions, known: PositiveSet,
                 *, k: int = 10, n_per_user: int = 10, seed=0, max_users: int | None = 1_000):
        self.validation, self.known = validation, known
        self.k, self.n_per_user, self.seed = int(k), int(n_per_user), seed
        keys = np.unique(validation.user.astype(np.int64) * validation.n_items + validation.item)
        users, items = keys // validation.n_items, keys % validation.n_items
        if max_users is not None and np.unique(users).size > max_users:
            keep = np.random.default_rng(seed).choice(np.unique(users), max_users, replace=False)
            at = np.isin(users, keep)
            users, items = users[at], items[at]
        self._users = np.unique(users)
        self._row = np.searchsorted(self._users, users)   # each pair's row among the users
        self._item = items
        self._seen = fit_part.csr()[self._users].tocoo()  # books to leave out of a top k

    def auc(self, scorer: Scorer) -> float:
        return auc_sampled(scorer.pairs, self.validation.user, self.validation.item,
                           self.known, n_per_user=self.n_per_user, seed=self.seed)

    def precision(self, scorer: Scorer, budget: int = 4_000_000) -> float:
        if self._users.size == 0:
            return float("nan")
        n_items = self.validation.n_items
        kk = min(self.k, n_items)
        hits = np.zeros(self._users.size)
        step = max(1, budget // max(n_items, 1))
        for start in range(0, self._users.size, step):
            stop = min(start + step, self._users.size)
            s = np.array(scorer.users(self._users[start:stop]), dtype=np.float32)
            seen = (self._seen.row >= start) & (self._seen.row < stop)
            s[self._seen.row[seen] - start, self._seen.col[seen]] = -np.inf
            # the k-th highest score of each user's unseen books: a book is in the top k
            # when its score reaches it
            kth = np.partition(s, n_items - kk, axis=1)[:, n_items - kk]
            at = np.flatnonzero((self._row >= start) & (self._row < stop))
            positive = s[self._row[at] - start, self._item[at]]
            hit = (positive >= kth[self._row[at] - start]) & np.isfinite(positive)
            hits += np.bincount(self._row[at], weights=hit, minlength=hits.size)
        return float(np.mean(hits / self.k))

    def __call__(self, model) -> dict:
        scorer = Scorer.of_model(model)
        return {"validation_auc": self.auc(scorer),
                f"validation_precision_at_{self.k}": self.precision(scorer)}


# ------------------------------------------------------------------ training in rounds

@dataclass
class Trained:
    """A model trained by :func:`train_bpr`: its learning curve on the validation split
    (``history``: ``iterations`` and each validation figure), the early stopping that
    kept its best factors (``None`` without validation), and whether the factors
    diverged (NaN: the learning rate is too large)."""

    model: object = field(repr=False)
    learning_rate: float
    history: dict = field(repr=False)
    stopper: EarlyStopping | None = field(repr=False)
    diverged: bool = False

    @property
    def best_value(self) -> float:
        return -np.inf if self.stopper is None else float(self.stopper.best_value)

    @property
    def best_iterations(self) -> int:
        return 0 if self.stopper is None else int(self.stopper.best_step)

    def at_best(self, name: str) -> float:
        """The validation figure ``name`` at the kept iteration (NaN if none)."""
        its = self.history.get("iterations", [])
        if self.best_iterations in its:
            return float(self.history[name][its.index(self.best_iterations)])
        return float("nan")


@_one_blas_thread
def train_bpr(X, learning_rate: float, iterations: int, *, every: int = 20,
              validate: Callable | None = None, monitor: str = "validation_auc",
              patience: int | None = 3, min_iterations: int = 0, desc: str = "training",
              progress: bool = True, **bpr) -> Trained:
    """``implicit``'s BPR on the users x items matrix ``X``, ``every`` iterations at a time.

    ``bpr`` goes to :class:`implicit.bpr.BayesianPersonalizedRanking` (``factors``,
    ``regularization``, ``random_state``, ``num_threads``).  With ``validate(model) ->
    dict`` (e.g. a :class:`Validation`), the figures are computed after every round; the
    watched one is ``monitor`` (higher is better); training stops once it has not
    improved for ``patience`` rounds, but not before ``min_iterations`` (a slow start, a
    plateau before the rise, is not the end), and the factors of the best round are put
    back.  A learning rate so large that the factors become NaN ends the training
    (``diverged``); with validation, the best factors before that are kept.
    """
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.recommender_base import ModelFitError

    model = BayesianPersonalizedRanking(learning_rate=learning_rate, iterations=every, **bpr)
    stopper = None
    if validate is not None:
        get_state, set_state = factor_state(model)
        stopper = EarlyStopping(monitor=monitor, mode="max", patience=patience,
                                get_state=get_state, set_state=set_state)
    history: dict = {"iterations": []}
    done, diverged = 0, False
    rounds = math.ceil(iterations / every)
    with tqdm(total=rounds, desc=desc, disable=not progress) as bar:  # counts rounds done,
        for _ in range(rounds):                                       # the last one too
            model.iterations = min(every, iterations - done)
            try:
                model.fit(X, show_progress=False)
            except ModelFitError:  # NaN in the factors: this learning rate diverges
                diverged = True
                break
            done += model.iterations
            bar.update(1)
            if validate is not None:
                figures = validate(model)
                history["iterations"].append(done)
                for name, value in figures.items():
                    history.setdefault(name, []).append(float(value))
                if stopper(done, figures) and done >= min_iterations:
                    break
    if stopper is not None:
        stopper.restore()
    elif diverged:
        raise ModelFitError(f"learning rate {learning_rate:g}: the factors diverged (NaN)")
    return Trained(model, float(learning_rate), history, stopper, diverged)


# ------------------------------------------------------------------ the search

@dataclass
class Search:
    """The outcome of :func:`search_learning_rate`: every :class:`Trained` candidate (by
    learning rate, in the order tried) and the chosen learning rate and iterations."""

    trials: dict = field(repr=False)
    learning_rate: float
    iterations: int
    value: float
    fell_back: bool = False
    label: str = ""
    monitor: str = "validation_auc"
    ladder: tuple = ()

    def summary(self) -> str:
        """One line: what was chosen, on which figure, among which candidates."""
        tried = ", ".join(f"{lr:g}" for lr in sorted(self.trials))
        if self.fell_back:
            return (f"{self.label}no {_words(self.monitor)} could be computed on this data: "
                    f"the book's settings are kept (learning rate {self.learning_rate:g}, "
                    f"{self.iterations} iterations)")
        line = (f"{self.label}chosen on the validation split: learning rate "
                f"{self.learning_rate:g}, {self.iterations} iterations "
                f"({_words(self.monitor)} {self.value:.3f}; learning rates tried: {tried})")
        chosen = self.trials[self.learning_rate]
        if self.iterations == max(chosen.history["iterations"], default=0) and not chosen.diverged:
            line += (f"; the best check was the last one ({self.iterations} iterations): a "
                     "larger budget might find a little more")
        if len(self.ladder) > 1 and self.learning_rate in (min(self.ladder), max(self.ladder)):
            line += "; the chosen rate is at the end of the ladder: the best may lie beyond"
        return line

    def table(self):
        """The candidates as a DataFrame, in the order of the learning rate."""
        import pandas as pd

        rows = []
        for lr, t in sorted(self.trials.items()):
            precision = next((n for n in t.history if n.startswith("validation_precision")),
                             None)
            rows.append({"learning rate": lr, f"best {_words(self.monitor)}": t.best_value,
                         "after iterations": t.best_iterations,
                         "validation AUC there": t.at_best("validation_auc"),
                         "validation precision@k there": (t.at_best(precision) if precision
                                                          else np.nan),
                         "diverged": t.diverged})
        return pd.DataFrame(rows).set_index("learning rate")

    def plot(self, axes=None, title: str = ""):
        """The learning curves of every candidate: validation AUC and validation
        precision@k against the iterations, the kept iteration of each marked, the
        chosen candidate drawn thicker; ``title`` above both."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(11, 3.2))
        if title:
            axes[0].figure.suptitle(title, y=1.02)
        names = ["validation_auc"] + sorted({n for t in self.trials.values()
                                             for n in t.history
                                             if n.startswith("validation_precision")})
        for ax, name in zip(axes, names):
            for k, (lr, t) in enumerate(sorted(self.trials.items())):
                its, values = t.history["iterations"], t.history.get(name, [])
                chosen = lr == self.learning_rate and not self.fell_back
                ax.plot(its, values, marker=".", color=f"C{k}", lw=2.5 if chosen else 1,
                        label=f"learning rate {lr:g}" + (" (chosen)" if chosen else ""))
                if t.best_iterations in its:
                    at = its.index(t.best_iterations)
                    ax.plot(its[at], values[at], "o", mfc="none", ms=10, color=f"C{k}")
            ax.set(xlabel="iterations", ylabel=_words(name))
            ax.set_title(f"{_words(name)} (circled: the kept iteration)", fontsize="medium")
        axes[0].legend(fontsize="small", frameon=False)
        return axes


@_one_blas_thread
def search_learning_rate(X, validate: Callable, *, start: float = 0.01,
                         ladder=LADDER, monitor: str = "validation_auc",
                         max_iterations: int = 200, every: int = 20,
                         patience: int | None = 3, min_iterations: int = 100,
                         default_iterations: int = 100, label: str = "",
                         progress: bool = True, workers: int = 1, **bpr) -> Search:
    """Choose ``implicit``'s learning rate and number of iterations on a validation split.

    Every candidate is trained on ``X`` (the fit part of the training data) with the same
    budget (:func:`train_bpr`: at most ``max_iterations``, the validation figures every
    ``every`` iterations, early stopping after ``patience`` rounds without improvement but
    not before ``min_iterations``) and judged by its best ``monitor`` (a key of what
    ``validate`` returns, higher is better: the validation AUC by default).

    The candidates are the ``ladder`` (half-decade steps by default): first the rung
    nearest ``start`` (the book's value), then the next rung up; while a step improves on
    the best so far, the walk goes on in that direction; if the first step up does not
    improve, it walks down instead.  It stops at the first rung that does not improve (or
    diverges), so the chosen rate is better than both of its neighbours that were tried —
    an optimum between two rungs is at most half a decade away — and it costs three or
    four candidates rather than the whole ladder.  ``default_iterations``: kept with
    ``start`` when no validation AUC can be computed (the search then says so).

    ``workers`` > 1: candidates are trained that many at a time, in forked processes
    (give ``num_threads=1``: each on one core).  Each candidate the walk needs is trained
    together with the next one in the same direction, which the walk needs if this one
    improves; the walk, its figures and its choice are those of one candidate at a time,
    and a candidate trained ahead that the walk does not reach is counted as trained but
    not listed.
    """
    ladder = sorted(float(v) for v in set(ladder))
    here = int(np.argmin([abs(math.log(v / start)) for v in ladder]))
    min_iterations = min(min_iterations, max_iterations)
    trials: dict = {}

    def train(k: int, shown: bool = True) -> Trained:
        return train_bpr(X, ladder[k], max_iterations, every=every, validate=validate,
                         monitor=monitor, patience=patience, min_iterations=min_iterations,
                         desc=f"{label}learning rate {ladder[k]:g}",
                         progress=progress and shown, **bpr)

    ahead = _Ahead(train, ladder, workers, f"{label}learning rates", progress)

    def run(k: int) -> float:
        t = ahead.pop(k)
        if t is None:
            t = train(k)
            count_candidate("search_learning_rate")
        trials[ladder[k]] = t
        print(_tried(label, t, monitor))
        return t.best_value

    ahead.train(here, here + 1)
    best, best_value = here, run(here)
    for direction in (+1, -1):
        k, moved = here + direction, False
        while 0 <= k < len(ladder):
            ahead.train(k, k + direction)
            value = run(k)
            if not value > best_value:
                break
            best, best_value, moved = k, value, True
            k += direction
        if moved:
            break
    chosen = trials[ladder[best]]
    if not np.isfinite(best_value) or chosen.best_iterations == 0:
        return Search(trials, float(start), int(default_iterations), float("nan"),
                      fell_back=True, label=label, monitor=monitor, ladder=tuple(ladder))
    return Search(trials, ladder[best], chosen.best_iterations, best_value, label=label,
                  monitor=monitor, ladder=tuple(ladder))


def _tried(label: str, t: Trained, monitor: str) -> str:
    """The line a search prints for a candidate it tried."""
    lr = t.learning_rate
    if t.diverged and not np.isfinite(t.best_value):
        return f"{label}learning rate {lr:g}: the factors diverged (NaN)"
    others = ", ".join(f"{_words(n)} {t.at_best(n):.3f}" for n in t.history
                       if n not in ("iterations", monitor))
    return (f"{label}learning rate {lr:g}: best {_words(monitor)} {t.best_value:.3f} "
            f"after {t.best_iterations} iterations" + (f" ({others})" if others else "")
            + (" (then diverged)" if t.diverged else ""))


class _Ahead:
    """Candidates of a learning-rate walk trained ahead, ``workers`` at once in forked
    processes (none with one worker), kept until the walk reaches them."""

    def __init__(self, train: Callable, ladder: list, workers: int, desc: str,
                 progress: bool):
        self._train, self.ladder, self.workers = train, ladder, workers
        self.desc, self.progress, self.kept, self.done = desc, progress, {}, set()

    def train(self, *ks: int) -> None:
        todo = [k for k in ks if 0 <= k < len(self.ladder) and k not in self.kept
                and k not in self.done]
        if self.workers < 2 or len(todo) < 2:
            return
        rates = " and ".join(f"{self.ladder[k]:g}" for k in todo)
        with tqdm(total=len(todo), desc=f"{self.desc} {rates} at once",
                  disable=not self.progress) as bar:
            trained = forked_map(lambda k: _portable(self._train(k, shown=False)), todo,
                                 self.workers, bar.update)
        for k, t in zip(todo, trained):
            self.kept[k] = t
            count_candidate("search_learning_rate")  # trained, whether or not walked to

    def pop(self, k: int) -> Trained | None:
        """Candidate ``k`` if it was trained ahead (the walk has reached it)."""
        self.done.add(k)
        return self.kept.pop(k, None)


@dataclass
class _Kept:
    """What :class:`Trained` reads of its early stopping, without the model's factors."""

    best_value: float
    best_step: int


def _portable(t: Trained) -> Trained:
    """``t`` without its model (a candidate trained in a worker sends back its learning
    curve and its best figures; the chosen setting is trained again anyway)."""
    kept = None if t.stopper is None else _Kept(float(t.stopper.best_value),
                                                int(t.stopper.best_step))
    return Trained(None, t.learning_rate, t.history, kept, t.diverged)


def _words(name: str) -> str:
    """``validation_precision_at_10`` -> ``validation precision@10``."""
    return (name.replace("_precision_at_", " precision@").replace("_auc", " AUC")
            .replace("_", " "))


# ------------------------------------------------------------------ held-out figures

class HeldOut:
    """The test split, and what a ranking is measured against on it.

    ``figures(scorer)`` returns

    * ``auc``: :func:`~recsys_helpers.metrics.auc_sampled`, up to ``n_per_user`` held-out
      books per test user against as many books the user never interacted with (in
      training or test), drawn uniformly — the book's protocol, corrected;
    * ``auc_popular_negatives``: the same with the negatives drawn in proportion to
      popularity, as ``implicit`` draws them when training;
    * ``precision_at_k`` and ``recall_at_k`` (``k`` as given):
      :func:`~recsys_helpers.metrics.precision_recall_at_k` of each test user's top ``k``
      among the books not in their training row;
    * with ``exact=True`` also ``auc_exact``: :func:`~recsys_helpers.metrics.auc_exact`,
      every book the user never interacted with as a negative.

    ``popularity`` holds the training interactions of each book (the baseline's scores).
    """

    def __init__(self, data: Interactions, train: Interactions, test: Interactions, *,
                 k: int = 10, n_per_user: int = 10, max_users: int | None = None, seed=0):
        self.train, self.test, self.k = train, test, int(k)
        self.n_per_user, self.max_users, self.seed = int(n_per_user), max_users, seed
        self.X_train, self.X_test = train.csr(), test.csr()
        self.interacted = PositiveSet(data.user, data.item, data.n_items)
        self.popularity = np.bincount(train.item, minlength=data.n_items).astype(float)

    def auc(self, scorer: Scorer, popular_negatives: bool = False) -> float:
        return auc_sampled(scorer.pairs, self.test.user, self.test.item, self.interacted,
                           n_per_user=self.n_per_user, seed=self.seed,
                           negative_weights=self.popularity if popular_negatives else None)

    @_one_blas_thread
    def figures(self, scorer: Scorer, exact: bool = False) -> dict:
        out = {"auc": self.auc(scorer),
               "auc_popular_negatives": self.auc(scorer, popular_negatives=True)}
        out["precision_at_k"], out["recall_at_k"] = precision_recall_at_k(
            scorer.users, self.X_train, self.X_test, k=self.k, max_users=self.max_users,
            seed=self.seed)
        if exact:
            out["auc_exact"] = auc_exact(scorer.users, self.X_train, self.X_test,
                                         max_users=self.max_users, seed=self.seed)
        return out


@_one_blas_thread
def top_k_profile(scorers: dict, held_out: HeldOut, n_popular: int = 50):
    """What fills each model's top-``k`` lists, beside its precision@k: a DataFrame with
    one row per model (``{name: Scorer}``) and one for the held-out books themselves.

    Columns: ``precision@k``; ``books in the lists`` (distinct books recommended to the
    test users); ``median popularity rank`` of the recommended books (1 = the book with
    the most training interactions); ``share from the {n_popular} most popular`` books.
    The held-out row describes the held-out interactions (what a list should contain; its
    "books in the lists" counts the distinct held-out books).
    """
    import pandas as pd

    X_train, X_test, k = held_out.X_train, held_out.X_test, held_out.k
    users = np.flatnonzero(np.diff(X_test.indptr))
    if held_out.max_users is not None and users.size > held_out.max_users:
        users = np.sort(np.random.default_rng(held_out.seed).choice(
            users, size=held_out.max_users, replace=False))
    rank = np.empty(held_out.popularity.size, dtype=np.int64)
    rank[np.argsort(-held_out.popularity, kind="stable")] = np.arange(1, rank.size + 1)
    popular = f"share from the {n_popular} most popular"

    def describe(books, precision):
        books = np.asarray(books).ravel()
        if books.size == 0:
            return {f"precision@{k}": np.nan, "books in the lists": 0,
                    "median popularity rank": np.nan, popular: np.nan}
        return {f"precision@{k}": round(precision, 4), "books in the lists": np.unique(books).size,
                "median popularity rank": float(np.median(rank[books])),
                popular: round(float(np.mean(rank[books] <= n_popular)), 3)}

    rows = {}
    for name, scorer in scorers.items():
        top = top_k(scorer.users, X_train, users, k)
        hits = float(X_test[users[:, None], top].sum()) if top.size else 0.0
        rows[name] = describe(top, hits / max(users.size * k, 1))
    rows["held-out books"] = describe(held_out.test.item, np.nan)
    table = pd.DataFrame(rows).T
    table["books in the lists"] = table["books in the lists"].astype(int)
    return table


# ------------------------------------------------------------------ recording

def record_figures(figures: dict) -> None:
    """:func:`~recsys_helpers.record` each ``{name: value}``; a figure that could not be
    computed on this data (NaN) is named in one line instead."""
    missing = []
    for name, value in figures.items():
        if value is not None and np.isfinite(value):
            record(name, value)
        else:
            missing.append(name)
    if missing:
        print(f"not computed on this data: {', '.join(missing)} (no test user with a "
              "held-out book and a book left to draw as a negative)")


def shown_figures(*names: str, digits: int = 3) -> str:
    """Recorded figures as text, joined by " / " ("n/a" for one not recorded)."""
    out = []
    for name in names:
        try:
            out.append(f"{float(recorded(name)):.{digits}f}")
        except KeyError:
            out.append("n/a")
    return " / ".join(out)


def verdict_if_recorded(model: str, baseline: str, better: str, **kwargs):
    """:func:`~recsys_helpers.verdicts.verdict` when both figures were recorded; else one
    line saying that there is nothing to compare on this data."""
    from .verdicts import verdict

    for name in (model, baseline):
        try:
            recorded(name)
        except KeyError:
            print(f"{kwargs.get('data', 'This data')}: {name} could not be computed, so "
                  f"there is no comparison of {model} with {baseline}.")
            return None
    return verdict(model, baseline, better, **kwargs)
