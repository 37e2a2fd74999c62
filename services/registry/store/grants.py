"""Roles an operator grants an organisation beyond what its contracts give it.

Least privilege by default: an organisation sees the contracts it owns or is party to, and
nothing else. A deployment that wants a cross-contract role grants it explicitly, per
organisation, in the audit log:

* ``reports:all-contracts``: the revenue report, usage events and reconciliation of every
  contract (a finance department serving several organisations, an auditor);
* ``audit:verify``: recompute the audit log's hash chain (which tells the log's size).
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.registry.auth import Caller
from services.registry.models import OrganisationGrant, utcnow
from services.registry.store import audit
from services.registry.store.organisations import get_organisation

REPORTS_ALL = "reports:all-contracts"
AUDIT_VERIFY = "audit:verify"
GRANTS: dict[str, str] = {
    REPORTS_ALL: "Revenue, usage events and reconciliation of every contract.",
    AUDIT_VERIFY: "Recompute the audit log's hash chain (reveals the log's size and head).",
}
"""The grants an operator may give, with what each allows."""


def grants_of(session: Session, org_id: str) -> list[str]:
    """The grants an organisation holds, sorted."""
    found = session.scalars(
        select(OrganisationGrant.grant).where(OrganisationGrant.org_id == org_id)
    )
    return sorted(found)


def holds(session: Session, caller: Caller, grant: str) -> bool:
    """Whether ``caller`` is an operator or acts for an organisation holding ``grant``."""
    if caller.is_admin:
        return True
    if caller.org_id is None:
        return False
    found = session.scalar(
        select(OrganisationGrant.grant).where(
            OrganisationGrant.org_id == caller.org_id, OrganisationGrant.grant == grant
        )
    )
    return found is not None


def grant(session: Session, org_id: str, name: str, *, actor: str) -> list[str]:
    """Give ``org_id`` the grant ``name`` (again: no change); its grants now."""
    get_organisation(session, org_id, for_update=True)
    if name not in grants_of(session, org_id):
        session.add(
            OrganisationGrant(org_id=org_id, grant=name, granted_by=actor, granted_at=utcnow())
        )
        session.flush()
        audit.append(
            session,
            actor=actor,
            action="organisation.granted",
            subject=f"organisation:{org_id}",
            payload={"grant": name},
        )
    return grants_of(session, org_id)


def revoke(session: Session, org_id: str, name: str, *, actor: str) -> list[str]:
    """Take the grant ``name`` from ``org_id`` (not held: no change); its grants now."""
    get_organisation(session, org_id, for_update=True)
    removed = session.execute(
        delete(OrganisationGrant).where(
            OrganisationGrant.org_id == org_id, OrganisationGrant.grant == name
        )
    )
    if removed.rowcount:  # type: ignore[attr-defined]
        audit.append(
            session,
            actor=actor,
            action="organisation.grant_revoked",
            subject=f"organisation:{org_id}",
            payload={"grant": name},
        )
    return grants_of(session, org_id)
