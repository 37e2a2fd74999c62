"""``splice registry migrate|bootstrap|serve`` as an operator runs them (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    finally:
        proc.terminate()
        proc.wait(timeout=15)
