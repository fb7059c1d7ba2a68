"""Choosing settings on a validation split: early stopping and a small grid search.

Settings that decide an outcome (how many steps, how much regularisation, which learning
rate) are chosen on a *validation* split carved out of the training data, never on the
test set, which is used once, at the end.  Every model compared gets the same
:class:`Budget`, so that a comparison is fair:

>>> from recsys_helpers.tuning import Budget
>>> Budget(max_steps=200, every=10, patience=3)
Budget(max_steps=200, every=10, patience=3)

A typical use, with the course's TensorFlow models (see notebook 3 and exercise 5.2)::

    fit_part, validation = validation_split(train, fraction=0.1, seed=SEED)
    tuned = grid_search(
        lambda lamb, lamb_factors: LatentFactorModel(mu, n_users, n_items, K, lamb,
                                                     lamb_factors=lamb_factors),
        {"lamb": [1e-5, 1e-4], "lamb_factors": [1e-4, 1e-3], "learning_rate": [0.1, 0.02]},
        batches=lambda: rating_batches(fit_part, BATCH_SIZE, SEED),
        validate=lambda model: validation_mse(model, validation),
        budget=Budget(max_steps=300, every=10, patience=5))
    print(tuned.summary())      # what was chosen, on which validation figure
    tuned.model                 # the chosen model, at its best step
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .interactions import Interactions, train_test_split
from .progress import tqdm

__all__ = [
    "Budget",
    "EarlyStopping",
    "Trial",
    "Tuned",
    "validation_split",
    "validation_mse",
    "train_with_early_stopping",
    "grid_search",
    "count_candidate",
    "forked_map",
]

#: The environment variable naming a file to which every search of the package appends one
#: line per candidate model it trains (``python -m recsys_helpers run`` sets it for each
#: notebook, and ``timing.json`` reports the count).  Unset, nothing is written.
CANDIDATE_LOG = "RECSYS_CANDIDATE_LOG"


def count_candidate(search: str) -> None:
    """Note that ``search`` trained one more candidate (see :data:`CANDIDATE_LOG`)."""
    log = os.environ.get(CANDIDATE_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(search + "\n")


_FORKED = None  # the function forked workers call (inherited by the fork, never pickled)


def _call_forked(item):
    return _FORKED(item)


def forked_map(func: Callable, items: list, workers: int, progress=None) -> list:
    """``[func(x) for x in items]`` in ``workers`` forked processes, in the order of
    ``items`` (the results are pickled back; ``func`` and the data it reads are inherited
    by the fork instead of copied).  ``progress(n)`` is called as results arrive.

    The last items start first: along a ladder of sizes or passes the last take longest,
    and started first they do not leave one core waiting on them at the end.  Objects that
    exist before the fork are left out of the workers' garbage collections, which would
    otherwise touch (and so copy) every page of the parent's objects.
    """
    import gc
    import multiprocessing

    global _FORKED
    _FORKED, results = func, []
    gc.freeze()
    try:
        with multiprocessing.get_context("fork").Pool(min(workers, len(items))) as pool:
            for result in pool.imap(_call_forked, items[::-1], chunksize=1):
                results.append(result)
                if progress is not None:
                    progress(1)
    finally:
        gc.unfreeze()
        _FORKED = None
    return results[::-1]


def candidates_counted(log) -> int:
    """The number of candidates noted in the file ``log`` (0 if there is none)."""
    try:
        with open(log, encoding="utf-8") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class Budget:
    """How much training each candidate setting may use.

    ``max_steps`` training steps at most; the validation figure is computed every
    ``every`` steps; training stops after ``patience`` evaluations without improvement
    (``None``: never early), but not before ``min_steps`` steps (a slow start, such as a
    larger model's first checks, is not mistaken for the end), and the parameters of the
    best evaluation are kept.
    """

    max_steps: int = 300
    every: int = 10
    patience: int | None = 5
    min_steps: int = 0

    def __repr__(self) -> str:
        extra = f", min_steps={self.min_steps}" if self.min_steps else ""
        return (f"Budget(max_steps={self.max_steps}, every={self.every}, "
                f"patience={self.patience}{extra})")

    def __post_init__(self):
        if self.max_steps < 1 or self.every < 1:
            raise ValueError("max_steps and every must be at least 1")
        if not 0 <= self.min_steps <= self.max_steps:
            raise ValueError("min_steps must lie between 0 and max_steps")
        if self.patience is not None and self.patience < 1:
            raise ValueError("patience must be at least 1 (or None)")


def validation_split(train: Interactions, fraction: float = 0.1, seed=0):
    """Carve a validation split out of the training interactions.

    The same seeded shuffle as :func:`~recsys_helpers.interactions.train_test_split`;
    returns ``(fit_part, validation)``, sharing the ID mappings of ``train``.

    >>> import numpy as np
    >>> from recsys_helpers.interactions import Interactions
    >>> train = Interactions(np.arange(10) % 3, np.arange(10) % 4, np.ones(10, np.float32),
    ...                      np.arange(3), np.arange(4))
    >>> fit_part, validation = validation_split(train, fraction=0.2, seed=0)
    >>> len(fit_part), len(validation)
    (8, 2)
    """
    return train_test_split(train, test_size=fraction, seed=seed)


def validation_mse(model, split: Interactions) -> float:
    """Mean squared error of ``model.predict`` on ``split`` (a validation or test split)."""
    from .metrics import mse

    return mse(np.asarray(model.predict(split.user, split.item)), split.rating)


def _tf_state(variables):
    def get():
        return [v.numpy().copy() for v in variables]

    def put(values):
        for v, value in zip(variables, values):
            v.assign(value)

    return get, put


class EarlyStopping:
    """Watch one validation figure during training; remember the best parameters.

    Pass an instance as ``stop`` to :func:`recsys_helpers.models.fit`: it is called with
    ``(step, figures)`` after each evaluation and returns true once ``monitor`` has not
    improved for ``patience`` evaluations.  :meth:`restore` then puts back the
    parameters of the best evaluation.

    Parameters
    ----------
    variables : list of ``tf.Variable`` (e.g. ``model.trainable_variables``), or None
        when ``get_state`` and ``set_state`` are given (for models that are not
        TensorFlow's, e.g. ``implicit``'s factor arrays).
    monitor : the figure to watch, a key of ``figures``
    mode : ``"min"`` (e.g. an MSE) or ``"max"`` (e.g. an AUC)
    patience : evaluations without improvement before stopping (``None``: never)
    min_steps : no stop before this step
    """

    def __init__(self, variables=None, monitor: str = "validation_mse", mode: str = "min",
                 patience: int | None = 5, get_state: Callable | None = None,
                 set_state: Callable | None = None, min_steps: int = 0):
        if mode not in ("min", "max"):
            raise ValueError("mode must be 'min' or 'max'")
        if variables is not None:
            get_state, set_state = _tf_state(list(variables))
        if get_state is None or set_state is None:
            raise ValueError("give the variables, or get_state and set_state")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_steps = int(min_steps)
        self._get, self._set = get_state, set_state
        self.best_value = np.inf if mode == "min" else -np.inf
        self.best_step = 0
        self._best_state = None
        self._waited = 0

    def _better(self, value: float) -> bool:
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def __call__(self, step: int, figures: dict) -> bool:
        value = float(figures[self.monitor])
        if np.isfinite(value) and (self._best_state is None or self._better(value)):
            self.best_value, self.best_step = value, int(step)
            self._best_state = self._get()
            self._waited = 0
            return False
        self._waited += 1
        return (self.patience is not None and self._waited >= self.patience
                and int(step) >= self.min_steps)

    def restore(self) -> None:
        """Put back the parameters of the best evaluation (if any was finite)."""
        if self._best_state is not None:
            self._set(self._best_state)


def train_with_early_stopping(model, next_batch, validate: Callable, learning_rate: float,
                              budget: Budget = Budget(), monitor: str = "validation_mse",
                              mode: str = "min", evaluate: Callable | None = None,
                              desc: str = "training", progress: bool = True,
                              train_step: Callable | None = None):
    """Train ``model`` with Adam, stop early on a validation figure, keep its best step.

    ``validate(model) -> float`` computes the watched figure (recorded as ``monitor``);
    ``evaluate() -> dict``, optional, adds further figures to the learning curve (e.g.
    the training MSE).  ``train_step``, optional, is a step already compiled for
    ``model`` (its optimizer's learning rate is then the caller's business).  Returns
    ``(history, stopper)``: the learning curve (as :func:`~recsys_helpers.models.fit`)
    and the :class:`EarlyStopping` whose ``best_step`` and ``best_value`` say what was
    kept; ``model`` holds the parameters of that step.
    """
    from .models import fit, make_train_step, tf

    stopper = EarlyStopping(model.trainable_variables, monitor, mode, budget.patience,
                            min_steps=budget.min_steps)

    def figures():
        out = {monitor: validate(model)}
        if evaluate is not None:
            out.update(evaluate())
        return out

    if train_step is None:
        train_step = make_train_step(model, tf.keras.optimizers.Adam(learning_rate))
    history = fit(train_step, next_batch, budget.max_steps, evaluate=figures,
                  every=budget.every, desc=desc, stop=stopper, progress=progress)
    stopper.restore()
    return history, stopper


class _SharedStep:
    """One compiled training step (with Adam) for every candidate of the same shape.

    Compiling a step with XLA takes longer than training a candidate on the sample, so a
    grid search trains each candidate in this one model (``worker``): it takes the
    candidate's values, its lambdas included (the course's models keep them in untrained
    variables), is trained, and gives its values back.  :meth:`fits` admits a candidate
    only when nothing the compiled step baked in differs: the same class, the same
    variables (name, shape, type) and equal values of every other attribute (a lambda
    kept as a Python number bakes in, so candidates that differ in one each get their own
    step).
    """

    def __init__(self, worker):
        from .models import make_train_step, tf

        self.worker = worker
        self.settings = _settings(worker)  # what the step bakes in, never changed
        self.optimizer = tf.keras.optimizers.Adam(0.0)
        self.step = make_train_step(worker, self.optimizer)

    def fits(self, model) -> bool:
        if type(model) is not type(self.worker):
            return False
        mine, theirs = self.worker.variables, model.variables
        if [(v.name, tuple(v.shape), v.dtype) for v in mine] != [
                (v.name, tuple(v.shape), v.dtype) for v in theirs]:
            return False
        return self.settings is not None and _settings(model) == self.settings

    def load(self, model, learning_rate: float) -> None:
        """Put ``model``'s values into the worker and restart Adam at ``learning_rate``."""
        for mine, theirs in zip(self.worker.variables, model.variables):
            mine.assign(theirs)
        for v in self.optimizer.variables:  # Adam's moments and step count start at zero
            v.assign(np.zeros(v.shape, v.dtype))
        self.optimizer.learning_rate.assign(learning_rate)

    def store(self, model) -> None:
        """Give the worker's values to ``model``."""
        for theirs, mine in zip(model.variables, self.worker.variables):
            theirs.assign(mine)


