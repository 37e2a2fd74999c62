"""The step stream: a job's training and evaluation calls over one WebSocket.

Each HTTP round trip through uvicorn and httpx costs ~1.2 ms on this machine before any work is
done (headers, routing, dependency injection, connection pool): more than a training step's
compute at batch 1024. The label party therefore sends a job's ``forward``, ``backward``,
``embed`` and ``mix`` calls to each feature party over one WebSocket per job
(``/v1/jobs/{job_id}/stream``), opened with the same bearer token an HTTP call carries.

A message is exactly what the HTTP call would send, behind a small envelope:

* request: ``>I`` envelope length, the envelope as JSON (:class:`StreamRequest`: protocol version,
  operation, sequence number, deadline, correlation id), then the body the HTTP endpoint takes (a
  tensor frame);
* answer: ``>I`` envelope length, :class:`StreamAnswer` (the request's sequence number, the
  status and media type HTTP would answer), then the body HTTP would answer (a tensor frame, a
  JSON acknowledgement or an error body ``{code, message, detail}``).

The feature party checks every message as it checks every HTTP call (token still valid, the
contract still active, the caller its label party, the job the token's job); the same
idempotency keys make a message resent after a dropped connection safe. The HTTP endpoints stay:
a party without the stream, or a proxy that does not upgrade, is reached over HTTP.
"""

from __future__ import annotations

import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.protocol.bounds import INT64_MAX, MAX_DEADLINE_MS
from services.protocol.errors import BadRequest, ErrorCode

StreamOp = Literal["forward", "backward", "embed", "mix"]
"""Calls a step stream carries: those of the segment API that a training step or an evaluation
batch makes, with tensor frames for bodies."""

STREAM_OPS: tuple[StreamOp, ...] = ("forward", "backward", "embed", "mix")
ENVELOPE_LIMIT = 4096
"""Largest envelope accepted, in bytes (it holds a few short fields)."""
_LENGTH = struct.Struct(">I")


class StreamRequest(BaseModel):
    """Envelope of a request on a step stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal["1"] = "1"
    op: StreamOp
    seq: int = Field(ge=0, le=INT64_MAX, description="Sequence number, echoed by the answer.")
    deadline_ms: int | None = Field(
        default=None,
        ge=-INT64_MAX,
        le=MAX_DEADLINE_MS,
        description="Milliseconds the caller still waits (as X-Splice-Deadline).",
    )
    correlation_id: str | None = Field(default=None, max_length=128)


class StreamAnswer(BaseModel):
    """Envelope of an answer on a step stream."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(
        ge=-1, le=INT64_MAX, description="The request's sequence number (-1: unreadable request)."
    )
    status: int = Field(ge=100, le=599, description="The status HTTP would answer.")
    media_type: str = Field(max_length=128)


def _pack(envelope: BaseModel, body: bytes) -> bytes:
    head = envelope.model_dump_json(exclude_none=True).encode()
    return b"".join((_LENGTH.pack(len(head)), head, body))


def _split(message: bytes) -> tuple[bytes, memoryview]:
    if len(message) < _LENGTH.size:
        raise BadRequest("a stream message is shorter than its length prefix")
    (size,) = _LENGTH.unpack_from(message)
    if size > ENVELOPE_LIMIT or _LENGTH.size + size > len(message):
        raise BadRequest(
            "a stream message's envelope length is out of range",
            detail={"envelope_bytes": size, "limit": ENVELOPE_LIMIT},
        )
    view = memoryview(message)
    return bytes(view[_LENGTH.size : _LENGTH.size + size]), view[_LENGTH.size + size :]


def pack_request(envelope: StreamRequest, body: bytes) -> bytes:
    """A request message: envelope and body."""
    return _pack(envelope, body)


def unpack_request(message: bytes) -> tuple[StreamRequest, bytes]:
    """A request's envelope and body; :class:`BadRequest` if it is not one."""
    head, body = _split(message)
    try:
        envelope = StreamRequest.model_validate_json(head)
    except ValidationError as exc:
        raise BadRequest(
            "a stream message's envelope does not match its schema",
            code=ErrorCode.VALIDATION,
            detail=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
        ) from exc
    return envelope, bytes(body)


def pack_answer(envelope: StreamAnswer, body: bytes) -> bytes:
    """An answer message: envelope and body."""
    return _pack(envelope, body)


def unpack_answer(message: bytes) -> tuple[StreamAnswer, bytes]:
    """An answer's envelope and body; :class:`BadRequest` if it is not one."""
    head, body = _split(message)
    try:
        return StreamAnswer.model_validate_json(head), bytes(body)
    except ValidationError as exc:
        raise BadRequest("a stream answer's envelope does not match its schema") from exc
