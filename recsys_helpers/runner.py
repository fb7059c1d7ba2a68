"""Execute the course's notebooks headless (nbclient) and collect their recorded figures.

``python -m recsys_helpers run`` executes every chapter notebook and every exercise
solution notebook with the chosen data, and writes into the output folder:

* the executed notebooks, and an HTML page of each that renders its equations offline
  (a local MathJax copied beside the pages);
* ``results.json`` (the figures by notebook) and ``results.md`` (each figure with a
  readable label, beside the book's where the book reports one);
* ``timing.json`` (each notebook's wall time, the peak memory of its kernel and the
  processes it starts, and how many candidate models the package's searches trained);
* ``failures.json``: one entry per notebook that did not run to the end, with its kind:
  ``check`` (a test cell's assertion failed: the notebook ran, a figure is not what the
  check expects), ``crash`` (any other error) or ``timeout``.

Kernels are started over IPC (Unix sockets) rather than unencrypted TCP, and with
``RECSYS_PROGRESS=text``, so that stored progress bars are finished text lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from .results import read_results

__all__ = ["BOOK_FIGURES", "FIGURE_LABELS", "Failure", "NotebookFailed", "course_notebooks",
           "select", "run_notebook", "execute_notebooks", "run_command", "data_description",
           "source_digest"]

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

#: What each recorded figure is, for results.md (names from the notebooks' ``record``).
FIGURE_LABELS = {
    "test_mse": "test MSE of the model",
    "mse_always_mean": "test MSE, always predicting the mean rating",
    "mse_bias_only": "test MSE, biases only (no latent factors)",
    "mse_baseline_only": "test MSE, Surprise's BaselineOnly (biases fitted by ALS)",
    "mse_raw": "test MSE, raw predictions",
    "mse_rounded": "test MSE, predictions rounded to whole stars",
    "n_users": "users in the data",
    "n_items": "items (books) in the data",
    "auc": "AUC on held-out interactions, sampled negatives",
    "auc_sampled": "AUC, sampled negatives (the book's protocol, corrected)",
    "auc_exact": "AUC, every non-interacted item as a negative",
    "auc_popularity": "AUC of ranking by popularity (a baseline)",
    "precision_at_10": "precision@10 on held-out interactions",
    "recall_at_10": "recall@10 on held-out interactions",
    "param_change": "training moved every variable: its smallest largest change",
    "factor_term_mean_abs": "mean size of the latent factors' term in the test predictions",
    "test_mse_book_settings": "test MSE of the model with the book's settings",
    "mse_bias_only_book_settings": "test MSE, biases only, with the book's settings",
    "auc_book_settings": "AUC, sampled negatives, with the book's settings",
    "auc_popularity_exact": "AUC of ranking by popularity, every non-interacted item",
    "precision_at_10_popularity": "precision@10 of ranking by popularity (a baseline)",
    "genre_hit_rate_at_10": "share of each user's top-10 from their planted favourite genre",
    "genre_hit_rate_at_10_popularity": "the same share for the top-10 by popularity",
    "genre_hit_rate_at_10_baseline_only": "the same share for BaselineOnly's top-10 (the biases alone)",
    "ratings_per_user": "ratings per user (mean)",
    "auc_popular_negatives": "AUC on held-out interactions, negatives drawn by popularity",
    "auc_popularity_popular_negatives": "AUC of ranking by popularity, negatives drawn by popularity",
    "precision_at_10_book_settings": "precision@10 with the book's settings",
    "mse_clipped": "test MSE, predictions clipped to the rating scale",
    "mse_clipped_rounded": "test MSE, predictions clipped to the rating scale, then rounded",
    "test_mse_book_settings_lowest": "lowest test MSE on the book's-settings curve",
    "factor_term": "mean size of the factor term (stars) in the test predictions",
    "auc_validation": "validation AUC of the chosen setting",
    "auc_book_settings_validation": "validation AUC with the book's settings",
    "auc_popularity_validation": "validation AUC of popularity",
    "auc_exact_popularity": "AUC of ranking by popularity, every non-interacted item",
    "auc_sampled_spark_defaults": "AUC, sampled negatives, with Spark's default settings",
    "auc_exact_spark_defaults": "AUC, every non-interacted item, with Spark's default settings",
    "precision_at_10_spark_defaults": "precision@10 with Spark's default settings",
}

#: Figures whose name ends in this come from the taste laboratory, whatever the data.
LAB_SUFFIX = "_lab"


def figure_label(name: str) -> str:
    """What a recorded figure is, in words (laboratory figures say so)."""
    if name.endswith(LAB_SUFFIX):
        return figure_label(name[: -len(LAB_SUFFIX)]) + ", taste laboratory"
    return FIGURE_LABELS.get(name, name.replace("_", " "))


def course_notebooks() -> list[Path]:
    """Every chapter notebook, then every exercise solution notebook, in course order."""
    chapters = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    solutions = sorted(SOLUTIONS.glob("exercise_*.ipynb")) if SOLUTIONS.is_dir() else []
    return chapters + solutions


def select(only: Iterable[str] | None) -> list[Path]:
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
def _environ_set(values: dict) -> Iterator[None]:
    """Set environment variables (None: unset) for the kernels started in the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, str(v))
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


