"""Registry: token issuance per second and contract-check latency at a party, SQLite and PostgreSQL.

For each backend a real registry process (``splice registry serve``, uvicorn, one worker) runs on
a loopback port with production argon2 settings (the defaults). Everything else happens over
HTTP from this process: the example's three organisations are onboarded (invitation,
application, approval, client registration with ``client_secret_basic`` and ``private_key_jwt``),
the pcb-paste example contract is created, proposed and signed, and the label party creates a job.

Then:

* **token issuance**: concurrent client credentials requests (the party's own ``TokenSource``,
  one per concurrent client) for a ``party:call`` token naming the contract and job, for each
  client authentication method, for a fixed time; tokens/s and latency percentiles; also one
  client alone (unloaded latency);
* **contract check at a party**: the paste supplier's ``Authorizer`` (built by ``RegistryLink``,
  as the party service builds it) verifies a real label-party token and checks its contract
  standing: cold (fresh link: JWKS fetch, the party's own registry token, ``/check``), with the
  standing cache expired (``/check`` only) and warm (signature check and cache hit only);
* **raw registry check**: ``GET /v1/contracts/{id}/check`` round trips, one client; also
  while ``--concurrency`` clients fetch ``client_secret_basic`` tokens.

Last, the registry is restarted with the test suite's cheap argon2 settings and
``client_secret_basic`` is measured again with a client registered under them, to show how much
of its cost is the password hash.

    python benchmarks/registry.py --out benchmarks/results/registry.json
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import platform
import secrets
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml
from cryptography.fernet import Fernet
from joserfc.jwk import ECKey
from psycopg import sql
from pydantic import SecretStr

from services.party.auth import ContractStanding, TtlCache
from services.party.registry_link import RegistryLink
from services.party.settings import PartySettings
from services.protocol.errors import Unauthenticated
from services.protocol.oauth_client import ClientCredentials, TokenSource
from services.registry import migrate
from services.registry.credentials import SecretHasher
from services.registry.db import make_engine, session_factory
from services.registry.models import utcnow
from services.registry.store.admins import bootstrap_admin

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "contracts" / "examples" / "pcb-paste-quality.yaml"
OWNER, PCB, PASTE = "nordwerk-automotive", "lumen-pcb", "solvia-paste"
KINDS = {OWNER: "oem", PCB: "manufacturer", PASTE: "supplier"}
ALL_SCOPES = "contracts:sign contracts:write jobs:run party:call reports:read"
PASTE_URL = "http://paste.bench:8101"
"""The paste supplier's audience (never called: the Authorizer is exercised directly)."""
PRODUCTION_ARGON2 = {"time_cost": 3, "memory_kib": 64 * 1024, "parallelism": 2}
"""The registry's defaults (``RegistrySettings``)."""
CHEAP_ARGON2 = {"time_cost": 1, "memory_kib": 1024, "parallelism": 1}
"""What the test suite uses (``tests/registry/conftest.py``)."""
METHODS = ("client_secret_basic", "private_key_jwt")


