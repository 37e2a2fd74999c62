"""Map every error to the protocol's error body, once, for the whole app."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.protocol.errors import ErrorBody, ErrorCode, SpliceError

log = logging.getLogger("splice.registry.http")

_WWW_AUTHENTICATE = {"WWW-Authenticate": 'Bearer realm="splice-registry"'}


def _json(status: int, code: str, message: str, detail: object = None) -> JSONResponse:
    body = ErrorBody(code=code, message=message, detail=detail)
    headers = _WWW_AUTHENTICATE if status == 401 else None
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _validation_detail(errors: list[dict[str, object]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for e in errors:
        loc = e.get("loc", ())
        path = list(loc) if isinstance(loc, list | tuple) else [loc]
        out.append({"loc": path, "msg": e.get("msg"), "type": e.get("type")})
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{code, message, detail}``; never a traceback."""

    @app.exception_handler(SpliceError)
    async def _splice(_: Request, exc: SpliceError) -> JSONResponse:
        return _json(exc.status, exc.code.value, exc.message, exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(list(exc.errors()))
        return _json(422, ErrorCode.VALIDATION.value, "request does not match its schema", detail)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        detail = _validation_detail([dict(e) for e in exc.errors()])
        return _json(422, ErrorCode.VALIDATION.value, "data does not match its schema", detail)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent request won a race on a unique key; its constraint names the conflict.
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return _json(409, ErrorCode.CONFLICT.value, "the change conflicts with existing data")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            401: ErrorCode.UNAUTHENTICATED,
            403: ErrorCode.FORBIDDEN,
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.BAD_REQUEST,
        }.get(exc.status_code, ErrorCode.BAD_REQUEST)
        return _json(exc.status_code, code.value, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return _json(500, ErrorCode.INTERNAL.value, "internal error")