class _PeakMemory:
    """Poll the memory of this process's children (the kernel and what it starts) in a
    thread: their proportional set sizes, so that a page that forked workers share with
    the kernel is counted once, not once per process (as summed resident sets would)."""

    def __init__(self, interval: float = 0.2):
        import threading

        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        from .sandbox import pss

        me = psutil.Process()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):  # a process ended meanwhile
                self.peak = max(self.peak, pss(c.pid for c in me.children(recursive=True)))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@dataclass
class Failure:
    """Why a notebook did not run to the end (one entry of ``failures.json``)."""

    notebook: str
    kind: str  # "check", "crash" or "timeout"
    cell: int  # 1-based among code cells
    error: str
    message: str
    first_line: str

    def __str__(self) -> str:
        what = "check failed" if self.kind == "check" else "failed"
        return (f"{self.notebook}.ipynb: cell {self.cell} ({self.first_line[:60]!r}) {what}: "
                f"{self.error}: {self.message}")


class NotebookFailed(RuntimeError):
    """A cell raised or timed out; ``.failure`` says which, ``.notebook`` holds the node."""

    def __init__(self, failure: Failure, notebook):
        super().__init__(str(failure))
        self.failure, self.notebook = failure, notebook


def _failing_cell(nb) -> tuple[int, dict | None]:
    """(1-based index among code cells, cell) of the cell that raised or timed out."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for k, cell in enumerate(code, 1):
        if any(o.get("output_type") == "error" for o in cell.get("outputs", [])):
            return k, cell
    started = [k for k, c in enumerate(code, 1) if c.get("execution_count")]
    k = started[-1] if started else 1  # a time-out leaves no error output
    return k, code[k - 1] if code else None


def _is_test_cell(cell) -> bool:
    """A graded test cell (nbgrader) or a visible ``# Test:`` cell."""
    if cell is None:
        return False
    return bool(cell.metadata.get("nbgrader", {}).get("grade")) or \
        cell.source.lstrip().startswith("# Test")


def _failure(path: Path, nb, exc: Exception) -> Failure:
    from nbclient.exceptions import CellTimeoutError

    index, cell = _failing_cell(nb)
    lines = cell.source.strip().splitlines() if cell is not None else []
    error = getattr(exc, "ename", type(exc).__name__)
    text = str(exc).strip()
    message = getattr(exc, "evalue", text.splitlines()[-1] if text else "")
    if isinstance(exc, CellTimeoutError):
        kind = "timeout"
    elif error in ("AssertionError", "HiddenCheckFailed") and _is_test_cell(cell):
        kind = "check"
    else:
        kind = "crash"
    return Failure(path.stem, kind, index, error, message, lines[0] if lines else "")


