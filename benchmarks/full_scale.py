"""Full-scale benchmark: the course's notebooks on full-size files against the book's code.

For every notebook of the course (chapters 01-04 and the exercise solutions 5.1-5.4) this
script measures, on full-size files:

* **ours** -- the notebook itself, executed headless by ``python -m recsys_helpers run
  --data full`` (which writes each notebook's wall time and its kernel's peak resident
  memory to ``timing.json``).  The course is run twice: the *first run* parses the files
  and writes the load caches (they are deleted beforehand), the *cached run* is the
  course as a student runs it every later time.
* **book** -- the book's approach to the same pipeline on the same file, in a process of
  its own: ``eval`` of every line, Python dicts and lists, the ``lil_matrix`` loop,
  training batches built by a ``random.choice`` loop with eager TensorFlow steps, one
  ``predict`` call per (user, item) pair.  Its peak memory is the process's maximum
  resident set size as reported by the kernel when it ends (``wait4``), which is exact.

and reports per notebook the seconds and peak memory of both, and their ratios
``book / ours`` (above 1: ours is faster, or needs less memory).  It also times one
uncached parse of the full fantasy reviews file and later loads from the caches, and
checks the targets of the full-scale issue (see :data:`TARGETS`).

Usage
-----
::

    python benchmarks/full_scale.py --data-dir DIR --out full_scale.json --markdown full_scale.md

``DIR`` holds (or receives) the three full-size files; missing ones are generated with
``python -m recsys_helpers make-sample --size full`` (a few minutes, about 1.3 GB).
Both folders, ``DIR`` and ``--run-dir`` (executed notebooks, logs), must be outside the
repository.  Expect about half an hour on two cores, plus the files' generation.  The
script exits with status 0 unless it could not run at all: it is a report, not a test.

Where the book's code would take too long, a part of it is timed on a subset and scaled
linearly, and the output says so (``scaled``): the per-pair predictions of a test MSE
(``--book-pairs`` pairs), the per-pair AUC (``--auc-users`` users) and, if asked, the
training steps (``--book-steps``).  Memory is never scaled: the parts timed on a subset
hold no state that grows with their size, and everything else runs in full (in
particular the whole fantasy file is parsed with ``eval`` for notebook 02).

The pieces of the book's code that ``bench.py`` already measures (its loader, the
``lil_matrix`` loop, the training steps, the AUC loop) are imported from there.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import bench  # the book's code and the shared helpers of the short benchmark, beside this file
from tqdm import tqdm

from recsys_helpers import datasets

REPO = bench.REPO
SCRIPT = Path(__file__).resolve()
FANTASY_TSV = datasets.get_dataset("fantasy_tsv").filename
FANTASY_REVIEWS = datasets.get_dataset("fantasy_reviews").filename
COMICS_REVIEWS = datasets.get_dataset("comics_reviews").filename
REVIEW_FILES = (FANTASY_REVIEWS, COMICS_REVIEWS)

#: Training steps of each model in notebooks 03, 04 and the exercises (their ``STEPS``).
NOTEBOOK_STEPS = 100
#: The field sets the notebooks load from the reviews files, i.e. the load caches they use.
CACHED_LOADS = [(FANTASY_REVIEWS, ("user_id", "book_id")),
                (COMICS_REVIEWS, ("user_id", "book_id", "rating")),
                (COMICS_REVIEWS, ("user_id", "book_id"))]
PARSE_FIELDS = ("user_id", "book_id")  # notebook 02's fields, for the uncached parse

GB = 1e9  # memory is shown in GB of 10^9 bytes; the targets are compared in the same unit

#: The issue's targets: (key, description, limit, unit).  ``ratio`` means a fraction.
TARGETS = [
    ("bpr_memory", "peak memory of the whole 02_bpr_implicit notebook, full fantasy reviews "
     "(the larger of its two runs)", 3 * GB, "bytes"),
    ("bpr_memory_vs_book", "02_bpr_implicit peak memory as a fraction of the book's approach "
     "(the larger of its two runs)", 1 / 3, "ratio"),
    ("parse", "one uncached parse of the full fantasy reviews file", 120.0, "seconds"),
    ("cached_load", "slowest later load from a cache (any file and field set used)",
     5.0, "seconds"),
    ("course_cached", "the whole course on full-size files, cached", 15 * 60.0, "seconds"),
]


# --------------------------------------------------------------------------- processes


def run_measured(cmd: list[str], log: Path) -> SimpleNamespace:
    """Run ``cmd`` with its output going to ``log``, and measure it.

    Returns
    -------
    namespace with ``seconds`` (wall time), ``returncode`` and ``peak_rss_bytes``: the
    largest resident set size of the process or of any descendant it waited for, as the
    kernel reports it when the process ends (``wait4``; exact, not sampled).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: tell Popen
    return SimpleNamespace(seconds=time.perf_counter() - start, returncode=proc.returncode,
                           peak_rss_bytes=usage.ru_maxrss * 1024)  # Linux: kilobytes


def tail(path: Path, n: int = 15) -> str:
    """The last ``n`` lines of a log (progress bars' carriage returns as new lines)."""
    text = path.read_text(errors="replace").replace("\r", "\n")
    return "\n".join([line for line in text.splitlines() if line.strip()][-n:])


