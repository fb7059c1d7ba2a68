"""Tests of recsys_helpers.metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_helpers import metrics
from recsys_helpers.interactions import PositiveSet
from recsys_helpers.metrics import auc_exact, auc_sampled, mse, precision_recall_at_k


def _csr(rows: dict[int, list[int]], n_users: int, n_items: int) -> sp.csr_matrix:
    m = np.zeros((n_users, n_items), np.float32)
    for u, items in rows.items():
        m[u, items] = 1
    return sp.csr_matrix(m)


def _score_users(S):
    return lambda users: S[np.asarray(users)]


def _score_pairs(S):
    return lambda users, items: S[np.asarray(users), np.asarray(items)]


# --------------------------------------------------------------------------- mse


def test_mse_by_hand():
    assert mse([1, 2, 3], [1, 4, 0]) == pytest.approx((0 + 4 + 9) / 3)
    assert mse(np.array([2.5]), np.array([0.5])) == pytest.approx(4.0)
    assert mse(np.float32([1, 1]), [1, 1]) == 0.0
    assert isinstance(mse([1.0], [2.0]), float)


def test_mse_errors():
    with pytest.raises(ValueError):
        mse([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        mse(np.ones((2, 1)), np.ones(2))
    with pytest.raises(ValueError):
        mse([], [])


# --------------------------------------------------------------------------- auc_exact

# 4 users x 5 items.  Training and test items per user, and the scores:
#
# user 0: train {0}, test {1}, negatives {2, 3, 4}; scores 9 5 4 3 5
#         5 vs 4 win, 5 vs 3 win, 5 vs 5 tie             -> AUC = 2.5 / 3
#         (item 0 scores 9 but is a training item: not a negative)
# user 1: train {2}, test {0, 4}, negatives {1, 3}; scores 3 1 -5 2 1.5
#         3 vs 1 win, 3 vs 2 win, 1.5 vs 1 win, 1.5 vs 2 loss -> AUC = 3 / 4
# user 2: train {}, test {3}, negatives {0, 1, 2, 4}; scores 0 2 1 2 7
#         2 vs 0 win, 2 vs 2 tie, 2 vs 1 win, 2 vs 7 loss  -> AUC = 2.5 / 4
# user 3: train {1}, no test items                        -> not counted
EXACT_S = np.array([
    [9, 5, 4, 3, 5],
    [3, 1, -5, 2, 1.5],
    [0, 2, 1, 2, 7],
    [1, 1, 1, 1, 1],
], dtype=float)
EXACT_TRAIN = _csr({0: [0], 1: [2], 3: [1]}, 4, 5)
EXACT_TEST = _csr({0: [1], 1: [0, 4], 2: [3]}, 4, 5)
EXACT_PER_USER = [2.5 / 3, 3 / 4, 2.5 / 4]


def test_auc_exact_by_hand():
    got = auc_exact(_score_users(EXACT_S), EXACT_TRAIN, EXACT_TEST)
    assert got == pytest.approx(np.mean(EXACT_PER_USER))


def test_auc_exact_training_items_are_not_negatives():
    # Without excluding item 0, user 0 would have 4 negatives: AUC 2.5 / 4.
    no_train = sp.csr_matrix(EXACT_TRAIN.shape, dtype=np.float32)
    got = auc_exact(_score_users(EXACT_S), no_train, EXACT_TEST)
    # user 1's training item 2 (score -5) becomes a negative it beats twice: 5 / 6;
    # user 2 has no training items: unchanged.
    assert got == pytest.approx(np.mean([2.5 / 4, 5 / 6, 2.5 / 4]))


def test_auc_exact_perfect_and_reversed():
    rng = np.random.default_rng(0)
    train = sp.csr_matrix((rng.random((30, 40)) < 0.2).astype(np.float32))
    test = sp.csr_matrix(((rng.random((30, 40)) < 0.15) & (train.toarray() == 0))
                         .astype(np.float32))
    truth = test.toarray()
    noise = rng.random(truth.shape) * 0.5
    assert auc_exact(_score_users(truth + noise), train, test) == 1.0
    assert auc_exact(_score_users(-truth + noise), train, test) == 0.0
    # Training items scored highest change nothing (they are excluded).
    boosted = truth + noise + 10 * train.toarray()
    assert auc_exact(_score_users(boosted), train, test) == 1.0
    # A constant scorer ties everything: one half.
    assert auc_exact(_score_users(np.zeros(truth.shape)), train, test) == pytest.approx(0.5)


def test_auc_exact_max_users():
    score = _score_users(EXACT_S)
    seen = set()
    for seed in range(30):
        one = auc_exact(score, EXACT_TRAIN, EXACT_TEST, max_users=1, seed=seed)
        matches = [k for k, v in enumerate(EXACT_PER_USER) if v == pytest.approx(one)]
        assert len(matches) == 1
        seen.add(matches[0])
        two = auc_exact(score, EXACT_TRAIN, EXACT_TEST, max_users=2, seed=seed)
        pair_means = [np.mean([a, b]) for k, a in enumerate(EXACT_PER_USER)
                      for b in EXACT_PER_USER[k + 1:]]
        assert any(two == pytest.approx(m) for m in pair_means)
    assert seen == {0, 1, 2}  # the subsample is random over the test users
    assert auc_exact(score, EXACT_TRAIN, EXACT_TEST, max_users=1, seed=4) == auc_exact(
        score, EXACT_TRAIN, EXACT_TEST, max_users=1, seed=4)
    assert auc_exact(score, EXACT_TRAIN, EXACT_TEST, max_users=3) == pytest.approx(
        np.mean(EXACT_PER_USER))


def _auc_reference(S, train, test):
    """Per-user AUC straight from the definition, with Python loops."""
    tr, te = train.toarray() > 0, test.toarray() > 0
    out = []
    for u in range(S.shape[0]):
        pos = np.flatnonzero(te[u])
        neg = np.flatnonzero(~te[u] & ~tr[u])
        if pos.size == 0 or neg.size == 0:
            continue
        wins = [1.0 if S[u, i] > S[u, j] else 0.5 if S[u, i] == S[u, j] else 0.0
                for i in pos for j in neg]
        out.append(np.mean(wins))
    return float(np.mean(out))


def test_auc_exact_matches_definition_in_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    n_users, n_items = 60, 25
    train_d = rng.random((n_users, n_items)) < 0.25
    test_d = (rng.random((n_users, n_items)) < 0.2) & ~train_d
    train, test = sp.csr_matrix(train_d.astype(np.float32)), sp.csr_matrix(test_d.astype(np.float32))
    S = rng.integers(0, 6, size=(n_users, n_items)).astype(float)  # many ties
    expected = _auc_reference(S, train, test)
    assert auc_exact(_score_users(S), train, test) == pytest.approx(expected)
    # Small chunks of users give the same value.
    chunks = metrics._chunks
    monkeypatch.setattr(metrics, "_chunks",
                        lambda users, n, budget=0: chunks(users, n, budget=7 * n))
    assert auc_exact(_score_users(S), train, test) == pytest.approx(expected)


# --------------------------------------------------------------------------- auc_sampled

# 4 users x 5 items; every user has exactly one item never interacted with, so the
# negatives are fixed and the sampled AUC can be worked out by hand.
#
# user 0: train {0, 1}, test {2, 3}, only negative 4; scores 9 9 3 1 2
#         3 vs 2 win, 1 vs 2 loss                 -> 1 / 2
# user 1: train {4}, test {0, 1, 2}, only negative 3; scores 5 4 4 4 9
#         5 vs 4 win, 4 vs 4 tie, 4 vs 4 tie      -> 2 / 3
# user 2: train {}, test {0, 1, 2, 3}, only negative 4; scores 1 2 3 4 5
#         every positive loses                    -> 0
# user 3: train {0, 1, 2, 3}, no test items       -> not counted
# mean over users 0-2: (1/2 + 2/3 + 0) / 3 = 7 / 18
SAMPLED_S = np.array([
    [9, 9, 3, 1, 2],
    [5, 4, 4, 4, 9],
    [1, 2, 3, 4, 5],
    [0, 0, 0, 0, 9],
], dtype=float)
SAMPLED_TRAIN = {0: [0, 1], 1: [4], 3: [0, 1, 2, 3]}
SAMPLED_TEST = {0: [2, 3], 1: [0, 1, 2], 2: [0, 1, 2, 3]}


def _pairs(rows):
    users = [u for u, items in rows.items() for _ in items]
    items = [i for its in rows.values() for i in its]
    return np.array(users), np.array(items)


def _sampled_case():
    tu, ti = _pairs(SAMPLED_TEST)
    ru, ri = _pairs(SAMPLED_TRAIN)
    interacted = PositiveSet(np.r_[ru, tu], np.r_[ri, ti], n_items=5)
    return tu, ti, interacted


def test_auc_sampled_by_hand():
    tu, ti, interacted = _sampled_case()
    for seed in range(5):
        got = auc_sampled(_score_pairs(SAMPLED_S), tu, ti, interacted, n_per_user=10, seed=seed)
        assert got == pytest.approx(7 / 18)


def test_auc_sampled_positives_subsampled_per_user():
    # With n_per_user=1 each user contributes one positive: user 0 scores 1 or 0,
    # user 1 scores 1 or 1/2, user 2 scores 0.  The mean over seeds tends to 7/18.
    tu, ti, interacted = _sampled_case()
    possible = {(a + b + 0) / 3 for a in (0, 1) for b in (0.5, 1)}
    values = []
    for seed in range(400):
        v = auc_sampled(_score_pairs(SAMPLED_S), tu, ti, interacted, n_per_user=1, seed=seed)
        assert any(v == pytest.approx(p) for p in possible)
        values.append(v)
    # Standard deviation of one value is about 0.19; of the mean of 400, about 0.01.
    assert np.mean(values) == pytest.approx(7 / 18, abs=0.04)


def test_auc_sampled_perfect_reversed_and_seeded():
    rng = np.random.default_rng(2)
    n_users, n_items = 40, 60
    train_d = rng.random((n_users, n_items)) < 0.2
    test_d = (rng.random((n_users, n_items)) < 0.1) & ~train_d
    tu, ti = np.nonzero(test_d)
    ru, ri = np.nonzero(train_d)
    interacted = PositiveSet(np.r_[ru, tu], np.r_[ri, ti], n_items)
    truth = test_d.astype(float)
    # Training items scored highest: they must never be drawn as negatives.
    perfect = truth + 10 * train_d
    assert auc_sampled(_score_pairs(perfect), tu, ti, interacted, seed=0) == 1.0
    reversed_ = -truth + 10 * train_d
    assert auc_sampled(_score_pairs(reversed_), tu, ti, interacted, seed=0) == 0.0
    S = rng.random((n_users, n_items))
    a = auc_sampled(_score_pairs(S), tu, ti, interacted, seed=3)
    assert a == auc_sampled(_score_pairs(S), tu, ti, interacted, seed=3)


def test_auc_sampled_expectation_equals_exact():
    # Each user has one test item, so the sampled AUC compares it with one uniformly
    # drawn negative; averaged over seeds it estimates the exact AUC.
    rng = np.random.default_rng(4)
    n_users, n_items = 20, 30
    train_d = rng.random((n_users, n_items)) < 0.2
    test_items = np.array([rng.choice(np.flatnonzero(~row)) for row in train_d])
    test_d = np.zeros_like(train_d)
    test_d[np.arange(n_users), test_items] = True
    S = rng.integers(0, 5, size=(n_users, n_items)).astype(float)
    S[np.arange(n_users), test_items] += rng.integers(0, 2, size=n_users)  # some signal
    exact = auc_exact(_score_users(S), sp.csr_matrix(train_d.astype(np.float32)),
                      sp.csr_matrix(test_d.astype(np.float32)))
    assert exact == pytest.approx(_auc_reference(S, sp.csr_matrix(train_d), sp.csr_matrix(test_d)))
    ru, ri = np.nonzero(train_d)
    tu = np.arange(n_users)
    interacted = PositiveSet(np.r_[ru, tu], np.r_[ri, test_items], n_items)
    values = [auc_sampled(_score_pairs(S), tu, test_items, interacted, seed=s)
              for s in range(3_000)]
    # One value has a standard deviation below 0.11 (20 users, each at most 0.5);
    # the mean of 3,000 below 0.002.
    assert np.mean(values) == pytest.approx(exact, abs=0.01)


# --------------------------------------------------------------------------- precision / recall

# 4 users x 5 items, k = 2, no ties:
# user 0: train {0}, test {1}; scores 9 5 4 3 6; candidates 1..4, top 2 = {4, 1}
#         hits 1 -> precision 1/2, recall 1/1   (item 0 is excluded despite its 9)
# user 1: train {2}, test {0, 4}; scores 3 1 8 2 1.5; top 2 of {0, 1, 3, 4} = {0, 3}
#         hits 1 -> precision 1/2, recall 1/2
# user 2: train {}, test {1, 3, 4}; scores 0 2 1 3 7; top 2 = {4, 3}
#         hits 2 -> precision 1, recall 2/3
# user 3: no test items -> not counted
# k = 1: tops {4}, {0}, {4}: hits 0, 1, 1 -> precision 2/3, recall (0 + 1/2 + 1/3) / 3
PR_S = np.array([
    [9, 5, 4, 3, 6],
    [3, 1, 8, 2, 1.5],
    [0, 2, 1, 3, 7],
    [1, 2, 3, 4, 5],
], dtype=float)
PR_TRAIN = _csr({0: [0], 1: [2], 3: [1]}, 4, 5)
PR_TEST = _csr({0: [1], 1: [0, 4], 2: [1, 3, 4]}, 4, 5)


def test_precision_recall_by_hand():
    p, r = precision_recall_at_k(_score_users(PR_S), PR_TRAIN, PR_TEST, k=2)
    assert p == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert r == pytest.approx((1 + 1 / 2 + 2 / 3) / 3)
    p, r = precision_recall_at_k(_score_users(PR_S), PR_TRAIN, PR_TEST, k=1)
    assert p == pytest.approx(2 / 3)
    assert r == pytest.approx((0 + 1 / 2 + 1 / 3) / 3)


def test_precision_recall_perfect_and_reversed(monkeypatch):
    rng = np.random.default_rng(5)
    train_d = rng.random((30, 50)) < 0.2
    test_d = (rng.random((30, 50)) < 0.2) & ~train_d
    test_d[:, :3] = ~train_d[:, :3]  # every user has test items
    train, test = sp.csr_matrix(train_d.astype(np.float32)), sp.csr_matrix(test_d.astype(np.float32))
    k = 3
    n_pos = test_d.sum(axis=1)
    perfect = test_d + rng.random(test_d.shape) * 0.5 + 10 * train_d
    p, r = precision_recall_at_k(_score_users(perfect), train, test, k=k)
    assert p == pytest.approx(np.mean(np.minimum(n_pos, k) / k))
    assert r == pytest.approx(np.mean(np.minimum(n_pos, k) / n_pos))
    reversed_ = -(test_d + 0.0) + rng.random(test_d.shape) * 0.5
    assert precision_recall_at_k(_score_users(reversed_), train, test, k=k) == (0.0, 0.0)
    # Chunked evaluation agrees.
    chunks = metrics._chunks
    monkeypatch.setattr(metrics, "_chunks",
                        lambda users, n, budget=0: chunks(users, n, budget=4 * n))
    p2, r2 = precision_recall_at_k(_score_users(perfect), train, test, k=k)
    assert (p2, r2) == pytest.approx((p, r))


def test_auc_sampled_leaves_out_users_without_negatives_and_weights_negatives():
    # User 0 interacted with every item: no negative to draw, left out.  User 1 has one.
    users, items = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0])
    interacted = PositiveSet(users, items, n_items=3)
    test_u, test_i = np.array([0, 1]), np.array([2, 0])
    assert auc_sampled(lambda u, i: -i.astype(float), test_u, test_i, interacted) == 1.0
    assert np.isnan(auc_sampled(lambda u, i: i * 1.0, [0], [2], interacted))
    # Popularity-proportional negatives: popularity separates positives from them far less
    # (only because a user's own, often popular, items are never drawn).
    rng = np.random.default_rng(0)
    n_items, popularity = 200, rng.pareto(1.0, 200) + 1
    u = np.repeat(np.arange(300), 5)
    i = rng.choice(n_items, size=u.size, p=popularity / popularity.sum())
    seen = PositiveSet(u, i, n_items)
    uniform = auc_sampled(lambda uu, ii: popularity[ii], u, i, seen)
    weighted = auc_sampled(lambda uu, ii: popularity[ii], u, i, seen, negative_weights=popularity)
    assert uniform > 0.8 and weighted < uniform - 0.15, (uniform, weighted)


def test_ranking_metrics_on_degenerate_data():
    train = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 1], [0, 0]], dtype=np.float32))
    p, r = precision_recall_at_k(lambda u: np.ones((len(u), 2)), train, test, k=10)
    assert (p, r) == pytest.approx((0.1, 1.0))  # fewer items than k: all recommended
    empty = sp.csr_matrix((2, 2), dtype=np.float32)
    assert np.isnan(auc_exact(lambda u: np.ones((len(u), 2)), train, empty))
    assert all(np.isnan(precision_recall_at_k(lambda u: np.ones((len(u), 2)), train, empty)))
