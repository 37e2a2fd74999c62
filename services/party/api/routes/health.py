"""Liveness and identity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from services.party.api.deps import OutboxDep, RunsDep, ShipperDep, StateDep
from services.protocol.version import PROTOCOL_VERSION

router = APIRouter(tags=["health"])


@router.get("/v1/health")
async def health(
    state: StateDep, runs: RunsDep, outbox: OutboxDep, shipper: ShipperDep
) -> dict[str, Any]:
    """The party's name, protocol version, job counts and its usage outbox: events waiting to
    be shipped to the registry (``outbox.pending``), events the registry refused
    (``outbox.refused``, kept aside) and, under a registry, the shipping task's counters
    (``outbox.shipper``)."""
    return {
        "status": "ok",
        "party": state.settings.name,
        "protocol": PROTOCOL_VERSION,
        "jobs": len(state.jobs),
        "trainings_active": runs.active(),
        "outbox": {
            "pending": outbox.depth(),
            "refused": outbox.refused_count(),
            "shipper": None if shipper is None else shipper.health(),
        },
    }
