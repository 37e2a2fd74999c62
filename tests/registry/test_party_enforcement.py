"""Party services obey the registry: real OAuth tokens, a real contract lifecycle, real training.

The registry, the PCB maker (label party) and the paste supplier (feature party) run in-process
(ASGI transports); every token comes from the registry's token endpoint.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pacsv
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from services.party import registry_link
from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.protocol.errors import Unprocessable
from services.protocol.messages import JobState
from tests.registry.conftest import ISSUER
from tests.registry.contract_util import OWNER, PASTE, PCB, Orgs, document, onboard_example_orgs
from tests.registry.oauth_util import token_for
from tests.registry.util import bearer
from tests.registry.world import (
    PASTE_URL,
    PCB_URL,
    Parties,
    active_contract,
    fast_document,
    new_job,
    prepare_body,
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
    parties: Parties

    async def token(self, org: str, audience: str, **claims: Any) -> str:
        return await token_for(self.app, self.orgs.clients[org], audience=audience, **claims)


@pytest.fixture
async def world(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path
) -> AsyncIterator[World]:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs, fast_document(epochs=4))
    job_id = await new_job(client, orgs, cid)
    parties = start_parties(app, orgs, scenario(tmp_path / "data"), tmp_path)
    yield World(client, orgs, cid, job_id, parties.pcb, parties.paste, app, parties)
    await parties.aclose()


def training(w: World) -> dict[str, Any]:
    return training_spec(w.job_id, w.contract_id, fast_document(epochs=4))


async def test_training_runs_under_an_active_contract(world: World) -> None:
    w = world
    assert (await w.pcb.post("/v1/trainings", json=training(w))).status_code == 401
    operator = bearer(await w.token(PCB, PCB_URL, scope="jobs:run"))
    # the contract says ckks: a plain (or otherwise protected) training is refused up front
    plain = training_spec(w.job_id, w.contract_id, fast_document(epochs=4, mode="plain"))
    r = await w.pcb.post("/v1/trainings", json=plain, headers=operator)
    assert r.status_code == 403 and "protection.mode" in r.json()["message"], r.text
    assert r.json()["code"] == "contract_mismatch"
    weaker = training(w)
    weaker["protection"]["defence"]["enabled"] = False
    r = await w.pcb.post("/v1/trainings", json=weaker, headers=operator)
    assert r.status_code == 403, r.text
    # a tampered label-privacy budget (issue 16) is a protection that differs from the contract's
    for label_dp in ({"mechanism": "none"}, {"mechanism": "randomized_response", "epsilon": 9}):
        tampered = training(w)
        tampered["protection"]["label_dp"] = label_dp
        r = await w.pcb.post("/v1/trainings", json=tampered, headers=operator)
        assert r.status_code == 403 and "protection" in r.json()["message"], r.text
    # the PSI runs with the contract's alignment.max_keys (issue 13): other limits are refused
    looser = {**training(w), "psi_limits": {"pcb": 10**7, "paste": 10**7}}
    r = await w.pcb.post("/v1/trainings", json=looser, headers=operator)
    assert r.status_code == 403 and r.json()["code"] == "contract_mismatch", r.text
    limits = {d["field"]: d["contract"] for d in r.json()["detail"]["differences"]}
    assert limits == {"psi_limits.pcb": 5000, "psi_limits.paste": 20000}
    r = await w.pcb.post("/v1/trainings", json=training(w), headers=operator)
    assert r.status_code == 202, r.text
    # a deadline in seconds, not a count of polls: 11 s alone, past 30 s in a loaded run
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
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
    # each party's contribution is stored with the model version (issue 6)
    for kind in ("shapley", "leave_one_out"):
        for party in ("pcb", "paste"):
            assert version["metrics"][f"{kind}.{party}"] == pytest.approx(
                status["contributions"][kind][party]
            )
    assert set(version["artifact_digests"]) == {"pcb/best", "paste/best"}
    # the alignment is recorded with the job as counts only (issue 5)
    rows = {k[5:]: v for k, v in job["metrics"].items() if k.startswith("rows.")}
    assert rows["paste_shared"] <= min(rows["paste_keys"], rows["label_keys"])
    assert rows["aligned"] == status["rows"]["aligned"] > 0
    assert all(isinstance(v, float) for v in job["metrics"].values())


async def test_the_feature_party_refuses_everyone_but_the_label_party(world: World) -> None:
    w = world
    path = f"/v1/jobs/{w.job_id}"
    body = prepare_body(fast_document(epochs=4), w.job_id, ["PL-000001"])
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


async def _finish(w: World, spec: dict[str, Any], operator: dict[str, str]) -> dict[str, Any]:
    r = await w.pcb.post("/v1/trainings", json=spec, headers=operator)
    assert r.status_code == 202, r.text
    for _ in range(600):
        status: dict[str, Any] = (
            await w.pcb.get(f"/v1/trainings/{w.job_id}", headers=operator)
        ).json()
        if status["state"] in (JobState.FINISHED, JobState.FAILED):
            return status
        await asyncio.sleep(0.05)
    raise AssertionError("training did not end")


@pytest.mark.parametrize("who", ["paste", "pcb", "unit"])
async def test_a_table_that_breaks_the_contract_schema_blocks_the_job(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin_token: str,
    tmp_path: Path,
    who: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 5: each party checks its table against its committed schema before it joins; a
    failing table blocks the job with a clear reason, and only counts leave the party."""
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs, fast_document(epochs=4))
    job_id = await new_job(client, orgs, cid)
    files = scenario(tmp_path / "data")
    if who == "unit":  # the supplier declares viscosity in mPa.s; the contract says Pa.s
        units = tmp_path / "units.yaml"
        units.write_text("viscosity_pa_s: mPa.s\n")
        monkeypatch.setenv("SPLICE_PARTY_UNITS_FILE", str(units))
    else:
        broken = files.paste_supplier if who == "paste" else files.pcb_maker
        table = pacsv.read_csv(broken)
        if who == "paste":  # a committed column is missing
            table = table.drop_columns(["metal_content_pct"])
        else:  # the label party's table lacks the paste supplier's join key
            table = table.drop_columns(["paste_lot_id"])
        pacsv.write_csv(table, broken)
    parties = start_parties(app, orgs, files, tmp_path)
    w = World(client, orgs, cid, job_id, parties.pcb, parties.paste, app, parties)
    try:
        operator = bearer(await w.token(PCB, PCB_URL, scope="jobs:run"))
        if who == "pcb":
            r = await w.pcb.post("/v1/trainings", json=training(w), headers=operator)
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "schema_violation" and "paste_lot_id" in r.text
        else:
            status = await _finish(w, training(w), operator)
            assert status["state"] == JobState.FAILED
            column = "metal_content_pct" if who == "paste" else "viscosity_pa_s"
            assert "schema" in status["error"] and column in status["error"]
            # nothing was prepared at the paste supplier
            assert not parties.paste_app.state.party.jobs
    finally:
        await parties.aclose()


