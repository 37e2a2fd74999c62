"""Party services obey the registry: real OAuth tokens, a real contract lifecycle, real training.

The registry, the PCB maker (label party) and the paste supplier (feature party) run in-process
(ASGI transports); every token comes from the registry's token endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.protocol.messages import JobState
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import OWNER, PASTE, PCB, Orgs, onboard_example_orgs
from tests.registry.oauth_util import token_for
from tests.registry.util import bearer
from tests.registry.world import (
    PASTE_URL,
    PCB_URL,
    active_contract,
    new_job,
    scenario,
    start_parties,
    training_spec,
)


@dataclass
class World:
    registry: httpx.AsyncClient
    orgs: Orgs
    contract_id: str
    job_id: str
    pcb: httpx.AsyncClient
    paste: httpx.AsyncClient
    app: FastAPI

    async def token(self, org: str, audience: str, **claims: Any) -> str:
        return await token_for(self.app, self.orgs.clients[org], audience=audience, **claims)


@pytest.fixture
async def world(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path
) -> AsyncIterator[World]:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs)
    job_id = await new_job(client, orgs, cid)
    parties = start_parties(app, orgs, scenario(tmp_path / "data"), tmp_path)
    yield World(client, orgs, cid, job_id, parties.pcb, parties.paste, app)
    await parties.aclose()


def training(w: World) -> dict[str, Any]:
    return training_spec(w.job_id, w.contract_id)


async def test_training_runs_under_an_active_contract(world: World) -> None:
    w = world
    assert (await w.pcb.post("/v1/trainings", json=training(w))).status_code == 401
    operator = bearer(await w.token(PCB, PCB_URL, scope="jobs:run"))
    r = await w.pcb.post("/v1/trainings", json=training(w), headers=operator)
    assert r.status_code == 202, r.text
    for _ in range(600):
        status = (await w.pcb.get(f"/v1/trainings/{w.job_id}", headers=operator)).json()
        if status["state"] in (JobState.FINISHED, JobState.FAILED):
            break
        await asyncio.sleep(0.05)
    assert status["state"] == JobState.FINISHED, status["error"]
    assert 0.5 < status["test"]["auc"] <= 1.0
    # the label party reported the job and its model version to the registry
    pcb = w.orgs.auth(PCB)
    for _ in range(100):
        job = (await w.registry.get(f"/v1/jobs/{w.job_id}", headers=pcb)).json()
        versions = await w.registry.get(
            f"/v1/contracts/{w.contract_id}/model-versions", headers=pcb
        )
        if job["status"] == "finished" and versions.json():
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "finished", job
    (version,) = versions.json()
    assert version["metrics"]["auc"] == pytest.approx(status["test"]["auc"])
    assert set(version["artifact_digests"]) == {"pcb/best", "paste/best"}


async def test_the_feature_party_refuses_everyone_but_the_label_party(world: World) -> None:
    w = world
    path = f"/v1/jobs/{w.job_id}"
    body = {
        "job_id": w.job_id, "party": "paste", "segment": {}, "optimizer": {}, "seed": 1,
        "keys": ["PL-000001"],
    }  # fmt: skip
    ids = {"contract_id": w.contract_id, "job_id": w.job_id}

    async def put(headers: dict[str, str] | None) -> httpx.Response:
        return await w.paste.put(path, json=body, headers=headers)

    no_token = await put(None)
    assert no_token.status_code == 401 and no_token.json()["code"] == "unauthenticated"
    for_registry = bearer(await w.token(PCB, ISSUER, scope="party:call", **ids))
    assert (await put(for_registry)).status_code == 401, "wrong audience"
    no_scope = bearer(await w.token(PCB, PASTE_URL, scope="jobs:run", **ids))
    assert (await put(no_scope)).status_code == 403
    outsider = bearer(await w.token("outsider-gmbh", PASTE_URL, scope="party:call", **ids))
    assert (await put(outsider)).status_code == 403, "an org outside the contract"
    itself = bearer(await w.token(PASTE, PASTE_URL, scope="party:call", **ids))
    wrong_role = await put(itself)
    assert wrong_role.status_code == 403 and "label" in wrong_role.json()["message"]
    other_job = bearer(
        await w.token(
            PCB, PASTE_URL, scope="party:call", contract_id=w.contract_id, job_id="other-job"
        )
    )
    assert (await put(other_job)).status_code == 403
    assert (await w.paste.get("/v1/health")).json()["jobs"] == 0, "nothing was created"

    label = bearer(await w.token(PCB, PASTE_URL, scope="party:call", **ids))
    assert (await put(label)).status_code == 201
    # terminate the contract: within the cache TTL the party refuses the same caller
    owner = w.orgs.auth(OWNER)
    r = await w.registry.post(
        f"/v1/contracts/{w.contract_id}/terminate", json={"reason": "test"}, headers=owner
    )
    assert r.status_code == 200, r.text
    await asyncio.sleep(0.3)
    after = await w.paste.get(path, headers=label)
    assert after.status_code == 403 and "not active" in after.json()["message"]


async def test_trainings_belong_to_the_party_s_own_organisation(world: World) -> None:
    w = world
    foreign = bearer(await w.token(PASTE, PCB_URL, scope="jobs:run"))
    r = await w.pcb.post("/v1/trainings", json=training(w), headers=foreign)
    assert r.status_code == 403
    forged = "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.eyJzdWIiOiJ4In0."
    assert (
        await w.pcb.post("/v1/trainings", json=training(w), headers=bearer(forged))
    ).status_code == 401
