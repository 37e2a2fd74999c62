"""Jobs under active contracts: who creates them, one running at a time, progress forward only,
model versions; and contract expiry written by a change or by the sweep."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from contracts.job import job_terms, spec_digest
from services.protocol.errors import Conflict, SpliceError
from services.protocol.terms import model_digest
from services.registry.auth import Caller
from services.registry.models import utcnow
from services.registry.models_contracts import (
    ContractRecord,
    ContractState,
    Decision,
    Job,
    JobStatus,
)
from services.registry.store import audit, contract_drafts, contract_lifecycle, jobs
from services.registry.store.contract_check import check
from services.registry.store.contracts import ContractExpired
from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    add_orgs,
    contract_of,
    document,
    model_version_body,
    onboard_example_orgs,
)
from tests.registry.util import bearer

Json = dict[str, Any]
DIGEST = "ab" * 32


@pytest.fixture
async def active(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> tuple[str, Orgs]:
    """An active pcb-paste contract: its id and the organisations."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    owner = orgs.auth(OWNER)
    cid = (await client.post("/v1/contracts", json=document(), headers=owner)).json()["id"]
    c = (await client.post(f"/v1/contracts/{cid}/propose", headers=owner)).json()
    for org, party in ((PCB, "pcb"), (PASTE, "paste")):
        body = {"party": party, "decision": "accept", "digest": c["versions"][0]["digest"]}
        r = await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=orgs.auth(org))
        assert r.status_code == 200, r.text
    return cid, orgs


async def _json(response: httpx.Response, status: int = 200) -> Json:
    assert response.status_code == status, response.text
    body: Json = response.json()
    return body


async def test_job_flow(
    client: httpx.AsyncClient, active: tuple[str, Orgs], admin_token: str
) -> None:
    cid, orgs = active
    pcb, paste, owner = orgs.auth(PCB), orgs.auth(PASTE), orgs.auth(OWNER)
    body = {"contract_id": cid, "key_fingerprints": {"pcb": "sha256:aa", "paste": "sha256:bb"}}
    assert (await client.post("/v1/jobs", json=body, headers=paste)).status_code == 403
    assert (await client.post("/v1/jobs", json=body, headers=owner)).status_code == 403
    assert (
        await client.post(
            "/v1/jobs", json=body, headers=await orgs.auth_with(PCB, "contracts:sign")
        )
    ).status_code == 403
    job = await _json(await client.post("/v1/jobs", json=body, headers=pcb), 201)
    assert job["status"] == "created" and job["contract_version"] == 1
    assert job["key_fingerprints"] == body["key_fingerprints"]
    r = await client.post("/v1/jobs", json=body, headers=pcb)
    assert r.status_code == 409 and r.json()["code"] == "job_exists"

    jid = job["id"]
    r = await client.get(f"/v1/contracts/{cid}/check", params={"job_id": jid}, headers=paste)
    assert (await _json(r))["job_ok"] is True
    r = await client.get(f"/v1/contracts/{cid}/check", params={"job_id": "other"}, headers=paste)
    assert (await _json(r))["job_ok"] is False
    assert (
        await client.post(f"/v1/jobs/{jid}/progress", json={"progress": 0.1}, headers=paste)
    ).status_code == 403
    await _json(
        await client.post(f"/v1/jobs/{jid}/progress", json={"status": "aligning"}, headers=pcb)
    )
    step = {"status": "training", "progress": 0.5, "metrics": {"loss": 0.4, "auc": 0.81}}
    job = await _json(await client.post(f"/v1/jobs/{jid}/progress", json=step, headers=pcb))
    assert job["progress"] == 0.5 and job["metrics"] == {"loss": 0.4, "auc": 0.81}
    r = await client.post(f"/v1/jobs/{jid}/progress", json={"status": "aligning"}, headers=pcb)
    assert r.status_code == 409, "status moves forward only"
    model = await model_version_body(client, pcb, jid, {"auc": 0.83})
    r = await client.post(f"/v1/jobs/{jid}/model-versions", json=model, headers=pcb)
    assert r.status_code == 409, "only a finished job has a model"
    job = await _json(
        await client.post(
            f"/v1/jobs/{jid}/progress",
            json={"status": "finished", "metrics": {"auc": 0.83}},
            headers=pcb,
        )
    )
    assert job["status"] == "finished" and job["progress"] == 1.0 and job["finished_at"]
    assert (
        await client.post(f"/v1/jobs/{jid}/progress", json={"progress": 0.2}, headers=pcb)
    ).status_code == 409

    mv = await _json(
        await client.post(f"/v1/jobs/{jid}/model-versions", json=model, headers=pcb), 201
    )
    assert mv["version"] == 1 and mv["status"] == "trained"
    assert (
        await client.post(f"/v1/jobs/{jid}/model-versions", json=model, headers=pcb)
    ).status_code == 409

    # The next job may start now; its model is version 2.
    second = await _json(await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb), 201)
    await client.post(f"/v1/jobs/{second['id']}/progress", json={"status": "finished"}, headers=pcb)
    await _json(
        await client.post(f"/v1/jobs/{second['id']}/model-versions", json=model, headers=pcb), 201
    )
    r = await client.get(f"/v1/contracts/{cid}/model-versions", headers=owner)
    assert [m["version"] for m in r.json()] == [1, 2]
    assert (
        await client.get(f"/v1/jobs/{jid}", headers=orgs.auth("outsider-gmbh"))
    ).status_code == 403
    assert (await _json(await client.get(f"/v1/jobs/{jid}", headers=paste)))["id"] == jid

    # Suspension stops new jobs and moves forward; termination cancels running jobs.
    third = await _json(await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb), 201)
    await _json(
        await client.post(f"/v1/contracts/{cid}/suspend", json={"reason": "x"}, headers=owner)
    )
    r = await client.post(
        f"/v1/jobs/{third['id']}/progress", json={"status": "training"}, headers=pcb
    )
    assert r.status_code == 409
    await _json(
        await client.post(f"/v1/contracts/{cid}/terminate", json={"reason": "x"}, headers=owner)
    )
    assert (await _json(await client.get(f"/v1/jobs/{third['id']}", headers=pcb)))[
        "status"
    ] == "cancelled"
    assert (
        await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb)
    ).status_code == 409
    assert (await _json(await client.get("/v1/audit/verify", headers=bearer(admin_token))))[
        "ok"
    ] is True


