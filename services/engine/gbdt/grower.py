"""Level-wise tree growth over a histogram source: the one algorithm both the centralized
reference and the vertical protocol run, so that in plain mode they agree exactly.

A source answers three things for the label party: the layouts of every party's histograms (the
label party's own first), a node's histograms (its rows' ``g, h``; :meth:`Source.submit`),
and a split: "party p, candidate c" -> an opaque reference plus left bits for every
training and validation row. Histograms of the larger child come from the parent by subtraction.

A node's histograms are asked for (:meth:`Source.submit`) as soon as its parent is split and
taken (the returned callable) only when the node is chosen on: the feature parties compute a
node's histograms while the label party splits the nodes before it. Nodes are split in the same
order, and get the same ids, as when each level was asked for at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.params import GbdtParams
from services.engine.gbdt.splits import Candidate, Layout, best_split, leaf_weight

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]


Pending = Callable[[], list[F64]]
"""A node's histograms, one per party, once computed (waits for them)."""


class Source(Protocol):
    """Where the label party's histograms and splits come from."""

    def layouts(self) -> list[Layout]: ...

    def allowed(self, tree: int) -> list[Bools]: ...

    def submit(self, rows: I64, g: F64, h: F64) -> Pending:
        """Ask for one node's histograms; the callable returns them (called once)."""
        ...

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
    hists: Pending | None = None


def _once(pending: Pending) -> Pending:
    """``pending``, called at most once (a smaller child's histograms serve its sibling too)."""
    memo: list[list[F64]] = []

    def get() -> list[F64]:
        if not memo:
            memo.append(pending())
        return memo[0]

    return get


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
    root = _Open(0, sample, np.ones(n_train, bool), np.ones(n_valid, bool))
    root.hists = _once(src.submit(sample, g, h))
    level = [root]
    for depth in range(params.depth + 1):
        following: list[_Open] = []
        for op in level:
            hists = op.hists() if op.hists is not None else []  # every request is taken
            gs, hs = float(np.sum(g[op.rows])), float(np.sum(h[op.rows]))
            best: tuple[int, Candidate] | None = None
            if depth < params.depth and op.rows.size >= 2:
                for p, (hist, lay) in enumerate(zip(hists, layouts, strict=True)):
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
                _Open(left_id, op.rows[goes], op.train & tl, op.valid & vl),
                _Open(right_id, op.rows[~goes], op.train & ~tl, op.valid & ~vl),
            )
            following += kids
            if depth + 1 >= params.depth:  # children are leaves: no histograms needed
                continue
            small, big = kids if kids[0].rows.size <= kids[1].rows.size else kids[::-1]
            small.hists = _once(src.submit(small.rows, g, h))
            big.hists = _minus(hists, small.hists)  # the parent's, minus the smaller child's
        if not following:
            break
        level = following
    return tree, train_out, valid_out


def _minus(parent: list[F64], child: Pending) -> Pending:
    return lambda: [p - c for p, c in zip(parent, child(), strict=True)]


def sample_columns(rng: np.random.Generator, count: int, fraction: float) -> Bools:
    """Column subsample of one party for one tree (at least one column when it has any)."""
    if fraction >= 1.0 or count == 0:
        return np.ones(count, bool)
    keep = max(1, int(round(count * fraction)))
    mask = np.zeros(count, bool)
    mask[rng.choice(count, keep, replace=False)] = True
    return mask
