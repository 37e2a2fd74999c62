"""Usage ingestion: events counted once by their id, checked one by one, capped per period.

The label party of a contract reports the predictions it served as usage events (chosen ids,
:class:`services.protocol.messages.UsageEvent`). Each event of a batch is accepted, recognised as
a duplicate of a stored one, or refused with a code (:class:`Refusal`); refusals never fail the
batch. Inserts are ``INSERT ... ON CONFLICT (event_id) DO NOTHING`` in event id order, so
retried and concurrent posts store an event once and cannot deadlock on each other.

A contract's usage cap is checked against one :class:`UsageCounter` row per (contract, cap
period), locked before the batch's events are looked at (rows created if missing, then
``SELECT ... FOR UPDATE`` in key order; SQLite transactions are serialised anyway), so two
batches cannot both pass the cap. A batch costs a fixed number of statements, not one per event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from services.protocol.messages import UsageEvent as Event
from services.registry.auth import Caller
from services.registry.settings import RegistrySettings
from services.registry.store.usage_callers import CallerCheck, Unverified
from services.registry.store.usage_rows import (
    COMPARED,
    CounterKey,
    insert_events,
    lock_counters,
    stored_events,
    write_counters,
)
from services.registry.store.usage_terms import Terms, cap_period, load_terms

USAGE_WRITE = "usage:write"
PAST_WINDOW = timedelta(days=7)
"""Events older than this (by their timestamp) are refused."""
FUTURE_WINDOW = timedelta(minutes=5)
"""Events further in the future than this (clock skew) are refused."""


class Refusal(StrEnum):
    """Why an event is not counted. Values are part of the wire contract."""

    UNKNOWN_CONTRACT = "unknown_contract"
    NOT_LABEL_PARTY = "not_label_party"
    UNKNOWN_VERSION = "unknown_version"
    OUTSIDE_WINDOW = "outside_window"
    USAGE_CAP_REACHED = "usage_cap_reached"
    EVENT_CONFLICT = "event_conflict"
    UNVERIFIED_CALLER = "unverified_caller"
    CALLER_MISMATCH = "caller_mismatch"
    NOT_FEATURE_PARTY = "not_feature_party"
    UNKNOWN_JOB = "unknown_job"


@dataclass(frozen=True)
class Refused:
    """An event that will never be counted (posting it again gets the same answer)."""

    event_id: str
    code: Refusal
    message: str


@dataclass
class Outcome:
    """What became of each event of a batch, in the batch's order."""

    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)


def _same(stored: dict[str, Any], posted: dict[str, Any]) -> bool:
    return all(stored[k] == posted[k] for k in COMPARED)


def _conflict(event_id: str) -> Refused:
    return Refused(
        event_id, Refusal.EVENT_CONFLICT, f"event {event_id} is already stored with other fields"
    )


def ingest(
    session: Session,
    caller: Caller,
    events: Sequence[Event],
    *,
    now: datetime,
    settings: RegistrySettings,
) -> Outcome:
    """Count ``events`` reported by ``caller`` (scope ``usage:write``); see the module doc.

    Per event, in this order: the contract exists (``unknown_contract``); the caller acts for
    the label party of the event's contract version or of the version in force
    (``not_label_party``); an event stored under the same id is a duplicate if every field
    matches and refused otherwise (``event_conflict``); the contract version has been in force
    and the model version exists for the contract (``unknown_version``); the timestamp lies in
    ``[now - 7 days, now + 5 minutes]`` (``outside_window``); the access token of the
    prediction call proves a call by a member of the contract to this label party
    (``unverified_caller``) whose organisation is the event's ``caller_org``
    (``caller_mismatch``; :mod:`services.registry.store.usage_callers`); the contract's usage
    cap for the event's period leaves room for its count (``usage_cap_reached``). The caller
    commits.
    """
    caller.require_scope(USAGE_WRITE)
    posted: dict[str, dict[str, Any]] = {}
    tokens: dict[str, str | None] = {}
    for e in events:
        posted.setdefault(e.event_id, _fields(e))
        tokens.setdefault(e.event_id, e.caller_token)
    terms = load_terms(session, {row["contract_id"] for row in posted.values()})
    result: dict[str, Refused | bool] = {}  # True: accepted, False: duplicate
    candidates: dict[str, dict[str, Any]] = {}
    for event_id, row in posted.items():
        t = terms.get(row["contract_id"])
        if t is None:
            result[event_id] = Refused(
                event_id, Refusal.UNKNOWN_CONTRACT, f"no contract {row['contract_id']}"
            )
        elif caller.is_admin or caller.org_id not in t.label_orgs(row["contract_version"]):
            message = f"only the label party of contract {t.contract_id} reports its usage"
            result[event_id] = Refused(event_id, Refusal.NOT_LABEL_PARTY, message)
        else:
            candidates[event_id] = row
    checked = {k: _check(terms[r["contract_id"]], r, now) for k, r in candidates.items()}
    _verify_callers(session, settings, caller, candidates, tokens, terms, checked)
    keys = {k: _counter_key(terms[r["contract_id"]], r) for k, r in candidates.items()}
    periods = {key[:2]: key[2] for k, key in keys.items() if key is not None and checked[k] is None}
    base = lock_counters(session, periods)
    for stored in stored_events(session, list(candidates)):
        row = candidates.pop(stored["event_id"])
        result[row["event_id"]] = False if _same(stored, row) else _conflict(row["event_id"])
    fresh = _admit(candidates, checked, keys, terms, dict(base), result)
    inserted = insert_events(session, list(fresh.values()), caller.subject, now)
    lost = [event_id for event_id in fresh if event_id not in inserted]
    for stored in stored_events(session, lost):  # a concurrent post stored it after our look
        row = fresh.pop(stored["event_id"])
        result[row["event_id"]] = False if _same(stored, row) else _conflict(row["event_id"])
    for event_id in fresh:
        result[event_id] = True
    counted = dict.fromkeys(periods, 0)
    for event_id, row in fresh.items():
        key = keys[event_id]
        if key is not None:
            counted[key[:2]] += row["count"]
    write_counters(session, {k: base[k] + counted[k] for k in periods if counted[k]})
    return _answer(events, posted, result)