def _changed(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with the value at dotted ``path`` replaced (``+x``: appended)."""
    out = json.loads(json.dumps(doc))
    *parents, last = path.split(".")
    node = out
    for part in parents:
        node = node[part]
    if isinstance(value, str) and value.startswith("+"):
        node[last] = [*node[last], value[1:]]
    else:
        node[last] = value
    return out


# (what changes, the 4xx, its code, the field the answer names)
TRAINING_CHANGES = [
    ("task", "regression", 403, "contract_mismatch", "task"),
    ("label_column", "defect_type", 403, "contract_mismatch", "label_column"),
    ("columns", "+defect_type", 403, "contract_mismatch", "columns.pcb"),
    ("columns", ["line"], 403, "contract_mismatch", "columns.pcb"),
    ("model.bottom.pcb.hidden", [32], 403, "contract_mismatch", "model.bottom.pcb.hidden"),
    ("batch_size", 256, 403, "contract_mismatch", "batch_size"),
    ("model.family", "forest", 422, "validation_error", "family"),
    ("model.bottom.pcb.hidden", [4096] * 4, 422, "validation_error", "weights"),
]
PREPARE_CHANGES = [
    ("terms.task", "multiclass", 403, "contract_mismatch", "terms.task"),
    ("terms.label_column", "defect_type", 403, "contract_mismatch", "terms.label_column"),
    ("terms.columns.pcb", "+defect_type", 403, "contract_mismatch", "terms.columns.pcb"),
    ("columns", "+storage_lot_note", 403, "contract_mismatch", "columns"),
    ("segment.out", 16, 403, "contract_mismatch", "segment.out"),
    ("terms", None, 403, "contract_mismatch", "terms"),
    # issue 16: a tampered label-privacy budget or unit in the terms the label party carries
    ("terms.protection.label_dp.epsilon", 9.0, 403, "contract_mismatch", "label_dp"),
    ("terms.protection.label_dp.unit", "key", 403, "contract_mismatch", "label_dp"),
    ("terms.protection.label_dp", {"mechanism": "none"}, 403, "contract_mismatch", "label_dp"),
    ("family", "forest", 422, "validation_error", "family"),
    ("segment.hidden", [4096] * 4, 422, "validation_error", "weights"),
]


async def test_every_party_refuses_what_the_contract_does_not_fix(world: World) -> None:
    """Issue 15: each party derives the job from the contract it fetched and refuses, naming
    the field, a training or a segment that differs, an unknown family or an oversize model;
    nothing starts, nothing is prepared."""
    w = world
    operator = bearer(await w.token(PCB, PCB_URL, scope="jobs:run"))
    ids = {"contract_id": w.contract_id, "job_id": w.job_id}
    label = bearer(await w.token(PCB, PASTE_URL, scope="party:call", **ids))
    doc = fast_document(epochs=4)
    for path, value, status, code, field in TRAINING_CHANGES:
        r = await w.pcb.post(
            "/v1/trainings", json=_changed(training(w), path, value), headers=operator
        )
        assert r.status_code == status and r.json()["code"] == code, (path, r.text)
        assert field in r.text, (path, r.text)
    body = prepare_body(doc, w.job_id, ["PL-000001"])
    for path, value, status, code, field in PREPARE_CHANGES:
        r = await w.paste.put(
            f"/v1/jobs/{w.job_id}", json=_changed(body, path, value), headers=label
        )
        assert r.status_code == status and r.json()["code"] == code, (path, r.text)
        assert field in r.text, (path, r.text)
    assert not w.parties.pcb_app.state.runs.runs, "no training started"
    assert (await w.paste.get("/v1/health")).json()["jobs"] == 0, "nothing was prepared"
    assert not (w.parties.paste_app.state.party.settings.data_dir / "jobs").exists()
    # the contract's own job passes every check
    r = await w.paste.put(f"/v1/jobs/{w.job_id}", json=body, headers=label)
    assert r.status_code == 201, r.text


async def test_a_family_this_party_does_not_implement_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry serves a contract naming a family this party service does not run (a party
    built with the ``nn`` family only): the party refuses it by name (422
    family_not_implemented), not as a broken registry."""
    monkeypatch.setattr(registry_link, "PARTY_FAMILIES", frozenset({"nn"}))
    doc = document()
    doc["model"] = {"family": "gbdt", "trees": 10}
    doc["protection"] = {
        "scheme": "ckks",
        "label_defence": {"enabled": False},
        "label_privacy": {"mechanism": "none"},
    }

    def registry(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/token":
            return httpx.Response(200, json={"access_token": "t", "token_type": "Bearer"})
        return httpx.Response(200, json=doc)

    settings = PartySettings(
        name="paste", table=tmp_path / "t.csv", registry_url=ISSUER, org_id="o", client_id="c",
        client_secret=SecretStr("s"), data_dir=tmp_path, allow_insecure_http=True,
    )  # fmt: skip
    link = RegistryLink(settings, httpx.MockTransport(registry))
    try:
        with pytest.raises(Unprocessable) as refused:
            await link.contract("c-1", 1)
    finally:
        await link.aclose()
    assert refused.value.code.value == "family_not_implemented"
    assert refused.value.detail == {"party": "paste", "field": "model.family", "family": "gbdt"}
