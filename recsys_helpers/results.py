"""Recording a notebook's key figures so that the runner and the tests can read them back.

A notebook calls ``record("test_mse", value)``.  Inside Jupyter this displays one
output of a custom MIME type (:data:`MIME_TYPE`) beside a readable text line; the
figures are then stored in the executed notebook and :func:`read_results` collects
them.  Outside Jupyter it just prints the line.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path

__all__ = ["MIME_TYPE", "record", "recorded", "read_results", "results_from_outputs"]

MIME_TYPE = "application/vnd.recsys-course.figure+json"

#: The figures recorded in this process so far, by name (what :func:`recorded` reads).
_RECORDED: dict = {}


def recorded(name: str):
    """The value last recorded under ``name`` in this kernel (KeyError if none)."""
    if name not in _RECORDED:
        raise KeyError(f"no figure {name!r} has been recorded; record it first")
    return _RECORDED[name]


def _plain(value):
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"cannot record a non-finite figure: {value}")
        return value
    if hasattr(value, "item"):  # numpy / TensorFlow scalars
        return _plain(value.item() if not hasattr(value, "numpy") else value.numpy().item())
    raise TypeError(f"record() takes numbers or strings, not {type(value).__name__}")


def record(name: str, value) -> None:
    """Record one figure of the notebook (a number or a short string) and show it."""
    value = _plain(value)
    _RECORDED[name] = value
    text = f"{name} = {value:.4f}" if isinstance(value, float) else f"{name} = {value}"
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({MIME_TYPE: {name: value}, "text/plain": text}, raw=True)
            return
    except ImportError:  # pragma: no cover - IPython comes with Jupyter
        pass
    print(text)


def payloads(outputs, mime: str = MIME_TYPE):
    """The payloads of one custom MIME type in a list of cell outputs (nbformat dicts)."""
    for out in outputs:
        data = out.get("data", {}) if isinstance(out, dict) else {}
        if mime in data:
            payload = data[mime]
            yield json.loads(payload) if isinstance(payload, str) else payload


def notebook_payloads(notebook, mime: str = MIME_TYPE):
    """The payloads of one custom MIME type in an executed notebook (a path or a node)."""
    if isinstance(notebook, (str, Path)):
        notebook = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            yield from payloads(cell.get("outputs", []), mime)


def results_from_outputs(outputs) -> dict:
    """The figures recorded in a list of cell outputs (nbformat dicts)."""
    found = {}
    for payload in payloads(outputs):
        found.update(payload)
    return found


def read_results(notebook) -> dict:
    """All figures recorded in an executed notebook (a path or an nbformat node)."""
    found = {}
    for payload in notebook_payloads(notebook):
        found.update(payload)
    return found
