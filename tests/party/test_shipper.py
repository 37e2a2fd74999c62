"""The usage shipper against a real registry (in-process): every event arrives once.

The label party's link to the registry is the real one (its client credentials, its tokens);
faults are injected around its sender: the registry unreachable, a lost answer, 5xx and 429.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from services.party.metering import UsageOutbox
from services.party.metering.shipper import Send, UsageShipper, registry_sender
from services.party.registry_link import RegistryLink
from services.protocol.messages import UsageEvent
from tests.party.serving_world import counted, registry, trained_world
from tests.registry.contract_util import OWNER, PCB, Orgs, model_version_body, onboard_example_orgs
from tests.registry.oauth_util import token_for
from tests.registry.world import PCB_URL, active_contract, new_job, party_settings


@dataclass
class Setup:
    app: FastAPI
    orgs: Orgs
    contract_id: str
    outbox: UsageOutbox
    link: RegistryLink
    token: str
    """The OEM's access token of its prediction calls (every event forwards it)."""

    def event(self, count: int = 1, **over: object) -> UsageEvent:
        fields: dict[str, object] = {
            "event_id": str(uuid.uuid4()),
            "contract_id": self.contract_id,
            "contract_version": 1,
            "model_version": 1,
            "caller_org": self.orgs[OWNER],
            "count": count,
            "timestamp": datetime.now(UTC),
            "caller_token": self.token,
        }
        return UsageEvent.model_validate(fields | over)

    def counted(self) -> tuple[int, int]:
        return counted(self.app)

    def shipper(self, send: Send | None = None, **kw: float) -> UsageShipper:
        options: dict[str, float] = {"backoff_base": 0.01, "backoff_cap": 0.05, **kw}
        return UsageShipper(self.outbox, send or registry_sender(self.link), **options)  # type: ignore[arg-type]


@pytest.fixture
async def metered(tmp_path: Path) -> AsyncIterator[Setup]:
    async with registry(tmp_path) as (app, client, admin):
        orgs = await onboard_example_orgs(app, client, admin)
        cid = await active_contract(client, orgs)
        job = await new_job(client, orgs, cid)
        auth = orgs.auth(PCB)
        r = await client.post(f"/v1/jobs/{job}/progress", json={"status": "finished"}, headers=auth)
        assert r.status_code == 200, r.text
        body = await model_version_body(client, auth, job)
        r = await client.post(f"/v1/jobs/{job}/model-versions", json=body, headers=auth)
        assert r.status_code == 201, r.text
        settings = party_settings("pcb", tmp_path / "t.csv", None, orgs.clients[PCB], tmp_path)
        link = RegistryLink(settings, httpx.ASGITransport(app=app))
        await link.claim_audience()  # the label party serves PCB_URL: tokens for it bill
        token = await token_for(
            app, orgs.clients[OWNER], scope="predict:call", resource=PCB_URL, contract_id=cid
        )
        box = UsageOutbox(tmp_path / "outbox.sqlite3")
        yield Setup(app, orgs, cid, box, link, token)
        box.close()
        await link.aclose()


def counting(send: Send, sizes: list[int]) -> Send:
    async def wrapped(events: list[UsageEvent]) -> httpx.Response:
        sizes.append(len(events))
        return await send(events)

    return wrapped


def failing(send: Send, faults: list[Callable[[], Awaitable[httpx.Response]]]) -> Send:
    """``send`` after the ``faults`` (each raises or answers instead of the registry)."""

    async def wrapped(events: list[UsageEvent]) -> httpx.Response:
        if faults:
            return await faults.pop(0)()
        return await send(events)

    return wrapped


async def test_every_event_arrives_once_in_batches(metered: Setup) -> None:
    events = [metered.event(count=1 + i % 4) for i in range(1203)]
    metered.outbox.append(events)
    sizes: list[int] = []
    shipper = metered.shipper(counting(registry_sender(metered.link), sizes))
    await shipper.drain()
    assert sizes == [500, 500, 203]
    assert metered.outbox.depth() == 0
    assert metered.counted() == (1203, sum(e.count for e in events))
    assert shipper.stats.shipped == 1203 and shipper.stats.failures == 0


async def test_a_lost_answer_is_retried_and_counted_once(metered: Setup) -> None:
    events = [metered.event(count=2) for _ in range(10)]
    metered.outbox.append(events)
    real = registry_sender(metered.link)

    async def answer_lost(batch: list[UsageEvent]) -> httpx.Response:
        await real(batch)  # the registry stores the batch, the answer never arrives
        raise httpx.ReadError("connection reset")

    async def lost() -> httpx.Response:
        return await answer_lost(metered.outbox.pending())

    shipper = metered.shipper(failing(real, [lost]))
    shipper.start()
    for _ in range(200):
        if metered.outbox.depth() == 0:
            break
        await asyncio.sleep(0.02)
    await shipper.stop()
    assert metered.outbox.depth() == 0
    assert shipper.stats.failures == 1 and shipper.stats.duplicates == 10
    assert metered.counted() == (10, 20)


