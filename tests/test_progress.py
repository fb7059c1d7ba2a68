"""Progress bars: notebook widgets normally, plain text when RECSYS_PROGRESS=text."""

import io

from tqdm import std

from recsys_helpers import progress


def test_text_mode_gives_plain_text_bars(monkeypatch):
    monkeypatch.setenv("RECSYS_PROGRESS", "text")
    out = io.StringIO()
    bar = progress.trange(3, desc="training", file=out)
    assert type(bar) is std.tqdm
    for _ in bar:
        pass
    assert "training: 100%" in out.getvalue() and "3/3" in out.getvalue()


def test_default_mode_uses_tqdm_auto(monkeypatch):
    from tqdm import auto

    monkeypatch.delenv("RECSYS_PROGRESS", raising=False)
    bar = progress.tqdm(range(2), disable=True)
    assert isinstance(bar, auto.tqdm)
    assert not progress.text_mode()
