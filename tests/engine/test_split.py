"""Batch deduplication: distinct handles in first-appearance order, and the expansion back."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from services.engine.split import DIRECT_TABLE_FACTOR, distinct_rows


def reference(handles: list[int]) -> tuple[list[int], list[int]]:
    """The obvious quadratic definition."""
    distinct: list[int] = []
    for h in handles:
        if h not in distinct:
            distinct.append(h)
    return distinct, [distinct.index(h) for h in handles]


@given(st.lists(st.integers(0, 2**40), max_size=300), st.integers(1, 50))
def test_distinct_rows_matches_the_definition(values: list[int], repeats: int) -> None:
    # Small ranges take the direct table, wide ones the sort: both must agree with the definition.
    for handles in (values, [v % repeats for v in values]):
        array = np.asarray(handles, dtype=np.int64)
        distinct, inverse = distinct_rows(array)
        want_distinct, want_inverse = reference(handles)
        assert distinct.dtype == np.int64 and inverse.dtype == np.int64
        assert distinct.tolist() == want_distinct
        assert inverse.tolist() == want_inverse
        assert (distinct[inverse] == array).all()


def test_both_paths_are_taken_and_agree() -> None:
    rng = np.random.default_rng(3)
    narrow = rng.integers(0, 1200, 4096)  # many boards, few lots: the table
    wide = rng.integers(0, 4096 * DIRECT_TABLE_FACTOR * 10, 4096)  # one board per key: the sort
    for handles in (narrow, wide):
        distinct, inverse = distinct_rows(handles)
        assert (distinct[inverse] == handles).all()
        _, first = np.unique(handles, return_index=True)
        assert distinct.tolist() == handles[np.sort(first)].tolist()
