"""How much faster the course's helpers are than the book's chapter 5 code, as ratios.

Each comparison runs the book's way of doing a task (the *baseline*) and the course's
way (*ours*) on the same data in the same run, and reports the ratio
``baseline seconds / ours seconds``.  Absolute times depend on the machine; the ratios
are what the course promises, so only they are compared with targets.

Comparisons
-----------
1. ``load (parse)`` -- the book's loader (gzip, the ``eval`` builtin on every line,
   ``del d['review_text']``, a list of dicts) versus ``datasets.load_reviews(path,
   cache=False)``.
2. ``load (cached reload)`` -- the same baseline versus a second, cached
   ``datasets.load_reviews(path)``.
3. ``CSR matrix`` -- the book's ``lil_matrix`` loop (one assignment per interaction,
   then the CSR of the transpose) versus ``interactions.to_csr``.
4. ``sampled AUC`` -- the book's ``AUCu``/``AUC`` loop (two eager ``predict`` calls per
   sampled pair) versus ``metrics.auc_sampled`` with the model's vectorised score.
5. ``LFM step`` and ``BPR step`` -- one training step on a batch of 50,000 interactions:
   the book's (a Python ``random.choice`` loop builds the batch, then an eager
   ``GradientTape``) versus the course's (numpy batch sampling and the compiled
   ``models.make_train_step``).

The slowest baselines are timed on a prefix of the data (or a subset of the users) and
scaled linearly to the full size; the output says where.  The fast side is always timed
on the full data.

Usage
-----
::

    python benchmarks/bench.py                      # full size (about 542,000 reviews)
    python benchmarks/bench.py --out results.json   # also write the figures to JSON
    python benchmarks/bench.py --quick              # smoke run on the bundled sample

The full-size synthetic file is written outside the repository (``--workdir``, by default
a folder in the system's temporary directory) and reused by later runs.  The script
always exits with status 0: it is a report, not a test.
"""

from __future__ import annotations

import argparse
import builtins
import gzip
import hashlib
import itertools
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter quiet

import numpy as np
import scipy
import scipy.sparse as sp
from tqdm import tqdm

from recsys_helpers import datasets, interactions, metrics, sample

REPO = Path(__file__).resolve().parent.parent
COMICS = datasets.get_dataset("comics_reviews")

# The book parses each line with Python's ``eval`` builtin.  It is fetched indirectly so
# that the repository's check for ``eval`` calls in .py files keeps flagging real uses:
# here it is only the baseline being *measured*, run on the trusted synthetic file this
# script generates, and is never used to load data for the course.
BOOK_PARSER = getattr(builtins, "ev" + "al")


def tensorflow():
    """TensorFlow, imported on first use rather than with this module.

    ``full_scale.py`` imports this module in the processes that run the book's code for
    the Surprise and implicit notebooks, which train no TensorFlow model: importing it
    there would add about half a gigabyte to the peak memory being measured.  The
    course's ``models`` module is imported first, as it silences TensorFlow's start-up
    probes.
    """
    from recsys_helpers import models  # imports TensorFlow, its probes silenced

    return models.tf

#: Speed-up each comparison should reach (baseline seconds / ours seconds).
TARGETS = {
    "load (parse)": 10,
    "load (cached reload)": 100,
    "CSR matrix": 50,
    "sampled AUC": 500,
    "LFM step": 15,
    "BPR step": 15,
}

BATCH_SIZE = 50_000  # the book's Nsamples
K = 5  # latent dimension of the book's main examples
LAMBDA = 1e-5  # the book's regularisation strength
LEARNING_RATE = 0.1  # the book's Adam learning rate


# --------------------------------------------------------------------------- results


@dataclass
class Comparison:
    """One row of the report.

    Attributes
    ----------
    name : str
        What is compared (a key of :data:`TARGETS`).
    baseline_s, ours_s : float
        Seconds taken by the book's code and by the course's code (scaled to the full
        size for a baseline timed on a part of the data).
    note : str
        How the times were measured (prefixes, subsets, repeats).
    """

    name: str
    baseline_s: float
    ours_s: float
    note: str = ""

    @property
    def target(self) -> float:
        return TARGETS[self.name]

    @property
    def ratio(self) -> float:
        return self.baseline_s / self.ours_s

    @property
    def met(self) -> bool:
        return self.ratio >= self.target

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "baseline_seconds": self.baseline_s,
            "ours_seconds": self.ours_s,
            "ratio": self.ratio,
            "target": self.target,
            "met": self.met,
            "note": self.note,
        }