def _ipc_config(folder: str):
    """Kernel settings: listen on Unix sockets (IPC) in ``folder``, not on unencrypted TCP
    ports (and so without ipykernel's warning about it)."""
    from traitlets.config import Config

    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = os.path.join(folder, "kernel")
    return config


def run_notebook(path: Path, timeout: int = 3600):
    """Execute one notebook in its own folder; return the executed node.

    Raises :class:`NotebookFailed` naming the failing cell (the partly executed node is
    attached as ``.notebook``, the structured reason as ``.failure``).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="recsys-kernel-") as sockets:
        client = NotebookClient(nb, config=_ipc_config(sockets), kernel_name="python3",
                                timeout=timeout, record_timing=False,
                                resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute()
        except (CellExecutionError, CellTimeoutError) as exc:
            raise NotebookFailed(_failure(path, nb, exc), nb) from None
    return nb


_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def strip_widgets(nb) -> None:
    """Remove widget state and widget views (keeping their text) from a notebook."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if _WIDGET_MIME in data:
                del data[_WIDGET_MIME]


def collapse_progress(nb) -> None:
    """Keep only what a terminal would show of a cell's streams: consecutive outputs of
    one stream are joined, and of a line rewritten with carriage returns (a text progress
    bar's updates) only its last state is kept."""
    for cell in nb.cells:
        outputs = []
        for out in cell.get("outputs", []):
            last = outputs[-1] if outputs else None
            if (out.get("output_type") == "stream" and last is not None
                    and last.get("output_type") == "stream" and last.get("name") == out.get("name")):
                last["text"] += out.get("text", "")
            else:
                outputs.append(out)
        for out in outputs:
            if out.get("output_type") == "stream" and "\r" in out.get("text", ""):
                lines = []
                for line in out["text"].split("\n"):
                    states = [part for part in line.split("\r") if part.strip()]
                    lines.append(states[-1] if states else line)
                out["text"] = "\n".join(lines)
        if "outputs" in cell:  # a stream left blank by a finished bar says nothing
            cell["outputs"] = [o for o in outputs if o.get("output_type") != "stream"
                               or o.get("text", "").strip()]


def _mathjax_url(out: Path) -> str:
    """Copy a local MathJax (the jupyter-server-mathjax package) beside the pages."""
    import jupyter_server_mathjax

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out / "mathjax"
    if not (target / "MathJax.js").is_file():
        shutil.copytree(source, target, dirs_exist_ok=True)
    return "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"


def _export_html(nb, target: Path, mathjax_url: str) -> None:
    from nbconvert import HTMLExporter

    # require.js serves only JavaScript outputs (widgets), which the pages do not keep:
    # an empty script instead of the CDN's, so that a page loads nothing from outside.
    exporter = HTMLExporter(mathjax_url=mathjax_url,
                            require_js_url="data:application/javascript,")
    body, _ = exporter.from_notebook_node(nb)
    target.write_text(body, encoding="utf-8")


def data_description(data: str | None = None, data_dir: str | os.PathLike | None = None) -> str:
    """Which copy of each file a run reads (``auto`` resolved), in one phrase."""
    from .datasets import REGISTRY, display_path, locate

    copies = {}
    for ds in REGISTRY.values():
        try:
            path = locate(ds.name, data=data, data_dir=data_dir, verbose=False)
        except FileNotFoundError:
            copies[ds.filename] = "missing"
            continue
        bundled = path.parent.resolve() == (ROOT / "data").resolve()
        copies[ds.filename] = ("the bundled synthetic sample" if bundled
                               else f"the full data in {display_path(path.parent)}")
    kinds = set(copies.values())
    if len(kinds) == 1:
        return kinds.pop()
    return "; ".join(f"{name}: {kind}" for name, kind in copies.items())


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def figure_rows(results: dict, names: bool = True) -> list[str]:
    """Markdown table rows ``| notebook | figure | value | the book's |`` of recorded
    figures by notebook stem (``names``: each label followed by the figure's name)."""
    rows = []
    for stem, figures in results.items():
        for name, value in figures.items():
            book = BOOK_FIGURES.get((stem, name))
            book_shown = "" if book is None else (f"{book:,}" if isinstance(book, int)
                                                  else f"{book:.3f}")
            label = f"{figure_label(name)} (`{name}`)" if names else figure_label(name)
            rows.append(f"| {stem} | {label} | {_shown(value)} | {book_shown} |")
    return rows


