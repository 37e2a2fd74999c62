"""The known leakage of vertical trees, measured: what the label party learns about a feature
party's rows from the left bits of that party's splits (the instance partition at each split).

A feature party answers a split for the node's rows only, so with ``k`` splits of one party
every training row gets a ``k``-symbol code (0: not in that node, 1: left, 2: right); rows with
equal codes are indistinguishable to the label party as far as that party's splits go. We
report the number of distinct cells, the entropy of the code over rows (bits per row learnt; at most
``log2(rows)``) and, for comparison, the entropy of the party's own binned columns (what its
features would say at 32 bins).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def _entropy(codes: npt.NDArray[np.int64]) -> float:
    _, counts = np.unique(codes, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def partition_leakage(bits: list[npt.NDArray[np.int64]], rows: int) -> dict[str, float]:
    """Cells and entropy (bits per row) of the joint split code of ``bits`` over ``rows`` rows
    (each entry: 0 not in the node, 1 left, 2 right)."""
    if not bits:
        return {"splits": 0, "cells": 1, "entropy_bits": 0.0, "max_bits": float(np.log2(rows))}
    codes = np.zeros(rows, dtype=np.int64)
    ids: dict[bytes, int] = {}
    stacked = np.stack(bits, axis=1).astype(np.uint8)
    for i, row in enumerate(stacked):
        codes[i] = ids.setdefault(row.tobytes(), len(ids))
    return {
        "splits": len(bits),
        "cells": len(ids),
        "entropy_bits": _entropy(codes),
        "max_bits": float(np.log2(rows)),
    }


def table_entropy(binned: npt.NDArray[np.uint16]) -> float:
    """Entropy (bits per row) of a party's full binned row (the most its splits could reveal)."""
    _, inverse = np.unique(binned, axis=0, return_inverse=True)
    return _entropy(inverse.reshape(-1).astype(np.int64))
