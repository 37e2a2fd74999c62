"""Each party's contribution to a trained tree model at the label party (exact Shapley and
leave-one-out over feature parties by name; the engine's ``services.engine.gbdt.contribution``
with the parties' own split answers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine import contribution
from services.engine.gbdt import objectives
from services.engine.gbdt.booster import Model
from services.engine.gbdt.contribution import expected
from services.engine.gbdt.label import VerticalSource
from services.engine.gbdt.vertical import resolve_bits

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def tree_contributions(
    model: Model, source: VerticalSource, names: list[str], x_own: F64, rows: I64, y: F64
) -> dict[str, dict[str, float]]:
    """Shapley values and leave-one-out of feature parties ``names`` (party ``p`` is
    ``names[p - 1]``) on rows ``rows`` with labels ``y``: a coalition's value is the metric
    when the splits of parties outside it are unknown (the label party is always in)."""
    bits = resolve_bits(source, len(names), model.rounds, x_own, rows)
    params, k = model.params, model.params.outputs
    index = {name: p for p, name in enumerate(names, start=1)}

    def value(coalition: frozenset[str]) -> float:
        known = frozenset({0, *(index[n] for n in coalition)})
        raw = np.tile(model.base, (rows.shape[0], 1))
        for r in model.rounds:
            for c in range(k):
                raw[:, c] += expected(r[c], bits, rows.shape[0], known)
        score = objectives.metric(params, y, raw)
        return -score if objectives.metric_name(params) == "rmse" else score

    values = contribution.coalition_values(names, value)
    return {
        "shapley": contribution.shapley(names, values),
        "leave_one_out": contribution.leave_one_out(names, values),
    }
