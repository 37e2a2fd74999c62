"""The feature party's end of a job's step stream (:mod:`services.protocol.stream`).

The upgrade is authorized as the job's HTTP endpoints are (a registry token of the contract's label
party for this job; denied with the same error body otherwise). Every message is then checked
again before it is served: the token still unexpired and honoured by the registry, the contract
still active, the per-organisation rate limit, the size limit, and for ``embed`` and ``mix`` the
deployed-model rule. A bad message gets an error answer and the stream stays open; a token that
expired gets a 401 answer and the stream is closed (the label party reopens it with a new token).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.datastructures import State
from starlette.websockets import WebSocketDisconnect

from services.party.api import segment_ops
from services.party.api.deps import check_evaluation, count_caller, is_shadow
from services.party.auth import PeerCaller
from services.party.metering.observations import ServingObserver
from services.party.registry_link import RegistryLink
from services.party.revocations import OpenStreams
from services.party.state import PartyState
from services.protocol import codec, correlation, deadline
from services.protocol.errors import (
    ErrorBody,
    ErrorCode,
    NotFound,
    PayloadTooLarge,
    SpliceError,
    Unauthenticated,
)
from services.protocol.stream import ENVELOPE_LIMIT, StreamAnswer, pack_answer, unpack_request
from services.protocol.version import TENSOR_MEDIA_TYPE
from services.web.errors import error_response
from services.web.metrics import AppMetrics

router = APIRouter()
log = logging.getLogger("splice.party.stream")

_JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_POLICY_VIOLATION = 1008


async def _ack(state: PartyState, job_id: str, frame: codec.Frame) -> bytes:
    return (await segment_ops.backward(state, job_id, frame)).model_dump_json().encode()


_OPS: dict[str, tuple[Callable[[PartyState, str, codec.Frame], Awaitable[bytes]], str]] = {
    "forward": (segment_ops.forward, TENSOR_MEDIA_TYPE),
    "backward": (_ack, "application/json"),
    "embed": (segment_ops.embed, TENSOR_MEDIA_TYPE),
    "mix": (segment_ops.mix, TENSOR_MEDIA_TYPE),
}


class StreamSession:
    """One open step stream: who opened it, and how each message is checked and served."""

    def __init__(
        self,
        app_state: State,
        job_id: str,
        authorization: str | None,
        claims: dict[str, Any] | None,
    ) -> None:
        self.app_state = app_state
        self.party: PartyState = app_state.party
        self.link: RegistryLink | None = app_state.registry
        self.metrics: AppMetrics | None = getattr(app_state, "metrics", None)
        self.observer: ServingObserver = app_state.observer
        self.job_id = job_id
        self.authorization = authorization
        self.claims = claims
        self.max_bytes = self.party.settings.max_body_bytes + ENVELOPE_LIMIT + 4
        self.websocket: WebSocket | None = None

    async def close(self, reason: str) -> None:
        """Close the stream now (a revocation or suspension the registry pushed)."""
        if self.websocket is not None:
            log.info("closing the step stream of job %s: %s", self.job_id, reason)
            await self.websocket.close(_POLICY_VIOLATION, reason=reason[:120])

    @classmethod
    async def open(cls, app_state: State, job_id: str, authorization: str | None) -> StreamSession:
        """Authorize the upgrade (raises the error an HTTP call would get)."""
        if not _JOB_ID.fullmatch(job_id):
            raise NotFound("no such job", code=ErrorCode.UNKNOWN_JOB, detail={"job_id": job_id})
        link: RegistryLink | None = app_state.registry
        claims = None
        if link is not None:
            claims = await link.authorizer.verify(authorization)
            caller = await link.authorizer.authorize_claims(claims, role="label", job_id=job_id)
            count_caller(app_state, caller.org_id)
        return cls(app_state, job_id, authorization, claims)

    async def _caller(self) -> PeerCaller | None:
        if self.link is None or self.claims is None:
            return None
        authorizer = self.link.authorizer
        await authorizer.recheck(self.authorization, self.claims)
        caller = await authorizer.authorize_claims(self.claims, role="label", job_id=self.job_id)
        count_caller(self.app_state, caller.org_id)
        return caller

    def _too_large(self) -> PayloadTooLarge:
        limit = self.party.settings.max_body_bytes
        return PayloadTooLarge(
            "the message exceeds the party's body limit", detail={"limit": limit}
        )

    async def handle(self, message: bytes) -> tuple[bytes, bool]:
        """The answer to one message, and whether the stream must close after it."""
        start = time.perf_counter()
        seq, op, media, close = -1, "unknown", "application/json", False
        try:
            if len(message) > self.max_bytes:
                raise self._too_large()
            envelope, body = unpack_request(message)
            seq, op = envelope.seq, envelope.op
            if len(body) > self.party.settings.max_body_bytes:
                raise self._too_large()
            correlation.correlation_id.set(
                correlation.valid(envelope.correlation_id) or correlation.new_id()
            )
            deadline.bind(None)
            if envelope.deadline_ms is not None:
                deadline.bind(deadline.accept(envelope.deadline_ms))
            caller = await self._caller()
            frame = codec.decode(body)
            standing = None
            if op in ("embed", "mix"):
                shadow = is_shadow(frame)
                standing = await check_evaluation(self.link, caller, self.party, shadow=shadow)
            serve, media = _OPS[op]
            status, out = 200, await serve(self.party, self.job_id, frame)
            if op == "embed":
                await self.observer.observe(caller, standing, frame)
        except SpliceError as exc:
            status, media = exc.status, "application/json"
            out = exc.body().model_dump_json().encode()
            close = isinstance(exc, Unauthenticated)
        except ValidationError as exc:
            error = ErrorBody(
                code=ErrorCode.VALIDATION.value,
                message="data does not match its schema",
                detail=[{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()],
            )
            status, out, media = 422, error.model_dump_json().encode(), "application/json"
        except Exception as exc:  # noqa: BLE001 - last resort: an error body, never a traceback
            log.error("unhandled %s on stream op %s", type(exc).__name__, op)
            error = ErrorBody(code=ErrorCode.INTERNAL.value, message="internal error")
            status, out, media = 500, error.model_dump_json().encode(), "application/json"
        if self.metrics is not None:
            route = f"/v1/jobs/{{job_id}}/{op}"
            self.metrics.requests.labels("STREAM", route, str(status)).inc()
            self.metrics.latency.labels("STREAM", route).observe(time.perf_counter() - start)
        return pack_answer(StreamAnswer(seq=seq, status=status, media_type=media), out), close


@router.websocket("/v1/jobs/{job_id}/stream")
async def step_stream(websocket: WebSocket, job_id: str) -> None:
    """A job's forward, backward, embed and mix calls over one WebSocket (binary messages)."""
    try:
        session = await StreamSession.open(
            websocket.app.state, job_id, websocket.headers.get("authorization")
        )
    except SpliceError as exc:
        denial = error_response(
            exc.status, exc.code.value, exc.message, exc.detail, realm="splice-party"
        )
        await websocket.send_denial_response(denial)
        return
    await websocket.accept()
    session.websocket = websocket
    streams: OpenStreams = websocket.app.state.streams
    streams.add(session)
    try:
        await _serve(websocket, session)
    except (WebSocketDisconnect, RuntimeError):  # closed meanwhile (by a revocation)
        return
    finally:
        streams.discard(session)


async def _serve(websocket: WebSocket, session: StreamSession) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            refusal = ErrorBody(
                code=ErrorCode.UNSUPPORTED_MEDIA_TYPE.value,
                message="a step stream carries binary messages only",
            )
            envelope = StreamAnswer(seq=-1, status=415, media_type="application/json")
            await websocket.send_bytes(pack_answer(envelope, refusal.model_dump_json().encode()))
            continue
        answer, close = await session.handle(data)
        await websocket.send_bytes(answer)
        if close:
            await websocket.close(_POLICY_VIOLATION)
            return
