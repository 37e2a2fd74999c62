"""Liveness and schema revision."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.protocol.version import PROTOCOL_VERSION

router = APIRouter(tags=["health"])


@router.get("/v1/health")
async def health(request: Request) -> dict[str, Any]:
    """The service's status, protocol version and database schema revision."""
    return {
        "status": "ok",
        "service": "registry",
        "protocol": PROTOCOL_VERSION,
        "schema_revision": request.app.state.schema_revision,
    }