class LoadSampler:
    """Sample the 1-minute load average every few seconds while a block runs.

    On a machine shared with other work it shows how busy the CPUs were: the benchmark
    itself runs one busy process at a time (a load of about 1).
    """

    def __init__(self, interval: float = 5.0):
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self):
        self.samples.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"mean": statistics.fmean(self.samples), "max": max(self.samples),
                "samples": len(self.samples)}


def cached_phase(run_dir: Path, name: str, reuse: bool, compute, loads: dict):
    """Return the result of phase ``name``, stored in ``run_dir/<name>.json``: with
    ``reuse``, the stored one if there is one (to resume an interrupted benchmark);
    else ``compute()``, stored.

    The load average while the phase ran is stored with it and put in ``loads[name]``.
    """
    path = run_dir / f"{name}.json"
    if reuse and path.is_file():
        print(f"  reusing {path}")
        stored = json.loads(path.read_text())
    else:
        with LoadSampler() as sampler:
            value = compute()
        stored = {"value": value, "load_average": sampler.summary()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(stored, indent=2) + "\n")
    loads[name] = stored["load_average"]
    return stored["value"]


# --------------------------------------------------------------------------- data


def prepare_data(data_dir: Path, seed: int) -> dict:
    """Generate the full-size files missing from ``data_dir``; return their sizes.

    ``make_sample`` writes each file under a temporary name and renames it when complete,
    so a file that exists is whole.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    missing = [name for name in datasets.REGISTRY
               if not (data_dir / datasets.get_dataset(name).filename).is_file()]
    if missing:
        print(f"generating the full-size synthetic files {', '.join(missing)} in {data_dir} "
              "(several minutes) ...", flush=True)
        subprocess.run([sys.executable, "-m", "recsys_helpers", "make-sample", "--size", "full",
                        "--seed", str(seed), "--out", str(data_dir), "--only", *missing],
                       check=True, cwd=REPO)
    return {f: (data_dir / f).stat().st_size for f in (FANTASY_TSV, *REVIEW_FILES)}


def remove_load_caches(data_dir: Path) -> list[str]:
    """Delete the load caches written beside the reviews files, so that the next run
    parses them.  (``load_reviews`` falls back to a user cache folder only when the data
    folder is not writable; this folder is, since the files may be generated into it.)"""
    removed = []
    for name in REVIEW_FILES:
        for cache in data_dir.glob(f".{name}.*.cache.npz"):
            cache.unlink()
            removed.append(cache.name)
    return removed


# --------------------------------------------------------------------------- loading

# Run in a fresh interpreter, so that nothing is already imported or in memory.
LOAD_SNIPPET = """\
import json, sys, time
from recsys_helpers.datasets import load_reviews
path, fields, cache, result = sys.argv[1], sys.argv[2].split(","), sys.argv[3] == "cache", sys.argv[4]
start = time.perf_counter()
df = load_reviews(path, fields, cache=cache)
seconds = time.perf_counter() - start
json.dump({"seconds": seconds, "records": len(df)}, open(result, "w"))
"""


def time_load(path: Path, fields, cache: bool, work: Path) -> dict:
    """Time one ``load_reviews`` call in a fresh process.

    ``seconds`` is the call alone; ``process_seconds`` adds the interpreter's start and
    the imports; ``peak_rss_bytes`` is the process's peak memory.
    """
    result = work / "load-result.json"
    result.unlink(missing_ok=True)
    run = run_measured([sys.executable, "-c", LOAD_SNIPPET, str(path), ",".join(fields),
                        "cache" if cache else "nocache", str(result)], work / "load.log")
    if run.returncode != 0:
        raise RuntimeError(f"load_reviews failed:\n{tail(work / 'load.log')}")
    out = json.loads(result.read_text())
    return {"file": path.name, "fields": list(fields), "cache": cache,
            "seconds": out["seconds"], "records": out["records"],
            "process_seconds": run.seconds, "peak_rss_bytes": run.peak_rss_bytes}


def time_cached_loads(data_dir: Path, work: Path, repeat: int = 3) -> list[dict]:
    """Each cache the notebooks use, loaded ``repeat`` times (a fresh process each time);
    the median is kept.  The first run of the course has written the caches."""
    rows = []
    for name, fields in CACHED_LOADS:
        runs = [time_load(data_dir / name, fields, True, work) for _ in range(repeat)]
        row = runs[-1] | {"seconds": statistics.median(r["seconds"] for r in runs),
                          "repeats": repeat}
        print(f"  cached load of {name} [{','.join(fields)}]: {row['seconds']:.2f} s "
              f"(median of {repeat})")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- ours


def run_course(label: str, data_dir: Path, run_dir: Path) -> dict:
    """Execute every notebook with ``python -m recsys_helpers run --data full``.

    Returns the runner's ``timing.json`` and ``results.json``, the failures it reported
    (notebook, cell, error), the command's wall time, and the exact peak memory of the
    largest process of the run (``wait4``: the runner or one of its kernels).
    """
    out = run_dir / label
    shutil.rmtree(out, ignore_errors=True)
    log = run_dir / f"{label}.log"
    print(f"  running the course ({label}); log: {log}", flush=True)
    run = run_measured([sys.executable, "-m", "recsys_helpers", "run", "--data", "full",
                        "--data-dir", str(data_dir), "--out", str(out)], log)
    timing_file = out / "timing.json"
    if not timing_file.is_file():
        raise RuntimeError(f"the course run wrote no {timing_file}:\n{tail(log)}")
    # The runner prints "FAILED <notebook>.ipynb: cell N ('...') failed: Error: message".
    text = log.read_text(errors="replace").replace("\r", "\n")
    failures = sorted({line.strip()[len("FAILED "):] for line in text.splitlines()
                       if line.strip().startswith("FAILED ")})
    results_file = out / "results.json"
    return {
        "timing": json.loads(timing_file.read_text()),
        "results": json.loads(results_file.read_text()) if results_file.is_file() else {},
        "failures": failures,
        "returncode": run.returncode,
        "wall_seconds": run.seconds,
        "max_rss_any_process_bytes": run.peak_rss_bytes,
        "output": str(out),
    }


# --------------------------------------------------------------------------- book: tools
# Everything from here to the "report" section runs in a worker process
# (``--worker NOTEBOOK``), one per notebook, so that its peak memory is its own.


class Stages:
    """The timed stages of one book pipeline.

    ``with stages("name"):`` times a block.  A block that runs ``done`` of ``total``
    units of work (steps, pairs, users) is scaled linearly to the whole, and marked with
    the ``kind`` of work it samples.
    """

    def __init__(self):
        self.rows = []

    @contextlib.contextmanager
    def __call__(self, name: str, done: int = 1, total: int = 1, kind: str | None = None):
        print(f"-- {name}", flush=True)
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        self.rows.append({"stage": name, "measured_seconds": seconds,
                          "seconds": seconds * total / done, "scaled": done < total,
                          "kind": kind or name,
                          "timed_on": f"{done:,} of {total:,}" if done < total else "all"})


def book_mse(predictions, labels) -> float:
    """The book's ``MSE``: a list comprehension of squared differences."""
    differences = [(x - y) ** 2 for x, y in zip(predictions, labels)]
    return sum(differences) / len(differences)


