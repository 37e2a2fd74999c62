"""Metering survives a registry outage: real registry and party processes over loopback.

The registry (SQLite), the PCB maker (label party) and the paste supplier (feature party) run as
their own processes. The parties train the contract's joint model, both approvers deploy it, the
OEM asks for predictions (also through ``splice predict``), then the registry process is stopped:
predictions go on being served (the parties fall back on their last registry answers) and their
usage events wait in the label party's outbox. The registry is restarted on the same port and
database: every usage event arrives exactly once (counts sum to the predictions served, one
stored event per answer).
"""

from __future__ import annotations

import asyncio
import csv
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.compute as pc
import pytest

from contracts.job import training_spec
from contracts.loader import read_contract
from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.cli.demo import KINDS, OEM, PASTE, PCB
from services.cli.governed import Governance, onboard, start_registry
from services.engine.tabular import read_table
from services.protocol.messages import (
    JobState,
    TrainingSpec,
)
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.peers import PartyClient
from services.protocol.registry_client import RegistryClient
from services.scenario.pcb_paste import ScenarioFiles, generate
from tests.e2e.contracts import small_contract

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHECK_TTL = "1"
"""Seconds the parties cache registry answers: the outage outlasts it many times over."""


def restart(gov: Governance, workdir: Path) -> None:
    """Serve the registry again on its port and database (as start_registry started it)."""
    port = httpx.URL(gov.url).port
    env = {
        **os.environ,
        "SPLICE_REGISTRY_DATABASE_URL": f"sqlite:///{workdir / 'registry.db'}",
        "SPLICE_REGISTRY_PUBLIC_URL": gov.url,
    }
    with (workdir / "logs" / "registry.log").open("ab") as fh:
        gov.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "registry", "serve", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert gov.process.poll() is None, (workdir / "logs" / "registry.log").read_text()
        try:
            if httpx.get(f"{gov.url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the registry did not come back")


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[tuple[Governance, Path]]:
    workdir = tmp_path / "registry"
    gov, admin = start_registry(workdir)
    try:
        contract = small_contract(tmp_path)
        asyncio.run(_agree(gov, admin, contract))
        yield gov, workdir
    finally:
        gov.stop()


async def _agree(gov: Governance, admin: str, contract: Path) -> None:
    """Onboard, agree the contract (the OEM proposes, both parties sign), open a job."""
    await onboard(gov, admin, KINDS)
    async with httpx.AsyncClient() as http:

        def client(org: str) -> RegistryClient:
            return RegistryClient(gov.url, auth=_auth(gov, http, org, gov.url, "contracts:write"))

        async with client(OEM) as oem:
            created = await oem.create_contract_yaml(contract.read_bytes())
            digest = (await oem.propose(created.id)).versions[-1].digest
        gov.contract_id = created.id
        for party, org in (("pcb", PCB), ("paste", PASTE)):
            signer = RegistryClient(gov.url, auth=_auth(gov, http, org, gov.url, "contracts:sign"))
            async with signer:
                await signer.sign(gov.contract_id, party, digest)
        label = RegistryClient(gov.url, auth=_auth(gov, http, PCB, gov.url, "jobs:run"))
        async with label:
            gov.job_id = (await label.create_job(gov.contract_id)).id


def _spec(gov: Governance, paste_url: str, contract: Path) -> TrainingSpec:
    """The job the contract fixes, derived as the parties derive it."""
    return training_spec(
        read_contract(contract),
        job_id=gov.job_id,
        contract_id=gov.contract_id,
        feature_urls={"paste": paste_url},
    )


def _auth(
    gov: Governance, http: httpx.AsyncClient, org: str, audience: str, scope: str, **claims: str
) -> BearerAuth:
    """Tokens of ``org``'s client (fetched with ``http``, which the caller closes)."""
    o = gov.orgs[org]
    creds = ClientCredentials(f"{gov.url}/oauth/token", o.client_id, o.secret)
    return BearerAuth(TokenSource(creds, http), audience, scope, **claims)


async def _train_and_deploy(gov: Governance, label_url: str, spec: TrainingSpec) -> int:
    async with httpx.AsyncClient() as http:
        operator = _auth(gov, http, PCB, label_url, "jobs:run")
        async with PartyClient(label_url, timeout=120.0, auth=operator) as label:
            status = await label.start_training(spec)
            while status.state not in (JobState.FINISHED, JobState.FAILED):
                await asyncio.sleep(0.2)
                status = await label.training(spec.job_id)
        assert status.state is JobState.FINISHED, status.error
        version = 0
        for approver, org in (("pcb", PCB), ("oem", OEM)):
            auth = _auth(gov, http, org, gov.url, "contracts:sign")
            async with httpx.AsyncClient(base_url=gov.url, auth=auth, timeout=30) as registry:
                listing = f"/v1/contracts/{gov.contract_id}/model-versions"
                for _ in range(100):
                    found = (await registry.get(listing)).json()
                    if found:
                        version = int(found[0]["version"])
                        break
                    await asyncio.sleep(0.1)
                r = await registry.post(
                    f"{listing}/{version}/approvals", json={"approver": approver}
                )
                assert r.status_code == 200, r.text
    assert r.json()["status"] == "deployed"
    await asyncio.sleep(float(CHECK_TTL) + 0.5)  # the parties' cached checks see it deployed
    return version


