"""The CLI reaches every step (issue 19), against a real registry process: jobs listed, followed
epoch by epoch, failed with the reason and the party at fault, stopped; model versions deployed
and rolled back; a contract amended; the audit log listed and verified."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.cli.governed import ALL_SCOPES, Governance, Org, onboard, start_registry
from services.cli.main import app
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.registry_client import RegistryClient
from tests.registry.contract_util import OWNER, PASTE, PCB, as_yaml, document

pytestmark = pytest.mark.e2e
KINDS = {OWNER: "oem", PCB: "manufacturer", PASTE: "supplier"}
ZERO = "0" * 64
ADMIN = "admin"
Governed = tuple[Governance, dict[str, str]]


@asynccontextmanager
async def _as(gov: Governance, org: str) -> AsyncIterator[RegistryClient]:
    o = gov.orgs[org]
    async with httpx.AsyncClient() as http:
        creds = ClientCredentials(f"{gov.url}/oauth/token", o.client_id, o.secret)
        auth = BearerAuth(TokenSource(creds, http), gov.url, ALL_SCOPES)
        async with RegistryClient(gov.url, auth=auth) as client:
            yield client


async def _epochs(label: RegistryClient, job_id: str, n: int) -> None:
    for e in range(n):
        epoch = {"epoch": e, "train_loss": 0.6 - e / 10, "validation": {"auc": 0.7 + e / 100}}
        await label.report_progress(job_id, status="training", epoch={**epoch, "seconds": 2.0})


async def _trained(gov: Governance) -> str:
    """A job that trains two epochs and records a model version; its id."""
    async with _as(gov, PCB) as label:
        job = await label.create_job(gov.contract_id)
        await _epochs(label, job.id, 2)
        await label.report_progress(job.id, status="finished")
        await label.record_model_version(
            job.id,
            {"auc": 0.72},
            artifact_digests={"top": ZERO},
            spec_digest=job.spec_digest,
            segment_digests={"pcb": ZERO, "paste": ZERO},
        )
        return job.id


async def _set_up(gov: Governance, admin_token: str) -> dict[str, str]:
    await onboard(gov, admin_token, KINDS)
    async with _as(gov, OWNER) as oem:
        created = await oem.create_contract_yaml(as_yaml(document()))
        digest = (await oem.propose(created.id)).versions[-1].digest
    gov.contract_id = created.id
    for party, org in (("pcb", PCB), ("paste", PASTE)):
        async with _as(gov, org) as signer:
            await signer.sign(gov.contract_id, party, digest)
    jobs = {"first": await _trained(gov), "second": await _trained(gov)}
    async with _as(gov, PCB) as label:
        failed = await label.create_job(gov.contract_id)
        await _epochs(label, failed.id, 3)
        await label.report_progress(
            failed.id,
            status="failed",
            error="paste answered 409 data_changed: its table changed since alignment",
            failed_party="paste",
        )
        jobs["failed"] = failed.id
        jobs["running"] = (await label.create_job(gov.contract_id)).id
    return jobs


@pytest.fixture(scope="module")
def governed(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Governance, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("jobs-cli")
    # cheap secret hashing (the same hash format): every CLI call below fetches a token
    cheap = {"TIME_COST": "1", "MEMORY_KIB": "1024", "PARALLELISM": "1"}
    with pytest.MonkeyPatch.context() as env:
        for name, value in cheap.items():
            env.setenv(f"SPLICE_REGISTRY_ARGON2_{name}", value)
        gov, admin_token = start_registry(tmp / "registry")
    try:
        jobs = asyncio.run(_set_up(gov, admin_token))
        gov.orgs[ADMIN] = Org(ADMIN, "", "", admin_token)  # the operator: its token as secret
        yield gov, jobs
    finally:
        gov.stop()


def _cli(gov: Governance, who: str, *args: str) -> Any:
    env: dict[str, str | None] = {
        "SPLICE_PROFILE_FILE": "/nonexistent/profiles.toml",
        "SPLICE_REGISTRY_URL": gov.url,
        "SPLICE_PROFILE": None,
        "SPLICE_ISSUER": None,
        "SPLICE_CLIENT_KEY_FILE": None,
        "SPLICE_ADMIN_TOKEN": None,
        "SPLICE_CLIENT_ID": None,
        "SPLICE_CLIENT_SECRET": None,
    }
    o = gov.orgs[who]
    if who == ADMIN:
        env["SPLICE_ADMIN_TOKEN"] = o.secret
    else:
        env["SPLICE_CLIENT_ID"], env["SPLICE_CLIENT_SECRET"] = o.client_id, o.secret
    return CliRunner().invoke(app, list(args), env=env)


def test_jobs_are_listed_followed_and_stopped(
    governed: Governed,
) -> None:
    gov, jobs = governed
    done = _cli(gov, OWNER, "job", "list", "--contract", gov.contract_id, "--json")
    assert done.exit_code == 0, done.output
    listed = {j["id"]: j for j in json.loads(done.output)}
    assert set(listed) == set(jobs.values())
    assert listed[jobs["failed"]]["failed_party"] == "paste"
    assert [e["epoch"] for e in listed[jobs["first"]]["history"]] == [0, 1]

    done = _cli(gov, PASTE, "job", "status", jobs["failed"])
    assert done.exit_code == 0, done.output
    assert "party at fault" in done.output and "paste" in done.output
    assert "data_changed" in done.output and "epochs" in done.output

    done = _cli(gov, OWNER, "job", "logs", jobs["failed"])
    lines = done.output.strip().splitlines()
    assert done.exit_code == 0 and "created by client:" in lines[0], done.output
    assert [ln.split(":")[0] for ln in lines[1:4]] == ["epoch 1", "epoch 2", "epoch 3"]
    assert "failed (party at fault: paste): paste answered 409" in lines[-1]

    # a feature party may not stop the job; the owner may, and its reason is kept
    done = _cli(gov, PASTE, "job", "stop", jobs["running"], "--reason", "not mine")
    assert done.exit_code == 2 and "error:" in done.output
    done = _cli(gov, OWNER, "job", "stop", jobs["running"], "--reason", "wrong feature set")
    assert done.exit_code == 0 and "cancelled: wrong feature set" in done.output, done.output
    done = _cli(gov, OWNER, "job", "list", "--status", "cancelled", "--json")
    assert [j["id"] for j in json.loads(done.output)] == [jobs["running"]]


def test_models_are_deployed_and_rolled_back(
    governed: Governed,
) -> None:
    gov, _ = governed
    for version in ("1", "2"):
        done = _cli(gov, PCB, "model", "deploy", gov.contract_id, version, "--approver", "pcb")
        assert done.exit_code == 0 and "still to approve: oem" in done.output, done.output
        done = _cli(gov, OWNER, "model", "deploy", gov.contract_id, version, "--approver", "oem")
        assert done.exit_code == 0 and "is deployed" in done.output, done.output
    done = _cli(gov, OWNER, "model", "rollback", gov.contract_id)
    assert done.exit_code == 0 and "model version 1" in done.output, done.output
    done = _cli(gov, OWNER, "model", "list", gov.contract_id, "--json")
    assert [m["status"] for m in json.loads(done.output)] == ["deployed", "retired"]
    # rolling back again brings back the version deployed before version 1 went live again
    done = _cli(gov, OWNER, "model", "rollback", gov.contract_id)
    assert done.exit_code == 0 and "model version 2" in done.output, done.output
    done = _cli(gov, PASTE, "model", "rollback", gov.contract_id)  # not an approver
    assert done.exit_code == 2 and "error:" in done.output


def test_a_contract_is_amended_and_the_audit_log_verifies(
    governed: Governed, tmp_path: Path
) -> None:
    gov, jobs = governed
    amended = document(title="PCB paste quality, amended")
    path = tmp_path / "amended.yaml"
    path.write_bytes(as_yaml(amended))
    done = _cli(gov, OWNER, "contract", "amend", gov.contract_id, str(path))
    assert done.exit_code == 0 and "amendment drafted as version 2" in done.output, done.output
    assert "version 1 stays in force" in done.output
    done = _cli(gov, PASTE, "contract", "amend", gov.contract_id, str(path))
    assert done.exit_code == 2  # only the owner amends

    subject = f"job:{jobs['failed']}"
    done = _cli(gov, ADMIN, "audit", "list", "--subject", subject, "--limit", "1000", "--json")
    assert done.exit_code == 0, done.output
    changes = [e["payload"] for e in json.loads(done.output)]
    assert changes[-1]["to"] == "failed" and changes[-1]["failed_party"] == "paste"
    done = _cli(gov, ADMIN, "audit", "verify", "--json")
    assert done.exit_code == 0 and json.loads(done.output)["ok"] is True, done.output
    head = json.loads(done.output)["head_hash"]
    assert _cli(gov, ADMIN, "audit", "verify", "--head", head).exit_code == 0
    done = _cli(gov, ADMIN, "audit", "verify", "--head", "f" * 64)
    assert done.exit_code == 2 and "cut off" in done.output
    assert _cli(gov, PASTE, "audit", "list").exit_code == 2  # operators only
