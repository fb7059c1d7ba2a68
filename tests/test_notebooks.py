"""The chapter notebooks: what they record shows learning, their model code matches the
package, the committed copies are clean, and the headless runner works end to end.

The notebooks themselves are executed by nbval (``pytest`` collects ``notebooks/``); the
figures they record are read through the ``notebook_figures`` fixture (see conftest.py).
"""

import ast
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_helpers import interactions, models
from recsys_helpers.datasets import load
from recsys_helpers.interactions import Interactions
from recsys_helpers.runner import BOOK_FIGURES, course_notebooks, select

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path, kind="code"):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [c for c in nb["cells"] if c["cell_type"] == kind]


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


# ---------------------------------------------------------------- figures on the sample
# The bundled sample is calibrated to behave like real Goodreads data (data/README.md):
# these are the directions the real data shows, which the notebooks must reproduce on it.

SURPRISE = ROOT / "notebooks" / "01_latent_factor_surprise.ipynb"


@pytest.fixture(scope="module")
def surprise_run(tmp_path_factory):
    """Notebook 01 executed once by the ``run`` command (so nbval does not: ``executes``):
    the folder of what it writes."""
    out = tmp_path_factory.mktemp("run")
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_helpers", "run", "--only", SURPRISE.stem,
         "--data", "sample", "--out", str(out)],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.executes(SURPRISE)
def test_surprise_biases_beat_the_mean_and_factors_add_little(surprise_run):
    f = json.loads((surprise_run / "results.json").read_text())[SURPRISE.stem]
    assert f["mse_baseline_only"] < 0.9 * f["mse_always_mean"], f
    assert abs(f["test_mse"] / f["mse_baseline_only"] - 1) < 0.03, f  # real: 0.845 / 0.848


IMPLICIT, LFM, BPR = (ROOT / "notebooks" / f"{stem}.ipynb" for stem in (
    "02_bpr_implicit", "03_latent_factor_tensorflow", "04_bpr_tensorflow"))


@pytest.mark.executes(IMPLICIT)
def test_implicit_bpr_behind_popularity_and_tuning_helps(notebook_figures):
    f = notebook_figures(IMPLICIT.stem)
    reviews = Interactions.from_frame(load("fantasy_reviews", ["user_id", "book_id"],
                                           data="sample"), rating=None)
    assert (f["n_users"], f["n_items"]) == (reviews.n_users, reviews.n_items)
    # Real data: the book's settings 0.458, popularity 0.820 (uniform negatives).
    assert f["auc_book_settings"] < f["auc"] < f["auc_popularity"], f
    assert abs(f["auc"] - f["auc_exact"]) < 0.03, f
    # Against negatives drawn by popularity, popularity is near chance and BPR is not.
    assert abs(f["auc_popularity_popular_negatives"] - 0.5) < 0.05, f
    assert f["auc_popular_negatives"] > f["auc_popularity_popular_negatives"] + 0.05, f
    assert 0 < f["precision_at_10"] < f["precision_at_10_popularity"] <= 1, f


@pytest.mark.executes(LFM)
def test_tensorflow_lfm_tuned_beats_the_mean_and_equals_bias_only(notebook_figures):
    f = notebook_figures(LFM.stem)
    # Real data: the book's settings 1.766 against always-the-mean 1.743.
    assert f["test_mse_book_settings"] > f["mse_always_mean"], f
    assert f["test_mse"] < 0.9 * f["mse_always_mean"], f
    assert abs(f["test_mse"] / f["mse_bias_only"] - 1) < 0.03, f
    assert f["param_change"] > 1e-3  # every variable moved away from its initial value


@pytest.mark.executes(BPR)
def test_tensorflow_bpr_beats_popularity_narrowly(notebook_figures):
    f = notebook_figures(BPR.stem)
    assert f["auc_popularity"] < f["auc_sampled"] < f["auc_popularity"] + 0.05, f
    assert abs(f["auc_sampled"] - f["auc_exact"]) < 0.03, f
    assert f["param_change"] > 1e-3


# ---------------------------------------------------------------- one implementation

