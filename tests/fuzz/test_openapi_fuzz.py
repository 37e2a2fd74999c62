"""Schemathesis over the registry and a party service, in process, with a fixed budget.

Zero 5xx answers and zero schema violations (status codes and bodies as documented). The
budget and the results are printed in the test summary (``tests/fuzz/conftest.py``).
Authenticated: registry cases alternate the operator admin's token and an organisation's access
token; path parameters are pointed at existing objects half the time, so cases get past 404s.
The party runs open (no registry), with a prepared job, so its job endpoints are reachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.party.app import create_app as create_party
from services.party.settings import PartySettings
from services.registry import migrate
from services.registry.app import create_app as create_registry
from services.registry.db import dispose
from services.registry.store.admins import bootstrap_admin
from tests.fuzz.runner import FuzzReport, fuzz
from tests.party.test_bad_input import JOB, prepare_spec
from tests.registry.conftest import ISSUER, registry_settings
from tests.registry.contract_util import OWNER, PCB, Orgs, document, onboard_example_orgs
from tests.synthetic import make_vertical

REGISTRY_POSITIVE, REGISTRY_NEGATIVE = 6, 3
PARTY_POSITIVE, PARTY_NEGATIVE = 15, 8


def _failures(report: FuzzReport) -> str:
    return report.summary() + "\n" + "\n".join(report.failures[:20])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    migrate.upgrade(url)
    app = create_registry(registry_settings(url, rate_limits=False))
    yield app
    dispose(app.state.engine)


async def _world(app: FastAPI) -> tuple[str, Orgs, str]:
    with app.state.sessions() as session:
        admin = bootstrap_admin(session).token
        session.commit()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=ISSUER) as c:
        orgs = await onboard_example_orgs(app, c, admin)
        r = await c.post("/v1/contracts", json=document(), headers=orgs.auth(OWNER))
        assert r.status_code == 201, r.text
    return admin, orgs, str(r.json()["id"])


def test_registry_fuzz(registry: FastAPI) -> None:
    admin, orgs, contract_id = asyncio.run(_world(registry))
    pcb = orgs.clients[PCB]
    existing = {"org_id": pcb.org_id, "client_id": pcb.client_id, "contract_id": contract_id}
    tokens = [admin, orgs.tokens[OWNER], orgs.tokens[PCB]]

    def prepare(case: Any, n: int) -> dict[str, str]:
        if n % 2 and case.path_parameters:
            for name, value in existing.items():
                if name in case.path_parameters:
                    case.path_parameters[name] = value
        if isinstance(case.query, dict) and _waits(case.query.get("wait")):
            case.query["wait"] = 0.05  # a valid long poll would hold the fuzzer for up to 25 s
        return {"Authorization": f"Bearer {tokens[n % len(tokens)]}"}

    report = fuzz(registry, FuzzReport("registry", REGISTRY_POSITIVE, REGISTRY_NEGATIVE), prepare)
    assert report.calls > 0
    assert not report.failures, _failures(report)


def _waits(value: object) -> bool:
    """Whether ``wait`` is a long poll the registry would honour (0.05 to 25 seconds)."""
    try:
        return 0.05 < float(str(value)) <= 25
    except ValueError:
        return False


def test_party_fuzz(tmp_path: Path) -> None:
    table = make_vertical(tmp_path / "data", rows=200, lots=30).features["f0"]
    settings = PartySettings(name="f0", table=table, key_column="lot", data_dir=tmp_path / "p")
    app = create_party(settings)

    async def prepared() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://f0") as c:
            r = await c.put(f"/v1/jobs/{JOB}", json=prepare_spec())
            assert r.status_code == 201, r.text

    asyncio.run(prepared())

    def prepare(case: Any, n: int) -> dict[str, str]:
        if n % 2 and case.path_parameters and "job_id" in case.path_parameters:
            case.path_parameters["job_id"] = JOB
        return {}

    report = fuzz(app, FuzzReport("party", PARTY_POSITIVE, PARTY_NEGATIVE), prepare)
    assert report.calls > 0
    assert not report.failures, _failures(report)
