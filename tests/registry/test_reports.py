"""The revenue report: sums reconcile to the minor unit, every format reads back to the same
rows, who sees which rows, period boundaries (month ends, a leap day, daylight-saving changes),
a zero-decimal currency, contribution shares, and bad periods. On SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import yaml
from fastapi import FastAPI

from services.finance import COLUMNS
from services.registry.api.revenue_formats import from_xlsx
from services.registry.models import utcnow
from tests.registry.contract_util import (
    ALL_SCOPES,
    EXAMPLE,
    OWNER,
    PASTE,
    PCB,
    document,
    model_version_body,
)
from tests.registry.oauth_util import secret_client, token_for
from tests.registry.usage_util import Metered, metered, model_version, store_events
from tests.registry.util import bearer
from tests.registry.world import active_contract, new_job

URL = "/v1/reports/revenue"
Row = dict[str, Any]


def at(text: str) -> datetime:
    """An aware UTC datetime from ISO text."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Metered:
    w = await metered(app, client, admin_token)
    assert await model_version(w, w.contract_id) == 2
    return w


async def report(
    w: Metered, headers: dict[str, str], status: int = 200, **params: str
) -> httpx.Response:
    r = await w.client.get(URL, params={"format": "json", **params}, headers=headers)
    assert r.status_code == status, r.text
    return r


async def rows(w: Metered, headers: dict[str, str], **params: str) -> list[Row]:
    """The report's line rows (its totals rows left out)."""
    data: list[Row] = (await report(w, headers, **params)).json()
    return [r for r in data if r["row_type"] == "line"]


def november(w: Metered) -> None:
    """Usage around November 2026 under model versions 1 and 2."""
    c = w.contract_id
    store_events(
        w.app,
        [
            (c, 1, 1, 7, at("2026-11-03T10:00:00Z")),
            (c, 1, 1, 5, at("2026-11-01T00:00:00Z")),
            (c, 1, 2, 13, at("2026-11-30T23:59:59.999999Z")),
            (c, 1, 1, 100, at("2026-12-01T00:00:00Z")),
            (c, 1, 1, 1000, at("2026-10-31T23:59:59.999999Z")),
        ],
    )


def reconcile(report_rows: list[Row], price_minor: int, exponent: int) -> None:
    """Within each group, gross = predictions x price and the amounts sum to the gross."""
    groups: dict[tuple[Any, ...], list[Row]] = defaultdict(list)
    for r in report_rows:
        groups[(r["contract_id"], r["contract_version"], r["model_version"])].append(r)
    for group in groups.values():
        gross = {Decimal(r["gross_amount"]) for r in group}
        assert len(gross) == 1
        total = sum(Decimal(r["amount"]) for r in group)
        assert (
            total == gross.pop() == Decimal(group[0]["predictions"] * price_minor).scaleb(-exponent)
        )
        assert sum(Decimal(r["share_pct"]) for r in group) == 100


