"""The revocation feed party services subscribe to (long polling)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from services.protocol.bounds import INT32_MAX
from services.registry.api.deps import CallerDep, SessionDep, SettingsDep
from services.registry.auth import Caller
from services.registry.store import feed

router = APIRouter(tags=["revocations"])
PARTY_CALL = "party:call"


class Change(BaseModel):
    """One change a party must honour at once."""

    seq: int
    kind: str
    action: str
    at: datetime
    jti: str | None = None
    client_id: str | None = None
    org_id: str | None = None
    contract_id: str | None = None


class Changes(BaseModel):
    """Changes after the cursor, and the cursor to ask after next (``last``)."""

    events: list[Change]
    last: int


def _audience(sessions: sessionmaker[Session], caller: Caller) -> feed.Audience:
    with sessions() as session:
        return feed.audience_of(session, caller)


def _head(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return feed.head(session)


def _changes(
    sessions: sessionmaker[Session], after: int, audience: feed.Audience
) -> tuple[list[feed.FeedEvent], int]:
    with sessions() as session:
        return feed.changes(session, after, audience)


@router.get("/v1/revocations")
async def revocations(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: CallerDep,
    after: Annotated[
        int | None,
        Query(ge=0, le=INT32_MAX, description="The ``last`` of the previous answer."),
    ] = None,
    wait: Annotated[
        float, Query(ge=0, le=25, description="Seconds to wait for a change (long poll).")
    ] = 0,
) -> Changes:
    """What party services must stop honouring now (scope ``party:call``): access tokens and
    clients revoked, organisations suspended or reinstated, contracts suspended, reinstated,
    terminated or expired, amendments agreed, model versions deployed, retired or rolled back:
    those of the contracts the caller's organisation owns or is party to, and of their members.

    Without ``after`` the answer is at once, with no events and the cursor to start from. With
    it, the registry answers as soon as a change after ``after`` exists, or after ``wait``
    seconds with none; ask again with the answer's ``last``. Changes are audit log entries, in
    the order they were committed, each seen once (docs/adr/0005-revocation-feed.md).
    """
    caller.require_scope(PARTY_CALL)
    session.close()  # a long poll must not hold a database connection while it waits
    sessions: sessionmaker[Session] = request.app.state.sessions
    if after is None:
        return Changes(events=[], last=await run_in_threadpool(_head, sessions))
    audience = await run_in_threadpool(_audience, sessions, caller)
    until = time.monotonic() + wait
    while True:
        found, last = await run_in_threadpool(_changes, sessions, after, audience)
        if found or time.monotonic() >= until or await request.is_disconnected():
            return Changes(events=[Change(**e.__dict__) for e in found], last=last)
        after = last
        await asyncio.sleep(
            min(settings.revocation_poll_seconds, max(0.0, until - time.monotonic()))
        )
