"""Execute the course's notebooks headless (nbclient) and collect their recorded figures.

``python -m recsys_helpers run`` executes every chapter notebook and every exercise
solution notebook with the chosen data, and writes into the output folder the executed
notebooks, an HTML export of each, ``results.json`` and ``results.md`` (each figure
beside the book's, where the book reports one), and ``timing.json`` (each notebook's wall
time and the peak resident memory of its kernel).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from .results import read_results

__all__ = ["BOOK_FIGURES", "course_notebooks", "select", "run_notebook", "run_course",
           "run_command"]

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
SOLUTIONS = NOTEBOOKS / "exercises" / "solutions" / "chapter5"

#: The book's figures on the real data, by (notebook stem, figure name).
BOOK_FIGURES = {
    ("01_latent_factor_surprise", "test_mse"): 1.188,
    ("02_bpr_implicit", "n_users"): 256_088,
    ("02_bpr_implicit", "n_items"): 258_212,
    ("03_latent_factor_tensorflow", "mse_always_mean"): 1.327,
    ("exercise_5_1", "mse_always_mean"): 1.327,
    ("exercise_5_1", "mse_bias_only"): 1.000,
    ("exercise_5_2", "mse_bias_only"): 1.000,
    ("exercise_5_2", "test_mse"): 1.009,
    ("exercise_5_3", "mse_raw"): 1.009,
    ("exercise_5_3", "mse_rounded"): 1.095,
    ("exercise_5_4", "auc_sampled"): 0.794,
}


def course_notebooks() -> list[Path]:
    """Every chapter notebook, then every exercise solution notebook, in course order."""
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    solutions = sorted(SOLUTIONS.glob("exercise_*.ipynb")) if SOLUTIONS.is_dir() else []
    return chapters + solutions


def select(only) -> list[Path]:
    """The notebooks whose stem equals, or uniquely contains, each name in ``only``."""
    available = course_notebooks()
    if not only:
        return available
    chosen = []
    for name in only:
        name = Path(name).stem
        exact = [p for p in available if p.stem == name]
        matches = exact or [p for p in available if name in p.stem]
        if len(matches) != 1:
            stems = ", ".join(p.stem for p in available)
            what = "matches no notebook" if not matches else "is ambiguous"
            raise ValueError(f"{name!r} {what}; notebooks: {stems}")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


@contextlib.contextmanager
def _environment(values: dict):
    """Set environment variables for the kernels started inside the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class _PeakMemory:
    """Poll the resident set size of this process's children (the kernel) in a thread."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for child in me.children(recursive=True):
                try:
                    total += child.memory_info().rss
                except psutil.Error:  # the process ended meanwhile
                    pass
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class NotebookFailed(RuntimeError):
    """A cell raised; the message names the notebook, the cell and the error."""


def run_notebook(path: Path, timeout: int = 3600):
    """Execute one notebook in its own folder; return the executed node.

    Raises :class:`NotebookFailed` naming the failing cell (the partly executed node is
    attached as ``.notebook``).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as exc:
        index, cell = _failing_cell(nb)
        first_line = cell.source.strip().splitlines()[0] if cell is not None and cell.source.strip() else ""
        error = getattr(exc, "ename", type(exc).__name__)
        value = getattr(exc, "evalue", str(exc).strip().splitlines()[-1] if str(exc).strip() else "")
        err = NotebookFailed(
            f"{path.name}: cell {index} ({first_line[:60]!r}) failed: {error}: {value}")
        err.notebook = nb
        raise err from None
    return nb


