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
from recsys_helpers.results import read_results
from recsys_helpers.runner import BOOK_FIGURES, course_notebooks, select
from recsys_helpers.verdicts import disagreements, read_verdicts

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
    # The taste laboratory: settings chosen on validation find the planted taste.
    assert f["test_mse_lab"] < 0.95 * f["mse_baseline_only_lab"], f
    assert f["mse_baseline_only_lab"] < f["mse_always_mean_lab"], f
    _check_verdicts(f, read_verdicts(surprise_run / f"{SURPRISE.stem}.ipynb"))


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
    # The taste laboratory: BPR finds the planted genres; popularity cannot.
    assert f["precision_at_10_lab"] > f["precision_at_10_popularity_lab"], f
    assert f["genre_hit_rate_at_10_lab"] > f["genre_hit_rate_at_10_popularity_lab"] + 0.3, f
    _check_verdicts(f, f.verdicts)


@pytest.mark.executes(LFM)
def test_tensorflow_lfm_tuned_beats_the_mean_and_equals_bias_only(notebook_figures):
    f = notebook_figures(LFM.stem)
    # Real data: the book's settings 1.766 against always-the-mean 1.743.
    assert f["test_mse_book_settings"] > f["mse_always_mean"], f
    assert f["test_mse"] < 0.9 * f["mse_always_mean"], f
    assert abs(f["test_mse"] / f["mse_bias_only"] - 1) < 0.03, f
    assert f["param_change"] > 1e-3  # every variable moved away from its initial value
    # The taste laboratory: the factors learn the planted taste.
    assert f["test_mse_lab"] <= 0.90 * f["mse_bias_only_lab"], f
    _check_verdicts(f, f.verdicts)


@pytest.mark.executes(BPR)
def test_tensorflow_bpr_beats_popularity_narrowly(notebook_figures):
    f = notebook_figures(BPR.stem)
    assert f["auc_popularity"] < f["auc_sampled"] < f["auc_popularity"] + 0.05, f
    assert abs(f["auc_sampled"] - f["auc_exact"]) < 0.03, f
    assert f["param_change"] > 1e-3
    # The taste laboratory: BPR learns the planted taste, well beyond popularity.
    assert f["auc_sampled_lab"] >= f["auc_popularity_lab"] + 0.05, f
    assert f["genre_hit_rate_at_10_lab"] > f["genre_hit_rate_at_10_popularity_lab"] + 0.3, f
    _check_verdicts(f, f.verdicts)


def _check_verdicts(figures, verdicts):
    """Each verdict a fresh run printed agrees with the figures it names, and the notebook
    gives one on the laboratory and one on the Goodreads-like data."""
    assert verdicts, "the notebook states no verdict"
    assert not disagreements(figures, verdicts), disagreements(figures, verdicts)
    assert {v.model.endswith("_lab") for v in verdicts} == {True, False}


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


# ---------------------------------------------------------------- what a reader sees

CHAPTERS_AND_SOLUTIONS = CHAPTERS + sorted(
    (ROOT / "notebooks" / "exercises" / "solutions").rglob("exercise_*.ipynb"))


@pytest.mark.parametrize("path", CHAPTERS_AND_SOLUTIONS, ids=lambda p: p.stem)
def test_saved_verdicts_agree_with_the_saved_figures(path):
    """Every verdict a notebook printed says what its own recorded figures say: the
    direction (better, worse, the same within the margin) and the two values."""
    figures, found = read_results(path), read_verdicts(path)
    assert not disagreements(figures, found), disagreements(figures, found)
    if path in CHAPTERS:
        assert {v.model.endswith("_lab") for v in found} == {True, False}, (
            "a chapter notebook states verdicts on the laboratory and on Goodreads-like data")


def test_the_verdict_check_can_fail(tmp_path):
    import nbformat

    from recsys_helpers.results import MIME_TYPE
    from recsys_helpers.verdicts import VERDICT_MIME

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={MIME_TYPE: {"a": 0.9, "b": 1.0}}),
        nbformat.v4.new_output("display_data", data={VERDICT_MIME: {
            "model": "a", "baseline": "b", "better": "lower", "margin": 0.01,
            "outcome": "worse", "sentence": "a 0.900 is worse than b 1.000"}})]
    nb.cells.append(cell)
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(AssertionError):
        test_saved_verdicts_agree_with_the_saved_figures(path)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_code_cells_are_short(path):
    """Ideas in the notebook, plumbing in the package: no code cell over 25 lines, except
    the model code shown verbatim from the package."""
    long = [(k, len(_source(c).splitlines())) for k, c in enumerate(_cells(path))
            if "model-code" not in c["metadata"].get("tags", [])
            and len(_source(c).splitlines()) > 25]
    assert not long, f"code cells over 25 lines (index among code cells, lines): {long}"


@pytest.mark.parametrize("path", course_notebooks(), ids=lambda p: p.stem)
def test_saved_outputs_keep_one_line_per_progress_bar(path):
    for k, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            text = out.get("text", "")
            text = "".join(text) if isinstance(text, list) else text
            assert "\r" not in text, f"code cell {k} keeps a progress bar's every update"


GLOSSARY = ROOT / "docs" / "glossary.md"


def _anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown file's headings, as GitHub and myst make them."""
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("path", CHAPTERS_AND_SOLUTIONS, ids=lambda p: p.stem)
def test_notebook_links_the_glossary_and_its_anchors_exist(path):
    text = "\n".join(_source(c) for c in _cells(path, "markdown"))
    links = re.findall(r"\]\(([./]*docs/glossary\.md)(#[^)\s]*)?\)", text)
    assert links, "link the glossary (docs/glossary.md) from the notebook"
    target = (path.parent / links[0][0]).resolve()
    assert target == GLOSSARY.resolve(), f"{links[0][0]} does not lead to docs/glossary.md"
    anchors = _anchors(GLOSSARY.read_text(encoding="utf-8"))
    missing = sorted({a[1:] for _, a in links if a and a[1:] not in anchors})
    assert not missing, f"glossary anchors that do not exist: {missing}"


def test_syllabus_names_every_notebook_and_exercise():
    text = (ROOT / "docs" / "syllabus.md").read_text(encoding="utf-8")
    for path in CHAPTERS:
        assert f"## {path.stem[:2]} ·" in text, path.stem
    for n in range(1, 5):
        assert f"## Exercise 5.{n} ·" in text
    assert "](glossary.md)" in text


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
    # four searches (SVD and BaselineOnly, on both data sets); the laboratory's SVD search
    # prints its own count
    lab_svd = int(re.search(r"the coordinate search: (\d+)\.", json.dumps(executed)).group(1))
    assert timing["candidates"] > lab_svd + 3
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
