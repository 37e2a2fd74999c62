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


def wire_slots(layout: Layout) -> I64:
    """The slots of a feature party's encrypted histogram: all but each feature's last one,
    which the label party gets as the node's total minus the feature's other slots (it knows
    the node's total); fewer slots, fewer diagonals, often one power-of-two block fewer."""
    keep = np.ones(layout.width, dtype=bool)
    keep[layout.offsets + np.asarray(layout.widths) - 1] = False
    return np.flatnonzero(keep)


def wire_codes(layout: Layout, bins: U16) -> I64:
    """Per row and feature, the :func:`wire_slots` index of its bin (-1: the dropped slot)."""
    index = np.full(layout.width, -1, dtype=np.int64)
    index[wire_slots(layout)] = np.arange(layout.width - len(layout.widths))
    codes: I64 = index[bins.astype(np.int64) + layout.offsets[None, :]]
    return codes


def complete(layout: Layout, sent: F64, total: tuple[float, float]) -> F64:
    """The ``(width, 2)`` histogram from the :func:`wire_slots` part and the node's total."""
    widths, wire = np.asarray(layout.widths), wire_slots(layout)
    sent = sent[: wire.size]  # a party of single-slot features sends one unused slot
    out = np.empty((layout.width, 2))
    out[wire] = sent
    owner = np.repeat(np.arange(widths.size), widths - 1)
    for col in (0, 1):
        part = np.bincount(owner, weights=sent[:, col], minlength=widths.size)
        out[layout.offsets + widths - 1, col] = total[col] - part
    return out


def histogram(bins: U16, layout: Layout, rows: I64, g: F64, h: F64) -> F64:
    """Plain histogram of ``rows`` (indices into ``bins``) with per-row ``g``, ``h``."""
    width = layout.width
    if rows.size == 0 or bins.shape[1] == 0:
        return np.zeros((width, 2))
    part = bins[rows]
    gr, hr = g[rows], h[rows]
    out = np.empty((width, 2))
    for f, (off, w) in enumerate(zip(layout.offsets, layout.widths, strict=True)):
        out[off : off + w, 0] = np.bincount(part[:, f], weights=gr, minlength=w)
        out[off : off + w, 1] = np.bincount(part[:, f], weights=hr, minlength=w)
    return out


def best_split(
    hist: F64,
    layout: Layout,
    total_g: float,
    total_h: float,
    params: GbdtParams,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> Candidate | None:
    """The highest-gain valid candidate (first in layout order on ties), or None.

    Every (feature, missing side, bin) candidate at once: per feature the same cumulative sums
    and gain formula, element for element, as a loop over features would compute; the first
    maximum in (feature, missing side, bin) order wins."""
    lam, mcw = params.l2, params.min_child_weight
    parent = total_g * total_g / (total_h + lam) if total_h + lam > 0 else 0.0
    counts = np.asarray(layout.counts, dtype=np.int64)
    keep = counts >= 2
    if allowed is not None:
        keep &= np.asarray(allowed, dtype=bool)
    feats = np.flatnonzero(keep)
    if feats.size == 0:
        return None
    cands = counts[feats] - 1  # bins 0 .. count - 2 send something right
    width = int(cands.max())
    pos = np.arange(width)
    valid = pos[None, :] < cands[:, None]
    first = layout.offsets[feats]
    idx = np.minimum(first[:, None] + pos[None, :], hist.shape[0] - 1)
    cum = np.cumsum(hist[idx], axis=1)  # (features, bins, 2); garbage only past each count
    missing = np.asarray(layout.missing, dtype=bool)[feats]
    miss_at = np.where(missing, first + counts[feats], 0)
    left = np.stack([cum, cum + hist[miss_at][:, None, :]], axis=1)  # (features, side, bins, 2)
    side_ok = np.stack([np.ones_like(missing), missing], axis=1)
    gl, hl = left[..., 0], left[..., 1]
    gr, hr = total_g - gl, total_h - hl
    ok = (
        valid[:, None, :]
        & side_ok[:, :, None]
        & (hl >= mcw)
        & (hr >= mcw)
        & (hl + lam > 0)
        & (hr + lam > 0)
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        gain = gl * gl / (hl + lam) + gr * gr / (hr + lam) - parent
    gain = np.where(ok, gain, -np.inf)
    at = int(np.argmax(gain))
    best = float(gain.flat[at])
    if not best > params.min_split_gain + 1e-12:
        return None
    f, side, b = np.unravel_index(at, gain.shape)
    return Candidate(best, int(feats[f]), int(b), bool(side))


def goes_left(column: U16, bins: FeatureBins, b: int, missing_left: bool) -> npt.NDArray[np.bool_]:
    """Rows of a binned column that a split ``bin <= b`` sends left."""
    missing = column == bins.count
    return np.where(missing, missing_left, column <= b)


def leaf_weight(total_g: float, total_h: float, params: GbdtParams) -> float:
    """Newton step of a leaf, shrunk by the learning rate."""
    denom = total_h + params.l2
    return -total_g / denom * params.learning_rate if denom > 0 else 0.0
