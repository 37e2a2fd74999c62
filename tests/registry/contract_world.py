"""A contract driven by actions against the store, checking the lifecycle invariants after each
step (see ``test_contracts_properties.py``). Actions are tuples: ``("propose", who)``,
``("sign", party, "right"|"wrong", "accept"|"reject", "current"|"stale")``, ``("agree",)``, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.protocol.errors import SpliceError
from services.registry.auth import Caller
from services.registry.models import AuditEntry
from services.registry.models_contracts import (
    FINAL_CONTRACT_STATES,
    RUNNING_JOB_STATUSES,
    ContractRecord,
    ContractState,
    ContractVersion,
    Decision,
    Job,
    JobStatus,
    Signature,
    VersionState,
)
from services.registry.store import contract_drafts, contract_lifecycle, jobs
from services.registry.store.contracts import ContractExpired, effective_state, parties_of
from tests.registry.contract_util import OWNER, PASTE, PCB, add_orgs, contract_of, document

T0 = datetime(2026, 3, 1, tzinfo=UTC)
_BASE = document(T0)
VARIANTS = [
    _BASE,
    {**_BASE, "title": "Solder-paste print quality (rev. b)"},
    {
        **_BASE,
        "commercial": {
            **_BASE["commercial"],
            "price_per_prediction": {"amount": "0.07", "currency": "EUR"},
        },
    },
    {**_BASE, "validity": {**_BASE["validity"], "end": "2029-01-01T00:00:00Z"}},
]
FINAL_VERSION_STATES = {VersionState.REJECTED, VersionState.SUPERSEDED, VersionState.WITHDRAWN}
EXPANDED = {
    "agree": [
        ("propose", "owner"),
        ("sign", "pcb", "right", "accept", "current"),
        ("sign", "paste", "right", "accept", "current"),
    ]
}


def _caller(name: str, org_id: str) -> Caller:
    scopes = frozenset({"contracts:write", "contracts:sign", "jobs:run"})
    return Caller(subject=f"client:{name}", org_id=org_id, scopes=scopes)


@dataclass
class World:
    """One contract under random actions, and what was observed of it so far."""

    sessions: sessionmaker[Session]
    callers: dict[str, Caller]
    contract_id: str = ""
    now: datetime = T0
    proposed: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    signatures: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    final_versions: dict[str, VersionState] = field(default_factory=dict)
    final_state: ContractState | None = None
    expired_seen: bool = False

    def act(self, session: Session, action: tuple[Any, ...]) -> None:
        kind, c, cid, now = action[0], self.callers, self.contract_id, self.now
        if kind in ("replace", "amend"):
            resolved = contract_drafts.resolve(session, contract_of(VARIANTS[action[1]]))
            fn = contract_drafts.replace_draft if kind == "replace" else contract_drafts.amend
            fn(session, c["owner"], cid, resolved, now=now)
        elif kind == "propose":
            contract_drafts.propose(session, c[action[1]], cid, now=now)
        elif kind == "sign":
            _, party, who, decision, digest_kind = action
            signer = c[party] if who == "right" else c["paste" if party == "pcb" else "outsider"]
            digest = self._digest(session, digest_kind)
            contract_lifecycle.sign(
                session,
                signer,
                cid,
                party=party,
                decision=Decision(decision),
                digest=digest,
                reason=None,
                now=now,
            )
            assert digest_kind == "current", "a stale digest was accepted"
            assert who == "right", "another organisation signed for a party"
        elif kind in ("suspend", "terminate"):
            fn = getattr(contract_lifecycle, kind)
            fn(session, c[action[1]], cid, reason="test", now=now)
        elif kind == "reinstate":
            contract_lifecycle.reinstate(session, c[action[1]], cid, now=now)
        elif kind == "wait":
            self.now = now + timedelta(days=action[1])
        elif kind == "sweep":
            contract_lifecycle.expire_due(session, now=now)
        elif kind == "job":
            jobs.create_job(session, c["pcb"], cid, key_fingerprints={}, now=now)
        elif kind == "finish":
            job = session.scalar(
                select(Job).where(Job.contract_id == cid).order_by(Job.created_at.desc())
            )
            if job is not None:
                jobs.report(
                    session,
                    c["pcb"],
                    job.id,
                    status=JobStatus.FINISHED,
                    progress=None,
                    metrics={"auc": 0.8},
                    now=now,
                )

    def _digest(self, session: Session, kind: str) -> str:
        versions = session.scalars(
            select(ContractVersion).where(ContractVersion.contract_id == self.contract_id)
        ).all()
        proposed = [v.digest for v in versions if v.state is VersionState.PROPOSED]
        if kind == "current" and proposed:
            return proposed[0]
        others = [v.digest for v in versions if v.digest not in proposed]
        return others[-1] if others else "f" * 64

    def check(self, session: Session) -> None:
        record = session.get_one(ContractRecord, self.contract_id)
        versions = session.scalars(
            select(ContractVersion).where(ContractVersion.contract_id == record.id)
        ).all()
        by_state = {s: [v for v in versions if v.state is s] for s in VersionState}
        assert len(by_state[VersionState.AGREED]) <= 1
        assert len(by_state[VersionState.PROPOSED]) <= 1 and len(by_state[VersionState.DRAFT]) <= 1
        signatures = session.scalars(
            select(Signature).where(Signature.version_id.in_([v.id for v in versions]))
        ).all()
        for s in signatures:
            row = (s.version_id, s.party, s.org_id, s.decision, s.digest, s.at)
            assert self.signatures.setdefault(s.id, row) == row, "a signature changed"
        for v in versions:
            if v.state is VersionState.DRAFT:
                assert v.proposed_at is None
            if v.proposed_at is not None:
                frozen = (v.document, v.digest, v.valid_from, v.valid_until, v.proposed_at)
                assert self.proposed.setdefault(v.id, frozen) == frozen, "a proposal changed"
            if v.state in (VersionState.AGREED, VersionState.SUPERSEDED):
                accepted = {
                    (s.party, s.org_id)
                    for s in signatures
                    if s.version_id == v.id
                    and s.decision is Decision.ACCEPT
                    and s.digest == v.digest
                }
                assert {(p.name, p.org_id) for p in parties_of(session, v.id)} <= accepted
            if v.id in self.final_versions:
                assert v.state is self.final_versions[v.id], "a final version changed"
            elif v.state in FINAL_VERSION_STATES:
                self.final_versions[v.id] = v.state
        assert all(
            s.digest == next(v.digest for v in versions if v.id == s.version_id) for s in signatures
        )
        if record.state in (ContractState.ACTIVE, ContractState.SUSPENDED):
            agreed = by_state[VersionState.AGREED]
            assert agreed and agreed[0].version == record.active_version
        state = effective_state(record, self.now)
        if self.final_state is not None:
            assert record.state is self.final_state, "a final contract changed"
        elif record.state in FINAL_CONTRACT_STATES:
            self.final_state = record.state
        if self.expired_seen:
            assert state is ContractState.EXPIRED
        self.expired_seen = state is ContractState.EXPIRED
        running = session.scalars(
            select(Job.id).where(Job.contract_id == record.id, Job.status.in_(RUNNING_JOB_STATUSES))
        ).all()
        assert len(running) <= 1
        if record.state in FINAL_CONTRACT_STATES:
            assert running == []
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.subject == f"contract:{record.id}")
        ).all()
        assert actions.count("contract.accepted") + actions.count("contract.rejected") == len(
            signatures
        )
        assert actions.count("contract.agreed") == sum(
            v.state in (VersionState.AGREED, VersionState.SUPERSEDED) for v in versions
        )
        if record.state in FINAL_CONTRACT_STATES:
            assert actions.count(f"contract.{record.state.value}") == 1


def make_world(app: FastAPI) -> World:
    """Approved organisations and their callers, on ``app``'s database."""
    with app.state.sessions() as session:
        orgs = add_orgs(session, OWNER, PCB, PASTE, "outsider-gmbh")
        session.commit()
    callers = {
        "owner": _caller("owner", orgs[OWNER]),
        "pcb": _caller("pcb", orgs[PCB]),
        "paste": _caller("paste", orgs[PASTE]),
        "outsider": _caller("outsider", orgs["outsider-gmbh"]),
        "admin": Caller.admin("operator"),
    }
    return World(sessions=app.state.sessions, callers=callers)


def play(template: World, actions: list[tuple[Any, ...]]) -> World:
    """A new contract, then ``actions`` one transaction each (a refused one rolled back, an
    expiry found kept), checking every invariant after each."""
    world = World(sessions=template.sessions, callers=template.callers)
    with world.sessions() as session:
        resolved = contract_drafts.resolve(session, contract_of(VARIANTS[0]))
        record, _ = contract_drafts.create_contract(
            session, world.callers["owner"], resolved, now=world.now
        )
        world.contract_id = record.id
        session.commit()
    steps = [step for a in actions for step in EXPANDED.get(a[0], [a])]
    for action in steps:
        with world.sessions() as session:
            try:
                world.act(session, action)
                session.commit()
            except ContractExpired:
                session.commit()
            except SpliceError:
                session.rollback()
        with world.sessions() as session:
            world.check(session)
    return world
