"""Progress bars for the course: ``tqdm``'s notebook widgets, or plain text when stored.

Inside Jupyter, ``tqdm.auto`` draws an ipywidgets bar.  A notebook saved with such a bar
shows, without a widget manager, only "training: 0%| | 0/100".  When the environment
variable ``RECSYS_PROGRESS`` is ``text`` (as when the course's notebooks are executed
for storage), the bars are plain text instead, so the stored output shows the finished
bar.
"""

from __future__ import annotations

import os

__all__ = ["tqdm", "trange", "text_mode"]


def text_mode() -> bool:
    """True when ``RECSYS_PROGRESS=text`` asks for plain-text bars."""
    return os.environ.get("RECSYS_PROGRESS", "").strip().lower() == "text"


def _impl():
    if text_mode():
        from tqdm import std
        return std
    from tqdm import auto
    return auto


def tqdm(*args, **kwargs):
    """A progress bar (``tqdm.auto.tqdm``, or ``tqdm.std.tqdm`` in text mode)."""
    return _impl().tqdm(*args, **kwargs)


def trange(*args, **kwargs):
    """``tqdm(range(*args), **kwargs)`` with the same choice of bar."""
    return _impl().trange(*args, **kwargs)
