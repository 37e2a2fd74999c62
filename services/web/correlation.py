"""Correlation ids for every request, as a pure ASGI middleware.

Takes ``X-Correlation-ID`` from the request when it is a short token (1-128 of
``A-Za-z0-9._:-``), makes a fresh one otherwise, sets it as the current correlation id while the
request runs (logs and outgoing peer calls carry it) and echoes it in the response header.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.protocol import correlation

_HEADER = correlation.HEADER.lower().encode()


class CorrelationId:
    """Bind the request's correlation id; answer with it in ``X-Correlation-ID``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = dict(scope.get("headers", [])).get(_HEADER)
        given = correlation.valid(raw.decode("latin-1")) if raw is not None else None
        cid = given or correlation.new_id()
        token = correlation.correlation_id.set(cid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[correlation.HEADER] = cid
            await send(message)

        await self.app(scope, receive, send_with_id)
        # Not reset when the app raised: the server's last-resort handler, which runs outside
        # this middleware, then still logs with the request's id (a server runs each request in
        # its own task, so the id goes no further).
        correlation.correlation_id.reset(token)
