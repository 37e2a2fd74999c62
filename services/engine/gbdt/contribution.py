"""Each party's contribution to a tree model, without retraining (the tree family's side of
:mod:`services.engine.contribution`).

A coalition's value is the model's metric on evaluation rows when the splits of parties outside
the coalition are unknown: such a split sends a row down both branches, weighted by the
training rows each child received (the expectation over the training distribution, as TreeSHAP
does), so ``2**n`` evaluations for ``n`` parties and no party resolves anything twice.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine import contribution
from services.engine.gbdt import objectives
from services.engine.gbdt.booster import Model
from services.engine.gbdt.grower import Tree
from services.engine.gbdt.vertical import VerticalRun, resolve_bits

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bits = dict[tuple[int, str], npt.NDArray[np.bool_]]


def expected(tree: Tree, bits: Bits, rows: int, known: frozenset[int]) -> F64:
    """Output of ``tree`` for ``rows`` rows when only the splits of parties in ``known`` are
    resolved (the label party, 0, is always known: it holds the model)."""

    def value(i: int) -> F64:
        node = tree.nodes[i]
        if node.is_leaf:
            return np.full(rows, node.weight)
        left, right = value(node.left), value(node.right)
        if node.party in known:
            out: F64 = np.where(bits[(node.party, node.ref)], left, right)
            return out
        cl, cr = tree.nodes[node.left].cover, tree.nodes[node.right].cover
        return (cl * left + cr * right) / max(cl + cr, 1)

    return value(0)


def party_contributions(
    run: VerticalRun, x_own: F64, rows: I64, y: F64
) -> dict[str, dict[str, float]]:
    """Exact Shapley values and leave-one-out of the feature parties (named ``"1"``, ``"2"``,
    ...) on rows ``rows`` with labels ``y``; the empty coalition is the label party alone."""
    bits = resolve_bits(run.source, len(run.parties), run.model.rounds, x_own, rows)
    index = {str(p): p for p in range(1, len(run.parties) + 1)}
    return coalition_contributions(run.model, bits, index, y)


def coalition_contributions(
    model: Model, bits: Bits, index: dict[str, int], y: F64
) -> dict[str, dict[str, float]]:
    """Shapley values and leave-one-out of the feature parties ``index`` (name -> party number)
    from their split answers ``bits`` on the rows of labels ``y``: a coalition's value is the
    metric when the splits of parties outside it are unknown (the label party is always in)."""
    params, k, rows = model.params, model.params.outputs, y.shape[0]
    names = list(index)

    def value(coalition: frozenset[str]) -> float:
        known = frozenset({0, *(index[n] for n in coalition)})
        raw = np.tile(model.base, (rows, 1))
        for r in model.rounds:
            for c in range(k):
                raw[:, c] += expected(r[c], bits, rows, known)
        score = objectives.metric(params, y, raw)
        return -score if objectives.metric_name(params) == "rmse" else score

    values = contribution.coalition_values(names, value)
    return {
        "shapley": contribution.shapley(names, values),
        "leave_one_out": contribution.leave_one_out(names, values),
    }
