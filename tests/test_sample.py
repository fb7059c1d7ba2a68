"""Tests of recsys_helpers.sample: determinism, formats, and the calibration.

The calibration tests check the sample's side of the table in data/README.md: the
statistics of a real Goodreads ratings file (rating shares, mean, variance, ratings per
user and per book) and the comparisons the course teaches, with the direction and rough
size they have on the real file: biases beat the mean by 13-25 %, tuned latent factors add
almost nothing, popularity ranks well, BPR in TensorFlow beats it narrowly, and
``implicit``'s BPR with its default settings does not.  Rating models are fitted in closed
form (alternating least squares), not with TensorFlow; the one BPR check trains the
course's TensorFlow model for its 100 steps.  Controls with the structure destroyed
(ratings or items shuffled) must fail the same checks.
"""

from __future__ import annotations

import ast
import gzip
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_helpers import interactions as ix
from recsys_helpers import metrics
from recsys_helpers.datasets import (
    REGISTRY,
    REVIEW_FIELDS,
    load_ratings_tsv,
    load_reviews,
    sample_dir,
)
from recsys_helpers.sample import make_sample

FILES = [ds.filename for ds in REGISTRY.values()]
#: The generated book metadata beside them (titles; genres), in the UCSD formats.
METADATA = ["goodreads_books_comics_graphic.json.gz", "goodreads_books_fantasy_paranormal.json.gz",
            "goodreads_book_genres_initial.json.gz"]
#: The taste laboratory, in data/lab/: the same three files, the metadata and the truth.
LAB = FILES + METADATA + ["planted_tastes.json"]
COMICS = REGISTRY["comics_reviews"].filename
FANTASY = REGISTRY["fantasy_reviews"].filename
TSV = REGISTRY["fantasy_tsv"].filename


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    """All three files as ``make_sample(seed=0)`` writes them, their metadata and the
    laboratory."""
    out = tmp_path_factory.mktemp("seed0")
    paths = make_sample(out, seed=0, progress=False)
    assert [p.name for p in paths][:len(FILES)] == FILES
    assert sorted(p.name for p in paths) == sorted(FILES + METADATA + LAB)
    assert sorted(f.name for f in out.iterdir()) == sorted(FILES + METADATA + ["lab"])
    assert sorted(f.name for f in (out / "lab").iterdir()) == sorted(LAB)  # no leftovers
    return out


def _lines(path) -> list[bytes]:
    with gzip.open(path, "rb") as fh:
        return fh.read().splitlines()


# --------------------------------------------------------------------------- determinism


def test_different_seed_gives_different_files(seed0, tmp_path):
    paths = make_sample(tmp_path, seed=1, names=["comics_reviews", "fantasy_tsv"],
                        progress=False)
    for p in paths:
        assert p.read_bytes() != (seed0 / p.name).read_bytes(), p.name


def test_bundled_sample_is_current(seed0):
    """The committed files are exactly what ``make_sample(seed=0)`` writes today: the
    same seed gives byte-identical files, and data/ is up to date."""
    stale = [f for f in FILES + METADATA + [f"lab/{name}" for name in LAB]
             if (sample_dir() / f).read_bytes() != (seed0 / f).read_bytes()]
    assert not stale, (f"data/ is stale for {stale}: regenerate it with "
                       "`python -m recsys_helpers make-sample`")


def test_make_sample_bad_size(tmp_path):
    with pytest.raises(ValueError):
        make_sample(tmp_path, size="medium", progress=False)


# --------------------------------------------------------------------------- formats


@pytest.mark.parametrize("filename", [COMICS, FANTASY])
def test_review_records_have_the_real_fields(seed0, filename):
    lines = _lines(seed0 / filename)
    assert len(lines) > 10_000
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert list(rec) == list(REVIEW_FIELDS)
    ratings = np.array([r["rating"] for r in records])
    assert all(type(r["rating"]) is int for r in records)
    assert ratings.min() == 0 and ratings.max() == 5
    assert set(np.unique(ratings).tolist()) == {0, 1, 2, 3, 4, 5}
    zero = (ratings == 0).mean()
    assert 0.005 < zero < 0.1  # a few reviews without a star rating
    for field in ("n_votes", "n_comments"):
        values = [r[field] for r in records]
        assert all(type(v) is int and v >= 0 for v in values)
    for field in ("user_id", "review_id"):
        values = [r[field] for r in records[:500]]
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in values)
    assert all(r["book_id"].isdigit() for r in records[:500])
    assert len({r["review_id"] for r in records}) == len(records)
    pairs = {(r["user_id"], r["book_id"]) for r in records}
    assert len(pairs) == len(records)  # one review per user and book
    assert all(isinstance(r["review_text"], str) and r["review_text"] for r in records[:500])


