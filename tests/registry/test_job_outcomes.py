"""Jobs as people follow them (issue 19): per-epoch history, the reason and the party at fault of
a failed job, listing jobs, stopping one; on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.protocol.registry_contracts import JobOut
from tests.registry.contract_util import OWNER, PASTE, PCB, Orgs, document, onboard_example_orgs
from tests.registry.util import bearer

Json = dict[str, Any]
OUTSIDER = "outsider-gmbh"


@pytest.fixture
async def job(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> tuple[str, str, Orgs]:
    """An active pcb-paste contract with a running job: the contract id, the job id, the orgs."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    owner = orgs.auth(OWNER)
    cid = (await client.post("/v1/contracts", json=document(), headers=owner)).json()["id"]
    c = (await client.post(f"/v1/contracts/{cid}/propose", headers=owner)).json()
    for org, party in ((PCB, "pcb"), (PASTE, "paste")):
        body = {"party": party, "decision": "accept", "digest": c["versions"][0]["digest"]}
        r = await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=orgs.auth(org))
        assert r.status_code == 200, r.text
    r = await client.post("/v1/jobs", json={"contract_id": cid}, headers=orgs.auth(PCB))
    assert r.status_code == 201, r.text
    return cid, r.json()["id"], orgs


def _epoch(n: int, auc: float) -> Json:
    return {"epoch": n, "train_loss": 0.5 - n / 100, "validation": {"auc": auc}, "seconds": 1.5}


async def _report(client: httpx.AsyncClient, job_id: str, orgs: Orgs, **body: Any) -> Json:
    r = await client.post(f"/v1/jobs/{job_id}/progress", json=body, headers=orgs.auth(PCB))
    assert r.status_code == 200, r.text
    answer: Json = r.json()
    return answer


async def test_history_is_kept_once_per_epoch_and_a_failure_names_the_party(
    client: httpx.AsyncClient, job: tuple[str, str, Orgs]
) -> None:
    _, job_id, orgs = job
    await _report(client, job_id, orgs, status="training", epoch=_epoch(0, 0.61))
    await _report(client, job_id, orgs, epoch=_epoch(0, 0.61))  # a retried report
    await _report(client, job_id, orgs, progress=0.5, epoch=_epoch(1, 0.66))
    # a reason comes with a final status only, and the party must be one of the contract's
    for body, status in (
        ({"error": "boom"}, 422),
        ({"status": "failed", "error": "x", "failed_party": "nobody"}, 422),
        ({"status": "training", "failed_party": "paste"}, 422),
    ):
        r = await client.post(f"/v1/jobs/{job_id}/progress", json=body, headers=orgs.auth(PCB))
        assert r.status_code == status, (body, r.text)
    error = "paste answered 409 data_changed: its table changed since alignment"
    done = await _report(client, job_id, orgs, status="failed", error=error, failed_party="paste")
    seen = JobOut.model_validate(done)
    assert [e.epoch for e in seen.history] == [0, 1]
    assert seen.history[1].validation == {"auc": 0.66} and seen.history[1].seconds == 1.5
    assert (seen.status, seen.error, seen.failed_party) == ("failed", error, "paste")
    # every member reads the same record; a final job takes no more reports
    r = await client.get(f"/v1/jobs/{job_id}", headers=orgs.auth(PASTE))
    assert JobOut.model_validate(r.json()) == seen
    r = await client.post(
        f"/v1/jobs/{job_id}/progress", json={"epoch": _epoch(2, 0.7)}, headers=orgs.auth(PCB)
    )
    assert r.status_code == 409 and r.json()["detail"]["status"] == "failed"


async def test_listing_shows_members_their_jobs_only(
    client: httpx.AsyncClient, job: tuple[str, str, Orgs], admin_token: str
) -> None:
    cid, job_id, orgs = job
    for who in (OWNER, PCB, PASTE):
        r = await client.get("/v1/jobs", headers=orgs.auth(who))
        assert r.status_code == 200 and [j["id"] for j in r.json()] == [job_id], who
    r = await client.get(
        "/v1/jobs", params={"contract_id": cid, "status": "created"}, headers=orgs.auth(PASTE)
    )
    assert [j["id"] for j in r.json()] == [job_id]
    r = await client.get("/v1/jobs", params={"status": "failed"}, headers=orgs.auth(PASTE))
    assert r.json() == []
    assert (await client.get("/v1/jobs", headers=orgs.auth(OUTSIDER))).json() == []
    r = await client.get("/v1/jobs", params={"contract_id": cid}, headers=orgs.auth(OUTSIDER))
    assert r.status_code == 403
    r = await client.get("/v1/jobs", headers=bearer(admin_token))
    assert [j["id"] for j in r.json()] == [job_id]


async def test_stopping_a_job(client: httpx.AsyncClient, job: tuple[str, str, Orgs]) -> None:
    _, job_id, orgs = job
    reason = {"reason": "wrong feature set"}
    for who in (PASTE, OUTSIDER):  # a feature party, a stranger
        r = await client.post(f"/v1/jobs/{job_id}/cancel", json=reason, headers=orgs.auth(who))
        assert r.status_code in (403, 404), (who, r.text)
    signer = await orgs.auth_with(OWNER, "contracts:sign")  # the owner, without contracts:write
    r = await client.post(f"/v1/jobs/{job_id}/cancel", json=reason, headers=signer)
    assert r.status_code == 403
    r = await client.post(f"/v1/jobs/{job_id}/cancel", json=reason, headers=orgs.auth(OWNER))
    assert r.status_code == 200, r.text
    stopped = JobOut.model_validate(r.json())
    assert (stopped.status, stopped.error, stopped.failed_party) == (
        "cancelled",
        "wrong feature set",
        None,
    )
    assert stopped.finished_at is not None
    r = await client.post(f"/v1/jobs/{job_id}/cancel", json=reason, headers=orgs.auth(PCB))
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    # the label party learns it at its next report (the answer says the job is cancelled)
    r = await client.post(
        f"/v1/jobs/{job_id}/progress", json={"progress": 0.9}, headers=orgs.auth(PCB)
    )
    assert r.status_code == 409 and r.json()["detail"]["status"] == "cancelled"