def book_predict_rating(model, u: int, i: int):
    """The book's ``LatentFactorModel.predict``: one (user, item) pair, eagerly.  For a
    model without latent factors (K = 0) it is ``LatentFactorModelBiasOnly.predict``."""
    tf = bench.tensorflow()
    p = model.alpha + model.beta_u[u] + model.beta_i[i]
    if model.gamma_u.shape[1]:
        p += tf.tensordot(model.gamma_u[u], model.gamma_i[i], 1)
    return p


def book_comics(data_dir: Path, rnd: random.Random, stage: Stages) -> SimpleNamespace:
    """The book's reading of the comics file and its data structures (In [22]-[27]).

    Every line is parsed by ``eval``; the (user, item, rating) tuples are kept with the
    ID dictionaries, shuffled, split 90/10, and the training items listed per user.
    """
    with stage("parse: eval per line, (user, item, rating) tuples, ID dicts"):
        user_index, item_index, interactions = {}, {}, []
        with gzip.open(data_dir / COMICS_REVIEWS, "r") as g:
            for line in tqdm(g, desc="book: eval per line", mininterval=10):
                d = bench.BOOK_PARSER(line)
                u, i, r = d["user_id"], d["book_id"], d["rating"]
                if u not in user_index:
                    user_index[u] = len(user_index)
                if i not in item_index:
                    item_index[i] = len(item_index)
                interactions.append((u, i, r))
    with stage("shuffle, 90/10 split, per-user and per-item lists, mean rating"):
        rnd.shuffle(interactions)
        n_train = int(len(interactions) * 0.9)
        train, test = interactions[:n_train], interactions[n_train:]
        items_per_user, users_per_item = defaultdict(list), defaultdict(list)
        for u, i, _ in train:
            items_per_user[u].append(i)
            users_per_item[i].append(u)
        mu = sum(r for _, _, r in train) / len(train)
    return SimpleNamespace(user_index=user_index, item_index=item_index, train=train,
                           test=test, items_per_user=items_per_user, mu=mu,
                           items=list(item_index), n_users=len(user_index),
                           n_items=len(item_index))


def book_training(stage: Stages, name: str, step, opts) -> None:
    """Run the book's training ``step`` for the notebook's number of steps (or time
    ``--book-steps`` of them and scale)."""
    n = min(opts.book_steps or NOTEBOOK_STEPS, NOTEBOOK_STEPS)
    with stage(name, done=n, total=NOTEBOOK_STEPS, kind="training steps of each model"):
        for _ in tqdm(range(n), desc=name, mininterval=10):
            step()


def train_lfm(stage: Stages, data, train, K: int, lamb: float, opts, what: str):
    """A latent factor model (``K = 0``: biases only) trained the book's way on
    ``train``: its ``trainingStep``, a fresh Adam(0.1), eager calls."""
    tf = bench.tensorflow()
    from recsys_helpers import models

    mu = sum(r for _, _, r in train) / len(train)
    model = models.LatentFactorModel(mu, data.n_users, data.n_items, K, lamb, seed=opts.seed)
    optimizer = tf.keras.optimizers.Adam(bench.LEARNING_RATE)
    rnd = random.Random(opts.seed)
    book_training(stage, f"{what}: training steps (K={K}, lambda={lamb:g})",
                  lambda: bench.book_step_lfm(model, optimizer, train, data.user_index,
                                              data.item_index, rnd), opts)
    return model


