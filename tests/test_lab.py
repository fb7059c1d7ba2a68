"""The taste laboratory, the book metadata, the verdicts and the small pieces that show
what a model learned (top-k lists, the genre hit rate, the 2-D factor map)."""

from __future__ import annotations

import json

import nbformat
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_helpers import books, lab, metrics, verdicts
from recsys_helpers.datasets import bundled_dir, load
from recsys_helpers.interactions import Interactions
from recsys_helpers.plotting import project_2d
from recsys_helpers.results import record
from recsys_helpers.runner import collapse_progress

# ------------------------------------------------------------------ the laboratory


@pytest.fixture(scope="module")
def truth():
    return lab.planted()


def test_laboratory_is_labelled_and_in_the_course_formats(capsys):
    df = load("comics_reviews", ["user_id", "book_id", "rating"], lab=True)
    assert "taste laboratory" in capsys.readouterr().out
    assert df["rating"].between(1, 5).all()  # no review without stars in the laboratory
    tsv = load("fantasy_tsv", lab=True, verbose=False)
    assert (tsv["user"].nunique(), tsv["item"].nunique()) == (lab.LAB_SPEC.n_users,
                                                              lab.LAB_SPEC.n_items)
    # Denser than the Goodreads-like sample, by design: about 30 ratings per user, not 7.
    assert 20 < len(tsv) / tsv["user"].nunique() < 40


def test_planted_truth_covers_every_user_and_book(truth):
    df = load("fantasy_reviews", ["user_id", "book_id"], lab=True, verbose=False)
    assert set(df["user_id"]) <= set(truth.favourite_genre.index)
    assert set(df["book_id"]) == set(truth.book_genre.index)
    assert set(truth.book_genre) == set(truth.genres) == set(lab.LAB_GENRES)
    counts = truth.book_genre.value_counts()
    assert counts.max() - counts.min() <= 1  # genres of equal size


def test_users_read_mostly_near_their_favourite_genre(truth):
    """The planted signal: a user's books come from the favourite genre far more often than
    the one-in-six that popularity alone would give."""
    df = load("fantasy_reviews", ["user_id", "book_id"], lab=True, verbose=False)
    same = (truth.book_genre.reindex(df["book_id"]).to_numpy()
            == truth.favourite_genre.reindex(df["user_id"]).to_numpy())
    assert 0.3 < same.mean() < 0.7


def test_ratings_carry_the_planted_taste(truth):
    """Ratings of the favourite genre are higher than of the opposite one."""
    df = load("fantasy_tsv", lab=True, verbose=False)
    g = truth.book_genre.reindex(df["item"]).map(truth.genres.index).to_numpy()
    f = truth.favourite_genre.reindex(df["user"]).map(truth.genres.index).to_numpy()
    distance = np.minimum((g - f) % 6, (f - g) % 6)  # steps around the circle
    mean_by_distance = pd.Series(df["rating"].to_numpy()).groupby(distance).mean()
    assert mean_by_distance.is_monotonic_decreasing
    assert mean_by_distance[0] - mean_by_distance[3] > 1.0


def test_genre_hit_rate(truth):
    users = truth.favourite_genre.index[:2].tolist()
    fav = truth.favourite_genre[users].tolist()
    in_fav = [truth.book_genre[truth.book_genre == g].index[:4].tolist() for g in fav]
    other = [truth.book_genre[truth.book_genre != g].index[:4].tolist() for g in fav]
    assert lab.genre_hit_rate(users, in_fav, truth) == 1.0
    assert lab.genre_hit_rate(users, other, truth) == 0.0
    mixed = [in_fav[0][:2] + other[0][:2], other[1]]
    assert lab.genre_hit_rate(users, mixed, truth) == 0.25


def test_genre_hit_rate_at_k_of_the_planted_affinity_beats_popularity(truth):
    """Scoring by the planted genre puts the favourite genre on top; popularity does not."""
    df = load("fantasy_reviews", ["user_id", "book_id"], lab=True, verbose=False)
    data = Interactions.from_frame(df, rating=None)
    train = data.csr()
    fav = truth.favourite_genre.reindex(data.user_ids).to_numpy()
    genre = truth.book_genre.reindex(data.item_ids).to_numpy()
    oracle = lab.genre_hit_rate_at_k(
        lambda u: (genre[None, :] == fav[u][:, None]).astype(float), data, train, 10, truth)
    popularity = np.asarray(train.sum(axis=0)).ravel().astype(float)
    pop = lab.genre_hit_rate_at_k(lambda u: np.tile(popularity, (len(u), 1)), data, train,
                                  10, truth)
    assert oracle == 1.0
    assert pop < 0.35


# ------------------------------------------------------------------ top-k lists


def test_top_k_skips_training_items_and_is_sorted():
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    scores = np.array([[9.0, 1.0, 3.0, 2.0], [0.0, 5.0, 4.0, 6.0]])
    top = metrics.top_k(lambda u: scores[u], train, np.array([0, 1]), k=2)
    assert top.tolist() == [[2, 3], [3, 1]]


# ------------------------------------------------------------------ book metadata


def test_bundled_metadata_names_every_book_of_the_sample():
    for name in ("comics_reviews", "fantasy_tsv"):
        df = load(name, ["user_id", "book_id"] if name != "fantasy_tsv" else None,
                  data="sample", verbose=False)
        table = books.book_table(name, verbose=False)
        ids = set(df["book_id" if name != "fantasy_tsv" else "item"].astype(str))
        assert ids <= set(table.index)
        assert (table.loc[list(ids), "genre"] != "").all()
        assert table.loc[list(ids), "title"].str.startswith("The ").all()


