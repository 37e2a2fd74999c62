"""Per-feature quantile binning: each party bins its own columns, nobody else sees the edges.

A feature with at most ``bins`` distinct values gets one bin per value; otherwise the upper edges
are quantiles of (a sample of at most ``SKETCH_ROWS`` of) its values, deduplicated. Bin ``b`` holds
values ``<= upper[b]`` (the last edge is +inf); a missing value (NaN) goes to the extra bin
``len(upper)``. Splits are "bin <= b goes left", missing values to a learnt side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.errors import GbdtParamsError

F64 = npt.NDArray[np.float64]
U16 = npt.NDArray[np.uint16]
SKETCH_ROWS = 200_000


@dataclass(frozen=True)
class FeatureBins:
    """The upper edges of one feature's bins (kept by the feature's owner only)."""

    upper: F64
    has_missing: bool

    @property
    def count(self) -> int:
        """Number of value bins (the missing bin, if any, is extra)."""
        return int(self.upper.shape[0])

    @property
    def width(self) -> int:
        """Histogram slots of the feature: value bins plus the missing bin if present."""
        return self.count + int(self.has_missing)


def _edges(values: F64, bins: int, rng: np.random.Generator) -> F64:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return np.array([np.inf])
    if finite.size > SKETCH_ROWS:
        finite = rng.choice(finite, SKETCH_ROWS, replace=False)
    distinct, counts = np.unique(finite, return_counts=True)
    if distinct.size <= bins:
        upper = (distinct[:-1] + distinct[1:]) / 2.0
    else:
        upper = _greedy(distinct, counts, bins)
    return np.append(upper, np.inf)


def _greedy(distinct: F64, counts: npt.NDArray[np.int64], bins: int) -> F64:
    """Equal-count bins over distinct values, cut between values: a value never straddles two
    bins, and a heavy value gets a bin of its own (the spirit of LightGBM's greedy binning)."""
    cum = np.cumsum(counts)
    cuts: list[int] = []
    start, left = 0, bins
    while left > 1 and start < distinct.size - 1:
        target = (cum[-1] - (cum[start - 1] if start else 0)) / left
        base = cum[start - 1] if start else 0
        i = int(np.searchsorted(cum, base + target, side="left"))
        i = min(max(i, start), distinct.size - 2)
        # cut on whichever side of the crossing value lands closer to the target
        if i > start and (cum[i] - base - target) > (target - (cum[i - 1] - base)):
            i -= 1
        cuts.append(i)
        start, left = i + 1, left - 1
    idx = np.asarray(cuts, dtype=np.int64)
    out: F64 = (distinct[idx] + distinct[idx + 1]) / 2.0
    return out


def fit_bins(x: F64, bins: int, seed: int = 0) -> list[FeatureBins]:
    """Bin edges for every column of ``x`` (rows x features)."""
    if x.ndim != 2:
        raise GbdtParamsError("features must be a 2-d table")
    rng = np.random.default_rng(seed)
    return [
        FeatureBins(_edges(x[:, j], bins, rng), bool(np.isnan(x[:, j]).any()))
        for j in range(x.shape[1])
    ]


def apply_bins(x: F64, edges: list[FeatureBins]) -> U16:
    """Bin indices (rows x features); NaN goes to each feature's missing bin."""
    if x.ndim != 2 or x.shape[1] != len(edges):
        raise GbdtParamsError("table and bin edges disagree on the number of features")
    out = np.empty(x.shape, dtype=np.uint16)
    for j, fb in enumerate(edges):
        col = x[:, j]
        idx = np.searchsorted(fb.upper, col, side="left")
        out[:, j] = np.where(np.isnan(col), fb.count, np.minimum(idx, fb.count - 1))
    return out