def _failing_cell(nb):
    """(1-based index among code cells, cell) of the cell that raised or timed out."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code, 1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return k, cell
    started = [k for k, c in enumerate(code, 1) if c.get("execution_count")]
    k = started[-1] if started else 1  # a time-out leaves no error output
    return k, code[k - 1] if code else None


def _export_html(nb, target: Path) -> None:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def _results_markdown(results: dict, seconds: dict, memory: dict, data_label: str) -> str:
    lines = [
        "# Results of the course notebooks",
        "",
        f"Data: {data_label}. The book's figures were obtained on the real Goodreads files;",
        "on the bundled synthetic sample only the direction of each comparison carries over.",
        "",
        "| notebook | figure | this run | book |",
        "|---|---|---:|---:|",
    ]
    for stem, figures in results.items():
        for name, value in figures.items():
            book = BOOK_FIGURES.get((stem, name))
            shown = f"{value:.4f}" if isinstance(value, float) else f"{value:,}" if isinstance(
                value, int) and not isinstance(value, bool) else str(value)
            book_shown = "" if book is None else (f"{book:,}" if isinstance(book, int) else f"{book:.3f}")
            lines.append(f"| {stem} | {name} | {shown} | {book_shown} |")
    lines += ["", "| notebook | seconds | peak memory of the kernel (MB) |", "|---|---:|---:|"]
    lines += [f"| {stem} | {sec:.1f} | {memory[stem] / 1e6:,.0f} |" for stem, sec in seconds.items()]
    return "\n".join(lines) + "\n"


def run_course(paths, out="build/run", data=None, data_dir=None, timeout=3600,
               progress=True, inplace=False):
    """Execute ``paths``; write executed notebooks, HTML, results.json and results.md.

    With ``inplace`` each notebook that ran to the end is also saved over its source, with
    its outputs (how the committed notebooks are refreshed after a change).

    Returns ``(results, failures)``: the figures by notebook stem and the failure
    messages (empty when every notebook ran to the end).
    """
    import nbformat
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = {"RECSYS_DATA": data or os.environ.get("RECSYS_DATA") or "auto",
           "RECSYS_DATA_DIR": str(Path(data_dir).resolve()) if data_dir
           else os.environ.get("RECSYS_DATA_DIR")}
    results, seconds, memory, failures = {}, {}, {}, []
    bar = tqdm(list(paths), desc="notebooks", unit="nb", disable=not progress)
    with _environment(env):
        for path in bar:
            bar.set_postfix_str(path.stem)
            start = time.perf_counter()
            ok = True
            with _PeakMemory() as peak:
                try:
                    nb = run_notebook(path, timeout=timeout)
                except NotebookFailed as exc:
                    ok = False
                    failures.append(str(exc))
                    nb = exc.notebook
                    tqdm.write(f"FAILED {exc}", file=sys.stderr)
            seconds[path.stem] = time.perf_counter() - start
            memory[path.stem] = peak.peak
            nbformat.write(nb, out / path.name)
            if inplace and ok:
                nbformat.write(nb, path)
            _export_html(nb, out / (path.stem + ".html"))
            results[path.stem] = read_results(nb)
    label = env["RECSYS_DATA"] + (f" (folder {data_dir})" if data_dir else "")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out / "results.md").write_text(_results_markdown(results, seconds, memory, label),
                                    encoding="utf-8")
    timing = {stem: {"seconds": round(seconds[stem], 2), "peak_rss_bytes": memory[stem]}
              for stem in seconds}
    (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n", encoding="utf-8")
    return results, failures


def run_command(data=None, data_dir=None, only=None, out="build/run", timeout=3600,
                inplace=False) -> int:
    """The ``run`` command: returns the process exit code."""
    try:
        paths = select(only)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if data_dir is not None and not Path(data_dir).is_dir():
        print(f"error: --data-dir {data_dir} is not a folder", file=sys.stderr)
        return 2
    _, failures = run_course(paths, out=out, data=data, data_dir=data_dir, timeout=timeout,
                             inplace=inplace)
    print(f"wrote {out}/results.md, results.json and {len(paths)} executed notebook(s)")
    if failures:
        print(f"{len(failures)} notebook(s) failed:", file=sys.stderr)
        for f in failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print((Path(out) / "results.md").read_text(encoding="utf-8"))
    return 0
