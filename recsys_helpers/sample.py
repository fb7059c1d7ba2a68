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

from .books import METADATA_FOR, write_book_metadata
from .datasets import REGISTRY

__all__ = ["SIZES", "SampleSpec", "Calibration", "CALIBRATION", "make_sample",
           "generate_interactions", "write_interactions"]


@dataclass(frozen=True)
class SampleSpec:
    """Shape of one synthetic file."""

    n_users: int
    n_items: int
    n_records: int
    text_sentences: tuple[float, float]  # log-normal (mean, sigma) of sentences per review


#: ``sample``: the bundled files (seconds per notebook), with the real Goodreads files'
#: ratio of ratings to users (about 7) and to books (about 30).  ``full``: the real
#: files' shapes (fantasy reviews 256,088 users x 258,212 books, 3.4M reviews; comics
#: 542,338 reviews), for benchmarks; written outside the repository.
SIZES: dict[str, dict[str, SampleSpec]] = {
    "sample": {
        "fantasy_tsv": SampleSpec(5_600, 1_350, 40_000, (0.0, 0.0)),
        "fantasy_reviews": SampleSpec(5_600, 1_350, 40_000, (0.0, 0.5)),
        "comics_reviews": SampleSpec(5_600, 1_350, 40_000, (0.0, 0.5)),
    },
    "full": {
        "fantasy_tsv": SampleSpec(256_088, 258_212, 3_424_641, (0.0, 0.0)),
        "fantasy_reviews": SampleSpec(256_088, 258_212, 3_424_641, (1.6, 0.9)),
        "comics_reviews": SampleSpec(59_347, 89_311, 542_338, (1.6, 0.9)),
    },
}


@dataclass(frozen=True)
class Calibration:
    """The generator's knobs, calibrated against a real Goodreads ratings file.

    The real file (200,000 ratings 0-5 from the UCSD Goodreads data, 27,943 users x
    6,688 books): ratings 0/1/2/3/4/5 = 5.4/2.2/6.2/21.7/33.5/31.0 %; ratings per user at
    the 10/25/50/75/90/99 % quantiles 3/4/6/9/13/24, per book 4/6/11/26/65/309.
    """

    #: share of each star rating among the rated (non-zero) reviews, 1..5
    stars: tuple = (2.2, 6.2, 21.7, 33.5, 31.0)
    #: ratings per user: ``1 + 5 * lognormal(0, user_sigma)``, rescaled to the spec's mean
    user_sigma: float = 0.7
    #: popularity weight of a book: ``0.6 + exp(item_sigma * z)``, ``z`` normal within +-3
    item_floor: float = 0.6
    item_sigma: float = 1.7
    #: genres, and the chance that a review's book is drawn from the user's preferred
    #: genres (else from all books, by popularity): the personal part of what is reviewed
    n_genres: int = 8
    personal: float = 0.7
    #: Dirichlet concentration of a user's genre preferences (small: a few genres each)
    focus: float = 0.05
    #: the rating's latent score: user bias, book bias, taste match, noise (std devs)
    user_bias: float = 0.55
    item_bias: float = 0.38
    taste: float = 0.35
    noise: float = 1.0
    #: reviews without a star rating (rating 0): a few users leave most of their reviews
    #: unrated, the others rarely
    zero_users: float = 0.07
    zero_habit: float = 0.55
    zero_rare: float = 0.02


CALIBRATION = Calibration()

#: The names of the sample's planted genres in its generated book metadata (UCSD names).
SAMPLE_GENRES = ("fantasy, paranormal", "young-adult", "romance", "mystery, thriller, crime",
                 "history, historical fiction, biography", "fiction", "comics, graphic",
                 "children")
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


def _draw_by_weight(cum: np.ndarray, lo, hi, rng) -> np.ndarray:
    """Indices drawn in proportion to weights, given their cumulative sum ``cum``:
    uniform points in ``[lo, hi)`` located by binary search."""
    x = lo + rng.random(np.shape(lo)) * (hi - lo)
    return np.minimum(np.searchsorted(cum, x, side="right"), cum.size - 1)


