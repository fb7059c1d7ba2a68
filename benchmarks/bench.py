"""How much faster the course's helpers are than the book's chapter 5 code, as ratios.

Each case times the book's way (:mod:`benchmarks.book`) and the course's on the same data
in one run: parsing the reviews and reloading them from the cache, the users x items
matrix, the sampled AUC, one LFM and one BPR training step.  The slowest baselines run on
part of the data, scaled linearly.  A report, not a test; see benchmarks/README.md.

    python benchmarks/bench.py [--out results.json] [--quick] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402

from benchmarks import book, harness  # noqa: E402
from benchmarks.harness import section, timed  # noqa: E402
from benchmarks.report import Comparison, print_table  # noqa: E402
from recsys_helpers import cache, datasets, interactions, metrics, sample  # noqa: E402

COMICS = datasets.get_dataset("comics_reviews").filename


def prepare_data(workdir: Path, quick: bool, seed: int) -> Path:
    """The comics file to measure: a copy of the bundled one (``quick``), or a full-size
    synthetic one, generated once per seed and version of the generator."""
    if quick:
        target = workdir / "sample" / COMICS
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(datasets.bundled_dir() / COMICS, target)  # its cache stays outside
        return target
    generator = hashlib.sha256(Path(sample.__file__).read_bytes()).hexdigest()[:10]
    target = workdir / f"full-seed{seed}-{generator}" / COMICS
    if not target.is_file():
        for old in workdir.glob(f"full-seed{seed}-*"):  # files of an older generator
            shutil.rmtree(old, ignore_errors=True)
        print(f"generating the full-size synthetic comics file in {target.parent} ...")
        sample.make_sample(target.parent, size="full", seed=seed, names=["comics_reviews"])
    return target


def scaled(name: str, book_s: float, done: int, total: int, ours_s: float, how: str):
    """A comparison whose baseline ran ``done`` of ``total`` units, scaled linearly."""
    where = (f"baseline on {done:,} of {total:,}, scaled linearly" if done < total
             else f"baseline on all {total:,}")
    return Comparison(name, book_s * total / done, ours_s, f"{where}; {how}")


def case_loading(path: Path, eval_lines: int):
    """Parsing the reviews and reloading them from the cache; (comparisons, the frame)."""
    section("loading the reviews")
    cache.clear(path)
    ours_s, df = timed(lambda: datasets.load_reviews(path, cache=False))
    datasets.load_reviews(path)  # writes the cache
    cached_s, cached = timed(lambda: datasets.load_reviews(path), repeat=5)
    assert cached.equals(df), "the cached reload differs from the parsed file"
    n, m = len(df), min(eval_lines, len(df))
    book_s, records = timed(lambda: book.book_load(path, m))
    assert [d["user_id"] for d in records] == df["user_id"].iloc[:m].astype(str).tolist()
    print(f"load_reviews: {ours_s:.2f} s, cached {cached_s:.3f} s; book: {m:,} lines "
          f"in {book_s:.2f} s")
    return [scaled("load (parse)", book_s, m, n, ours_s, "lines"),
            scaled("load (cached reload)", book_s, m, n, cached_s, "reload: median of 5")], df


def case_csr(data, lil_lines: int | None) -> Comparison:
    """The users x items CSR matrix: ``to_csr`` against the book's ``lil_matrix`` loop."""
    section("users x items CSR matrix")
    n, shape = len(data), (data.n_users, data.n_items)
    ours_s, _ = timed(lambda: interactions.to_csr(data.user, data.item, *shape), repeat=5)
    m = n if lil_lines is None else min(lil_lines, n)
    users, items = data.user[:m].tolist(), data.item[:m].tolist()
    book_s, X = timed(lambda: book.book_csr(users, items, *shape))
    assert (X != interactions.to_csr(data.user[:m], data.item[:m], *shape)).nnz == 0, \
        "the two CSR matrices differ"
    return scaled("CSR matrix", book_s, m, n, ours_s, "interactions; ours: median of 5")


def book_structures(data, part) -> SimpleNamespace:
    """The book's structures, keyed by raw IDs (set up untimed, as in the book's earlier
    cells): ``part``'s (user, item, rating) tuples, each user's items, the ID dicts."""
    b = SimpleNamespace(tuples=list(zip(data.user_ids[part.user].tolist(),
                                        data.item_ids[part.item].tolist(), part.rating.tolist())),
                        per_user=defaultdict(list),
                        users={u: k for k, u in enumerate(data.user_ids.tolist())},
                        items={i: k for k, i in enumerate(data.item_ids.tolist())})
    for u, i, _ in b.tuples:
        b.per_user[u].append(i)
    return b


def case_auc(data, train, test, auc_users: int, seed: int) -> Comparison:
    """The sampled AUC of a briefly trained BPR model: ``auc_sampled`` against ``AUC()``."""
    from recsys_helpers import models

    section("sampled AUC over the test users")
    tf = book.tensorflow()
    model = models.BPRModel(data.n_users, data.n_items, book.K, book.LAMBDA, seed=seed)
    step = models.make_train_step(model, tf.keras.optimizers.Adam(book.LEARNING_RATE))
    batches = interactions.bpr_batches(train, book.BATCH_SIZE, np.random.default_rng(seed))
    for _ in range(30):  # untimed: AUCs well above one half, as a check
        step(*(tf.constant(a) for a in batches()))
    interacted = interactions.PositiveSet(data.user, data.item, data.n_items)
    ours_s, auc = timed(lambda: metrics.auc_sampled(
        lambda u, i: model.score(u, i).numpy(), test.user, test.item, interacted,
        n_per_user=10, seed=seed), repeat=3)
    b = book_structures(data, test)
    test_per_user = {u: set(items) for u, items in b.per_user.items()}
    item_list = sorted({i for _, i, _ in b.tuples})
    rnd = random.Random(seed)
    subset = rnd.sample(sorted(test_per_user), min(auc_users, len(test_per_user)))
    book_s, auc_book = timed(lambda: book.book_auc(model, subset, test_per_user, item_list,
                                                   b.users, b.items, rnd))
    print(f"AUC: ours {auc:.4f} (all test users), book {auc_book:.4f} ({len(subset):,} users; "
          "its negatives are test items only)")
    return scaled("sampled AUC", book_s, len(subset), len(test_per_user), ours_s,
                  "random test users; ours: all of them, median of 3")


