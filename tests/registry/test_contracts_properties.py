"""Property tests of the contract lifecycle: random action sequences against the store.

Whatever the sequence (edits, proposals, right and wrong signers, stale digests, suspensions,
terminations, amendments, jobs, time passing, sweeps):
- no version is agreed, and no contract active, without every party's acceptance of that
  version's exact digest;
- a proposed version never changes (document and digest byte-identical), nor does a signature;
- terminated and expired contracts, and rejected, superseded and withdrawn versions, are final;
- every signature and state change is audited, and the audit chain verifies; editing any audit
  row makes verification fail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from services.registry.models import AuditEntry
from services.registry.store import audit
from tests.registry.contract_world import VARIANTS, make_world, play

WHO = st.sampled_from(["owner", "owner", "admin", "pcb"])
SIGN = st.tuples(
    st.just("sign"),
    st.sampled_from(["pcb", "paste"]),
    st.sampled_from(["right"] * 5 + ["wrong"]),
    st.sampled_from(["accept"] * 6 + ["reject"]),
    st.sampled_from(["current"] * 5 + ["stale"]),
)
PROPOSE = st.tuples(st.just("propose"), WHO)
AGREE = st.just(("agree",))  # propose, then both parties accept: three separate steps
# Weighted by repetition: signing and proposing often enough to reach every state.
ACTIONS = st.one_of(
    SIGN,
    SIGN,
    SIGN,
    PROPOSE,
    PROPOSE,
    AGREE,
    AGREE,
    AGREE,
    st.tuples(st.sampled_from(["replace", "amend", "amend"]), st.integers(0, len(VARIANTS) - 1)),
    st.tuples(st.sampled_from(["suspend", "suspend", "reinstate", "reinstate", "terminate"]), WHO),
    st.tuples(st.just("wait"), st.integers(1, 200)),
    st.tuples(st.sampled_from(["sweep", "job", "job", "finish"])),
)


def test_lifecycle_invariants(app: FastAPI) -> None:
    template = make_world(app)

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(actions=st.lists(ACTIONS, min_size=2, max_size=12))
    def run(actions: list[tuple[Any, ...]]) -> None:
        play(template, actions)

    run()
    with template.sessions() as session:
        assert audit.verify(session).ok


def test_editing_any_audit_row_fails_verification(app: FastAPI) -> None:
    template = make_world(app)
    play(
        template,
        [
            ("agree",),
            ("amend", 2),
            ("propose", "owner"),
            ("sign", "pcb", "right", "reject", "current"),
            ("job",),
            ("suspend", "admin"),
            ("wait", 800),
        ],
    )
    with template.sessions() as session:
        total = audit.verify(session).entries
    columns = ["actor", "action", "subject", "payload", "at", "prev_hash", "hash"]

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(seq=st.integers(1, total), column=st.sampled_from(columns))
    def run(seq: int, column: str) -> None:
        with template.sessions() as session:
            entry = session.get_one(AuditEntry, seq)
            value: Any = {
                "actor": entry.actor + "x",
                "action": entry.action + "x",
                "subject": entry.subject + "x",
                "payload": {**entry.payload, "edited": True},
                "at": entry.at + timedelta(microseconds=1),
                "prev_hash": "0" * 63 + "1",
                "hash": "f" * 64,
            }[column]
            session.execute(update(AuditEntry).where(AuditEntry.seq == seq).values({column: value}))
            report = audit.verify(session)
            assert not report.ok and report.first_bad_seq in (seq, seq + 1)
            session.rollback()

    run()
    with template.sessions() as session:
        assert audit.verify(session).ok
