"""The label party's end of a step stream (:mod:`services.protocol.stream`): one WebSocket to a
feature party, opened on first use with the client's bearer token, one call in flight at a time.

A connection that drops is opened again and the call resent once (its idempotency key makes that
safe, as for a retried HTTP call); an answer ``401`` (the token expired while the stream was open)
reopens the stream with a fresh token and resends once. A peer that does not offer the stream
(the upgrade is answered 404/405/426, or not at all by a proxy) raises :class:`StreamUnavailable`
and the caller falls back to HTTP.
"""

from __future__ import annotations

import asyncio
import ssl

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from services.protocol import correlation
from services.protocol.client import error_of
from services.protocol.errors import BadRequest, ErrorCode, PayloadTooLarge, PeerError
from services.protocol.stream import StreamAnswer, StreamOp, StreamRequest, pack_request
from services.protocol.stream import unpack_answer as _unpack_answer

NO_STREAM_STATUS = frozenset({400, 404, 405, 426, 501})
"""Upgrade answers that mean "no stream here" (not "you may not"): use HTTP instead."""
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
_TOO_BIG = 1009  # WebSocket close code: message too big


class StreamUnavailable(Exception):
    """The peer does not offer a step stream; use HTTP."""


class StreamUnreachable(Exception):
    """The stream could not be opened or dropped twice (connection refused, reset, timeout)."""


class StepStream:
    """One job's step stream to one feature party."""

    def __init__(
        self,
        base_url: str,
        job_id: str,
        *,
        auth: httpx.Auth | None,
        tls: ssl.SSLContext | None,
        connect_timeout: float,
        read_timeout: float | None,
    ) -> None:
        scheme = "wss" if base_url.startswith("https://") else "ws"
        rest = base_url.split("://", 1)[1].rstrip("/")
        self.url = f"{scheme}://{rest}/v1/jobs/{job_id}/stream"
        self.http_url = f"{base_url.rstrip('/')}/v1/jobs/{job_id}/stream"
        self.auth = auth
        self.tls = tls if scheme == "wss" else None
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.sent_bytes = 0
        self.received_bytes = 0
        self._ws: ClientConnection | None = None
        self._seq = 0
        self._lock = asyncio.Lock()

    async def call(
        self,
        op: StreamOp,
        body: bytes,
        *,
        deadline_ms: int | None,
        sent: asyncio.Event | None = None,
    ) -> tuple[int, bytes]:
        """Send one call; its answer's status and body (an error body when >= 400)."""
        async with self._lock:
            fresh = False
            for attempt in (0, 1):
                ws = self._ws if self._ws is not None else await self._open(fresh=fresh)
                self._seq += 1
                envelope = StreamRequest(
                    op=op,
                    seq=self._seq,
                    deadline_ms=deadline_ms,
                    correlation_id=correlation.current(),
                )
                message = pack_request(envelope, body)
                try:
                    await ws.send(message)
                    if sent is not None:
                        sent.set()
                    raw = await asyncio.wait_for(ws.recv(decode=False), self.read_timeout)
                except ConnectionClosed as exc:
                    self._ws = None
                    if _too_big(exc):
                        raise PayloadTooLarge(
                            "the peer refused a stream message as too large"
                        ) from exc
                    if attempt == 0:
                        continue
                    raise StreamUnreachable(f"{self.url} closed the stream twice") from exc
                except TimeoutError as exc:
                    await self._drop()
                    raise PeerError(
                        f"{self.url} did not answer within {self.read_timeout} s",
                        code=ErrorCode.PEER_UNAVAILABLE,
                        detail={"url": self.http_url},
                    ) from exc
                self.sent_bytes += len(message)
                self.received_bytes += len(raw)
                answer, out = self._answer(raw)
                if answer.status == 401 and attempt == 0:
                    await self._drop()
                    fresh = True
                    continue
                return answer.status, out
            raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, raw: bytes | str) -> tuple[StreamAnswer, bytes]:
        if not isinstance(raw, bytes):
            raise PeerError(f"{self.url} answered with a text message")
        try:
            answer, out = _unpack_answer(raw)
        except BadRequest as exc:
            raise PeerError(f"{self.url} sent an unreadable stream answer: {exc.message}") from exc
        if answer.seq != self._seq:
            raise PeerError(f"{self.url} answered call {answer.seq}, expected {self._seq}")
        return answer, out

    async def _open(self, *, fresh: bool) -> ClientConnection:
        headers = await self._authorization(fresh)
        try:
            ws = await connect(
                self.url,
                additional_headers=headers,
                ssl=self.tls,
                max_size=MAX_MESSAGE_BYTES,
                compression=None,
                open_timeout=self.connect_timeout,
                ping_interval=None,
                close_timeout=1.0,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401 and not fresh:
                return await self._open(fresh=True)
            if status in NO_STREAM_STATUS or status < 400:
                raise StreamUnavailable(f"{self.url}: upgrade answered {status}") from exc
            raise error_of(status, bytes(exc.response.body or b"")) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise StreamUnreachable(f"{self.url} unreachable: {type(exc).__name__}") from exc
        self._ws = ws
        return ws

    async def _authorization(self, fresh: bool) -> dict[str, str]:
        """The ``Authorization`` header the client's auth would put on an HTTP call (after a
        401 when ``fresh``: a newly fetched token)."""
        if self.auth is None:
            return {}
        request = httpx.Request("GET", self.http_url)
        flow = self.auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            if fresh:
                request = await flow.asend(httpx.Response(401, request=request))
        except StopAsyncIteration:
            pass
        finally:
            await flow.aclose()
        value = request.headers.get("authorization")
        return {} if value is None else {"authorization": value}

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def aclose(self) -> None:
        """Close the stream (the peer sees a normal closure)."""
        async with self._lock:
            await self._drop()


def _too_big(exc: ConnectionClosed) -> bool:
    return any(frame is not None and frame.code == _TOO_BIG for frame in (exc.rcvd, exc.sent))