def compare_steps(name: str, make, book_step, batches, book_steps: int, our_steps: int):
    """One training step, the book's and ours, each side its own model and Adam: the
    median seconds of the steps after a warm-up step (compiling, creating Adam's slots)."""
    from recsys_helpers import models

    tf = book.tensorflow()

    def warm_median(step, n):
        step()
        return timed(step, n)[0]

    model, opt = make(), tf.keras.optimizers.Adam(book.LEARNING_RATE)
    book_s = warm_median(lambda: book_step(model, opt), book_steps)
    step = models.make_train_step(make(), tf.keras.optimizers.Adam(book.LEARNING_RATE))
    ours_s = warm_median(lambda: float(step(*(tf.constant(a) for a in batches()))), our_steps)
    print(f"{name}: book {book_s:.3f} s, ours {ours_s:.4f} s")
    return Comparison(name, book_s, ours_s, f"median of {book_steps} (book) and {our_steps} "
                      "(ours) steps after a warm-up step")


def case_training(data, train, book_steps: int, our_steps: int, seed: int):
    """One LFM and one BPR training step (:func:`compare_steps`)."""
    from recsys_helpers import models

    section(f"one training step, batch of {book.BATCH_SIZE:,}, K={book.K}")
    rnd, rng, b = random.Random(seed), np.random.default_rng(seed), book_structures(data, train)
    n, mu = (data.n_users, data.n_items), interactions.training_mean(train)
    lfm = compare_steps(
        "LFM step", lambda: models.LatentFactorModel(mu, *n, book.K, book.LAMBDA, seed=seed),
        lambda m, o: book.book_step_lfm(m, o, b.tuples, b.users, b.items, rnd),
        interactions.rating_batches(train, book.BATCH_SIZE, rng), book_steps, our_steps)
    return [lfm, compare_steps(
        "BPR step", lambda: models.BPRModel(*n, book.K, book.LAMBDA, seed=seed),
        lambda m, o: book.book_step_bpr(m, o, b.tuples, b.users, b.items, list(b.items),
                                        b.per_user, rnd),
        interactions.bpr_batches(train, book.BATCH_SIZE, rng), book_steps, our_steps)]


def parse_args(argv=None) -> argparse.Namespace:
    """The options (``--quick``: fewer steps and AUC users); ``--workdir`` outside the repo."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=harness.TMP / "recsys-course-bench",
                   help="generated data and load caches, outside the repository")
    p.add_argument("--out", type=Path, help="write the figures to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run on the bundled sample (ratios not meaningful)")
    p.add_argument("--seed", type=int, default=0)
    for flag, default, what in (
            ("--eval-lines", 100_000, "lines parsed by the book's loader (scaled to the file)"),
            ("--lil-lines", None, "interactions in the book's lil_matrix, scaled (default: all)"),
            ("--auc-users", 300, "test users of the book's AUC loop (scaled)"),
            ("--book-steps", 5, "timed steps, the book's way"),
            ("--our-steps", 20, "timed steps, the course's way")):
        p.add_argument(flag, type=int, default=default, help=what)
    args = p.parse_args(argv)
    args.workdir = harness.outside_repo(p, "--workdir", args.workdir)
    if args.quick:
        args.book_steps, args.our_steps = min(args.book_steps, 2), min(args.our_steps, 5)
        args.auc_users = min(args.auc_users, 50)
    return args


def main(argv=None) -> int:
    """Every comparison, the table, and the JSON (``--out``)."""
    args = parse_args(argv)
    started, env = time.perf_counter(), harness.machine()
    print(f"Python {env['python']}, {env['versions']}; "
          f"{'QUICK smoke run' if args.quick else 'full size'}")
    path = prepare_data(args.workdir, args.quick, args.seed)
    rows, df = case_loading(path, args.eval_lines)
    data = interactions.Interactions.from_frame(df)
    train, test = interactions.train_test_split(data, test_size=0.1, seed=args.seed)
    rows.append(case_csr(data, args.lil_lines))
    rows.append(case_auc(data, train, test, args.auc_users, args.seed))
    rows += case_training(data, train, args.book_steps, args.our_steps, args.seed)
    print_table(rows)
    met, elapsed = sum(r.met for r in rows), time.perf_counter() - started
    if args.out:
        settings = ("eval_lines", "lil_lines", "auc_users", "book_steps", "our_steps")
        harness.write(args.out, {
            "quick": args.quick, "environment": env,
            "data": {"path": str(path), "records": len(df), "users": data.n_users,
                     "items": data.n_items, "seed": args.seed},
            "settings": {k: getattr(args, k) for k in settings},
            "comparisons": [asdict(r) for r in rows], "targets_met": met,
            "targets_total": len(rows), "elapsed_seconds": elapsed})
    if args.quick:
        print("\n(quick run on the small bundled sample: the ratios are not meaningful)")
    print(f"\n{met} of {len(rows)} targets met ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
