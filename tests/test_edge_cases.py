"""The chapter notebooks on small but legal data: they complete and say what they could
not compute, rather than crash.

One folder holds every edge case at once: 299 ratings, users with a single rating, a book
that every user rated, no zero rating, and every rating equal.  Notebook 4 shares its
degenerate-data paths with notebooks 2 and 3 (the metrics' NaN, the tuning helpers) and is
left out to keep this test short.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from recsys_helpers.results import read_results
from recsys_helpers.runner import run_notebook
from recsys_helpers.sample import write_interactions

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.notebooks


def edge_case_triples(seed: int = 0):
    """60 users x 25 books: book 0 rated by every user, every 6th user rated nothing else,
    the others 1-8 more books; every rating is 4."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(60):
        extra = 0 if u % 6 == 0 else int(rng.integers(1, 9))
        chosen = [0, *rng.choice(np.arange(1, 25), size=extra, replace=False).tolist()]
        users += [u] * len(chosen)
        items += chosen
    return np.array(users), np.array(items), np.full(len(users), 4)


@pytest.fixture(scope="module")
def edge_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge")
    write_interactions(folder, *edge_case_triples())
    return folder


def test_the_edge_case_folder_has_every_edge_case(edge_folder):
    users, items, ratings = edge_case_triples()
    assert 200 <= len(users) <= 500
    assert (np.bincount(users) == 1).any()                      # single-rating users
    assert np.unique(users[items == 0]).size == users.max() + 1  # a book everyone rated
    assert (ratings > 0).all() and np.unique(ratings).size == 1  # no zeros, all equal
    lines = (edge_folder / "goodreads_fantasy.tsv").read_text().splitlines()
    assert len(lines) == len(users)


def _run(name, folder, tmp_path, monkeypatch, overrides=""):
    monkeypatch.setenv("RECSYS_DATA", "full")
    monkeypatch.setenv("RECSYS_DATA_DIR", str(folder))
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    if overrides:  # a smaller budget, injected after the parameters as papermill does
        at = next(k for k, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(overrides))
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    executed = run_notebook(path, timeout=300)
    text = json.dumps([c.get("outputs", []) for c in executed.cells if c.cell_type == "code"])
    return read_results(executed), text


def test_surprise_notebook_on_edge_cases(edge_folder, tmp_path, monkeypatch):
    figures, text = _run("01_latent_factor_surprise", edge_folder, tmp_path, monkeypatch)
    assert figures["mse_always_mean"] == pytest.approx(0)
    assert "nothing for a model to learn" in text


def test_implicit_notebook_on_edge_cases(edge_folder, tmp_path, monkeypatch):
    figures, _ = _run("02_bpr_implicit", edge_folder, tmp_path, monkeypatch,
                      "MAX_ITERATIONS = 40\nLEARNING_RATES = (0.01, 0.1)")
    assert figures["n_items"] == 25
    assert 0 <= figures["auc_popularity"] <= 1


def test_tensorflow_lfm_notebook_on_edge_cases(edge_folder, tmp_path, monkeypatch):
    figures, text = _run("03_latent_factor_tensorflow", edge_folder, tmp_path, monkeypatch,
                         "STEPS = 10\nMAX_STEPS = 10\nLAMBDA_BIASES = (1e-4,)\n"
                         "LAMBDA_FACTORS = (1e-3,)")
    assert figures["mse_always_mean"] == pytest.approx(0)
    assert "nothing for a model to learn" in text
