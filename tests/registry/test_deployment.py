"""Deploying model versions: approvals by every approver the contract names, one deployed
version per contract, rollback, the contract check's deployed version, and refusals that write
nothing. Both backends."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.protocol.errors import SpliceError
from services.registry.auth import Caller
from services.registry.models import utcnow
from services.registry.store import deployment
from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    document,
    model_version_body,
    onboard_example_orgs,
)
from tests.registry.oauth_util import secret_client, token_for
from tests.registry.util import bearer, dump_tables

Json = dict[str, Any]
DIGEST = "cd" * 32
OUTSIDER = "outsider-gmbh"


@dataclass
class Deployable:
    """An active pcb-paste contract (approvers: pcb, oem) with two trained model versions."""

    client: httpx.AsyncClient
    orgs: Orgs
    url: str
    cid: str
    jobs: dict[int, str]

    def models(self, version: int | None = None) -> str:
        base = f"/v1/contracts/{self.cid}/model-versions"
        return base if version is None else f"{base}/{version}"

    async def approve(self, version: int, approver: str, org: str) -> httpx.Response:
        return await self.client.post(
            f"{self.models(version)}/approvals",
            json={"approver": approver},
            headers=self.orgs.auth(org),
        )

    async def rollback(self, org: str = PCB, **request: Any) -> httpx.Response:
        url = f"/v1/contracts/{self.cid}/deployment/rollback"
        headers = {**self.orgs.auth(org), **request.pop("headers", {})}
        return await self.client.post(url, headers=headers, **request)

    async def check(self) -> Json:
        r = await self.client.get(f"/v1/contracts/{self.cid}/check", headers=self.orgs.auth(PASTE))
        return _ok(r)

    async def model(self, version: int) -> Json:
        return _ok(await self.client.get(self.models(version), headers=self.orgs.auth(PASTE)))


def _ok(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "detail"} and body["code"] == code, body


async def _trained(client: httpx.AsyncClient, orgs: Orgs, cid: str) -> str:
    """A finished job with a recorded model version: the job's id."""
    pcb = orgs.auth(PCB)
    job = _ok(await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb), 201)
    url = f"/v1/jobs/{job['id']}"
    _ok(await client.post(f"{url}/progress", json={"status": "finished"}, headers=pcb))
    model = await model_version_body(client, pcb, job["id"])
    _ok(await client.post(f"{url}/model-versions", json=model, headers=pcb), 201)
    job_id: str = job["id"]
    return job_id


@pytest.fixture
async def dep(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, migrated_url: str
) -> Deployable:
    orgs = await onboard_example_orgs(app, client, admin_token)
    owner = orgs.auth(OWNER)
    cid = _ok(await client.post("/v1/contracts", json=document(), headers=owner), 201)["id"]
    digest = _ok(await client.post(f"/v1/contracts/{cid}/propose", headers=owner))["versions"][0][
        "digest"
    ]
    for org, party in ((PCB, "pcb"), (PASTE, "paste")):
        body = {"party": party, "decision": "accept", "digest": digest}
        _ok(await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=orgs.auth(org)))
    jobs = {1: await _trained(client, orgs, cid), 2: await _trained(client, orgs, cid)}
    return Deployable(client, orgs, migrated_url, cid, jobs)