def _results_markdown(results: dict, seconds: dict, memory: dict, data_label: str) -> str:
    lines = ["# Results of the course notebooks", "",
             f"Data: {data_label}. The book's figures were obtained on the real Goodreads files;",
             "on the bundled synthetic sample only the direction of each comparison carries over.",
             f"Figures named `...{LAB_SUFFIX}` come from the taste laboratory (synthetic, with "
             "planted genres and tastes: `data/lab/`), whichever data the run reads.",
             "", "| notebook | figure | this run | book |", "|---|---|---:|---:|"]
    lines += figure_rows(results)
    lines += ["", "| notebook | seconds | peak memory of the kernel (MB) |", "|---|---:|---:|"]
    lines += [f"| {stem} | {sec:.1f} | {memory[stem] / 1e6:,.0f} |" for stem, sec in seconds.items()]
    return "\n".join(lines) + "\n"


def _kernel_environ(data: str | None, data_dir) -> dict:
    return {"RECSYS_DATA": data or os.environ.get("RECSYS_DATA") or "auto",
            "RECSYS_DATA_DIR": str(Path(data_dir).resolve()) if data_dir
            else os.environ.get("RECSYS_DATA_DIR"),
            "RECSYS_PROGRESS": "text"}


def _execute_one(path: Path, timeout: int) -> tuple:
    """(executed node, Failure or None, seconds, peak memory, candidate models its
    searches trained) of one notebook."""
    from .tuning import CANDIDATE_LOG, candidates_counted

    start = time.perf_counter()
    failure = None
    with tempfile.TemporaryDirectory(prefix="recsys-candidates-") as folder:
        log = os.path.join(folder, "candidates")
        with _environ_set({CANDIDATE_LOG: log}), _PeakMemory() as peak:
            try:
                nb = run_notebook(path, timeout=timeout)
            except NotebookFailed as exc:
                nb, failure = exc.notebook, exc.failure
        candidates = candidates_counted(log)
    return nb, failure, time.perf_counter() - start, peak.peak, candidates


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def execute_notebooks(paths: Iterable[Path], out: str | os.PathLike = "build/run",
                      data: str | None = None, data_dir: str | os.PathLike | None = None,
                      timeout: int = 3600, progress: bool = True,
                      inplace: bool = False) -> tuple[dict, list[Failure]]:
    """Execute ``paths``; write the executed notebooks, HTML pages and the JSON and
    Markdown reports into ``out`` (see the module's documentation).

    With ``inplace`` each notebook that ran to the end is also saved over its source, with
    its outputs and without widget state (how the committed notebooks are refreshed).

    Returns ``(results, failures)``: the figures by notebook stem (also those a failed
    notebook recorded before it stopped) and the failures, in order.
    """
    import nbformat
    from tqdm.auto import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mathjax = _mathjax_url(out)
    results, seconds, memory, candidates, failures = {}, {}, {}, {}, []
    paths_run = list(paths)
    bar = tqdm(paths_run, desc="notebooks", unit="nb", disable=not progress)
    with _environ_set(_kernel_environ(data, data_dir)):
        for path in bar:
            bar.set_postfix_str(path.stem)
            (nb, failure, seconds[path.stem], memory[path.stem],
             candidates[path.stem]) = _execute_one(path, timeout)
            strip_widgets(nb)
            collapse_progress(nb)
            if failure is not None:
                failures.append(failure)
                tqdm.write(f"FAILED {failure}", file=sys.stderr)
            nbformat.write(nb, out / path.name)
            if inplace and failure is None:
                nbformat.write(nb, path)
            _export_html(nb, out / (path.stem + ".html"), mathjax)
            results[path.stem] = read_results(nb)
    label = data_description(data, data_dir)
    _write_json(out / "results.json", results)
    (out / "results.md").write_text(_results_markdown(results, seconds, memory, label),
                                    encoding="utf-8")
    _write_json(out / "timing.json", {s: {"seconds": round(seconds[s], 2),
                                          "peak_rss_bytes": memory[s],
                                          "candidates": candidates[s]} for s in seconds})
    _write_json(out / "failures.json", [asdict(f) for f in failures])
    _record_run(out, paths_run, label, failures)
    return results, failures


