"""The course's plots (matplotlib), so that each notebook draws them the same way."""

from __future__ import annotations

import numpy as np

__all__ = ["learning_curve", "rating_histogram", "error_histogram", "compare"]


def _axes(ax, figsize=(6, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def learning_curve(history: dict, metrics=("objective",), ax=None, title=None,
                   baselines: dict | None = None):
    """Plot figures of a training history (from ``models.fit``) against the step.

    ``metrics`` whose name ends in ``objective`` go on the left axis, the others on a
    right-hand axis; ``baselines`` draws horizontal reference lines (e.g. always-the-mean).
    """
    ax = _axes(ax)
    steps = history["step"]
    left = [m for m in metrics if m.endswith("objective")]
    right = [m for m in metrics if m not in left]
    for m in left:
        ax.plot(steps, history[m], label=m.replace("_", " "), color="C0")
    ax.set_xlabel("training step (batch)")
    ax.set_ylabel("training objective" if left else right[0].replace("_", " "))
    ax2 = ax.twinx() if left and right else ax
    for k, m in enumerate(right):
        ax2.plot(steps, history[m], label=m.replace("_", " "), color=f"C{k + 1}", marker=".")
    for k, (name, value) in enumerate((baselines or {}).items()):
        ax2.axhline(value, ls="--", color=f"C{k + 4}", label=name)
    if ax2 is not ax:
        ax2.set_ylabel(", ".join(m.replace("_", " ") for m in right))
    handles = ax.get_legend_handles_labels()
    if ax2 is not ax:
        h2 = ax2.get_legend_handles_labels()
        handles = (handles[0] + h2[0], handles[1] + h2[1])
    ax.legend(*handles, loc="upper right", fontsize="small")
    ax.set_title(title or "Learning curve")
    return ax


def rating_histogram(ratings, ax=None, title="Ratings"):
    """Bar chart of how often each rating value occurs."""
    ax = _axes(ax, (5, 3))
    values, counts = np.unique(np.asarray(ratings), return_counts=True)
    ax.bar(values, counts / counts.sum(), width=0.6)
    ax.set_xticks(values)
    ax.set_xlabel("rating")
    ax.set_ylabel("fraction of interactions")
    ax.set_title(title)
    return ax


def error_histogram(errors: dict, ax=None, bins=60, title="Prediction errors"):
    """Overlaid histograms of prediction errors, one per model (``{name: errors}``)."""
    ax = _axes(ax)
    lo = min(float(np.min(e)) for e in errors.values())
    hi = max(float(np.max(e)) for e in errors.values())
    edges = np.linspace(lo, hi, bins + 1)
    for name, e in errors.items():
        ax.hist(e, bins=edges, alpha=0.55, label=f"{name} (MSE {np.mean(np.square(e)):.3f})",
                density=True)
    ax.set_xlabel("prediction - rating")
    ax.set_ylabel("density")
    ax.legend(fontsize="small")
    ax.set_title(title)
    return ax


def compare(figures: dict, ax=None, ylabel="test MSE", title=None, better="lower"):
    """Bar chart comparing one figure across models (``{model name: value}``)."""
    ax = _axes(ax, (5.5, 3))
    names = list(figures)
    values = [figures[n] for n in names]
    bars = ax.bar(names, values, color=[f"C{k}" for k in range(len(names))])
    for b, v in zip(bars, values):
        ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                    fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title or f"{ylabel} ({better} is better)")
    ax.set_ylim(0, max(values) * 1.15)
    return ax
