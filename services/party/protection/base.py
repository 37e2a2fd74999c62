"""How the cut layer is protected: one base class per side, implemented once per mode.

The feature party's side (:class:`FeatureProtection`) decides what a forward or an embed answers
(activations in the clear, or ciphertexts), what a gradient frame must hold and how it is
decoded, what extra state a checkpoint keeps and what the ``prepare`` answer tells the label
party. The label party's side (:class:`LabelLink`) turns a batch of handles into ``z = h W`` and
``dL/dz`` into what the feature party receives next. Modes register both sides once in
:mod:`services.party.protection` (``MODES``); the party service and the trainer only ever call
these two interfaces, and one test suite (tests/party/test_protection.py) runs against every
registered mode.

Two facts shape both sides:

* ``W = W_A + W_P``: the feature parties' interactive weights are additively shared
  (services/engine/interactive.py); each share starts from its holder's private job key.
* A feature party whose bottom has no trainable parameters (``kind: identity``) never receives
  ``dL/dh``: nothing it holds needs it, so the gradient channel that label-leakage attacks read
  does not exist (docs/adr/0007-label-privacy.md).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch

from services.engine import he
from services.engine.defence import defend
from services.engine.interactive import F64
from services.engine.keyed import JobKey
from services.protocol import codec
from services.protocol.errors import BadRequest, ErrorCode, SpliceError
from services.protocol.messages import (
    PreparedJob,
    PrepareJob,
    ProtectionMode,
    TrainingSpec,
    nn_model,
)
from services.protocol.peers import SegmentClient


class KeyMismatch(SpliceError):
    """A feature party's key bundle is not the one recorded for the job."""

    status = 409
    code = ErrorCode.CONFLICT


class FeatureProtection(ABC):
    """A feature party's side of one job's protection."""

    mode: ClassVar[ProtectionMode]
    keeps_secret: ClassVar[bool] = False
    """The mode holds key material (:meth:`secret`) a job cannot resume without."""

    def __init__(self, *, trainable: bool) -> None:
        self.trainable = trainable
        """The party's bottom has trainable parameters: it receives ``dL/dh``."""

    @classmethod
    @abstractmethod
    def create(
        cls,
        spec: PrepareJob,
        share: F64,
        pool: Callable[[], he.HePool],
        stored: bytes | None,
        *,
        trainable: bool,
    ) -> Self:
        """This mode's side for a job (``share``: the party's initial ``W_P``, ``in_features x
        interactive``; ``stored``: what :meth:`secret` gave before this party restarted, None
        for a new job)."""

    def secret(self) -> bytes | None:
        """Key material the party must keep on its own disk to survive a restart."""
        return None

    @property
    @abstractmethod
    def width(self) -> int:
        """Width of this party's cut (its bottom's output)."""

    def public_bundle(self) -> bytes:
        """Public key material the label party fetches (modes with keys)."""
        raise BadRequest(f"this job runs in {self.mode} mode: it has no keys")

    @property
    def shares_weights(self) -> bool:
        """This party trains a share of ``W`` itself (it needs W's gradient share each step)."""
        return False

    @property
    def trains(self) -> bool:
        """A training forward awaits a gradient (of the bottom or of the share)."""
        return self.trainable or self.shares_weights

    @abstractmethod
    def forward_answer(self, header: dict[str, Any], out: torch.Tensor) -> bytes:
        """The answer to a forward whose output is ``out``."""

    @abstractmethod
    def embed_answer(self, header: dict[str, Any], out: torch.Tensor, ref: str | None) -> bytes:
        """The answer to an embed (evaluation mode) whose output is ``out``."""

    @abstractmethod
    def receive(self, frame: codec.Frame, rows: int, width: int) -> torch.Tensor | None:
        """Check and decode the gradient tensors of ``frame`` for a pending forward of ``rows``
        rows of width ``width``; the gradient of the bottom's output (None when the bottom has
        nothing to train). Nothing changes until :meth:`apply`."""

    def apply(self) -> None:
        """Apply what :meth:`receive` decoded for this party's share (nothing by default)."""
        return None

    def discard(self) -> None:
        """Forget what :meth:`receive` decoded (the job went back to a checkpoint)."""
        return None

    def mix(self, masked: bytes, h: F64) -> F64:
        """Second message of a forward or embed; only modes that mask ``z`` have one."""
        raise BadRequest(f"this job runs in {self.mode} mode: nothing to mix")

    @property
    def needs_ref(self) -> bool:
        """An embed must name a ``ref`` (its mix follows)."""
        return False

    def remember(self, ref: str, h: F64) -> None:
        """Keep an embedding for its mix (modes with a mix)."""
        return None

    def recall(self, ref: str) -> F64:
        """An embedding kept for its mix."""
        raise BadRequest(f"this job runs in {self.mode} mode: no embedding awaits a mix")

    def forget(self, ref: str) -> None:
        """Drop an embedding once its mix was answered."""
        return None

    def state(self) -> dict[str, F64]:
        """Extra tensors a checkpoint keeps (a share, say)."""
        return {}

    def load(self, state: dict[str, F64]) -> None:
        """Restore :meth:`state`."""
        return None

    @abstractmethod
    def prepared(self) -> dict[str, Any]:
        """This mode's fields of the :class:`PreparedJob` answer."""

    def refuse_grad(self, frame: codec.Frame, names: tuple[str, ...]) -> None:
        """A gradient frame for a party with nothing to train must not carry ``names``."""
        extra = sorted(set(frame.tensors) & set(names))
        if extra and not self.trainable:
            raise BadRequest(
                f"this party's bottom has nothing to train: no {', '.join(extra)} is expected",
                detail={"tensors": extra},
            )


