"""``splice finance export`` against a real registry process: a finance organisation exports the
month's revenue report as CSV, JSON and XLSX (the same rows), a party only its own rows; bad
options and a bad period exit 2 with a message and write nothing."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from services.cli.governed import ALL_SCOPES, Governance, onboard, start_registry
from services.cli.main import app
from services.protocol.oauth_client import BearerAuth, ClientCredentials, TokenSource
from services.protocol.registry_client import RegistryClient
from services.registry.api.revenue_formats import from_xlsx
from services.registry.db import make_engine
from services.registry.models import utcnow
from services.registry.models_usage import UsageEvent
from tests.registry.contract_util import OWNER, PASTE, PCB, as_yaml, document

pytestmark = pytest.mark.e2e
FINANCE = "ledger-finance"
KINDS = {OWNER: "oem", PCB: "manufacturer", PASTE: "supplier", FINANCE: "finance"}


@asynccontextmanager
async def _as(gov: Governance, org: str) -> AsyncIterator[RegistryClient]:
    """A registry client of ``org`` whose token client is closed afterwards."""
    o = gov.orgs[org]
    async with httpx.AsyncClient() as http:
        creds = ClientCredentials(f"{gov.url}/oauth/token", o.client_id, o.secret)
        auth = BearerAuth(TokenSource(creds, http), gov.url, ALL_SCOPES)
        async with RegistryClient(gov.url, auth=auth) as client:
            yield client


async def _set_up(gov: Governance, admin_token: str) -> None:
    await onboard(gov, admin_token, KINDS)
    async with _as(gov, OWNER) as oem:
        created = await oem.create_contract_yaml(as_yaml(document()))
        digest = (await oem.propose(created.id)).versions[-1].digest
    gov.contract_id = created.id
    for party, org in (("pcb", PCB), ("paste", PASTE)):
        async with _as(gov, org) as signer:
            await signer.sign(gov.contract_id, party, digest)
    async with _as(gov, PCB) as label:
        job = await label.create_job(gov.contract_id)
        gov.job_id = job.id
        await label.report_progress(gov.job_id, status="finished")
        await label.record_model_version(
            gov.job_id,
            {"auc": 0.8},
            artifact_digests={"top": "0" * 64},
            spec_digest=job.spec_digest,
            segment_digests={"pcb": "0" * 64, "paste": "0" * 64},
        )


def _events(url: str, contract_id: str) -> None:
    """Usage in November 2026 (and a little in December), straight into the registry's table."""
    rows = [
        (7, datetime(2026, 11, 3, 10, tzinfo=UTC)),
        (13, datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)),
        (100, datetime(2026, 12, 1, tzinfo=UTC)),
    ]
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(UsageEvent),
                [
                    {
                        "event_id": str(uuid.uuid4()),
                        "contract_id": contract_id,
                        "contract_version": 1,
                        "model_version": 1,
                        "caller_org_id": "buyer",
                        "count": n,
                        "occurred_at": at,
                        "received_at": utcnow(),
                        "reported_by": "test",
                    }
                    for n, at in rows
                ],
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def governed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Governance]:
    """A registry process with the example's organisations, a finance one, an active contract
    with model version 1, and usage."""
    tmp = tmp_path_factory.mktemp("finance")
    gov, admin_token = start_registry(tmp / "registry")
    try:
        asyncio.run(_set_up(gov, admin_token))
        # kind finance alone sees only its own contracts: the operator grants every contract's
        env = {"SPLICE_PROFILE_FILE": str(tmp / "none.toml"), "SPLICE_REGISTRY_URL": gov.url}
        done = CliRunner().invoke(
            app,
            ["org", "grant", gov.orgs[FINANCE].org_id, "reports:all-contracts"],
            env={**env, "SPLICE_ADMIN_TOKEN": admin_token, "SPLICE_PROFILE": None},
        )
        assert done.exit_code == 0 and "reports:all-contracts" in done.output, done.output
        _events(f"sqlite:///{tmp / 'registry' / 'registry.db'}", gov.contract_id)
        yield gov
    finally:
        gov.stop()


def _cli(gov: Governance, org: str | None, tmp: Path, *args: str) -> Any:
    env = {
        "SPLICE_PROFILE_FILE": str(tmp / "no-profiles.toml"),
        "SPLICE_REGISTRY_URL": gov.url,
        "SPLICE_PROFILE": None,
        "SPLICE_ADMIN_TOKEN": None,
        "SPLICE_ISSUER": None,
        "SPLICE_CLIENT_KEY_FILE": None,
        "SPLICE_CLIENT_ID": gov.orgs[org].client_id if org else None,
        "SPLICE_CLIENT_SECRET": gov.orgs[org].secret if org else None,
    }
    return CliRunner().invoke(app, ["finance", "export", *args], env=env)


