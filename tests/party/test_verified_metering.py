"""Metering that the registry can verify, through the real party services (in-process).

A buyer's prediction at the label party becomes a usage event carrying the buyer's access token;
the feature party records each serving embed under that event's id and ships its records on its
own; at the registry both sides reconcile. A label party that invents an event (here: re-using
a genuine token, the strongest invention the registry cannot refuse outright) shows up as an
event no feature party confirms.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.party.metering.shipper import UsageShipper
from services.protocol.messages import UsageEvent
from services.registry.models import utcnow
from tests.party.serving_world import World, registry, trained_world
from tests.registry.contract_util import OWNER, PASTE, PCB


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with registry(tmp_path) as (app, client, admin):
        w = await trained_world(app, client, admin, tmp_path, "plain", epochs=1)
        try:
            yield w
        finally:
            await w.parties.aclose()


def _shipper(w: World, party: str, name: str) -> UsageShipper:
    app = w.parties.pcb_app if party == "pcb" else w.parties.paste_app
    shipper: UsageShipper = getattr(app.state, name)
    return shipper


async def test_both_sides_meter_and_the_registry_reconciles_them(world: World) -> None:
    w = world
    await w.deploy()
    rows = w.rows(w.test_samples(4))
    buyer = await w.buyer()
    answers = []
    for n in (1, 2, 4):
        r = await w.parties.pcb.post(
            f"/v1/contracts/{w.contract_id}/predict", json={"rows": rows[:n]}, headers=buyer
        )
        assert r.status_code == 200, r.text
        answers.append(r.json()["event_id"])
    label_box = w.parties.pcb_app.state.outbox
    events = label_box.pending()
    assert [e.event_id for e in events] == answers
    assert {e.caller_token for e in events} == {buyer["Authorization"].split()[1]}
    observed = w.parties.paste_app.state.observations.pending()
    assert {o.event_id for o in observed} == set(answers)  # the feature party saw every call
    assert {o.job_id for o in observed} == {w.job_id}

    # A label party inventing usage: the same genuine token, an event no call produced.
    invented = UsageEvent.model_validate(
        {**events[0].model_dump(), "event_id": str(uuid.uuid4()), "count": 9}
    )
    label_box.append([invented])
    await _shipper(w, "pcb", "shipper").drain()
    await _shipper(w, "paste", "observation_shipper").drain()
    assert label_box.depth() == 0 and label_box.refused_count() == 0
    assert w.parties.paste_app.state.observations.depth() == 0

    period = utcnow().strftime("%Y-%m")
    r = await w.registry.get(
        "/v1/usage/reconciliation", params={"period": period}, headers=w.orgs.auth(OWNER)
    )
    (found,) = r.json()
    (paste,) = found["parties"]
    assert (found["events"], found["predictions"]) == (4, 16)
    assert (paste["party"], paste["matched"], paste["unconfirmed"]) == ("paste", 3, 1)
    assert (paste["unreported"], paste["unattributed"]) == (0, 0)
    assert found["consistent"] is False and "1 of 4" in found["differences"][0]
    # the OEM is billed for what its token proved; the listing names it as payer
    r = await w.registry.get(
        "/v1/usage/events", params={"period": period}, headers=w.orgs.auth(OWNER)
    )
    page = r.json()
    assert {e["payer_org_id"] for e in page["events"]} == {w.orgs[OWNER]}
    assert page["totals"][0]["predictions"] == 16
    # the paste supplier and the PCB maker see the same reconciliation (parties of it)
    for org in (PASTE, PCB):
        r = await w.registry.get(
            "/v1/usage/reconciliation", params={"period": period}, headers=w.orgs.auth(org)
        )
        assert r.json()[0]["parties"] == found["parties"]
