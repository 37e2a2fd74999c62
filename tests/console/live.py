"""A real registry process for the browser tests, and the API calls that set its world up.

The registry runs as ``splice registry serve`` (uvicorn) on SQLite; organisations, their OAuth
clients and their people are made through the HTTP API as their operator and machines would.
Training is not run: the PCB maker's client reports a job's progress through the API, as its
party service does (docs/console.md says so).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.cluster import free_port
from services.registry import migrate
from services.registry.db import make_engine, session_factory
from services.registry.store.admins import bootstrap_admin
from tests.console.util import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PCB_URL = "http://pcb.invalid"
ALL_SCOPES = (
    "contracts:write contracts:sign jobs:run party:call usage:write reports:read predict:call"
)
ORGS = {
    "oem": ("nordwerk-automotive", "oem"),
    "pcb": ("lumen-pcb", "manufacturer"),
    "paste": ("solvia-paste", "supplier"),
}


def chromium() -> Path:
    """Debian's chromium, installed by ``make browsers`` when missing; the test fails naming
    that step when it cannot be installed."""
    if not CHROMIUM.exists():
        done = subprocess.run(
            ["make", "browsers"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
        )
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(
                "the console's browser tests need Chromium and `make browsers` could not install "
                f"it (apt-get install -y chromium): {done.stderr.strip()[-400:]}"
            )
    return CHROMIUM


@dataclass
class Live:
    """The running registry and the world made in it."""

    url: str
    admin: str
    api: httpx.Client
    orgs: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def token(self, org: str, scope: str | None = None, **params: str) -> str:
        """A client credentials token of ``org``'s client."""
        client_id, secret = self.secrets[org]
        form = {"grant_type": "client_credentials", **params}
        if scope:
            form["scope"] = scope
        r = self.api.post("/oauth/token", data=form, auth=(client_id, secret))
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def auth(self, org: str, scope: str | None = None, **params: str) -> dict[str, str]:
        """A bearer header of ``org``'s client."""
        return {"Authorization": f"Bearer {self.token(org, scope, **params)}"}

    def person(self, org: str, email: str, role: str) -> None:
        """A person of ``org`` invited by the operator, with the test password."""
        r = self.api.post(
            f"/v1/organisations/{self.orgs[org]}/user-invitations",
            json={"email": email, "role": role},
            headers={"Authorization": f"Bearer {self.admin}"},
        )
        assert r.status_code == 201, r.text
        r = self.api.post(
            "/v1/user-invitations/accept",
            json={"code": r.json()["code"], "name": email.split("@")[0], "password": PASSWORD},
        )
        assert r.status_code == 201, r.text


@contextmanager
def registry(tmp: Path) -> Iterator[Live]:
    """``splice registry serve`` on a fresh SQLite database; its operator's token."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SPLICE_REGISTRY_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
        "SPLICE_REGISTRY_RATE_LIMITS": "false",
        "SPLICE_REGISTRY_ARGON2_TIME_COST": "1",
        "SPLICE_REGISTRY_ARGON2_MEMORY_KIB": "1024",
        "SPLICE_REGISTRY_ARGON2_PARALLELISM": "1",
    }
    # migrated and bootstrapped in this process (as the demo does): two interpreters fewer
    url = f"sqlite:///{tmp / 'registry.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session:
        admin = bootstrap_admin(session, name="ops").token
        session.commit()
    engine.dispose()
    cli = [sys.executable, "-m", "services.cli.main", "registry"]
    log = (tmp / "registry.log").open("w")
    proc = subprocess.Popen(
        cli + ["serve", "--port", str(port)], cwd=tmp, env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if api.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the registry did not start"
                time.sleep(0.2)
            yield Live(url, admin, api)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def onboard(live: Live) -> None:
    """The three companies approved, each with an OAuth client; the PCB maker's client serves
    the party URL ``PCB_URL``."""
    admin = {"Authorization": f"Bearer {live.admin}"}
    for key, (name, kind) in ORGS.items():
        code = live.api.post("/v1/invitations", json={"note": name}, headers=admin).json()["code"]
        r = live.api.post(
            "/v1/organisations/applications",
            json={
                "name": name,
                "kind": kind,
                "contact_email": f"ops@{name}.example",
                "invitation_code": code,
            },
        )
        org_id = r.json()["id"]
        initial = live.api.post(f"/v1/organisations/{org_id}/approve", headers=admin).json()
        r = live.api.post(
            "/v1/oauth/register",
            json={"token_endpoint_auth_method": "client_secret_basic", "scope": ALL_SCOPES},
            headers={"Authorization": f"Bearer {initial['initial_access_token']}"},
        )
        assert r.status_code == 201, r.text
        live.orgs[key] = org_id
        live.secrets[key] = (r.json()["client_id"], r.json()["client_secret"])
    pcb_client = live.secrets["pcb"][0]
    r = live.api.post(
        f"/v1/oauth/clients/{pcb_client}/resources",
        json={"resource": PCB_URL},
        headers=live.auth("pcb", "party:call"),
    )
    assert r.status_code == 200, r.text


def finish_with_model(live: Live, job_id: str) -> None:
    """The job finished and its model version recorded (as the label party reports them)."""
    auth = live.auth("pcb")
    r = live.api.post(f"/v1/jobs/{job_id}/progress", json={"status": "finished"}, headers=auth)
    assert r.status_code == 200, r.text
    job = live.api.get(f"/v1/jobs/{job_id}", headers=auth).json()
    contract = live.api.get(f"/v1/contracts/{job['contract_id']}", headers=auth).json()
    document = contract["versions"][-1]["document"]
    parties = {*document["model"]["bottom"], job["label_party"]}
    body: dict[str, Any] = {
        "metrics": {"auc": 0.8},
        "artifact_digests": {"top": "0" * 64},
        "spec_digest": job["spec_digest"],
        "segment_digests": dict.fromkeys(sorted(parties), "0" * 64),
    }
    r = live.api.post(f"/v1/jobs/{job_id}/model-versions", json=body, headers=auth)
    assert r.status_code == 201, r.text


def metered_predictions(live: Live, contract_id: str, counts: list[int]) -> None:
    """The OEM's prediction calls, metered by the PCB maker's party: one usage event each,
    carrying the OEM's token of the call."""
    caller = live.token("oem", "predict:call", resource=PCB_URL, contract_id=contract_id)
    now = time.time()
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "contract_id": contract_id,
            "contract_version": 1,
            "model_version": 1,
            "caller_org": live.orgs["oem"],
            "caller_token": caller,
            "count": n,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        }
        for n in counts
    ]
    r = live.api.post("/v1/usage", json={"events": events}, headers=live.auth("pcb", "usage:write"))
    assert r.status_code in (200, 201), r.text
    assert all(e.get("status", "accepted") != "rejected" for e in r.json().get("events", []))