async def test_approve_deploy_retire_and_roll_back(dep: Deployable, admin_token: str) -> None:
    check = await dep.check()
    assert check["deployed_model_version"] is None and check["deployed_job_id"] is None
    _error(await dep.rollback(), 409, "nothing_deployed")

    # The label party alone does not deploy; its repeat writes nothing.
    one = _ok(await dep.approve(1, "pcb", PCB))
    assert one["status"] == "trained" and one["deployed_at"] is None
    assert [a["approver"] for a in one["approvals"]] == ["pcb"]
    assert one["approvals"][0]["org_id"] == dep.orgs[PCB]
    before = dump_tables(dep.url)
    assert _ok(await dep.approve(1, "pcb", PCB)) == one
    assert dump_tables(dep.url) == before
    assert (await dep.check())["deployed_model_version"] is None

    # The owner's approval completes it: version 1 serves.
    one = _ok(await dep.approve(1, "oem", OWNER))
    assert one["status"] == "deployed" and one["deployed_at"] and one["retired_at"] is None
    assert {a["approver"]: a["org_id"] for a in one["approvals"]} == {
        "pcb": dep.orgs[PCB],
        "oem": dep.orgs[OWNER],
    }
    check = await dep.check()
    assert check["deployed_model_version"] == 1 and check["deployed_job_id"] == dep.jobs[1]
    before = dump_tables(dep.url)
    assert _ok(await dep.approve(1, "oem", OWNER))["status"] == "deployed"
    assert dump_tables(dep.url) == before, "approving a deployed version again writes nothing"
    _error(await dep.rollback(OWNER), 409, "no_previous_deployment")

    # Version 2 replaces it.
    _ok(await dep.approve(2, "oem", OWNER))
    assert (await dep.model(1))["status"] == "deployed"
    two = _ok(await dep.approve(2, "pcb", PCB))
    assert two["status"] == "deployed"
    one = await dep.model(1)
    assert one["status"] == "retired" and one["retired_at"] and one["deployed_at"]
    check = await dep.check()
    assert check["deployed_model_version"] == 2 and check["deployed_job_id"] == dep.jobs[2]
    _error(await dep.approve(1, "pcb", PCB), 409, "invalid_transition")

    # Rollback: version 1 serves again, version 2 is retired.
    back = _ok(await dep.rollback(OWNER, json={}))
    assert back["version"] == 1 and back["status"] == "deployed" and back["retired_at"] is None
    assert back["deployed_at"] > one["deployed_at"]
    assert (await dep.model(2))["status"] == "retired"
    check = await dep.check()
    assert check["deployed_model_version"] == 1 and check["deployed_job_id"] == dep.jobs[1]
    listed = _ok(await dep.client.get(dep.models(), headers=dep.orgs.auth(PASTE)))
    assert [(m["version"], m["status"]) for m in listed] == [(1, "deployed"), (2, "retired")]
    assert all(len(m["approvals"]) == 2 for m in listed)

    admin = bearer(admin_token)
    entries = _ok(await dep.client.get("/v1/audit", params={"limit": 1000}, headers=admin))
    actions = [e["action"] for e in entries if e["subject"] == f"contract:{dep.cid}"]
    assert actions.count("model_version.approved") == 4
    assert actions.count("model_version.deployed") == 2
    assert actions.count("model_version.retired") == 1
    assert actions.count("model_version.rolled_back") == 1
    assert _ok(await dep.client.get("/v1/audit/verify", headers=admin))["ok"] is True


async def test_refusals_write_nothing(dep: Deployable, admin_token: str) -> None:
    _ok(await dep.approve(1, "pcb", PCB))
    before = dump_tables(dep.url)
    url = f"{dep.models(1)}/approvals"
    post = dep.client.post
    # Wrong organisation for the name, a party that is no approver, an outsider, an operator.
    for approver, org in (("pcb", PASTE), ("oem", PCB), ("paste", PASTE), ("pcb", OUTSIDER)):
        _error(await dep.approve(1, approver, org), 403, "forbidden")
    admin = bearer(admin_token)
    _error(await post(url, json={"approver": "oem"}, headers=admin), 403, "forbidden")
    no_scope = await dep.orgs.auth_with(OWNER, "contracts:write jobs:run")
    _error(await post(url, json={"approver": "oem"}, headers=no_scope), 403, "forbidden")
    _error(await dep.rollback(PASTE), 403, "forbidden")
    _error(await dep.rollback(OUTSIDER), 403, "forbidden")
    # Unknown contract or version.
    _error(await dep.approve(9, "oem", OWNER), 404, "not_found")
    r = await post(
        "/v1/contracts/nope/model-versions/1/approvals",
        json={"approver": "oem"},
        headers=dep.orgs.auth(OWNER),
    )
    _error(r, 404, "not_found")
    r = await post("/v1/contracts/nope/deployment/rollback", headers=dep.orgs.auth(OWNER))
    _error(r, 404, "not_found")
    r = await dep.client.get(dep.models(9), headers=dep.orgs.auth(PASTE))
    _error(r, 404, "not_found")
    # Malformed requests.
    owner = dep.orgs.auth(OWNER)
    for body in ({}, {"approver": "OEM!"}, {"approver": "oem", "extra": 1}, {"approver": 3}, []):
        _error(await post(url, json=body, headers=owner), 422, "validation_error")
    for bad in ("0", "one", "-1"):
        r = await post(f"{dep.models()}/{bad}/approvals", json={"approver": "oem"}, headers=owner)
        _error(r, 422, "validation_error")
    r = await post(url, content=b"approver=oem", headers={**owner, "content-type": "text/plain"})
    _error(r, 415, "unsupported_media_type")
    _error(await dep.rollback(OWNER, json={"to": 1}), 422, "validation_error")
    for raw in (b"[]", b"{", b"1"):
        r = await dep.rollback(OWNER, content=raw, headers={"content-type": "application/json"})
        _error(r, 422, "validation_error")
    r = await dep.rollback(OWNER, content=b"x", headers={"content-type": "text/plain"})
    _error(r, 415, "unsupported_media_type")
    r = await post(f"/v1/contracts/{dep.cid}/deployment/rollback", headers=admin)
    _error(r, 403, "forbidden")
    assert dump_tables(dep.url) == before


