"""Verifiable metering (issue 14, finding 2), on SQLite and PostgreSQL.

Found in a penetration test: the label party posted usage events with ``caller_org:
"not-an-org-at-all", count: 1000000`` and one naming an outsider; both were accepted and the
OEM's revenue report went from 20 predictions / 1.00 EUR to 1,000,027 / 50,001.35 EUR. The
report had no caller or event column, and a buyer could not list the events it is billed for.

Now every event carries the access token of its prediction call and bills the organisation that
token names, once the registry has checked it; the feature parties report their own records of
the serving calls and the registry reconciles the two; the buyer lists its events, and the
listing, its CSV and XLSX exports and the revenue report agree to the cent.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.registry.models import utcnow
from tests.registry.contract_util import OWNER, PASTE, PCB
from tests.registry.oauth_util import REVOKE_URL, oauth_client, token_for
from tests.registry.usage_util import Json, Metered, event, metered
from tests.registry.world import PASTE_URL, PCB_URL

OUTSIDER = "outsider-gmbh"


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Metered:
    return await metered(app, client, admin_token)


async def _call_token(w: Metered, org: str, **changes: Any) -> str:
    """A real access token, from the token endpoint, as a buyer gets one to call the label
    party: scope predict:call, audience the PCB maker's service, the contract's id."""
    params = {
        "scope": "predict:call",
        "resource": PCB_URL,
        "contract_id": w.contract_id,
        **changes,
    }
    return await token_for(w.app, w.orgs.clients[org], **params)


def _codes(body: Json) -> dict[str, str]:
    return {r["event_id"]: r["code"] for r in body["refused"]}


async def _revenue(w: Metered, auth: dict[str, str], fmt: str = "json") -> httpx.Response:
    period = utcnow().strftime("%Y-%m")
    r = await w.client.get(
        "/v1/reports/revenue", params={"period": period, "format": fmt}, headers=auth
    )
    assert r.status_code == 200, r.text
    return r


async def test_invented_usage_is_refused_and_the_report_bills_real_calls(world: Metered) -> None:
    w, cid = world, world.contract_id
    owner = w.orgs[OWNER]
    honest = [
        {**event(cid, caller_org=owner, count=5), "caller_token": await _call_token(w, OWNER)}
        for _ in range(4)
    ]
    body = (await w.post(honest, signed=False)).json()
    assert len(body["accepted"]) == 4, body
    before = (await _revenue(w, w.orgs.auth(OWNER))).json()
    assert before[-1]["predictions"] == 20 and before[-1]["gross_amount"] == "1.00"

    # The penetration test's batch: a million predictions in one event cannot be one request.
    million = event(cid, caller_org="not-an-org-at-all", count=1_000_000)
    r = await w.post([million], signed=False)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "count"

    token = await _call_token(w, OWNER)
    revoked = await _call_token(w, OWNER)
    async with oauth_client(w.app, w.orgs.clients[OWNER]) as session:
        assert (await session.revoke_token(REVOKE_URL, token=revoked)).status_code == 200
    cases = {
        "invented caller": event(cid, caller_org="not-an-org-at-all", count=1000),
        "an outsider, no token": event(cid, caller_org=w.orgs[OUTSIDER], count=1000),
        "an outsider's own token": {
            **event(cid, caller_org=w.orgs[OUTSIDER]),
            "caller_token": await _call_token(w, OUTSIDER),
        },
        "the owner's token, another payer": {
            **event(cid, caller_org=w.orgs[PASTE]),
            "caller_token": token,
        },
        "a token for another service": {
            **event(cid, caller_org=owner),
            "caller_token": await _call_token(w, OWNER, resource=PASTE_URL),
        },
        "a token for another contract": {
            **event(cid, caller_org=owner),
            "caller_token": await _call_token(w, OWNER, contract_id="another-contract"),
        },
        "a token without predict:call": {
            **event(cid, caller_org=owner),
            "caller_token": await _call_token(w, OWNER, scope="party:call"),
        },
        "a call before the token existed": {
            **event(cid, caller_org=owner, at=utcnow() - timedelta(hours=1)),
            "caller_token": token,
        },
        "a token revoked before the call": {
            **event(cid, caller_org=owner),
            "caller_token": revoked,
        },
        "a token not signed by the registry": {
            **event(cid, caller_org=owner),
            "caller_token": token[: token.rindex(".")] + ".AAAA",
        },
    }
    body = (await w.post(list(cases.values()), signed=False)).json()
    assert body["accepted"] == [] and body["duplicates"] == [], body
    codes = _codes(body)
    names = {e["event_id"]: name for name, e in cases.items()}
    assert {names[k]: v for k, v in codes.items()} == {
        name: "caller_mismatch"
        if name == "the owner's token, another payer"
        else "unverified_caller"
        for name in cases
    }
    assert all(r["message"] for r in body["refused"])

    after = (await _revenue(w, w.orgs.auth(OWNER))).json()
    assert after == before  # still 20 predictions, 1.00 EUR
    lines = [r for r in after if r["row_type"] == "line"]
    assert {r["payer_org_id"] for r in lines} == {owner} and {r["events"] for r in lines} == {4}


async def test_the_buyers_listing_its_exports_and_the_report_agree_to_the_cent(
    world: Metered,
) -> None:
    w, cid = world, world.contract_id
    counts = {OWNER: [3, 7, 11, 1, 9], PASTE: [2, 13]}
    for org, sizes in counts.items():
        events = [
            {
                **event(cid, caller_org=w.orgs[org], count=n),
                "caller_token": await _call_token(w, org),
            }
            for n in sizes
        ]
        assert len((await w.post(events, signed=False)).json()["accepted"]) == len(sizes)
    period = utcnow().strftime("%Y-%m")
    buyer = w.orgs.auth(OWNER)

    # The OEM pages through the events it is billed for.
    seen: list[Json] = []
    cursor = None
    while True:
        params = {"period": period, "payer": w.orgs[OWNER], "limit": "2"}
        if cursor:
            params["after"] = cursor
        r = await w.client.get("/v1/usage/events", params=params, headers=buyer)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["events"]
        cursor = page["next"]
        if cursor is None:
            break
    assert sorted(e["predictions"] for e in seen) == sorted(counts[OWNER])
    assert len({e["event_id"] for e in seen}) == 5
    assert {e["payer_org_id"] for e in seen} == {w.orgs[OWNER]}
    assert all(Decimal(e["amount"]) == e["predictions"] * Decimal("0.05") for e in seen)
    (total,) = page["totals"]
    listed = sum(Decimal(e["amount"]) for e in seen)
    assert (total["events"], total["predictions"], Decimal(total["amount"])) == (5, 31, listed)

    # The revenue report's groups of that payer sum to the same amount; its totals row adds
    # the paste supplier's purchases.
    report = (await _revenue(w, buyer)).json()
    payer_gross = {
        Decimal(r["gross_amount"])
        for r in report
        if r["row_type"] == "line" and r["payer_org_id"] == w.orgs[OWNER]
    }
    assert payer_gross == {listed} == {Decimal("1.55")}
    assert Decimal(report[-1]["gross_amount"]) == listed + Decimal("0.75") == Decimal("2.30")

    # CSV and XLSX exports of the listing: the same events and totals, money exact.
    params = {"period": period, "payer": w.orgs[OWNER], "format": "csv"}
    r = await w.client.get("/v1/usage/events", params=params, headers=buyer)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["event_id"] for x in rows if x["row_type"] == "line"] == [e["event_id"] for e in seen]
    assert [x["amount"] for x in rows if x["row_type"] == "total"] == [str(listed)]
    r = await w.client.get("/v1/usage/events", params={**params, "format": "xlsx"}, headers=buyer)
    assert r.status_code == 200
    kind, text = _xlsx_money(r.content)[-1]
    assert kind == "n" and Decimal(text) == listed

    # The revenue report's workbook holds money as numeric cells with the exact decimal text.
    xlsx = (await _revenue(w, buyer, "xlsx")).content
    cells = _xlsx_money(xlsx)
    assert cells and all(kind == "n" for kind, _ in cells)
    assert [Decimal(v) for _, v in cells] == [Decimal(r["amount"]) for r in report]


def _xlsx_money(content: bytes) -> list[tuple[str, str]]:
    """(cell type, value text) of the last column (``amount``) of every data row."""
    with zipfile.ZipFile(io.BytesIO(content)) as book:
        sheet = book.read("xl/worksheets/sheet1.xml").decode()
    rows = re.findall(r"<row [^>]*>(.*?)</row>", sheet)[1:]
    out = []
    for row in rows:
        last = re.findall(r'<c r="[A-Z]+\d+"([^>]*)>(?:<v>([^<]*)</v>)?', row)[-1]
        kind = re.search(r't="(\w+)"', last[0])
        out.append((kind.group(1) if kind else "n", last[1]))
    return out


async def test_the_feature_partys_records_reconcile_with_the_label_partys_events(
    world: Metered,
) -> None:
    w, cid = world, world.contract_id
    r = await w.client.get(f"/v1/contracts/{cid}/model-versions", headers=w.orgs.auth(PCB))
    job = r.json()[0]["job_id"]
    owner = w.orgs[OWNER]
    events = [
        {**event(cid, caller_org=owner), "caller_token": await _call_token(w, OWNER)}
        for _ in range(3)
    ]
    assert len((await w.post(events, signed=False)).json()["accepted"]) == 3
    now = utcnow().isoformat()

    def seen(event_id: str, n: int) -> Json:
        return {
            "observation_id": f"obs-{n:04d}-0000",
            "event_id": event_id,
            "contract_id": cid,
            "job_id": job,
            "rows": 1,
            "timestamp": now,
        }

    observations = [
        seen(events[0]["event_id"], 1),
        seen(events[1]["event_id"], 2),
        seen(events[1]["event_id"], 3),  # a second chunk of the same call
        seen("served-but-never-metered", 4),
        seen("", 5),
    ]
    url = "/v1/usage/observations"
    r = await w.client.post(url, json={"observations": observations}, headers=w.orgs.auth(PASTE))
    assert r.status_code == 200 and len(r.json()["accepted"]) == 5, r.text
    again = await w.client.post(
        url, json={"observations": observations[:1]}, headers=w.orgs.auth(PASTE)
    )
    assert again.json()["duplicates"] == [observations[0]["observation_id"]]
    # only a feature party of the contract reports serving calls; only the contract's jobs
    r = await w.client.post(
        url, json={"observations": [seen(events[2]["event_id"], 7)]}, headers=w.orgs.auth(PCB)
    )
    assert [x["code"] for x in r.json()["refused"]] == ["not_feature_party"]
    r = await w.client.post(
        url,
        json={"observations": [{**seen(events[2]["event_id"], 8), "job_id": "no-such-job"}]},
        headers=w.orgs.auth(PASTE),
    )
    assert [x["code"] for x in r.json()["refused"]] == ["unknown_job"]

    period = utcnow().strftime("%Y-%m")
    r = await w.client.get(
        "/v1/usage/reconciliation", params={"period": period}, headers=w.orgs.auth(OWNER)
    )
    assert r.status_code == 200, r.text
    (found,) = r.json()
    assert (found["contract_id"], found["events"], found["predictions"]) == (cid, 3, 3)
    (paste,) = found["parties"]
    assert paste == {
        "party": "paste",
        "org_id": w.orgs[PASTE],
        "calls": 5,
        "rows": 5,
        "matched": 2,
        "unconfirmed": 1,
        "unreported": 1,
        "unattributed": 1,
    }
    assert found["consistent"] is False and len(found["differences"]) == 3
    # an outsider sees no contract's reconciliation; the operator sees it
    r = await w.client.get(
        "/v1/usage/reconciliation", params={"period": period}, headers=w.orgs.auth(OUTSIDER)
    )
    assert r.status_code == 200 and r.json() == []