def source_digest(path: Path) -> str:
    """A digest of a notebook's cell sources (not its outputs): it changes when the
    notebook does, not when it is executed again."""
    import hashlib

    import nbformat

    nb = nbformat.read(path, as_version=4)
    text = "\x00".join(f"{c.cell_type}\x01{c.source}" for c in nb.cells)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_run(out: Path, paths: list[Path], label: str, failures: list) -> None:
    """``run.json``: the data each executed notebook read and a digest of its source, so
    that ``book`` can tell a fresh run from a stale one (entries of earlier runs of other
    notebooks into the same folder are kept)."""
    try:
        meta = json.loads((out / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    if meta.get("data") != label:
        meta = {}
    failed = {f.notebook for f in failures}
    sources = dict(meta.get("sources", {}))
    sources.update({p.stem: source_digest(p) for p in paths})
    old_failed = set(meta.get("failed", [])) - {p.stem for p in paths}
    _write_json(out / "run.json", {"data": label, "sources": sources,
                                   "failed": sorted(old_failed | failed)})


def _check_arguments(only, out, data_dir) -> list[Path]:
    """The notebooks to run; raises ValueError with a message for the user."""
    paths = select(only)
    if data_dir is not None and not Path(data_dir).is_dir():
        raise ValueError(f"--data-dir {data_dir} is not a folder")
    if Path(out).exists() and not Path(out).is_dir():
        raise ValueError(f"--out {out} is a file; give a folder (it is created if missing)")
    return paths


def _report(failures: list[Failure], results: dict, out: Path, n: int) -> None:
    checks = [f for f in failures if f.kind == "check"]
    crashes = [f for f in failures if f.kind != "check"]
    if checks:
        print(f"{len(checks)} check(s) failed (the notebook ran; a figure is not what its "
              "test expects):", file=sys.stderr)
        for f in checks:
            print(f"  {f}\n    figures recorded before it: {results.get(f.notebook, {})}",
                  file=sys.stderr)
    if crashes:
        print(f"{len(crashes)} notebook(s) crashed or timed out:", file=sys.stderr)
        for f in crashes:
            print(f"  {f}", file=sys.stderr)
    print(f"wrote {n} executed notebook(s) and their HTML pages, results.md, results.json, "
          f"timing.json and failures.json to {out}/")


def run_command(data: str | None = None, data_dir: str | os.PathLike | None = None,
                only: Iterable[str] | None = None, out: str | os.PathLike = "build/run",
                timeout: int = 3600, inplace: bool = False) -> int:
    """The ``run`` command: 0 when every notebook ran to the end, 1 when one failed (a
    check or a crash; see ``failures.json``), 2 for wrong arguments."""
    try:
        paths = _check_arguments(only, out, data_dir)
        print(f"Data: {data_description(data, data_dir)}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results, failures = execute_notebooks(paths, out=out, data=data, data_dir=data_dir,
                                          timeout=timeout, inplace=inplace)
    if not failures:
        print((Path(out) / "results.md").read_text(encoding="utf-8"))
    _report(failures, results, Path(out), len(paths))
    return 1 if failures else 0
