"""Verdicts: one sentence comparing two recorded figures, worded from the figures alone.

A notebook records its figures with :func:`recsys_helpers.record`, then asks for a
verdict by the figures' names::

    verdict("test_mse_lab", "mse_bias_only_lab", "lower",
            model_label="the latent factor model", baseline_label="the bias-only model",
            data="Taste laboratory")

prints, for example, "Taste laboratory: the latent factor model's test MSE, 0.712, is
14.3 % lower than the bias-only model's, 0.830 (better)." and records the verdict (the two
figure names, which direction is better, the margin and the outcome) in the executed
notebook, so that a test can read every verdict back and check it against the figures.

The outcome is ``better`` or ``worse`` when the two figures differ by more than
``margin`` (relative, 1 % by default), else ``same``: a difference that small is within
what a different random seed moves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .results import _plain, recorded

__all__ = ["VERDICT_MIME", "Verdict", "verdict", "outcome", "read_verdicts", "disagreements",
           "source_label", "METRIC_NAMES"]

VERDICT_MIME = "application/vnd.recsys-course.verdict+json"

#: How a figure's metric is named in a sentence: the first of these found in its name.
METRIC_NAMES = (("validation_mse", "validation MSE"), ("mse", "test MSE"),
                ("auc", "AUC"), ("precision_at_10", "precision@10"),
                ("recall_at_10", "recall@10"),
                ("genre_hit_rate_at_10", "share of top-10 books from the favourite genre"))


@dataclass(frozen=True)
class Verdict:
    """A comparison of two recorded figures: ``outcome`` is ``better``, ``worse`` or
    ``same`` for ``model`` against ``baseline`` (``better`` is ``lower`` or ``higher``)."""

    model: str
    baseline: str
    better: str
    margin: float
    outcome: str
    sentence: str

    def _ipython_display_(self):
        """Shown once, when :func:`verdict` records it; not again as a cell's result."""


def outcome(value: float, reference: float, better: str, margin: float = 0.01) -> str:
    """``better``, ``worse`` or ``same``: ``value`` against ``reference`` when ``better``
    (``lower`` or ``higher``) is the good direction and ``margin`` the relative difference
    below which two figures count as the same."""
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    scale = max(abs(reference), 1e-12)
    change = (value - reference) / scale
    if abs(change) <= margin:
        return "same"
    return "better" if (change < 0) == (better == "lower") else "worse"


def _possessive(label: str) -> str:
    """"the model" -> "the model's"; "the biases" -> "the biases'"."""
    return label + ("'" if label.endswith("s") else "'s")


def _metric(name: str) -> str:
    for part, words in METRIC_NAMES:
        if part in name:
            return words
    return name.replace("_", " ")


def shown(x: float) -> str:
    """A figure as a verdict prints it: three decimals, or two significant digits below
    0.01 (a precision@10 of 0.0004 against 0.0002 is not "0.000 against 0.000")."""
    x = float(x)
    return f"{x:.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:.2g}"


def verdict(model: str, baseline: str, better: str, *, model_label: str,
            baseline_label: str, data: str, metric: str | None = None,
            margin: float = 0.01, because: dict | None = None) -> Verdict:
    """Print and record the verdict on two recorded figures.

    Parameters
    ----------
    model, baseline : str
        Names of figures recorded before (:func:`recsys_helpers.record`).
    better : {"lower", "higher"}
        Which direction of the metric is good (``lower`` for an MSE).
    model_label, baseline_label : str
        How the sentence names the two ("the latent factor model").
    data : str
        The data the figures come from ("Taste laboratory").
    metric : str, optional
        The metric's name in the sentence (guessed from ``model``'s name otherwise).
    margin : float
        Relative difference below which the figures count as the same.
    because : dict, optional
        Explanations by outcome (``{"same": "...", "better": "..."}``): the one that
        matches the outcome is printed after the sentence.  Write them as ``str.format``
        templates; ``{model}``, ``{baseline}`` and ``{change}`` (relative, signed) are
        filled in.
    """
    value, reference = float(recorded(model)), float(recorded(baseline))
    result = outcome(value, reference, better, margin)
    metric = metric or _metric(model)
    change = (value - reference) / max(abs(reference), 1e-12)
    if result == "same":
        how = (f"is within {margin * 100:g}% of {_possessive(baseline_label)}, "
               f"{shown(reference)}: no real difference")
    else:
        direction = "lower" if change < 0 else "higher"
        # against a reference of zero a relative change means nothing: say by how much
        by = (f"{abs(change):.1%}" if abs(reference) > 1e-9
              else shown(abs(value - reference)))
        how = (f"is {by} {direction} than {_possessive(baseline_label)}, "
               f"{shown(reference)} ({result})")
    sentence = f"{data}: {_possessive(model_label)} {metric}, {shown(value)}, {how}."
    extra = (because or {}).get(result)
    if extra:
        sentence += " " + extra.format(model=value, baseline=reference, change=change)
    found = Verdict(model, baseline, better, float(margin), result, sentence)
    _show(found)
    return found


def _show(found: Verdict) -> None:
    payload = {k: _plain(v) for k, v in asdict(found).items()}
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({VERDICT_MIME: payload, "text/plain": found.sentence}, raw=True)
            return
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        pass
    print(found.sentence)


def read_verdicts(notebook) -> list[Verdict]:
    """Every verdict recorded in an executed notebook (a path or an nbformat node)."""
    from .results import notebook_payloads

    return [Verdict(**payload) for payload in notebook_payloads(notebook, VERDICT_MIME)]


def disagreements(figures: dict, verdicts) -> list[str]:
    """What is wrong with ``verdicts`` against the recorded ``figures`` (empty: nothing):
    a verdict naming a figure that was not recorded, an outcome the two figures do not
    give, or a sentence that does not show the two values."""
    wrong = []
    for v in verdicts:
        if v.model not in figures or v.baseline not in figures:
            wrong.append(f"{v.model} or {v.baseline} was not recorded: {v.sentence}")
            continue
        found = outcome(figures[v.model], figures[v.baseline], v.better, v.margin)
        if found != v.outcome:
            wrong.append(f"says {v.outcome!r}, the figures give {found!r}: {v.sentence}")
        for name in (v.model, v.baseline):
            if shown(figures[name]) not in v.sentence:
                wrong.append(f"does not show {name} = {shown(figures[name])}: {v.sentence}")
    return wrong


def source_label(name: str, lab: bool = False) -> str:
    """How a verdict names the data that ``load(name, lab=lab)`` reads: the taste
    laboratory, the bundled Goodreads-like sample, or the real Goodreads file."""
    from .datasets import bundled_dir, locate

    if lab:
        return "Taste laboratory (synthetic)"
    path = locate(name, verbose=False)
    if path.parent.resolve() == bundled_dir().resolve():
        return "Goodreads-like sample (synthetic)"
    return "Goodreads"
