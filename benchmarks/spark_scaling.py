"""How training cost grows with the data: notebook 3's TensorFlow pipeline against Spark ALS.

On full-size synthetic rating files of 1x, 2x, 4x and 8x the fantasy file's 3,424,641
interactions, this script measures, for each size and each engine, in a fresh process:

* **(a) TensorFlow, one process** -- notebook 3's pipeline: the course's loader reads the
  TSV, the interactions are indexed and split 90/10, and the latent factor model
  (``recsys_helpers.models.LatentFactorModel``, K=5, Adam(0.1), batches of 50,000) trains
  for ``--epochs`` epochs of the training split (an epoch: as many batches as it takes to
  draw each training interaction once on average);
* **(b) Spark ALS, local mode** -- the TSV converted once to Parquet
  (``recsys_helpers.spark.to_parquet``, timed apart), read by Spark, and explicit ALS
  (rank 5, ``maxIter`` = ``--epochs`` sweeps) fitted on every core, with the driver's
  memory fixed by ``--spark-memory``.

Training time is the fit alone (data already in memory); *per interaction* divides it by
the training interactions.  Peak memory is each process's high-water mark of resident
memory (``VmHWM``, exact, read before it exits): for (a) the Python process, for (b) the
Python driver plus Spark's Java process.  The growth of (a)'s peak with the size is fitted
by a straight line (least squares), from which the size at which (a) would exceed the
machine's memory (``--machine-gb``) is extrapolated; a measured excess is reported as
measured.

The 2x-8x files tile the 1x file with new users: copy k of user ``u`` is user ``u~k``,
rating the same books the same way, so the users grow with the size and the catalogue
does not.

Usage::

    python benchmarks/spark_scaling.py --dir DIR --scales 1 2 4 8 --out spark_scaling.json \\
        --plot benchmarks/spark_scaling.png

``DIR`` (outside the repository) receives the files (1x: ``python -m recsys_helpers
make-sample --size full --only fantasy_tsv``; about 170 MB per 1x).  It prints a
markdown table and writes the JSON and the log-log plot.  It is a report, not a test:
seconds on a shared machine vary; the ratios and the growth are what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from benchmarks import harness  # noqa: E402
from benchmarks.harness import timed  # noqa: E402

TSV = "goodreads_fantasy.tsv"
BATCH_SIZE = 50_000
RANK = 5
SEED = 0


# --------------------------------------------------------------------------- the files


def make_files(root: Path, scales: list[int]) -> dict[int, Path]:
    """One folder per scale holding ``goodreads_fantasy.tsv``; existing ones are kept."""
    base = root / "x1"
    if not (base / TSV).is_file():
        subprocess.run([sys.executable, "-m", "recsys_helpers", "make-sample", "--size", "full",
                        "--only", "fantasy_tsv", "--out", str(base)], check=True)
    folders = {}
    for k in scales:
        folder = root / f"x{k}"
        target = folder / TSV
        if k > 1 and not target.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            lines = (base / TSV).read_bytes().splitlines(keepends=True)
            tmp = target.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                out.writelines(lines)
                for copy in range(1, k):
                    suffix = f"~{copy}\t".encode()
                    out.writelines(line.replace(b"\t", suffix, 1) for line in lines)
            os.replace(tmp, target)
        folders[k] = folder
    return folders


# --------------------------------------------------------------------------- the workers


def _vm_hwm(pid: int | str = "self") -> int:
    """Peak resident memory of a process in bytes (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/<pid>/status")


def worker_tensorflow(folder: Path, epochs: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from recsys_helpers.datasets import load
    from recsys_helpers.interactions import Interactions, rating_batches, train_test_split
    from recsys_helpers.models import LatentFactorModel, fit, make_train_step

    def read():
        df = load("fantasy_tsv", data="full", data_dir=folder, verbose=False)
        data = Interactions.from_frame(df, user="user", item="item")
        del df
        return data, *train_test_split(data, test_size=0.1, seed=SEED)

    load_seconds, (data, train, test) = timed(read)
    mu = float(train.rating.mean())
    model = LatentFactorModel(mu, data.n_users, data.n_items, RANK, 1e-5, seed=SEED)
    step = make_train_step(model, tf.keras.optimizers.Adam(0.1))
    steps = epochs * int(np.ceil(len(train) / BATCH_SIZE))
    batches = rating_batches(train, BATCH_SIZE, SEED)
    fit(step, batches, 1, progress=False)  # compile the step (XLA) outside the timing
    seconds, _ = timed(lambda: fit(step, batches, steps, progress=False))
    test_mse = float(np.mean((model.predict(test.user, test.item).numpy() - test.rating) ** 2))
    return {"train_interactions": len(train), "users": data.n_users, "items": data.n_items,
            "load_seconds": load_seconds, "train_seconds": seconds, "steps": steps,
            "test_mse": test_mse, "peak_bytes": _vm_hwm()}


def worker_spark(folder: Path, epochs: int, memory: str) -> dict:
    from pyspark.ml.recommendation import ALS

    from recsys_helpers.spark import read_parquet, spark_session, to_parquet

    spark = spark_session(app_name="spark-scaling", master="local[*]", memory=memory,
                          verbose=False)
    convert_seconds, path = timed(lambda: to_parquet("fantasy_tsv", data="full",
                                                     data_dir=folder, verbose=False))
    frame = read_parquet(spark, path)
    train, test = frame.randomSplit([0.9, 0.1], seed=SEED)
    train = train.cache()
    n_train = train.count()  # read the data before the timing starts
    blocks = spark.sparkContext.defaultParallelism
    als = ALS(rank=RANK, regParam=0.1, maxIter=epochs, seed=SEED, numUserBlocks=blocks,
              numItemBlocks=blocks, userCol="user", itemCol="item", ratingCol="rating",
              coldStartStrategy="drop")

    def fit():
        model = als.fit(train)
        model.userFactors.count()
        return model

    seconds, model = timed(fit)
    scored = model.transform(test)
    test_mse = scored.selectExpr("avg(pow(prediction - rating, 2))").first()[0]
    java_peak = _vm_hwm(spark.sparkContext._gateway.proc.pid)
    spark.stop()
    return {"train_interactions": n_train, "convert_seconds": convert_seconds,
            "train_seconds": seconds, "sweeps": epochs, "test_mse": float(test_mse),
            "peak_bytes": java_peak + _vm_hwm(), "java_peak_bytes": java_peak,
            "driver_memory": memory}


def measure(engine: str, folder: Path, args) -> dict:
    """Run one measurement in a fresh process (niced: the machine is shared)."""
    result, log = folder / f"{engine}.result.json", folder / f"{engine}.log"
    run = harness.run_measured(["nice", "-n", "10", sys.executable, "-m",
                                "benchmarks.spark_scaling", "--worker", engine, "--data",
                                str(folder), "--epochs", str(args.epochs), "--spark-memory",
                                args.spark_memory, "--result", str(result)], log, result)
    if run.returncode != 0 or run.result is None:
        return {"error": harness.tail(log, 1).splitlines() or ["failed"],
                "wall_seconds": run.seconds}
    return run.result | {"wall_seconds": run.seconds}


# --------------------------------------------------------------------------- the report


def _growth(points: list[tuple[float, float]]):
    """Least-squares line ``y = a + b x`` through ``(x, y)`` points (None with fewer than 2)."""
    import numpy as np

    if len(points) < 2:
        return None
    x, y = np.array(points, dtype=float).T
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b)


def report(results: dict, machine_gb: float) -> str:
    rows = ["| size | interactions (train) | TF train s | TF µs / interaction | TF peak GB | "
            "Spark train s | Spark µs / interaction | Spark peak GB | Spark / TF time |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for k in sorted(results, key=int):
        tf, sp = results[k].get("tensorflow", {}), results[k].get("spark", {})
        n = tf.get("train_interactions") or sp.get("train_interactions") or 0

        def cell(r, key, scale=1.0, fmt="{:.1f}"):
            return fmt.format(r[key] * scale) if key in r else "—"

        ratio = (f"{sp['train_seconds'] / tf['train_seconds']:.1f}×"
                 if "train_seconds" in sp and "train_seconds" in tf else "—")
        rows.append(
            f"| {k}× | {n:,} | {cell(tf, 'train_seconds')} | "
            f"{cell(tf, 'train_seconds', 1e6 / max(n, 1), '{:.2f}')} | "
            f"{cell(tf, 'peak_bytes', 1e-9, '{:.2f}')} | {cell(sp, 'train_seconds')} | "
            f"{cell(sp, 'train_seconds', 1e6 / max(n, 1), '{:.2f}')} | "
            f"{cell(sp, 'peak_bytes', 1e-9, '{:.2f}')} | {ratio} |")
    lines = ["\n".join(rows), ""]
    tf_points = [(r["tensorflow"]["train_interactions"], r["tensorflow"]["peak_bytes"] / 1e9)
                 for r in results.values() if "peak_bytes" in r.get("tensorflow", {})]
    over = [n for n, gb in tf_points if gb > machine_gb]
    line = _growth(tf_points)
    if over:
        lines.append(f"(a) exceeded {machine_gb:g} GB (measured) at {min(over):,} training "
                     "interactions.")
    elif line and line[1] > 0:
        a, b = line
        limit = (machine_gb - a) / b
        one_x = min(n for n, _ in tf_points)
        lines.append(
            f"(a) TensorFlow's peak memory grows by {b * 1e6:.2f} GB per million training "
            f"interactions (least squares over {len(tf_points)} measured sizes, from "
            f"{min(n for n, _ in tf_points):,} to {max(n for n, _ in tf_points):,}); "
            f"extrapolated, one process would exceed {machine_gb:g} GB at about "
            f"{limit / 1e6:,.0f} million interactions ({limit / one_x:.0f}× the smallest size "
            "measured) — extrapolated, not measured.")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for engine, label, color in (("tensorflow", "(a) TensorFlow, one process", "C0"),
                                 ("spark", "(b) Spark ALS, local mode", "C1")):
        pts = sorted((r[engine]["train_interactions"], r[engine]["train_seconds"],
                      r[engine]["peak_bytes"] / 1e9)
                     for r in results.values() if "train_seconds" in r.get(engine, {}))
        if not pts:
            continue
        n, s, gb = zip(*pts)
        axes[0].plot(n, s, "o-", color=color, label=label)
        axes[1].plot(n, gb, "o-", color=color, label=label)
    for ax, ylabel in ((axes[0], "training seconds"), (axes[1], "peak memory (GB)")):
        ax.set(xscale="log", yscale="log", xlabel="training interactions", ylabel=ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="small")
    fig.suptitle("Cost against size (log-log): synthetic fantasy ratings, 2-core machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, help="folder for the synthetic files (outside the repo)")
    p.add_argument("--scales", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--epochs", type=int, default=10,
                   help="TensorFlow epochs and ALS sweeps (default 10, Spark's maxIter)")
    p.add_argument("--spark-memory", default="8g", help="Spark driver memory (default 8g)")
    p.add_argument("--machine-gb", type=float, default=24.0)
    p.add_argument("--engines", nargs="+", default=["tensorflow", "spark"])
    p.add_argument("--out", type=Path, default=Path("spark_scaling.json"))
    p.add_argument("--plot", type=Path)
    p.add_argument("--worker", choices=["tensorflow", "spark"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        harness.write(args.result, worker_tensorflow(args.data, args.epochs)
                      if args.worker == "tensorflow"
                      else worker_spark(args.data, args.epochs, args.spark_memory))
        return 0
    if args.dir is None:
        p.error("--dir is required")
    args.dir = harness.outside_repo(p, "--dir", args.dir)
    results = json.loads(args.out.read_text()).get("results", {}) if args.out.is_file() else {}
    loads = {}
    for k, folder in make_files(args.dir, args.scales).items():
        for engine in args.engines:
            print(f"{k}x, {engine} ...", flush=True)
            r, loads[f"{k}x {engine}"] = harness.load_during(measure, engine, folder, args)
            results.setdefault(str(k), {})[engine] = r
            print("   ", json.dumps(r), flush=True)
            args.out.write_text(json.dumps({"machine": harness.machine(loads),
                                            "epochs": args.epochs, "results": results}, indent=1))
    print(report(results, args.machine_gb))
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
