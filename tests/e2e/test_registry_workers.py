"""The registry served by 4 uvicorn workers on PostgreSQL: nothing process-local breaks.

Concurrent token requests all succeed; one private_key_jwt assertion replayed across many
concurrent requests (so across workers) is accepted exactly once; after a signing-key rotation,
tokens issued before and after it, by any worker, verify against the published key set; and a
client's token rate limit holds across workers (exactly ``limit`` of a burst succeed).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from psycopg import sql

from services.cli.cluster import free_port
from services.registry import migrate
from services.registry.db import make_engine, session_factory
from services.registry.store.admins import bootstrap_admin
from tests.registry.conftest import (
    KEY_ENCRYPTION_KEY,
    _ensure_postgres,
    _pg_connect,
    pg_maintenance,
)
from tests.registry.oauth_util import Registered, key_client, secret_client

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
LIMIT = 15  # token requests per client per window, for the rate-limited client
WINDOW = 60


@pytest.fixture
def database() -> Iterator[str]:
    _ensure_postgres()
    name = f"splice_workers_{secrets.token_hex(6)}"
    with _pg_connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{pg_maintenance().rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        with _pg_connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def served(database: str, tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """The registry with 4 workers: its base URL, the operator admin token, its pid."""
    migrate.upgrade(database)
    engine = make_engine(database)
    with session_factory(engine)() as session:
        admin = bootstrap_admin(session).token
        session.commit()
    engine.dispose()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
    env.update(
        PYTHONPATH=str(ROOT),
        SPLICE_REGISTRY_PUBLIC_URL=base,
        SPLICE_REGISTRY_KEY_ENCRYPTION_KEY=KEY_ENCRYPTION_KEY,
        SPLICE_REGISTRY_ARGON2_TIME_COST="1",
        SPLICE_REGISTRY_ARGON2_MEMORY_KIB="1024",
        SPLICE_REGISTRY_ARGON2_PARALLELISM="1",
        SPLICE_REGISTRY_RATE_WINDOW_SECONDS=str(WINDOW),
        SPLICE_REGISTRY_TOKEN_RATE_PER_CLIENT=str(LIMIT),
        SPLICE_REGISTRY_TOKEN_RATE_PER_IP="100000",
        SPLICE_REGISTRY_API_RATE_PER_CLIENT="100000",
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "registry", "serve"]
        + ["--port", str(port), "--workers", str(WORKERS), "--database-url", database],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_until_up(base, proc, tmp_path / "registry.log")
        yield base, admin, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{base}/.well-known/jwks.json", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the registry did not come up: {log.read_text()}")


def _workers(pid: int) -> int:
    """Worker processes under the serving process (its children's children included)."""
    children = 0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children += 1
    return children


def _assertion(who: Registered, base: str, jti: str) -> str:
    assert who.key is not None
    now = int(time.time())
    claims = {
        "iss": who.client_id,
        "sub": who.client_id,
        "aud": f"{base}/oauth/token",
        "jti": jti,
        "iat": now,
        "exp": now + 120,
    }
    return jwt.encode({"alg": "ES256", "kid": who.key.kid}, claims, who.key)


async def _tokens(c: httpx.AsyncClient, who: Registered, n: int) -> list[httpx.Response]:
    assert who.secret is not None
    auth = (who.client_id, who.secret)
    form = {"grant_type": "client_credentials"}
    return await asyncio.gather(*(c.post("/oauth/token", data=form, auth=auth) for _ in range(n)))


def _at_window_start() -> None:
    """Wait for a fresh rate window if the current one is about to end."""
    left = WINDOW - time.time() % WINDOW
    if left < 10:
        time.sleep(left + 0.1)


async def test_four_workers_share_keys_replays_and_limits(served: tuple[str, str, int]) -> None:
    base, admin, pid = served
    assert _workers(pid) >= WORKERS
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as c:
        headers = {"Authorization": f"Bearer {admin}"}
        fast = await secret_client(c, admin, "fast-co")
        signer = await key_client(c, admin, "signer-co")

        # Concurrent token requests (spread over the workers) all succeed.
        before = await _tokens(c, fast, LIMIT)
        assert [r.status_code for r in before] == [200] * LIMIT, before[0].text

        # One assertion, replayed concurrently: accepted exactly once.
        assertion = _assertion(signer, base, jti=secrets.token_hex(8))
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        }
        replays = await asyncio.gather(*(c.post("/oauth/token", data=form) for _ in range(LIMIT)))
        statuses = sorted(r.status_code for r in replays)
        assert statuses == [200] + [401] * (LIMIT - 1), statuses

        # Rotate the signing keys; tokens from before and after verify against the JWKS.
        r = await c.post("/v1/oauth/signing-keys/rotate", headers=headers)
        assert r.status_code == 200, r.text
        slow = await secret_client(c, admin, "slow-co")
        after = await _tokens(c, slow, LIMIT)
        assert [r.status_code for r in after] == [200] * LIMIT, after[0].text
        jwks = (await c.get("/.well-known/jwks.json")).json()
        keys = KeySet.import_key_set(jwks)
        kids = set()
        for response in [*before, *after]:
            token = jwt.decode(response.json()["access_token"], keys, algorithms=["ES256"])
            assert token.claims["iss"] == base
            kids.add(token.header["kid"])
        assert len(kids) == 2  # one key before the rotation, its successor after

        # The per-client token limit holds across workers: exactly LIMIT of a burst pass.
        limited = await secret_client(c, admin, "burst-co")
        _at_window_start()
        burst = await _tokens(c, limited, 3 * LIMIT)
        codes = [r.status_code for r in burst]
        assert codes.count(200) == LIMIT and codes.count(429) == 2 * LIMIT, codes
        refused = next(r for r in burst if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["code"] == "rate_limited"
