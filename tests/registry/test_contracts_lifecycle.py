"""The contract lifecycle over HTTP with the pcb-paste example: draft, proposal, signatures,
amendment, suspension, termination, rejection, and the checks party services ask."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from contracts import contract_digest
from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    as_yaml,
    contract_of,
    document,
    onboard_example_orgs,
)
from tests.registry.util import bearer

YAML = {"content-type": "application/yaml"}
Json = dict[str, Any]


@pytest.fixture
async def orgs(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> AsyncIterator[Orgs]:
    """The example's organisations, onboarded; organisation callers enabled."""
    yield await onboard_example_orgs(app, client, admin_token)


async def _ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


async def _create(client: httpx.AsyncClient, orgs: Orgs, doc: Json) -> Json:
    r = await client.post(
        "/v1/contracts", content=as_yaml(doc), headers={**YAML, **orgs.auth(OWNER)}
    )
    return await _ok(r, 201)


async def _sign(
    client: httpx.AsyncClient,
    cid: str,
    auth: dict[str, str],
    party: str,
    digest: str,
    decision: str = "accept",
) -> httpx.Response:
    body = {"party": party, "decision": decision, "digest": digest}
    return await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=auth)


async def _activate(client: httpx.AsyncClient, orgs: Orgs, doc: Json) -> Json:
    c = await _create(client, orgs, doc)
    owner = orgs.auth(OWNER)
    c = await _ok(await client.post(f"/v1/contracts/{c['id']}/propose", headers=owner))
    digest = c["versions"][-1]["digest"]
    await _ok(await _sign(client, c["id"], orgs.auth(PASTE), "paste", digest))
    return await _ok(await _sign(client, c["id"], orgs.auth(PCB), "pcb", digest))