def _settings(model) -> dict | None:
    """The attributes of ``model`` that a compiled step bakes in (None: not comparable)."""
    from .models import tf

    bookkeeping = set(vars(tf.Module()))  # and TensorFlow's tracking, all "_self_..."
    out = {}
    for key, value in vars(model).items():
        if (key in bookkeeping or key.startswith("_self_")
                or isinstance(value, (tf.Variable, tf.Module))):
            continue
        if not isinstance(value, (bool, int, float, str, type(None))):
            return None  # anything else could bake in unseen: no sharing
        out[key] = value
    return out


@dataclass
class Trial:
    """One candidate setting: its parameters, best validation figure and best step."""

    params: dict
    value: float
    step: int
    history: dict = field(repr=False)


@dataclass
class Tuned:
    """The outcome of :func:`grid_search`."""

    params: dict       # the chosen setting
    value: float       # its validation figure, at the chosen step
    step: int          # the chosen number of training steps
    model: object = field(repr=False)    # the chosen model, with the parameters of that step
    history: dict = field(repr=False)    # its learning curve
    trials: list = field(repr=False)     # every Trial, in the order tried
    monitor: str = "validation_mse"
    mode: str = "min"

    def table(self):
        """The trials as a DataFrame, best first."""
        import pandas as pd

        rows = [{**t.params, self.monitor: t.value, "best step": t.step} for t in self.trials]
        return (pd.DataFrame(rows)
                .sort_values(self.monitor, ascending=self.mode == "min", kind="stable")
                .reset_index(drop=True))

    def summary(self) -> str:
        """One line: what was chosen and on which figure."""
        chosen = ", ".join(f"{k} = {v:g}" if isinstance(v, float) else f"{k} = {v}"
                           for k, v in self.params.items())
        return (f"chosen on the validation split: {chosen}, {self.step} steps "
                f"({self.monitor} {self.value:.4f}; {len(self.trials)} settings tried)")


