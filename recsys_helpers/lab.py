"""The taste laboratory: a small synthetic world where taste is planted and known.

The Goodreads-like sample (``data/``) behaves like the real files: ratings are sparse
(about seven per user), so a latent factor model learns little beyond the biases and
popularity is hard to beat.  That is the truth of that data, and it hides what the models
*can* learn.  The laboratory (``data/lab/``) is the opposite on purpose:

* ``n_items`` books in six genres; each genre sits at an angle on a circle (neighbouring
  genres are related: fantasy next to young-adult, mystery next to history), and each book
  at its genre's angle plus a little noise;
* each user has a *favourite genre* and a taste angle near it, and a taste strength;
  a user's *affinity* for a book is ``strength * cos(taste angle - book angle)``: 1 for the
  books of the taste, 0 a quarter-turn away, negative opposite;
* which books a user reads: about ``per_user`` books, each drawn without replacement with
  weight ``popularity * exp(pull * affinity)``, so about half of them from the favourite
  genre and its neighbours, the rest spread by popularity;
* a rating: ``user bias + book bias + taste * affinity + noise``, cut into 1-5 stars
  (no rating 0 here) at the shares of the real Goodreads ratings.

Three draws from this one world are written in the three course formats
(``goodreads_fantasy.tsv`` and the two review files; the same users and books), beside
generated book metadata (titles and genres in the UCSD formats) and the truth
(``planted_tastes.json``: every user's favourite genre, every book's genre).  The files are
deterministic: ``python -m recsys_helpers make-sample`` writes the same bytes each time.

A two-dimensional taste (an angle) is all there is to learn, so a model with K >= 2 factors
can recover it: on the laboratory the item factors, projected to two dimensions, separate
the genres, and a user's top-10 comes mostly from the favourite genre.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["LabSpec", "LAB_SPEC", "LAB_GENRES", "TRUTH_FILE", "make_lab", "generate_world",
           "planted", "genre_hit_rate", "genre_hit_rate_at_k"]

#: The laboratory's genres, in their order around the circle (UCSD genre names).
LAB_GENRES = ("fantasy, paranormal", "young-adult", "romance", "fiction",
              "history, historical fiction, biography", "mystery, thriller, crime")

#: The file holding the planted truth, beside the laboratory's data files.
TRUTH_FILE = "planted_tastes.json"


@dataclass(frozen=True)
class LabSpec:
    """The laboratory's size and how strong its planted taste is."""

    n_users: int = 1_000
    n_items: int = 300
    #: books read per user: ``per_user_min + lognormal``, mean about ``per_user``
    per_user: int = 30
    per_user_min: int = 8
    #: spread (radians) of a user's taste angle around the favourite genre, and of a
    #: book's angle around its genre's
    user_spread: float = 0.25
    item_spread: float = 0.15
    #: how strongly affinity pulls a user's reading (0: popularity alone)
    pull: float = 1.6
    #: log-normal sigma of book popularity
    popularity_sigma: float = 0.6
    #: the rating's latent score: standard deviations of the biases and the noise, and
    #: the weight of the taste term
    user_bias: float = 0.35
    item_bias: float = 0.35
    taste: float = 2.0
    noise: float = 0.3
    #: shares of the 1..5 stars (the real Goodreads shares among rated reviews)
    stars: tuple = (2.2, 6.2, 21.7, 33.5, 31.0)


LAB_SPEC = LabSpec()