async def test_it_backs_off_while_the_registry_is_down_and_keeps_everything(metered: Setup) -> None:
    metered.outbox.append([metered.event() for _ in range(5)])

    async def unreachable() -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async def status(code: int) -> httpx.Response:
        return httpx.Response(code, json={"code": "x", "message": "busy", "detail": None})

    faults: list[Callable[[], Awaitable[httpx.Response]]] = [
        unreachable,
        unreachable,
        lambda: status(503),
        lambda: status(429),
        lambda: status(500),
        lambda: status(403),  # e.g. a client without usage:write: keep the events
    ]
    shipper = metered.shipper(failing(registry_sender(metered.link), faults))
    shipper.start()
    for _ in range(300):
        if metered.outbox.depth() == 0:
            break
        await asyncio.sleep(0.02)
    await shipper.stop()
    assert shipper.stats.failures == 6 and shipper.stats.shipped == 5
    assert metered.counted() == (5, 5)
    # exponential with jitter, capped
    slow = metered.shipper(backoff_base=1.0, backoff_cap=30.0)
    delays = [slow.delay() for _ in range(10)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0
    assert all(15.0 <= d <= 30.0 for d in delays[5:])


async def test_refused_events_are_set_aside_not_retried(metered: Setup) -> None:
    good = [metered.event() for _ in range(3)]
    stale = metered.event(timestamp=datetime.now(UTC) - timedelta(days=8))
    unknown = metered.event(model_version=99)
    poison = metered.event()  # a batch holding it is refused as a whole (below)
    metered.outbox.append([good[0], stale, good[1], poison, unknown, good[2]])
    real = registry_sender(metered.link)

    async def strict(events: list[UsageEvent]) -> httpx.Response:
        """A registry that refuses any batch holding ``poison`` (422), as it would one that
        does not parse."""
        if any(e.event_id == poison.event_id for e in events):
            body = {"code": "validation_error", "message": "bad event", "detail": None}
            return httpx.Response(422, json=body)
        return await real(events)

    sizes: list[int] = []
    shipper = metered.shipper(counting(strict, sizes))
    await shipper.drain()
    assert metered.outbox.depth() == 0 and metered.outbox.refused_count() == 3
    refused = {e.event_id: code for e, code, _ in metered.outbox.refused()}
    assert refused == {
        stale.event_id: "outside_window",
        unknown.event_id: "unknown_version",
        poison.event_id: "validation_error",
    }
    assert metered.counted() == (3, 3)
    assert shipper.stats.refused == 3
    # the batch refused as a whole was split until the offending event was alone
    assert sizes == [6, 3, 3, 1, 2]
    await shipper.drain()  # nothing is retried
    assert metered.counted() == (3, 3)


async def test_it_wakes_on_new_events_and_flushes_on_stop(metered: Setup) -> None:
    shipper = metered.shipper(idle_seconds=60)
    shipper.start()
    await asyncio.sleep(0.05)  # idle: nothing to ship
    metered.outbox.append([metered.event(count=3)])
    shipper.notify()
    for _ in range(100):
        if metered.outbox.depth() == 0:
            break
        await asyncio.sleep(0.01)
    assert metered.outbox.depth() == 0, "not shipped within a second of the notice"
    # appended without a notice: stop() flushes it
    metered.outbox.append([metered.event(count=4)])
    await shipper.stop()
    assert metered.outbox.depth() == 0 and not shipper.running
    assert metered.counted() == (2, 7)


async def test_served_predictions_reach_the_registry_through_the_app(tmp_path: Path) -> None:
    """The label party's app ships its outbox while it runs (lifespan), health shows it."""
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, "plain", epochs=1)
        try:
            await w.deploy()
            rows = w.rows(w.test_samples(7))
            buyer = await w.buyer()
            served = 0
            async with w.parties.pcb_app.router.lifespan_context(w.parties.pcb_app):
                for n in (1, 7, 3):
                    r = await w.parties.pcb.post(
                        f"/v1/contracts/{w.contract_id}/predict",
                        json={"rows": rows[:n]},
                        headers=buyer,
                    )
                    assert r.status_code == 200, r.text
                    served += n
                for _ in range(200):
                    health = (await w.parties.pcb.get("/v1/health")).json()["outbox"]
                    if health["pending"] == 0:
                        break
                    await asyncio.sleep(0.02)
                assert health["pending"] == 0 and health["shipper"]["shipped"] == 3
            assert w.usage() == (3, served)
        finally:
            await w.parties.aclose()
