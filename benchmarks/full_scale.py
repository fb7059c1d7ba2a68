"""Full-scale benchmark: every notebook of the course on full-size files against the book.

Per notebook (chapters 01-04, solutions 5.1-5.4), on full-size synthetic files:

* **ours**: the notebook executed by ``python -m recsys_helpers run --data full``, whose
  ``timing.json`` gives each notebook's wall time and its kernel's peak memory, and whose
  ``failures.json`` says what failed.  The course runs twice: a *first run* after the load
  caches are cleared (it parses the files), then a *cached run*.
* **book**: the book's approach to the same pipeline (:data:`benchmarks.book.BOOK_PIPELINES`)
  in a process of its own, whose exact peak memory ``wait4`` reports.

It reports seconds, peak memory and the ratios book / ours, times one uncached parse of
the fantasy reviews and later loads from the caches, and checks the targets of
:data:`benchmarks.report.TARGETS`.  Parts of the book's code that would take hours are
timed on a subset and scaled linearly (``--book-pairs``, ``--auc-users``,
``--book-steps``); memory is never scaled.  About half an hour on two cores, plus the
files' generation (about 1.3 GB, into ``--data-dir``, outside the repository):

    python benchmarks/full_scale.py --data-dir DIR --out full_scale.json --markdown full_scale.md
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks import book, harness, report  # noqa: E402
from benchmarks.harness import REPO, phase, run_measured, section, tail  # noqa: E402
from recsys_helpers import cache, datasets  # noqa: E402

REVIEW_FILES = (book.FANTASY_REVIEWS, book.COMICS_REVIEWS)
#: The field sets the notebooks load from the reviews files, i.e. the caches they use.
CACHED_LOADS = [(book.FANTASY_REVIEWS, ("user_id", "book_id")),
                (book.COMICS_REVIEWS, ("user_id", "book_id", "rating")),
                (book.COMICS_REVIEWS, ("user_id", "book_id"))]
PARSE_FIELDS = ("user_id", "book_id")  # notebook 02's fields, for the uncached parse
# One load_reviews call in a fresh interpreter, so that nothing is already in memory.
LOAD_SNIPPET = """\
import json, sys, time
from recsys_helpers.datasets import load_reviews
path, fields, use_cache, result = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "1", sys.argv[4]
start = time.perf_counter()
df = load_reviews(path, fields, cache=use_cache)
json.dump({"seconds": time.perf_counter() - start, "records": len(df)}, open(result, "w"))
"""


def prepare_data(data_dir: Path, seed: int) -> dict:
    """Generate the full-size files missing from ``data_dir``; their sizes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    files = {ds.name: ds.filename for ds in datasets.REGISTRY.values()}
    missing = [name for name, f in files.items() if not (data_dir / f).is_file()]
    if missing:
        print(f"generating {', '.join(missing)} in {data_dir} (several minutes) ...")
        subprocess.run([sys.executable, "-m", "recsys_helpers", "make-sample", "--size", "full",
                        "--seed", str(seed), "--out", str(data_dir), "--only", *missing],
                       check=True, cwd=REPO)
    return {f: (data_dir / f).stat().st_size for f in files.values()}


def time_load(path: Path, fields, use_cache: bool, work: Path) -> dict:
    """One ``load_reviews`` call in a fresh process: the call's seconds, the process's
    seconds (interpreter and imports included) and its peak memory."""
    result = work / "load-result.json"
    result.unlink(missing_ok=True)
    run = run_measured([sys.executable, "-c", LOAD_SNIPPET, str(path), ",".join(fields),
                        "1" if use_cache else "0", str(result)], work / "load.log")
    if run.returncode != 0:
        raise RuntimeError(f"load_reviews failed:\n{tail(work / 'load.log')}")
    out = json.loads(result.read_text())
    return {"file": path.name, "fields": list(fields), "cache": use_cache,
            "seconds": out["seconds"], "records": out["records"],
            "process_seconds": run.seconds, "peak_rss_bytes": run.peak_rss_bytes}


def time_cached_loads(data_dir: Path, work: Path, repeat: int = 3) -> list[dict]:
    """Each cache the notebooks use, loaded ``repeat`` times; the median is kept."""
    rows = []
    for name, fields in CACHED_LOADS:
        runs = [time_load(data_dir / name, fields, True, work) for _ in range(repeat)]
        rows.append(runs[-1] | {"seconds": statistics.median(r["seconds"] for r in runs),
                                "repeats": repeat})
        print(f"  cached load of {name} [{','.join(fields)}]: {rows[-1]['seconds']:.2f} s")
    return rows


def run_notebooks(label: str, data_dir: Path, run_dir: Path) -> dict:
    """The course executed by its runner: its timing, results and failures (the runner's
    JSON files), its wall time and the exact peak of its largest process (``wait4``)."""
    from recsys_helpers.runner import Failure

    out, log = run_dir / label, run_dir / f"{label}.log"
    shutil.rmtree(out, ignore_errors=True)
    print(f"  running the course ({label}); log: {log}", flush=True)
    run = run_measured([sys.executable, "-m", "recsys_helpers", "run", "--data", "full",
                        "--data-dir", str(data_dir), "--out", str(out)], log)
    if not (out / "timing.json").is_file():
        raise RuntimeError(f"the course run wrote no {out / 'timing.json'}:\n{tail(log)}")
    failures = json.loads((out / "failures.json").read_text())
    return {"timing": json.loads((out / "timing.json").read_text()),
            "results": json.loads((out / "results.json").read_text()),
            "failures": [str(Failure(**f)) for f in failures], "returncode": run.returncode,
            "wall_seconds": run.seconds, "max_rss_any_process_bytes": run.peak_rss_bytes,
            "output": str(out)}