def test_finance_exports_every_format(governed: Governance, tmp_path: Path) -> None:
    files = {fmt: tmp_path / f"november.{fmt}" for fmt in ("csv", "json", "xlsx")}
    for fmt, path in files.items():
        done = _cli(
            governed, FINANCE, tmp_path, "--period", "2026-11", "--format", fmt, "--out", str(path)
        )
        assert done.exit_code == 0, done.output
        assert f"written to {path}" in " ".join(done.output.split())
    rows = json.loads(files["json"].read_text())
    assert [(r["party_name"], r["predictions"], r["amount"]) for r in rows] == [
        ("pcb", 20, "0.50"),
        ("paste", 20, "0.35"),
        ("oem", 20, "0.15"),
        ("", 20, "1.00"),  # the totals row
    ]
    assert rows[-1]["row_type"] == "total" and rows[-1]["events"] == 2
    assert {r["gross_amount"] for r in rows} == {"1.00"}
    as_text = [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows]
    assert list(csv.DictReader(io.StringIO(files["csv"].read_text()))) == as_text
    assert from_xlsx(files["xlsx"].read_bytes()) == rows
    path = tmp_path / "december.json"
    done = _cli(
        governed,
        FINANCE,
        tmp_path,
        "--from",
        "2026-12-01T01:00:00+01:00",
        "--to",
        "2027-01-01",
        "--tz",
        "Europe/Berlin",
        "--format",
        "json",
        "--out",
        str(path),
    )
    assert done.exit_code == 0, done.output
    december = json.loads(path.read_text())
    assert {r["predictions"] for r in december} == {100} and len(december) == 4
    assert december[0]["period_end"] == "2026-12-31T23:00:00Z"


def test_the_owner_exports_the_events_it_is_billed_for(
    governed: Governance, tmp_path: Path
) -> None:
    out = tmp_path / "events.csv"
    args = ["--period", "2026-11", "--out", str(out), "--payer", "buyer"]
    env = {
        "SPLICE_PROFILE_FILE": str(tmp_path / "none.toml"),
        "SPLICE_REGISTRY_URL": governed.url,
        "SPLICE_PROFILE": None,
        "SPLICE_ADMIN_TOKEN": None,
        "SPLICE_CLIENT_ID": governed.orgs[OWNER].client_id,
        "SPLICE_CLIENT_SECRET": governed.orgs[OWNER].secret,
    }
    done = CliRunner().invoke(app, ["finance", "events", *args], env=env)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["row_type"], r["predictions"], r["amount"]) for r in rows] == [
        ("line", "7", "0.35"),
        ("line", "13", "0.65"),
        ("total", "20", "1.00"),  # the revenue report's gross for this payer and month
    ]


def test_a_party_exports_its_own_rows(governed: Governance, tmp_path: Path) -> None:
    out = tmp_path / "pcb.json"
    done = _cli(
        governed, PCB, tmp_path, "--period", "2026-11", "--format", "json", "--out", str(out)
    )
    assert done.exit_code == 0, done.output
    rows = json.loads(out.read_text())
    assert [(r["party_name"], r["party_org_id"]) for r in rows] == [
        ("pcb", governed.orgs[PCB].org_id),
        ("", ""),  # the totals row: its own amount, the gross of the groups it is paid from
    ]
    assert (rows[-1]["amount"], rows[-1]["gross_amount"]) == ("0.50", "1.00")


@pytest.mark.parametrize(
    ("org", "args", "message"),
    [
        (FINANCE, ["--period", "2026-11", "--from", "2026-11-01"], "not both"),
        (FINANCE, ["--from", "2026-11-01"], "--from and --to"),
        (FINANCE, ["--period", "2026-11", "--format", "pdf"], "--format must be"),
        (FINANCE, ["--period", "2026-13"], "names no month"),
        (FINANCE, ["--period", "2026-11", "--tz", "Mars/Base"], "unknown time zone"),
        (FINANCE, ["--from", "2026-12-01", "--to", "2026-11-01"], "must be before"),
        (None, ["--period", "2026-11"], "no registry credentials"),
    ],
)
def test_bad_options_write_nothing(
    governed: Governance, tmp_path: Path, org: str | None, args: list[str], message: str
) -> None:
    out = tmp_path / "report.csv"
    done = _cli(governed, org, tmp_path, *args, "--out", str(out))
    assert done.exit_code == 2, done.output
    assert message in " ".join(done.output.split())
    assert "Traceback" not in done.output
    assert not out.exists() and list(tmp_path.iterdir()) == []
