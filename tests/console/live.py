"""A real registry process for the browser tests, and the API calls that set its world up.

The registry runs as ``splice registry serve`` (uvicorn) on SQLite; organisations, their OAuth
clients and their people are made through the HTTP API as their operator and machines would.
The PCB maker (label party) and the paste supplier run as real party services (uvicorn, loopback)
on a small generated data set, so a job's page follows a real training.
"""

from __future__ import annotations

import json
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
import yaml

from services.cli.cluster import LocalCluster, PartyLaunch, free_port
from services.registry import migrate
from services.registry.db import make_engine, session_factory
from services.registry.store.admins import bootstrap_admin
from services.scenario.pcb_paste import generate
from tests.console.util import PASSWORD
from tests.e2e.contracts import small_contract

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


@dataclass
class Parties:
    """The two party services of the live registry and the contract they can train."""

    urls: dict[str, str]
    contract: str
    """The small contract's YAML: plain cut layer, a few seconds of epochs."""
    epochs: int
    processes: list[subprocess.Popen[bytes]]

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Return once both parties answer their health check (they start in the background
        while the browser walk runs)."""
        deadline = time.monotonic() + timeout
        for url in self.urls.values():
            while True:
                assert all(p.poll() is None for p in self.processes), "a party exited"
                try:
                    if httpx.get(f"{url}/v1/health", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"the party at {url} did not start"
                time.sleep(0.2)


@contextmanager
def parties(live: Live, tmp: Path, *, epochs: int = 12) -> Iterator[Parties]:
    """The PCB maker (label party) and the paste supplier as party processes of the live
    registry's organisations, on 1,500 generated boards, started without waiting (see
    :meth:`Parties.wait_ready`); a contract of ``epochs`` epochs (no early stop) in plain mode
    that they train in a few seconds."""
    files = generate(tmp / "data", boards=1500, lots=60, seed=5)
    doc = yaml.safe_load(small_contract(tmp, epochs=epochs, batch_size=64).read_text())
    doc["training"]["patience"] = epochs
    ports = {"pcb": free_port(), "paste": free_port()}
    with LocalCluster(tmp / "cluster") as cluster:
        urls = {name: cluster.url(port) for name, port in ports.items()}

        def env(org: str, url: str) -> dict[str, str]:
            client_id, secret = live.secrets[org]
            return {
                "SPLICE_PARTY_REGISTRY_URL": live.url,
                "SPLICE_PARTY_PUBLIC_URL": url,
                "SPLICE_PARTY_ORG_ID": live.orgs[org],
                "SPLICE_PARTY_CLIENT_ID": client_id,
                "SPLICE_PARTY_CLIENT_SECRET": secret,
            }

        pcb_env = env("pcb", urls["pcb"]) | {
            "SPLICE_PARTY_PEERS": json.dumps({"paste": urls["paste"]})
        }
        paste_env = env("paste", urls["paste"])
        launches = [
            PartyLaunch("pcb", files.pcb_maker, env=pcb_env),
            PartyLaunch("paste", files.paste_supplier, files.key_paste, paste_env),
        ]
        started = [cluster.start(p, port=ports[p.name], wait=False) for p in launches]
        contract = yaml.safe_dump(doc, sort_keys=False)
        yield Parties(urls, contract, epochs, [p.process for p in started])


def start_training(
    live: Live, party_urls: dict[str, str], contract_id: str, job_id: str
) -> subprocess.Popen[str]:
    """``splice job start`` as the PCB maker, following the training until it ends (its
    ``--json`` status on stdout; a few lines each, both pipes read at the end)."""
    client_id, secret = live.secrets["pcb"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
    env |= {
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        "SPLICE_PROFILE_FILE": "/nonexistent/profiles.toml",
        "SPLICE_REGISTRY_URL": live.url,
        "SPLICE_CLIENT_ID": client_id,
        "SPLICE_CLIENT_SECRET": secret,
    }
    args = ["job", "start", contract_id, "--label-url", party_urls["pcb"], "--job", job_id]
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", *args, "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
