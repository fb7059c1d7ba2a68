"""The synthetic Goodreads sample: deterministic files in exactly the real formats.

The bundled files in ``data/`` are made by ``python -m recsys_helpers make-sample``.
They are synthetic, and their structure is planted so that every lesson of the chapter
shows on them:

* user activity and book popularity are heavy-tailed (log-normal);
* books belong to one of a few *genres* and each user prefers a few genres, so which
  books a user reviews depends on affinity, not only on popularity (BPR has something
  to learn beyond "recommend what is popular");
* a rating is ``mu + b_u + b_i + gamma_u . gamma_i + noise``, rounded and clipped to the
  Goodreads 1-5 scale, where the item factors ``gamma_i`` come from the book's genre, so
  biases matter and regularised latent factors help;
* in the review files a few ratings are 0 (a review with no star rating), as in the
  real files.

The same seed and size give byte-identical files (the gzip header's time is fixed).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from .datasets import REGISTRY

__all__ = ["SIZES", "SampleSpec", "make_sample", "generate_interactions"]


@dataclass(frozen=True)
class SampleSpec:
    """Shape of one synthetic file."""

    n_users: int
    n_items: int
    n_records: int
    text_sentences: tuple[float, float]  # log-normal (mean, sigma) of sentences per review


#: ``sample``: the bundled files (seconds per notebook).  ``full``: the real files'
#: shapes (fantasy reviews 256,088 users x 258,212 books, 3.4M reviews; comics
#: 542,338 reviews), for benchmarks; written outside the repository.
SIZES: dict[str, dict[str, SampleSpec]] = {
    "sample": {
        "fantasy_tsv": SampleSpec(2_000, 1_200, 40_000, (0.0, 0.0)),
        "fantasy_reviews": SampleSpec(2_500, 1_500, 30_000, (0.0, 0.5)),
        "comics_reviews": SampleSpec(2_000, 1_000, 40_000, (0.0, 0.5)),
    },
    "full": {
        "fantasy_tsv": SampleSpec(256_088, 258_212, 3_424_641, (0.0, 0.0)),
        "fantasy_reviews": SampleSpec(256_088, 258_212, 3_424_641, (1.6, 0.9)),
        "comics_reviews": SampleSpec(59_347, 89_411, 542_338, (1.6, 0.9)),
    },
}

_N_GENRES = 12
_K = 4

_WORDS = (
    "the a this book story series world magic dragon vampire wolf hero heroine villain "
    "plot pacing ending beginning chapter characters romance battle kingdom witch fae "
    "court quest art panels artist issue volume arc dark funny beautiful slow fast loved "
    "hated enjoyed boring brilliant confusing predictable twist writing style dialogue "
    "really quite very so too not never always again read reread finished started cannot "
    "wait next sequel first second last great good bad okay amazing stunning gorgeous"
).split()


def _sentence_pool(rng: np.random.Generator, n: int = 4_000) -> list[str]:
    lengths = rng.integers(5, 18, size=n)
    words = rng.integers(len(_WORDS), size=int(lengths.sum()))
    out, pos = [], 0
    for L in lengths:
        w = [_WORDS[k] for k in words[pos:pos + L]]
        pos += L
        out.append(" ".join(w).capitalize() + ".")
    return out


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    raw = rng.bytes(16 * n)
    return np.array([raw[k * 16:(k + 1) * 16].hex() for k in range(n)], dtype=object)


def generate_interactions(spec: SampleSpec, rng: np.random.Generator):
    """Draw (user, item, rating) index triples with the planted structure.

    Returns
    -------
    users, items : int arrays (indices into ``spec.n_users`` / ``spec.n_items``)
    ratings : int array on the 1..5 scale
    """
    nu, ni, n = spec.n_users, spec.n_items, spec.n_records
    genre = rng.permutation(np.arange(ni) % _N_GENRES)  # every genre has books
    popularity = rng.lognormal(0.0, 1.0, size=ni)
    activity = rng.lognormal(0.0, 1.0, size=nu)
    prefs = rng.dirichlet(np.full(_N_GENRES, 0.1), size=nu)

    # Users: every user at least once, the rest in proportion to activity.
    counts = 1 + rng.multinomial(int(n * 1.25) - nu, activity / activity.sum())
    users = np.repeat(np.arange(nu), counts)
    # Genre of each draw from the user's preferences (inverse CDF, vectorised).
    cum = np.cumsum(prefs, axis=1)
    cum[:, -1] = 1.0
    g = np.empty(users.size, dtype=np.int64)
    step = 1_000_000
    for s in range(0, users.size, step):
        uu = users[s:s + step]
        g[s:s + step] = (rng.random(uu.size)[:, None] > cum[uu]).sum(axis=1)
    # Book within the genre in proportion to popularity (searchsorted on the cumulative
    # popularity of books ordered by genre).
    order = np.argsort(genre, kind="stable")
    cw = np.cumsum(popularity[order])
    bounds = np.searchsorted(genre[order], np.arange(_N_GENRES + 1))
    lo = np.where(bounds[:-1] > 0, cw[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = cw[np.maximum(bounds[1:] - 1, 0)]
    x = lo[g] + rng.random(g.size) * (hi[g] - lo[g])
    items = order[np.minimum(np.searchsorted(cw, x, side="right"), ni - 1)]

    # One review per (user, book); keep a random subset of the requested size.
    keys = users.astype(np.int64) * ni + items
    _, first = np.unique(keys, return_index=True)
    keep = rng.permutation(first)[:n]
    users, items = users[keep], items[keep]

    # Ratings: biases + low-rank genre affinity + noise, rounded and clipped.
    genre_factors = rng.normal(0, 1, size=(_N_GENRES, _K))
    gamma_i = 0.9 * genre_factors[genre] + 0.45 * rng.normal(0, 1, size=(ni, _K))
    gamma_u = rng.normal(0, 1, size=(nu, _K))
    b_u = rng.normal(0, 0.45, size=nu)
    b_i = rng.normal(0, 0.35, size=ni)
    inter = np.einsum("nk,nk->n", gamma_u[users], gamma_i[items]) / np.sqrt(_K) * 1.0
    r = 3.7 + b_u[users] + b_i[items] + inter + rng.normal(0, 0.45, size=users.size)
    ratings = np.clip(np.rint(r), 1, 5).astype(np.int64)
    return users, items, ratings


def _dates(rng: np.random.Generator, n: int):
    start = datetime(2007, 1, 1, tzinfo=timezone(timedelta(hours=-7)))
    added = rng.integers(0, 10 * 365 * 86400, size=n)
    updated = added + rng.integers(0, 200 * 86400, size=n)
    read_gap = rng.integers(-30 * 86400, 60 * 86400, size=n)
    has_read = rng.random(n) < 0.7
    fmt = "%a %b %d %H:%M:%S %z %Y"

    def show(sec):
        return (start + timedelta(seconds=int(sec))).strftime(fmt)

    def day(sec):
        d = start + timedelta(seconds=int(sec))
        return d.replace(hour=0, minute=0, second=0).strftime(fmt)

    for k in range(n):
        read = day(added[k] + read_gap[k]) if has_read[k] else ""
        started = day(added[k] + read_gap[k] - 5 * 86400) if has_read[k] else ""
        yield show(added[k]), show(updated[k]), read, started


def _write_bytes(path: Path, payload_chunks, gz: bool, level: int = 6) -> None:
    """Write atomically; gzip with a fixed header time so files are byte-identical."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            if gz:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0,
                                   compresslevel=level) as fh:
                    for chunk in payload_chunks:
                        fh.write(chunk)
            else:
                for chunk in payload_chunks:
                    raw.write(chunk)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _review_lines(spec: SampleSpec, rng: np.random.Generator, python_literals: bool,
                  progress: bool):
    from .progress import tqdm

    users, items, ratings = generate_interactions(spec, rng)
    n = users.size
    user_ids = _hex_ids(rng, spec.n_users)
    book_ids = (rng.choice(36_000_000, size=spec.n_items, replace=False) + 1).astype(str)
    review_ids = _hex_ids(rng, n)
    no_star = rng.random(n) < 0.03
    ratings = np.where(no_star, 0, ratings)
    pool = _sentence_pool(rng)
    mu, sigma = spec.text_sentences
    n_sent = np.maximum(1, np.rint(rng.lognormal(mu, sigma, size=n))).astype(np.int64)
    sent = rng.integers(len(pool), size=int(n_sent.sum()))
    votes = rng.geometric(0.6, size=n) - 1
    comments = rng.geometric(0.8, size=n) - 1
    dates = _dates(rng, n)
    dump = repr if python_literals else json.dumps
    buf, pos = io.StringIO(), 0
    bar = tqdm(total=n, desc="reviews", unit="rec", disable=not progress, leave=False)
    for k in range(n):
        text = " ".join(pool[s] for s in sent[pos:pos + n_sent[k]])
        pos += n_sent[k]
        d_add, d_upd, d_read, d_start = next(dates)
        rec = {
            "user_id": user_ids[users[k]],
            "book_id": str(book_ids[items[k]]),  # np.str_ would repr as np.str_(...)
            "review_id": review_ids[k],
            "rating": int(ratings[k]),
            "review_text": text,
            "date_added": d_add,
            "date_updated": d_upd,
            "read_at": d_read,
            "started_at": d_start,
            "n_votes": int(votes[k]),
            "n_comments": int(comments[k]),
        }
        buf.write(dump(rec))
        buf.write("\n")
        if (k + 1) % 20_000 == 0:
            bar.update(20_000)
            yield buf.getvalue().encode()
            buf = io.StringIO()
    bar.close()
    yield buf.getvalue().encode()


