"""A registry (SQLite) and the pcb-paste parties in one process, with a trained, optionally
deployed, joint model: what the inference and metering tests start from.

Everything goes through the real APIs: onboarding, the contract, the job, the training at the
PCB maker (label party) with the paste supplier (feature party), the model version the label
party reports, and the approvals that deploy it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from fastapi import FastAPI
from sqlalchemy import func, select

from services.engine import tasks
from services.engine.split import TEST
from services.engine.tabular import read_table
from services.party.training.driver import SplitTrainer
from services.protocol.messages import JobState, ProtectionMode
from services.registry import migrate
from services.registry.app import create_app
from services.registry.db import dispose
from services.registry.models_usage import UsageEvent as StoredEvent
from services.registry.store.admins import bootstrap_admin
from services.scenario.pcb_paste import ScenarioFiles
from tests.registry.conftest import ISSUER, registry_settings
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

PLAIN = {"scheme": "plain"}


@asynccontextmanager
async def registry(tmp: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, str]]:
    """A migrated SQLite registry app, a client of it and the operator's admin token."""
    url = f"sqlite:///{tmp / 'registry.db'}"
    migrate.upgrade(url)
    app = create_app(registry_settings(url))
    with app.state.sessions() as session:
        admin = bootstrap_admin(session).token
        session.commit()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=ISSUER
        ) as client:
            yield app, client, admin
    finally:
        dispose(app.state.engine)


def counted(app: FastAPI) -> tuple[int, int]:
    """(events, predictions) a registry app has counted."""
    with app.state.sessions() as session:
        events, total = session.execute(
            select(func.count(StoredEvent.event_id), func.coalesce(func.sum(StoredEvent.count), 0))
        ).one()
    return int(events), int(total)


@dataclass
class World:
    """The registry, its organisations, a contract with a trained job, the two parties."""

    app: FastAPI
    registry: httpx.AsyncClient
    orgs: Orgs
    contract_id: str
    job_id: str
    parties: Parties
    files: ScenarioFiles
    tmp: Path
    model_version: int = 0

    @property
    def trainer(self) -> SplitTrainer:
        """The PCB maker's finished run of the job."""
        run: SplitTrainer = self.parties.pcb_app.state.runs.runs[self.job_id]
        return run

    async def token(self, org: str, audience: str = PCB_URL, **claims: Any) -> dict[str, str]:
        """An Authorization header of ``org`` for ``audience`` (default: the PCB maker)."""
        who = self.orgs.clients[org]
        return bearer(await token_for(self.app, who, audience=audience, **claims))

    async def buyer(self, org: str = OWNER) -> dict[str, str]:
        """A predict:call token of ``org`` for the contract, at the PCB maker."""
        return await self.token(org, scope="predict:call", contract_id=self.contract_id)

    async def deploy(self) -> None:
        """The contract's approvers (the PCB maker and the OEM) approve the job's model version;
        returns once the parties see it deployed."""
        for approver, org in (("pcb", PCB), ("oem", OWNER)):
            r = await self.registry.post(
                f"/v1/contracts/{self.contract_id}/model-versions/{self.model_version}/approvals",
                json={"approver": approver},
                headers=self.orgs.auth(org),
            )
            assert r.status_code == 200, r.text
        assert r.json()["status"] == "deployed", r.text
        await asyncio.sleep(0.3)  # the parties' contract checks are cached for 0.2 s here

    async def restart(self, *, pcb: Path | None = None, paste: Path | None = None) -> None:
        """Both party services again, as after their processes restarted on the same disks
        (tables at ``pcb`` / ``paste`` when given); returns once the label party has reloaded
        its finished runs (or found it cannot)."""
        await self.parties.aclose()
        for old in (self.parties.pcb_app, self.parties.paste_app):
            old.state.party.close()
            old.state.outbox.close()
        files = dataclasses.replace(
            self.files,
            pcb_maker=pcb or self.files.pcb_maker,
            paste_supplier=paste or self.files.paste_supplier,
        )
        self.parties = start_parties(self.app, self.orgs, files, self.tmp)
        self.parties.pcb_app.state.runs.recover()
        reloads = [t for t in asyncio.all_tasks() if t.get_name() == f"reload-{self.job_id}"]
        await asyncio.wait_for(asyncio.gather(*reloads), timeout=60)

    def usage(self) -> tuple[int, int]:
        """(events, predictions) the registry has counted."""
        return counted(self.app)

    def rows(self, samples: npt.NDArray[np.int64]) -> list[dict[str, Any]]:
        """Request rows (the model's columns) for the trainer's aligned samples ``samples``."""
        trainer = self.trainer
        assert trainer.data is not None
        table = read_table(self.files.pcb_maker).take(pa.array(trainer.data.rows[samples]))
        columns = self.parties.pcb_app.state.predictor.model_for(trainer).schema.columns
        return table.select(columns).to_pylist()  # type: ignore[no-any-return]

    def test_samples(self, n: int) -> npt.NDArray[np.int64]:
        """The first ``n`` samples of the job's test split."""
        assert self.trainer.data is not None
        return np.flatnonzero(self.trainer.data.splits == TEST)[:n].astype(np.int64)

    async def evaluation(self, samples: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """The trainer's own evaluation-mode predictions for ``samples``."""
        trainer = self.trainer
        assert trainer.top is not None
        inputs = await trainer._inputs(samples)
        trainer.top.eval()
        return tasks.predictions(trainer.spec.task, trainer.top(inputs).detach())


async def trained_world(
    app: FastAPI,
    client: httpx.AsyncClient,
    admin: str,
    tmp: Path,
    mode: ProtectionMode = "plain",
    *,
    epochs: int = 2,
    **changes: Any,
) -> World:
    """Onboard, agree a contract (``mode`` cut layer; ``changes`` to the example's sections),
    train its job at the PCB maker and wait for the model version the label party reports."""
    orgs = await onboard_example_orgs(app, client, admin)
    doc = fast_document(epochs=epochs, mode=mode, **changes)
    cid = await active_contract(client, orgs, doc)
    job = await new_job(client, orgs, cid)
    files = scenario(tmp / "data")
    parties = start_parties(app, orgs, files, tmp)
    w = World(app, client, orgs, cid, job, parties, files, tmp)
    operator = await w.token(PCB, scope="jobs:run")
    spec = training_spec(job, cid, doc)
    r = await parties.pcb.post("/v1/trainings", json=spec, headers=operator)
    assert r.status_code == 202, r.text
    for _ in range(2400):
        if w.trainer.status.state in (JobState.FINISHED, JobState.FAILED):
            break
        await asyncio.sleep(0.05)
    assert w.trainer.status.state is JobState.FINISHED, w.trainer.status.error
    for _ in range(200):
        r = await client.get(f"/v1/contracts/{cid}/model-versions", headers=orgs.auth(PCB))
        found = [m for m in r.json() if m["job_id"] == job]
        if found:
            w.model_version = int(found[0]["version"])
            # let the parties' cached contract checks (0.2 s here), taken while the job was still
            # training, expire: from now on they see it finished
            await asyncio.sleep(0.3)
            return w
        await asyncio.sleep(0.05)
    raise AssertionError("the label party reported no model version")
