"""Deterministic train/validation/test assignment by hashing each row's id with the seed.

A row's split depends only on its own id and the seed, never on which other rows are present, so
the joint model and every baseline are evaluated on the same held-out rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

TRAIN, VALIDATION, TEST = 0, 1, 2


def assign_splits(
    row_ids: Sequence[str], seed: int, validation_fraction: float, test_fraction: float
) -> npt.NDArray[np.int8]:
    """0 = train, 1 = validation, 2 = test, for each row id."""
    out = np.empty(len(row_ids), dtype=np.int8)
    salt = seed.to_bytes(8, "little")
    for i, rid in enumerate(row_ids):
        digest = hashlib.blake2b(rid.encode(), digest_size=8, key=salt).digest()
        u = int.from_bytes(digest, "little") / 2**64
        out[i] = (
            TEST
            if u < test_fraction
            else VALIDATION
            if u < test_fraction + validation_fraction
            else TRAIN
        )
    return out


def epoch_batches(
    train_rows: npt.NDArray[np.int64], batch_size: int, seed: int, epoch: int
) -> Iterator[npt.NDArray[np.int64]]:
    """Shuffled mini-batches of ``train_rows`` for one epoch (same order for the same inputs)."""
    rng = np.random.default_rng([seed, epoch])
    order = train_rows[rng.permutation(train_rows.shape[0])]
    for start in range(0, order.shape[0], batch_size):
        yield order[start : start + batch_size]


def distinct_rows(
    handles: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The distinct handles of a batch in order of first appearance, and each row's index into
    them (``distinct[inverse] == handles``).

    Not sorted by handle: handles are a per-job permutation (PSI), and the label-leakage defence
    draws its noise row by row, so first-appearance order keeps two jobs with the same seed
    identical whatever their handles.

    When the handles are few (many boards of few paste lots: the training step's case), a
    first-appearance table indexed by handle does it in linear time, about 7x faster than
    sorting at 4,096 rows; otherwise the sort-based :func:`numpy.unique`.
    """
    n = handles.shape[0]
    size = int(handles.max()) + 1 if n else 0
    if n and size <= DIRECT_TABLE_FACTOR * n and int(handles.min()) >= 0:
        first = np.full(size, n, dtype=np.int64)
        np.minimum.at(first, handles, np.arange(n, dtype=np.int64))
        seen = np.flatnonzero(first < n)
        distinct = seen[np.argsort(first[seen], kind="stable")].astype(np.int64, copy=False)
        lookup = np.empty(size, dtype=np.int64)
        lookup[distinct] = np.arange(distinct.shape[0], dtype=np.int64)
        return distinct, lookup[handles]
    unique, first_at, inverse = np.unique(handles, return_index=True, return_inverse=True)
    order = np.argsort(first_at, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.shape[0])
    return unique[order].astype(np.int64, copy=False), rank[inverse].astype(np.int64)


DIRECT_TABLE_FACTOR = 4
"""Use the table when the handle range is at most this many times the batch."""
