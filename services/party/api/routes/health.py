"""Liveness and identity."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from services.party.api.deps import OutboxDep, RunsDep, ShipperDep, StateDep
from services.protocol.version import PROTOCOL_VERSION

router = APIRouter(tags=["health"])


@router.get("/v1/health")
async def health(
    request: Request, state: StateDep, runs: RunsDep, outbox: OutboxDep, shipper: ShipperDep
) -> dict[str, Any]:
    """The party's name, protocol version, job counts and its usage outbox: events waiting to
    be shipped to the registry (``outbox.pending``), events the registry refused
    (``outbox.refused``, kept aside) and, under a registry, the shipping task's counters
    (``outbox.shipper``); a feature party's serving records waiting likewise
    (``observations``); and the registry's revocation feed (``revocation_feed``: connected,
    changes applied, open step streams)."""
    app = request.app.state
    observations = app.observations
    feed = app.revocations
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
        "observations": {
            "pending": observations.depth(),
            "refused": observations.refused_count(),
        },
        "revocation_feed": None if feed is None else feed.health(),
    }
