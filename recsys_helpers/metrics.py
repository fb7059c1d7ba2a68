"""Evaluation metrics, vectorised.  Each docstring states exactly what is computed.

Ranking metrics take the model as a *scoring function*, so that they work for any
model of the course (TensorFlow, implicit, or a hand-made array):

* ``score(users, items) -> scores`` scores pairs (arrays of equal length);
* ``score_users(users) -> matrix`` scores every item for each user (rows = users).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .interactions import PositiveSet, sample_negatives

__all__ = ["mse", "auc_sampled", "auc_exact", "precision_recall_at_k"]


def mse(predictions, labels) -> float:
    r"""Mean squared error, :math:`\frac1n \sum_k (p_k - y_k)^2`."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"predictions {p.shape} and labels {y.shape} differ in shape")
    if p.size == 0:
        raise ValueError("mse of an empty set")
    return float(np.mean((p - y) ** 2))


def _win(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """1 where the positive scores higher, 1/2 on a tie, 0 otherwise."""
    return (pos > neg) + 0.5 * (pos == neg)


def auc_sampled(score, test_users, test_items, interacted: PositiveSet, n_per_user: int = 10,
                seed=0, negative_weights=None) -> float:
    """AUC in the book's sampled protocol, corrected.

    For each user with held-out (test) interactions: draw ``N = min(n_per_user, number
    of the user's test items)`` of those test items without replacement (the
    positives), and ``N`` items the user never interacted with (the negatives: items
    not in ``interacted``, which should hold the training *and* test pairs), uniformly
    or, with ``negative_weights``, in proportion to them (e.g. popularity).  Pair the
    k-th positive with the k-th negative; the user's AUC is the fraction of pairs where
    the positive scores higher (a tie counts one half).  The result is the mean over
    users; users with no item left to draw as a negative are left out, and the result is
    NaN when no user is left.  (The book draws the negatives from the items of the test
    set minus the user's test items, which may include the user's training items; here a
    negative is never an item the user interacted with.)

    Parameters
    ----------
    score : callable ``(users, items) -> scores``
    test_users, test_items : int arrays, the held-out pairs
    interacted : PositiveSet of every known (user, item) pair
    negative_weights : optional array, one weight per item

    Examples
    --------
    A score that puts each user's held-out items first has AUC 1; scoring every item
    alike, 0.5:

    >>> import numpy as np
    >>> from recsys_helpers.interactions import PositiveSet
    >>> users, items = np.array([0, 0, 1]), np.array([1, 2, 0])
    >>> interacted = PositiveSet(users, items, n_items=6)
    >>> auc_sampled(lambda u, i: interacted.contains(u, i) * 1.0, users, items, interacted)
    1.0
    >>> auc_sampled(lambda u, i: np.zeros(len(i)), users, items, interacted)
    0.5
    """
    rng = np.random.default_rng(seed)  # a Generator passed in is used as it is
    tu = np.asarray(test_users)
    ti = np.asarray(test_items)
    # Random order within each user, then keep each user's first N.
    order = np.lexsort((rng.random(tu.size), tu))
    tu, ti = tu[order], ti[order]
    starts = np.flatnonzero(np.r_[True, tu[1:] != tu[:-1]])
    rank = np.arange(tu.size) - np.repeat(starts, np.diff(np.r_[starts, tu.size]))
    keep = rank < n_per_user
    # Leave out the users who interacted with every item that can be drawn.
    n_items = interacted.n_items
    w = (np.ones(n_items) if negative_weights is None
         else np.asarray(negative_weights, dtype=np.float64))
    taken = np.bincount(interacted.keys // n_items, weights=w[interacted.keys % n_items],
                        minlength=int(tu.max(initial=-1)) + 1)
    keep &= w.sum() - taken[tu] > 1e-9 * w.sum()
    if not keep.any():
        return float("nan")
    users, pos = tu[keep], ti[keep]
    neg = sample_negatives(users, interacted, rng, weights=negative_weights)
    wins = _win(np.asarray(score(users, pos)), np.asarray(score(users, neg)))
    uniq, inv = np.unique(users, return_inverse=True)
    per_user = np.bincount(inv, weights=wins) / np.bincount(inv)
    return float(per_user.mean())


def _test_users(test: sp.csr_matrix, max_users, seed) -> np.ndarray:
    users = np.flatnonzero(np.diff(test.indptr))
    if max_users is not None and users.size > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    return users


def _chunks(users: np.ndarray, n_items: int, budget: int = 1_000_000):
    step = max(1, budget // max(n_items, 1))
    for s in range(0, users.size, step):
        yield users[s:s + step]


def auc_exact(score_users, train: sp.csr_matrix, test: sp.csr_matrix, max_users=None,
              seed=0) -> float:
    """Exact per-user AUC against every item the user never interacted with.

    For each user ``u`` with test items ``P_u``, let ``N_u`` be the items that are
    neither in ``u``'s training row nor in ``P_u``.  The user's AUC is the fraction of
    pairs ``(i in P_u, j in N_u)`` with ``score(u, i) > score(u, j)`` (ties count one
    half).  Scores come from one matrix product per chunk of users, and each held-out
    item's score is compared with the whole row at once.  The result is the mean over
    users (a random ``max_users`` of them, if given).

    Parameters
    ----------
    score_users : callable ``(users) -> (len(users), n_items) scores``
    train, test : users x items binary CSR matrices
    """
    test = sp.csr_matrix(test, dtype=np.float32)
    train = sp.csr_matrix(train, dtype=np.float32)
    aucs = []
    for chunk in _chunks(_test_users(test, max_users, seed), test.shape[1]):
        s = np.array(score_users(chunk), dtype=np.float64)
        te = test[chunk].tocoo()
        positive = s[te.row, te.col]
        s[train[chunk].nonzero()] = np.nan  # neither training items nor test items are
        s[te.row, te.col] = np.nan          # negatives; NaN compares false with everything
        n_neg = np.count_nonzero(~np.isnan(s), axis=1)
        per_item = np.empty(te.row.size)
        block = max(1, min(64, 1_000_000 // max(s.shape[1], 1)))  # rows of s copied at once
        for start in range(0, te.row.size, block):  # held-out items, a block at a time
            rows, pos = te.row[start:start + block], positive[start:start + block, None]
            wins = (s[rows] < pos).sum(axis=1) + 0.5 * (s[rows] == pos).sum(axis=1)
            per_item[start:start + block] = wins / np.maximum(n_neg[rows], 1)
        n_pos = np.bincount(te.row, minlength=len(chunk))
        per_user = np.bincount(te.row, weights=per_item, minlength=len(chunk))
        ok = n_neg > 0
        aucs.append(per_user[ok] / n_pos[ok])
    aucs = np.concatenate(aucs) if aucs else np.empty(0)
    return float(aucs.mean()) if aucs.size else float("nan")


def precision_recall_at_k(score_users, train: sp.csr_matrix, test: sp.csr_matrix, k: int = 10,
                          max_users=None, seed=0) -> tuple[float, float]:
    """Precision@K and recall@K of top-K recommendation.

    For each user with test items ``P_u``, rank every item the user did not interact
    with in training and take the top ``k``.  Precision@K is ``|top_k ∩ P_u| / k``,
    recall@K is ``|top_k ∩ P_u| / |P_u|``; both are averaged over users (NaN when there
    is no test user).
    """
    test = sp.csr_matrix(test)
    train = sp.csr_matrix(train)
    prec, rec = [], []
    for chunk in _chunks(_test_users(test, max_users, seed), test.shape[1]):
        s = np.array(score_users(chunk), dtype=np.float64)
        s[train[chunk].nonzero()] = -np.inf
        kk = min(k, s.shape[1])  # fewer items than k: recommend them all
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        hits = np.asarray(test[chunk][np.arange(len(chunk))[:, None], top].sum(axis=1)).ravel()
        n_pos = np.diff(test[chunk].indptr)
        prec.append(hits / k)
        rec.append(hits / n_pos)
    if not prec:
        return float("nan"), float("nan")
    return float(np.concatenate(prec).mean()), float(np.concatenate(rec).mean())


def top_k(score_users, train: sp.csr_matrix, users, k: int = 10) -> np.ndarray:
    """The ``k`` best-scored items of each user among the items the user did not interact
    with in ``train``, best first: a ``(len(users), k)`` array of item indices (what
    :func:`precision_recall_at_k` counts hits in)."""
    users = np.asarray(users)
    train = sp.csr_matrix(train)
    out = []
    for chunk in _chunks(users, train.shape[1]):
        s = np.array(score_users(chunk), dtype=np.float64)
        s[train[chunk].nonzero()] = -np.inf
        kk = min(k, s.shape[1])
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        out.append(np.take_along_axis(top, order, axis=1))
    return np.concatenate(out) if out else np.empty((0, k), dtype=np.int64)
