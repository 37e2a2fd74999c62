"""Liveness and identity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.party.api.deps import RunsDep, StateDep
from services.protocol.version import PROTOCOL_VERSION

router = APIRouter(tags=["health"])


@router.get("/v1/health")
async def health(state: StateDep, runs: RunsDep) -> dict[str, Any]:
    """The party's name, protocol version and job counts."""
    return {
        "status": "ok",
        "party": state.settings.name,
        "protocol": PROTOCOL_VERSION,
        "jobs": len(state.jobs),
        "trainings_active": runs.active(),
    }