def per_pair_mse(stage: Stages, data, model, pairs, opts, what: str) -> float:
    """The book's test MSE: one eager ``predict`` per (user, item) pair (In [50]-[52]),
    timed on the first ``--book-pairs`` pairs (the list is shuffled) and scaled."""
    part = pairs[:opts.book_pairs]
    with stage(f"{what}: one predict call per pair", done=len(part), total=len(pairs),
               kind="per-pair predictions"):
        predictions = [book_predict_rating(model, data.user_index[u], data.item_index[i]).numpy()
                       for u, i, _ in part]
        return book_mse(predictions, [r for _, _, r in part])


def train_bpr(stage: Stages, data, K: int, opts):
    """A BPR model trained the book's way on the training interactions: its
    ``trainingStepBPR`` (a rejection loop draws each negative item), eager calls."""
    tf = bench.tensorflow()
    from recsys_helpers import models

    model = models.BPRModel(data.n_users, data.n_items, K, bench.LAMBDA, seed=opts.seed)
    optimizer = tf.keras.optimizers.Adam(bench.LEARNING_RATE)
    rnd = random.Random(opts.seed)
    book_training(stage, f"BPR training steps (K={K})",
                  lambda: bench.book_step_bpr(model, optimizer, data.train, data.user_index,
                                              data.item_index, data.items, data.items_per_user,
                                              rnd), opts)
    return model


def per_pair_auc(stage: Stages, data, model, opts) -> float:
    """The book's ``AUC()`` (exercise 5.4): for every test user, up to 10 held-out items
    against as many other test items, two eager ``predict`` calls per pair.  Timed on
    ``--auc-users`` random test users and scaled to all of them."""
    with stage("AUC: test items per user, item set"):
        test_per_user, item_set = defaultdict(set), set()
        for u, i, _ in data.test:
            test_per_user[u].add(i)
            item_set.add(i)
        item_list = sorted(item_set)
    rnd = random.Random(opts.seed)
    users = sorted(test_per_user)
    subset = rnd.sample(users, min(opts.auc_users, len(users)))
    with stage("AUC: two predict calls per sampled pair", done=len(subset), total=len(users),
               kind="AUC test users"):
        return bench.book_auc(model, subset, test_per_user, item_list, data.user_index,
                              data.item_index, rnd)


# --------------------------------------------------------------------------- book: pipelines
# One function per notebook: the book's code for what the notebook does, on the same
# file, with the notebook's number of steps and of models trained.  Each returns a few
# figures, as a check that it computed something sensible.


def book_01(data_dir: Path, opts, stage: Stages) -> dict:
    """01: Surprise, as in the book (the course uses the same library here)."""
    from surprise import SVD, Dataset, Reader
    from surprise.model_selection import train_test_split

    with stage("Reader, Dataset.load_from_file"):
        reader = Reader(line_format="user item rating", sep="\t")
        data = Dataset.load_from_file(str(data_dir / FANTASY_TSV), reader=reader)
    with stage("train_test_split (25% test)"):
        trainset, testset = train_test_split(data, test_size=0.25, random_state=opts.seed)
    with stage("SVD fit and test"):
        model = SVD(random_state=opts.seed)
        model.fit(trainset)
        predictions = model.test(testset)
    with stage("MSE loop"):
        sse = 0
        for p in predictions:
            sse += (p.r_ui - p.est) ** 2
        mse = sse / len(predictions)
    return {"test_mse": mse, "first_estimate": predictions[0].est}


def book_02(data_dir: Path, opts, stage: Stages) -> dict:
    """02: the whole fantasy reviews file parsed with ``eval`` into a list of dicts
    (review text deleted), ID dicts, the ``lil_matrix`` loop, implicit's BPR (factors=5,
    its default threads).  The book's notebook also imports TensorFlow; this process
    does not, which only lowers the book's memory."""
    from implicit.bpr import BayesianPersonalizedRanking

    with stage("parse: eval per line, review_text deleted, list of dicts"):
        data = bench.book_load(data_dir / FANTASY_REVIEWS, None)
    with stage("random.shuffle"):
        random.Random(opts.seed).shuffle(data)
    with stage("userIDs, itemIDs dicts"):
        user_ids, item_ids = {}, {}
        for d in data:
            u, i = d["user_id"], d["book_id"]
            if u not in user_ids:
                user_ids[u] = len(user_ids)
            if i not in item_ids:
                item_ids[i] = len(item_ids)
    with stage("lil_matrix loop, CSR of the transpose"):
        # The book's loop looks both indices up per interaction: generators do the same.
        Xui = bench.book_csr((user_ids[d["user_id"]] for d in data),
                             (item_ids[d["book_id"]] for d in data),
                             len(user_ids), len(item_ids))
    with stage("BayesianPersonalizedRanking(factors=5).fit"):
        # implicit >= 0.5 takes users x items (the book, on 0.4, passed the transpose).
        model = BayesianPersonalizedRanking(factors=5, random_state=opts.seed)
        model.fit(Xui)
    with stage("recommend, similar_items, factors"):
        ids, _ = model.recommend(0, Xui[0])
        related, _ = model.similar_items(0)
        item_factors = model.item_factors
    return {"n_users": len(user_ids), "n_items": len(item_ids), "nnz": int(Xui.nnz),
            "item_factor_columns": int(item_factors.shape[1]), "similar_first": int(related[0])}


