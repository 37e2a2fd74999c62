"""A finished tree run as a model that serves predictions at the label party.

The label party walks the trees; each party resolves its own splits. Per request, each feature
party is asked once for every split it owns: the request's rows by alignment handle (each
distinct handle once), and it answers only a left/right bit per split and row, never a
threshold, bin edge or value. The label party resolves its own splits on its encoded row.
Metering, key limits and the recorded model digest are the shared serving path's
(:class:`services.party.inference.service.Predictor`).
"""

from __future__ import annotations

import asyncio

import numpy as np
import numpy.typing as npt

from services.engine.drift import Window
from services.engine.gbdt import messages as msg
from services.engine.gbdt import objectives
from services.engine.gbdt.booster import Model
from services.engine.gbdt.errors import GbdtMessageError
from services.engine.gbdt.label import VerticalSource, route
from services.engine.split import distinct_rows
from services.party.families.gbdt.label_run import TreeTrainer
from services.party.families.gbdt.wire import serve_request
from services.party.inference.rows import RequestRows, RowSchema
from services.party.inference.serving import ServingModel
from services.protocol.errors import Conflict, ErrorCode, PeerError
from services.protocol.messages import Prediction
from services.protocol.terms import model_digest, spec_digest

Bits = dict[tuple[int, str], npt.NDArray[np.bool_]]


class TreeServingModel(ServingModel):
    """The served view of a finished :class:`TreeTrainer`."""

    def __init__(self, trainer: TreeTrainer) -> None:  # the nn view's state is not built
        data, model, source = trainer.data, trainer.model, trainer.source
        if data is None or model is None or source is None:
            raise Conflict(
                f"job {trainer.spec.job_id} has no trained model in this process",
                code=ErrorCode.MODEL_NOT_LOADED,
            )
        spec = trainer.spec
        self.job_id, self.contract_id, self.party = spec.job_id, spec.contract_id, spec.party
        self.task, self.labels = spec.task, data.labels
        self.links = {}
        self.clients = trainer.clients
        self.train_features = data.features
        self.served = Window()
        self.own = None
        self.schema = RowSchema(
            encoder=data.encoder,
            keys={fp.name: fp.key_column for fp in spec.feature_parties},
            key_handles=trainer.key_handles,
        )
        self.segment_digests = dict(trainer.status.segment_digests)
        self.digest = model_digest(
            trainer.status.spec_digest or spec_digest(spec), self.segment_digests
        )
        self.model: Model = model
        self.source: VerticalSource = source
        self.names = trainer.names()
        self.refs: dict[int, list[str]] = {}
        for r in model.rounds:
            for tree in r:
                for node in tree.nodes:
                    if not node.is_leaf:
                        self.refs.setdefault(node.party, []).append(node.ref)

    async def predict(self, rows: RequestRows, decimals: int | None = None) -> list[Prediction]:
        """Predictions for encoded ``rows`` (``no_prediction`` for a row whose key the
        alignment did not share)."""
        ok = rows.predictable
        answers = [Prediction(status="no_prediction") for _ in range(rows.count)]
        if not ok.any():
            return answers
        keep = np.flatnonzero(ok)
        self.served.add(rows.features[keep])
        x_own = rows.features[keep].astype(np.float64)
        bits: Bits = {
            (0, ref): v for ref, v in self.source.own_bits(self.refs.get(0, []), x_own).items()
        }
        asked = [
            self._bits(p, name, rows.handles[name][keep])
            for p, name in enumerate(self.names, start=1)
            if self.refs.get(p)
        ]
        for found in await asyncio.gather(*asked):
            bits |= found
        k = self.model.params.outputs
        raw = np.tile(self.model.base, (keep.shape[0], 1))
        for r in self.model.rounds:
            for c in range(k):
                raw[:, c] += route([r[c]], bits, keep.shape[0])
        pred = objectives.predict(self.model.params, raw)
        made = self._answers(pred, decimals)
        for i, answer in zip(keep, made, strict=True):
            answers[int(i)] = answer
        return answers

    async def _bits(self, party: int, name: str, handles: npt.NDArray[np.int64]) -> Bits:
        """Party ``name``'s left bits of all its splits for ``handles`` (one call)."""
        distinct, inverse = distinct_rows(handles)
        refs = self.refs[party]
        resp = await self.clients[name].request(
            "POST",
            f"/v1/jobs/{self.job_id}/trees/serve",
            content=serve_request(refs, distinct),
            media_type="application/octet-stream",
        )
        try:
            _, sections = msg.decode(resp.content, "resolve")
            if len(sections) != len(refs):
                raise GbdtMessageError("serve: one bit row per reference expected")
            return {
                (party, ref): msg.bits(data, distinct.shape[0], "served bits")[inverse]
                for ref, data in zip(refs, sections, strict=True)
            }
        except GbdtMessageError as exc:
            raise PeerError(f"party {name} answered a malformed serve: {exc}") from None
