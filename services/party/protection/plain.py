"""Plain mode: the cut layer in the clear (trusted pilots and tests).

The feature party answers its bottom's output ``h``; the label party holds ``W = W_A + W_P``
whole (the party sends its initial share ``W_P`` once, in the ``prepare`` answer) and sends
back ``dL/dh = dz~ W^T`` with the defended ``dz~`` when the party's bottom trains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch

from services.engine import he
from services.engine.interactive import F64, SgdShare, label_share_init
from services.engine.keyed import JobKey
from services.party.protection.base import FeatureProtection, LabelLink
from services.protocol import codec
from services.protocol.errors import ErrorCode, MalformedTensors, PeerError, SpliceError
from services.protocol.messages import PreparedJob, PrepareJob, TrainingSpec, WireDtype, nn_model
from services.protocol.peers import SegmentClient


class PlainFeature(FeatureProtection):
    """The feature party's side: activations out, ``dL/dh`` in."""

    mode = "plain"

    def __init__(self, share: F64, wire_dtype: WireDtype, *, trainable: bool) -> None:
        super().__init__(trainable=trainable)
        self.share = share
        self.wire_dtype = wire_dtype

    @classmethod
    def create(
        cls,
        spec: PrepareJob,
        share: F64,
        pool: Callable[[], he.HePool],
        stored: bytes | None,
        *,
        trainable: bool,
    ) -> Self:
        return cls(share, spec.wire_dtype, trainable=trainable)

    @property
    def width(self) -> int:
        return int(self.share.shape[0])

    def forward_answer(self, header: dict[str, Any], out: torch.Tensor) -> bytes:
        return codec.encode(
            header, {"activations": out.detach().numpy()}, wire_dtype=self.wire_dtype
        )

    def embed_answer(self, header: dict[str, Any], out: torch.Tensor, ref: str | None) -> bytes:
        return self.forward_answer(header, out)

    def receive(self, frame: codec.Frame, rows: int, width: int) -> torch.Tensor | None:
        self.refuse_grad(frame, ("grad",))
        grad = frame.tensor("grad", dtype="float32", ndim=2)
        if tuple(grad.shape) != (rows, width):
            raise MalformedTensors(
                f"gradient shape {list(grad.shape)} does not match the forward's {[rows, width]}",
                code=ErrorCode.SHAPE_MISMATCH,
                detail={"expected": [rows, width], "got": list(grad.shape)},
            )
        return torch.from_numpy(grad)

    def prepared(self) -> dict[str, Any]:
        return {"share": self.share.tolist()}


class PlainLink(LabelLink):
    """The label party's side: ``h`` in the clear; ``W = W_A + W_P`` held whole."""

    mode = "plain"

    def __init__(
        self,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
    ) -> None:
        super().__init__(spec, name, client, key, prepared)
        if prepared.share is None:
            raise PeerError(f"party {name} sent no interactive-weight share in plain mode")
        share = np.asarray(prepared.share, dtype=np.float64)
        if share.shape != (self.d, self.m) or not np.isfinite(share).all():
            raise PeerError(f"party {name} sent a share of shape {share.shape}")
        w = label_share_init(key, name, self.d, self.m) + share
        self.w = SgdShare(w, nn_model(spec.model).interactive_optimizer)
        self._h: npt.NDArray[np.float64] | None = None
        self._pending: tuple[int, npt.NDArray[np.float32]] | None = None

    @classmethod
    async def open(
        cls,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
        pool: Callable[[], he.HePool],
        recorded: dict[str, str] | None,
    ) -> Self:
        return cls(spec, name, client, key, prepared)

    async def forward(
        self, step: int, handles: npt.NDArray[np.int64], sent: asyncio.Event
    ) -> torch.Tensor:
        grad_step, grad = self._pending if self._pending is not None else (None, None)
        grads = None if grad is None else {"grad": grad}
        frame = await self.client.step(
            self.spec.job_id, step, handles, grad_step=grad_step, grads=grads, sent=sent
        )
        self._pending = None
        self._h = _activations(self.name, frame, handles.shape[0], self.d)
        return torch.from_numpy(self._h @ self.w.w).float()

    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None:
        """Update ``W`` with ``h^T dz``; keep ``defend(dz) W^T`` for the party (if it trains)."""
        assert self._h is not None
        dz = delta.detach().double().numpy()
        if self.sends_dh:
            dh = self._defended(delta, examples, step) @ self.w.w.T
            self._pending = (step, dh.astype(np.float32))
        self.w.step(self._h.T @ dz)

    async def flush(self) -> None:
        if self._pending is not None:
            step, grad = self._pending
            await self.client.deliver(self.spec.job_id, step, {"grad": grad})
            self._pending = None

    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        frame = await self.client.evaluate(self.spec.job_id, handles)
        h = _activations(self.name, frame, handles.shape[0], self.d)
        return torch.from_numpy(h @ self.w.w).float()

    def state(self) -> dict[str, F64]:
        return self.w.state()

    def load(self, state: dict[str, F64]) -> None:
        self.w.load(state)

    def reset(self) -> None:
        self._pending = None
        self._h = None


def _activations(name: str, frame: codec.Frame, rows: int, width: int) -> F64:
    try:
        h = frame.tensor("activations", dtype="float32", ndim=2)
    except SpliceError as exc:
        raise PeerError(f"party {name} sent unusable activations: {exc}") from exc
    if h.shape != (rows, width):
        raise PeerError(f"party {name} sent activations of shape {h.shape}, not {(rows, width)}")
    return h.astype(np.float64)