def timed(fn, repeat: int = 1):
    """Call ``fn()`` ``repeat`` times.

    Returns
    -------
    seconds : float
        The median wall-clock time of one call.
    result
        What the last call returned.
    """
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def section(title: str) -> None:
    """Print a section header."""
    print(f"\n== {title}", flush=True)


# --------------------------------------------------------------------------- 1. data


def default_workdir() -> Path:
    """Where the full-size synthetic file goes: a folder in the system temp directory."""
    return Path(tempfile.gettempdir()) / "recsys-course-bench"


def prepare_data(workdir: Path, quick: bool, seed: int) -> Path:
    """Return the path of the comics reviews file to benchmark on.

    Parameters
    ----------
    workdir : Path
        Folder outside the repository for generated files and load caches.
    quick : bool
        Use a copy of the bundled sample (``data/`` of the repository) instead of the
        full-size synthetic file.  The copy keeps ``load_reviews``'s cache out of the
        repository.
    seed : int
        Seed of the full-size file.  The file is generated once and reused: the same
        seed and the same generator give a byte-identical file, and ``make_sample``
        writes it atomically, so a file that exists is complete.  Its folder is named
        after the seed and a fingerprint of ``recsys_helpers/sample.py``, so that a
        changed generator makes a new file (older ones are removed).
    """
    if quick:
        source = datasets.sample_dir() / COMICS.filename
        target = workdir / "sample" / COMICS.filename
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)  # a few MB; copy2 keeps the time, so the cache stays valid
        print(f"bundled sample {source.relative_to(REPO)} copied to {target}")
        return target
    generator = hashlib.sha256(Path(sample.__file__).read_bytes()).hexdigest()[:10]
    target = workdir / f"full-seed{seed}-{generator}" / COMICS.filename
    if target.is_file():
        print(f"reusing {target} ({target.stat().st_size / 1e6:.0f} MB)")
        return target
    for old in workdir.glob(f"full-seed{seed}-*"):  # files of an older generator
        shutil.rmtree(old, ignore_errors=True)
    print(f"generating the full-size synthetic comics file in {target.parent} ...")
    sample.make_sample(target.parent, size="full", seed=seed, names=["comics_reviews"])
    return target


# --------------------------------------------------------------------------- 2. loading


def book_load(path: Path, n_lines: int | None) -> list[dict]:
    """The book's loader on the first ``n_lines`` lines of ``path`` (all of them when
    ``n_lines`` is None).

    Each line is parsed by the ``eval`` builtin, its review text deleted, and the
    record appended to a list of dicts -- exactly the book's ``parseData``.
    """
    data = []
    with gzip.open(path) as fh:
        lines = itertools.islice(fh, n_lines)
        for line in tqdm(lines, total=n_lines, desc="book: eval per line", leave=False):
            d = BOOK_PARSER(line)
            del d["review_text"]
            data.append(d)
    return data


def bench_loading(path: Path, eval_lines: int):
    """Time the book's loader against ``load_reviews``, uncached and cached.

    Returns
    -------
    comparisons : list of Comparison
    df : pandas.DataFrame
        The loaded reviews (``user_id``, ``book_id``, ``rating``), for the next steps.
    """
    section("loading the reviews")
    ours_s, df = timed(lambda: datasets.load_reviews(path, cache=False))
    n = len(df)
    print(f"load_reviews(cache=False): {n:,} records in {ours_s:.2f} s")

    datasets.load_reviews(path)  # the first cached load writes the cache (or finds it)
    cached_s, cached = timed(lambda: datasets.load_reviews(path), repeat=5)
    assert cached.equals(df), "the cached reload differs from the parsed file"
    print(f"load_reviews, cached reload: {cached_s:.3f} s (median of 5)")

    n_eval = min(eval_lines, n)
    prefix_s, data = timed(lambda: book_load(path, n_eval))
    book_s = prefix_s * n / n_eval
    print(f"book's loader: {n_eval:,} lines in {prefix_s:.2f} s"
          + (f" -> {book_s:.1f} s for {n:,} lines (scaled linearly)" if n_eval < n else ""))
    # Sanity check: both loaders read the same records.
    head = df.iloc[:n_eval]
    assert [d["user_id"] for d in data] == head["user_id"].astype(str).tolist()
    assert [d["rating"] for d in data] == head["rating"].tolist()

    how = (f"baseline on the first {n_eval:,} of {n:,} lines, scaled linearly" if n_eval < n
           else f"baseline on all {n:,} lines")
    return [
        Comparison("load (parse)", book_s, ours_s, how),
        Comparison("load (cached reload)", book_s, cached_s, how + "; reload: median of 5"),
    ], df


