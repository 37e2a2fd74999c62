"""Consistent cuts of a training run, and going back to the last one.

A *cut* is a step boundary at which no gradient is in flight: the label party has finished its
own deferred work and flushed every feature party's last gradient. Every feature party then saves
its segment and optimizer under the tag ``step-<n>`` and the label party saves its top, own bottom,
optimizer, the links' state, torch's generator (dropout), the data-loader position (epoch, batch)
and the early-stopping state. The defence noise needs no saved state: it is keyed by the job key
and the step. When a feature party becomes unreachable the run waits for it (bounded),
then every party restores the cut and training continues from its step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from services.engine.checkpoint import atomic_write, checkpoint_blob, restore_blob
from services.engine.training import EarlyStopping
from services.party.protection import LabelLink
from services.party.segment import CUT_PREFIX
from services.protocol.errors import ErrorCode, PeerError, SpliceError
from services.protocol.messages import CheckpointInfo, EpochMetrics
from services.protocol.peers import SegmentClient

log = logging.getLogger("splice.training")
POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ResumeWindow:
    """How long a run waits for lost parties: until the monotonic time ``until``, set by
    ``reason`` (the resume timeout, or the contract's training deadline when that is sooner)."""

    until: float
    reason: str


MAX_RESUMES = 20
_RECOVERABLE = {ErrorCode.PEER_UNAVAILABLE, ErrorCode.STEP_CONFLICT, ErrorCode.UNKNOWN_JOB}


class Interrupted(SpliceError):
    """The run was stopped (the label party is shutting down) at a step boundary."""

    status = 409
    code = ErrorCode.CONFLICT


@dataclass(slots=True)
class Progress:
    """Where a run is: what a cut saves besides tensors."""

    stopper: EarlyStopping
    epoch: int = 0
    batch: int = 0
    """Batches of ``epoch`` already trained (the data loader's position)."""
    step: int = 0
    loss_sum: float = 0.0
    """Sum of the current epoch's per-example losses so far."""
    samples: int = 0
    seconds: float = 0.0
    bytes: int = 0
    history: list[EpochMetrics] = field(default_factory=list)
    artifacts: dict[str, str] = field(default_factory=dict)
    segments: dict[str, str] = field(default_factory=dict)
    """Each party's segment digest of the best checkpoint so far."""

    def meta(self) -> dict[str, Any]:
        """JSON-ready fields."""
        doc = asdict(self)
        doc["history"] = [h.model_dump(mode="json") for h in self.history]
        return doc

    @classmethod
    def from_meta(cls, doc: dict[str, Any]) -> Progress:
        """Inverse of :meth:`meta`."""
        doc = dict(doc)
        doc["stopper"] = EarlyStopping(**doc["stopper"])
        doc["history"] = [EpochMetrics.model_validate(h) for h in doc["history"]]
        return cls(**doc)


@dataclass(slots=True)
class Cut:
    """The label party's side of the last consistent checkpoint."""

    tag: str
    blob: bytes


def recoverable(exc: SpliceError) -> bool:
    """Whether an error may come from a feature party that went away (and may come back)."""
    return exc.code in _RECOVERABLE or exc.status in (502, 503, 504)


class Cuts:
    """Takes cuts of one run and brings every party back to the last one."""

    def __init__(
        self,
        job_id: str,
        clients: dict[str, SegmentClient],
        links: dict[str, LabelLink],
        directory: Path | None,
    ) -> None:
        self.job_id, self.clients, self.links, self.directory = job_id, clients, links, directory
        self.last: Cut | None = None

    def adopt(self, tag: str, blob: bytes) -> None:
        """Make a cut read from disk (after this label party restarted) the last one."""
        self.last = Cut(tag, blob)

    async def take(
        self,
        progress: Progress,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        best: dict[str, torch.Tensor],
    ) -> dict[str, CheckpointInfo]:
        """Checkpoint every party at ``progress.step`` (no gradient may be in flight); what each
        feature party saved."""
        tag = f"{CUT_PREFIX}{progress.step}"
        infos = await asyncio.gather(
            *(c.checkpoint(self.job_id, tag) for c in self.clients.values())
        )
        extra = {"rng": torch.get_rng_state()}
        for name, link in self.links.items():
            extra |= {f"link.{name}.{k}": torch.from_numpy(v) for k, v in link.state().items()}
        extra |= {f"best.{k}": v for k, v in best.items()}
        blob = checkpoint_blob(model, optimizer, progress.meta(), extra)
        if self.directory is not None:
            atomic_write(self.directory / f"{tag}.safetensors", blob)
            previous = (
                None if self.last is None else self.directory / f"{self.last.tag}.safetensors"
            )
            if previous is not None and previous.name != f"{tag}.safetensors":
                previous.unlink(missing_ok=True)
        self.last = Cut(tag, blob)
        return dict(zip(self.clients, infos, strict=True))

    async def resume(
        self,
        cause: SpliceError,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        window: ResumeWindow,
    ) -> tuple[Progress, dict[str, torch.Tensor]]:
        """Wait (within ``window``) for every feature party to answer, restore the last cut
        everywhere; the progress and best snapshot to continue from."""
        cut = self.last
        if cut is None:
            raise cause
        await self.reach_all(cause, window, tag=cut.tag)
        extra: dict[str, torch.Tensor] = {}
        meta = restore_blob(cut.blob, model, optimizer, extra)
        torch.set_rng_state(extra["rng"])
        for name, link in self.links.items():
            prefix = f"link.{name}."
            link.load(
                {k[len(prefix) :]: v.numpy() for k, v in extra.items() if k.startswith(prefix)}
            )
            link.reset()
        best = {k[5:]: v for k, v in extra.items() if k.startswith("best.")}
        log.warning("job %s resumed from %s", self.job_id, cut.tag)
        return Progress.from_meta(meta), best

    async def reach_all(
        self, cause: SpliceError, window: ResumeWindow, *, tag: str = "best"
    ) -> None:
        """Wait (within ``window``) for every feature party to answer its health check, then
        restore ``tag`` at every one of them."""
        until = window.until
        log.warning("job %s: %s; waiting to restore %s", self.job_id, cause, tag)
        while True:
            try:
                await asyncio.gather(*(self._healthy(c, until) for c in self.clients.values()))
                await asyncio.gather(*(c.restore(self.job_id, tag) for c in self.clients.values()))
                return
            except SpliceError as exc:
                if not recoverable(exc):
                    raise
                if time.monotonic() >= until:
                    raise PeerError(
                        f"a feature party did not come back within {window.reason}; the "
                        f"run could not resume from {tag} (last error: {exc})",
                        code=ErrorCode.PEER_UNAVAILABLE,
                    ) from exc
                await asyncio.sleep(POLL_SECONDS)

    async def _healthy(self, client: SegmentClient, until: float) -> None:
        """Return once the party answers its health check; raise past ``until``."""
        while True:
            try:
                await client.request("GET", "/v1/health")
                return
            except SpliceError as exc:
                if time.monotonic() >= until or not recoverable(exc):
                    raise
            await asyncio.sleep(POLL_SECONDS)


async def resume_window(
    job_id: str,
    timeout: float,
    training_deadline: Callable[[], Awaitable[datetime | None]] | None,
) -> ResumeWindow:
    """Wait for lost parties at most ``timeout`` seconds, and never past the contract's
    training deadline (when the registry can tell it)."""
    now = time.monotonic()
    window = ResumeWindow(now + timeout, f"the resume timeout ({timeout:g} s)")
    if training_deadline is None:
        return window
    try:
        deadline = await training_deadline()
    except SpliceError as exc:
        log.warning("job %s: the training deadline is unknown (%s)", job_id, exc)
        return window
    if deadline is None:
        return window
    left = (deadline - datetime.now(UTC)).total_seconds()
    if now + left < window.until:
        reason = f"the contract's training deadline ({deadline.isoformat()})"
        window = ResumeWindow(now + max(left, 0.0), reason)
    return window