def book_03(data_dir: Path, opts, stage: Stages) -> dict:
    """03: the comics file read the book's way, the LFM (K=5) trained 100 steps, one
    prediction (the book's notebook computes no test MSE here)."""
    rnd = random.Random(opts.seed)
    data = book_comics(data_dir, rnd, stage)
    model = train_lfm(stage, data, data.train, bench.K, bench.LAMBDA, opts, "LFM")
    with stage("one prediction"):
        u, i, _ = data.test[0]
        p = float(book_predict_rating(model, data.user_index[u], data.item_index[i]).numpy())
    return {"n_interactions": len(data.train) + len(data.test), "prediction": p}


def book_04(data_dir: Path, opts, stage: Stages) -> dict:
    """04: the comics file read the book's way, BPR (K=5) trained 100 steps on the
    training split, then the book's per-pair AUC."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_bpr(stage, data, bench.K, opts)
    return {"auc_sampled_subset": per_pair_auc(stage, data, model, opts)}


def book_5_1(data_dir: Path, opts, stage: Stages) -> dict:
    """5.1: always-the-mean, and bias-only models with the book's per-pair test MSE.  Two
    models are trained, as in the solution notebook (its answer and, in its hidden
    tests, a reference)."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    with stage("always-the-mean MSE"):
        mse_mean = book_mse([data.mu for _ in data.test], [r for _, _, r in data.test])
    figures = {"mse_always_mean": mse_mean}
    for what in ("bias-only", "reference bias-only"):
        model = train_lfm(stage, data, data.train, 0, bench.LAMBDA, opts, what)
        figures[f"mse {what} (subset)"] = per_pair_mse(stage, data, model, data.test, opts, what)
    return figures


def book_5_2(data_dir: Path, opts, stage: Stages) -> dict:
    """5.2: as the solution notebook, the book's way: a bias-only model, K=10 models for
    four values of lambda on a fit/validation split, the chosen one on the whole training
    split, and (hidden tests) the chosen one again on the fit split: seven models, each
    evaluated by per-pair predictions."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    n_fit = int(len(data.train) * 0.9)
    fit_part, validation = data.train[:n_fit], data.train[n_fit:]
    figures = {}
    model = train_lfm(stage, data, data.train, 0, 1e-5, opts, "bias-only")
    figures["mse_bias_only (subset)"] = per_pair_mse(stage, data, model, data.test, opts,
                                                     "bias-only")
    validation_mse = {}
    for lamb in (1e-5, 1e-4, 3e-4, 1e-3):  # the notebook's LAMBDAS
        model = train_lfm(stage, data, fit_part, 10, lamb, opts, "candidate")
        validation_mse[lamb] = per_pair_mse(stage, data, model, validation, opts, "candidate")
    best = min(validation_mse, key=validation_mse.get)
    model = train_lfm(stage, data, data.train, 10, best, opts, "chosen")
    figures["test_mse (subset)"] = per_pair_mse(stage, data, model, data.test, opts, "chosen")
    model = train_lfm(stage, data, fit_part, 10, best, opts, "hidden test")
    per_pair_mse(stage, data, model, validation, opts, "hidden test")
    return figures | {"best_lambda": best}


def book_5_3(data_dir: Path, opts, stage: Stages) -> dict:
    """5.3: a K=10 model, per-pair predictions, ``int(p + 0.5)`` rounding, both MSEs."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_lfm(stage, data, data.train, 10, 1e-4, opts, "LFM")
    part = data.test[:opts.book_pairs]
    with stage("one predict call per pair, rounding, two MSEs", done=len(part),
               total=len(data.test), kind="per-pair predictions"):
        predictions = [book_predict_rating(model, data.user_index[u], data.item_index[i]).numpy()
                       for u, i, _ in part]
        labels = [r for _, _, r in part]
        rounded = [int(p + 0.5) for p in predictions]
        mse_raw, mse_rounded = book_mse(predictions, labels), book_mse(rounded, labels)
    return {"mse_raw (subset)": mse_raw, "mse_rounded (subset)": mse_rounded}


def book_5_4(data_dir: Path, opts, stage: Stages) -> dict:
    """5.4: BPR with K=10 on the training split, then the book's per-pair AUC."""
    data = book_comics(data_dir, random.Random(opts.seed), stage)
    model = train_bpr(stage, data, 10, opts)
    return {"auc_sampled_subset": per_pair_auc(stage, data, model, opts)}


#: The book's pipeline for each notebook of the course, by notebook stem.
BOOK_PIPELINES = {
    "01_latent_factor_surprise": book_01,
    "02_bpr_implicit": book_02,
    "03_latent_factor_tensorflow": book_03,
    "04_bpr_tensorflow": book_04,
    "exercise_5_1": book_5_1,
    "exercise_5_2": book_5_2,
    "exercise_5_3": book_5_3,
    "exercise_5_4": book_5_4,
}


def worker_main(opts) -> int:
    """``--worker NOTEBOOK``: run that notebook's book pipeline; write its stages."""
    stage = Stages()
    figures = BOOK_PIPELINES[opts.worker](opts.data_dir, opts, stage)
    opts.result.write_text(json.dumps({"stages": stage.rows, "figures": figures}, indent=2,
                                      default=float) + "\n")
    return 0


