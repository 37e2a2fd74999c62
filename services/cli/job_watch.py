"""``splice job list|status|logs|stop``: following jobs at the registry.

What the registry records about a job is what every party sees: its status and progress, one
line per finished epoch (the label party reports it), and for a failed job the reason and the
party at fault; a stopped job carries who stopped it and why.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from services.cli.connect import JsonOpt, ProfileOpt, console, print_json, print_table, profile, run
from services.cli.connect import registry as registry_client
from services.cli.job_cmd import job_app, show_job

if TYPE_CHECKING:
    from services.protocol.registry_contracts import JobOut

JobArg = Annotated[str, typer.Argument(help="The job's id.")]
FINAL = frozenset({"finished", "failed", "cancelled"})


def _at(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%d %H:%M:%S")


@job_app.command("list")
def list_jobs(
    contract: Annotated[str | None, typer.Option(help="Only this contract's jobs.")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only jobs in this status (e.g. training, failed).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Jobs of the contracts your organisation owns or is a party to (operators: all), newest
    first."""

    async def go() -> list[JobOut]:
        async with registry_client(profile(profile_name), "any") as reg:
            return await reg.jobs(contract, status, limit)

    found = run(go())
    if json_out:
        print_json(found)
        return
    id_col = Column("id", no_wrap=True, min_width=36)
    table = Table(id_col, "contract", "status", "progress", "epochs", "created", "reason")
    table.title = "jobs"
    for j in found:
        reason = f"{j.failed_party}: {j.error}" if j.failed_party else (j.error or "")
        table.add_row(
            j.id,
            j.contract_id,
            j.status,
            f"{100 * j.progress:.0f}%",
            str(len(j.history)),
            _at(j.created_at),
            escape(reason[:80]),
        )
    print_table(table)


@job_app.command("status")
def status(job_id: JobArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """A job: status, progress, latest metrics, per-epoch history, and for a failed job the
    reason and the party at fault."""

    async def go() -> JobOut:
        async with registry_client(profile(profile_name), "any") as reg:
            return await reg.job(job_id)

    job = run(go())
    if json_out:
        print_json(job)
    else:
        show_job(job)


def _lines(job: JobOut, shown: int, first: bool) -> list[str]:
    """What happened to ``job`` after its first ``shown`` epochs, one line each."""
    out: list[str] = []
    if first:
        out.append(f"{_at(job.created_at)} created by {job.created_by}")
    for e in job.history[shown:]:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in sorted(e.validation.items()))
        out.append(
            f"epoch {e.epoch + 1}: train loss {e.train_loss:.4f}; {metrics} ({e.seconds:.1f} s)"
        )
    return out


def _ending(job: JobOut) -> str:
    line = f"{_at(job.finished_at or job.updated_at)} {job.status}"
    if job.failed_party:
        line += f" (party at fault: {job.failed_party})"
    if job.error:
        line += f": {job.error}"
    return line


@job_app.command("logs")
def logs(
    job_id: JobArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Wait for more.")] = False,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between polls.")] = 2.0,
    profile_name: ProfileOpt = None,
) -> None:
    """A job's record at the registry as lines: created, each finished epoch, how it ended
    (the reason and the party at fault). With --follow, until it ends."""

    async def go() -> JobOut:
        async with registry_client(profile(profile_name), "any") as reg:
            job, shown, first = await reg.job(job_id), 0, True
            while True:
                for line in _lines(job, shown, first):
                    console.print(line, highlight=False, markup=False)
                shown, first = len(job.history), False
                if job.status in FINAL or not follow:
                    return job
                await asyncio.sleep(interval)
                job = await reg.job(job_id)

    job = run(go())
    if job.status in FINAL:
        console.print(_ending(job), highlight=False, markup=False)
    else:
        console.print(f"{job.status}, {100 * job.progress:.0f}%", highlight=False)


@job_app.command("stop")
def stop(
    job_id: JobArg,
    reason: Annotated[str, typer.Option(help="Why (kept with the job and in the audit log).")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Stop a running job (its label party's organisation, the contract's owner, or an
    operator): cancelled at the registry; the label party stops at its next report."""

    async def go() -> JobOut:
        async with registry_client(profile(profile_name), "any") as reg:
            return await reg.cancel_job(job_id, reason)

    job = run(go())
    if json_out:
        print_json(job)
    else:
        console.print(f"job {job.id} is {job.status}: {escape(job.error or '')}")
