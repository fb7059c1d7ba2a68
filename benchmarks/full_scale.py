"""Full-scale benchmark: every notebook of the course on full-size files against the book.

Per notebook: *ours*, run by ``python -m recsys_helpers run --data full`` (its
``timing.json`` and ``failures.json``), first with the load caches cleared, then cached;
*book*, the book's approach (:data:`benchmarks.book.BOOK_PIPELINES`) in a process of its
own.  Seconds, peak memory, the ratios book / ours, an uncached parse, the cached loads
and the targets.  About half an hour, plus generating the files (1.3 GB, in
``--data-dir``, outside the repository); see benchmarks/README.md.

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

#: The field sets the notebooks load from the reviews files, i.e. the caches they use.
CACHED_LOADS = [(book.FANTASY_REVIEWS, ("user_id", "book_id")),
                (book.COMICS_REVIEWS, ("user_id", "book_id", "rating")),
                (book.COMICS_REVIEWS, ("user_id", "book_id"))]
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
    run = run_measured([sys.executable, "-c", LOAD_SNIPPET, str(path), ",".join(fields),
                        "1" if use_cache else "0", str(work / "load-result.json")],
                       work / "load.log", work / "load-result.json")
    if run.returncode != 0:
        raise RuntimeError(f"load_reviews failed:\n{tail(work / 'load.log')}")
    return {"file": path.name, "fields": list(fields), "cache": use_cache, **run.result,
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
    """The course run by its runner (the ``first`` run after clearing the load caches):
    its JSON files, its wall time and the exact peak of its largest process."""
    from recsys_helpers.runner import Failure

    if label == "first":
        for name in (book.FANTASY_REVIEWS, book.COMICS_REVIEWS):
            cache.clear(data_dir / name)
    out, log = run_dir / label, run_dir / f"{label}.log"
    shutil.rmtree(out, ignore_errors=True)
    print(f"  running the course ({label}); log: {log}", flush=True)
    run = run_measured([sys.executable, "-m", "recsys_helpers", "run", "--data", "full",
                        "--data-dir", str(data_dir), "--out", str(out)], log)
    if not (out / "timing.json").is_file():
        raise RuntimeError(f"the course run wrote no {out / 'timing.json'}:\n{tail(log)}")
    timing, results, failures = (json.loads((out / f"{n}.json").read_text())
                                 for n in ("timing", "results", "failures"))
    return {"timing": timing, "results": results,
            "failures": [str(Failure(**f)) for f in failures], "returncode": run.returncode,
            "wall_seconds": run.seconds, "max_rss_any_process_bytes": run.peak_rss_bytes,
            "output": str(out)}


def run_book(stem: str, opts) -> dict:
    """The book's pipeline for ``stem`` in a worker process: its wall time (interpreter
    and imports included, as a kernel's start is in ours) with the stages timed on a
    subset scaled, and its peak memory (never scaled)."""
    result, log = (opts.run_dir / "book" / f"{stem}.{ext}" for ext in ("stages.json", "log"))
    print(f"  book's approach for {stem}; log: {log}", flush=True)
    options = [f"--{k.replace('_', '-')}={v}" for k, v in vars(opts).items() if v is not None
               and k in ("data_dir", "run_dir", "seed", "book_pairs", "auc_users", "book_steps")]
    run = run_measured([sys.executable, "-m", "benchmarks.full_scale", "--worker", stem,
                        "--result", str(result), *options], log, result)
    if run.returncode != 0 or not run.result:
        return {"error": f"exit status {run.returncode}:\n{tail(log)}", "log": str(log)}
    stages = run.result["stages"]
    return {"seconds": run.seconds + sum(s["seconds"] - s["measured_seconds"] for s in stages),
            "measured_seconds": run.seconds, "peak_rss_bytes": run.peak_rss_bytes,
            "scaled": any(s["scaled"] for s in stages), "stages": stages,
            "figures": run.result["figures"], "log": str(log)}


def parse_args(argv=None) -> argparse.Namespace:
    """The options; the data and run folders outside the repository."""
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
    loads, run_dir, data_dir = {}, args.run_dir, args.data_dir
    section("data")
    m = {"sizes": prepare_data(data_dir, args.seed)}
    for name, title, compute in (
            ("parse", "one uncached parse of the full fantasy reviews file",
             lambda: time_load(data_dir / book.FANTASY_REVIEWS, ("user_id", "book_id"), False,
                               run_dir)),  # notebook 02's fields
            ("first", "the course, first run (the load caches cleared first)",
             lambda: run_notebooks("first", data_dir, run_dir)),
            ("cached_loads", "later loads from the caches",
             lambda: time_cached_loads(data_dir, run_dir)),
            ("cached", "the course, cached run",
             lambda: run_notebooks("cached", data_dir, run_dir))):
        section(title)
        m[name] = phase(run_dir, name, args.reuse, compute, loads)
    section("the book's approach, one process per notebook")
    m["book"] = {stem: phase(run_dir, f"book/{stem}", args.reuse,
                             lambda stem=stem: run_book(stem, args), loads)
                 for stem in book.BOOK_PIPELINES}
    return m, loads


def main(argv=None) -> int:
    """The benchmark and its report (``--worker``: one book pipeline, in this process)."""
    args = parse_args(argv)
    if args.worker:
        stages = harness.Stages()
        figures = book.BOOK_PIPELINES[args.worker](args.data_dir, args, stages)
        harness.write(args.result, {"stages": stages, "figures": figures})
        return 0
    started = time.perf_counter()
    args.run_dir.mkdir(parents=True, exist_ok=True)
    m, loads = measure(args)
    full = report.full_report(m, harness.machine(loads), args, time.perf_counter() - started)
    text = report.markdown(full)
    print("\n" + text)
    for path, content in ((args.out, full), (args.markdown, text)):
        if path:
            harness.write(path, content)
            print(f"written to {path}")
    print(f"\n{sum(t['status'] == 'PASS' for t in full['targets'])} of {len(report.TARGETS)} "
          f"targets met ({full['elapsed_seconds'] / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
