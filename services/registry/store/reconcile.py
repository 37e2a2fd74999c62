"""Reconciliation: the label party's usage events against the feature parties' own records.

For each contract and period, the label party's events (whose payers the registry verified)
are matched by event id with each feature party's serving observations
(:mod:`services.registry.store.observations`). Per feature party:

* ``matched``: events of the period this party observed serving;
* ``unconfirmed``: events of the period this party has no record of: metered without the
  feature party ever being asked (invented, or not yet reported by the party);
* ``unreported``: event ids this party observed in the period that the label party never
  reported: served but not metered (under-reporting);
* ``unattributed``: serving calls in the period that named no usage event at all.

A contract is ``consistent`` when every feature party has neither unconfirmed, unreported nor
unattributed calls. Counts are SQL aggregates (``GROUP BY``), not rows in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, distinct, func, select
from sqlalchemy.orm import Session

from services.registry.auth import Caller
from services.registry.models_usage import UsageEvent, UsageObservation
from services.registry.store.reports import REPORTS_READ, sees_everything, visible_contracts
from services.registry.store.usage_terms import load_terms


@dataclass
class PartySide:
    """One feature party's records of a contract's serving calls in the period."""

    party: str
    org_id: str
    calls: int = 0
    rows: int = 0
    matched: int = 0
    unconfirmed: int = 0
    unreported: int = 0
    unattributed: int = 0


@dataclass
class Reconciliation:
    """A contract's label events and feature-party records in one period."""

    contract_id: str
    events: int = 0
    predictions: int = 0
    parties: list[PartySide] = field(default_factory=list)

    @property
    def consistent(self) -> bool:
        """Whether every feature party confirms every event and nothing else."""
        return all(not (p.unconfirmed or p.unreported or p.unattributed) for p in self.parties)

    @property
    def differences(self) -> list[str]:
        """Each difference in words."""
        out = []
        for p in self.parties:
            if p.unconfirmed:
                out.append(
                    f"{p.unconfirmed} of {self.events} usage events have no serving record at "
                    f"feature party {p.party!r}"
                )
            if p.unreported:
                out.append(
                    f"feature party {p.party!r} served {p.unreported} calls the label party "
                    "reported no usage event for"
                )
            if p.unattributed:
                out.append(
                    f"feature party {p.party!r} served {p.unattributed} calls that named no "
                    "usage event"
                )
        return out


def reconcile(
    session: Session,
    caller: Caller,
    start: datetime,
    end: datetime,
    contract_id: str | None = None,
) -> list[Reconciliation]:
    """The reconciliation of ``[start, end)`` of every contract the caller may see (scope
    ``reports:read``: operators and ``reports:all-contracts`` every contract, others those
    they own or are party to) that has events or records in it, by contract id."""
    caller.require_scope(REPORTS_READ)
    scope: list[str] | None = None
    if not sees_everything(session, caller):
        assert caller.org_id is not None
        scope = visible_contracts(session, caller.org_id)[0]
    if contract_id is not None:
        scope = [contract_id] if scope is None or contract_id in scope else []
    in_period = and_(UsageEvent.occurred_at >= start, UsageEvent.occurred_at < end)
    observed = and_(UsageObservation.observed_at >= start, UsageObservation.observed_at < end)
    events = select(
        UsageEvent.contract_id, func.count(), func.coalesce(func.sum(UsageEvent.count), 0)
    ).where(in_period)
    calls = select(
        UsageObservation.contract_id,
        UsageObservation.party,
        UsageObservation.party_org_id,
        func.count(),
        func.coalesce(func.sum(UsageObservation.rows), 0),
        func.count().filter(UsageObservation.event_id == ""),
    ).where(observed)
    matched = (
        select(
            UsageEvent.contract_id,
            UsageObservation.party,
            func.count(distinct(UsageEvent.event_id)),
        )
        .join(
            UsageObservation,
            and_(
                UsageObservation.event_id == UsageEvent.event_id,
                UsageObservation.contract_id == UsageEvent.contract_id,
            ),
        )
        .where(in_period)
    )
    unreported = (
        select(
            UsageObservation.contract_id,
            UsageObservation.party,
            func.count(distinct(UsageObservation.event_id)),
        )
        .outerjoin(UsageEvent, UsageEvent.event_id == UsageObservation.event_id)
        .where(observed, UsageObservation.event_id != "", UsageEvent.event_id.is_(None))
    )
    if scope is not None:
        events = events.where(UsageEvent.contract_id.in_(scope))
        calls = calls.where(UsageObservation.contract_id.in_(scope))
        matched = matched.where(UsageEvent.contract_id.in_(scope))
        unreported = unreported.where(UsageObservation.contract_id.in_(scope))
    found: dict[str, Reconciliation] = {}
    for cid, n, total in session.execute(events.group_by(UsageEvent.contract_id)):
        found[cid] = Reconciliation(cid, int(n), int(total))
    sides: dict[tuple[str, str], PartySide] = {}
    for cid, party, org, n, rows, unattributed in session.execute(
        calls.group_by(
            UsageObservation.contract_id, UsageObservation.party, UsageObservation.party_org_id
        )
    ):
        found.setdefault(cid, Reconciliation(cid))
        sides[(cid, party)] = PartySide(party, org, int(n), int(rows), 0, 0, 0, int(unattributed))
    _feature_parties(session, found, sides)
    for cid, party, n in session.execute(
        matched.group_by(UsageEvent.contract_id, UsageObservation.party)
    ):
        sides[(cid, party)].matched = int(n)
    for cid, party, n in session.execute(
        unreported.group_by(UsageObservation.contract_id, UsageObservation.party)
    ):
        sides[(cid, party)].unreported = int(n)
    for (cid, _), side in sorted(sides.items()):
        side.unconfirmed = found[cid].events - side.matched
        found[cid].parties.append(side)
    return [found[cid] for cid in sorted(found)]


def _feature_parties(
    session: Session, found: dict[str, Reconciliation], sides: dict[tuple[str, str], PartySide]
) -> None:
    """A side (empty) for every feature party of the contracts found that reported nothing."""
    for cid, terms in load_terms(session, found).items():
        for version in terms.versions.values():
            for org, (name, role) in version.parties.items():
                if role == "feature" and (cid, name) not in sides:
                    sides[(cid, name)] = PartySide(name, org)
