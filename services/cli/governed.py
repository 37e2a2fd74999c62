"""A governed run on one machine: a real registry process, onboarded organisations, a contract.

Used by the demo: the registry (SQLite) starts as its own process; the OEM, the PCB maker and the
paste supplier onboard through its API (invitation, application, approval, client registration);
the OEM creates and proposes the contract, both data parties sign it, the PCB maker opens a job.
Party services then run with enforcement on, each with its organisation's OAuth client.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.cli.cluster import free_port
from services.cli.tls import LocalCa
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.registry_client import RegistryClient, StaticBearer

ALL_SCOPES = (
    "contracts:sign contracts:write jobs:run party:call predict:call reports:read usage:write"
)


@dataclass(slots=True)
class Org:
    """An onboarded organisation and its OAuth client."""

    name: str
    org_id: str
    client_id: str
    secret: str


@dataclass(slots=True)
class Governance:
    """The registry of a governed run and what was agreed in it."""

    url: str
    orgs: dict[str, Org] = field(default_factory=dict)
    contract_id: str = ""
    digest: str = ""
    job_id: str = ""
    process: subprocess.Popen[bytes] | None = None
    verify: ssl.SSLContext | bool = True
    """How this run's clients verify the services' certificates (the local CA under TLS)."""

    def party_env(self, org: str, public_url: str) -> dict[str, str]:
        """Environment of a party service acting for ``org`` under this registry."""
        o = self.orgs[org]
        return {
            "SPLICE_PARTY_REGISTRY_URL": self.url,
            "SPLICE_PARTY_PUBLIC_URL": public_url,
            "SPLICE_PARTY_ORG_ID": o.org_id,
            "SPLICE_PARTY_CLIENT_ID": o.client_id,
            "SPLICE_PARTY_CLIENT_SECRET": o.secret,
        }

    def auth(self, org: str, audience: str, scope: str) -> BearerAuth:
        """Tokens of ``org`` for ``audience`` (e.g. its own label party as operator)."""
        o = self.orgs[org]
        creds = ClientCredentials(f"{self.url}/oauth/token", o.client_id, o.secret)
        return BearerAuth(
            TokenSource(creds, httpx.AsyncClient(verify=self.verify)), audience, scope
        )

    def client(self, org: str) -> RegistryClient:
        """A registry client authenticated as ``org``."""
        client = RegistryClient(self.url, verify=self.verify)
        client.use_auth(self.auth(org, self.url, ALL_SCOPES))
        return client

    def stop(self) -> None:
        """Stop the registry process."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_registry(workdir: Path, tls: LocalCa | None = None) -> tuple[Governance, str]:
    """Migrate a fresh SQLite registry, bootstrap its operator, serve it (over HTTPS with a
    certificate of ``tls``); return the admin token."""
    from services.registry import migrate
    from services.registry.db import make_engine, session_factory
    from services.registry.store.admins import bootstrap_admin

    db = workdir / "registry.db"
    for leftover in workdir.glob("registry.db*"):
        leftover.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db}"
    migrate.upgrade(url, "head")
    engine = make_engine(url)
    with session_factory(engine)() as session:
        admin_token = bootstrap_admin(session, name="demo-operator").token
        session.commit()
    engine.dispose()
    port = free_port()
    base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SPLICE_REGISTRY_DATABASE_URL": url,
        "SPLICE_REGISTRY_PUBLIC_URL": base,
        **(tls.registry_env() if tls else {}),
    }
    verify = True if tls is None else tls.client_context()
    log = (workdir / "logs").resolve()
    log.mkdir(parents=True, exist_ok=True)
    with (log / "registry.log").open("ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "registry", "serve", "--port", str(port)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    gov = Governance(url=base, process=proc, verify=verify)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the registry exited; see {log / 'registry.log'}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=1, verify=verify).status_code == 200:
                return gov, admin_token
        except httpx.TransportError:
            time.sleep(0.1)
    gov.stop()
    raise RuntimeError("the registry did not start in 60 s")


async def onboard(gov: Governance, admin_token: str, orgs: dict[str, str]) -> None:
    """Invite, apply, approve and register a client for each ``{name: kind}``."""
    async with RegistryClient(gov.url, auth=StaticBearer(admin_token), verify=gov.verify) as admin:
        for name, kind in orgs.items():
            code = await admin.invite(f"demo: {name}")
            async with RegistryClient(gov.url, verify=gov.verify) as public:
                applied = await public.apply(name, kind, f"ops@{name}.example", code)
            approved = await admin.approve(applied.id)
            initial = StaticBearer(approved.initial_access_token)
            async with RegistryClient(gov.url, auth=initial, verify=gov.verify) as registrar:
                client = await registrar.register_client(ALL_SCOPES)
            assert client.client_secret is not None  # client_secret_basic: a secret, once
            gov.orgs[name] = Org(name, applied.id, client.client_id, client.client_secret)


async def agree(gov: Governance, contract: Path, owner: str, signers: dict[str, str]) -> None:
    """The owner creates and proposes ``contract``; each ``{party: org}`` signs its digest."""
    async with gov.client(owner) as oem:
        created = await oem.create_contract_yaml(contract.read_bytes())
        proposed = await oem.propose(created.id)
    gov.contract_id = created.id
    gov.digest = proposed.versions[-1].digest
    for party, org in signers.items():
        async with gov.client(org) as signer:
            await signer.sign(gov.contract_id, party, gov.digest)


async def open_job(gov: Governance, label_org: str) -> None:
    """The label party's organisation opens a training job under the contract."""
    async with gov.client(label_org) as label:
        gov.job_id = (await label.create_job(gov.contract_id)).id
