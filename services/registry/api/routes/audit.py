"""The audit log and its hash-chain check."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.protocol.bounds import INT32_MAX
from services.protocol.errors import Forbidden
from services.registry.api.deps import AdminDep, CallerDep, SessionDep
from services.registry.api.schemas import AuditEntryOut, ChainVerification, audit_entry_out
from services.registry.store import audit, grants
from services.registry.store.grants import AUDIT_VERIFY

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("")
def list_entries(
    session: SessionDep,
    _: AdminDep,
    after: Annotated[
        int, Query(ge=0, le=INT32_MAX, description="Only entries with a larger seq.")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    """Audit entries oldest first, ``limit`` at a time after ``after`` (operators only)."""
    return [audit_entry_out(e) for e in audit.entries(session, after=after, limit=limit)]


@router.get("/organisation")
def organisation_entries(
    session: SessionDep,
    caller: CallerDep,
    action: Annotated[
        str | None, Query(max_length=64, description="Only actions starting with this.")
    ] = None,
    before: Annotated[
        int | None, Query(ge=1, le=INT32_MAX, description="Only entries with a smaller seq.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEntryOut]:
    """What the caller's organisation did, newest first: entries its people, its clients or
    the organisation itself wrote, and entries about it (its admins, scope ``org:admin``)."""
    if caller.org_id is None:
        raise Forbidden("operators read the whole log at GET /v1/audit")
    caller.require_manager(caller.org_id, operators=False)
    found = audit.organisation_entries(
        session, caller.org_id, action=action, before=before, limit=limit
    )
    return [audit_entry_out(e) for e in found]


@router.get("/verify")
def verify(session: SessionDep, caller: CallerDep) -> ChainVerification:
    """Recompute the audit log's hash chain: operators, and organisations the operator granted
    ``audit:verify`` (the answer tells the log's size, so the registry's activity volume),
    with scope ``reports:read``.

    ``ok`` is false when any entry was edited, deleted or reordered; ``first_bad_seq`` names the
    first entry that does not fit. Keep ``head_hash``: entries cut off the end are only visible
    against a head you kept.
    """
    caller.require_scope("reports:read")
    if not grants.holds(session, caller, AUDIT_VERIFY):
        raise Forbidden(
            f"verifying the audit log needs the operator's grant {AUDIT_VERIFY!r}",
            detail={"required_grant": AUDIT_VERIFY},
        )
    report = audit.verify(session)
    return ChainVerification(
        ok=report.ok,
        entries=report.entries,
        head_hash=report.head_hash,
        first_bad_seq=report.first_bad_seq,
        reason=report.reason,
    )
