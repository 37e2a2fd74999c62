"""Each party's contribution to a trained tree model at the label party (exact Shapley and
leave-one-out over feature parties by name; the engine's ``services.engine.gbdt.contribution``
with the parties' own split answers)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from services.engine.gbdt.booster import Model
from services.engine.gbdt.contribution import coalition_contributions
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
    return coalition_contributions(model, bits, {n: p for p, n in enumerate(names, start=1)}, y)
