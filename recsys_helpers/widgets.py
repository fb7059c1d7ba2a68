"""Interactive cells: sliders that retrain a tuned model with another setting.

``explore_lfm(tuned, fit_part, validate)`` (notebook 03) and ``explore_bpr(...)``
(notebook 04) draw the learning curve of the setting a grid search chose (``tuned``, from
:func:`recsys_helpers.tuning.grid_search`) and, below it, sliders for the number of
factors ``K``, the regularisation strength and the number of training steps.  In
JupyterLab (a kernel running, ipywidgets installed) moving a slider retrains the model
with that setting on the same data, with the same batches, and redraws the curve in
place.  The notebooks use them on the taste laboratory, which is small: a retraining
takes a second or two.

Where no kernel runs (the saved notebook, the course's HTML pages) the sliders cannot
work: the figure stays the chosen setting's learning curve, an ordinary matplotlib
figure, and the sliders show as one line of text saying where they work (the runner
strips widget state from the notebooks it saves).  Drawing that figure trains nothing:
the grid search has the curve already.

A compiled training step (:func:`~recsys_helpers.models.make_train_step`) is kept per
``K``: moving the lambda or the steps slider retrains without compiling again; a new
``K`` compiles once (about a second).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["explore_lfm", "explore_bpr", "SLIDERS_TEXT"]

#: What a copy without a kernel shows where the sliders are.
SLIDERS_TEXT = ("[Sliders for K, λ and the number of steps: open this notebook in JupyterLab "
                "and run the cell to use them]")


def _kind(model) -> str:
    """``lfm`` for a latent factor model (it predicts ratings), ``bpr`` for BPR (it scores):
    by what the model does, so that a notebook's own copy of a class counts too."""
    if hasattr(model, "predict") and hasattr(model, "gamma_u"):
        return "lfm"
    if hasattr(model, "score_users") and hasattr(model, "gamma_u"):
        return "bpr"
    raise TypeError("tuned.model must be a LatentFactorModel or a BPRModel")


class _Explorer:
    """Retrains the model of a grid search's chosen setting with other settings."""

    def __init__(self, tuned, fit_part, validate: Callable, batch_size: int, every: int,
                 seed, baselines: dict | None, title: str):
        model = tuned.model
        self.kind = _kind(model)
        self.model_class = type(model)  # the notebook's own copy of the class, if it has one
        self.tuned, self.fit_part, self.validate = tuned, fit_part, validate
        self.batch_size, self.every, self.seed = batch_size, every, seed
        self.baselines, self.title = dict(baselines or {}), title
        self.shape = (int(model.gamma_u.shape[0]), int(model.gamma_i.shape[0]))
        self.K = int(model.gamma_u.shape[1])
        self.learning_rate = float(tuned.params.get("learning_rate", 0.1))
        # the slider's lambda: the factors' for the latent factor model, BPR's single one
        self.lamb_key = "lamb_factors" if self.kind == "lfm" else "lamb"
        self.lamb = float(tuned.params[self.lamb_key])
        self._steps = {}  # K -> (worker model, optimizer, compiled step)

    def _model(self, K: int, lamb: float):
        from .interactions import training_mean

        n_users, n_items = self.shape
        p = self.tuned.params
        if self.kind == "lfm":
            return self.model_class(training_mean(self.fit_part), n_users, n_items, K,
                                    p["lamb"], seed=self.seed, lamb_factors=lamb)
        return self.model_class(n_users, n_items, K, lamb, seed=self.seed,
                                lamb_factors=p.get("lamb_factors"))

    def _compiled(self, K: int):
        """The worker model, its optimizer and compiled step for ``K`` (compiled once)."""
        from .models import make_train_step, tf

        if K not in self._steps:
            worker = self._model(K, self.lamb)
            optimizer = tf.keras.optimizers.Adam(self.learning_rate)
            self._steps[K] = (worker, optimizer, make_train_step(worker, optimizer))
        return self._steps[K]

    def fit(self, K: int, lamb: float, steps: int) -> dict:
        """Train the setting from its initial values, as the grid search did (the same
        initial values and batches for the same setting); return its learning curve."""
        from .interactions import bpr_batches, rating_batches
        from .models import fit

        worker, optimizer, step = self._compiled(int(K))
        for mine, theirs in zip(worker.variables, self._model(int(K), float(lamb)).variables):
            mine.assign(theirs)
        for v in optimizer.variables:  # Adam starts afresh: moments and step count at zero
            v.assign(np.zeros(v.shape, v.dtype))
        optimizer.learning_rate.assign(self.learning_rate)
        batches = (rating_batches if self.kind == "lfm" else bpr_batches)(
            self.fit_part, self.batch_size, self.seed)
        return fit(step, batches, int(steps), every=self.every, progress=False,
                   evaluate=lambda: {self.tuned.monitor: self.validate(worker)})

    def best_step(self, history: dict) -> int:
        values = np.asarray(history[self.tuned.monitor])
        best = np.argmin(values) if self.tuned.mode == "min" else np.argmax(values)
        return int(history["step"][best])

    def setting(self, K: int, lamb: float) -> str:
        name = "λ_γ" if self.kind == "lfm" else "λ"
        return f"K = {K}, {name} = {lamb:.0e}"

    def figure(self, history: dict, K: int, lamb: float, mark_step: int):
        """The learning curve as a matplotlib figure (not registered with pyplot)."""
        from matplotlib.figure import Figure

        from .plotting import learning_curve

        fig = Figure(figsize=(6, 3.5))
        learning_curve(history, metrics=("objective", self.tuned.monitor), ax=fig.subplots(),
                       baselines=self.baselines, mark_step=mark_step,
                       title=f"{self.title}: {self.setting(K, lamb)}")
        return fig

    def summary(self, history: dict) -> str:
        values, best = history[self.tuned.monitor], self.best_step(history)
        at = list(history["step"]).index(best)
        metric = self.tuned.monitor.replace("_", " ").replace("mse", "MSE").replace("auc", "AUC")
        return (f"{metric} {values[-1]:.4f} at step {int(history['step'][-1])}, "
                f"best {values[at]:.4f} at step {best}")


