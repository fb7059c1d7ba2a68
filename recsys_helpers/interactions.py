"""Interactions: ID indexing, seeded splits, sparse matrices and negative sampling.

Everything here is vectorised: no Python loop runs once per interaction.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

__all__ = [
    "index_ids",
    "Interactions",
    "train_test_split",
    "to_csr",
    "PositiveSet",
    "sample_negatives",
    "rating_batches",
    "bpr_batches",
    "training_mean",
    "per_user_items",
]


def index_ids(values) -> tuple[np.ndarray, np.ndarray]:
    """Map raw IDs to consecutive integers ``0..n-1`` in order of first appearance.

    Returns
    -------
    codes : int32 array, the index of each value
    uniques : array, ``uniques[codes]`` gives the raw IDs back
    """
    if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
        values = values.cat.remove_unused_categories()
    elif not isinstance(values, (pd.Series, pd.Index, np.ndarray, pd.api.extensions.ExtensionArray)):
        values = np.asarray(values)  # pandas 3's factorize refuses lists
    codes, uniques = pd.factorize(values)
    return codes.astype(np.int32), np.asarray(uniques)


@dataclass
class Interactions:
    """User-item interactions as parallel integer arrays.

    ``user[k]`` and ``item[k]`` index ``user_ids`` / ``item_ids`` (the raw IDs);
    ``rating[k]`` is the rating (1.0 for implicit feedback).
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    user_ids: np.ndarray
    item_ids: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame, user: str = "user_id", item: str = "book_id",
                   rating: str | None = "rating") -> Interactions:
        """Index a DataFrame of interactions (one row each).

        ``rating=None`` gives implicit feedback (1.0 for every row).

        >>> import pandas as pd
        >>> df = pd.DataFrame({"user_id": ["ann", "bob", "ann"], "book_id": ["b7", "b7", "b9"],
        ...                    "rating": [5, 3, 4]})
        >>> data = Interactions.from_frame(df)
        >>> data
        Interactions(3 interactions, 2 users, 2 items)
        >>> data.user.tolist(), data.item.tolist(), data.rating.tolist()
        ([0, 1, 0], [0, 0, 1], [5.0, 3.0, 4.0])
        >>> data.user_ids.tolist(), data.item_ids.tolist()
        (['ann', 'bob'], ['b7', 'b9'])
        """
        u, uids = index_ids(df[user])
        i, iids = index_ids(df[item])
        r = (df[rating].to_numpy(np.float32) if rating is not None
             else np.ones(len(df), np.float32))
        return cls(u, i, r, uids, iids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, index) -> Interactions:
        """The interactions at ``index``, sharing the same ID mappings."""
        return Interactions(self.user[index], self.item[index], self.rating[index],
                            self.user_ids, self.item_ids)

    def csr(self, binary: bool = True) -> sp.csr_matrix:
        """The users x items matrix of these interactions (see :func:`to_csr`)."""
        values = None if binary else self.rating
        return to_csr(self.user, self.item, self.n_users, self.n_items, values)

    def __repr__(self) -> str:
        return (f"Interactions({len(self):,} interactions, {self.n_users:,} users, "
                f"{self.n_items:,} items)")


def train_test_split(data: Interactions, test_size: float = 0.1, seed=0):
    """Shuffle the interactions with ``seed`` and hold out a fraction ``test_size``.

    Like the book, the split is over interactions (a user may appear in both parts).
    Returns ``(train, test)`` sharing the ID mappings of ``data``.  ``seed`` may be an int
    or a ``numpy.random.Generator`` (used as it is).

    >>> import numpy as np
    >>> data = Interactions(np.arange(10) % 3, np.arange(10) % 4, np.ones(10, np.float32),
    ...                     np.array(["u0", "u1", "u2"]), np.array(["b0", "b1", "b2", "b3"]))
    >>> train, test = train_test_split(data, test_size=0.3, seed=0)
    >>> len(train), len(test)
    (7, 3)
    >>> train.user_ids is data.user_ids
    True
    """
    if not 0 < test_size < 1:
        raise ValueError("test_size must be between 0 and 1")
    perm = np.random.default_rng(seed).permutation(len(data))  # a Generator is used as it is
    # ceil(n * test_size), computed directly: int(n * (1 - test_size)) held out 28 of 90
    # for test_size=0.3, since 90 * (1 - 0.3) = 62.99999999999999
    n_train = len(data) - math.ceil(round(len(data) * test_size, 6))
    return data.subset(perm[:n_train]), data.subset(perm[n_train:])


def to_csr(users, items, n_users: int, n_items: int, values=None) -> sp.csr_matrix:
    """A users x items CSR matrix in one scipy call.

    With ``values=None`` the matrix is binary: 1 where the user interacted with the
    item (repeated pairs count once).  Otherwise repeated pairs are summed.
    """
    users = np.asarray(users)
    data = np.ones(users.size, np.float32) if values is None else np.asarray(values, np.float32)
    m = sp.csr_matrix((data, (users, np.asarray(items))), shape=(n_users, n_items))
    m.sum_duplicates()
    if values is None:
        m.data[:] = 1.0
    return m