def generate_interactions(spec: SampleSpec, rng: np.random.Generator,
                          cal: Calibration = CALIBRATION, info: dict | None = None):
    """Draw (user, item, rating) index triples with the calibrated structure.

    * Ratings per user follow a shifted log-normal and books are drawn by a log-normal
      popularity, as heavy-tailed as on the real file;
    * with probability ``cal.personal`` a review's book comes from one of the user's
      preferred genres, else from all books by popularity: popularity is a strong ranking
      baseline and there is a little to learn beyond it;
    * a rating's latent score is ``b_u + b_i + gamma_u . gamma_i + noise`` with a weak
      taste term (``gamma_i`` from the book's genre), cut into stars 1..5 at the quantiles
      that give the real file's shares; then a few users' reviews (and rarely anyone's)
      get rating 0, a review without stars.

    Returns
    -------
    users, items : int arrays (indices into ``spec.n_users`` / ``spec.n_items``)
    ratings : int array on the 0..5 scale

    A dict passed as ``info`` receives the planted ``genre`` of each item (0..G-1).
    """
    nu, ni, n = spec.n_users, spec.n_items, spec.n_records
    G = cal.n_genres
    genre = rng.permutation(np.arange(ni) % G)  # every genre has books
    if info is not None:
        info["genre"] = genre
    # (the log-normal's normal part clipped at 3 standard deviations: the real file's most
    # reviewed book has 90 times the median's reviews, not hundreds)
    z = np.clip(rng.normal(0.0, 1.0, size=ni), -3.0, 3.0)
    popularity = cal.item_floor + np.exp(cal.item_sigma * z)
    prefs = rng.dirichlet(np.full(G, cal.focus), size=nu)

    # Ratings per user: a shifted log-normal rescaled so that they sum to about n (plus a
    # margin for the repeated pairs dropped below); every user rates at least once.
    shape = 1.0 + 5.0 * rng.lognormal(0.0, cal.user_sigma, size=nu)
    counts = np.maximum(1, np.rint(shape * (n * 1.08 / shape.sum()))).astype(np.int64)
    users = np.repeat(np.arange(nu), counts)
    m = users.size

    # Books by popularity: from all books, or (personal draws) within a preferred genre.
    order = np.argsort(genre, kind="stable")
    cw = np.cumsum(popularity[order])
    items = order[_draw_by_weight(cw, np.zeros(m), np.full(m, cw[-1]), rng)]
    personal = np.flatnonzero(rng.random(m) < cal.personal)
    cum = np.cumsum(prefs, axis=1)
    cum[:, -1] = 1.0
    pu = users[personal]
    g = np.empty(pu.size, dtype=np.int64)
    step = 1_000_000
    for s in range(0, pu.size, step):
        g[s:s + step] = (rng.random(min(step, pu.size - s))[:, None] > cum[pu[s:s + step]]).sum(1)
    bounds = np.searchsorted(genre[order], np.arange(G + 1))
    lo = np.where(bounds[:-1] > 0, cw[np.maximum(bounds[:-1] - 1, 0)], 0.0)
    hi = cw[np.maximum(bounds[1:] - 1, 0)]
    items[personal] = order[_draw_by_weight(cw, lo[g], hi[g], rng)]

    # One review per (user, book); keep a random subset of the requested size.
    keys = users.astype(np.int64) * ni + items
    _, first = np.unique(keys, return_index=True)
    keep = rng.permutation(first)[:n]
    users, items = users[keep], items[keep]

    # Ratings: a latent score cut into stars at the quantiles of the real shares.
    genre_factors = rng.normal(0, 1, size=(G, _K))
    gamma_i = (0.8 * genre_factors[genre] + 0.6 * rng.normal(0, 1, size=(ni, _K)))
    gamma_u = rng.normal(0, 1, size=(nu, _K))
    b_u = rng.normal(0, cal.user_bias, size=nu)
    b_i = rng.normal(0, cal.item_bias, size=ni)
    taste = np.einsum("nk,nk->n", gamma_u[users], gamma_i[items]) / np.sqrt(_K)
    score = (b_u[users] + b_i[items] + cal.taste * taste
             + rng.normal(0, cal.noise, size=users.size))
    shares = np.cumsum(cal.stars) / np.sum(cal.stars)
    cuts = np.quantile(score, shares[:-1])
    ratings = 1 + np.searchsorted(cuts, score, side="right")
    habit = np.where(rng.random(nu) < cal.zero_users, cal.zero_habit, cal.zero_rare)
    ratings = np.where(rng.random(users.size) < habit[users], 0, ratings)
    return users, items, ratings.astype(np.int64)


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


def _draw_ids(spec: SampleSpec, rng: np.random.Generator):
    """Made-up user IDs (hex, as the real ones) and book IDs (numbers, as the real ones)."""
    user_ids = _hex_ids(rng, spec.n_users)
    book_ids = (rng.choice(36_000_000, size=spec.n_items, replace=False) + 1).astype(str)
    return user_ids, book_ids