def test_tsv_ratings(seed0):
    text = (seed0 / TSV).read_text()
    rows = [line.split("\t") for line in text.splitlines()]
    assert len(rows) > 10_000
    assert all(len(r) == 3 for r in rows)
    ratings = np.array([int(r[2]) for r in rows])
    assert set(np.unique(ratings).tolist()) == {1, 2, 3, 4, 5}
    df = load_ratings_tsv(seed0 / TSV)
    assert len(df) == len(rows)


def test_python_literals(seed0, tmp_path):
    path, *_metadata = make_sample(tmp_path, seed=0, names=["comics_reviews"],
                                   python_literals=True, progress=False)
    literal_lines = _lines(path)
    json_lines = _lines(seed0 / COMICS)
    assert len(literal_lines) == len(json_lines)
    first = literal_lines[0].decode()
    assert first.startswith("{'user_id': ")
    with pytest.raises(ValueError):
        json.loads(first)
    assert list(ast.literal_eval(first)) == list(REVIEW_FIELDS)
    # Every 8th record across the file (literal_eval of all 40k takes seconds): the
    # literal records load exactly as the JSON ones.
    picks = slice(0, None, 8)
    sub_literal = tmp_path / "literal.json.gz"
    sub_literal.write_bytes(gzip.compress(b"\n".join(literal_lines[picks]) + b"\n"))
    sub_json = tmp_path / "json.json.gz"
    sub_json.write_bytes(gzip.compress(b"\n".join(json_lines[picks]) + b"\n"))
    literal = load_reviews(sub_literal, REVIEW_FIELDS, cache=False)
    as_json = load_reviews(sub_json, REVIEW_FIELDS, cache=False)
    assert len(literal) == len(json_lines[picks])
    pd.testing.assert_frame_equal(literal, as_json)


# --------------------------------------------------------------------------- calibration

#: The real Goodreads ratings file the sample is calibrated against (200,000 ratings 0-5
#: from the UCSD Goodreads data, 27,943 users x 6,688 books), and the figures the course's
#: code gets on it; data/README.md shows them beside the sample's.
REAL = {
    "shares": (5.4, 2.2, 6.2, 21.7, 33.5, 31.0),  # % of ratings 0, 1, ..., 5
    "mean": 3.69,
    "variance": 1.74,
    "per_user": (3, 4, 6, 9, 13, 24),  # ratings per user at QUANTILES
    "per_book": (4, 6, 11, 26, 65, 309),
    "bias_over_mean": 1.465 / 1.743,
    "popularity_auc": 0.820,
}
QUANTILES = (10, 25, 50, 75, 90, 99)


@pytest.fixture(scope="module")
def comics():
    return load_reviews(sample_dir() / COMICS, cache=False)


@pytest.fixture(scope="module")
def fantasy():
    return load_reviews(sample_dir() / FANTASY, cache=False)


@pytest.fixture(scope="module")
def tsv():
    return load_ratings_tsv(sample_dir() / TSV)


def _shares(ratings, values) -> np.ndarray:
    r = np.asarray(ratings)
    return np.array([(r == v).mean() * 100 for v in values])


@pytest.mark.parametrize("which", ["comics", "fantasy"])
def test_rating_shares_mean_and_variance_match_the_real_file(which, request):
    r = request.getfixturevalue(which)["rating"].to_numpy(float)
    assert np.abs(_shares(r, range(6)) - REAL["shares"]).max() < 1.0, _shares(r, range(6))
    assert abs(r.mean() - REAL["mean"]) < 0.05, r.mean()
    assert abs(r.var() - REAL["variance"]) < 0.1, r.var()


def test_tsv_holds_the_star_ratings_with_the_real_shares(tsv):
    r = tsv["rating"].to_numpy(float)
    stars = np.array(REAL["shares"][1:]) / sum(REAL["shares"][1:]) * 100
    assert set(np.unique(r)) == {1, 2, 3, 4, 5}
    assert np.abs(_shares(r, range(1, 6)) - stars).max() < 1.0, _shares(r, range(1, 6))


def _close_quantiles(counts, real, factor=1.4) -> bool:
    q = np.percentile(counts, QUANTILES)
    return bool(np.all(np.abs(np.log(q / np.array(real))) <= np.log(factor)))