def generate_world(spec: LabSpec = LAB_SPEC, seed: int = 0):
    """The laboratory's world: users, books, their planted genres and the affinities.

    Returns a dict with ``favourite`` (each user's favourite genre, 0..5), ``genre`` (each
    book's genre), ``affinity`` (users x books), ``popularity`` (books) and the biases.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(77,)))
    G = len(LAB_GENRES)
    nu, ni = spec.n_users, spec.n_items
    genre = rng.permutation(np.arange(ni) % G)
    favourite = rng.integers(G, size=nu)
    centre = 2 * np.pi * np.arange(G) / G
    book_angle = centre[genre] + rng.normal(0, spec.item_spread, size=ni)
    user_angle = centre[favourite] + rng.normal(0, spec.user_spread, size=nu)
    strength = rng.uniform(0.7, 1.3, size=nu)
    affinity = strength[:, None] * np.cos(user_angle[:, None] - book_angle[None, :])
    popularity = np.exp(spec.popularity_sigma * rng.normal(size=ni))
    return {"favourite": favourite, "genre": genre, "affinity": affinity,
            "popularity": popularity,
            "user_bias": rng.normal(0, spec.user_bias, size=nu),
            "item_bias": rng.normal(0, spec.item_bias, size=ni)}


def _draw(world: dict, spec: LabSpec, rng: np.random.Generator):
    """One draw of (user, item, rating) index triples from the world."""
    nu, ni = world["affinity"].shape
    extra = spec.per_user - spec.per_user_min
    counts = spec.per_user_min + np.rint(
        extra * rng.lognormal(0, 0.6, size=nu) / np.exp(0.18)).astype(np.int64)
    counts = np.minimum(counts, ni // 2)
    # Weighted sampling without replacement: the top-n of log(weight) + Gumbel noise.
    logw = np.log(world["popularity"])[None, :] + spec.pull * world["affinity"]
    keys = logw + rng.gumbel(size=(nu, ni))
    order = np.argsort(-keys, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(ni)[None, :].repeat(nu, 0), axis=1)
    users, items = np.nonzero(rank < counts[:, None])
    score = (world["user_bias"][users] + world["item_bias"][items]
             + spec.taste * world["affinity"][users, items]
             + rng.normal(0, spec.noise, size=users.size))
    shares = np.cumsum(spec.stars) / np.sum(spec.stars)
    ratings = 1 + np.searchsorted(np.quantile(score, shares[:-1]), score, side="right")
    shuffle = rng.permutation(users.size)
    return users[shuffle], items[shuffle], ratings[shuffle].astype(np.int64)


def make_lab(out_dir: str | os.PathLike, seed: int = 0, spec: LabSpec = LAB_SPEC,
             progress: bool = True) -> list[Path]:
    """Write the taste laboratory into ``out_dir`` (the course's three files, the book
    metadata and ``planted_tastes.json``) and return the paths."""
    from .books import write_book_metadata
    from .datasets import REGISTRY
    from .sample import SampleSpec, _draw_ids, _review_lines, _tsv_lines, _write_bytes

    out_dir = Path(out_dir)
    world = generate_world(spec, seed)
    streams = np.random.SeedSequence(seed, spawn_key=(78,)).spawn(len(REGISTRY) + 1)
    ids_rng = np.random.default_rng(streams[-1])
    shape = SampleSpec(spec.n_users, spec.n_items, 0, (0.0, 0.0))
    user_ids, book_ids = _draw_ids(shape, ids_rng)
    written = []
    for name, stream in zip(REGISTRY, streams):
        rng = np.random.default_rng(stream)
        triples = _draw(world, spec, rng)
        path = out_dir / REGISTRY[name].filename
        if REGISTRY[name].format == "tsv":
            _write_bytes(path, _tsv_lines(shape, rng, triples, ids=(user_ids, book_ids)),
                         gz=False)
        else:
            _write_bytes(path, _review_lines(shape, rng, False, False, triples,
                                             ids=(user_ids, book_ids)), gz=True)
        written.append(path)
    genres = [LAB_GENRES[g] for g in world["genre"]]
    written += write_book_metadata(out_dir, {"comics_books": (book_ids, genres),
                                             "fantasy_books": (book_ids, genres)}, ids_rng)
    truth = {"description": "The taste laboratory's planted truth (synthetic data): each "
                            "user's favourite genre and each book's genre.",
             "genres": list(LAB_GENRES),
             "favourite_genre": {u: LAB_GENRES[g] for u, g in zip(user_ids, world["favourite"])},
             "book_genre": {b: LAB_GENRES[g] for b, g in zip(book_ids, world["genre"])}}
    path = out_dir / TRUTH_FILE
    _write_bytes(path, [json.dumps(truth, indent=0, sort_keys=True).encode()], gz=False)
    written.append(path)
    if progress:
        for p in written:
            print(f"wrote {p} ({p.stat().st_size / 1e6:.2f} MB)")
    return written


class Planted:
    """The laboratory's truth: ``favourite_genre`` (by user ID) and ``book_genre`` (by book
    ID), both pandas Series, and ``genres`` in their order around the circle."""

    def __init__(self, truth: dict):
        self.genres = tuple(truth["genres"])
        self.favourite_genre = pd.Series(truth["favourite_genre"], name="favourite genre")
        self.book_genre = pd.Series(truth["book_genre"], name="genre")

    def __repr__(self) -> str:
        return (f"Planted({len(self.favourite_genre):,} users, {len(self.book_genre):,} books, "
                f"genres: {' | '.join(self.genres)})")


@lru_cache(maxsize=4)
def _read_truth(path: str) -> Planted:
    with open(path, encoding="utf-8") as fh:
        return Planted(json.load(fh))


def planted(folder: str | os.PathLike | None = None) -> Planted:
    """The planted truth of the laboratory in ``folder`` (default ``data/lab/``)."""
    from .datasets import lab_dir

    path = Path(folder or lab_dir()) / TRUTH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; write the laboratory with "
                                "`python -m recsys_helpers make-sample`")
    return _read_truth(str(path))


def genre_hit_rate(user_ids, top_book_ids, truth: Planted | None = None) -> float:
    """The share of recommended books that belong to their user's planted favourite genre.

    Parameters
    ----------
    user_ids : sequence of str
        The users (laboratory IDs).
    top_book_ids : 2-D array-like of str
        Row ``n`` holds the books recommended to ``user_ids[n]`` (e.g. the top 10).

    With six genres of equal size, recommending at random scores about 1/6.
    """
    truth = truth or planted()
    top = np.asarray(top_book_ids, dtype=object)
    favourite = truth.favourite_genre.reindex([str(u) for u in user_ids]).to_numpy()
    genres = truth.book_genre.reindex([str(b) for b in top.ravel()]).to_numpy()
    return float(np.mean(genres.reshape(top.shape) == favourite[:, None]))


def genre_hit_rate_at_k(score_users, data, train_csr, k: int = 10,
                        truth: Planted | None = None) -> float:
    """:func:`genre_hit_rate` of every user's top-``k`` (books not read in training),
    for a scorer ``score_users(user indices) -> scores`` over ``data``'s index
    (an :class:`~recsys_helpers.interactions.Interactions` of the laboratory)."""
    from .metrics import top_k

    users = np.arange(data.n_users)
    top = top_k(score_users, train_csr, users, k)
    return genre_hit_rate(data.user_ids[users], data.item_ids[top], truth)