def _tsv_lines(spec: SampleSpec, rng: np.random.Generator):
    users, items, ratings = generate_interactions(spec, rng)
    user_ids = _hex_ids(rng, spec.n_users)
    book_ids = (rng.choice(36_000_000, size=spec.n_items, replace=False) + 1).astype(str)
    step = 200_000
    for s in range(0, users.size, step):
        rows = zip(user_ids[users[s:s + step]], book_ids[items[s:s + step]], ratings[s:s + step])
        yield "".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows).encode()


def make_sample(out_dir: str | os.PathLike, size: str = "sample", seed: int = 0,
                names=None, python_literals: bool = False, progress: bool = True) -> list[Path]:
    """Write the synthetic files into ``out_dir`` and return their paths.

    Parameters
    ----------
    size : {"sample", "full"}
        ``sample`` for the bundled files; ``full`` for files with the real files' shapes.
    seed : int
        Same seed and size give byte-identical files.
    names : iterable of str, optional
        Which datasets to write (default: all three).
    python_literals : bool
        Write review records as Python dict literals instead of JSON (as some course
        copies of the real files are).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    out_dir = Path(out_dir)
    wanted = list(names) if names else list(REGISTRY)
    seeds = dict(zip(REGISTRY, np.random.SeedSequence(seed).spawn(len(REGISTRY))))
    level = 6 if size == "sample" else 1
    written = []
    for name in wanted:
        ds = REGISTRY[name]
        spec = SIZES[size][name]
        rng = np.random.default_rng(seeds[name])
        path = out_dir / ds.filename
        if ds.format == "tsv":
            _write_bytes(path, _tsv_lines(spec, rng), gz=False)
        else:
            _write_bytes(path, _review_lines(spec, rng, python_literals, progress), gz=True,
                         level=level)
        if progress:
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        written.append(path)
    return written