def run_book(stem: str, opts) -> dict:
    """Run the book's pipeline for notebook ``stem`` in a worker process.

    The book's seconds are the worker's wall time (interpreter start and imports
    included, as a notebook's kernel start is in ours), with each stage timed on a
    subset replaced by its linear scaling.  Its peak memory is measured, never scaled.
    """
    work = opts.run_dir / "book"
    result, log = work / f"{stem}.stages.json", work / f"{stem}.log"
    result.unlink(missing_ok=True)
    print(f"  book's approach for {stem}; log: {log}", flush=True)
    cmd = [sys.executable, str(SCRIPT), "--worker", stem, "--result", str(result),
           "--data-dir", str(opts.data_dir), "--seed", str(opts.seed),
           "--book-pairs", str(opts.book_pairs), "--auc-users", str(opts.auc_users)]
    if opts.book_steps:
        cmd += ["--book-steps", str(opts.book_steps)]
    run = run_measured(cmd, log)
    if run.returncode != 0 or not result.is_file():
        return {"error": f"exit status {run.returncode}:\n{tail(log)}", "log": str(log)}
    out = json.loads(result.read_text())
    extra = sum(s["seconds"] - s["measured_seconds"] for s in out["stages"])
    return {
        "seconds": run.seconds + extra,
        "measured_seconds": run.seconds,
        "peak_rss_bytes": run.peak_rss_bytes,
        "scaled": any(s["scaled"] for s in out["stages"]),
        "stages": out["stages"],
        "figures": out["figures"],
        "log": str(log),
    }


# --------------------------------------------------------------------------- report


def ratio(book: float | None, ours: float | None) -> float | None:
    return book / ours if book and ours else None


def notebook_rows(first: dict, cached: dict, book: dict) -> dict:
    """Per notebook: ours (cached run), ours (first run), book, and the ratios book/ours."""
    rows = {}
    for stem in dict.fromkeys([*cached["timing"], *first["timing"], *book]):
        ours, ours_first = cached["timing"].get(stem), first["timing"].get(stem)
        b = book.get(stem) or {"error": "no book pipeline for this notebook"}
        ok = "error" not in b
        failed = [f for f in cached["failures"] + first["failures"]
                  if f.startswith(stem + ".ipynb")]
        rows[stem] = {
            "ours": ours,
            "ours_first_run": ours_first,
            "book": b,
            "speed_ratio": ratio(b.get("seconds"), ours and ours["seconds"]) if ok else None,
            "memory_ratio": (ratio(b.get("peak_rss_bytes"), ours and ours["peak_rss_bytes"])
                             if ok else None),
            "speed_ratio_first_run": (ratio(b.get("seconds"), ours_first and ours_first["seconds"])
                                      if ok else None),
            "memory_ratio_first_run": (ratio(b.get("peak_rss_bytes"),
                                             ours_first and ours_first["peak_rss_bytes"])
                                       if ok else None),
            "failures": failed,
            "figures": cached["results"].get(stem, {}),
        }
    return rows


def check_targets(rows: dict, parse: dict, cached_loads: list, cached: dict) -> list[dict]:
    """The issue's targets, each PASS, MISS or n/a (not measured).

    The memory targets of notebook 02 hold for the worse of its two runs; the first run
    parses the file in the notebook's kernel, and the memory that parsing used is not all
    given back to the system, so it usually peaks higher than the cached run.  Both runs'
    figures are given in ``detail``.
    """
    bpr = rows.get("02_bpr_implicit", {})
    book_peak = bpr.get("book", {}).get("peak_rss_bytes")
    runs = {label: bpr[key]["peak_rss_bytes"] for label, key
            in (("first run", "ours_first_run"), ("cached run", "ours")) if bpr.get(key)}
    ours_peak = max(runs.values(), default=None)
    values = {
        "bpr_memory": ours_peak,
        "bpr_memory_vs_book": ours_peak / book_peak if ours_peak and book_peak else None,
        "parse": parse.get("seconds"),
        "cached_load": max(r["seconds"] for r in cached_loads) if cached_loads else None,
        "course_cached": cached.get("wall_seconds"),
    }
    notes = {
        "bpr_memory": "; ".join(f"{label} {peak / GB:.2f} GB" for label, peak in runs.items()),
        "bpr_memory_vs_book": "; ".join(f"{label} {peak / book_peak:.3f}"
                                        for label, peak in runs.items()) if book_peak else "",
        "cached_load": ", ".join(f"{r['file']} [{','.join(r['fields'])}] {r['seconds']:.2f} s"
                                 for r in cached_loads),
        "course_cached": ("wall time of `python -m recsys_helpers run --data full` (all "
                          f"{len(cached.get('timing', {}))} notebooks)"
                          if not cached.get("failures") else "notebooks failed: "
                          + "; ".join(cached["failures"])),
    }
    out = []
    for key, what, limit, unit in TARGETS:
        value = values[key]
        status = "n/a" if value is None else ("PASS" if value <= limit else "MISS")
        if key == "course_cached" and cached.get("failures"):
            status = "MISS"  # the course did not run to the end
        out.append({"target": key, "description": what, "value": value, "limit": limit,
                    "unit": unit, "status": status, "note": notes.get(key, "")})
    return out


def machine(loads: dict) -> dict:
    """The machine and the versions the figures were measured on."""
    import psutil

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break

    def version(dist):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu,
        "ram_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in ("numpy", "scipy", "pandas", "tensorflow", "keras",
                                             "implicit", "scikit-surprise", "orjson", "isal")},
        "load_average_while_measuring": loads | {
            "all": {"mean": statistics.fmean([v["mean"] for v in loads.values()],
                                             [v["samples"] for v in loads.values()]),
                    "max": max(v["max"] for v in loads.values())}},
        "note": ("timings are wall-clock times on a machine possibly shared with other work "
                 "(see the 1-minute load average of each phase: the benchmark itself "
                 "accounts for about 1); compare the ratios rather than the seconds"),
    }


