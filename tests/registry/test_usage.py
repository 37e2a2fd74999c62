"""Usage ingestion: events count once however often and however concurrently they are posted,
each event is checked (contract, label party, versions, time window, usage cap), and a batch
that does not parse writes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.protocol.messages import UsageEvent as Event
from services.registry.auth import Caller
from services.registry.db import make_engine
from services.registry.models import utcnow
from services.registry.models_usage import UsageCounter, UsageEvent
from services.registry.settings import RegistrySettings
from services.registry.store import usage
from tests.registry.contract_util import OWNER, PASTE, PCB, document
from tests.registry.usage_util import Json, Metered, event, metered, model_version
from tests.registry.util import bearer, row_counts
from tests.registry.world import active_contract

CAPPED = {"max_predictions": 50, "period": "month"}


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Metered:
    return await metered(app, client, admin_token)


def _ok(r: httpx.Response) -> Json:
    assert r.status_code == 200, r.text
    body: Json = r.json()
    assert set(body) == {"accepted", "duplicates", "refused"}
    return body


def _stored(app: FastAPI) -> tuple[int, int]:
    """(events, predictions) stored."""
    with app.state.sessions() as s:
        n, total = s.execute(
            select(func.count(), func.coalesce(func.sum(UsageEvent.count), 0))
        ).one()
    return int(n), int(total)


def _codes(body: Json) -> dict[str, str]:
    return {r["event_id"]: r["code"] for r in body["refused"]}


async def test_accepted_then_duplicates(world: Metered, app: FastAPI) -> None:
    events = [event(world.contract_id, count=n) for n in (1, 2, 3)]
    first = _ok(await world.post(events))
    assert first["accepted"] == [e["event_id"] for e in events]
    assert first["duplicates"] == [] and first["refused"] == []
    again = _ok(await world.post(events))
    assert again["accepted"] == [] and again["duplicates"] == first["accepted"]
    repeated = _ok(await world.post([events[0], events[0]]))
    assert repeated["duplicates"] == [events[0]["event_id"]] * 2
    assert _stored(app) == (3, 6)
    with app.state.sessions() as s:
        row = s.get(UsageEvent, events[0]["event_id"])
        assert row is not None and row.reported_by.startswith("client:")
        assert row.caller_org_id == world.orgs[OWNER] and row.count == 1
        assert row.caller_client_id == world.orgs.clients[OWNER].client_id


async def test_a_changed_duplicate_is_a_conflict(world: Metered, app: FastAPI) -> None:
    e = event(world.contract_id, count=2)
    _ok(await world.post([e]))
    changed = [{**e, "count": 3}, {**e, "model_version": 1, "caller_org": "someone-else"}]
    body = _ok(await world.post(changed))
    assert [r["code"] for r in body["refused"]] == ["event_conflict", "event_conflict"]
    fresh = event(world.contract_id)
    body = _ok(await world.post([fresh, {**fresh, "count": 9}]))
    assert body["accepted"] == [fresh["event_id"]]
    assert _codes(body) == {fresh["event_id"]: "event_conflict"}
    assert _stored(app) == (2, 3)


async def test_every_event_is_checked(world: Metered, app: FastAPI) -> None:
    cid, now = world.contract_id, utcnow()
    cases = {
        "ok": event(cid),
        "ok past": event(cid, at=now - timedelta(days=6, hours=23)),
        "ok skew": event(cid, at=now + timedelta(minutes=4)),
        "unknown_contract": event("no-such-contract"),
        "unknown_version": event(cid, contract_version=2),
        "unknown model": event(cid, model_version=7),
        "outside_window": event(cid, at=now - timedelta(days=7, minutes=1)),
        "future": event(cid, at=now + timedelta(minutes=6)),
    }
    body = _ok(await world.post(list(cases.values())))
    ids = {name: e["event_id"] for name, e in cases.items()}
    assert body["accepted"] == [ids["ok"], ids["ok past"], ids["ok skew"]]
    assert _codes(body) == {
        ids["unknown_contract"]: "unknown_contract",
        ids["unknown_version"]: "unknown_version",
        ids["unknown model"]: "unknown_version",
        ids["outside_window"]: "outside_window",
        ids["future"]: "outside_window",
    }
    assert all(r["message"] for r in body["refused"])
    assert _stored(app) == (3, 3)


@pytest.mark.parametrize("who", [PASTE, OWNER, "outsider-gmbh", "admin"])
async def test_only_the_label_party_reports(
    world: Metered, app: FastAPI, admin_token: str, who: str
) -> None:
    e = event(world.contract_id)
    auth = bearer(admin_token) if who == "admin" else world.orgs.auth(who)
    r = await world.client.post("/v1/usage", json={"events": [e]}, headers=auth)
    assert _codes(_ok(r)) == {e["event_id"]: "not_label_party"}
    assert _stored(app) == (0, 0)


async def test_scope_and_credentials(world: Metered, app: FastAPI) -> None:
    body = {"events": [event(world.contract_id)]}
    no_scope = await world.orgs.auth_with(PCB, "jobs:run")
    r = await world.client.post("/v1/usage", json=body, headers=no_scope)
    assert r.status_code == 403 and r.json()["detail"] == {"required_scope": "usage:write"}
    r = await world.client.post("/v1/usage", json=body)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert _stored(app) == (0, 0)


def _bad_bodies(cid: str) -> dict[str, tuple[Any, list[Any]]]:
    e = event(cid)
    return {
        "negative count": ({"events": [e, {**e, "count": -1}]}, ["body", "events", 1, "count"]),
        "zero count": ({"events": [{**e, "count": 0}]}, ["body", "events", 0, "count"]),
        "count as text": ({"events": [{**e, "count": "5"}]}, ["body", "events", 0, "count"]),
        "count as float": ({"events": [{**e, "count": 5.0}]}, ["body", "events", 0, "count"]),
        "too many": ({"events": [{**e, "count": 10**7}]}, ["body", "events", 0, "count"]),
        "unknown field": ({"events": [{**e, "price": "0.05"}]}, ["body", "events", 0, "price"]),
        "missing field": (
            {"events": [{k: v for k, v in e.items() if k != "model_version"}]},
            ["body", "events", 0, "model_version"],
        ),
        "naive time": (
            {"events": [{**e, "timestamp": "2026-11-02T10:00:00"}]},
            ["body", "events", 0, "timestamp"],
        ),
        "bad id": ({"events": [{**e, "event_id": "a b"}]}, ["body", "events", 0, "event_id"]),
        "long id": ({"events": [{**e, "event_id": "a" * 65}]}, ["body", "events", 0, "event_id"]),
        "no events": ({"events": []}, ["body", "events"]),
        "1001 events": ({"events": [event(cid) for _ in range(1001)]}, ["body", "events"]),
        "extra top field": ({"events": [e], "more": 1}, ["body", "more"]),
        "not a list": ({"events": e}, ["body", "events"]),
    }


async def test_bad_input_writes_nothing(world: Metered, app: FastAPI, migrated_url: str) -> None:
    before = row_counts(migrated_url)
    for name, (body, loc) in _bad_bodies(world.contract_id).items():
        r = await world.client.post("/v1/usage", json=body, headers=world.orgs.auth(PCB))
        assert r.status_code == 422, (name, r.text)
        assert r.json()["code"] == "validation_error", name
        assert loc in [d["loc"] for d in r.json()["detail"]], (name, r.json()["detail"])
    r = await world.client.post(
        "/v1/usage",
        content=b"events=1",
        headers={**world.orgs.auth(PCB), "content-type": "text/plain"},
    )
    assert r.status_code == 415
    assert row_counts(migrated_url) == before


async def test_the_cap_holds_per_period(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    w = await metered(app, client, admin_token, document(usage_cap=CAPPED))
    cid, now = w.contract_id, utcnow()
    last_month = now.replace(day=1) - timedelta(days=1)
    body = _ok(await w.post([event(cid, count=30), event(cid, count=15)]))
    assert len(body["accepted"]) == 2
    big, fits, over = event(cid, count=6), event(cid, count=5), event(cid, count=1)
    body = _ok(await w.post([big, fits, over]))
    assert body["accepted"] == [fits["event_id"]]
    assert _codes(body) == {
        big["event_id"]: "usage_cap_reached",
        over["event_id"]: "usage_cap_reached",
    }
    if now - last_month <= timedelta(days=7):  # last month is still inside the window
        assert _ok(await w.post([event(cid, at=last_month, count=50)]))["accepted"]
    # the refused event can be retried after all (it was not stored) and is refused again
    assert _codes(_ok(await w.post([over]))) == {over["event_id"]: "usage_cap_reached"}
    with app.state.sessions() as s:
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        counter = s.get(UsageCounter, (cid, start))
        assert counter is not None and counter.used == 50


async def test_a_new_cap_counts_what_came_before(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    """A counter created for a capped version starts from the events of its period already
    stored (under an uncapped version of the same contract)."""
    w = await metered(app, client, admin_token)
    cid = w.contract_id
    _ok(await w.post([event(cid, count=40)]))
    owner = w.orgs.auth(OWNER)
    r = await client.post(
        f"/v1/contracts/{cid}/amendments", json=document(usage_cap=CAPPED), headers=owner
    )
    assert r.status_code == 201, r.text
    r = await client.post(f"/v1/contracts/{cid}/propose", headers=owner)
    digest = r.json()["versions"][-1]["digest"]
    for party, org in (("pcb", PCB), ("paste", PASTE)):
        body = {"party": party, "decision": "accept", "digest": digest}
        r = await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=w.orgs.auth(org))
        assert r.status_code == 200, r.text
    assert r.json()["active_version"] == 2
    body = _ok(await w.post([event(cid, count=11, contract_version=2), event(cid, count=10)]))
    assert [r["code"] for r in body["refused"]] == ["usage_cap_reached"]
    assert len(body["accepted"]) == 1


def _race(
    url: str, caller: Caller, batches: list[list[Event]], settings: RegistrySettings
) -> list[usage.Outcome]:
    """Post each batch at once from its own thread, each with its own engine (a worker)."""
    engines = [make_engine(url) for _ in batches]
    start = threading.Barrier(len(batches))

    def post(i: int) -> usage.Outcome:
        with Session(engines[i]) as session:
            start.wait()
            outcome = usage.ingest(session, caller, batches[i], now=utcnow(), settings=settings)
            session.commit()
            return outcome

    try:
        with ThreadPoolExecutor(len(batches)) as pool:
            return list(pool.map(post, range(len(batches))))
    finally:
        for engine in engines:
            engine.dispose()


def _label(w: Metered) -> Caller:
    who = w.orgs.clients[PCB]
    return Caller.client(who.client_id, who.org_id, frozenset({"usage:write"}))


def _events(w: Metered, n: int, **kw: Any) -> list[Event]:
    return [Event.model_validate(w.sign(event(w.contract_id, **kw))) for _ in range(n)]


async def test_concurrent_posts_count_once(world: Metered, app: FastAPI, migrated_url: str) -> None:
    batch = _events(world, 200, count=2)
    outcomes = _race(
        migrated_url, _label(world), [list(batch) for _ in range(4)], app.state.settings
    )
    accepted = [e for o in outcomes for e in o.accepted]
    assert sorted(accepted) == sorted(e.event_id for e in batch)
    assert all(not o.refused for o in outcomes)
    assert sum(len(o.duplicates) for o in outcomes) == 3 * 200
    assert _stored(app) == (200, 400)


async def test_concurrent_posts_stop_exactly_at_the_cap(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> None:
    w = await metered(app, client, admin_token, document(usage_cap=CAPPED))
    batches = [_events(w, 30) for _ in range(4)]
    batches[0] += batches[1][:10]  # some events in two batches
    outcomes = _race(migrated_url, _label(w), batches, app.state.settings)
    accepted = [e for o in outcomes for e in o.accepted]
    assert len(accepted) == len(set(accepted)) == 50
    codes = {r.code for o in outcomes for r in o.refused}
    assert codes == {usage.Refusal.USAGE_CAP_REACHED}
    assert _stored(app) == (50, 50)


async def test_a_second_model_version_and_contract(
    world: Metered, app: FastAPI, client: httpx.AsyncClient
) -> None:
    """Events of several contracts and model versions in one batch; terms are per contract."""
    two = await model_version(world, world.contract_id)
    other = await active_contract(client, world.orgs, document(usage_cap=CAPPED))
    await model_version(world, other)
    events = [
        event(world.contract_id, model_version=two),
        event(other, count=50),
        event(other),
        event(world.contract_id),
    ]
    body = _ok(await world.post(events))
    assert len(body["accepted"]) == 3
    assert _codes(body) == {events[2]["event_id"]: "usage_cap_reached"}


def test_cap_periods() -> None:
    from datetime import UTC, datetime

    from services.registry.store.usage_terms import VersionTerms, cap_period

    v = VersionTerms(
        1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC), None, None
    )
    at = datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)
    day = datetime(2028, 2, 29, tzinfo=UTC)
    assert cap_period("day", at, v) == (day, datetime(2028, 3, 1, tzinfo=UTC))
    assert cap_period("week", at, v) == (
        datetime(2028, 2, 28, tzinfo=UTC),
        datetime(2028, 3, 6, tzinfo=UTC),
    )
    assert cap_period("month", at, v) == (
        datetime(2028, 2, 1, tzinfo=UTC),
        datetime(2028, 3, 1, tzinfo=UTC),
    )
    dec = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    assert cap_period("month", dec, v)[1] == datetime(2027, 1, 1, tzinfo=UTC)
    assert cap_period("year", dec, v) == (
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert cap_period("contract", dec, v) == (v.valid_from, v.valid_until)
