"""The label party's tree checkpoint: model (every finished round), its own split table, the
validation history. No pickle: the tree protocol's framing with a JSON header. The feature
party's checkpoint is its split table (:meth:`FeatureParty.checkpoint`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from services.engine.gbdt import messages as msg
from services.engine.gbdt.booster import Model
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.grower import Node, Tree
from services.engine.gbdt.params import GbdtParams

Splits = dict[str, tuple[int, int, bool]]


def dump_label(model: Model, own_splits: Splits) -> bytes:
    """Serialise the label party's state after a round."""
    rounds = [
        [[[n.party, n.ref, n.left, n.right, n.weight, n.cover] for n in t.nodes] for t in r]
        for r in model.rounds
    ]
    return msg.encode({
        "kind": "label_checkpoint", "params": model.params.model_dump(),
        "base": [float(v) for v in model.base], "rounds": rounds,
        "valid_loss": model.valid_loss, "best_rounds": model.best_rounds,
        "own_splits": {ref: list(v) for ref, v in own_splits.items()},
    })  # fmt: skip


def _node(raw: Any) -> Node:
    if (
        not isinstance(raw, list) or len(raw) != 6 or not isinstance(raw[0], int)
        or not isinstance(raw[1], str) or not isinstance(raw[2], int)
        or not isinstance(raw[3], int) or not isinstance(raw[4], int | float)
        or not math.isfinite(raw[4]) or not isinstance(raw[5], int)
    ):  # fmt: skip
        raise GbdtMessageError("label checkpoint: malformed node")
    return Node(raw[0], raw[1], raw[2], raw[3], float(raw[4]), raw[5])


def load_label(blob: bytes) -> tuple[Model, Splits]:
    """Parse :func:`dump_label`; any defect is a :class:`GbdtMessageError`."""
    head, _ = msg.decode(blob, "label_checkpoint")
    params = GbdtParams.parse(head.get("params"))
    rounds, base = head.get("rounds"), head.get("base")
    losses, own = head.get("valid_loss"), head.get("own_splits")
    if (
        not isinstance(rounds, list) or not isinstance(base, list)
        or len(base) != params.outputs or not isinstance(losses, list)
        or not isinstance(own, dict)
    ):  # fmt: skip
        raise GbdtMessageError("label checkpoint: malformed")
    model = Model(params, np.asarray(base, dtype=np.float64))
    for r in rounds:
        if not isinstance(r, list) or len(r) != params.outputs:
            raise GbdtMessageError("label checkpoint: malformed round")
        model.rounds.append([Tree([_node(n) for n in t]) for t in r])
    model.valid_loss = [float(v) for v in losses]
    model.best_rounds = msg.field(head, "best_rounds", int, "label checkpoint")
    splits: Splits = {}
    for ref, v in own.items():
        if not isinstance(v, list) or len(v) != 3:
            raise GbdtMessageError("label checkpoint: malformed split")
        splits[str(ref)] = (int(v[0]), int(v[1]), bool(v[2]))
    return model, splits
