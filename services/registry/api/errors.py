"""The registry's error mapping: the shared one, plus races on unique keys."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from contracts import ContractValidationError
from services.protocol.errors import ErrorCode
from services.registry.api.contract_input import invalid
from services.web.errors import error_response
from services.web.errors import install_error_handlers as install_common

log = logging.getLogger("splice.registry.http")


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as ``{code, message, detail}``; 401s name the bearer realm."""
    install_common(app, realm="splice-registry", logger="splice.registry.http")

    @app.exception_handler(ContractValidationError)
    async def _invalid_contract(request: Request, exc: ContractValidationError) -> JSONResponse:
        # a document that does not resolve (an unknown org, a party twice): 422 naming fields
        err = invalid(exc)
        return error_response(err.status, err.code.value, err.message, err.detail)

    @app.exception_handler(IntegrityError)
    async def _integrity(request: Request, exc: IntegrityError) -> JSONResponse:
        # A concurrent request won a race on a unique key; its constraint names the conflict.
        log.info("integrity error on %s %s: %s", request.method, request.url.path, exc.orig)
        return error_response(
            409, ErrorCode.CONFLICT.value, "the change conflicts with existing data"
        )
