"""``splice job ...``: training jobs under active contracts."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.connect import (
    JsonOpt,
    ProfileOpt,
    console,
    fail,
    print_json,
    print_table,
    profile,
    registry,
    run,
)

job_app = typer.Typer(help="Training jobs under active contracts.", no_args_is_help=True)
Json = dict[str, Any]


def _fingerprints(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        party, sep, fingerprint = value.partition("=")
        if not sep or not party or not fingerprint:
            raise fail(f"--key-fingerprint takes PARTY=FINGERPRINT, not {value!r}")
        if party in out:
            raise fail(f"--key-fingerprint names party {party!r} twice")
        out[party] = fingerprint
    return out


def _show(job: Json) -> None:
    table = Table(show_header=False, title=f"job {job['id']}")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("contract", f"{job['contract_id']} (version {job['contract_version']})"),
        ("label party", f"{job['label_party']} ({job['label_org_id']})"),
        ("status", job["status"]),
        ("progress", f"{100 * float(job['progress']):.0f}%"),
        ("created", f"{job['created_at'][:19]} by {job['created_by']}"),
        ("updated", job["updated_at"][:19]),
        ("finished", (job.get("finished_at") or "-")[:19]),
    ]
    rows += [(f"metric {k}", str(v)) for k, v in sorted(job.get("metrics", {}).items())]
    rows += [(f"key {k}", str(v)) for k, v in sorted(job.get("key_fingerprints", {}).items())]
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)


@job_app.command("create")
def create(
    contract: Annotated[str, typer.Option("--contract", help="The active contract's id.")],
    key_fingerprint: Annotated[
        list[str] | None,
        typer.Option(help="PARTY=FINGERPRINT of a party's public key (repeat for more)."),
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a training job under an active contract (its label party, scope jobs:run)."""
    fingerprints = _fingerprints(key_fingerprint or [])

    async def go() -> Json:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.create_job(contract, fingerprints)

    job = run(go())
    if json_out:
        print_json(job)
        return
    console.print(f"job created under contract {job['contract_id']} (status {job['status']}):")
    print(job["id"])


@job_app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A job: contract, status, progress, metrics (owner, parties, operators)."""

    async def go() -> Json:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.job(job_id)

    job = run(go())
    if json_out:
        print_json(job)
    else:
        _show(job)