def _rows(files: ScenarioFiles) -> list[dict[str, Any]]:
    """Boards whose paste lot the supplier holds (the alignment shared it), as request rows."""
    boards = read_table(files.pcb_maker)
    lots = read_table(files.paste_supplier).column(files.key_paste).combine_chunks()
    shared = boards.filter(pc.is_in(boards.column(files.key_paste), value_set=lots))
    drop = {files.label_binary, files.label_multiclass}
    keep = [c for c in boards.column_names if c not in drop]
    rows: list[dict[str, Any]] = shared.select(keep).slice(0, 60).to_pylist()
    return rows


def test_usage_survives_a_registry_outage(
    governed: tuple[Governance, Path], tmp_path: Path
) -> None:
    gov, workdir = governed
    files = generate(tmp_path / "data", boards=1500, lots=60, seed=3)
    contract = small_contract(tmp_path)
    ports = {"pcb": free_port(), "paste": free_port()}
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    tuning = {
        "SPLICE_PARTY_CONTRACT_CHECK_TTL_SECONDS": CHECK_TTL,
        "SPLICE_PARTY_USAGE_BACKOFF_CAP_SECONDS": "2",
    }
    launches = [
        PartyLaunch("pcb", files.pcb_maker, env={**gov.party_env(PCB, urls["pcb"]), **tuning}),
        PartyLaunch(
            "paste",
            files.paste_supplier,
            files.key_paste,
            env={**gov.party_env(PASTE, urls["paste"]), **tuning},
        ),
    ]
    with LocalCluster(tmp_path / "cluster") as cluster:
        cluster.start_all(launches, ports=ports)
        spec = _spec(gov, urls["paste"], contract)
        version = asyncio.run(_train_and_deploy(gov, urls["pcb"], spec))
        rows = [{k: v for k, v in r.items() if k != files.id_column} for r in _rows(files)]
        served, event_ids = asyncio.run(_serve_through_outage(gov, workdir, urls["pcb"], rows))
        # splice predict, with the registry back: the OEM's profile from the environment
        cli_rows = tmp_path / "rows.csv"
        with cli_rows.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(_rows(files)[0]))
            writer.writeheader()
            writer.writerows(_rows(files)[:25])
        out = tmp_path / "predictions.csv"
        oem = gov.orgs[OEM]
        done = subprocess.run(
            [
                sys.executable, "-m", "services.cli.main", "predict",
                "--label-url", urls["pcb"], "--contract", gov.contract_id,
                "--rows", str(cli_rows), "--id-column", files.id_column, "--out", str(out),
            ],
            capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")},
                "HOME": str(tmp_path / "home"),
                "SPLICE_REGISTRY_URL": gov.url,
                "SPLICE_CLIENT_ID": oem.client_id,
                "SPLICE_CLIENT_SECRET": oem.secret,
            },
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        with out.open() as fh:
            written = list(csv.DictReader(fh))
        assert len(written) == 25 and written[0]["id"].startswith("B-")
        assert {r["model_version"] for r in written} == {str(version)}
        event_ids.add(written[0]["event_id"])
        served += 25
        asyncio.run(_drained(urls["pcb"]))
    stored = sqlite3.connect(workdir / "registry.db").execute(
        "SELECT event_id, count, model_version FROM usage_events"
    )
    events = {event_id: (count, model) for event_id, count, model in stored}
    assert set(events) == event_ids, "every answer's event arrived, and no other"
    assert sum(count for count, _ in events.values()) == served
    assert {model for _, model in events.values()} == {version}


async def _serve_through_outage(
    gov: Governance, workdir: Path, label_url: str, rows: list[dict[str, Any]]
) -> tuple[int, set[str]]:
    served, event_ids = 0, set()
    async with httpx.AsyncClient() as token_http:
        cid = gov.contract_id
        auth = _auth(gov, token_http, OEM, label_url, "predict:call", contract_id=cid)
        async with httpx.AsyncClient(base_url=label_url, auth=auth, timeout=60) as label:

            async def ask(n: int) -> None:
                nonlocal served
                r = await label.post(
                    f"/v1/contracts/{gov.contract_id}/predict", json={"rows": rows[:n]}
                )
                assert r.status_code == 200, r.text
                answer = r.json()
                assert len(answer["predictions"]) == n
                event_ids.add(answer["event_id"])
                served += n

            for n in (1, 10, 60):  # registry up
                await ask(n)
            gov.stop()
            for i in range(12):  # registry down, for many cache lifetimes
                await ask(1 + i * 5)
                await asyncio.sleep(0.4)
            health = (await label.get("/v1/health")).json()["outbox"]
            assert health["pending"] >= 12 and health["shipper"]["failures"] > 0, health
            restart(gov, workdir)
            for n in (2, 3):  # and up again
                await ask(n)
    return served, event_ids


async def _drained(label_url: str) -> None:
    async with httpx.AsyncClient(base_url=label_url, timeout=10) as label:
        for _ in range(300):
            health = (await label.get("/v1/health")).json()["outbox"]
            if health["pending"] == 0:
                assert health["refused"] == 0, health
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"the label party's outbox did not drain: {health}")
