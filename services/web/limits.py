"""Request body size limit as a pure ASGI middleware (counts bytes, trusts no header)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.protocol.errors import ErrorBody, ErrorCode, PayloadTooLarge


class BodyLimit:
    """Answer 413 with an error body once a request body exceeds ``max_bytes``.

    Under the path prefixes ``forms`` (HTML forms) the app answers instead: reading the body
    raises :class:`PayloadTooLarge` as soon as it is known to be too large (at once when the
    declared length says so) and the app's answer stands (a form re-rendered with the error on
    its field). The server (uvicorn) reads and drops the rest of the body after the answer, so a
    browser still sending receives it.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, forms: tuple[str, ...] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.forms = forms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        too_long = declared is not None and declared.isdigit() and int(declared) > self.max_bytes
        if self.forms and str(scope["path"]).startswith(self.forms):
            await self._form(scope, receive, send, exceeded=too_long)
            return
        if too_long:
            await self._reject(send)
            return
        seen = 0
        started = exceeded = replaced = False

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    # A SpliceError, so the app's own handler answers 413 with an error body.
                    raise PayloadTooLarge(
                        f"request body exceeds {self.max_bytes} bytes",
                        detail={"limit": self.max_bytes},
                    )
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                if exceeded and not started:
                    # FastAPI turns any error while it reads a JSON body into a 400; the answer
                    # to an oversized body is a 413 whatever the app made of it.
                    started = replaced = True
                    await self._reject(send)
                    return
                started = True
            elif replaced:
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            if not started:
                await self._reject(send)

    async def _form(self, scope: Scope, receive: Receive, send: Send, *, exceeded: bool) -> None:
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen, exceeded
            if not exceeded:
                message = await receive()
                if message["type"] == "http.request":
                    seen += len(message.get("body", b""))
                    exceeded = seen > self.max_bytes
                if not exceeded:
                    return message
            raise PayloadTooLarge(
                f"request body exceeds {self.max_bytes} bytes", detail={"limit": self.max_bytes}
            )

        await self.app(scope, limited_receive, send)

    async def _reject(self, send: Send) -> None:
        body = ErrorBody(
            code=ErrorCode.PAYLOAD_TOO_LARGE.value,
            message=f"request body exceeds {self.max_bytes} bytes",
            detail={"limit": self.max_bytes},
        )
        raw = json.dumps(body.model_dump()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": raw})
