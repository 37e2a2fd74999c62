"""Map every error to the protocol's error body, once per app; never a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.protocol.errors import ErrorBody, ErrorCode, RateLimited, SpliceError

_HTTP_CODES = {
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.BAD_REQUEST,
}


def error_response(
    status: int,
    code: str,
    message: str,
    detail: object = None,
    *,
    realm: str | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
    """A ``{code, message, detail}`` answer; a 401 names its bearer realm (RFC 6750), a 429 when
    to retry (``Retry-After``, seconds)."""
    body = ErrorBody(code=code, message=message, detail=detail)
    headers = {"WWW-Authenticate": f'Bearer realm="{realm}"'} if status == 401 and realm else {}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers or None)


def _validation_detail(errors: list[dict[str, object]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for e in errors:
        loc = e.get("loc", ())
        path = list(loc) if isinstance(loc, list | tuple) else [loc]
        out.append({"loc": path, "msg": e.get("msg"), "type": e.get("type")})
    return out


def install_error_handlers(app: FastAPI, *, realm: str, logger: str) -> None:
    """Domain errors, validation errors, HTTP errors and anything unexpected leave as error
    bodies with stable codes. Services add handlers for their own exception types after this."""
    log = logging.getLogger(logger)

    @app.exception_handler(SpliceError)
    async def _splice(_: Request, exc: SpliceError) -> JSONResponse:
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        return error_response(
            exc.status,
            exc.code.value,
            exc.message,
            exc.detail,
            realm=realm,
            retry_after=retry_after,
        )

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(list(exc.errors()))
        message = "request does not match its schema"
        return error_response(422, ErrorCode.VALIDATION.value, message, detail)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        detail = _validation_detail([dict(e) for e in exc.errors()])
        message = "data does not match its schema"
        return error_response(422, ErrorCode.VALIDATION.value, message, detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
        return error_response(exc.status_code, code.value, str(exc.detail), realm=realm)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(500, ErrorCode.INTERNAL.value, "internal error")
