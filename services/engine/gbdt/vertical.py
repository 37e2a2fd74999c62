"""In-process vertical runs (tests, benchmarks, pilot): the label party and feature parties
exchange only message bytes through :func:`local_send`; prediction resolves each party's splits
at that party."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.gbdt import booster
from services.engine.gbdt import messages as msg
from services.engine.gbdt.booster import Model
from services.engine.gbdt.checkpoint import load_label
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.feature import FeatureParty
from services.engine.gbdt.grower import Tree
from services.engine.gbdt.label import Send, VerticalSource, route
from services.engine.gbdt.params import GbdtParams
from services.engine.keyed import JobKey

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def local_send(parties: list[FeatureParty]) -> Send:
    """A transport to in-process feature parties (party ``p`` is ``parties[p - 1]``)."""

    def send(party: int, kind: str, payload: bytes) -> bytes:
        return parties[party - 1].handle(kind, payload)

    return send


def resolve_bits(
    source: VerticalSource, parties: int, rounds: list[list[Tree]], x_own: F64, rows: I64
) -> dict[tuple[int, str], npt.NDArray[np.bool_]]:
    """Left bits of every split of ``rounds`` for rows ``rows``: each party resolves its own
    (``x_own``: the label party's features of those rows)."""
    refs: dict[int, list[str]] = {}
    for r in rounds:
        for tree in r:
            for node in tree.nodes:
                if not node.is_leaf:
                    refs.setdefault(node.party, []).append(node.ref)
    bits = {(0, k): v for k, v in source.own_bits(refs.get(0, []), x_own).items()}
    for p in range(1, parties + 1):
        mine = refs.get(p, [])
        head = {"kind": "resolve", "refs": mine, "rows": [int(i) for i in rows]}
        _, sections = source.call(p, "resolve", msg.encode(head))
        if len(sections) != len(mine):
            raise GbdtMessageError("resolve: one bit row per reference expected")
        for ref, data in zip(mine, sections, strict=True):
            bits[(p, ref)] = msg.bits(data, rows.shape[0], "resolved bits")
    return bits


def scores(
    source: VerticalSource, parties: int, rounds: list[list[Tree]], x_own: F64, rows: I64
) -> F64:
    """Tree outputs per round (rounds x rows x outputs) of ``rounds`` for rows ``rows`` of every
    party's table: each party resolves its own splits (``x_own``: the label party's features)."""
    bits = resolve_bits(source, parties, rounds, x_own, rows)
    outputs = len(rounds[0]) if rounds else 1
    out = np.zeros((len(rounds), rows.shape[0], outputs))
    for i, r in enumerate(rounds):
        for c in range(outputs):
            out[i, :, c] = route([r[c]], bits, rows.shape[0])
    return out


@dataclass
class VerticalRun:
    """A trained vertical model with the roles that hold its pieces."""

    model: Model
    source: VerticalSource
    parties: list[FeatureParty]
    send: Send

    def predict_raw(self, x_own: F64, rows: I64) -> F64:
        """Raw scores of rows ``rows`` of every party's table (each party resolves its splits;
        ``x_own`` are the label party's features of those rows)."""
        raw = np.tile(self.model.base, (rows.shape[0], 1))
        for contribution in scores(self.source, len(self.parties), self.model.rounds, x_own, rows):
            raw += contribution
        return raw


def train_vertical(
    params: GbdtParams,
    x_label: F64,
    y: F64,
    x_parties: list[F64],
    train: I64,
    valid: I64,
    seed: int = 0,
    keys: list[JobKey] | None = None,
    *,
    parties: list[FeatureParty] | None = None,
    resume: bytes | None = None,
    on_round: Callable[[Model, VerticalSource], None] | None = None,
) -> VerticalRun:
    """Train with the label party's table ``x_label`` and labels ``y`` (rows aligned with every
    ``x_parties`` table; ``train``/``valid`` index them). ``keys`` are the parties' private job
    keys, label party first (a harness without them derives public ones from ``seed``).

    ``parties`` are feature parties already running (say restarted from their checkpoints);
    ``resume`` is a label checkpoint (:func:`checkpoint.dump_label`, as ``on_round`` can write
    one after every round) to go on from."""
    if keys is None:
        keys = [JobKey.public(seed, "gbdt", str(i)) for i in range(len(x_parties) + 1)]
    if parties is None:
        parties = [
            FeatureParty(params, x, train, valid, k)
            for x, k in zip(x_parties, keys[1:], strict=True)
        ]
    send = local_send(parties)
    src = VerticalSource(params, x_label, train, valid, len(parties), send, keys[0])
    yv = y[valid] if valid.size else None
    start = None
    if resume is not None:
        start, own = load_label(resume)
        if start.params != params:
            raise GbdtMessageError("the checkpoint was made with other tree parameters")
        src.own_splits = own

    def replay(rounds: list[list[Tree]]) -> tuple[F64, F64]:
        n = len(parties)
        done_v = (
            scores(src, n, rounds, x_label[valid], valid)
            if valid.size
            else np.zeros((len(rounds), 0, params.outputs))
        )
        return scores(src, n, rounds, x_label[train], train), done_v

    model, _, _ = booster.train(
        params, src, y[train], yv, src.row_seed, resume=start, replay=replay,
        on_round=None if on_round is None else (lambda m: on_round(m, src)),
    )  # fmt: skip
    return VerticalRun(model, src, parties, send)
