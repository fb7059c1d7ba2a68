"""The headless runner on small made-up notebooks: failures sorted into failed checks and
crashes (written to failures.json with the figures recorded so far), readable labels,
offline HTML pages, kernels over IPC with text progress bars, widget state stripped."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from recsys_helpers import runner
from recsys_helpers.datasets import REGISTRY, bundled_dir

ROOT = Path(__file__).resolve().parent.parent
WIDGET = "application/vnd.jupyter.widget-view+json"


def _notebook(path: Path, *cells) -> Path:
    nb = new_notebook(cells=list(cells))
    nb.metadata["widgets"] = {"state": {"x": 1}}  # as a Jupyter session leaves it
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run of three notebooks: one ends, one fails a check, one crashes."""
    src = tmp_path_factory.mktemp("notebooks")
    ok = _notebook(
        src / "ok.ipynb",
        new_markdown_cell(r"The loss: $$\sum_{u,i} \left(\alpha + \beta_u - r_{u,i}\right)^2$$"),
        new_code_cell("import os\nfrom IPython.display import display\n"
                      "from recsys_helpers import record\n"
                      "record('n_users', 7)\nprint('progress:', os.environ['RECSYS_PROGRESS'])\n"
                      f"display({{{WIDGET!r}: {{'model_id': 'abc'}}, 'text/plain': 'bar 100%'}},"
                      " raw=True)"))
    check = _notebook(
        src / "check.ipynb",
        new_code_cell("from recsys_helpers import record\nrecord('test_mse', 1.25)"),
        new_code_cell("# Test: the figure\nassert 1.25 < 1, 'expected below 1, got 1.25'",
                      metadata={"nbgrader": {"grade": True, "grade_id": "t", "points": 1}}),
        new_code_cell("record('mse_raw', 2.0)"))
    crash = _notebook(src / "crash.ipynb", new_code_cell("1 / 0"))
    out = tmp_path_factory.mktemp("run") / "out"
    results, failures = runner.execute_notebooks([ok, check, crash], out=out, data="sample",
                                                 progress=False, inplace=True)
    return {"src": src, "out": out, "results": results, "failures": failures}


def test_failed_check_and_crash_are_told_apart(run):
    failures = json.loads((run["out"] / "failures.json").read_text())
    assert [(f["notebook"], f["kind"], f["cell"], f["error"]) for f in failures] == [
        ("check", "check", 2, "AssertionError"), ("crash", "crash", 1, "ZeroDivisionError")]
    assert "expected below 1, got 1.25" in failures[0]["message"]
    # The figures recorded before the failed check are kept; none after it.
    assert json.loads((run["out"] / "results.json").read_text())["check"] == {"test_mse": 1.25}
    assert [f.kind for f in run["failures"]] == ["check", "crash"]


def test_results_markdown_labels_and_data(run):
    md = (run["out"] / "results.md").read_text()
    assert "users in the data (`n_users`)" in md
    assert "test MSE of the model (`test_mse`)" in md
    assert "Data: the bundled synthetic sample." in md


def test_kernels_read_text_progress_and_widgets_are_stripped(run):
    executed = json.loads((run["out"] / "ok.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert "progress: text" in json.dumps(outputs)
    assert not [o for o in outputs if WIDGET in o.get("data", {})]
    assert "widgets" not in executed["metadata"]
    assert "bar 100%" in json.dumps(outputs)
    # --inplace: the notebook that ran to the end is saved over its source, clean;
    # those that failed are not.
    saved = json.loads((run["src"] / "ok.ipynb").read_text())
    assert saved == executed
    assert json.loads((run["src"] / "check.ipynb").read_text())["metadata"]["widgets"]


def test_html_pages_load_nothing_from_outside(run):
    page = (run["out"] / "ok.html").read_text()
    sources = re.findall(r'<script[^>]*\ssrc="([^"]*)"', page)
    assert sources and not [s for s in sources if s.startswith(("http", "//"))], sources
    assert any(s.startswith("mathjax/MathJax.js") for s in sources)
    assert (run["out"] / "mathjax" / "MathJax.js").is_file()


def test_html_equations_render_offline_in_chromium(run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") \
        or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no headless Chromium on this machine (apt-get install chromium)")
    page = (run["out"] / "ok.html").as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu",
              "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host resolves
              "--virtual-time-budget=15000"]
    shot = tmp_path / "page.png"
    subprocess.run([*common, "--window-size=900,400", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 1000
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert 'class="MathJax_Display"' in dom, "MathJax did not typeset the equation"
    visible = re.sub(r"<script.*?</script>", "", dom, flags=re.S)
    assert "$$" not in visible, "the raw LaTeX is still shown"


def test_data_description_resolves_auto(tmp_path, monkeypatch):
    monkeypatch.delenv("RECSYS_DATA_DIR", raising=False)
    assert runner.data_description("sample") == "the bundled synthetic sample"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.data_description("auto", empty) == "the bundled synthetic sample"
    tsv = REGISTRY["fantasy_tsv"].filename
    shutil.copy(bundled_dir() / tsv, empty / tsv)
    mixed = runner.data_description("auto", empty)
    assert f"{tsv}: the full data in" in mixed and "bundled synthetic sample" in mixed


def test_every_recorded_figure_has_a_label():
    names = set()
    for path in runner.course_notebooks():
        source = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "code")
        names |= set(re.findall(r"record\(\s*[\"'](\w+)[\"']", source))
    # a laboratory figure is labelled by its Goodreads twin's label
    names = {n.removesuffix(runner.LAB_SUFFIX) for n in names}
    assert names and not names - set(runner.FIGURE_LABELS), names - set(runner.FIGURE_LABELS)
    assert runner.figure_label("test_mse_lab") == "test MSE of the model, taste laboratory"


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "recsys_helpers", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_out_that_is_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    proc = _cli("run", "--only", "01_latent", "--out", str(target))
    assert proc.returncode == 2
    assert "is a file" in proc.stderr and "Traceback" not in proc.stderr


def test_run_command_output(tmp_path, monkeypatch, capsys):
    (tmp_path / "tiny.ipynb").write_text(nbformat.writes(new_notebook(
        cells=[new_code_cell("from recsys_helpers import record\nrecord('auc', 0.9)")])))
    monkeypatch.setattr(runner, "select", lambda only: [tmp_path / "tiny.ipynb"])
    assert runner.run_command(data="sample", out=tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "Data: the bundled synthetic sample" in out
    assert "HTML pages" in out and "failures.json" in out
    assert "without encryption" not in err  # kernels over IPC
