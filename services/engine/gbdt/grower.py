"""Level-wise tree growth over a histogram source: the one algorithm both the centralized
reference and the vertical protocol run, so that in plain mode they agree exactly.

A source answers three things for the label party: the layouts of every party's histograms (the
label party's own first), histograms of given nodes (rows where ``g, h`` are kept, zero
elsewhere), and a split: "party p, candidate c" -> an opaque reference plus left bits for every
training and validation row. Histograms of the larger child come from the parent by subtraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.splits import Candidate, Layout, best_split, leaf_weight

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


class Source(Protocol):
    """Where the label party's histograms and splits come from."""

    def layouts(self) -> list[Layout]: ...

    def allowed(self, tree: int) -> list[Bools]: ...

    def histograms(self, nodes: list[I64], g: F64, h: F64) -> list[list[F64]]: ...

    def split(
        self, party: int, cand: Candidate, train: Bools, valid: Bools
    ) -> tuple[str, Bools, Bools]: ...


@dataclass
class Node:
    """A tree node at the label party: a split (party, opaque ref) or a leaf weight."""

    party: int = -1
    ref: str = ""
    left: int = -1
    right: int = -1
    weight: float = 0.0
    cover: int = 0
    """Sampled training rows that reached the node (for expectations over unknown splits)."""

    @property
    def is_leaf(self) -> bool:
        """True for a leaf."""
        return self.left < 0


@dataclass
class Tree:
    """One tree as the label party holds it."""

    nodes: list[Node] = field(default_factory=list)


@dataclass
class _Open:
    node: int
    rows: I64
    train: Bools
    valid: Bools
    hists: list[F64]


def grow(
    params: GbdtParams,
    src: Source,
    tree_no: int,
    g: F64,
    h: F64,
    sample: I64,
    n_train: int,
    n_valid: int,
) -> tuple[Tree, F64, F64]:
    """Grow one tree; returns it and its output for every training and validation row."""
    layouts, allowed = src.layouts(), src.allowed(tree_no)
    tree = Tree([Node()])
    train_out, valid_out = np.zeros(n_train), np.zeros(n_valid)
    root = _Open(
        0, sample, np.ones(n_train, bool), np.ones(n_valid, bool), src.histograms([sample], g, h)[0]
    )
    level = [root]
    for depth in range(params.depth + 1):
        pending: list[tuple[_Open, _Open, bool]] = []
        level_leaves: list[_Open] = []
        for op in level:
            gs, hs = float(np.sum(g[op.rows])), float(np.sum(h[op.rows]))
            best: tuple[int, Candidate] | None = None
            if depth < params.depth and op.rows.size >= 2:
                for p, (hist, lay) in enumerate(zip(op.hists, layouts, strict=True)):
                    cand = best_split(hist, lay, gs, hs, params, allowed[p])
                    if cand is not None and (best is None or cand.gain > best[1].gain):
                        best = (p, cand)
            if best is None:
                w = leaf_weight(gs, hs, params)
                tree.nodes[op.node].weight = w
                tree.nodes[op.node].cover = int(op.rows.size)
                train_out[op.train] = w
                valid_out[op.valid] = w
                continue
            ref, tl, vl = src.split(best[0], best[1], op.train, op.valid)
            left_id, right_id = len(tree.nodes), len(tree.nodes) + 1
            tree.nodes[op.node] = Node(best[0], ref, left_id, right_id, cover=int(op.rows.size))
            tree.nodes += [Node(), Node()]
            goes = tl[op.rows]
            kids = (
                _Open(left_id, op.rows[goes], op.train & tl, op.valid & vl, []),
                _Open(right_id, op.rows[~goes], op.train & ~tl, op.valid & ~vl, []),
            )
            if depth + 1 >= params.depth:  # children are leaves: no histograms needed
                level_leaves.extend(kids)
                continue
            small, big = kids if kids[0].rows.size <= kids[1].rows.size else kids[::-1]
            big.hists = op.hists  # the parent's, minus the smaller child's below
            pending.append((big, small, True))
        if not pending and not level_leaves:
            break
        fresh = src.histograms([small.rows for _, small, _ in pending], g, h) if pending else []
        level = level_leaves
        for (big, small, _), hs_small in zip(pending, fresh, strict=True):
            small.hists = hs_small
            big.hists = [parent - child for parent, child in zip(big.hists, hs_small, strict=True)]
            level += sorted((big, small), key=lambda o: o.node)
    return tree, train_out, valid_out


def sample_columns(rng: np.random.Generator, count: int, fraction: float) -> Bools:
    """Column subsample of one party for one tree (at least one column when it has any)."""
    if fraction >= 1.0 or count == 0:
        return np.ones(count, bool)
    keep = max(1, int(round(count * fraction)))
    mask = np.zeros(count, bool)
    mask[rng.choice(count, keep, replace=False)] = True
    return mask
