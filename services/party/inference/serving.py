"""A finished training run as a model that serves predictions.

Serving runs the parts of the joint model the label party holds (its own bottom segment, the
top) in evaluation mode on the request's encoded rows, and gathers each feature party's ``z``
for the request's handles through the job's links, exactly as the trainer's evaluation does:
``embed`` in plain mode, ``embed`` and ``mix`` in ckks mode. Handles are deduplicated before
they leave (many boards, one paste lot), which is exact in evaluation mode.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from services.engine import tasks
from services.engine.content import weights_digest
from services.engine.drift import Window, drift, report
from services.engine.split import distinct_rows
from services.party.inference.rows import RequestRows, RowSchema
from services.party.training.driver import SplitTrainer
from services.party.training.steps import EVAL_CHUNK, snapshot
from services.protocol.errors import Conflict, ErrorCode
from services.protocol.messages import Prediction, Task
from services.protocol.terms import model_digest, spec_digest


class ServingModel:
    """The served view of a finished :class:`SplitTrainer`."""

    def __init__(self, trainer: SplitTrainer) -> None:
        data, top = trainer.data, trainer.top
        if data is None or top is None:
            raise Conflict(
                f"job {trainer.spec.job_id} has no trained model in this process",
                code=ErrorCode.MODEL_NOT_LOADED,
            )
        spec = trainer.spec
        self.job_id = spec.job_id
        self.contract_id = spec.contract_id
        self.party = spec.party
        self.task = spec.task
        self.labels = data.labels
        self.links = trainer.links
        self.clients = trainer.clients
        self.train_features = data.features
        """This party's own encoded rows of the training (the drift's training window)."""
        self.served = Window()
        """This party's own encoded rows of recent predictions (the serving window)."""
        self.own = trainer.own
        self.top = top
        self.schema = RowSchema(
            encoder=data.encoder,
            keys={fp.name: fp.key_column for fp in spec.feature_parties},
            key_handles=trainer.key_handles,
        )
        status = trainer.status
        self.segment_digests = {
            **status.segment_digests,
            spec.party: weights_digest(snapshot(top, self.own, self.links)),
        }
        """Each party's segment digest: this party's of the weights it holds now, the feature
        parties' as they reported them when the chosen checkpoint was saved."""
        self.digest = model_digest(status.spec_digest or spec_digest(spec), self.segment_digests)
        """The model digest: the spec digest and every segment digest."""

    async def predict(self, rows: RequestRows, decimals: int | None = None) -> list[Prediction]:
        """The joint model's predictions for encoded ``rows``, in their order; a row with a key
        the alignment did not share gets ``no_prediction``. Probabilities are rounded to
        ``decimals`` when given (the contract's ``serving.round_probabilities``)."""
        ok = rows.predictable
        answers = [Prediction(status="no_prediction") for _ in range(rows.count)]
        if not ok.any():
            return answers
        keep = np.flatnonzero(ok)
        self.served.add(rows.features[keep])
        names = list(self.links)
        remote = await asyncio.gather(*(self._embed(n, rows.handles[n][keep]) for n in names))
        inputs = dict(zip(names, remote, strict=True))
        with torch.no_grad():
            if self.own is not None:
                self.own.eval()
                inputs[self.party] = self.own(torch.from_numpy(rows.features[keep]))
            self.top.eval()
            logits = self.top(inputs)
        made = self._answers(tasks.predictions(self.task, logits), decimals)
        for i, answer in zip(keep, made, strict=True):
            answers[int(i)] = answer
        return answers

    def drift(self) -> dict[str, Any]:
        """Drift of this party's own features (scores only)."""
        served = self.served.values()
        names = [] if self.schema.encoder is None else self.schema.encoder.feature_names
        train = self.train_features
        serve = np.zeros((0, train.shape[1]), np.float32) if served is None else served
        columns = drift(names, train, serve.astype(np.float32))
        return report(self.party, columns, int(train.shape[0]), int(serve.shape[0]))

    async def _embed(self, name: str, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        """``z`` of feature party ``name`` for ``handles`` (each distinct handle asked once)."""
        distinct, inverse = distinct_rows(handles)
        link = self.links[name]
        parts = [
            await link.embed(distinct[start : start + EVAL_CHUNK])
            for start in range(0, distinct.shape[0], EVAL_CHUNK)
        ]
        z = torch.cat(parts) if len(parts) > 1 else parts[0]
        return z.index_select(0, torch.from_numpy(inverse))

    def _answers(self, pred: npt.NDArray[np.float64], decimals: int | None) -> list[Prediction]:
        classes = self.labels.classes

        def prob(p: float) -> float:
            return round(float(p), decimals) if decimals is not None else float(p)

        if self.task is Task.BINARY:
            return [
                Prediction(probability=prob(p), label=classes[int(p >= 0.5)]) for p in pred.tolist()
            ]
        if self.task is Task.MULTICLASS:
            return [
                Prediction(
                    label=classes[int(np.argmax(p))],
                    probabilities={c: prob(q) for c, q in zip(classes, p, strict=True)},
                )
                for p in pred
            ]
        mean, std = self.labels.mean, self.labels.std
        return [Prediction(value=float(v) * std + mean) for v in pred.tolist()]
