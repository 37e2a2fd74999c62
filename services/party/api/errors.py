"""The party service's error mapping: the shared one, plus table errors."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from services.engine.tabular import TableError
from services.protocol.errors import ErrorCode
from services.web.errors import error_response
from services.web.errors import install_error_handlers as install_common


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{code, message, detail}``; never a traceback."""
    install_common(app, realm="splice-party", logger="splice.party.http")

    @app.exception_handler(TableError)
    async def _table(_: Request, exc: TableError) -> JSONResponse:
        return error_response(400, ErrorCode.BAD_REQUEST.value, str(exc))
