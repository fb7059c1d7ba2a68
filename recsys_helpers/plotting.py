"""The course's plots (matplotlib), so that each notebook draws them the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["learning_curve", "rating_histogram", "error_histogram", "compare", "factor_map",
           "project_2d"]


def _axes(ax, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def _label(name: str) -> str:
    return name.replace("_", " ").replace(" mse", " MSE").replace(" auc", " AUC")


def learning_curve(history: Mapping[str, Sequence[float]], metrics: Sequence[str] = ("objective",),
                   ax: Axes | None = None, title: str | None = None,
                   baselines: Mapping[str, float] | None = None,
                   ylabel: str | None = None, mark_step: int | None = None) -> Axes:
    """Plot figures of a training history (from ``models.fit``) against the step.

    ``metrics`` whose name ends in ``objective`` go on the left axis, the others on a
    right-hand axis (all on one axis when none is an objective, e.g. a training and a
    test MSE); ``baselines`` draws horizontal reference lines (e.g. always-the-mean);
    ``mark_step`` draws a vertical line at a chosen step (e.g. the one early stopping
    kept).  The legend goes below the plot, off the curves.
    """
    ax = _axes(ax)
    steps = history["step"]
    left = [m for m in metrics if m.endswith("objective")]
    right = [m for m in metrics if m not in left]
    for m in left:
        ax.plot(steps, history[m], label=_label(m), color="C0")
    ax.set_xlabel("training step (batch)")
    ax2 = ax.twinx() if left and right else ax
    for k, m in enumerate(right):
        ax2.plot(steps, history[m], label=_label(m), color=f"C{k + 1}", marker=".")
    for k, (name, value) in enumerate((baselines or {}).items()):
        ax2.axhline(value, ls="--", color=f"C{k + 4}", label=name)
    if mark_step is not None:
        ax.axvline(mark_step, ls=":", color="grey", label=f"step {mark_step}")
    if ax2 is not ax:
        ax.set_ylabel("training objective")
        ax2.set_ylabel(ylabel or ", ".join(_label(m) for m in right))
    else:
        ax.set_ylabel(ylabel or ("training objective" if left else ", ".join(_label(m) for m in right)))
    handles = ax.get_legend_handles_labels()
    if ax2 is not ax:
        h2 = ax2.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    ax.legend(*handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(handles[0])),
              fontsize="small", frameon=False)
    ax.set_title(title or "Learning curve")
    return ax


def rating_histogram(ratings: Sequence[float], ax: Axes | None = None,
                     title: str = "Ratings") -> Axes:
    """Bar chart of how often each rating value occurs."""
    ax = _axes(ax, (5, 3))
    values, counts = np.unique(np.asarray(ratings), return_counts=True)
    ax.bar(values, counts / counts.sum(), width=0.6)
    ax.set_xticks(values)
    ax.set_xlabel("rating")
    ax.set_ylabel("fraction of interactions")
    ax.set_title(title)
    return ax


def error_histogram(errors: Mapping[str, Sequence[float]], ax: Axes | None = None, bins: int = 60,
                    title: str = "Prediction errors", log: bool = False) -> Axes:
    """Overlaid histograms of prediction errors, one per model (``{name: errors}``).

    ``log=True`` puts the density on a log scale, so that the tails (large errors) show.
    """
    ax = _axes(ax)
    lo = min(float(np.min(e)) for e in errors.values())
    hi = max(float(np.max(e)) for e in errors.values())
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    for name, e in errors.items():
        ax.hist(e, bins=edges, alpha=0.55, label=f"{name} (MSE {np.mean(np.square(e)):.3f})",
                density=True, log=log)
    ax.set_xlabel("prediction - rating")
    ax.set_ylabel("density (log scale)" if log else "density")
    ax.legend(fontsize="small")
    ax.set_title(title)
    return ax


def compare(figures: Mapping[str, float], ax: Axes | None = None, ylabel: str = "test MSE",
            title: str | None = None, better: str = "lower") -> Axes:
    """Bar chart comparing one figure across models (``{model name: value}``).

    A figure that could not be computed (NaN) shows as a missing bar labelled "n/a".
    """
    ax = _axes(ax, (5.5, 3))
    names = list(figures)
    values = [float(figures[n]) for n in names]
    shown = [v if np.isfinite(v) else 0.0 for v in values]
    bars = ax.bar(names, shown, color=[f"C{k}" for k in range(len(names))])
    for b, v in zip(bars, values):
        ax.annotate(f"{v:.3f}" if np.isfinite(v) else "n/a",
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} ({better} is better)")
    top = max(shown, default=0.0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    return ax


def project_2d(factors) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``factors`` (items x K) projected on their two principal directions.

    Returns the ``(n, 2)`` coordinates and the share of the factors' variance each of the
    two directions explains (PCA by a singular value decomposition of the centred rows).
    """
    x = np.asarray(factors, dtype=float)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError("factors must be a 2-D array (items x K)")
    x = x - x.mean(axis=0)
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    coords = x @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    total = float(np.sum(s ** 2)) or 1.0
    shares = np.zeros(2)
    shares[:min(2, s.size)] = s[:2] ** 2 / total
    return coords, shares


def factor_map(factors, genres: Sequence[str], ax: Axes | None = None,
               title: str = "Item factors, projected to 2-D") -> Axes:
    """Scatter the item factors (items x K), projected to 2-D (:func:`project_2d`), one
    colour per genre: if the factors learned taste, books of a genre lie together."""
    ax = _axes(ax, (5.5, 4.5))
    coords, shares = project_2d(factors)
    genres = np.asarray([str(g) or "unknown" for g in genres])
    from .lab import LAB_GENRES

    # the laboratory's genres in their order around the circle, any others after them
    order = [g for g in LAB_GENRES if g in set(genres)]
    order += sorted(set(genres) - set(order))
    for k, g in enumerate(order):
        at = genres == g
        ax.scatter(coords[at, 0], coords[at, 1], s=12, alpha=0.7, color=f"C{k % 10}", label=g)
    ax.set_xlabel(f"first direction ({shares[0]:.0%} of the variance)")
    ax.set_ylabel(f"second direction ({shares[1]:.0%} of the variance)")
    ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_title(title)
    return ax