def per_user_items(users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary users x items CSR; row ``u``'s ``indices`` are the items of user ``u``, sorted."""
    m = to_csr(users, items, n_users, n_items)
    m.sort_indices()
    return m


class PositiveSet:
    """The (user, item) pairs a model must treat as positives, for fast membership tests.

    Pairs are stored as sorted unique keys ``user * n_items + item`` (``keys``), and
    indexed once in a hash table (a :class:`pandas.Index`), so that ``contains`` is one
    vectorised hash lookup per query: on unsorted queries it is more than ten times
    faster than a binary search (:func:`numpy.searchsorted`) of the sorted keys.
    """

    #: The sets alive, by a digest of their pairs: a set equal to one of them shares its
    #: keys and hash table (a notebook, a batch sampler and each candidate of a search
    #: often build the same set; at full size, each copy would hold about 30 MB).
    _alive: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

    def __init__(self, users, items, n_items: int):
        self.n_items = int(n_items)
        self.keys = np.unique(np.asarray(users, np.int64) * self.n_items
                              + np.asarray(items, np.int64))
        digest = (self.n_items, hashlib.blake2b(self.keys.tobytes(), digest_size=16).digest())
        twin = self._alive.get(digest)
        if twin is not None and np.array_equal(twin.keys, self.keys):
            self.keys, self._index = twin.keys, twin._index
        else:
            self._index = pd.Index(self.keys, copy=False)
            self._index.get_indexer(self.keys[:1])  # builds the hash table now
        self._alive[digest] = self  # the newest holder: the longest to live, likely

    def contains(self, users, items) -> np.ndarray:
        """Boolean array: is each ``(users[k], items[k])`` a positive pair?"""
        q = np.asarray(users, np.int64) * self.n_items + np.asarray(items, np.int64)
        if self.keys.size == 0 or q.size == 0:
            found = np.zeros(q.shape, bool)
        else:
            found = (self._index.get_indexer(q.ravel()) >= 0).reshape(q.shape)
        return found[()] if found.ndim == 0 else found  # a numpy bool for scalar input

    def counts(self, n_users: int) -> np.ndarray:
        """Number of positives of each user."""
        return np.bincount(self.keys // self.n_items, minlength=n_users)

    def __len__(self) -> int:
        return self.keys.size


def sample_negatives(users, positives: PositiveSet, seed=None, max_rounds: int = 100,
                     weights=None):
    """For each user in ``users``, one item drawn among the items that are not among that
    user's ``positives``: uniformly, or in proportion to ``weights`` (one non-negative
    weight per item, e.g. its popularity).

    Rejection sampling, vectorised: draw for everyone, redraw only the rejected ones.
    """
    rng = np.random.default_rng(seed)  # a Generator passed in is used as it is
    users = np.asarray(users)
    if weights is None:
        def draw(n):
            return rng.integers(positives.n_items, size=n)
    else:
        cum = np.cumsum(np.asarray(weights, dtype=np.float64))
        if cum.size != positives.n_items or not cum[-1] > 0 or np.any(np.diff(cum) < 0):
            raise ValueError("weights must hold one non-negative weight per item, not all zero")

        def draw(n):
            return np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"),
                              cum.size - 1)
    items = draw(users.size)
    bad = positives.contains(users, items)
    for _ in range(max_rounds):
        if not bad.any():
            return items
        idx = np.flatnonzero(bad)
        items[idx] = draw(idx.size)
        bad[idx] = positives.contains(users[idx], items[idx])
    if bad.any():
        raise RuntimeError(
            f"{int(bad.sum())} user(s) have (almost) no item left to use as a negative"
        )
    return items


def rating_batches(split: Interactions, batch_size: int, seed=None):
    """A function returning the next batch ``(users, items, ratings)`` of ``split``.

    Each batch holds ``batch_size`` interactions drawn uniformly with replacement: the
    book's ``random.choice`` loop, in one vectorised call.
    """
    rng = np.random.default_rng(seed)  # a Generator passed in is used as it is

    def next_batch():
        k = rng.integers(len(split), size=batch_size)
        return split.user[k], split.item[k], split.rating[k]

    return next_batch


def bpr_batches(split: Interactions, batch_size: int, seed=None):
    """A function returning the next BPR batch ``(users, positive items, negative items)``.

    Each triple is an interaction of ``split`` drawn uniformly with replacement and an item
    drawn uniformly among those the user has no interaction with in ``split``.
    """
    rng = np.random.default_rng(seed)  # a Generator passed in is used as it is
    positives = PositiveSet(split.user, split.item, split.n_items)

    def next_batch():
        k = rng.integers(len(split), size=batch_size)
        users = split.user[k]
        return users, split.item[k], sample_negatives(users, positives, rng)

    return next_batch


def training_mean(train: Interactions) -> float:
    """The mean rating of the training interactions."""
    return float(np.mean(train.rating, dtype=np.float64))