def _admit(
    candidates: dict[str, dict[str, Any]],
    checked: dict[str, tuple[Refusal, str] | None],
    keys: dict[str, tuple[str, datetime, datetime] | None],
    terms: dict[str, Terms],
    used: dict[CounterKey, int],
    result: dict[str, Refused | bool],
) -> dict[str, dict[str, Any]]:
    """The candidates to insert: those that passed their checks and fit their cap (``used``
    grows with each), in batch order; the others are refused into ``result``."""
    fresh: dict[str, dict[str, Any]] = {}
    for event_id, row in candidates.items():
        problem, key = checked[event_id], keys[event_id]
        if problem is not None:
            result[event_id] = Refused(event_id, *problem)
            continue
        if key is not None:
            counter, cap = key[:2], terms[row["contract_id"]].cap_of(row["contract_version"])
            if used[counter] + row["count"] > cap:
                result[event_id] = Refused(
                    event_id,
                    Refusal.USAGE_CAP_REACHED,
                    f"the usage cap of contract {row['contract_id']} ({cap} predictions in the "
                    f"period from {counter[1].isoformat()}) is reached: {used[counter]} used",
                )
                continue
            used[counter] += row["count"]
        fresh[event_id] = row
    return fresh


def _fields(e: Event) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "contract_id": e.contract_id,
        "contract_version": e.contract_version,
        "model_version": e.model_version,
        "caller_org_id": e.caller_org,
        "count": e.count,
        "occurred_at": e.timestamp,
    }


def _answer(
    events: Sequence[Event], posted: dict[str, dict[str, Any]], result: dict[str, Refused | bool]
) -> Outcome:
    """The outcome in batch order. An id repeated in the batch: the same fields again are a
    duplicate of the first (unless that was refused), other fields are a conflict."""
    out = Outcome()
    seen: set[str] = set()
    for e in events:
        verdict = result[e.event_id]
        if e.event_id in seen:
            if not _same(posted[e.event_id], _fields(e)):
                out.refused.append(_conflict(e.event_id))
            elif not isinstance(verdict, Refused):
                out.duplicates.append(e.event_id)
            continue
        seen.add(e.event_id)
        if isinstance(verdict, Refused):
            out.refused.append(verdict)
        else:
            (out.accepted if verdict else out.duplicates).append(e.event_id)
    return out


def _check(t: Terms, row: dict[str, Any], now: datetime) -> tuple[Refusal, str] | None:
    version = row["contract_version"]
    if version not in t.versions:
        message = f"contract {t.contract_id} has no version {version} that was in force"
        return Refusal.UNKNOWN_VERSION, message
    if row["model_version"] not in t.models:
        message = f"contract {t.contract_id} has no model version {row['model_version']}"
        return Refusal.UNKNOWN_VERSION, message
    at: datetime = row["occurred_at"]
    if not now - PAST_WINDOW <= at <= now + FUTURE_WINDOW:
        return (
            Refusal.OUTSIDE_WINDOW,
            f"timestamp {at.isoformat()} is more than 7 days in the past or more than 5 "
            "minutes in the future",
        )
    return None


def _verify_callers(
    session: Session,
    settings: RegistrySettings,
    caller: Caller,
    candidates: dict[str, dict[str, Any]],
    tokens: dict[str, str | None],
    terms: dict[str, Terms],
    checked: dict[str, tuple[Refusal, str] | None],
) -> None:
    """Refuse (into ``checked``) the candidates whose prediction call's token does not prove
    their payer; record the verified client and token id with the others."""
    pending = [k for k in candidates if checked[k] is None]
    if not pending:
        return
    present = [t for k in pending if (t := tokens.get(k)) is not None]
    check = CallerCheck(session, settings, caller.org_id, present)
    for k in pending:
        row = candidates[k]
        found = check.verify(tokens.get(k), terms=terms[row["contract_id"]], row=row)
        if isinstance(found, Unverified):
            checked[k] = (Refusal(found.code), found.message)
        else:
            row["caller_client_id"], row["caller_jti"] = found.client_id, found.jti


def _counter_key(t: Terms, row: dict[str, Any]) -> tuple[str, datetime, datetime] | None:
    """(contract, cap period start, end) of an event under a capped version; None uncapped."""
    version = t.versions.get(row["contract_version"])
    if version is None or version.cap is None:
        return None
    start, end = cap_period(version.cap.period, row["occurred_at"], version)
    return t.contract_id, start, end