def fmt_s(x):
    return "–" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def fmt_gb(x):
    return "–" if x is None else f"{x / GB:.2f}"


def fmt_x(x):
    return "–" if x is None else f"{x:.1f}×" if x < 100 else f"{x:,.0f}×"


def fmt_target(t: dict) -> tuple[str, str]:
    if t["unit"] == "bytes":
        return fmt_gb(t["value"]) + " GB", f"≤ {t['limit'] / GB:g} GB"
    if t["unit"] == "ratio":
        return ("–" if t["value"] is None else f"{t['value']:.3f}"), f"≤ {t['limit']:.3f}"
    return fmt_s(t["value"]) + " s", f"≤ {t['limit']:g} s"


def markdown(report: dict) -> str:
    """The report as Markdown, ready to paste into the README."""
    m = report["machine"]
    v, load = m["versions"], m["load_average_while_measuring"]["all"]
    lines = [
        f"Measured on {m['cpus']} CPUs ({m['cpu_model']}), {m['ram_bytes'] / 2**30:.0f} GiB of "
        f"RAM, {m['platform']}; Python {m['python']}, numpy {v['numpy']}, TensorFlow "
        f"{v['tensorflow']}, implicit {v['implicit']}, scikit-surprise {v['scikit-surprise']}. "
        f"The machine was shared with other work (1-minute load average while measuring: "
        f"mean {load['mean']:.1f}, at most {load['max']:.1f}; the benchmark itself accounts "
        "for about 1), so the seconds are noisy; the ratios are what to compare.",
        "",
        "Ratios are book / ours: above 1, the course's notebook is faster or needs less "
        "memory. *Ours* is the notebook executed headless on the full-size files, from the "
        "load caches (the first run, which parses the files, in brackets); *book* is the "
        "book's approach to the same pipeline on the same file, with the same training "
        "steps (our notebooks do more besides: learning curves, evaluations, plots). Peak "
        "memory: resident set size, GB of 10⁹ bytes.",
        "",
        "| notebook | ours (s) | book (s) | speed ratio | ours peak (GB) | book peak (GB) "
        "| memory ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    scaled_notes = []
    for stem, r in report["notebooks"].items():
        ours, first, book = r["ours"] or {}, r["ours_first_run"] or {}, r["book"]
        mark = ""
        if book.get("scaled"):
            mark = "*"
            parts = dict.fromkeys(f"{s['kind']} {s['timed_on']}" for s in book["stages"]
                                  if s["scaled"])
            scaled_notes.append(f"{stem}: " + ", ".join(parts))
        failed = " (failed)" if r["failures"] else ""
        lines.append(
            f"| {stem}{failed} | {fmt_s(ours.get('seconds'))} ({fmt_s(first.get('seconds'))}) "
            f"| {fmt_s(book.get('seconds'))}{mark} "
            f"| {fmt_x(r['speed_ratio'])} ({fmt_x(r['speed_ratio_first_run'])}) "
            f"| {fmt_gb(ours.get('peak_rss_bytes'))} ({fmt_gb(first.get('peak_rss_bytes'))}) "
            f"| {fmt_gb(book.get('peak_rss_bytes'))} "
            f"| {fmt_x(r['memory_ratio'])} ({fmt_x(r['memory_ratio_first_run'])}) |")
    total = report["totals"]
    lines.append(f"| **whole course** | {fmt_s(total['ours_seconds'])} "
                 f"({fmt_s(total['ours_first_run_seconds'])}) | {fmt_s(total['book_seconds'])} "
                 f"| {fmt_x(total['speed_ratio'])} ({fmt_x(total['speed_ratio_first_run'])}) "
                 f"| {fmt_gb(total['ours_peak_bytes'])} | {fmt_gb(total['book_peak_bytes'])} "
                 f"| {fmt_x(total['memory_ratio'])} |")
    runs = report["course_runs"]
    lines += ["", "Seconds of the whole course: the sum over the notebooks; peak memory: the "
              "largest of any notebook. The notebooks' peaks are sampled every 0.2 s by the "
              "runner; the exact peak of the largest process of each run (`wait4`) was "
              f"{fmt_gb(runs['cached']['max_rss_any_process_bytes'])} GB (cached run) and "
              f"{fmt_gb(runs['first']['max_rss_any_process_bytes'])} GB (first run). The "
              "book's peaks are exact."]
    if scaled_notes:
        lines += ["", "\\* Partly timed on a subset and scaled linearly (the memory is "
                  "measured, not scaled): " + "; ".join(scaled_notes) + "."]
    lines += ["", "| target | measured | limit | result |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        value, limit = fmt_target(t)
        if t["target"].startswith("bpr_memory") and t["note"]:
            value = t["note"]  # both runs' figures; the target is checked on the larger
        lines.append(f"| {t['description']} | {value} | {limit} | {t['status']} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def outside_repo(parser, name: str, path: Path) -> Path:
    path = path.expanduser().resolve()
    if path == REPO or REPO in path.parents:
        parser.error(f"{name} {path} is inside the repository; choose a folder outside it")
    return path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="folder of the full-size files (missing ones are generated)")
    parser.add_argument("--out", type=Path, help="write the report to this JSON file")
    parser.add_argument("--markdown", type=Path, help="also write the Markdown tables here")
    parser.add_argument("--run-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "recsys-full-scale",
                        help="executed notebooks, logs and intermediate results "
                             "(default: %(default)s)")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse the results of phases already in --run-dir (to resume "
                             "an interrupted run with the same data and settings)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--book-steps", type=int, default=None,
                        help=f"time this many of each model's {NOTEBOOK_STEPS} training steps "
                             "the book's way and scale (default: all of them)")
    parser.add_argument("--book-pairs", type=int, default=5_000,
                        help="pairs of each per-pair test MSE the book's way (scaled)")
    parser.add_argument("--auc-users", type=int, default=500,
                        help="test users of the book's per-pair AUC (scaled)")
    parser.add_argument("--worker", choices=list(BOOK_PIPELINES), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.data_dir = outside_repo(parser, "--data-dir", args.data_dir)
    args.run_dir = outside_repo(parser, "--run-dir", args.run_dir)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    started, loads = time.perf_counter(), {}
    run_dir, reuse = args.run_dir, args.reuse
    run_dir.mkdir(parents=True, exist_ok=True)

    bench.section("data")
    sizes = prepare_data(args.data_dir, args.seed)
    for name, size in sizes.items():
        print(f"  {name}: {size / 1e6:,.0f} MB")

    bench.section("one uncached parse of the full fantasy reviews file")
    parse = cached_phase(run_dir, "parse", reuse, lambda: time_load(
        args.data_dir / FANTASY_REVIEWS, PARSE_FIELDS, False, run_dir), loads)
    print(f"  load_reviews(cache=False): {parse['records']:,} records in "
          f"{parse['seconds']:.1f} s, peak {parse['peak_rss_bytes'] / GB:.2f} GB")

    bench.section("the course, first run (the load caches deleted first)")

    def first_run():
        removed = remove_load_caches(args.data_dir)
        print(f"  removed {len(removed)} load cache(s)")
        return run_course("first", args.data_dir, run_dir)

    first = cached_phase(run_dir, "first", reuse, first_run, loads)
    print(f"  {first['wall_seconds'] / 60:.1f} min; failures: {first['failures'] or 'none'}")

    bench.section("later loads from the caches")
    cached_loads = cached_phase(run_dir, "cached_loads", reuse,
                                lambda: time_cached_loads(args.data_dir, run_dir), loads)

    bench.section("the course, cached run")
    cached = cached_phase(run_dir, "cached", reuse,
                          lambda: run_course("cached", args.data_dir, run_dir), loads)
    print(f"  {cached['wall_seconds'] / 60:.1f} min; failures: {cached['failures'] or 'none'}")

    bench.section("the book's approach, one process per notebook")
    book = {}
    for stem in BOOK_PIPELINES:
        book[stem] = cached_phase(run_dir, f"book/{stem}", reuse,
                                  lambda stem=stem: run_book(stem, args), loads)
        b = book[stem]
        print(f"    {b['error']}" if "error" in b else
              f"    {b['seconds']:,.0f} s{' (partly scaled)' if b['scaled'] else ''}, "
              f"peak {b['peak_rss_bytes'] / GB:.2f} GB")

    rows = notebook_rows(first, cached, book)

    def measured(run, key):  # the figure ``key`` of every notebook measured in ``run``
        return [r[run][key] for r in rows.values() if r[run]]

    ours_s, first_s = sum(measured("ours", "seconds")), sum(measured("ours_first_run", "seconds"))
    books = [r["book"] for r in rows.values() if "error" not in r["book"]]
    book_s = sum(b["seconds"] for b in books) if len(books) == len(rows) else None
    ours_peak = max(measured("ours", "peak_rss_bytes"), default=None)
    book_peak = max((b["peak_rss_bytes"] for b in books), default=None)
    report = {
        "machine": machine(loads),
        "data": {"dir": str(args.data_dir), "file_bytes": sizes},
        "settings": {k: getattr(args, k) for k in ("seed", "book_steps", "book_pairs",
                                                   "auc_users")}
        | {"notebook_steps": NOTEBOOK_STEPS},
        "notebooks": rows,
        "totals": {
            "ours_seconds": ours_s, "ours_first_run_seconds": first_s, "book_seconds": book_s,
            "speed_ratio": ratio(book_s, ours_s), "speed_ratio_first_run": ratio(book_s, first_s),
            "ours_peak_bytes": ours_peak, "book_peak_bytes": book_peak,
            "memory_ratio": ratio(book_peak, ours_peak),
        },
        "parse_uncached": parse,
        "cached_loads": cached_loads,
        "course_runs": {label: {k: run[k] for k in ("wall_seconds", "returncode", "failures",
                                                    "max_rss_any_process_bytes", "output")}
                        for label, run in (("first", first), ("cached", cached))},
        "targets": check_targets(rows, parse, cached_loads, cached),
        "elapsed_seconds": time.perf_counter() - started,
    }
    text = markdown(report)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"report written to {args.out}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
        print(f"tables written to {args.markdown}")
    failures = sorted(set(first["failures"] + cached["failures"]))
    for f in failures:
        print(f"FAILED notebook: {f}")
    print(f"\n{sum(t['status'] == 'PASS' for t in report['targets'])} of {len(TARGETS)} "
          f"targets met ({report['elapsed_seconds'] / 60:.0f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
