"""``splice org|contract|job`` as companies run them, against a real registry process.

The operator invites three organisations; each applies, is approved and registers an OAuth client
(the PCB maker with ``private_key_jwt``), saving a profile. The OEM creates and proposes the
example contract, both data parties sign, and the PCB maker opens a training job. Bad input
(a malformed contract, no credentials, the wrong party) exits 2 with a clear message.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.cluster import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contracts" / "examples" / "pcb-paste-quality.yaml"


@dataclass
class Cli:
    """Runs ``python -m services.cli.main`` with a hermetic environment."""

    env: dict[str, str]
    cwd: Path
    outputs: list[str] = field(default_factory=list)

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "services.cli.main", *args],
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**self.env, **env},
        )
        self.outputs.append(done.stdout + done.stderr)
        assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
        return done

    def ok(self, *args: str, **env: str) -> str:
        done = self(*args, **env)
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    def json(self, *args: str, **env: str) -> Any:
        return json.loads(self.ok(*args, "--json", **env))


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLICE_")}
    env.update(
        HOME=str(tmp / "home"),
        PYTHONPATH=str(ROOT),
        COLUMNS="200",
        SPLICE_PROFILE_FILE=str(tmp / "home" / "profiles.toml"),
    )
    return env


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cli, str]]:
    """A migrated, bootstrapped SQLite registry being served; the CLI and the admin token."""
    tmp = tmp_path_factory.mktemp("registry-cli")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server_env = {
        **_clean_env(tmp),
        "SPLICE_REGISTRY_DATABASE_URL": f"sqlite:///{tmp / 'registry.db'}",
        "SPLICE_REGISTRY_PUBLIC_URL": base,
        "SPLICE_REGISTRY_ARGON2_TIME_COST": "1",
        "SPLICE_REGISTRY_ARGON2_MEMORY_KIB": "8192",
    }
    ops = Cli(server_env, tmp)
    ops.ok("registry", "migrate")
    token = ops.ok("registry", "bootstrap").strip().splitlines()[-1]
    log = (tmp / "registry.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "registry", "serve", "--port", str(port)],
        cwd=tmp,
        env=server_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "registry.log").read_text()
            try:
                if httpx.get(f"{base}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "registry did not start"
            time.sleep(0.1)
        yield Cli({**_clean_env(tmp), "SPLICE_REGISTRY_URL": base}, tmp), token
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        log.close()
    assert "Traceback" not in (tmp / "registry.log").read_text()


def test_onboarding_contract_and_job(registry: tuple[Cli, str], tmp_path: Path) -> None:
    cli, admin_token = registry
    profiles = Path(cli.env["SPLICE_PROFILE_FILE"])
    admin = {"SPLICE_ADMIN_TOKEN": admin_token}

    # no credentials at all: a clear message, exit 2
    bare = cli("contract", "list")
    assert bare.returncode == 2
    assert "no registry credentials" in bare.stderr and "SPLICE_CLIENT_ID" in bare.stderr

    orgs = {
        "nordwerk-automotive": ("oem", "contracts:write", False),
        "lumen-pcb": ("manufacturer", "contracts:sign jobs:run", True),
        "solvia-paste": ("supplier", "contracts:sign", False),
    }
    for name, (kind, scope, jwt_key) in orgs.items():
        code = cli.json("org", "invite", "--note", name, **admin)["code"]
        applied = cli.json(
            "org", "apply", "--name", name, "--kind", kind,
            "--contact-email", f"ops@{name}.example", "--invitation-code", code,
        )  # fmt: skip
        assert applied["status"] == "pending"
        approved = cli.ok("org", "approve", applied["id"], **admin)
        initial = approved.strip().splitlines()[-2]  # the token, alone on its line
        assert initial.startswith("spl_") and " " not in initial, approved
        register = ["org", "register-client", "--scope", scope, "--save-profile", name]
        if jwt_key:
            register += ["--key-file", str(tmp_path / f"{name}.jwk.json")]
        out = cli.ok(*register, SPLICE_INITIAL_TOKEN=initial)
        assert "saved as profile" in out and "client secret" not in out
    assert stat.S_IMODE(profiles.stat().st_mode) == 0o600
    key_file = tmp_path / "lumen-pcb.jwk.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert json.loads(key_file.read_text())["kty"] == "EC"
    saved = profiles.read_text()
    assert "client_key_file" in saved and saved.count("client_secret") == 2
    secrets = [line.split('"')[1] for line in saved.splitlines() if "client_secret" in line]
    listed = cli.json("org", "list", **admin)
    assert {o["name"]: o["status"] for o in listed} == dict.fromkeys(orgs, "approved")

    # a malformed contract is refused locally, with the field's path
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("role: feature", "role: supplier"))
    refused = cli("contract", "create", str(bad), "--profile", "nordwerk-automotive")
    assert refused.returncode == 2
    assert "parties.1.role" in refused.stderr and "invalid contract" in refused.stderr

    oem = ("--profile", "nordwerk-automotive")
    created = cli.json("contract", "create", str(EXAMPLE), *oem)
    contract_id, digest = created["id"], created["versions"][-1]["digest"]
    assert created["state"] == "draft"
    proposed = cli.ok("contract", "propose", contract_id, *oem)
    assert digest in proposed and "pcb (lumen-pcb)" in proposed

    wrong = cli("contract", "sign", contract_id, "--party", "pcb", "--profile", "solvia-paste")
    assert wrong.returncode == 2
    assert "only the organisation of party 'pcb'" in wrong.stderr

    signed = cli.ok("contract", "sign", contract_id, "--party", "pcb", "--profile", "lumen-pcb")
    assert digest in signed and "Solder-paste print quality" in signed
    assert "waiting for: paste" in signed
    signed = cli.ok(
        "contract", "sign", contract_id, "--party", "paste", "--digest", digest,
        "--profile", "solvia-paste",
    )  # fmt: skip
    assert "The contract is active" in signed

    shown = cli.json("contract", "show", contract_id, "--profile", "solvia-paste")
    assert shown["state"] == "active" and shown["active_version"] == 1
    assert {s["party"] for s in shown["versions"][0]["signatures"]} == {"pcb", "paste"}
    table = cli.ok("contract", "show", contract_id, *oem)
    assert "active" in table and "accept" in table and "lumen-pcb" in table

    job = cli.json("job", "create", "--contract", contract_id, "--profile", "lumen-pcb")
    assert job["status"] == "created" and job["label_party"] == "pcb"
    again = cli.json("job", "show", job["id"], *oem)
    assert again["contract_id"] == contract_id

    # client secrets went to the profile file only; the admin token was never printed
    printed = "".join(cli.outputs)
    assert not [s for s in [admin_token, *secrets] if s in printed]