def test_one_running_job_under_concurrency(app: FastAPI, active: tuple[str, Orgs]) -> None:
    cid, orgs = active
    label = Caller(subject="client:pcb", org_id=orgs[PCB], scopes=frozenset({"jobs:run"}))
    outcomes: list[str] = []
    barrier = threading.Barrier(4)

    def attempt() -> None:
        barrier.wait()
        with app.state.sessions() as session:
            try:
                jobs.create_job(session, label, cid, key_fingerprints={}, now=utcnow())
                session.commit()
                outcomes.append("created")
            except Conflict:
                outcomes.append("conflict")

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "conflict", "conflict", "created"]
    with app.state.sessions() as session:
        assert len(session.scalars(select(Job).where(Job.contract_id == cid)).all()) == 1


def test_expiry_is_computed_on_read_and_written_by_change_or_sweep(app: FastAPI) -> None:
    now = utcnow()
    with app.state.sessions() as session:
        orgs = add_orgs(session, OWNER, PCB, PASTE)
        callers = {
            n: Caller(
                subject=f"client:{n}",
                org_id=o,
                scopes=frozenset({"contracts:write", "contracts:sign", "jobs:run"}),
            )
            for n, o in orgs.items()
        }
        ids = []
        for _ in range(2):
            resolved = contract_drafts.resolve(session, contract_of(document(now)))
            record, _v = contract_drafts.create_contract(session, callers[OWNER], resolved, now=now)
            version = contract_drafts.propose(session, callers[OWNER], record.id, now=now)
            for org, party in ((PCB, "pcb"), (PASTE, "paste")):
                contract_lifecycle.sign(
                    session,
                    callers[org],
                    record.id,
                    party=party,
                    decision=Decision.ACCEPT,
                    digest=version.digest,
                    reason=None,
                    now=now,
                )
            ids.append(record.id)
        jobs.create_job(session, callers[PCB], ids[0], key_fingerprints={}, now=now)
        session.commit()

    later = now + timedelta(days=400)
    with app.state.sessions() as session:
        result = check(session, callers[PASTE], ids[0], now=later, party="paste")
        assert result.state is ContractState.EXPIRED and result.active is False
        assert session.get_one(ContractRecord, ids[0]).state is ContractState.ACTIVE
        # A change finds it expired: the expiry (and only it) is kept.
        with pytest.raises(ContractExpired):
            contract_lifecycle.suspend(session, callers[OWNER], ids[0], reason="x", now=later)
        session.commit()
    with app.state.sessions() as session:
        assert session.get_one(ContractRecord, ids[0]).state is ContractState.EXPIRED
        assert session.scalars(select(Job.status)).all() == [JobStatus.CANCELLED]
        with pytest.raises(SpliceError):
            contract_lifecycle.reinstate(session, callers[OWNER], ids[0], now=later)
        assert contract_lifecycle.expire_due(session, now=later) == [ids[1]]
        assert contract_lifecycle.expire_due(session, now=later) == []
        session.commit()
        actions = [e.action for e in audit.entries(session, limit=1000)]
        assert actions.count("contract.expired") == 2 and audit.verify(session).ok