def _review_lines(spec: SampleSpec, rng: np.random.Generator, python_literals: bool,
                  progress: bool, triples=None, ids=None, info=None):
    """The review records, in chunks of bytes; ``ids`` (user IDs, book IDs) are drawn
    unless given; ``info`` (a dict) receives the items' planted genres and book IDs."""
    from .progress import tqdm

    users, items, ratings = (triples if triples is not None
                             else generate_interactions(spec, rng, info=info))
    n = users.size
    user_ids, book_ids = ids if ids is not None else _draw_ids(spec, rng)
    if info is not None:
        info["book_ids"] = book_ids
    review_ids = _hex_ids(rng, n)
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


def _tsv_lines(spec: SampleSpec, rng: np.random.Generator, triples=None, ids=None, info=None):
    users, items, ratings = (triples if triples is not None
                             else generate_interactions(spec, rng, info=info))
    rated = ratings > 0  # the TSV holds star ratings only, 1..5
    users, items, ratings = users[rated], items[rated], ratings[rated]
    user_ids, book_ids = ids if ids is not None else _draw_ids(spec, rng)
    if info is not None:
        info["book_ids"] = book_ids
    step = 200_000
    for s in range(0, users.size, step):
        rows = zip(user_ids[users[s:s + step]], book_ids[items[s:s + step]], ratings[s:s + step])
        yield "".join(f"{u}\t{i}\t{r}\n" for u, i, r in rows).encode()


def make_sample(out_dir: str | os.PathLike, size: str = "sample", seed: int = 0,
                names=None, python_literals: bool = False, progress: bool = True,
                lab: bool = True) -> list[Path]:
    """Write the synthetic files into ``out_dir`` and return their paths.

    Parameters
    ----------
    size : {"sample", "full"}
        ``sample`` for the bundled files; ``full`` for files with the real files' shapes.
    seed : int
        Same seed and size give byte-identical files.
    names : iterable of str, optional
        Which datasets to write (default: all three).  The book metadata of the files
        written (generated titles and genres, in the UCSD formats) is written beside them.
    python_literals : bool
        Write review records as Python dict literals instead of JSON (as some course
        copies of the real files are).
    lab : bool
        With all three files at the ``sample`` size, also write the taste laboratory
        into ``out_dir/lab`` (see :mod:`recsys_helpers.lab`).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, not {size!r}")
    out_dir = Path(out_dir)
    wanted = list(names) if names else list(REGISTRY)
    seeds = dict(zip(REGISTRY, np.random.SeedSequence(seed).spawn(len(REGISTRY))))
    level = 6 if size == "sample" else 1
    written, books = [], {}
    for name in wanted:
        ds = REGISTRY[name]
        spec = SIZES[size][name]
        rng = np.random.default_rng(seeds[name])
        path = out_dir / ds.filename
        info = {}
        if ds.format == "tsv":
            _write_bytes(path, _tsv_lines(spec, rng, info=info), gz=False)
        else:
            _write_bytes(path, _review_lines(spec, rng, python_literals, progress, info=info),
                         gz=True, level=level)
        if progress:
            print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
        written.append(path)
        ids, genres = books.setdefault(METADATA_FOR[name], ([], []))
        ids.extend(info["book_ids"])
        genres.extend(SAMPLE_GENRES[g] for g in info["genre"])
    # Titles and genres of the books, drawn from a stream of their own (the files above
    # stay what they were); then the taste laboratory beside the sample.
    meta_rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(79,)))
    written += write_book_metadata(out_dir, books, meta_rng)
    if lab and names is None and size == "sample":
        from .lab import make_lab

        written += make_lab(out_dir / "lab", seed=seed, progress=progress)
    return written


def write_interactions(out_dir: str | os.PathLike, users, items, ratings, seed: int = 0,
                       names=None) -> list[Path]:
    """Write given (user, item, rating) index triples as the course's files, in the real
    formats (for small hand-made folders, e.g. edge cases).

    ``users`` and ``items`` are integer indices (each pair at most once), ``ratings`` the
    ratings 0..5; IDs, dates and review text are made up with ``seed``.  The TSV keeps the
    ratings 1..5 only, as the real one.
    """
    users, items, ratings = (np.asarray(a, dtype=np.int64) for a in (users, items, ratings))
    if not users.size == items.size == ratings.size:
        raise ValueError("users, items and ratings must have the same length")
    out_dir = Path(out_dir)
    spec = SampleSpec(int(users.max()) + 1, int(items.max()) + 1, users.size, (0.0, 0.5))
    written = []
    for name in (list(names) if names else list(REGISTRY)):
        ds = REGISTRY[name]
        rng = np.random.default_rng(seed)
        path = out_dir / ds.filename
        triples = (users, items, ratings)
        if ds.format == "tsv":
            _write_bytes(path, _tsv_lines(spec, rng, triples), gz=False)
        else:
            _write_bytes(path, _review_lines(spec, rng, False, False, triples), gz=True)
        written.append(path)
    return written
