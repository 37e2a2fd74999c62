"""The centralized reference: the same algorithm on the pooled, pre-binned table."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.binning import FeatureBins
from services.engine.gbdt.grower import Bools, Pending, sample_columns
from services.engine.gbdt.splits import Candidate, Layout, goes_left, histogram

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U16 = npt.NDArray[np.uint16]


class PooledSource:
    """All features in one place. ``blocks`` are the column counts of the parties it pools and
    ``seeds`` their column-sampling seeds, so column subsampling matches the vertical run."""

    def __init__(
        self,
        bins: U16,
        valid_bins: U16,
        edges: list[FeatureBins],
        col_subsample: float,
        blocks: list[int],
        seeds: list[int],
    ) -> None:
        self.bins, self.valid_bins, self.edges = bins, valid_bins, edges
        self.layout = Layout.of(edges)
        self.col_subsample, self.blocks = col_subsample, blocks
        self.seeds = seeds
        self.splits: list[tuple[int, int, bool]] = []

    def layouts(self) -> list[Layout]:
        return [self.layout]

    def allowed(self, tree: int) -> list[Bools]:
        rngs = [np.random.default_rng([s, tree]) for s in self.seeds]
        masks = [
            sample_columns(r, b, self.col_subsample) for r, b in zip(rngs, self.blocks, strict=True)
        ]
        return [np.concatenate(masks)]

    def histograms(self, nodes: list[I64], g: F64, h: F64) -> list[list[F64]]:
        return [[histogram(self.bins, self.layout, rows, g, h)] for rows in nodes]

    def submit(self, rows: I64, g: F64, h: F64) -> Pending:
        hists = self.histograms([rows], g, h)[0]
        return lambda: hists

    def split(
        self, party: int, cand: Candidate, train: Bools, valid: Bools
    ) -> tuple[str, Bools, Bools]:
        f = cand.feature
        self.splits.append((f, cand.bin, cand.missing_left))
        e = self.edges[f]
        return (
            str(len(self.splits) - 1),
            goes_left(self.bins[:, f], e, cand.bin, cand.missing_left),
            goes_left(self.valid_bins[:, f], e, cand.bin, cand.missing_left),
        )