async def test_full_lifecycle(client: httpx.AsyncClient, orgs: Orgs, admin_token: str) -> None:
    owner, pcb, paste = orgs.auth(OWNER), orgs.auth(PCB), orgs.auth(PASTE)
    outsider = orgs.auth("outsider-gmbh")
    doc = document()
    c = await _create(client, orgs, doc)
    cid = c["id"]
    assert c["state"] == "draft" and c["head_version"] == 1 and c["active_version"] is None
    v1 = c["versions"][0]
    assert v1["digest"] == contract_digest(contract_of(doc))
    assert {p["name"]: (p["org_id"], p["role"]) for p in v1["parties"]} == {
        "pcb": (orgs[PCB], "label"),
        "paste": (orgs[PASTE], "feature"),
    }

    # The draft changes freely until it is proposed; the parties see it, outsiders do not.
    changed = {**doc, "title": "Print quality, lines L1-L4 (rev. b)"}
    r = await client.put(f"/v1/contracts/{cid}/draft", json=changed, headers=owner)
    draft_digest = (await _ok(r))["versions"][0]["digest"]
    assert draft_digest == contract_digest(contract_of(changed)) != v1["digest"]
    assert (await client.get(f"/v1/contracts/{cid}", headers=paste)).status_code == 200
    assert (await client.get(f"/v1/contracts/{cid}", headers=outsider)).status_code == 403
    r = await client.put(f"/v1/contracts/{cid}/draft", json=changed, headers=pcb)
    assert r.status_code == 403, "only the owner edits"

    c = await _ok(await client.post(f"/v1/contracts/{cid}/propose", headers=owner))
    assert c["state"] == "proposed" and c["versions"][0]["state"] == "proposed"
    r = await client.put(f"/v1/contracts/{cid}/draft", json=doc, headers=owner)
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"

    # Signatures: stale digest 409, wrong organisation 403, then both accept.
    stale = await _sign(client, cid, orgs.auth(PASTE), "paste", v1["digest"])
    assert stale.status_code == 409 and stale.json()["detail"]["digest"] == draft_digest
    for auth, party in [
        (orgs.auth("outsider-gmbh"), "paste"),
        (orgs.auth(OWNER), "pcb"),
        (orgs.auth(PCB), "paste"),
    ]:
        assert (await _sign(client, cid, auth, party, draft_digest)).status_code == 403
    r = await client.post(
        f"/v1/contracts/{cid}/sign",
        json={"party": "paste", "decision": "accept", "digest": draft_digest},
        headers=bearer(admin_token),
    )
    assert r.status_code == 403, "operators never sign for a party"
    c = await _ok(await _sign(client, cid, orgs.auth(PASTE), "paste", draft_digest))
    assert c["state"] == "proposed"
    assert (await _sign(client, cid, orgs.auth(PASTE), "paste", draft_digest)).status_code == 409
    c = await _ok(await _sign(client, cid, orgs.auth(PCB), "pcb", draft_digest))
    assert c["state"] == "active" and c["active_version"] == 1
    assert c["versions"][0]["state"] == "agreed"
    assert [s["party"] for s in c["versions"][0]["signatures"]] == ["paste", "pcb"]

    # The exact bytes signed.
    r = await client.get(f"/v1/contracts/{cid}/versions/1/document", headers=paste)
    assert hashlib.sha256(r.content).hexdigest() == draft_digest == r.headers["x-contract-digest"]

    # The check party services ask.
    r = await client.get(
        f"/v1/contracts/{cid}/check", params={"party": "paste", "role": "feature"}, headers=pcb
    )
    check = await _ok(r)
    assert check["active"] is True and check["contract_version"] == 1
    assert check["org_id"] == orgs[PASTE] and check["role"] == "feature" and check["role_ok"]
    r = await client.get(
        f"/v1/contracts/{cid}/check", params={"party": "paste", "role": "label"}, headers=pcb
    )
    assert (await _ok(r))["role_ok"] is False
    r = await client.get(f"/v1/contracts/{cid}/check", headers=outsider)
    assert r.status_code == 403

    # An amendment: v1 stays in force until every party accepts v2.
    amended = {
        **changed,
        "commercial": {
            **doc["commercial"],
            "price_per_prediction": {"amount": "0.07", "currency": "EUR"},
        },
    }
    r = await client.post(f"/v1/contracts/{cid}/amendments", json=amended, headers=owner)
    c = await _ok(r, 201)
    assert c["head_version"] == 2 and c["active_version"] == 1 and c["state"] == "active"
    c = await _ok(await client.post(f"/v1/contracts/{cid}/propose", headers=owner))
    v2 = c["versions"][1]["digest"]
    assert (await _sign(client, cid, orgs.auth(PCB), "pcb", draft_digest)).status_code == 409
    await _ok(await _sign(client, cid, orgs.auth(PCB), "pcb", v2))
    c = await _ok(await _sign(client, cid, orgs.auth(PASTE), "paste", v2))
    assert c["active_version"] == 2
    assert [v["state"] for v in c["versions"]] == ["superseded", "agreed"]

    # Suspension by the owner, then by an operator (only an operator lifts that).
    r = await client.post(f"/v1/contracts/{cid}/suspend", json={"reason": "audit"}, headers=owner)
    assert (await _ok(r))["state"] == "suspended"
    assert (await _ok(await client.get(f"/v1/contracts/{cid}/check", headers=pcb)))[
        "active"
    ] is False
    await _ok(await client.post(f"/v1/contracts/{cid}/reinstate", headers=owner))
    admin = bearer(admin_token)
    r = await client.post(f"/v1/contracts/{cid}/suspend", json={"reason": "dispute"}, headers=admin)
    assert (await _ok(r))["state"] == "suspended"
    assert (await client.post(f"/v1/contracts/{cid}/reinstate", headers=owner)).status_code == 403
    assert (
        await client.post(f"/v1/contracts/{cid}/suspend", json={"reason": "x"}, headers=pcb)
    ).status_code == 403
    c = await _ok(await client.post(f"/v1/contracts/{cid}/reinstate", headers=admin))
    assert c["state"] == "active"

    # Termination is final.
    r = await client.post(f"/v1/contracts/{cid}/terminate", json={"reason": "done"}, headers=owner)
    assert (await _ok(r))["state"] == "terminated"
    for path in ("reinstate", "propose"):
        r = await client.post(f"/v1/contracts/{cid}/{path}", headers=owner)
        assert r.status_code == 409, path
    r = await client.post(f"/v1/contracts/{cid}/amendments", json=amended, headers=owner)
    assert r.status_code == 409
    assert (await _ok(await client.get(f"/v1/contracts/{cid}/check", headers=pcb)))[
        "active"
    ] is False

    # The listing, and the audit trail of it all.
    listed = (await client.get("/v1/contracts", headers=paste)).json()
    assert [x["id"] for x in listed] == [cid]
    assert (await client.get("/v1/contracts", headers=outsider)).json() == []
    entries = (await client.get("/v1/audit", params={"limit": 1000}, headers=admin)).json()
    actions = [e["action"] for e in entries if e["subject"] == f"contract:{cid}"]
    assert actions == [
        "contract.created",
        "contract.draft_replaced",
        "contract.proposed",
        "contract.accepted",
        "contract.accepted",
        "contract.agreed",
        "contract.amendment_drafted",
        "contract.proposed",
        "contract.accepted",
        "contract.accepted",
        "contract.agreed",
        "contract.suspended",
        "contract.reinstated",
        "contract.suspended",
        "contract.reinstated",
        "contract.terminated",
    ]
    assert (await _ok(await client.get("/v1/audit/verify", headers=admin)))["ok"] is True