@pytest.mark.parametrize("which", ["comics", "fantasy", "tsv"])
def test_activity_is_as_heavy_tailed_as_on_the_real_file(which, request):
    df = request.getfixturevalue(which)
    user, book = ("user", "item") if which == "tsv" else ("user_id", "book_id")
    per_user, per_book = df[user].value_counts(), df[book].value_counts()
    assert _close_quantiles(per_user, REAL["per_user"]), np.percentile(per_user, QUANTILES)
    assert _close_quantiles(per_book, REAL["per_book"]), np.percentile(per_book, QUANTILES)
    # Control: the same number of ratings spread evenly is not heavy-tailed.
    even = np.random.default_rng(0).multinomial(len(df), np.full(per_book.size, 1 / per_book.size))
    assert not _close_quantiles(even, REAL["per_book"])


def _fit_biases(train: ix.Interactions, lam: float = 5.0, rounds: int = 10):
    """Alternating least squares for ``mu + b_u + b_i`` with penalty ``lam * |b|^2``."""
    mu = ix.training_mean(train)
    n_u = np.bincount(train.user, minlength=train.n_users)
    n_i = np.bincount(train.item, minlength=train.n_items)
    b_u, b_i = np.zeros(train.n_users), np.zeros(train.n_items)
    for _ in range(rounds):
        b_u = np.bincount(train.user, weights=train.rating - mu - b_i[train.item],
                          minlength=train.n_users) / (lam + n_u)
        b_i = np.bincount(train.item, weights=train.rating - mu - b_u[train.user],
                          minlength=train.n_items) / (lam + n_i)
    return mu, b_u, b_i


def _ridge_per_row(rows, cols, target, feats, n_rows, lam_bias, lam_factors):
    """For every row r, ridge-regress ``target`` on ``[1, feats[c]]`` over its pairs, with
    penalty ``lam_bias`` on the intercept and ``lam_factors`` on the weights.

    Returns the intercepts (biases) and the weights (factors) of all rows at once.
    """
    x = np.hstack([np.ones((feats.shape[0], 1)), feats])[cols]
    d = x.shape[1]
    member = sp.csr_matrix((np.ones(rows.size), (rows, np.arange(rows.size))),
                           shape=(n_rows, rows.size))
    gram = (member @ np.einsum("nd,ne->nde", x, x).reshape(rows.size, d * d))
    gram = gram.reshape(n_rows, d, d) + np.diag([lam_bias] + [lam_factors] * (d - 1))
    w = np.linalg.solve(gram, (member @ (x * target[:, None]))[..., None])[..., 0]
    return w[:, 0], w[:, 1:]


def _fit_low_rank(train: ix.Interactions, lam_bias: float, lam_factors: float, k: int = 5,
                  sweeps: int = 8):
    """ALS for ``mu + b_u + b_i + gamma_u . gamma_i``, separate penalties."""
    mu, b_u, b_i = _fit_biases(train, lam_bias)
    g_i = 0.1 * np.random.default_rng(0).normal(size=(train.n_items, k))
    for _ in range(sweeps):
        b_u, g_u = _ridge_per_row(train.user, train.item, train.rating - mu - b_i[train.item],
                                  g_i, train.n_users, lam_bias, lam_factors)
        b_i, g_i = _ridge_per_row(train.item, train.user, train.rating - mu - b_u[train.user],
                                  g_u, train.n_items, lam_bias, lam_factors)
    return lambda s: (mu + b_u[s.user] + b_i[s.item]
                      + np.einsum("nk,nk->n", g_u[s.user], g_i[s.item]))


def _rating_mses(data: ix.Interactions) -> dict[str, float]:
    """Test MSE of the mean, the bias-only and the low-rank model on a 90/10 split; the
    penalties chosen on a validation split carved from the training part."""
    train, test = ix.train_test_split(data, test_size=0.1, seed=0)
    fit_part, validation = ix.train_test_split(train, test_size=0.1, seed=1)
    mean = metrics.mse(np.full(len(test), ix.training_mean(train)), test.rating)

    def biases(split, lam):
        mu, b_u, b_i = _fit_biases(split, lam)
        return lambda s: mu + b_u[s.user] + b_i[s.item]

    def val(predict):
        return metrics.mse(predict(validation), validation.rating)

    lam = min((1.0, 3.0, 10.0, 30.0), key=lambda lam: val(biases(fit_part, lam)))
    lam_f = min((3.0, 30.0, 300.0), key=lambda lf: val(_fit_low_rank(fit_part, lam, lf)))
    return {"mean": mean,
            "bias": metrics.mse(biases(train, lam)(test), test.rating),
            "low_rank": metrics.mse(_fit_low_rank(train, lam, lam_f)(test), test.rating)}