@pytest.mark.parametrize("name", ["03_latent_factor_tensorflow", "04_bpr_tensorflow"])
def test_model_code_shown_in_notebook_is_the_package_code(name):
    shown = [c for c in _cells(ROOT / "notebooks" / f"{name}.ipynb")
             if "model-code" in c["metadata"].get("tags", [])]
    assert shown, f"{name} shows no model code"
    for cell in shown:
        source = _source(cell)
        defined = [n.name for n in ast.parse(source).body
                   if isinstance(n, (ast.ClassDef, ast.FunctionDef))]
        assert defined, "a model-code cell must define the model or the training step"
        package = "\n\n\n".join(
            inspect.getsource(getattr(models, n, None) or getattr(interactions, n)).strip()
            for n in defined)
        assert source.strip() == package, (
            f"{name}: the code shown for {defined} differs from recsys_helpers; "
            "run `python -m recsys_helpers sync-cells` to regenerate it")


# ---------------------------------------------------------------- committed copies

ALL_NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_maths_has_no_doubled_backslashes(path):
    r"""``\\right)`` in a markdown cell is a line break and the text "right" to MathJax:
    the equation does not render.  Markdown cells hold LaTeX with single backslashes."""
    for k, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] == "markdown":
            source = _source(cell)
            bad = re.findall(r"\\\\(?:left|right|[a-zA-Z]+)?", source)
            assert not bad, f"cell {k}: {bad[:3]} (write \\right, not \\\\right)"


def test_the_doubled_backslash_check_can_fail(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {},
                     "source": ["$$\\left(x\\\\right)$$"]}]}
    path = tmp_path / "bad.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match="cell 0"):
        test_markdown_maths_has_no_doubled_backslashes(path)

@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_committed_notebook_is_executed_and_clean(path):
    text = path.read_text(encoding="utf-8")
    code = _cells(path)
    assert code and all(c.get("execution_count") for c in code), "re-execute on the sample"
    assert any(c.get("outputs") for c in code)
    assert not re.search(r"/(home|root|work|tmp|Users)/", text), "an absolute path is saved"
    first = _source(_cells(path, "markdown")[0]).lower()
    assert "synthetic" in first and "real" in first, "say where the outputs come from"
    assert any("parameters" in c["metadata"].get("tags", []) for c in code)


# ---------------------------------------------------------------- the runner

@pytest.mark.executes(SURPRISE)
def test_runner_runs_one_notebook_end_to_end(surprise_run):
    out = surprise_run
    results = json.loads((out / "results.json").read_text())
    figures = results["01_latent_factor_surprise"]
    assert figures["test_mse"] < figures["mse_always_mean"]
    md = (out / "results.md").read_text()
    assert f"{BOOK_FIGURES[('01_latent_factor_surprise', 'test_mse')]:.3f}" in md
    assert (out / "01_latent_factor_surprise.html").stat().st_size > 10_000
    timing = json.loads((out / "timing.json").read_text())["01_latent_factor_surprise"]
    assert timing["seconds"] > 0 and timing["peak_rss_bytes"] > 50e6  # a kernel with numpy loaded
    executed = json.loads((out / "01_latent_factor_surprise.ipynb").read_text())
    assert all(c.get("execution_count") for c in executed["cells"] if c["cell_type"] == "code")


def test_runner_names_the_failing_notebook_and_cell_on_bad_data(tmp_path):
    bad = tmp_path / "data"
    bad.mkdir()
    (bad / "goodreads_fantasy.tsv").write_text("u1\tb1\t4\nu2\tb2\tfive\n")
    proc = subprocess.run(
        [sys.executable, "-m", "recsys_helpers", "run", "--only", "01_latent",
         "--data", "full", "--data-dir", str(bad), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    assert "01_latent_factor_surprise.ipynb: cell" in proc.stderr
    assert "DataFormatError" in proc.stderr and "line 2" in proc.stderr


def test_runner_rejects_an_unknown_notebook():
    with pytest.raises(ValueError, match="matches no notebook"):
        select(["no_such_notebook"])
    proc = subprocess.run([sys.executable, "-m", "recsys_helpers", "run", "--only", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no notebook" in proc.stderr
