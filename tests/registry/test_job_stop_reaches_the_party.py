"""A job followed and stopped at the registry reaches the parties (issue 19): the label party
reports each epoch into the job's history; stopped at the registry, the training stops (at the
label party's next report, or sooner at the feature party's next contract check)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.protocol.messages import JobState
from tests.registry.contract_util import OWNER, PCB, Orgs, onboard_example_orgs
from tests.registry.oauth_util import token_for
from tests.registry.util import bearer
from tests.registry.world import (
    PCB_URL,
    Parties,
    active_contract,
    fast_document,
    new_job,
    scenario,
    start_parties,
    training_spec,
)

EPOCHS = 40
DOC = fast_document(epochs=EPOCHS, mode="plain")


@pytest.fixture
async def world(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, tmp_path: Path
) -> AsyncIterator[tuple[Orgs, str, str, Parties]]:
    orgs = await onboard_example_orgs(app, client, admin_token)
    cid = await active_contract(client, orgs, DOC)
    job_id = await new_job(client, orgs, cid)
    parties = start_parties(app, orgs, scenario(tmp_path / "data"), tmp_path)
    yield orgs, cid, job_id, parties
    await parties.aclose()


async def _until(check: Any, what: str, tries: int = 600) -> Any:
    for _ in range(tries):
        found = await check()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within {tries * 0.05:.0f} s")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_a_job_stopped_at_the_registry_stops_at_the_label_party(
    app: FastAPI,
    client: httpx.AsyncClient,
    world: tuple[Orgs, str, str, Parties],
) -> None:
    orgs, cid, job_id, parties = world
    operator = bearer(await token_for(app, orgs.clients[PCB], audience=PCB_URL, scope="jobs:run"))
    r = await parties.pcb.post(
        "/v1/trainings", json=training_spec(job_id, cid, DOC), headers=operator
    )
    assert r.status_code == 202, r.text

    async def history() -> list[Any]:
        job = (await client.get(f"/v1/jobs/{job_id}", headers=orgs.auth(OWNER))).json()
        found: list[Any] = job["history"]
        return found

    epochs = await _until(history, "epoch at the registry")
    assert epochs[0]["epoch"] == 0 and "auc" in epochs[0]["validation"]
    reason = {"reason": "the paste supplier's data is being corrected"}
    r = await client.post(f"/v1/jobs/{job_id}/cancel", json=reason, headers=orgs.auth(OWNER))
    assert r.status_code == 200, r.text

    async def stopped() -> dict[str, Any] | None:
        status: dict[str, Any] = (
            await parties.pcb.get(f"/v1/trainings/{job_id}", headers=operator)
        ).json()
        return status if status["state"] == JobState.FAILED else None

    status = await _until(stopped, "stop at the label party")
    # whichever learns first stops it: the label party's next report (the registry's reason),
    # or the feature party, whose contract check now sees the job cancelled and refuses steps
    by_label = status["cancelled"] == reason["reason"] and "being corrected" in status["error"]
    by_feature = "is cancelled" in status["error"] and status["failed_party"] == "paste"
    assert by_label or by_feature, status
    assert len(status["history"]) < EPOCHS
    job = (await client.get(f"/v1/jobs/{job_id}", headers=orgs.auth(PCB))).json()
    assert job["status"] == "cancelled" and job["error"] == reason["reason"]