def grid_search(make_model: Callable, grid: dict, batches: Callable, validate: Callable,
                budget: Budget = Budget(), monitor: str = "validation_mse", mode: str = "min",
                learning_rate: float = 0.1, desc: str = "tuning",
                progress: bool = True) -> Tuned:
    """Try every combination of ``grid``, each with the same budget; keep the best.

    Parameters
    ----------
    make_model : callable ``(**params) -> model``, a fresh model for one setting (the
        grid's keys other than ``learning_rate``)
    grid : dict mapping a parameter name to the values to try; the key
        ``learning_rate``, if present, sets Adam's learning rate (else ``learning_rate``)
    batches : callable ``() -> next_batch``, a fresh batch sampler (seeded, so that every
        setting sees the same batches)
    validate : callable ``(model) -> float``, the validation figure (``monitor``)
    budget : the same :class:`Budget` for every setting
    mode : ``"min"`` or ``"max"``

    Returns
    -------
    Tuned : the chosen setting, its step and model, and every trial.  Ties keep the
    setting tried first.
    """
    if not grid:
        grid = {}
    names = list(grid)
    combos = [dict(zip(names, values)) for values in itertools.product(*grid.values())]
    best = None
    trials = []
    shared = None
    for params in tqdm(combos, desc=desc, disable=not progress or len(combos) < 2):
        model_params = {k: v for k, v in params.items() if k != "learning_rate"}
        lr = params.get("learning_rate", learning_rate)
        model = make_model(**model_params)
        if _settings(model) is None:  # what a step would bake in is unknown: its own step
            shared = None
            history, stopper = train_with_early_stopping(
                model, batches(), validate, lr, budget, monitor, mode, progress=False)
        else:
            if shared is None or not shared.fits(model):
                shared = _SharedStep(make_model(**model_params))
            shared.load(model, lr)
            history, stopper = train_with_early_stopping(
                shared.worker, batches(), validate, lr, budget, monitor, mode,
                progress=False, train_step=shared.step)
            shared.store(model)
        trial = Trial(params, stopper.best_value, stopper.best_step, history)
        trials.append(trial)
        count_candidate("grid_search")
        better = (best is None
                  or (trial.value < best[0].value if mode == "min" else trial.value > best[0].value))
        if better:
            best = (trial, model)
        else:
            del model
    trial, model = best
    return Tuned(trial.params, trial.value, trial.step, model, trial.history, trials,
                 monitor, mode)
