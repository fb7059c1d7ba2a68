"""``sync-cells``: the cells that show the package's code are regenerated from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from recsys_helpers.cli import main
from recsys_helpers.notebook_cells import TAG, sync_cells, sync_command

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "03_latent_factor_tensorflow.ipynb"


def _tagged(path: Path) -> list:
    nb = nbformat.read(path, as_version=4)
    return [c for c in nb.cells if TAG in c.metadata.get("tags", [])]


def test_drifted_cell_is_reported_then_regenerated(tmp_path, capsys):
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    cell = next(c for c in nb.cells if TAG in c.metadata.get("tags", []))
    original = cell.source
    cell.source = original.replace("\n", "\n    # an edit made in the notebook only\n", 1)
    nbformat.write(nb, copy)

    assert sync_command(check=True, paths=[copy]) == 1
    err = capsys.readouterr().err
    assert f"{copy.name}: cell" in err and "python -m recsys_helpers sync-cells" in err
    assert "an edit made in the notebook only" in copy.read_text()  # --check writes nothing

    assert sync_command(paths=[copy]) == 0
    assert _tagged(copy)[0].source == original
    assert sync_cells([copy], check=True) == []


def test_command_line(capsys):
    with pytest.raises(SystemExit) as info:
        main(["sync-cells", "--help"])
    assert info.value.code == 0 and "--check" in capsys.readouterr().out