async def test_rows_reconcile_and_every_format_reads_back(world: Metered) -> None:
    november(world)
    finance = await world.finance_auth()
    got = await rows(world, finance, period="2026-11")
    assert [(r["model_version"], r["party_name"], r["amount"]) for r in got] == [
        (1, "pcb", "0.30"),
        (1, "paste", "0.21"),
        (1, "oem", "0.09"),
        (2, "pcb", "0.32"),
        (2, "paste", "0.23"),
        (2, "oem", "0.10"),
    ]
    first = got[0]
    assert first["predictions"] == 12 and first["gross_amount"] == "0.60"
    assert first["unit_price"] == "0.05" and first["currency"] == "EUR"
    assert first["period_start"] == "2026-11-01T00:00:00Z"
    assert first["period_end"] == "2026-12-01T00:00:00Z"
    assert first["share_basis"] == "fixed" and first["role"] == "label"
    assert first["party_org_id"] == world.orgs[PCB] and got[2]["party_org_id"] == world.orgs[OWNER]
    assert first["contract_title"] == document()["title"]
    reconcile(got, 5, 2)
    assert {r["payer_org_id"] for r in got} == {"buyer"}
    assert [r["events"] for r in got] == [2, 2, 2, 1, 1, 1]
    full: list[Row] = (await report(world, finance, period="2026-11")).json()
    assert full[:-1] == got
    total = full[-1]
    assert (total["row_type"], total["currency"], total["events"], total["predictions"]) == (
        "total",
        "EUR",
        3,
        25,
    )
    assert total["gross_amount"] == total["amount"] == "1.25"
    assert total["contract_id"] == "" and total["model_version"] is None
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in full]
    r = await report(world, finance, period="2026-11", format="csv")
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == (
        'attachment; filename="revenue_20261101T000000Z_20261201T000000Z.csv"'
    )
    assert list(csv.DictReader(io.StringIO(r.text))) == as_text
    r = await report(world, finance, period="2026-11", format="xlsx")
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert r.headers["content-disposition"].endswith('.xlsx"')
    sheet = from_xlsx(r.content)
    assert sheet == full
    assert all(isinstance(line["amount"], str) for line in sheet)
    r = await report(world, finance, period="2026-11")
    assert r.headers["content-type"] == "application/json"


async def test_who_sees_which_rows(world: Metered, admin_token: str) -> None:
    november(world)
    orgs = world.orgs
    seen = {
        "finance": await world.finance_auth(),
        "admin": bearer(admin_token),
        "owner": orgs.auth(OWNER),
        "pcb": orgs.auth(PCB),
        "paste": orgs.auth(PASTE),
        "outsider": orgs.auth("outsider-gmbh"),
    }
    parties = {
        name: {r["party_name"] for r in await rows(world, h, period="2026-11")}
        for name, h in seen.items()
    }
    everyone = {"pcb", "paste", "oem"}
    assert parties == {
        "finance": everyone,
        "admin": everyone,
        "owner": everyone,
        "pcb": {"pcb"},
        "paste": {"paste"},
        "outsider": set(),
    }
    own = await rows(world, orgs.auth(PASTE), period="2026-11")
    assert {r["party_org_id"] for r in own} == {orgs[PASTE]} and len(own) == 2
    r = await report(world, orgs.auth("outsider-gmbh"), period="2026-11", format="csv")
    assert r.text.splitlines() == [",".join(COLUMNS)]
    no_scope = await orgs.auth_with(PCB, "jobs:run")
    r = await report(world, no_scope, 403, period="2026-11")
    assert r.json()["detail"] == {"required_scope": "reports:read"}
    r = await world.client.get(URL, params={"period": "2026-11"})
    assert r.status_code == 401


LEAP = [
    (3, "2028-02-29T12:00:00Z"),
    (4, "2028-03-01T00:00:00Z"),
    (5, "2028-02-28T23:59:59Z"),
    (6, "2027-12-31T23:59:59.999999Z"),
    (9, "2028-01-01T00:00:00Z"),
]
BERLIN = [
    (1, "2026-10-31T22:59:59Z"),  # 23:59:59 CET on 31 October
    (2, "2026-10-31T23:00:00Z"),  # midnight CET, 1 November
    (4, "2026-09-30T22:00:00Z"),  # midnight CEST, 1 October
    (8, "2026-09-30T21:59:59Z"),
    (16, "2026-03-28T23:00:00Z"),  # midnight CET, 29 March (23 hours to the next midnight)
    (32, "2026-03-29T22:00:00Z"),  # midnight CEST, 30 March
]