def test_laboratory_titles_follow_the_planted_genres(truth):
    table = books.book_table("comics_reviews", lab=True, verbose=False)
    assert (table["genre"] == truth.book_genre.reindex(table.index)).all()
    # the same book has the same title in both titles files
    other = books.book_table("fantasy_reviews", lab=True, verbose=False)
    assert table["title"].equals(other["title"])


def test_without_metadata_books_are_shown_by_id(tmp_path, monkeypatch, capsys):
    from recsys_helpers.sample import write_interactions

    write_interactions(tmp_path, [0, 1, 1], [0, 0, 1], [5, 3, 4], names=["comics_reviews"])
    monkeypatch.setenv("RECSYS_DATA", "full")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    table = books.book_table("comics_reviews", book_ids=["7", "8"])
    assert "No book metadata" in capsys.readouterr().out
    assert table["title"].tolist() == ["7", "8"] and (table["genre"] == "").all()
    shown = books.describe_books(["8"], table, scores=[1.23456])
    assert shown.iloc[0].to_dict() == {"book_id": "8", "title": "8", "genre": "", "score": 1.235}


def test_fetched_metadata_beside_the_real_files_is_used(tmp_path, monkeypatch):
    """Real data reads the metadata beside the real file, never the sample's."""
    from recsys_helpers.sample import write_interactions

    write_interactions(tmp_path, [0, 1], [0, 1], [5, 3], names=["comics_reviews"])
    real_ids = load("comics_reviews", ["book_id"], data="full", data_dir=tmp_path,
                    verbose=False)["book_id"].astype(str).unique()
    books.write_book_metadata(tmp_path, {"comics_books": (real_ids, ["poetry"] * len(real_ids))},
                              np.random.default_rng(0))
    monkeypatch.setenv("RECSYS_DATA", "full")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(tmp_path))
    table = books.book_table("comics_reviews", verbose=False)
    assert sorted(table.index) == sorted(real_ids)
    assert (table["genre"] == "poetry").all()
    assert not (bundled_dir() / "x").exists()


def test_metadata_files_are_safe_to_read(tmp_path):
    """A metadata line is data: a Python expression in it is never evaluated."""
    from recsys_helpers.readers import read_json_lines

    path = tmp_path / "m.json"
    path.write_text('{"book_id": "1", "title": "__import__(\'os\').system(\'false\')"}\n'
                    "__import__('os').system('touch " + str(tmp_path / "pwned") + "')\n")
    with pytest.raises(ValueError):
        list(read_json_lines(path, ("book_id", "title")))
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ verdicts


@pytest.mark.parametrize("value, reference, better, expected", [
    (0.80, 1.00, "lower", "better"), (1.20, 1.00, "lower", "worse"),
    (1.005, 1.00, "lower", "same"), (0.80, 0.70, "higher", "better"),
    (0.60, 0.70, "higher", "worse"), (0.700, 0.7049, "higher", "same")])
def test_outcome(value, reference, better, expected):
    assert verdicts.outcome(value, reference, better) == expected


def test_verdict_sentence_comes_from_the_figures(capsys):
    record("a_mse", 0.712)
    record("b_mse", 0.830)
    found = verdicts.verdict("a_mse", "b_mse", "lower", model_label="the model",
                             baseline_label="the biases", data="Somewhere",
                             because={"better": "Gain {change:+.1%}.", "same": "never"})
    assert found.outcome == "better"
    assert found.sentence == ("Somewhere: the model's test MSE, 0.712, is 14.2% lower than the "
                              "biases', 0.830 (better). Gain -14.2%.")
    assert found.sentence in capsys.readouterr().out
    with pytest.raises(KeyError):
        verdicts.verdict("never_recorded", "b_mse", "lower", model_label="x",
                         baseline_label="y", data="z")


def test_verdicts_show_small_figures_with_significant_digits(capsys):
    record("p_small", 0.00035)
    record("q_small", 0.0002)
    found = verdicts.verdict("p_small", "q_small", "higher", model_label="the model",
                             baseline_label="popularity", data="Somewhere",
                             metric="precision@10")
    assert found.sentence == ("Somewhere: the model's precision@10, 0.00035, is 75.0% higher "
                              "than popularity's, 0.0002 (better).")
    assert verdicts.disagreements({"p_small": 0.00035, "q_small": 0.0002}, [found]) == []
    assert verdicts.shown(0.712) == "0.712" and verdicts.shown(0.0) == "0.000"


def test_verdicts_are_read_back_from_a_notebook():
    payload = {"model": "a", "baseline": "b", "better": "lower", "margin": 0.01,
               "outcome": "same", "sentence": "s"}
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        verdicts.VERDICT_MIME: payload, "text/plain": "s"})]
    nb.cells.append(cell)
    assert verdicts.read_verdicts(json.loads(nbformat.writes(nb))) == [
        verdicts.Verdict(**payload)]


# ------------------------------------------------------------------ pictures, outputs


def test_project_2d_finds_the_plane_of_the_points():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2)) * [3.0, 1.0]
    factors = plane @ rng.normal(size=(2, 5)) + 0.01 * rng.normal(size=(200, 5))
    coords, shares = project_2d(factors)
    assert coords.shape == (200, 2)
    assert shares.sum() > 0.99 and shares[0] > shares[1]


def test_saved_progress_bars_keep_their_last_line():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rbar 0%"),
                    nbformat.v4.new_output("stream", name="stderr", text="\rbar 50%\rbar 100%\n"),
                    nbformat.v4.new_output("stream", name="stdout", text="result 1\n")]
    nb.cells.append(cell)
    collapse_progress(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["bar 100%\n", "result 1\n"]
