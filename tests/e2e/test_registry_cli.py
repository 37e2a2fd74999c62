"""``splice registry migrate|bootstrap|serve`` as an operator runs them (real processes).

Found in a penetration test: ``splice registry serve --port 18555`` without a public URL
published RFC 8414 metadata naming port 8200, so a standard OAuth2 client that follows
discovery called a port nobody listened on. The CLI's ``--host`` and ``--port`` now make the
default issuer; only a wildcard bind without a public URL refuses to start.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest

from services.cli.cluster import free_port

pytestmark = pytest.mark.e2e


def splice(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "registry", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )


def test_operator_flow_on_sqlite(tmp_path: Path) -> None:
    refused = splice("serve", "--port", str(free_port()), cwd=tmp_path)
    assert refused.returncode == 2
    assert "not migrated" in refused.stdout and "splice registry migrate" in refused.stdout
    migrated = splice("migrate", cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / ".splice" / "registry.db").is_file()
    first = splice("bootstrap", "--name", "ops", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1]
    assert token.startswith("spl_adm_")
    second = splice("bootstrap", cwd=tmp_path)
    assert second.returncode == 2 and "already bootstrapped" in second.stdout
    # the token is stored hashed: it never appears in the database file
    assert token.encode() not in (tmp_path / ".splice" / "registry.db").read_bytes()

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "registry", "serve", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                resp = httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "registry did not start"
                time.sleep(0.2)
        assert resp.status_code == 200
        invite = httpx.post(
            f"http://127.0.0.1:{port}/v1/invitations",
            json={},
            headers={"authorization": f"Bearer {token}"},
        )
        assert invite.status_code in (200, 201), invite.text
        denied = httpx.post(f"http://127.0.0.1:{port}/v1/invitations", json={})
        assert denied.status_code == 401 and denied.json()["code"] == "unauthenticated"
        _discovery_names_the_port(f"http://127.0.0.1:{port}", token, invite.json()["code"])
    finally:
        proc.terminate()
        proc.wait(timeout=15)

    wildcard = splice("serve", "--host", "0.0.0.0", "--port", str(free_port()), cwd=tmp_path)
    assert wildcard.returncode == 2
    assert "SPLICE_REGISTRY_PUBLIC_URL" in wildcard.stdout and "0.0.0.0" in wildcard.stdout


def _discovery_names_the_port(base: str, admin_token: str, code: str) -> None:
    """RFC 8414 metadata names the port served; a standard OAuth2 client (Authlib's, configured
    with the metadata URL only) gets a token by discovery alone."""
    metadata = httpx.get(f"{base}/.well-known/oauth-authorization-server").json()
    assert metadata["issuer"] == base
    assert metadata["token_endpoint"] == f"{base}/oauth/token"
    assert metadata["jwks_uri"] == f"{base}/.well-known/jwks.json"
    admin = {"authorization": f"Bearer {admin_token}"}
    applied = httpx.post(
        f"{base}/v1/organisations/applications",
        json={
            "name": "disco",
            "kind": "supplier",
            "contact_email": "a@b.example",
            "invitation_code": code,
        },
    )
    assert applied.status_code == 201, applied.text
    approved = httpx.post(f"{base}/v1/organisations/{applied.json()['id']}/approve", headers=admin)
    initial = {"authorization": f"Bearer {approved.json()['initial_access_token']}"}
    body = {"token_endpoint_auth_method": "client_secret_basic", "scope": "jobs:run"}
    client = httpx.post(f"{base}/v1/oauth/register", json=body, headers=initial).json()

    async def fetch() -> dict[str, object]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from authlib.integrations.starlette_client import OAuth

        oauth = OAuth()
        app = oauth.register(
            "registry",
            client_id=client["client_id"],
            client_secret=client["client_secret"],
            server_metadata_url=f"{base}/.well-known/oauth-authorization-server",
        )
        token: dict[str, object] = await app.fetch_access_token(
            grant_type="client_credentials", scope="jobs:run"
        )
        return token

    token = asyncio.run(fetch())
    assert token["token_type"] == "Bearer" and isinstance(token["access_token"], str)
    jobs = httpx.get(
        f"{base}/v1/contracts", headers={"authorization": f"Bearer {token['access_token']}"}
    )
    assert jobs.status_code == 200, jobs.text