@pytest.fixture(scope="module", params=["comics", "tsv"])
def rating_mses(request):
    df = request.getfixturevalue(request.param)
    user, item = ("user", "item") if request.param == "tsv" else ("user_id", "book_id")
    data = ix.Interactions.from_frame(df, user=user, item=item)
    shuffled = ix.Interactions.from_frame(df, user=user, item=item)
    shuffled.rating = np.random.default_rng(0).permutation(shuffled.rating)
    return _rating_mses(data), _rating_mses(shuffled)


def test_biases_beat_the_mean_by_as_much_as_on_real_data(rating_mses):
    # Real file: bias-only 0.84 of always-the-mean (the book's comics: 1.000 / 1.327 = 0.75).
    m, control = rating_mses
    assert 0.75 <= m["bias"] / m["mean"] <= 0.87, m
    assert control["bias"] / control["mean"] > 0.97, control  # no biases to find


def test_tuned_latent_factors_add_almost_nothing(rating_mses):
    # Real file: a tuned K=10 model equals bias-only (1.465 / 1.465).
    m, _ = rating_mses
    assert abs(m["low_rank"] / m["bias"] - 1) < 0.03, m


def _popularity_auc(train, test, interacted):
    popularity = np.bincount(train.item, minlength=train.n_items).astype(float)
    return metrics.auc_sampled(lambda u, i: popularity[i], test.user, test.item, interacted)


def _implicit_split(df):
    data = ix.Interactions.from_frame(df, rating=None)
    train, test = ix.train_test_split(data, test_size=0.1, seed=0)
    return data, train, test, ix.PositiveSet(data.user, data.item, data.n_items)


@pytest.mark.parametrize("which", ["comics", "fantasy"])
def test_popularity_ranks_as_well_as_on_real_data(which, request):
    data, train, test, interacted = _implicit_split(request.getfixturevalue(which))
    auc = _popularity_auc(train, test, interacted)
    assert abs(auc - REAL["popularity_auc"]) < 0.04, auc


def _cooccurrence_auc(data: ix.Interactions):
    """Exact AUC of item-item co-occurrence with the user's training items, and popularity's."""
    train, test = ix.train_test_split(data, test_size=0.1, seed=0)
    r, t = train.csr(), test.csr()
    popularity = np.asarray(r.sum(axis=0)).ravel()
    co = (r.T @ r).toarray()
    np.fill_diagonal(co, 0)
    return (metrics.auc_exact(lambda u: np.asarray(r[u] @ co) + 1e-3 * popularity, r, t),
            metrics.auc_exact(lambda u: np.tile(popularity, (len(u), 1)), r, t))


def test_there_is_a_little_to_learn_beyond_popularity(fantasy):
    data = ix.Interactions.from_frame(fantasy, rating=None)
    affinity, popularity = _cooccurrence_auc(data)
    assert popularity < affinity < popularity + 0.05, (affinity, popularity)
    # Control: items shuffled across interactions keep popularity, lose affinity.
    data.item = np.random.default_rng(0).permutation(data.item)
    affinity, popularity = _cooccurrence_auc(data)
    assert affinity <= popularity, (affinity, popularity)


def test_tensorflow_bpr_beats_popularity_narrowly(comics):
    # Real file: 0.831 against popularity's 0.820, with the book's settings (notebook 4).
    from recsys_helpers.models import BPRModel, fit, make_train_step, tf

    data, train, test, interacted = _implicit_split(comics)
    model = BPRModel(data.n_users, data.n_items, 5, 1e-5, seed=0)
    fit(make_train_step(model, tf.keras.optimizers.Adam(0.1)),
        ix.bpr_batches(train, 50_000, 0), 100, every=100, progress=False)
    bpr = metrics.auc_sampled(lambda u, i: model.score(u, i).numpy(), test.user, test.item,
                              interacted)
    popularity = _popularity_auc(train, test, interacted)
    assert popularity < bpr < popularity + 0.05, (bpr, popularity)


def test_implicit_default_bpr_ranks_below_popularity(fantasy):
    # Real file: 0.458 against popularity's 0.820 (negatives drawn by popularity).
    from implicit.bpr import BayesianPersonalizedRanking

    data, train, test, interacted = _implicit_split(fantasy)
    model = BayesianPersonalizedRanking(factors=5, random_state=0, num_threads=1)
    model.fit(train.csr(), show_progress=False)
    U, V = model.user_factors, model.item_factors
    auc = metrics.auc_sampled(lambda u, i: np.einsum("nk,nk->n", U[u], V[i]), test.user,
                              test.item, interacted)
    assert auc < _popularity_auc(train, test, interacted) - 0.05, auc