async def test_first_rejection_terminates(client: httpx.AsyncClient, orgs: Orgs) -> None:
    c = await _create(client, orgs, document())
    cid, owner = c["id"], orgs.auth(OWNER)
    c = await _ok(await client.post(f"/v1/contracts/{cid}/propose", headers=owner))
    digest = c["versions"][0]["digest"]
    await _ok(await _sign(client, cid, orgs.auth(PCB), "pcb", digest))
    c = await _ok(await _sign(client, cid, orgs.auth(PASTE), "paste", digest, "reject"))
    assert c["state"] == "terminated" and c["versions"][0]["state"] == "rejected"
    assert (await _sign(client, cid, orgs.auth(PCB), "pcb", digest)).status_code == 409
    r = await client.post(f"/v1/contracts/{cid}/amendments", json=document(), headers=owner)
    assert r.status_code == 409


async def test_rejected_amendment_leaves_the_version_in_force(
    client: httpx.AsyncClient, orgs: Orgs
) -> None:
    c = await _activate(client, orgs, document())
    cid, owner = c["id"], orgs.auth(OWNER)
    amended = document(title="Amended")
    await _ok(
        await client.post(f"/v1/contracts/{cid}/amendments", json=amended, headers=owner), 201
    )
    c = await _ok(await client.post(f"/v1/contracts/{cid}/propose", headers=owner))
    c = await _ok(
        await _sign(client, cid, orgs.auth(PCB), "pcb", c["versions"][1]["digest"], "reject")
    )
    assert c["state"] == "active" and c["active_version"] == 1
    assert [v["state"] for v in c["versions"]] == ["agreed", "rejected"]
    # A new amendment may follow.
    r = await client.post(f"/v1/contracts/{cid}/amendments", json=amended, headers=owner)
    assert (await _ok(r, 201))["head_version"] == 3


async def test_who_may_create(client: httpx.AsyncClient, orgs: Orgs, admin_token: str) -> None:
    doc = document()
    for headers in (
        orgs.auth(PCB),
        await orgs.auth_with(OWNER, "contracts:sign"),
        bearer(admin_token),
    ):
        r = await client.post("/v1/contracts", json=doc, headers=headers)
        assert r.status_code == 403, r.text
    assert (await client.post("/v1/contracts", json=doc)).status_code == 401
    # Organisations may be named by id as well as by name.
    by_id = {**doc, "owner": {**doc["owner"], "org": orgs[OWNER]}}
    r = await client.post("/v1/contracts", json=by_id, headers=orgs.auth(OWNER))
    assert (await _ok(r, 201))["owner_org_id"] == orgs[OWNER]