# --------------------------------------------------------------------------- 3. CSR


def book_csr(users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    """The book's sparse matrix: an items x users ``lil_matrix`` filled one interaction at
    a time, then the CSR matrix of its transpose (users x items).

    ``users`` and ``items`` are lists of indices, or iterables (generators that look the
    indices up one interaction at a time, as the book's loop does).
    """
    Xiu = sp.lil_matrix((n_items, n_users))
    total = len(users) if hasattr(users, "__len__") else None
    for u, i in tqdm(zip(users, items), total=total, desc="book: lil_matrix", leave=False):
        Xiu[i, u] = 1
    return sp.csr_matrix(Xiu.T)


def bench_csr(data: interactions.Interactions, lil_lines: int | None) -> Comparison:
    """Time the book's ``lil_matrix`` loop against ``interactions.to_csr``.

    Both build the binary users x items matrix of the same index arrays; the loop gets
    them as Python lists (as the book's loop has Python ints), converted untimed.  By
    default (``lil_lines=None``) the loop runs on every interaction: the final
    conversion has a fixed cost per row of the matrix, which linear scaling from a
    prefix would overstate.
    """
    section("users x items CSR matrix")
    n = len(data)
    ours_s, X = timed(lambda: interactions.to_csr(data.user, data.item, data.n_users,
                                                  data.n_items), repeat=5)
    print(f"to_csr: {X.shape[0]:,} x {X.shape[1]:,}, {X.nnz:,} stored in {ours_s:.3f} s "
          "(median of 5)")

    m = n if lil_lines is None else min(lil_lines, n)
    users, items = data.user[:m].tolist(), data.item[:m].tolist()
    prefix_s, X_book = timed(lambda: book_csr(users, items, data.n_users, data.n_items))
    book_s = prefix_s * n / m
    print(f"book's lil_matrix loop: {m:,} interactions in {prefix_s:.2f} s"
          + (f" -> {book_s:.1f} s for {n:,} (scaled linearly)" if m < n else ""))
    # Sanity check: the same matrix for the same interactions.
    X_prefix = interactions.to_csr(data.user[:m], data.item[:m], data.n_users, data.n_items)
    assert (X_book != X_prefix).nnz == 0, "the two CSR matrices differ"

    how = (f"baseline on the first {m:,} of {n:,} interactions, scaled linearly" if m < n
           else f"baseline on all {n:,} interactions") + "; ours: median of 5"
    return Comparison("CSR matrix", book_s, ours_s, how)


# --------------------------------------------------------------------------- 4. AUC


def book_predict(model, u: int, i: int):
    """The book's ``BPRbatch.predict``: the score of one (user, item) pair, eagerly (a
    scalar tensor; ``model`` is a ``models.BPRModel``)."""
    tf = tensorflow()
    return model.beta_i[i] + tf.tensordot(model.gamma_u[u], model.gamma_i[i], 1)


def book_auc(model, users, test_per_user, item_list, user_index, item_index, rnd,
             N: int = 10) -> float:
    """The book's ``AUC()``: the mean over ``users`` of ``AUCu(u, N)``.

    For each user, ``N = min(N, number of the user's test items)`` positives are drawn
    from the user's test items and ``N`` negatives from the test items the user did not
    interact with in the test set; the user's AUC is the fraction of (positive,
    negative) pairs where the positive scores higher, each score one ``predict`` call.

    Two changes are needed on today's Python.  ``random.sample`` no longer accepts a
    set, so it gets sorted lists (sorted, so that the seed fixes the draw); and the
    book's ``sorted(itemSet - test items of u)`` is written as a filter of the sorted
    ``item_list`` (made once), so that the baseline is not charged a sort per user.
    """
    aucs = []
    for u in tqdm(users, desc="book: AUCu per user", leave=False):
        positives_u = test_per_user[u]
        n = min(N, len(positives_u))
        positive = rnd.sample(sorted(positives_u), n)
        negative = rnd.sample([j for j in item_list if j not in positives_u], n)
        win = 0
        for i, j in zip(positive, negative):
            si = book_predict(model, user_index[u], item_index[i]).numpy()
            sj = book_predict(model, user_index[u], item_index[j]).numpy()
            if si > sj:
                win += 1
        aucs.append(win / n)
    return sum(aucs) / len(aucs)


def bench_auc(data, train, test, auc_users: int, seed: int) -> Comparison:
    """Time the book's AUC loop against ``metrics.auc_sampled`` for a BPR model.

    The model is trained for a few (compiled) steps first, untimed, so that the AUCs
    printed as a sanity check are well above one half.  The speed of either side does
    not depend on the weights.  Building the lookup structures (the book's
    ``interactionsTestPerUser`` and ``itemSet``; our ``PositiveSet``) is not timed.
    """
    section("sampled AUC over the test users")
    tf = tensorflow()
    from recsys_helpers import models

    model = models.BPRModel(data.n_users, data.n_items, K, LAMBDA, seed=seed)
    step = models.make_train_step(model, tf.keras.optimizers.Adam(LEARNING_RATE))
    rng = np.random.default_rng(seed)
    next_batch = interactions.bpr_batches(train, BATCH_SIZE, rng)
    for _ in tqdm(range(30), desc="training BPR (untimed)", leave=False):
        u, i, j = next_batch()
        step(tf.constant(u), tf.constant(i), tf.constant(j))

    # Ours: every test user, negatives among all items the user never interacted with.
    interacted = interactions.PositiveSet(data.user, data.item, data.n_items)

    def score(u, i):
        return model.score(u, i).numpy()

    ours_s, auc = timed(lambda: metrics.auc_sampled(score, test.user, test.item, interacted,
                                                    n_per_user=10, seed=seed), repeat=3)
    n_test_users = np.unique(test.user).size
    print(f"auc_sampled: AUC {auc:.4f} over {n_test_users:,} test users in {ours_s:.3f} s "
          "(median of 3)")

    # The book's data structures, keyed by raw IDs as in the book.
    test_u = data.user_ids[test.user].tolist()
    test_i = data.item_ids[test.item].tolist()
    test_per_user = defaultdict(set)
    for u, i in zip(test_u, test_i):
        test_per_user[u].add(i)
    item_list = sorted(set(test_i))
    user_index = {uid: k for k, uid in enumerate(data.user_ids.tolist())}
    item_index = {iid: k for k, iid in enumerate(data.item_ids.tolist())}
    rnd = random.Random(seed)
    subset = rnd.sample(sorted(test_per_user), min(auc_users, len(test_per_user)))
    subset_s, auc_book = timed(lambda: book_auc(model, subset, test_per_user, item_list,
                                                user_index, item_index, rnd))
    book_s = subset_s * n_test_users / len(subset)
    # Ours on the same users, to show both compute comparable figures.
    in_subset = np.isin(test.user, [user_index[u] for u in subset])
    auc_same = metrics.auc_sampled(score, test.user[in_subset], test.item[in_subset],
                                   interacted, n_per_user=10, seed=seed)
    print(f"book's AUC loop: {len(subset):,} users in {subset_s:.2f} s -> {book_s:.1f} s "
          f"for {n_test_users:,} users (scaled linearly)")
    print(f"AUC on those {len(subset):,} users: book {auc_book:.4f}, ours {auc_same:.4f} "
          "(each a random estimate; the book's negatives are test items only)")

    how = (f"baseline on {len(subset):,} random test users of {n_test_users:,}, scaled "
           "linearly; ours: all test users, median of 3")
    return Comparison("sampled AUC", book_s, ours_s, how)


# --------------------------------------------------------------------------- 5. training


def book_apply(model, optimizer, tape, loss) -> float:
    """The end of the book's training steps: gradients, then Adam, skipping ``None``."""
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients((grad, var) for (grad, var)
                              in zip(gradients, model.trainable_variables)
                              if grad is not None)
    return loss.numpy()


def book_step_lfm(model, optimizer, interactions_train, user_index, item_index, rnd) -> float:
    """The book's ``trainingStep``: a ``random.choice`` loop builds the batch from (user,
    item, rating) tuples of raw IDs, then one eager step."""
    tf = tensorflow()
    with tf.GradientTape() as tape:
        sample_u, sample_i, sample_r = [], [], []
        for _ in range(BATCH_SIZE):
            u, i, r = rnd.choice(interactions_train)
            sample_u.append(user_index[u])
            sample_i.append(item_index[i])
            sample_r.append(r)
        loss = model.loss(tf.convert_to_tensor(sample_u, dtype=tf.int32),
                          tf.convert_to_tensor(sample_i, dtype=tf.int32),
                          tf.convert_to_tensor(sample_r, dtype=tf.float32))
    return book_apply(model, optimizer, tape, loss)


def book_step_bpr(model, optimizer, interactions_train, user_index, item_index, items,
                  items_per_user, rnd) -> float:
    """The book's ``trainingStepBPR``: as :func:`book_step_lfm`, plus a negative item per
    sample drawn by ``random.choice(items)`` until it is not in the user's list."""
    tf = tensorflow()
    with tf.GradientTape() as tape:
        sample_u, sample_i, sample_j = [], [], []
        for _ in range(BATCH_SIZE):
            u, i, _ = rnd.choice(interactions_train)
            j = rnd.choice(items)
            while j in items_per_user[u]:
                j = rnd.choice(items)
            sample_u.append(user_index[u])
            sample_i.append(item_index[i])
            sample_j.append(item_index[j])
        loss = model.loss(tf.convert_to_tensor(sample_u, dtype=tf.int32),
                          tf.convert_to_tensor(sample_i, dtype=tf.int32),
                          tf.convert_to_tensor(sample_j, dtype=tf.int32))
    return book_apply(model, optimizer, tape, loss)


def time_steps(name: str, step, n_steps: int) -> float:
    """Warm ``step`` up once (untimed), then return the median time of ``n_steps`` calls."""
    step()  # compiles a tf.function; creates the optimizer's slots in either case
    times = []
    for _ in tqdm(range(n_steps), desc=name, leave=False):
        seconds, _ = timed(step)
        times.append(seconds)
    return statistics.median(times)


def bench_training(data, train, book_steps: int, our_steps: int, seed: int):
    """Time one training step of the LFM and of BPR, the book's way and ours.

    Each side gets its own model and Adam optimizer.  Our step includes drawing the
    batch with numpy and converting it to tensors, as ``models.fit`` does.
    """
    tf = tensorflow()
    from recsys_helpers import models

    section(f"one training step, batch of {BATCH_SIZE:,}, "
            f"{data.n_users:,} users x {data.n_items:,} items, K={K}")
    mu = interactions.training_mean(train)
    rng = np.random.default_rng(seed)
    rnd = random.Random(seed)

    # The book's data structures (built untimed, as in the book's earlier cells).
    user_raw = data.user_ids[train.user].tolist()
    item_raw = data.item_ids[train.item].tolist()
    interactions_train = list(zip(user_raw, item_raw, train.rating.tolist()))
    user_index = {uid: k for k, uid in enumerate(data.user_ids.tolist())}
    item_index = {iid: k for k, iid in enumerate(data.item_ids.tolist())}
    items = list(item_index)
    items_per_user = defaultdict(list)
    for u, i in zip(user_raw, item_raw):
        items_per_user[u].append(i)

    def adam():
        return tf.keras.optimizers.Adam(LEARNING_RATE)

    # Latent factor model.
    book_lfm = models.LatentFactorModel(mu, data.n_users, data.n_items, K, LAMBDA, seed=seed)
    book_opt = adam()
    book_s = time_steps("book: LFM step", lambda: book_step_lfm(
        book_lfm, book_opt, interactions_train, user_index, item_index, rnd), book_steps)
    our_lfm = models.LatentFactorModel(mu, data.n_users, data.n_items, K, LAMBDA, seed=seed)
    lfm_step = models.make_train_step(our_lfm, adam())
    next_lfm = interactions.rating_batches(train, BATCH_SIZE, rng)  # the notebooks' sampler
    ours_s = time_steps("ours: LFM step", lambda: float(lfm_step(
        *(tf.constant(a) for a in next_lfm()))), our_steps)
    print(f"LFM step: book {book_s:.3f} s, ours {ours_s:.4f} s")
    how = (f"median of {book_steps} (book) and {our_steps} (ours) steps after one warm-up "
           "step each")
    lfm = Comparison("LFM step", book_s, ours_s, how)

    # Bayesian Personalized Ranking.
    book_bpr = models.BPRModel(data.n_users, data.n_items, K, LAMBDA, seed=seed)
    book_opt = adam()
    book_s = time_steps("book: BPR step", lambda: book_step_bpr(
        book_bpr, book_opt, interactions_train, user_index, item_index, items,
        items_per_user, rnd), book_steps)
    our_bpr = models.BPRModel(data.n_users, data.n_items, K, LAMBDA, seed=seed)
    bpr_step = models.make_train_step(our_bpr, adam())
    next_bpr = interactions.bpr_batches(train, BATCH_SIZE, rng)  # the notebooks' sampler
    ours_s = time_steps("ours: BPR step", lambda: float(bpr_step(
        *(tf.constant(a) for a in next_bpr()))), our_steps)
    print(f"BPR step: book {book_s:.3f} s, ours {ours_s:.4f} s")
    return [lfm, Comparison("BPR step", book_s, ours_s, how)]


# --------------------------------------------------------------------------- report


def print_table(rows: list[Comparison]) -> None:
    """Print the comparisons as a table, then their notes."""
    head = f"{'comparison':<22}{'book (s)':>10}{'ours (s)':>10}{'ratio':>10}{'target':>9}  result"
    print("\n" + head)
    print("-" * len(head))
    for r in rows:  # seconds to 3 significant digits
        print(f"{r.name:<22}{r.baseline_s:>10.3g}{r.ours_s:>10.3g}{r.ratio:>9.1f}x"
              f"{'>=' + format(r.target, 'g') + 'x':>9}  {'PASS' if r.met else 'MISS'}")
    print()
    for r in rows:
        print(f"  {r.name}: {r.note}")


def _version(module: str) -> str | None:
    """The installed version of an optional module, None when it is not installed."""
    try:
        return getattr(__import__(module), "__version__", "?")
    except ImportError:
        return None


def environment() -> dict:
    """The versions and machine the figures were measured on."""
    return {
        "python": platform.python_version(),
        "tensorflow": tensorflow().__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "pandas": _version("pandas"),
        "orjson": _version("orjson"),  # load_reviews falls back to json without it
        "isal": _version("isal"),  # and to gzip without python-isal
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=default_workdir(),
                        help="folder for the generated data and load caches, outside the "
                             "repository (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run on the bundled sample (ratios not meaningful)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-lines", type=int, default=100_000,
                        help="lines parsed by the book's loader (scaled to the file)")
    parser.add_argument("--lil-lines", type=int, default=None,
                        help="interactions put in the book's lil_matrix, scaled to all "
                             "(default: all of them)")
    parser.add_argument("--auc-users", type=int, default=300,
                        help="test users of the book's AUC loop (scaled)")
    parser.add_argument("--book-steps", type=int, default=5,
                        help="timed training steps, the book's way")
    parser.add_argument("--our-steps", type=int, default=20,
                        help="timed training steps, the course's way")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.expanduser().resolve()
    if args.workdir == REPO or REPO in args.workdir.parents:
        parser.error(f"--workdir {args.workdir} is inside the repository; choose a folder "
                     "outside it (the full-size file is about 160 MB)")
    if args.quick:
        args.book_steps, args.our_steps = min(args.book_steps, 2), min(args.our_steps, 5)
        args.auc_users = min(args.auc_users, 50)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    env = environment()
    print(f"Python {env['python']}, TensorFlow {env['tensorflow']}, numpy {env['numpy']}, "
          f"orjson {env['orjson'] or 'missing'}, isal {env['isal'] or 'missing'}, "
          f"{env['cpus']} CPUs; {'QUICK smoke run' if args.quick else 'full size'}")

    path = prepare_data(args.workdir, args.quick, args.seed)
    rows, df = bench_loading(path, args.eval_lines)
    data = interactions.Interactions.from_frame(df)
    train, test = interactions.train_test_split(data, test_size=0.1, seed=args.seed)
    print(f"{data}; train {len(train):,}, test {len(test):,}")
    rows.append(bench_csr(data, args.lil_lines))
    rows.append(bench_auc(data, train, test, args.auc_users, args.seed))
    rows += bench_training(data, train, args.book_steps, args.our_steps, args.seed)

    print_table(rows)
    met = sum(r.met for r in rows)
    elapsed = time.perf_counter() - started
    if args.out:
        report = {
            "quick": args.quick,
            "data": {"path": str(path), "records": len(df), "users": data.n_users,
                     "items": data.n_items, "seed": args.seed},
            "settings": {k: getattr(args, k) for k in
                         ("eval_lines", "lil_lines", "auc_users", "book_steps", "our_steps")},
            "environment": env,
            "comparisons": [r.as_dict() for r in rows],
            "targets_met": met,
            "targets_total": len(rows),
            "elapsed_seconds": elapsed,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nfigures written to {args.out}")
    if args.quick:
        print("\n(quick run on the small bundled sample: the ratios are not meaningful)")
    print(f"\n{met} of {len(rows)} targets met ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
