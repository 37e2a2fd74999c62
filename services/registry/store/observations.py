"""The feature parties' own records of the prediction calls they served.

A feature party reports each serving ``embed`` it answered (:class:`ServingObservation`: the
label party's usage event id it named, the rows, the party's clock). Per observation, in this
order: the contract exists (``unknown_contract``); the caller's organisation is a feature party
of a version of it that has been in force (``not_feature_party``); an observation stored under
the same id is a duplicate when every field matches and ``event_conflict`` otherwise; the job is
one of the contract's (``unknown_job``); the timestamp lies within the ingestion window
(``outside_window``). Inserted once by id (``ON CONFLICT DO NOTHING``), like usage events.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.protocol.messages import ServingObservation
from services.registry.auth import Caller
from services.registry.models_contracts import Job
from services.registry.models_usage import UsageObservation
from services.registry.store.usage import (
    FUTURE_WINDOW,
    PAST_WINDOW,
    USAGE_WRITE,
    Outcome,
    Refusal,
    Refused,
)
from services.registry.store.usage_terms import load_terms

COMPARED = ("event_id", "contract_id", "job_id", "rows", "observed_at")


def _row(o: ServingObservation) -> dict[str, Any]:
    return {
        "observation_id": o.observation_id,
        "event_id": o.event_id,
        "contract_id": o.contract_id,
        "job_id": o.job_id,
        "rows": o.rows,
        "observed_at": o.timestamp,
    }


def _stored(session: Session, ids: list[str]) -> dict[str, dict[str, Any]]:
    if not ids:
        return {}
    columns = [getattr(UsageObservation, n) for n in ("observation_id", *COMPARED)]
    rows = session.execute(select(*columns).where(UsageObservation.observation_id.in_(ids)))
    return {r.observation_id: dict(r._mapping) for r in rows}


def _same(stored: dict[str, Any], posted: dict[str, Any]) -> bool:
    return all(stored[k] == posted[k] for k in COMPARED)


def ingest(
    session: Session, caller: Caller, observations: Sequence[ServingObservation], *, now: datetime
) -> Outcome:
    """Store ``observations`` reported by ``caller`` (scope ``usage:write``); see the module
    doc. The caller commits."""
    caller.require_scope(USAGE_WRITE)
    posted: dict[str, dict[str, Any]] = {}
    for o in observations:
        posted.setdefault(o.observation_id, _row(o))
    terms = load_terms(session, {r["contract_id"] for r in posted.values()})
    jobs = dict(
        session.execute(
            select(Job.id, Job.contract_id).where(
                Job.id.in_(sorted({r["job_id"] for r in posted.values()}))
            )
        ).all()
    )
    verdicts: dict[str, Refused | bool] = {}
    fresh: dict[str, dict[str, Any]] = {}
    stored = _stored(session, list(posted))
    for oid, row in posted.items():
        t = terms.get(row["contract_id"])
        party = None if t is None or caller.org_id is None else t.feature_party(caller.org_id)
        if t is None:
            verdicts[oid] = Refused(
                oid, Refusal.UNKNOWN_CONTRACT, f"no contract {row['contract_id']}"
            )
        elif party is None or caller.is_admin:
            verdicts[oid] = Refused(
                oid,
                Refusal.NOT_FEATURE_PARTY,
                f"only a feature party of contract {t.contract_id} reports serving calls",
            )
        elif oid in stored:
            verdicts[oid] = False if _same(stored[oid], row) else _conflict(oid)
        elif jobs.get(row["job_id"]) != row["contract_id"]:
            verdicts[oid] = Refused(
                oid, Refusal.UNKNOWN_JOB, f"job {row['job_id']} is not a job of the contract"
            )
        elif not now - PAST_WINDOW <= row["observed_at"] <= now + FUTURE_WINDOW:
            verdicts[oid] = Refused(
                oid,
                Refusal.OUTSIDE_WINDOW,
                "timestamp more than 7 days in the past or more than 5 minutes in the future",
            )
        else:
            fresh[oid] = {**row, "party": party, "party_org_id": caller.org_id, "received_at": now}
    inserted = _insert(session, list(fresh.values()))
    for oid in fresh:
        verdicts[oid] = oid in inserted or _late(session, oid, fresh[oid])
    out = Outcome()
    seen: set[str] = set()
    for o in observations:
        verdict = verdicts[o.observation_id]
        if o.observation_id in seen or verdict is False:
            if isinstance(verdict, Refused):
                out.refused.append(verdict)
            elif not _same(posted[o.observation_id], _row(o)):
                out.refused.append(_conflict(o.observation_id))
            else:
                out.duplicates.append(o.observation_id)
        elif isinstance(verdict, Refused):
            out.refused.append(verdict)
        else:
            out.accepted.append(o.observation_id)
        seen.add(o.observation_id)
    return out


def _conflict(oid: str) -> Refused:
    return Refused(oid, Refusal.EVENT_CONFLICT, f"observation {oid} is stored with other fields")


def _late(session: Session, oid: str, row: dict[str, Any]) -> Refused | bool:
    """A concurrent post stored ``oid`` after our look: a duplicate (False), or a conflict."""
    stored = _stored(session, [oid]).get(oid)
    return False if stored is not None and _same(stored, row) else _conflict(oid)


def _insert(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: str(r["observation_id"]))
    postgres = session.get_bind().dialect.name == "postgresql"
    insert = postgresql.insert if postgres else sqlite.insert
    stmt = (
        insert(UsageObservation)
        .on_conflict_do_nothing(index_elements=["observation_id"])
        .returning(UsageObservation.observation_id)
    )
    return set(session.scalars(stmt, ordered))
