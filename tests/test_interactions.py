"""Tests of recsys_helpers.interactions: indexing, splits, sparse matrices, sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recsys_helpers.interactions import (
    Interactions,
    PositiveSet,
    index_ids,
    per_user_items,
    sample_negatives,
    to_csr,
    train_test_split,
    training_mean,
)


def _random_interactions(n=500, n_users=40, n_items=30, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "user_id": [f"u{k}" for k in rng.integers(n_users, size=n)],
        "book_id": [f"b{k}" for k in rng.integers(n_items, size=n)],
        "rating": rng.integers(0, 6, size=n).astype(np.int32),
    })
    return Interactions.from_frame(df)


# --------------------------------------------------------------------------- index_ids


def test_index_ids_order_of_first_appearance():
    values = ["c", "a", "c", "b", "a", "d"]
    codes, uniques = index_ids(values)
    assert codes.tolist() == [0, 1, 0, 2, 1, 3]
    assert uniques.tolist() == ["c", "a", "b", "d"]
    assert codes.dtype == np.int32
    assert uniques[codes].tolist() == values


def test_index_ids_round_trip_random():
    rng = np.random.default_rng(3)
    values = rng.choice([f"id{k}" for k in range(200)], size=5_000)
    codes, uniques = index_ids(pd.Series(values))
    assert (uniques[codes] == values).all()
    assert set(codes.tolist()) == set(range(len(uniques)))
    assert len(uniques) == len(set(values))
    # First appearances come in order 0, 1, 2, ...
    _, first = np.unique(codes, return_index=True)
    assert (np.diff(first) > 0).all()


def test_index_ids_categorical_input():
    # Category order differs from appearance order, and "z" is unused.
    s = pd.Series(pd.Categorical(["b", "a", "b", "c"], categories=["z", "a", "b", "c"]))
    codes, uniques = index_ids(s)
    assert codes.tolist() == [0, 1, 0, 2]
    assert uniques.tolist() == ["b", "a", "c"]
    assert uniques[codes].tolist() == s.tolist()
    assert len(uniques) == 3  # unused categories take no index


# --------------------------------------------------------------------------- Interactions


def test_from_frame_and_properties():
    df = pd.DataFrame({"user_id": ["u1", "u2", "u1", "u3"],
                       "book_id": ["b9", "b9", "b8", "b7"],
                       "rating": [5, 3, 0, 4]})
    data = Interactions.from_frame(df)
    assert len(data) == 4
    assert data.n_users == 3 and data.n_items == 3
    assert data.user.tolist() == [0, 1, 0, 2]
    assert data.item.tolist() == [0, 0, 1, 2]
    assert data.rating.dtype == np.float32
    assert data.rating.tolist() == [5.0, 3.0, 0.0, 4.0]
    assert (data.user_ids[data.user] == df["user_id"].to_numpy()).all()
    assert (data.item_ids[data.item] == df["book_id"].to_numpy()).all()
    implicit = Interactions.from_frame(df, rating=None)
    assert implicit.rating.tolist() == [1.0] * 4
    renamed = Interactions.from_frame(df.rename(columns={"user_id": "user", "book_id": "item"}),
                                      user="user", item="item")
    assert renamed.user.tolist() == data.user.tolist()
    assert "4 interactions" in repr(data)


def test_subset_shares_mappings():
    data = _random_interactions()
    idx = np.array([5, 1, 7])
    sub = data.subset(idx)
    assert len(sub) == 3
    assert sub.user.tolist() == data.user[idx].tolist()
    assert sub.item.tolist() == data.item[idx].tolist()
    assert sub.rating.tolist() == data.rating[idx].tolist()
    assert sub.user_ids is data.user_ids and sub.item_ids is data.item_ids
    assert sub.n_users == data.n_users and sub.n_items == data.n_items
    mask = data.rating > 2
    assert len(data.subset(mask)) == int(mask.sum())


def test_interactions_csr():
    data = Interactions(np.array([0, 0, 2, 0]), np.array([1, 1, 0, 3]),
                        np.array([2.0, 3.0, 4.0, 1.0], np.float32),
                        np.array(["a", "b", "c", "d"]), np.array(["w", "x", "y", "z"]))
    binary = data.csr()
    assert binary.shape == (4, 4)
    assert binary.toarray().tolist() == [[0, 1, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    valued = data.csr(binary=False)
    assert valued.toarray().tolist() == [[0, 5, 0, 1], [0, 0, 0, 0], [4, 0, 0, 0], [0, 0, 0, 0]]


# --------------------------------------------------------------------------- split


def test_train_test_split_deterministic_disjoint_complete():
    data = _random_interactions(n=1_000)
    train, test = train_test_split(data, test_size=0.1, seed=42)
    again_train, again_test = train_test_split(data, test_size=0.1, seed=42)
    assert (train.user == again_train.user).all() and (test.item == again_test.item).all()
    other_train, _ = train_test_split(data, test_size=0.1, seed=43)
    assert not (
        (train.user == other_train.user).all() and (train.item == other_train.item).all()
    )
    assert len(train) == 900 and len(test) == 100
    assert train.user_ids is data.user_ids and test.item_ids is data.item_ids
    # Disjoint and complete: tag every interaction with its position through the rating.
    tagged = Interactions(data.user, data.item, np.arange(len(data), dtype=np.float32),
                          data.user_ids, data.item_ids)
    tr, te = train_test_split(tagged, test_size=0.1, seed=42)
    ids_train, ids_test = tr.rating.astype(int), te.rating.astype(int)
    assert not set(ids_train) & set(ids_test)
    assert sorted(np.r_[ids_train, ids_test].tolist()) == list(range(len(data)))
    assert (data.user[ids_train] == tr.user).all() and (data.item[ids_test] == te.item).all()


def test_train_test_split_generator_seed():
    data = _random_interactions(n=200)
    a, _ = train_test_split(data, 0.25, seed=np.random.default_rng(7))
    b, _ = train_test_split(data, 0.25, seed=np.random.default_rng(7))
    assert (a.user == b.user).all() and (a.item == b.item).all()


@pytest.mark.parametrize("n, test_size, n_test", [
    (90, 0.3, 27),     # 30% of 90
    (10, 0.8, 8),
    (1_000, 0.25, 250),
    (41, 0.1, 5),      # 4.1 held out rounds up
    (3, 0.5, 2),
])
def test_train_test_split_sizes(n, test_size, n_test):
    data = _random_interactions(n=n)
    train, test = train_test_split(data, test_size=test_size, seed=0)
    assert len(test) == n_test
    assert len(train) == n - n_test


@pytest.mark.parametrize("bad", [0, 1, -0.1, 1.5])
def test_train_test_split_bad_test_size(bad):
    with pytest.raises(ValueError):
        train_test_split(_random_interactions(n=20), test_size=bad)


# --------------------------------------------------------------------------- sparse


def test_to_csr_binary_and_valued():
    users = [0, 1, 0, 0, 2]
    items = [3, 0, 3, 1, 3]
    values = [1.5, 2.0, 2.5, 4.0, 5.0]
    m = to_csr(users, items, n_users=4, n_items=5)
    assert isinstance(m, sp.csr_matrix)
    assert m.shape == (4, 5)
    expected = np.zeros((4, 5))
    expected[[0, 1, 0, 2], [3, 0, 1, 3]] = 1
    assert (m.toarray() == expected).all()  # the duplicate (0, 3) counts once
    assert m.nnz == 4
    v = to_csr(users, items, 4, 5, values)
    expected_v = np.zeros((4, 5))
    np.add.at(expected_v, (users, items), values)
    assert np.allclose(v.toarray(), expected_v)
    assert v[0, 3] == pytest.approx(4.0)


def test_per_user_items_sorted_rows():
    rng = np.random.default_rng(5)
    users = rng.integers(10, size=300)
    items = rng.integers(50, size=300)
    m = per_user_items(users, items, 10, 50)
    assert m.shape == (10, 50)
    for u in range(10):
        row = m.indices[m.indptr[u]:m.indptr[u + 1]]
        assert row.tolist() == sorted(set(items[users == u].tolist()))
    assert (m.data == 1).all()


# --------------------------------------------------------------------------- positives


def test_positive_set_contains_matches_python_set():
    rng = np.random.default_rng(11)
    n_users, n_items = 30, 40
    users = rng.integers(n_users, size=400)
    items = rng.integers(n_items, size=400)
    pos = PositiveSet(users, items, n_items)
    truth = set(zip(users.tolist(), items.tolist()))
    assert len(pos) == len(truth)
    qu = rng.integers(n_users, size=5_000)
    qi = rng.integers(n_items, size=5_000)
    got = pos.contains(qu, qi)
    assert got.dtype == bool and got.shape == (5_000,)
    assert got.tolist() == [(u, i) in truth for u, i in zip(qu.tolist(), qi.tolist())]
    assert got.any() and not got.all()
    assert pos.contains(users[:50], items[:50]).all()


def test_positive_set_counts_and_empty():
    pos = PositiveSet([0, 0, 2, 2, 2, 0], [1, 1, 0, 3, 4, 2], n_items=5)
    assert pos.counts(4).tolist() == [2, 0, 3, 0]
    assert len(pos) == 5
    # Keys before the smallest one and beyond the largest one.
    few = PositiveSet([1, 2], [3, 0], n_items=5)
    assert few.contains([0, 4, 2, 1, 1], [0, 4, 0, 3, 0]).tolist() == [False, False, True, True,
                                                                        False]
    empty = PositiveSet([], [], n_items=5)
    assert len(empty) == 0
    assert empty.contains([0, 1], [2, 3]).tolist() == [False, False]
    assert empty.counts(3).tolist() == [0, 0, 0]


def test_positive_set_contains_shapes_and_scalars():
    pos = PositiveSet([1, 2, 2], [3, 0, 4], n_items=5)
    # Scalars give a numpy bool, as an element of the vectorised answer would be.
    assert pos.contains(1, 3) is np.True_ and pos.contains(0, 0) is np.False_
    assert pos.contains(np.int32(2), np.int64(4)) is np.True_
    grid = pos.contains(np.array([[1, 0], [2, 2]]), np.array([[3, 0], [0, 1]]))
    assert grid.dtype == bool and grid.tolist() == [[True, False], [True, False]]
    # Broadcasting: one user against every item.
    assert pos.contains(2, np.arange(5)).tolist() == [True, False, False, False, True]
    none = pos.contains([], [])
    assert none.dtype == bool and none.shape == (0,)
    empty = PositiveSet([], [], n_items=5)
    assert empty.contains(1, 3) is np.False_
    assert empty.contains([[0, 1]], [[2, 3]]).tolist() == [[False, False]]
    assert pos.keys.tolist() == [1 * 5 + 3, 2 * 5 + 0, 2 * 5 + 4]  # sorted unique keys


def test_positive_set_contains_large_random():
    rng = np.random.default_rng(8)
    n_users, n_items = 2_000, 3_000
    users = rng.integers(n_users, size=50_000)
    items = rng.integers(n_items, size=50_000)
    pos = PositiveSet(users, items, n_items)
    keys = users.astype(np.int64) * n_items + items
    assert (pos.keys == np.unique(keys)).all()
    qu = np.r_[rng.integers(n_users, size=20_000), users[:5_000]]
    qi = np.r_[rng.integers(n_items, size=20_000), items[:5_000]]
    expected = np.isin(qu.astype(np.int64) * n_items + qi, keys)
    got = pos.contains(qu, qi)
    assert (got == expected).all()
    assert got[-5_000:].all()
    # Keys outside the range of the stored ones (negative, beyond the last user).
    assert not pos.contains([-1, n_users, n_users + 5], [0, 0, 7]).any()


def test_sample_negatives_never_positive():
    rng = np.random.default_rng(2)
    n_users, n_items = 50, 20
    users = rng.integers(n_users, size=600)
    items = rng.integers(n_items, size=600)
    pos = PositiveSet(users, items, n_items)
    query = np.repeat(np.arange(n_users), 200)
    neg = sample_negatives(query, pos, seed=0)
    assert neg.shape == query.shape
    assert ((neg >= 0) & (neg < n_items)).all()
    assert not pos.contains(query, neg).any()
    truth = set(zip(users.tolist(), items.tolist()))
    assert not any((u, i) in truth for u, i in zip(query.tolist(), neg.tolist()))
    again = sample_negatives(query, pos, seed=0)
    assert (again == neg).all()


def test_sample_negatives_uniform_over_non_positives():
    n_items = 10
    pos = PositiveSet([0, 0, 0], [2, 5, 7], n_items)
    draws = sample_negatives(np.zeros(70_000, int), pos, seed=1)
    counts = np.bincount(draws, minlength=n_items)
    assert counts[[2, 5, 7]].tolist() == [0, 0, 0]
    allowed = counts[[0, 1, 3, 4, 6, 8, 9]]
    # Expected 10,000 each; the standard deviation is about 93.
    assert np.abs(allowed - 10_000).max() < 500


def test_sample_negatives_user_with_every_item():
    n_items = 6
    pos = PositiveSet([0] * n_items + [1], list(range(n_items)) + [0], n_items)
    with pytest.raises(RuntimeError):
        sample_negatives(np.array([1, 0, 1]), pos, seed=0, max_rounds=20)
    # The other user alone is fine.
    assert not pos.contains([1, 1], sample_negatives(np.array([1, 1]), pos, seed=0)).any()


def test_weighted_negatives_follow_the_weights_and_skip_positives():
    users = np.zeros(20_000, np.int64)
    positives = PositiveSet([0, 0], [0, 3], n_items=5)
    weights = np.array([10.0, 1.0, 3.0, 10.0, 0.0])
    neg = sample_negatives(users, positives, seed=0, weights=weights)
    counts = np.bincount(neg, minlength=5)
    assert counts[0] == counts[3] == counts[4] == 0  # positives, and a zero weight
    assert 2.7 < counts[2] / counts[1] < 3.3  # in proportion to the weights
    with pytest.raises(ValueError, match="one non-negative weight per item"):
        sample_negatives(users, positives, seed=0, weights=weights[:4])


def test_training_mean():
    data = Interactions(np.array([0, 1, 1]), np.array([0, 0, 1]),
                        np.array([5.0, 2.0, 4.0], np.float32), np.arange(2), np.arange(2))
    m = training_mean(data)
    assert isinstance(m, float)
    assert m == pytest.approx(11 / 3)


def test_equal_positive_sets_share_one_hash_table():
    """A set equal to one alive (whatever the order of its pairs) reuses its table; a
    different set, or one over another number of items, builds its own."""
    import gc

    first = PositiveSet([0, 1, 2, 2], [1, 2, 0, 0], n_items=3)
    same = PositiveSet(np.array([2, 1, 0]), np.array([0, 2, 1]), n_items=3)
    assert same._index is first._index and same.keys is first.keys
    assert PositiveSet([0, 1], [1, 2], n_items=3)._index is not first._index
    assert PositiveSet([0, 1, 2], [1, 2, 0], n_items=4)._index is not first._index
    del first
    gc.collect()
    again = PositiveSet([2, 0, 1], [0, 1, 2], n_items=3)  # the one left alive is found
    assert again._index is same._index
    assert again.contains([0, 1, 2, 0], [1, 2, 0, 0]).tolist() == [True, True, True, False]