@pytest.mark.parametrize(
    ("events", "params", "predictions", "bounds"),
    [
        (LEAP, {"period": "2028-02"}, 8, ("2028-02-01T00:00:00Z", "2028-03-01T00:00:00Z")),
        (
            LEAP,
            {"from": "2028-02-29", "to": "2028-03-01"},
            3,
            ("2028-02-29T00:00:00Z", "2028-03-01T00:00:00Z"),
        ),
        (LEAP, {"period": "2028-03"}, 4, ("2028-03-01T00:00:00Z", "2028-04-01T00:00:00Z")),
        (LEAP, {"period": "2027-12"}, 6, ("2027-12-01T00:00:00Z", "2028-01-01T00:00:00Z")),
        (
            LEAP,
            {"from": "2027-12-31T23:59:59.999999Z", "to": "2028-01-01T00:00:00.000001Z"},
            15,
            ("2027-12-31T23:59:59.999999Z", "2028-01-01T00:00:00.000001Z"),
        ),
        (
            BERLIN,
            {"period": "2026-10", "tz": "Europe/Berlin"},
            5,
            ("2026-09-30T22:00:00Z", "2026-10-31T23:00:00Z"),
        ),
        (BERLIN, {"period": "2026-10"}, 3, ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")),
        (
            BERLIN,
            {"from": "2026-03-29", "to": "2026-03-30", "tz": "Europe/Berlin"},
            16,
            ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"),
        ),
        (
            BERLIN,
            {"from": "2026-10-31T00:00:00+01:00", "to": "2026-11-01T00:00:00+01:00"},
            1,
            ("2026-10-30T23:00:00Z", "2026-10-31T23:00:00Z"),
        ),
    ],
    ids=[
        "leap month",
        "leap day",
        "march",
        "year end",
        "a microsecond",
        "berlin october",
        "utc october",
        "berlin spring",
        "offsets",
    ],
)
async def test_period_boundaries(
    world: Metered,
    events: list[tuple[int, str]],
    params: dict[str, str],
    predictions: int,
    bounds: tuple[str, str],
) -> None:
    store_events(world.app, [(world.contract_id, 1, 1, n, at(t)) for n, t in events])
    got = await rows(world, await world.finance_auth(), **params)
    assert {r["predictions"] for r in got} == {predictions}
    assert {(r["period_start"], r["period_end"]) for r in got} == {bounds}
    reconcile(got, 5, 2)


async def test_no_usage_no_rows(world: Metered) -> None:
    november(world)
    assert await rows(world, await world.finance_auth(), period="2027-05") == []


async def test_zero_decimal_currency(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    """The JPY example: whole yen, no decimal point anywhere."""
    w = await metered(app, client, admin_token)
    data = yaml.safe_load((EXAMPLE.parent / "pcb-defect-type-jpy.yaml").read_text())
    now = utcnow()
    data["validity"] = {"start": _iso(now - timedelta(days=1)), "end": _iso(now + timedelta(365))}
    data["training"] = {**data["training"], "deadline": _iso(now + timedelta(days=180))}
    for name in ("kawa-denshi", "hoshi-solder"):
        w.orgs.clients[name] = await secret_client(client, admin_token, name, scope=ALL_SCOPES)
        w.orgs.tokens[name] = await token_for(app, w.orgs.clients[name])
    cid = await _agree(
        w, data, owner="kawa-denshi", signers={"kawa": "kawa-denshi", "hoshi": "hoshi-solder"}
    )
    job = await new_job(client, w.orgs, cid, label="kawa-denshi")
    assert job
    await _finish_model(w, cid, job, "kawa-denshi")
    store_events(
        app,
        [(cid, 1, 1, 7, at("2026-11-15T03:00:00Z")), (cid, 1, 1, 4, at("2026-11-16T03:00:00Z"))],
    )
    got = await rows(w, await w.finance_auth(), period="2026-11", tz="Asia/Tokyo")
    assert [(r["party_name"], r["amount"]) for r in got] == [("kawa", "55"), ("hoshi", "33")]
    assert {(r["currency"], r["unit_price"], r["gross_amount"]) for r in got} == {
        ("JPY", "8", "88")
    }
    assert got[0]["period_start"] == "2026-10-31T15:00:00Z"
    reconcile(got, 8, 0)
    assert {r["party_org_id"] for r in got} == {w.orgs["kawa-denshi"], w.orgs["hoshi-solder"]}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _agree(w: Metered, doc: dict[str, Any], owner: str, signers: dict[str, str]) -> str:
    r = await w.client.post("/v1/contracts", json=doc, headers=w.orgs.auth(owner))
    assert r.status_code == 201, r.text
    cid: str = r.json()["id"]
    r = await w.client.post(f"/v1/contracts/{cid}/propose", headers=w.orgs.auth(owner))
    digest = r.json()["versions"][-1]["digest"]
    for party, org in signers.items():
        body = {"party": party, "decision": "accept", "digest": digest}
        r = await w.client.post(f"/v1/contracts/{cid}/sign", json=body, headers=w.orgs.auth(org))
        assert r.status_code == 200, r.text
    return cid


async def _finish_model(w: Metered, cid: str, job: str, label: str) -> None:
    auth = w.orgs.auth(label)
    r = await w.client.post(f"/v1/jobs/{job}/progress", json={"status": "finished"}, headers=auth)
    assert r.status_code == 200, r.text
    body = await model_version_body(w.client, auth, job, {})
    r = await w.client.post(f"/v1/jobs/{job}/model-versions", json=body, headers=auth)
    assert r.status_code == 201, r.text


async def test_contribution_shares(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    doc = document()
    doc["commercial"] = {
        **doc["commercial"],
        "revenue_share": {"scheme": "contribution", "measure": "shapley", "floors": {"oem": "10"}},
    }
    w = await metered(app, client, admin_token, copy.deepcopy(doc))
    cid = await active_contract(client, w.orgs, doc)
    scores = {"shapley.pcb": 0.375, "shapley.paste": 0.125, "leave_one_out.pcb": 0.9, "auc": 0.8}
    assert await model_version(w, cid, scores) == 1
    store_events(app, [(cid, 1, 1, 7, at("2026-11-15T03:00:00Z"))])
    finance = await w.finance_auth()
    got = await rows(w, finance, period="2026-11")
    mine = [r for r in got if r["contract_id"] == cid]
    assert [(r["party_name"], r["share_pct"], r["amount"]) for r in mine] == [
        ("pcb", "67.5", "0.24"),
        ("paste", "22.5", "0.08"),
        ("oem", "10", "0.03"),
    ]
    assert {r["share_basis"] for r in mine} == {"contribution:shapley"}
    reconcile(mine, 5, 2)
    # the fixture's model version 1 of the other contract has no contributions: a 409
    store_events(app, [(w.contract_id, 1, 1, 1, at("2026-11-15T03:00:00Z"))])
    r = await report(w, finance, 409, period="2026-11")
    assert r.json()["code"] == "conflict" and w.contract_id in r.json()["message"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-12-01", "to": "2026-11-01"}, "from"),
        ({"from": "2026-11-01", "to": "2026-11-01T00:00:00Z"}, "from"),
        ({"from": "yesterday", "to": "2026-11-01"}, "from"),
        ({"from": "2026-11-01", "to": "soon"}, "to"),
        ({"from": "2026-11-01"}, "to"),
        ({}, "from"),
        ({"period": "2026-13"}, "period"),
        ({"period": "2026-11", "from": "2026-11-01"}, "period"),
        ({"period": "2026-11", "tz": "Mars/Olympus_Mons"}, "tz"),
        ({"period": "2026-11", "format": "pdf"}, "format"),
        ({"period": "x" * 65}, "period"),
    ],
)
async def test_bad_periods_are_422(world: Metered, params: dict[str, str], field: str) -> None:
    r = await world.client.get(
        URL, params={"format": "csv", **params}, headers=await world.finance_auth()
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "validation_error" and body["message"]
    assert ["query", field] in [d["loc"] for d in body["detail"]], body