async def test_suspended_and_terminated_contracts(dep: Deployable) -> None:
    _ok(await dep.approve(1, "pcb", PCB))
    _ok(await dep.approve(1, "oem", OWNER))
    _ok(await dep.approve(2, "pcb", PCB))
    owner = dep.orgs.auth(OWNER)
    base = f"/v1/contracts/{dep.cid}"
    _ok(await dep.client.post(f"{base}/suspend", json={"reason": "model audit"}, headers=owner))
    before = dump_tables(dep.url)
    _error(await dep.approve(2, "oem", OWNER), 409, "invalid_transition")
    assert dump_tables(dep.url) == before
    _error(await dep.rollback(OWNER), 409, "no_previous_deployment")
    _ok(await dep.client.post(f"{base}/reinstate", headers=owner))
    _ok(await dep.approve(2, "oem", OWNER))
    # A rollback while suspended is allowed: a bad model is why one suspends.
    _ok(await dep.client.post(f"{base}/suspend", json={"reason": "bad model"}, headers=owner))
    assert _ok(await dep.rollback(PCB))["version"] == 1
    _ok(await dep.client.post(f"{base}/terminate", json={"reason": "done"}, headers=owner))
    before = dump_tables(dep.url)
    _error(await dep.approve(2, "oem", OWNER), 409, "invalid_transition")
    _error(await dep.rollback(PCB), 409, "invalid_transition")
    assert dump_tables(dep.url) == before


def test_concurrent_last_approvals_deploy_once(app: FastAPI, dep: Deployable) -> None:
    """Both approvers of version 1 approve at once, each twice: every call succeeds, two
    approvals are stored and the version is deployed once."""
    callers = {
        "pcb": Caller("client:pcb", dep.orgs[PCB], frozenset({"contracts:sign"})),
        "oem": Caller("client:oem", dep.orgs[OWNER], frozenset({"contracts:sign"})),
    }
    barrier = threading.Barrier(4)
    errors: list[SpliceError] = []

    def attempt(name: str) -> None:
        barrier.wait()
        with app.state.sessions() as session:
            try:
                deployment.approve(session, callers[name], dep.cid, 1, approver=name, now=utcnow())
                session.commit()
            except SpliceError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in ("pcb", "oem") * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    tables = dump_tables(dep.url)
    assert len(tables["model_approvals"]) == 2
    assert [m["status"] for m in tables["model_versions"] if m["version"] == 1] == ["deployed"]
    deployed = [e for e in tables["audit_log"] if e["action"] == "model_version.deployed"]
    assert len(deployed) == 1


async def test_predict_scope_is_grantable(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str
) -> None:
    who = await secret_client(client, admin_token, "caller-ag", scope="predict:call")
    assert await token_for(app, who, scope="predict:call")
