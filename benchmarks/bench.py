"""How much faster the course's helpers are than the book's chapter 5 code, as ratios.

Each case runs the book's way of doing a task (:mod:`benchmarks.book`) and the course's
on the same data in the same run, and reports ``baseline seconds / ours seconds``:
parsing the reviews file and reloading it from the cache, the users x items matrix, the
sampled AUC over all test users, one LFM and one BPR training step (batch of 50,000).
The slowest baselines are timed on part of the data and scaled linearly (the output says
where); the course's side always runs on all of it.  See benchmarks/README.md.

    python benchmarks/bench.py [--out results.json] [--quick]

The full-size synthetic file goes to ``--workdir``, outside the repository, and is
reused.  The script exits with status 0: it is a report, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import numpy as np  # noqa: E402

from benchmarks import book, harness  # noqa: E402
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
    harness.section("loading the reviews")
    cache.clear(path)
    ours_s, df = harness.timed(lambda: datasets.load_reviews(path, cache=False))
    datasets.load_reviews(path)  # writes the cache
    cached_s, cached = harness.timed(lambda: datasets.load_reviews(path), repeat=5)
    assert cached.equals(df), "the cached reload differs from the parsed file"
    n, m = len(df), min(eval_lines, len(df))
    book_s, records = harness.timed(lambda: book.book_load(path, m))
    assert [d["user_id"] for d in records] == df["user_id"].iloc[:m].astype(str).tolist()
    print(f"load_reviews: {ours_s:.2f} s, cached {cached_s:.3f} s; book: {m:,} lines "
          f"in {book_s:.2f} s")
    return [scaled("load (parse)", book_s, m, n, ours_s, "lines"),
            scaled("load (cached reload)", book_s, m, n, cached_s, "reload: median of 5")], df


def case_csr(data, lil_lines: int | None) -> Comparison:
    harness.section("users x items CSR matrix")
    n = len(data)
    ours_s, _ = harness.timed(lambda: interactions.to_csr(data.user, data.item, data.n_users,
                                                          data.n_items), repeat=5)
    m = n if lil_lines is None else min(lil_lines, n)
    users, items = data.user[:m].tolist(), data.item[:m].tolist()
    book_s, X = harness.timed(lambda: book.book_csr(users, items, data.n_users, data.n_items))
    ours = interactions.to_csr(data.user[:m], data.item[:m], data.n_users, data.n_items)
    assert (X != ours).nnz == 0, "the two CSR matrices differ"
    return scaled("CSR matrix", book_s, m, n, ours_s, "interactions; ours: median of 5")


def _train_bpr(data, train, seed: int):
    from recsys_helpers import models

    tf = book.tensorflow()
    model = models.BPRModel(data.n_users, data.n_items, book.K, book.LAMBDA, seed=seed)
    step = models.make_train_step(model, tf.keras.optimizers.Adam(book.LEARNING_RATE))
    batches = interactions.bpr_batches(train, book.BATCH_SIZE, np.random.default_rng(seed))
    for _ in range(30):  # untimed: AUCs well above one half, as a check
        step(*(tf.constant(a) for a in batches()))
    return model


def case_auc(data, train, test, auc_users: int, seed: int) -> Comparison:
    harness.section("sampled AUC over the test users")
    model = _train_bpr(data, train, seed)
    interacted = interactions.PositiveSet(data.user, data.item, data.n_items)

    def score(u, i):
        return model.score(u, i).numpy()

    ours_s, auc = harness.timed(lambda: metrics.auc_sampled(
        score, test.user, test.item, interacted, n_per_user=10, seed=seed), repeat=3)
    test_per_user = defaultdict(set)  # the book's structures, keyed by raw IDs
    for u, i in zip(data.user_ids[test.user].tolist(), data.item_ids[test.item].tolist()):
        test_per_user[u].add(i)
    item_list = sorted({i for items in test_per_user.values() for i in items})
    user_index = {uid: k for k, uid in enumerate(data.user_ids.tolist())}
    item_index = {iid: k for k, iid in enumerate(data.item_ids.tolist())}
    rnd = random.Random(seed)
    subset = rnd.sample(sorted(test_per_user), min(auc_users, len(test_per_user)))
    book_s, auc_book = harness.timed(lambda: book.book_auc(
        model, subset, test_per_user, item_list, user_index, item_index, rnd))
    print(f"AUC: ours {auc:.4f} (all test users), book {auc_book:.4f} ({len(subset):,} users; "
          "its negatives are test items only)")
    return scaled("sampled AUC", book_s, len(subset), len(test_per_user), ours_s,
                  "random test users; ours: all of them, median of 3")


def _median_step(name: str, step, n: int) -> float:
    step()  # warm-up: compiles the tf.function, creates Adam's slots
    return float(np.median([harness.timed(step)[0] for _ in range(n)]))


def case_training(data, train, book_steps: int, our_steps: int, seed: int):
    from recsys_helpers import models

    tf = book.tensorflow()
    harness.section(f"one training step, batch of {book.BATCH_SIZE:,}, K={book.K}")
    rnd, rng = random.Random(seed), np.random.default_rng(seed)
    raw_u, raw_i = data.user_ids[train.user].tolist(), data.item_ids[train.item].tolist()
    pairs = list(zip(raw_u, raw_i, train.rating.tolist()))  # the book's structures
    user_index = {uid: k for k, uid in enumerate(data.user_ids.tolist())}
    item_index = {iid: k for k, iid in enumerate(data.item_ids.tolist())}
    items_per_user = defaultdict(list)
    for u, i in zip(raw_u, raw_i):
        items_per_user[u].append(i)
    mu, n, adam = interactions.training_mean(train), (data.n_users, data.n_items), \
        lambda: tf.keras.optimizers.Adam(book.LEARNING_RATE)
    how = f"median of {book_steps} (book) and {our_steps} (ours) steps after a warm-up step"
    lfm = _compare_steps("LFM step", lambda: models.LatentFactorModel(
        mu, *n, book.K, book.LAMBDA, seed=seed),
        lambda m, o: book.book_step_lfm(m, o, pairs, user_index, item_index, rnd),
        interactions.rating_batches(train, book.BATCH_SIZE, rng), adam, book_steps, our_steps)
    bpr = _compare_steps("BPR step", lambda: models.BPRModel(*n, book.K, book.LAMBDA, seed=seed),
                         lambda m, o: book.book_step_bpr(m, o, pairs, user_index, item_index,
                                                         list(item_index), items_per_user, rnd),
                         interactions.bpr_batches(train, book.BATCH_SIZE, rng), adam,
                         book_steps, our_steps)
    return [Comparison("LFM step", *lfm, how), Comparison("BPR step", *bpr, how)]


def _compare_steps(name, make, book_step, batches, adam, book_steps: int, our_steps: int):
    """(book, ours) median seconds of one step; each side its own model and Adam."""
    from recsys_helpers import models

    tf = book.tensorflow()
    model, opt = make(), adam()
    book_s = _median_step(name, lambda: book_step(model, opt), book_steps)
    step = models.make_train_step(make(), adam())  # the notebooks' sampler and step
    ours_s = _median_step(name, lambda: float(step(*(tf.constant(a) for a in batches()))),
                          our_steps)
    print(f"{name}: book {book_s:.3f} s, ours {ours_s:.4f} s")
    return book_s, ours_s


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, default=harness.TMP / "recsys-course-bench",
                   help="generated data and load caches, outside the repository")
    p.add_argument("--out", type=Path, help="write the figures to this JSON file")
    p.add_argument("--quick", action="store_true",
                   help="smoke run on the bundled sample (ratios not meaningful)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-lines", type=int, default=100_000,
                   help="lines parsed by the book's loader (scaled to the file)")
    p.add_argument("--lil-lines", type=int, default=None,
                   help="interactions in the book's lil_matrix, scaled (default: all)")
    p.add_argument("--auc-users", type=int, default=300,
                   help="test users of the book's AUC loop (scaled)")
    p.add_argument("--book-steps", type=int, default=5, help="timed steps, the book's way")
    p.add_argument("--our-steps", type=int, default=20, help="timed steps, the course's way")
    args = p.parse_args(argv)
    args.workdir = harness.outside_repo(p, "--workdir", args.workdir)
    if args.quick:
        args.book_steps, args.our_steps = min(args.book_steps, 2), min(args.our_steps, 5)
        args.auc_users = min(args.auc_users, 50)
    return args


def main(argv=None) -> int:
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "quick": args.quick, "environment": env,
            "data": {"path": str(path), "records": len(df), "users": data.n_users,
                     "items": data.n_items, "seed": args.seed},
            "settings": {k: getattr(args, k) for k in
                         ("eval_lines", "lil_lines", "auc_users", "book_steps", "our_steps")},
            "comparisons": [r.as_dict() for r in rows], "targets_met": met,
            "targets_total": len(rows), "elapsed_seconds": elapsed}, indent=2) + "\n")
    if args.quick:
        print("\n(quick run on the small bundled sample: the ratios are not meaningful)")
    print(f"\n{met} of {len(rows)} targets met ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