class LabelLink(ABC):
    """One feature party as the label party's trainer sees it, under the job's protection."""

    mode: ClassVar[ProtectionMode]

    def __init__(
        self,
        spec: TrainingSpec,
        name: str,
        client: SegmentClient,
        key: JobKey,
        prepared: PreparedJob,
    ) -> None:
        self.spec, self.name, self.client = spec, name, client
        self.key = key
        """The label party's private job key: the defence noise of step t is the stream
        ``("defence", name)`` at counter t (reproducible after a restart, unknown to the party)."""
        self.defence = spec.protection.defence
        self.key_bytes = 0
        self.share_bits: int | None = None
        """ckks: the width (bits) of the offsets that re-randomise the label party's share."""
        self.warnings: list[str] = []
        """What weakens the protection the contract states (reported in the job's status)."""
        self.m = nn_model(spec.model).top.interactive
        self.d = prepared.out_features
        self.sends_dh = prepared.trainable
        """The party's bottom trains, so it receives the (defended) ``dL/dh``."""

    @classmethod
    @abstractmethod
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
        """The link to a prepared feature party (``recorded``: key fingerprints the registry
        keeps with the job, None without a registry)."""

    def _defended(self, delta: torch.Tensor, examples: int, step: int) -> F64:
        noise = self.key.stream("defence", self.name, counter=step)
        out: F64 = defend(delta.detach().double(), examples, self.defence, noise).numpy()
        return out

    @abstractmethod
    async def forward(
        self, step: int, handles: npt.NDArray[np.int64], sent: asyncio.Event
    ) -> torch.Tensor:
        """``z = h W`` for ``handles``; the request carries the previous step's gradient."""

    @abstractmethod
    def backward(self, step: int, delta: torch.Tensor, examples: int) -> None:
        """Update ``W`` (or this party's share) from ``dL/dz``; keep what the party receives."""

    @abstractmethod
    async def flush(self) -> None:
        """Send the last gradient of an epoch on its own."""

    @abstractmethod
    async def embed(self, handles: npt.NDArray[np.int64]) -> torch.Tensor:
        """``z = h W`` in evaluation mode."""

    @abstractmethod
    def state(self) -> dict[str, F64]:
        """Tensors to checkpoint."""

    @abstractmethod
    def load(self, state: dict[str, F64]) -> None:
        """Restore :meth:`state`."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the step in progress (the run goes back to a consistent checkpoint)."""


__all__ = ["FeatureProtection", "KeyMismatch", "LabelLink"]
