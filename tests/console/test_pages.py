"""The console's pages end to end (in process): onboarding, contracts, jobs, models, finance,
audit; every form's bad input shows the field's error and changes nothing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.registry.api.revenue_formats import from_xlsx
from services.registry.models import AuditEntry, OAuthClient
from services.registry.models_contracts import ContractRecord
from services.registry.models_people import UserInvitation
from tests.console.util import PASSWORD, Org, add_user, browser, sign_in
from tests.console.world import EXAMPLE, World, build, email, propose_example
from tests.registry.contract_util import model_version_body
from tests.registry.oauth_util import Registered, token_for
from tests.registry.usage_util import event, metered
from tests.registry.util import bearer

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> AsyncIterator[World]:
    built = await build(app, client, admin_token)
    yield built
    await built.aclose()


def count(app: FastAPI, model: type) -> int:
    with app.state.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def field_error(text: str, name: str) -> str:
    found = re.search(rf'<p class="field-error" id="e-{name}" role="alert">([^<]*)</p>', text)
    assert found is not None, f"no error shown for {name}"
    return found.group(1)


async def test_admin_invites_a_person_and_registers_a_client(world: World, app: FastAPI) -> None:
    admin = world.people["paste-admin"]
    b, csrf = admin.client, admin.csrf
    before = count(app, UserInvitation)
    for data, name in (
        ({"email": "not-an-address", "role": "engineer"}, "email"),
        ({"email": "new@example.com", "role": "owner"}, "role"),
        ({"email": email("oem-viewer"), "role": "viewer"}, "email"),  # taken
    ):
        r = await b.post("/console/users/invite", data={"csrf_token": csrf, **data})
        assert r.status_code == 422 and field_error(r.text, name)
    assert count(app, UserInvitation) == before
    r = await b.post(
        "/console/users/invite",
        data={"csrf_token": csrf, "email": "Lea@Solvia.example", "role": "engineer"},
    )
    assert r.status_code == 201
    code = re.search(r'id="invitation-code">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    async with browser(app) as lea:
        r = await lea.get(f"/console/join?code={code}")
        assert code in r.text
        r = await lea.post(
            "/console/join",
            data={"code": code, "name": "Lea", "password": "short", "password2": "short"},
        )
        assert r.status_code == 422 and "12" in field_error(r.text, "password")
        form = {"code": code, "name": "Lea", "password": PASSWORD, "password2": PASSWORD}
        assert (await lea.post("/console/join", data=form)).status_code == 303
        assert (await lea.post("/console/join", data=form)).status_code == 422  # spent
        await sign_in(lea, "lea@solvia.example")
        assert "engineer" in (await lea.get("/console/")).text
        # her admin disables her: her session ends at once
        page = (await b.get("/console/users")).text
        lea_id = re.search(
            r'/console/users/([0-9a-f-]{36})/disable" class="inline">\s*'
            r'<input type="hidden" name="csrf_token" value="[^"]+">\s*'
            r'<button type="submit" class="danger">Disable Lea<',
            page,
        )
        assert lea_id is not None
        r = await b.post(f"/console/users/{lea_id.group(1)}/disable", data={"csrf_token": csrf})
        assert r.status_code == 303
        r = await lea.get("/console/")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
    # clients: bad input first, nothing registered
    clients = count(app, OAuthClient)
    oversize = b'{"keys": [' + b" " * 20_000 + b"]}"
    cases = [
        ({"auth_method": "client_secret_basic"}, None, "scope"),
        ({"auth_method": "private_key_jwt", "scope": "jobs:run"}, ("k.json", oversize), "jwks"),
        ({"auth_method": "private_key_jwt", "scope": "jobs:run"}, ("k.json", b"{no"), "jwks"),
        (
            {"auth_method": "private_key_jwt", "scope": "jobs:run"},
            ("k.json", b'{"keys": 1}'),
            "jwks",
        ),
    ]
    for data, upload, name in cases:
        files = {"jwks": upload} if upload else {"jwks": ("", b"")}
        r = await b.post("/console/clients", data={"csrf_token": csrf, **data}, files=files)
        assert r.status_code == 422, r.text
        assert name in r.text and 'class="field-error"' in r.text
    assert count(app, OAuthClient) == clients
    r = await b.post(
        "/console/clients",
        data={
            "csrf_token": csrf,
            "client_name": "paste party",
            "auth_method": "client_secret_basic",
            "scope": ["party:call", "usage:write"],
        },
        files={"jwks": ("", b"")},
    )
    assert r.status_code == 201, r.text
    client_id = re.search(r'id="new-client-id">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="new-client-secret">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    # the secret is shown once: the list does not show it again, and it works
    assert secret not in (await b.get("/console/clients")).text
    token = await token_for(app, Registered(world.orgs["paste"].id, client_id, secret))
    assert token.count(".") == 2


async def test_contract_from_the_example_to_active(world: World, app: FastAPI) -> None:
    engineer = world.people["oem-engineer"]
    b, csrf = engineer.client, engineer.csrf
    r = await b.get("/console/contracts/new?from=example:pcb-paste-quality")
    assert r.status_code == 200 and "Solder-paste print quality" in r.text
    text = EXAMPLE.read_text()
    bad = {
        "malformed YAML": (text.replace("title:", "title: [", 1), "(document)"),
        "unknown field": (text + "\nsurprise: 1\n", "surprise"),
        "negative price": (text.replace('amount: "0.05"', 'amount: "-0.05"'), "commercial"),
    }
    for what, (document, loc) in bad.items():
        r = await b.post(
            "/console/contracts/validate", data={"csrf_token": csrf, "document": document}
        )
        assert r.status_code == 200 and loc in r.text and "problem" in r.text, what
        r = await b.post(
            "/console/contracts", data={"csrf_token": csrf, "document": document, "source": ""}
        )
        assert r.status_code == 422 and loc in r.text, what
    r = await b.post(
        "/console/contracts",
        data={"csrf_token": csrf, "document": text, "price": "-1", "source": ""},
    )
    assert r.status_code == 422 and "commercial.price_per_prediction.amount" in r.text
    assert count(app, ContractRecord) == 0
    r = await b.post("/console/contracts/validate", data={"csrf_token": csrf, "document": text})
    assert "valid contract" in r.text
    contract_id = await propose_example(world)
    page = (await b.get(f"/console/contracts/{contract_id}")).text
    digest = re.search(r'id="digest-1">([0-9a-f]{64})<', page).group(1)  # type: ignore[union-attr]
    for who, party in (("pcb-admin", "pcb"), ("paste-admin", "paste")):
        signer = world.people[who]
        shown = (await signer.client.get(f"/console/contracts/{contract_id}")).text
        assert f"Accept as {party}" in shown and digest in shown
        other = "paste" if party == "pcb" else "pcb"
        assert f"Accept as {other}" not in shown
        # signing for another organisation's party is refused, as by the API
        form = {"csrf_token": signer.csrf, "party": other, "decision": "accept", "digest": digest}
        r = await signer.client.post(f"/console/contracts/{contract_id}/sign", data=form)
        assert r.status_code == 403
        # a wrong digest (the text changed since it was read) is refused
        form = {"csrf_token": signer.csrf, "party": party, "decision": "accept", "digest": "0" * 64}
        r = await signer.client.post(f"/console/contracts/{contract_id}/sign", data=form)
        assert r.status_code == 409
        r = await signer.client.post(
            f"/console/contracts/{contract_id}/sign", data=form | {"digest": digest}
        )
        assert r.status_code == 303
    page = (await b.get(f"/console/contracts/{contract_id}")).text
    assert '<dd id="contract-state">active</dd>' in page
    # the owner amends: version 2 is a draft, and the diff names the changed price
    assert f"/console/contracts/{contract_id}/edit" in page  # the Amend link
    amended = text.replace('amount: "0.05"', 'amount: "0.06"')
    r = await b.post(
        f"/console/contracts/{contract_id}/diff", data={"csrf_token": csrf, "document": amended}
    )
    assert "-  price_per_prediction:" in r.text or "'0.05'" in r.text
    assert "0.06" in r.text
    form = {"csrf_token": csrf, "document": amended, "contract_id": contract_id, "source": ""}
    assert (await b.post("/console/contracts", data=form)).status_code == 303
    page = (await b.get(f"/console/contracts/{contract_id}?diff=1..2")).text
    assert "Version 2: draft" in page and '<dd id="contract-state">active</dd>' in page
    assert '<span class="del">-    amount: &#39;0.05&#39;</span>' in page
    assert '<span class="add">+    amount: &#39;0.06&#39;</span>' in page
    # a new contract from the previous one starts from its text
    r = await b.get(f"/console/contracts/new?from=contract:{contract_id}")
    assert r.status_code == 200 and "Solder-paste print quality" in r.text
    with app.state.sessions() as session:
        actors = set(session.scalars(select(AuditEntry.actor)))
    for who in ("oem-engineer", "pcb-admin", "paste-admin"):
        assert f"user:{world.people[who].user_id}" in actors


async def test_job_progress_updates(world: World, app: FastAPI) -> None:
    contract_id = await propose_example(world)
    for who, party in (("pcb-admin", "pcb"), ("paste-admin", "paste")):
        s = world.people[who]
        page = (await s.client.get(f"/console/contracts/{contract_id}")).text
        digest = re.search(r'id="digest-1">([0-9a-f]{64})<', page).group(1)  # type: ignore[union-attr]
        form = {"csrf_token": s.csrf, "party": party, "decision": "accept", "digest": digest}
        assert (
            await s.client.post(f"/console/contracts/{contract_id}/sign", data=form)
        ).status_code == 303
    pcb = world.people["pcb-admin"]
    r = await pcb.client.post(
        "/console/clients",
        data={"csrf_token": pcb.csrf, "auth_method": "client_secret_basic", "scope": ["jobs:run"]},
        files={"jwks": ("", b"")},
    )
    client_id = re.search(r'id="new-client-id">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    secret = re.search(r'id="new-client-secret">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    auth = bearer(await token_for(app, Registered(world.orgs["pcb"].id, client_id, secret)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://registry.test"
    ) as api:
        r = await api.post("/v1/jobs", json={"contract_id": contract_id}, headers=auth)
        job_id = r.json()["id"]
        viewer = world.people["oem-viewer"].client
        page = (await viewer.get(f"/console/jobs/{job_id}")).text
        assert 'hx-get="/console/jobs/' in page and 'id="job-status">created<' in page
        # two epochs, reported the way the label party does (services/party/training/reporting.py)
        for epoch, auc, loss, progress in ((0, 0.66, 0.62, 1 / 60), (1, 0.71, 0.55, 0.5)):
            report = {
                "status": "training",
                "progress": progress,
                "epoch": {
                    "epoch": epoch,
                    "train_loss": loss + 0.05,
                    "validation": {"auc": auc, "loss": loss},
                    "seconds": 1.5,
                },
                "metrics": {"privacy.epsilon": 6.0, "rows.pcb": 1200.0, "validation.auc": auc},
            }
            assert (
                await api.post(f"/v1/jobs/{job_id}/progress", json=report, headers=auth)
            ).status_code == 200
        panel = (await viewer.get(f"/console/jobs/{job_id}/progress")).text
        assert 'id="job-status">training<' in panel and "50 %" in panel and ">6<" in panel
        assert 'id="job-epochs">30 of at most 60<' in panel  # half of the example's max_epochs
        assert "1200" in panel and "0.7100" in panel
        # the curves: one SVG per validation metric, both epochs drawn, and the table
        for name, first, second in (("auc", "0.6600", "0.7100"), ("loss", "0.6200", "0.5500")):
            svg = re.search(rf'<svg class="chart" id="curve-{name}".*?</svg>', panel, re.S)
            assert svg is not None, panel
            dots = re.findall(r"<circle [^>]*><title>Epoch (\d): (\w+) ([0-9.]+)<", svg.group(0))
            assert dots == [("0", name, first), ("1", name, second)]
            assert "<polyline" in svg.group(0) and "<desc id=" in svg.group(0)
        table = re.search(r'<table id="curve-table">.*?</table>', panel, re.S)
        assert table is not None
        rows = re.findall(r'<tr><th scope="row" class="num">(\d)</th>(.*?)</tr>', table.group(0))
        assert [(e, re.findall(r">([0-9.]+)<", cells)) for e, cells in rows] == [
            ("0", ["0.6700", "0.6200", "0.6600"]),
            ("1", ["0.6000", "0.5500", "0.7100"]),
        ]
        page = (await viewer.get(f"/console/jobs/{job_id}")).text
        assert 'id="curve-auc"' in page and "Epoch 1: loss 0.5500" in page
        r = await api.post(f"/v1/jobs/{job_id}/progress", json={"status": "finished"}, headers=auth)
        body = await model_version_body(api, auth, job_id)
        r = await api.post(f"/v1/jobs/{job_id}/model-versions", json=body, headers=auth)
        assert r.status_code == 201, r.text
        page = (await viewer.get(f"/console/jobs/{job_id}")).text
        assert 'id="job-status">finished<' in page and "hx-trigger" not in page  # polling stops
    outsider = world.people["outsider-admin"].client
    assert (await outsider.get(f"/console/jobs/{job_id}")).status_code == 404
    # the model version: both approvers approve in the console, it is deployed
    for who, approver in (("pcb-admin", "pcb"), ("oem-admin", "oem")):
        s = world.people[who]
        page = (await s.client.get(f"/console/models?contract={contract_id}")).text
        assert f"Approve v1 as {approver}" in page
        r = await s.client.post(
            f"/console/contracts/{contract_id}/models/1/approve",
            data={"csrf_token": s.csrf, "approver": approver},
        )
        assert r.status_code == 303
    page = (await world.people["oem-viewer"].client.get("/console/models")).text
    assert "<td>1</td><td>deployed</td>" in page and "pcb, oem" in page
    admin = world.people["oem-admin"]
    r = await admin.client.post(
        f"/console/contracts/{contract_id}/rollback", data={"csrf_token": admin.csrf}
    )
    assert r.status_code == 409 and "no_previous_deployment" in r.text


async def test_finance_downloads_are_the_api_exports(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    w = await metered(app, client, admin_token)
    r = await w.post([event(w.contract_id, count=40), event(w.contract_id, count=2)])
    assert r.status_code in (200, 201), r.text
    oem = Org(w.orgs.clients["nordwerk-automotive"].org_id, "nordwerk-automotive")
    await add_user(client, admin_token, oem, "fin@nordwerk.example", "finance", "Fin")
    period = datetime.now(UTC).strftime("%Y-%m")
    async with browser(app) as b:
        await sign_in(b, "fin@nordwerk.example")
        page = (await b.get(f"/console/finance?period={period}")).text
        assert "42" in page and "2.10 EUR" in page
        assert f"Predictions per day in {period}: 42 in all, at most 42 a day" in page
        for fmt in ("csv", "json", "xlsx"):
            mine = await b.get(f"/console/finance/revenue?period={period}&format={fmt}")
            api = await client.get(
                f"/v1/reports/revenue?period={period}&format={fmt}",
                headers=w.orgs.auth("nordwerk-automotive"),
            )
            assert mine.status_code == api.status_code == 200
            assert mine.content == api.content, fmt
            assert mine.headers["content-disposition"] == api.headers["content-disposition"]
        rows = from_xlsx(mine.content)
        totals = [r for r in rows if r["row_type"] == "total"]
        assert totals and str(totals[0]["amount"]) == "2.10"
