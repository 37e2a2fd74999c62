"""The segment calls of a training step or an evaluation batch, once for both ways in: the HTTP
endpoints (``routes/segments.py``) and the step stream (``routes/stream.py``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from pydantic import TypeAdapter

from services.party.segment import SegmentJob
from services.party.state import PartyState
from services.protocol import codec, deadline
from services.protocol.errors import BadRequest
from services.protocol.messages import (
    BackwardHeader,
    EmbedHeader,
    ForwardHeader,
    MixHeader,
    StepAck,
)

_forward_header = TypeAdapter(ForwardHeader)
_backward_header = TypeAdapter(BackwardHeader)
_embed_header = TypeAdapter(EmbedHeader)
_mix_header = TypeAdapter(MixHeader)


def same_job(path_id: str, header_id: str) -> None:
    """The frame must name the job of the URL."""
    if path_id != header_id:
        raise BadRequest(
            "the frame names another job than the URL",
            detail={"url": path_id, "frame": header_id},
        )


@asynccontextmanager
async def _locked(state: PartyState, path_id: str, header_id: str) -> AsyncIterator[SegmentJob]:
    """The job the URL names (the frame must name it too), under its lock, within the caller's
    deadline."""
    same_job(path_id, header_id)
    job = state.job(path_id)
    if job.spec.family != "nn":  # a tree job's features never leave through a segment
        raise BadRequest(
            f"job {path_id} is a {job.spec.family} job: it has no segment to step",
            detail={"job_id": path_id, "family": job.spec.family},
        )
    async with job.lock:
        deadline.check()
        yield job


async def forward(state: PartyState, job_id: str, frame: codec.Frame) -> bytes:
    """Training forward (a piggybacked gradient of the previous step applied first)."""
    header = _forward_header.validate_python(frame.header)
    async with _locked(state, job_id, header.job_id) as job:
        return job.forward(
            header.step, header.idempotency_key, frame, header.grad_step, header.train
        )


async def backward(state: PartyState, job_id: str, frame: codec.Frame) -> StepAck:
    """The gradient for the forward of a step, and an optimizer step."""
    header = _backward_header.validate_python(frame.header)
    async with _locked(state, job_id, header.job_id) as job:
        return job.backward(header.step, header.idempotency_key, frame)


async def embed(state: PartyState, job_id: str, frame: codec.Frame) -> bytes:
    """Evaluation-mode activations (ckks: ``Enc(h)`` kept for the mix under ``ref``)."""
    header = _embed_header.validate_python(frame.header)
    served = header.usage_event is not None
    async with _locked(state, job_id, header.job_id) as job:
        answer = job.embed(frame, header.ref, served=served)
    if served and job.book is None:
        state.warm_book(job)  # new keys will come: hash this party's keys ahead
    return answer


async def mix(state: PartyState, job_id: str, frame: codec.Frame) -> bytes:
    """ckks: ``h W_A + R + h W_P`` for a forward's step or an embed's ref."""
    header = _mix_header.validate_python(frame.header)
    async with _locked(state, job_id, header.job_id) as job:
        return job.mix(frame, header.step, header.ref)