def _sliders(explorer: _Explorer, handle, steps: int):
    """The sliders (an ipywidgets box, shown as :data:`SLIDERS_TEXT` without a kernel)."""
    import ipywidgets as w

    class Controls(w.VBox):
        def __repr__(self):  # the text/plain form: what a copy without a kernel shows
            return SLIDERS_TEXT

    style, layout = {"description_width": "initial"}, w.Layout(width="32%")
    k = w.IntSlider(value=explorer.K, min=0 if explorer.kind == "lfm" else 1, max=10,
                    description="K (factors)", style=style, layout=layout,
                    continuous_update=False)
    lamb = w.FloatLogSlider(value=explorer.lamb, base=10, min=-7, max=-1, step=0.5,
                            description="λ_γ (factors)" if explorer.kind == "lfm" else "λ",
                            readout_format=".0e", style=style, layout=layout,
                            continuous_update=False)
    n = w.IntSlider(value=steps, min=explorer.every, max=max(300, steps), step=explorer.every,
                    description="steps", style=style, layout=layout, continuous_update=False)
    status = w.Label(value="Move a slider to retrain with that setting.")

    def retrain(_change=None):
        status.value = f"training {explorer.setting(k.value, lamb.value)}, {n.value} steps ..."
        start = time.perf_counter()
        history = explorer.fit(k.value, lamb.value, n.value)
        handle.update(explorer.figure(history, k.value, lamb.value, explorer.best_step(history)))
        status.value = (f"{explorer.setting(k.value, lamb.value)}: {explorer.summary(history)} "
                        f"(retrained in {time.perf_counter() - start:.1f} s)")

    for slider in (k, lamb, n):
        slider.observe(retrain, names="value")
    return Controls([w.HBox([k, lamb, n]), status])


def _explore(tuned, fit_part, validate, batch_size, every, baselines, title, seed):
    explorer = _Explorer(tuned, fit_part, validate, batch_size, every, seed, baselines, title)
    steps = int(tuned.history["step"][-1])
    fig = explorer.figure(tuned.history, explorer.K, explorer.lamb, mark_step=tuned.step)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        return explorer
    if get_ipython() is None:  # a plain Python session: the figure alone
        return explorer
    handle = display(fig, display_id=True)
    try:
        display(_sliders(explorer, handle, steps))
    except ImportError:  # no ipywidgets: the figure alone
        print(SLIDERS_TEXT.replace("open this notebook in", "install ipywidgets and use"))
    return None


def explore_lfm(tuned, fit_part, validate: Callable, *, batch_size: int, every: int,
                baselines: dict | None = None, title: str = "Learning curve", seed=0):
    """The chosen latent factor model's learning curve, with sliders that retrain it.

    Parameters
    ----------
    tuned : :class:`~recsys_helpers.tuning.Tuned`
        A grid search's outcome for :class:`~recsys_helpers.models.LatentFactorModel`
        (its grid set ``lamb`` and ``lamb_factors``): the figure shows its chosen setting's
        curve (the training objective and ``tuned.monitor``), marked at the chosen step.
    fit_part : Interactions
        What the search trained on; a retraining does too, with ``rating_batches(fit_part,
        batch_size, seed)`` (the search's batches, so that the chosen setting gives the
        same curve again).
    validate : callable ``(model) -> float``
        The search's validation figure, computed every ``every`` steps.
    baselines : dict, optional
        Reference lines (e.g. the tuned bias-only model's validation MSE).

    The sliders (in JupyterLab) set ``K`` (0, the bias-only model, to 10), the factors'
    :math:`\\lambda_\\gamma` (half-decades from 1e-7 to 1e-1; the biases' lambda stays the
    chosen one) and the number of steps; the whole curve is trained, without early
    stopping, and the best step is marked.  Returns None in a notebook (the explorer
    object in a plain Python session).
    """
    if _kind(tuned.model) != "lfm":
        raise TypeError("explore_lfm takes a grid search of LatentFactorModel")
    return _explore(tuned, fit_part, validate, batch_size, every, baselines, title, seed)


def explore_bpr(tuned, fit_part, validate: Callable, *, batch_size: int, every: int,
                baselines: dict | None = None, title: str = "Learning curve", seed=0):
    """The chosen BPR model's learning curve, with sliders that retrain it.

    As :func:`explore_lfm`, for a grid search of :class:`~recsys_helpers.models.BPRModel`
    (its grid set ``lamb``): the batches are ``bpr_batches(fit_part, batch_size, seed)``,
    the sliders set ``K`` (1 to 10), :math:`\\lambda` (half-decades from 1e-7 to 1e-1) and
    the number of steps, and ``validate`` is the search's validation AUC.
    """
    if _kind(tuned.model) != "bpr":
        raise TypeError("explore_bpr takes a grid search of BPRModel")
    return _explore(tuned, fit_part, validate, batch_size, every, baselines, title, seed)