async def test_jobs_and_model_versions_say_what_they_are(
    client: httpx.AsyncClient, active: tuple[str, Orgs]
) -> None:
    """Issue 15: the registry derives each job's terms from the contract version (the parties
    derive the same); a model version records contract version, task, columns, spec digest,
    every party's segment digest and the model digest, and refuses a model that says otherwise."""
    cid, orgs = active
    pcb = orgs.auth(PCB)
    job = await _json(await client.post("/v1/jobs", json={"contract_id": cid}, headers=pcb), 201)
    assert job["spec_digest"] == spec_digest(contract_of(document()))
    url = f"/v1/jobs/{job['id']}"
    await _json(await client.post(f"{url}/progress", json={"status": "finished"}, headers=pcb))
    good = await model_version_body(client, pcb, job["id"])
    wrong_spec = {**good, "spec_digest": DIGEST}
    r = await client.post(f"{url}/model-versions", json=wrong_spec, headers=pcb)
    assert r.status_code == 409 and r.json()["code"] == "spec_mismatch", r.text
    for segments in ({"pcb": DIGEST}, {**good["segment_digests"], "oem": DIGEST}):
        r = await client.post(
            f"{url}/model-versions", json={**good, "segment_digests": segments}, headers=pcb
        )
        assert r.status_code == 422, r.text
    listed = await _json(await client.get(f"/v1/contracts/{cid}/model-versions", headers=pcb))
    assert listed == [], "nothing was recorded"

    segments = {"pcb": "1" * 64, "paste": "2" * 64}
    body = {**good, "segment_digests": segments}
    mv = await _json(await client.post(f"{url}/model-versions", json=body, headers=pcb), 201)
    terms = job_terms(contract_of(document()))
    assert mv["contract_version"] == job["contract_version"] == 1
    assert mv["task"] == "binary" and mv["columns"] == terms.columns
    assert mv["spec_digest"] == job["spec_digest"] and mv["segment_digests"] == segments
    assert mv["model_digest"] == model_digest(job["spec_digest"], segments)
    shown = await _json(
        await client.get(f"/v1/contracts/{cid}/model-versions/1", headers=orgs.auth(OWNER))
    )
    assert {k: shown[k] for k in mv if k != "approvals"} == {
        k: mv[k] for k in mv if k != "approvals"
    }

    # parties learn from the contract check that an approved job is immutable, and what the
    # deployed version's digests are
    paste = orgs.auth(PASTE)
    params = {"job_id": job["id"], "party": "paste"}
    check = await _json(
        await client.get(f"/v1/contracts/{cid}/check", params=params, headers=paste)
    )
    assert check["job_locked"] is False and check["deployed_model_digest"] is None
    approvals = f"/v1/contracts/{cid}/model-versions/1/approvals"
    await _json(await client.post(approvals, json={"approver": "pcb"}, headers=pcb))
    check = await _json(
        await client.get(f"/v1/contracts/{cid}/check", params=params, headers=paste)
    )
    assert check["job_locked"] is True and check["deployed_segment_digests"] is None
    await _json(await client.post(approvals, json={"approver": "oem"}, headers=orgs.auth(OWNER)))
    check = await _json(
        await client.get(f"/v1/contracts/{cid}/check", params=params, headers=paste)
    )
    assert check["deployed_model_digest"] == mv["model_digest"]
    assert check["deployed_segment_digests"] == segments
