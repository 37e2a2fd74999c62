"""Histograms and the best split: the arithmetic every role shares, so results agree exactly.

A party's histogram is a ``(width, 2)`` array of (sum g, sum h) per slot; its layout concatenates
its features in its own order, each taking ``count`` value bins plus one missing bin if it has
missing values. Candidate ``(feature, b, missing_left)`` sends bins ``<= b`` (and the missing bin
if ``missing_left``) to the left child.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.binning import FeatureBins
from services.engine.gbdt.params import GbdtParams

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]


@dataclass(frozen=True)
class Layout:
    """What a party announces about its histogram: per feature, value bins and missing flag."""

    counts: tuple[int, ...]
    missing: tuple[bool, ...]

    @classmethod
    def of(cls, edges: list[FeatureBins]) -> Layout:
        """The layout of a party's binned features."""
        return cls(tuple(e.count for e in edges), tuple(e.has_missing for e in edges))

    @property
    def widths(self) -> list[int]:
        """Histogram slots per feature."""
        return [c + int(m) for c, m in zip(self.counts, self.missing, strict=True)]

    @property
    def offsets(self) -> I64:
        """First slot of each feature."""
        return np.concatenate([[0], np.cumsum(self.widths)[:-1]]).astype(np.int64)

    @property
    def width(self) -> int:
        """Total histogram slots."""
        return int(sum(self.widths))


@dataclass(frozen=True)
class Candidate:
    """The best split of one party at one node (``feature`` indexes the party's layout)."""

    gain: float
    feature: int
    bin: int
    missing_left: bool


def histogram(bins: U16, layout: Layout, rows: I64, g: F64, h: F64) -> F64:
    """Plain histogram of ``rows`` (indices into ``bins``) with per-row ``g``, ``h``."""
    width = layout.width
    if rows.size == 0 or bins.shape[1] == 0:
        return np.zeros((width, 2))
    codes = (bins[rows].astype(np.int64) + layout.offsets[None, :]).ravel()
    nf = bins.shape[1]
    out = np.empty((width, 2))
    out[:, 0] = np.bincount(codes, weights=np.repeat(g[rows], nf), minlength=width)
    out[:, 1] = np.bincount(codes, weights=np.repeat(h[rows], nf), minlength=width)
    return out


def best_split(
    hist: F64,
    layout: Layout,
    total_g: float,
    total_h: float,
    params: GbdtParams,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Candidate | None:
    """The highest-gain valid candidate (first in layout order on ties), or None."""
    lam, mcw = params.l2, params.min_child_weight
    parent = total_g * total_g / (total_h + lam) if total_h + lam > 0 else 0.0
    best: Candidate | None = None
    for f, (off, count, miss) in enumerate(
        zip(layout.offsets, layout.counts, layout.missing, strict=True)
    ):
        if count < 2 or (allowed is not None and not allowed[f]):
            continue
        vals = hist[off : off + count]
        cum = np.cumsum(vals[:-1], axis=0)
        options = [(False, cum)]
        if miss:
            options.append((True, cum + hist[off + count]))
        for missing_left, left in options:
            gl, hl = left[:, 0], left[:, 1]
            gr, hr = total_g - gl, total_h - hl
            ok = (hl >= mcw) & (hr >= mcw) & (hl + lam > 0) & (hr + lam > 0)
            if not ok.any():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                gain = gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent
            gain = np.where(ok, gain, -np.inf)
            b = int(np.argmax(gain))
            if gain[b] > params.min_split_gain + 1e-12 and (best is None or gain[b] > best.gain):
                best = Candidate(float(gain[b]), f, b, missing_left)
    return best


def goes_left(column: U16, bins: FeatureBins, b: int, missing_left: bool) -> npt.NDArray[np.bool_]:
    """Rows of a binned column that a split ``bin <= b`` sends left."""
    missing = column == bins.count
    return np.where(missing, missing_left, column <= b)


def leaf_weight(total_g: float, total_h: float, params: GbdtParams) -> float:
    """Newton step of a leaf, shrunk by the learning rate."""
    denom = total_h + params.l2
    return -total_g / denom * params.learning_rate if denom > 0 else 0.0