# --- small helpers -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pct(values: list[float], q: int) -> float:
    """The ``q``-th percentile (inclusive method; one value: itself)."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1e3 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(pct(ms, 50), 3),
        "p95_ms": round(pct(ms, 95), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def ok(resp: httpx.Response, status: int = 200) -> dict[str, Any]:
    if resp.status_code != status:
        raise RuntimeError(f"{resp.request.method} {resp.request.url.path}: {resp.text}")
    doc: dict[str, Any] = resp.json()
    return doc


def document(now: datetime) -> dict[str, Any]:
    """The pcb-paste example, valid from a day ago to a year ahead (as the tests do)."""
    data: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text(encoding="utf-8")))
    iso = "%Y-%m-%dT%H:%M:%SZ"
    data["validity"] = {
        "start": (now - timedelta(days=1)).strftime(iso),
        "end": (now + timedelta(days=365)).strftime(iso),
    }
    data["training"] = {**data["training"], "deadline": (now + timedelta(days=180)).strftime(iso)}
    return data


def argon2_verify_ms(params: dict[str, int], repeats: int = 5) -> float:
    """Median time of one argon2id verification with ``params``, in this process."""
    hasher = SecretHasher(params["time_cost"], params["memory_kib"], params["parallelism"])
    stored = hasher.hash("spl_cs_" + secrets.token_urlsafe(32))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        hasher.verify(stored, "wrong")
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1e3, 2)


# --- databases and the registry process ------------------------------------------------------


@contextmanager
def database(backend: str, work: Path, maintenance: str) -> Iterator[tuple[str, str]]:
    """A fresh, migrated, bootstrapped database: (SQLAlchemy URL, admin token)."""
    name = ""
    if backend == "sqlite":
        url = f"sqlite:///{work / 'registry.db'}"
    else:
        name = f"splice_bench_{secrets.token_hex(6)}"
        with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        url = f"{maintenance.rsplit('/', 1)[0]}/{name}"
    try:
        migrate.upgrade(url)  # what `splice registry migrate` runs
        engine = make_engine(url)
        try:
            with session_factory(engine)() as session:  # what `splice registry bootstrap` runs
                token = bootstrap_admin(session, name="bench").token
                session.commit()
        finally:
            engine.dispose()
        yield url, token
    finally:
        if name:
            with psycopg.connect(maintenance, autocommit=True, connect_timeout=5) as conn:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


@dataclass
class RegistryProcess:
    """``python -m services.cli.main registry serve`` on a loopback port."""

    db_url: str
    port: int
    log: Path
    argon2: dict[str, int]
    kek: str
    process: subprocess.Popen[bytes] | None = None
    workers: int = 1
    """``--workers`` of ``splice registry serve`` (uvicorn worker processes)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {
            **os.environ,
            "SPLICE_REGISTRY_PUBLIC_URL": self.url,  # the issuer; loopback http is allowed
            "SPLICE_REGISTRY_KEY_ENCRYPTION_KEY": self.kek,
            "SPLICE_REGISTRY_ARGON2_TIME_COST": str(self.argon2["time_cost"]),
            "SPLICE_REGISTRY_ARGON2_MEMORY_KIB": str(self.argon2["memory_kib"]),
            "SPLICE_REGISTRY_ARGON2_PARALLELISM": str(self.argon2["parallelism"]),
            # Limits out of reach: the load test measures throughput (the counting still runs).
            "SPLICE_REGISTRY_TOKEN_RATE_PER_CLIENT": "100000000",
            "SPLICE_REGISTRY_TOKEN_RATE_PER_IP": "100000000",
            "SPLICE_REGISTRY_API_RATE_PER_CLIENT": "100000000",
        }
        env.pop("SPLICE_REGISTRY_DATABASE_URL", None)
        cmd = [
            sys.executable, "-m", "services.cli.main", "registry", "serve",
            "--host", "127.0.0.1", "--port", str(self.port), "--database-url", self.db_url,
            "--workers", str(self.workers),
        ]  # fmt: skip
        with self.log.open("ab") as fh:
            self.process = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the registry exited:\n{self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the registry did not become ready in 60 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


# --- onboarding over HTTP ---------------------------------------------------------------------


@dataclass
class Org:
    org_id: str
    clients: dict[str, ClientCredentials] = field(default_factory=dict)
    key_file: Path | None = None


async def register(
    http: httpx.AsyncClient,
    token_url: str,
    initial: str,
    method: str,
    work: Path,
    name: str,
    scopes: str = ALL_SCOPES,
) -> tuple[ClientCredentials, Path | None]:
    """Register a client of ``method`` with the initial access token ``initial``."""
    body: dict[str, Any] = {"token_endpoint_auth_method": method, "scope": scopes}
    key = None
    if method == "private_key_jwt":
        key = ECKey.generate_key("P-256", private=True, auto_kid=True)
        body["jwks"] = {"keys": [{**key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}
    doc = ok(await http.post("/v1/oauth/register", json=body, headers=bearer(initial)), 201)
    if key is None:
        return ClientCredentials(token_url, doc["client_id"], secret=doc["client_secret"]), None
    key_file = work / f"{name}-{doc['client_id']}.jwk.json"
    key_file.write_text(json.dumps(key.as_dict(private=True)))
    return ClientCredentials(token_url, doc["client_id"], private_key=key), key_file


async def new_initial_token(http: httpx.AsyncClient, admin: str, org_id: str) -> str:
    path = f"/v1/organisations/{org_id}/initial-access-tokens"
    token: str = ok(await http.post(path, headers=bearer(admin)), 201)["initial_access_token"]
    return token


async def onboard(
    http: httpx.AsyncClient, issuer: str, admin: str, work: Path, scopes: str = ALL_SCOPES
) -> dict[str, Org]:
    """Invite, apply, approve; every org registers a client_secret_basic client and a
    private_key_jwt client (the second with another initial access token)."""
    token_url = f"{issuer}/oauth/token"
    orgs: dict[str, Org] = {}
    for name, kind in KINDS.items():
        invitation = await http.post("/v1/invitations", json={"note": name}, headers=bearer(admin))
        code = ok(invitation, 201)["code"]
        application = {
            "name": name, "kind": kind, "contact_email": "ops@example.com",
            "invitation_code": code,
        }  # fmt: skip
        org_id = ok(await http.post("/v1/organisations/applications", json=application), 201)["id"]
        approval = await http.post(f"/v1/organisations/{org_id}/approve", headers=bearer(admin))
        initial = ok(approval)["initial_access_token"]
        org = Org(org_id)
        org.clients["client_secret_basic"], _ = await register(
            http, token_url, initial, "client_secret_basic", work, name, scopes
        )
        initial = await new_initial_token(http, admin, org_id)
        org.clients["private_key_jwt"], org.key_file = await register(
            http, token_url, initial, "private_key_jwt", work, name, scopes
        )
        orgs[name] = org
    return orgs


async def contract_and_job(
    http: httpx.AsyncClient, issuer: str, orgs: dict[str, Org]
) -> tuple[str, str]:
    """Create, propose and sign the example contract (it becomes active); the label party
    creates a job under it."""

    async def auth(name: str) -> dict[str, str]:
        source = TokenSource(orgs[name].clients["client_secret_basic"], http)
        return bearer(await source.token(issuer, ALL_SCOPES))

    owner = await auth(OWNER)
    created = ok(await http.post("/v1/contracts", json=document(utcnow()), headers=owner), 201)
    cid = created["id"]
    proposed = ok(await http.post(f"/v1/contracts/{cid}/propose", headers=owner))
    digest = proposed["versions"][0]["digest"]
    for org, party in ((PCB, "pcb"), (PASTE, "paste")):
        signing = {"party": party, "decision": "accept", "digest": digest}
        headers = await auth(org)
        signed = ok(await http.post(f"/v1/contracts/{cid}/sign", json=signing, headers=headers))
    if signed["state"] != "active":
        raise RuntimeError(f"the contract is {signed['state']}, not active")
    job = ok(await http.post("/v1/jobs", json={"contract_id": cid}, headers=await auth(PCB)), 201)
    return cid, str(job["id"])


# --- measurements -----------------------------------------------------------------------------


async def token_load(
    creds: ClientCredentials,
    *,
    concurrency: int,
    seconds: float,
    max_requests: int,
    contract_id: str,
    job_id: str,
) -> dict[str, Any]:
    """``concurrency`` clients, each its own TokenSource, asking for fresh party:call tokens
    for the paste supplier under the contract and job, for ``seconds``."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        sources = [TokenSource(creds, http) for _ in range(concurrency)]

        async def one(source: TokenSource) -> float:
            t0 = time.perf_counter()
            await source.token(
                PASTE_URL, "party:call", contract_id=contract_id, job_id=job_id, fresh=True
            )
            return time.perf_counter() - t0

        await asyncio.gather(*(one(s) for s in sources))  # connections open, caches warm
        latencies: list[float] = []
        start = time.perf_counter()
        deadline = start + seconds

        async def worker(source: TokenSource) -> None:
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                latencies.append(await one(source))

        await asyncio.gather(*(worker(s) for s in sources))
        elapsed = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "tokens_per_second": round(len(latencies) / elapsed, 1),
        **summary_ms(latencies),
    }


async def tokens(
    orgs: dict[str, Org], args: argparse.Namespace, cid: str, job: str, methods: tuple[str, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method in methods:
        creds = orgs[PCB].clients[method]
        common = {"max_requests": args.max_requests, "contract_id": cid, "job_id": job}
        loaded = await token_load(
            creds, concurrency=args.concurrency, seconds=args.seconds, **common
        )
        single = await token_load(creds, concurrency=1, seconds=args.seconds / 2, **common)
        out[method] = {"loaded": loaded, "single_client": single}
        print(f"  tokens {method}: {json.dumps(out[method])}", flush=True)
    return out


def party_link(
    registry: str, org: Org, method: str, contract_calls: list[float], work: Path
) -> RegistryLink:
    """The paste supplier's registry link, as its party service builds it."""
    creds = org.clients[method]
    settings = PartySettings(
        name="paste",
        table=work / "unused.csv",
        registry_url=registry,
        public_url=PASTE_URL,
        org_id=org.org_id,
        client_id=creds.client_id,
        client_secret=SecretStr(creds.secret) if creds.secret is not None else None,
        client_key_file=org.key_file if method == "private_key_jwt" else None,
    )
    link = RegistryLink(settings)
    inner = link.authorizer.check

    async def counted(contract_id: str, caller_org: str, job_id: str) -> ContractStanding:
        contract_calls.append(time.perf_counter())
        return await inner(contract_id, caller_org, job_id)

    link.authorizer.check = counted
    return link


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


async def checks(
    registry: str, orgs: dict[str, Org], cid: str, job: str, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """The paste supplier's Authorizer on a real label-party token, and raw /check calls."""
    async with httpx.AsyncClient(base_url=registry, timeout=60) as http:
        label = TokenSource(orgs[PCB].clients["client_secret_basic"], http)
        token = await label.token(PASTE_URL, "party:call", contract_id=cid, job_id=job)
    header = f"Bearer {token}"
    out: dict[str, Any] = {}

    # Cold: a fresh link each time (no JWKS, no own registry token, no cached standing).
    for method in METHODS:
        cold = []
        for _ in range(args.cold):
            calls: list[float] = []
            link = party_link(registry, orgs[PASTE], method, calls, work)
            try:
                t0 = time.perf_counter()
                caller = await link.authorizer.authorize(header, role="label", job_id=job)
                cold.append(time.perf_counter() - t0)
            finally:
                await link.aclose()
            assert caller.org_id == orgs[PCB].org_id and calls, "a real check happened"
        out[f"cold_party_{method}"] = summary_ms(cold)

    calls = []
    link = party_link(registry, orgs[PASTE], "client_secret_basic", calls, work)
    try:
        authorizer = link.authorizer

        async def authorize() -> None:
            await authorizer.authorize(header, role="label", job_id=job)

        await authorize()  # JWKS, the party's own token and the standing are cached from here

        async def expired() -> None:
            authorizer.standing = TtlCache(authorizer.standing.ttl)
            await authorize()

        # The raw round trip the party makes when its standing cache misses.
        own = await link.tokens.token(registry, "party:call")
        params = {"party": "paste", "job_id": job}

        async def raw() -> None:
            resp = await link.http.get(
                f"/v1/contracts/{cid}/check", params=params, headers=bearer(own)
            )
            if resp.status_code != 200 or not resp.json()["active"]:
                raise RuntimeError(resp.text)

        await raw()
        expired_times, raw_times = [], []
        for _ in range(args.registry_checks):  # interleaved: both see the same noise
            expired_times += await timed(expired, 1)
            raw_times += await timed(raw, 1)
        out["standing_expired"] = summary_ms(expired_times)
        out["registry_check"] = summary_ms(raw_times)

        authorizer.standing = TtlCache(authorizer.standing.ttl)
        await authorize()
        before = len(calls)
        t0 = time.perf_counter()
        warm = await timed(authorize, args.warm)
        warm_seconds = time.perf_counter() - t0
        if len(calls) != before:
            raise RuntimeError("the warm loop outlived the standing cache; lower --warm")
        us = [s * 1e6 for s in warm]
        out["warm"] = {
            "n": len(us),
            "p50_us": round(pct(us, 50), 1),
            "p95_us": round(pct(us, 95), 1),
            "mean_us": round(statistics.fmean(us), 1),
            "loop_seconds": round(warm_seconds, 3),
            "cache_ttl_seconds": authorizer.standing.ttl,
        }
    finally:
        await link.aclose()
    print(f"  checks: {json.dumps(out)}", flush=True)
    return out


async def check_under_load(
    registry: str, orgs: dict[str, Org], cid: str, job: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Raw /check round trips while ``--concurrency`` clients fetch client_secret_basic tokens
    (each verification burns ~100 ms of CPU on the registry)."""
    async with httpx.AsyncClient(base_url=registry, timeout=60) as http:
        own = await TokenSource(orgs[PASTE].clients["private_key_jwt"], http).token(
            registry, "party:call"
        )
        stop = asyncio.Event()
        issued = refused = 0

        async def load() -> None:
            nonlocal issued, refused
            source = TokenSource(orgs[PCB].clients["client_secret_basic"], http)
            while not stop.is_set():
                try:
                    await source.token(PASTE_URL, "party:call", fresh=True)
                    issued += 1
                except Unauthenticated:  # e.g. a 500 from the registry
                    refused += 1

        loaders = [asyncio.create_task(load()) for _ in range(args.concurrency)]
        await asyncio.sleep(0.5)
        times, failed = [], 0
        deadline = time.perf_counter() + args.seconds / 2
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await http.get(
                    f"/v1/contracts/{cid}/check",
                    params={"party": "paste", "job_id": job},
                    headers=bearer(own),
                )
                times.append(time.perf_counter() - t0)
                failed += resp.status_code != 200
        finally:
            stop.set()
            await asyncio.gather(*loaders)
    out = {
        "token_clients": args.concurrency,
        "tokens_issued": issued,
        "tokens_refused": refused,
        "failed": failed,
    }
    out.update(summary_ms(times))
    print(f"  /check under client_secret_basic load: {json.dumps(out)}", flush=True)
    return out


async def prepare(registry: str, admin: str, work: Path) -> tuple[dict[str, Org], str, str]:
    async with httpx.AsyncClient(base_url=registry, timeout=60) as http:
        t0 = time.perf_counter()
        orgs = await onboard(http, registry, admin, work)
        cid, job = await contract_and_job(http, registry, orgs)
    took = time.perf_counter() - t0
    print(f"  onboarded 3 orgs, contract {cid} active, job {job} ({took:.1f} s)", flush=True)
    return orgs, cid, job


async def cheap_basic(
    registry: str, admin: str, orgs: dict[str, Org], work: Path, args: argparse.Namespace,
    cid: str, job: str,
) -> dict[str, Any]:  # fmt: skip
    """client_secret_basic again, with a client registered under the cheap argon2 settings
    (a hash carries its own parameters, so the old client would still cost the full price)."""
    async with httpx.AsyncClient(base_url=registry, timeout=60) as http:
        initial = await new_initial_token(http, admin, orgs[PCB].org_id)
        creds, _ = await register(
            http, f"{registry}/oauth/token", initial, "client_secret_basic", work, PCB
        )
    cheap = Org(orgs[PCB].org_id, {"client_secret_basic": creds})
    return await tokens({PCB: cheap}, args, cid, job, ("client_secret_basic",))


def backend_version(backend: str, url: str) -> str:
    if backend == "sqlite":
        return sqlite3.sqlite_version
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    print(f"{backend}:", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"splice-bench-registry-{backend}-") as tmp:
        work = Path(tmp)
        with database(backend, work, args.postgres) as (url, admin):
            reg = RegistryProcess(
                url, free_port(), work / "registry.log", PRODUCTION_ARGON2,
                Fernet.generate_key().decode(),
            )  # fmt: skip
            try:
                reg.start()
                orgs, cid, job = asyncio.run(prepare(reg.url, admin, work))
                issued = asyncio.run(tokens(orgs, args, cid, job, METHODS))
                checked = asyncio.run(checks(reg.url, orgs, cid, job, args, work))
                checked["registry_check_under_load"] = asyncio.run(
                    check_under_load(reg.url, orgs, cid, job, args)
                )
                reg.stop()
                reg.argon2 = CHEAP_ARGON2
                reg.start()
                cheap = asyncio.run(cheap_basic(reg.url, admin, orgs, work, args, cid, job))
            finally:
                reg.stop()
            version = backend_version(backend, url)
    basic, jwt = issued["client_secret_basic"], issued["private_key_jwt"]
    cheap_basic_loaded = cheap["client_secret_basic"]["loaded"]
    return {
        "backend": backend,
        "backend_version": version,
        "argon2": PRODUCTION_ARGON2,
        "token_per_second_client_secret_basic": basic["loaded"]["tokens_per_second"],
        "token_per_second_private_key_jwt": jwt["loaded"]["tokens_per_second"],
        "token_client_secret_basic_p50_ms": basic["loaded"]["p50_ms"],
        "token_client_secret_basic_p95_ms": basic["loaded"]["p95_ms"],
        "token_private_key_jwt_p50_ms": jwt["loaded"]["p50_ms"],
        "token_private_key_jwt_p95_ms": jwt["loaded"]["p95_ms"],
        "token_single_client_secret_basic_p50_ms": basic["single_client"]["p50_ms"],
        "token_single_private_key_jwt_p50_ms": jwt["single_client"]["p50_ms"],
        "token_per_second_client_secret_basic_cheap_argon2": cheap_basic_loaded[
            "tokens_per_second"
        ],
        "check_warm_p50_us": checked["warm"]["p50_us"],
        "check_warm_p95_us": checked["warm"]["p95_us"],
        "check_cold_ms": checked["cold_party_client_secret_basic"]["p50_ms"],
        "check_cold_private_key_jwt_ms": checked["cold_party_private_key_jwt"]["p50_ms"],
        "check_standing_expired_p50_ms": checked["standing_expired"]["p50_ms"],
        "check_standing_expired_p95_ms": checked["standing_expired"]["p95_ms"],
        "registry_check_p50_ms": checked["registry_check"]["p50_ms"],
        "registry_check_p95_ms": checked["registry_check"]["p95_ms"],
        "registry_check_under_basic_load_p50_ms": checked["registry_check_under_load"]["p50_ms"],
        "registry_check_under_basic_load_p95_ms": checked["registry_check_under_load"]["p95_ms"],
        "registry_check_under_basic_load_failed": checked["registry_check_under_load"]["failed"],
        "detail": {
            "tokens": issued,
            "tokens_cheap_argon2": {"argon2": CHEAP_ARGON2, **cheap},
            "checks": checked,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="seconds of a loaded token run (single client: half)")  # fmt: skip
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=5000,
                        help="cap on the requests of one token run")  # fmt: skip
    parser.add_argument("--warm", type=int, default=3000, help="warm-path authorizations")
    parser.add_argument("--cold", type=int, default=5, help="cold authorizations per method")
    parser.add_argument("--registry-checks", type=int, default=300,
                        help="raw /check round trips (and cache-expired checks)")  # fmt: skip
    parser.add_argument("--postgres", default=os.environ.get(
        "SPLICE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="maintenance database URL (splice_bench_<hex> is created, then dropped)")  # fmt: skip
    args = parser.parse_args()
    started = time.perf_counter()
    argon2 = {
        "production_verify_ms": argon2_verify_ms(PRODUCTION_ARGON2),
        "cheap_verify_ms": argon2_verify_ms(CHEAP_ARGON2),
    }
    print(f"argon2id verify in-process: {argon2}", flush=True)
    results = [run_backend(backend, args) for backend in args.backends]
    command = [
        "python benchmarks/registry.py", f"--out {args.out}",
        f"--backends {' '.join(args.backends)}", f"--seconds {args.seconds:g}",
        f"--concurrency {args.concurrency}", f"--max-requests {args.max_requests}",
        f"--warm {args.warm}", f"--cold {args.cold}", f"--registry-checks {args.registry_checks}",
    ]  # fmt: skip
    doc = {
        "benchmark": "registry",
        "command": " ".join(command),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": (
            "one registry process (splice registry serve: uvicorn, one worker) on loopback; "
            "clients in the benchmark process; production argon2 unless noted"
        ),
        "argon2": {"production": PRODUCTION_ARGON2, "cheap": CHEAP_ARGON2, **argon2},
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out} ({doc['total_seconds']} s)")


if __name__ == "__main__":
    main()