def run_book(stem: str, opts) -> dict:
    """The book's pipeline for ``stem`` in a worker process: its wall time (interpreter
    and imports included, as a kernel's start is in ours) with the stages timed on a
    subset scaled, and its peak memory (never scaled)."""
    work = opts.run_dir / "book"
    result, log = work / f"{stem}.stages.json", work / f"{stem}.log"
    result.unlink(missing_ok=True)
    print(f"  book's approach for {stem}; log: {log}", flush=True)
    cmd = [sys.executable, "-m", "benchmarks.full_scale", "--worker", stem, "--result",
           str(result), "--data-dir", str(opts.data_dir), "--run-dir", str(opts.run_dir),
           "--seed", str(opts.seed), "--book-pairs", str(opts.book_pairs),
           "--auc-users", str(opts.auc_users)]
    cmd += ["--book-steps", str(opts.book_steps)] if opts.book_steps else []
    run = run_measured(cmd, log)
    if run.returncode != 0 or not result.is_file():
        return {"error": f"exit status {run.returncode}:\n{tail(log)}", "log": str(log)}
    out = json.loads(result.read_text())
    return {"seconds": run.seconds + sum(s["seconds"] - s["measured_seconds"]
                                         for s in out["stages"]),
            "measured_seconds": run.seconds, "peak_rss_bytes": run.peak_rss_bytes,
            "scaled": any(s["scaled"] for s in out["stages"]), "stages": out["stages"],
            "figures": out["figures"], "log": str(log)}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, required=True,
                   help="folder of the full-size files (missing ones are generated)")
    p.add_argument("--out", type=Path, help="write the report to this JSON file")
    p.add_argument("--markdown", type=Path, help="also write the Markdown tables here")
    p.add_argument("--run-dir", type=Path, default=harness.TMP / "recsys-full-scale",
                   help="executed notebooks, logs and intermediate results")
    p.add_argument("--reuse", action="store_true",
                   help="reuse the phases already in --run-dir (resume an interrupted run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--book-steps", type=int, default=None,
                   help=f"time this many of each model's {book.NOTEBOOK_STEPS} training steps "
                        "the book's way and scale (default: all)")
    p.add_argument("--book-pairs", type=int, default=5_000,
                   help="pairs of each per-pair test MSE the book's way (scaled)")
    p.add_argument("--auc-users", type=int, default=500,
                   help="test users of the book's per-pair AUC (scaled)")
    p.add_argument("--worker", choices=list(book.BOOK_PIPELINES), help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.data_dir = harness.outside_repo(p, "--data-dir", args.data_dir)
    args.run_dir = harness.outside_repo(p, "--run-dir", args.run_dir)
    return args


def measure(args) -> tuple[dict, dict]:
    """Every phase of the benchmark (each kept in --run-dir); (measurements, loads)."""
    loads, run_dir, reuse = {}, args.run_dir, args.reuse
    section("data")
    m = {"sizes": prepare_data(args.data_dir, args.seed)}
    section("one uncached parse of the full fantasy reviews file")
    m["parse"] = phase(run_dir, "parse", reuse, lambda: time_load(
        args.data_dir / book.FANTASY_REVIEWS, PARSE_FIELDS, False, run_dir), loads)
    section("the course, first run (the load caches cleared first)")

    def first_run():
        for name in REVIEW_FILES:
            cache.clear(args.data_dir / name)
        return run_notebooks("first", args.data_dir, run_dir)

    m["first"] = phase(run_dir, "first", reuse, first_run, loads)
    section("later loads from the caches")
    m["cached_loads"] = phase(run_dir, "cached_loads", reuse,
                              lambda: time_cached_loads(args.data_dir, run_dir), loads)
    section("the course, cached run")
    m["cached"] = phase(run_dir, "cached", reuse,
                        lambda: run_notebooks("cached", args.data_dir, run_dir), loads)
    section("the book's approach, one process per notebook")
    m["book"] = {stem: phase(run_dir, f"book/{stem}", reuse,
                             lambda stem=stem: run_book(stem, args), loads)
                 for stem in book.BOOK_PIPELINES}
    return m, loads


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:  # one book pipeline, in this process
        stage = harness.Stages()
        figures = book.BOOK_PIPELINES[args.worker](args.data_dir, args, stage)
        args.result.write_text(json.dumps({"stages": stage.rows, "figures": figures},
                                          indent=2, default=float) + "\n")
        return 0
    started = time.perf_counter()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    m, loads = measure(args)
    full = report.full_report(m, harness.machine(loads), args, time.perf_counter() - started)
    text = report.markdown(full)
    print("\n" + text)
    for path, content in ((args.out, json.dumps(full, indent=2) + "\n"),
                          (args.markdown, text)):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            print(f"written to {path}")
    print(f"\n{sum(t['status'] == 'PASS' for t in full['targets'])} of {len(report.TARGETS)} "
          f"targets met ({full['elapsed_seconds'] / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
