"""Typed HTTP clients for Splice services, on one retrying ``httpx.AsyncClient`` wrapper.

Timeouts are explicit; connection errors and 429/503 answers are retried by the one policy of
:mod:`services.protocol.retry` (bounded attempts, exponential backoff with jitter, the peer's
``Retry-After`` honoured). Requests that change state carry an idempotency key in
their message, so a retry is answered, not applied twice. Error answers become the protocol's
exception hierarchy. Every call carries the current correlation id (``X-Correlation-ID``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ValidationError

from services.protocol import codec, correlation, deadline
from services.protocol.errors import ErrorBody, ErrorCode, PeerError, SpliceError, error_from_body
from services.protocol.retry import RETRY_STATUS, Retryable, RetryPolicy

_M = TypeVar("_M", bound=BaseModel)

_TRANSIENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)


@dataclass(slots=True)
class Traffic:
    """Bytes of request and response bodies a client exchanged."""

    sent: int = 0
    received: int = 0

    @property
    def total(self) -> int:
        """Both directions."""
        return self.sent + self.received


class ServiceClient:
    """Base client: retries, error mapping, traffic accounting."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float | httpx.Timeout = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        backoff_cap: float = 10.0,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(retries, backoff, backoff_cap)
        self.traffic = Traffic()
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            auth=auth,
            transport=transport,
            verify=verify,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )

    def use_auth(self, auth: httpx.Auth) -> None:
        """Authenticate every further request with ``auth`` (e.g. registry bearer tokens)."""
        self._http.auth = auth

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        json: Any = None,
        media_type: str | None = None,
        retry_reads: bool = True,
        sent: asyncio.Event | None = None,
    ) -> httpx.Response:
        """Send a request; retry transient failures; raise :class:`SpliceError` on error answers.

        ``retry_reads`` allows retrying after the request may have reached the server (read
        errors, 503); set it only for idempotent requests. ``sent`` is set once the request body
        has been written to the socket, so a caller can compute while the peer works.
        """
        headers: dict[str, str] = {"content-type": media_type} if media_type else {}
        cid = correlation.current()
        if cid is not None:
            headers[correlation.HEADER] = cid
        extensions = None if sent is None else {"trace": _sent_tracer(sent)}

        async def attempt() -> httpx.Response:
            budget = deadline.remaining_ms(self.timeout.read)
            if budget is not None:
                headers[deadline.HEADER] = str(budget)
            try:
                resp = await self._http.request(
                    method, path, content=content, json=json, headers=headers, extensions=extensions
                )
            except _TRANSIENT as exc:
                reached = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if reached and not retry_reads:
                    raise self._unreachable(exc) from exc
                raise Retryable(type(exc).__name__) from exc
            except httpx.TimeoutException as exc:  # read, write, pool: slow, not gone
                raise self.blame(
                    PeerError(
                        f"{self.base_url} did not answer within the peer timeouts "
                        f"({type(exc).__name__}); long calls need longer ones",
                        detail={"url": self.base_url},
                        code=ErrorCode.PEER_UNAVAILABLE,
                    )
                ) from exc
            self.traffic.sent += len(resp.request.content)
            self.traffic.received += len(resp.content)
            if resp.status_code in RETRY_STATUS:
                raise Retryable.of(resp)
            return resp

        try:
            resp = await self.policy.call(attempt)
        except Retryable as exc:
            if exc.response is None:
                raise self._unreachable(exc.__cause__ or exc) from exc.__cause__
            resp = exc.response
        if resp.status_code >= 400:
            raise self.blame(_error(resp))
        return resp

    def blame(self, exc: SpliceError) -> SpliceError:
        """``exc``, marked as this peer's (:attr:`SpliceError.peer`)."""
        exc.peer = self.base_url
        return exc

    def _unreachable(self, exc: BaseException) -> SpliceError:
        return self.blame(
            PeerError(
                f"{self.base_url} unreachable: {type(exc).__name__}",
                detail={"url": self.base_url},
                code=ErrorCode.PEER_UNAVAILABLE,
            )
        )

    async def get_json(self, path: str) -> Any:
        """GET a JSON document."""
        return (await self.request("GET", path)).json()

    async def call(self, method: str, path: str, body: BaseModel | None, answer: type[_M]) -> _M:
        """Send a JSON model, parse the answer as ``answer``."""
        payload = None if body is None else body.model_dump(mode="json")
        resp = await self.request(method, path, json=payload)
        return answer.model_validate_json(resp.content)


def _sent_tracer(sent: asyncio.Event) -> Callable[[str, dict[str, Any]], Awaitable[None]]:
    """An httpcore trace callback that sets ``sent`` when the request body is on the wire."""

    async def trace(event: str, _: dict[str, Any]) -> None:
        if event == "http11.send_request_body.complete":
            sent.set()

    return trace


def _error(resp: httpx.Response) -> SpliceError:
    return error_of(resp.status_code, resp.content)


def error_of(status: int, content: bytes) -> SpliceError:
    """The client-side exception for an error answer's status and body."""
    try:
        body = ErrorBody.model_validate_json(content)
    except ValidationError:
        body = ErrorBody(code="peer_error", message=f"HTTP {status}", detail=None)
    return error_from_body(status, body)


def activations(content: bytes, name: str = "activations") -> npt.NDArray[np.float32]:
    """The float32 activations tensor of a binary answer's body."""
    frame = codec.decode(content)
    arr: npt.NDArray[np.float32] = frame.tensor(name, dtype="float32", ndim=2).astype(
        np.float32, copy=False
    )
    return arr
