"""Party services obey the registry: real OAuth tokens, a real contract lifecycle, real training.

The registry, the PCB maker (label party) and the paste supplier (feature party) run in-process
(ASGI transports); every token comes from the registry's token endpoint.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.party.app import create_app
from services.party.settings import PartySettings
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    SegmentSpec,
    Task,
    TrainingSpec,
)
from services.protocol.peers import SegmentClient
from services.scenario.pcb_paste import generate
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import (
    OWNER,
    PASTE,
    PCB,
    Orgs,
    document,
    onboard_example_orgs,
)
from tests.registry.oauth_util import token_for
from tests.registry.util import bearer

PCB_URL, PASTE_URL = "http://pcb.test", "http://paste.test"


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


def party(
    name: str, table: Path, key: str | None, org: str, orgs: Orgs, tmp: Path
) -> PartySettings:
    who = orgs.clients[org]
    assert who.secret is not None
    return PartySettings(
        name=name,
        table=table,
        key_column=key,
        data_dir=tmp / name,
        registry_url=ISSUER,
        public_url=PCB_URL if name == "pcb" else PASTE_URL,
        org_id=who.org_id,
        client_id=who.client_id,
        client_secret=SecretStr(who.secret),
        contract_check_ttl_seconds=0.2,
    )


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path) -> World:
    orgs = await onboard_example_orgs(app, client, admin_token)
    owner = orgs.auth(OWNER)
    cid = (await client.post("/v1/contracts", json=document(), headers=owner)).json()["id"]
    c = (await client.post(f"/v1/contracts/{cid}/propose", headers=owner)).json()
    for org, name in ((PCB, "pcb"), (PASTE, "paste")):
        body = {"party": name, "decision": "accept", "digest": c["versions"][0]["digest"]}
        r = await client.post(f"/v1/contracts/{cid}/sign", json=body, headers=orgs.auth(org))
        assert r.status_code == 200, r.text
    job = await client.post("/v1/jobs", json={"contract_id": cid}, headers=orgs.auth(PCB))
    assert job.status_code == 201, job.text
    files = generate(tmp_path / "data", boards=1500, lots=60, seed=3)
    to_registry = httpx.ASGITransport(app=app)
    paste_app = create_app(
        party("paste", files.paste_supplier, files.key_paste, PASTE, orgs, tmp_path),
        registry_transport=to_registry,
    )

    def factory(url: str, _: PartySettings) -> SegmentClient:
        return SegmentClient(url, transport=httpx.ASGITransport(app=paste_app))

    pcb_app = create_app(
        party("pcb", files.pcb_maker, None, PCB, orgs, tmp_path),
        client_factory=factory,
        registry_transport=to_registry,
    )
    pcb = httpx.AsyncClient(transport=httpx.ASGITransport(app=pcb_app), base_url=PCB_URL)
    paste = httpx.AsyncClient(transport=httpx.ASGITransport(app=paste_app), base_url=PASTE_URL)
    return World(client, orgs, cid, job.json()["id"], pcb, paste, app)


def training(w: World) -> dict[str, Any]:
    spec = TrainingSpec(
        job_id=w.job_id,
        contract_id=w.contract_id,
        task=Task.BINARY,
        label_column="defect",
        party="pcb",
        id_column="board_id",
        exclude_columns=["defect_type"],
        feature_parties=[FeaturePartyRef(name="paste", url=PASTE_URL, key_column="paste_lot_id")],
        model=ModelSpec(bottom={n: SegmentSpec(hidden=[16], out=8) for n in ("pcb", "paste")}),
        epochs=2,
        batch_size=128,
    )
    return spec.model_dump(mode="json")


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
