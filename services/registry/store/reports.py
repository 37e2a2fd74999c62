"""The revenue report: usage summed per contract version, model version and payer, split by
contract, with a totals row per currency.

Usage is summed in SQL (``GROUP BY`` contract, contract version, model version and payer, the
verified caller of each event, over the half-open period, counting the events too), so the cost
grows with the number of groups, not of events. Each group is
priced and split by its contract version's commercial terms
(:func:`services.finance.revenue_rows`), with the contributions stored with its model version
when the contract shares revenue by contribution. ``party_org_id`` is the registry id of the
organisation the contract's party (or owner) resolved to.

Who sees what (least privilege, issue 14): operators and organisations the operator granted
``reports:all-contracts`` every row; a contract's owner every row of its contracts; an
organisation of kind ``finance`` every row of the contracts it owns or is party to; a party the
rows of its own organisation.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, or_, select, tuple_
from sqlalchemy.orm import Session

from contracts import ContributionShares
from contracts.loader import validate_stored
from services.finance import (
    ContractRef,
    ReportError,
    RevenueRow,
    UsageTotal,
    revenue_rows,
    with_totals,
)
from services.protocol.errors import Conflict
from services.registry.auth import Caller
from services.registry.models import Organisation, OrgKind
from services.registry.models_contracts import (
    ContractParty,
    ContractRecord,
    ContractVersion,
    ModelVersion,
)
from services.registry.models_usage import UsageEvent
from services.registry.store import grants
from services.registry.store.grants import REPORTS_ALL

REPORTS_READ = "reports:read"

Group = tuple[str, int, int]
"""(contract id, contract version, model version)."""
PayerGroup = tuple[str, int, int, str]
"""(contract id, contract version, model version, payer organisation)."""


def sees_everything(session: Session, caller: Caller) -> bool:
    """Operators and organisations granted ``reports:all-contracts`` see every row."""
    return grants.holds(session, caller, REPORTS_ALL)


def is_finance(session: Session, caller: Caller) -> bool:
    """Whether the caller acts for an organisation of kind finance."""
    kind = session.scalar(select(Organisation.kind).where(Organisation.id == caller.org_id))
    return kind is OrgKind.FINANCE


def usage_totals(
    session: Session, start: datetime, end: datetime, contract_ids: list[str] | None
) -> dict[PayerGroup, tuple[int, int]]:
    """(predictions, events) per group with ``start <= occurred_at < end`` (contracts among
    ``contract_ids``, or all when None)."""
    keys = (
        UsageEvent.contract_id,
        UsageEvent.contract_version,
        UsageEvent.model_version,
        UsageEvent.caller_org_id,
    )
    stmt = (
        select(*keys, func.sum(UsageEvent.count), func.count())
        .where(UsageEvent.occurred_at >= start, UsageEvent.occurred_at < end)
        .group_by(*keys)
    )
    if contract_ids is not None:
        stmt = stmt.where(UsageEvent.contract_id.in_(contract_ids))
    return {(c, v, m, p): (int(n), int(e)) for c, v, m, p, n, e in session.execute(stmt)}


def visible_contracts(session: Session, org_id: str) -> tuple[list[str], set[str]]:
    """Contracts ``org_id`` owns or is a party to, and those it owns."""
    as_party = (
        select(ContractVersion.contract_id)
        .join(ContractParty, ContractParty.version_id == ContractVersion.id)
        .where(ContractParty.org_id == org_id)
    )
    rows = session.execute(
        select(ContractRecord.id, ContractRecord.owner_org_id).where(
            or_(ContractRecord.owner_org_id == org_id, ContractRecord.id.in_(as_party))
        )
    )
    found = list(rows)
    return [cid for cid, _ in found], {cid for cid, owner in found if owner == org_id}


def revenue(session: Session, caller: Caller, start: datetime, end: datetime) -> list[RevenueRow]:
    """The rows of ``[start, end)`` the caller may see (scope ``reports:read``), sorted by
    contract, contract version, model version, then payee in contract order."""
    caller.require_scope(REPORTS_READ)
    owned: set[str] = set()
    scope: list[str] | None = None
    if not sees_everything(session, caller):
        assert caller.org_id is not None
        scope, owned = visible_contracts(session, caller.org_id)
        if is_finance(session, caller):  # finance reads its organisation's contracts whole
            owned = set(scope)
    totals = usage_totals(session, start, end, scope)
    if not totals:
        return []
    refs, orgs = contract_documents(session, {(c, v) for c, v, _, _ in totals})
    contributions = _contributions(session, {g[:3] for g in totals}, refs)
    usage = [
        UsageTotal(c, v, m, n, contributions.get((c, v, m)), payer_org_id=p, events=e)
        for (c, v, m, p), (n, e) in totals.items()
    ]
    try:
        rows = revenue_rows(start, end, usage, refs.values())
    except ReportError as exc:
        raise Conflict(f"the revenue report cannot be computed: {exc}") from exc
    resolved = [
        dataclasses.replace(
            row,
            party_org_id=orgs[(row.contract_id, row.contract_version or 0)].get(
                row.party_name, row.party_org_id
            ),
        )
        for row in rows
    ]
    if scope is not None:
        resolved = [
            r for r in resolved if r.contract_id in owned or r.party_org_id == caller.org_id
        ]
    return with_totals(resolved)


def contract_documents(
    session: Session, versions: set[tuple[str, int]]
) -> tuple[dict[tuple[str, int], ContractRef], dict[tuple[str, int], dict[str, str]]]:
    """The documents of contract ``versions``, and per version its payees' organisation ids
    (parties, and the owner by its name in the contract)."""
    rows = session.execute(
        select(
            ContractVersion.id,
            ContractVersion.contract_id,
            ContractVersion.version,
            ContractVersion.document,
            ContractRecord.owner_org_id,
        )
        .join(ContractRecord, ContractRecord.id == ContractVersion.contract_id)
        .where(tuple_(ContractVersion.contract_id, ContractVersion.version).in_(list(versions)))
    ).all()
    parties = session.execute(
        select(ContractParty.version_id, ContractParty.name, ContractParty.org_id).where(
            ContractParty.version_id.in_([r.id for r in rows])
        )
    )
    by_version: dict[str, dict[str, str]] = {}
    for version_id, name, org_id in parties:
        by_version.setdefault(version_id, {})[name] = org_id
    refs: dict[tuple[str, int], ContractRef] = {}
    orgs: dict[tuple[str, int], dict[str, str]] = {}
    for r in rows:
        contract = validate_stored(json.loads(r.document))
        key = (r.contract_id, r.version)
        refs[key] = ContractRef(r.contract_id, r.version, contract)
        orgs[key] = {contract.owner.name: r.owner_org_id, **by_version.get(r.id, {})}
    return refs, orgs


def _share(ref: ContractRef) -> object:
    return ref.contract.commercial.revenue_share


def _contributions(
    session: Session, totals: Iterable[Group], refs: dict[tuple[str, int], ContractRef]
) -> dict[Group, dict[str, float]]:
    """Per group under a contribution-sharing contract, the measured contributions stored with
    its model version (metrics ``<measure>.<party>``, e.g. ``shapley.pcb``)."""
    wanted = [g for g in totals if isinstance(_share(refs[g[:2]]), ContributionShares)]
    if not wanted:
        return {}
    metrics = {
        (c, m): values
        for c, m, values in session.execute(
            select(ModelVersion.contract_id, ModelVersion.version, ModelVersion.metrics).where(
                tuple_(ModelVersion.contract_id, ModelVersion.version).in_(
                    sorted({(c, m) for c, _, m in wanted})
                )
            )
        )
    }
    out: dict[Group, dict[str, float]] = {}
    for c, v, m in wanted:
        contract = refs[(c, v)].contract
        share = contract.commercial.revenue_share
        assert isinstance(share, ContributionShares)
        found = metrics.get((c, m), {})
        by_party = {
            p.name: float(found[f"{share.measure}.{p.name}"])
            for p in contract.parties
            if f"{share.measure}.{p.name}" in found
        }
        if len(by_party) == len(contract.parties):  # all or nothing: a gap is an error
            out[(c, v, m)] = by_party
    return out
