"""What usage ingestion needs to know about the contracts of a batch, read in a few statements.

For each contract: the versions that have been in force (agreed, or superseded by an amendment)
with their validity, label party organisation and usage cap, the version in force now, and the
numbers of its model versions. Loaded once per batch, whatever the number of events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts import UsageCap
from services.registry.models_contracts import (
    ContractParty,
    ContractRecord,
    ContractVersion,
    ModelVersion,
    PartyRole,
    VersionState,
)

IN_FORCE_STATES = (VersionState.AGREED, VersionState.SUPERSEDED)
"""Versions that have been in force: usage can only have been served under one of these."""


@dataclass(frozen=True)
class VersionTerms:
    """One version of a contract that has been in force.

    ``parties`` maps each party's organisation to its (name, role); ``owner_org`` is the
    contract owner's organisation. Members (the owner and the parties) may buy predictions.
    """

    number: int
    valid_from: datetime
    valid_until: datetime
    label_org: str | None
    cap: UsageCap | None
    parties: dict[str, tuple[str, str]] = field(default_factory=dict)
    owner_org: str | None = None

    @property
    def members(self) -> frozenset[str]:
        """Organisations that may call for predictions under this version."""
        owner = {self.owner_org} if self.owner_org is not None else set()
        return frozenset(set(self.parties) | owner)


@dataclass
class Terms:
    """A contract's usage terms (see the module doc)."""

    contract_id: str
    active_version: int | None
    versions: dict[int, VersionTerms] = field(default_factory=dict)
    models: set[int] = field(default_factory=set)

    def feature_party(self, org_id: str) -> str | None:
        """The party name ``org_id`` plays as a feature party in any version that has been in
        force, or None."""
        for version in self.versions.values():
            found = version.parties.get(org_id)
            if found is not None and found[1] == PartyRole.FEATURE.value:
                return found[0]
        return None

    def label_orgs(self, version: int) -> set[str]:
        """Organisations that may report usage under ``version``: its label party's, and that
        of the version in force."""
        orgs = set()
        for number in (version, self.active_version):
            found = self.versions.get(number) if number is not None else None
            if found is not None and found.label_org is not None:
                orgs.add(found.label_org)
        return orgs

    def cap_of(self, version: int) -> int:
        """The cap's ``max_predictions`` of a capped version."""
        cap = self.versions[version].cap
        assert cap is not None
        return cap.max_predictions


def load_terms(session: Session, contract_ids: Iterable[str]) -> dict[str, Terms]:
    """Terms of the contracts among ``contract_ids`` that exist (four statements)."""
    ids = sorted(contract_ids)
    if not ids:
        return {}
    records = session.execute(
        select(ContractRecord.id, ContractRecord.active_version, ContractRecord.owner_org_id).where(
            ContractRecord.id.in_(ids)
        )
    ).all()
    terms = {cid: Terms(cid, active) for cid, active, _ in records}
    owners = {cid: owner for cid, _, owner in records}
    if not terms:
        return {}
    versions = session.execute(
        select(
            ContractVersion.id,
            ContractVersion.contract_id,
            ContractVersion.version,
            ContractVersion.valid_from,
            ContractVersion.valid_until,
            ContractVersion.document,
        ).where(
            ContractVersion.contract_id.in_(list(terms)),
            ContractVersion.state.in_(IN_FORCE_STATES),
        )
    ).all()
    parties: dict[str, dict[str, tuple[str, str]]] = {}
    for version_id, org_id, name, role in session.execute(
        select(
            ContractParty.version_id, ContractParty.org_id, ContractParty.name, ContractParty.role
        ).where(ContractParty.version_id.in_([v.id for v in versions]))
    ):
        parties.setdefault(version_id, {})[org_id] = (name, PartyRole(role).value)
    for v in versions:
        cap = json.loads(v.document).get("usage_cap")
        by_org = parties.get(v.id, {})
        label = next((o for o, (_, role) in by_org.items() if role == PartyRole.LABEL.value), None)
        terms[v.contract_id].versions[v.version] = VersionTerms(
            number=v.version,
            valid_from=v.valid_from,
            valid_until=v.valid_until,
            label_org=label,
            cap=UsageCap.model_validate(cap) if cap is not None else None,
            parties=by_org,
            owner_org=owners.get(v.contract_id),
        )
    models = session.execute(
        select(ModelVersion.contract_id, ModelVersion.version).where(
            ModelVersion.contract_id.in_(list(terms))
        )
    )
    for cid, number in models:
        terms[cid].models.add(number)
    return terms


def cap_period(period: str, at: datetime, version: VersionTerms) -> tuple[datetime, datetime]:
    """The half-open UTC cap period ``[start, end)`` holding ``at``: its day, ISO week (from
    Monday), month or year, or (``contract``) the version's validity."""
    if period == "contract":
        return version.valid_from, version.valid_until
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        return start, _add_months(start, 1)
    if period == "year":
        start = day.replace(month=1, day=1)
        return start, _add_months(start, 12)
    raise ValueError(f"unknown usage cap period {period!r}")


def _add_months(start: datetime, months: int) -> datetime:
    index = start.year * 12 + start.month - 1 + months
    return start.replace(year=index // 12, month=index % 12 + 1)
