"""``splice job ...``: training jobs under active contracts.

``splice job start CONTRACT --label-url URL`` trains the job the contract fixes, with no spec
written by hand: the label party fetches the contract from the registry and derives the job
(task, label, columns, model, protection, training settings). The profile must be the label
party's organisation; its token for the label party has scope ``jobs:run`` and the label
party's URL as audience (``--audience`` when it differs from ``--label-url``).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from services.cli.connect import (
    JsonOpt,
    ProfileOpt,
    client_credentials,
    console,
    fail,
    print_json,
    print_table,
    profile,
    registry,
    require,
    run,
)
from services.cli.profile import Loaded

if TYPE_CHECKING:
    from services.protocol.messages import TrainingStatus
    from services.protocol.registry_contracts import JobOut

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


def _at(when: datetime | None) -> str:
    return "-" if when is None else when.strftime("%Y-%m-%dT%H:%M:%S")


def show_job(job: JobOut) -> None:
    """A job as a table, then its epoch history and how it ended."""
    table = Table(show_header=False, title=f"job {job.id}")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("contract", f"{job.contract_id} (version {job.contract_version})"),
        ("label party", f"{job.label_party} ({job.label_org_id})"),
        ("status", job.status),
        ("progress", f"{100 * job.progress:.0f}%"),
        ("created", f"{_at(job.created_at)} by {job.created_by}"),
        ("updated", _at(job.updated_at)),
        ("finished", _at(job.finished_at)),
    ]
    rows.append(("spec digest", job.spec_digest or "-"))
    rows += [(f"metric {k}", str(v)) for k, v in sorted(job.metrics.items())]
    rows += [(f"key {k}", str(v)) for k, v in sorted(job.key_fingerprints.items())]
    if job.error:
        rows.append(("reason", job.error))
    if job.failed_party:
        rows.append(("party at fault", job.failed_party))
    for name, value in rows:
        table.add_row(name, value)
    print_table(table)
    if job.history:
        epochs = Table("epoch", "train loss", "validation", "seconds", title="epochs")
        for e in job.history:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(e.validation.items()))
            epochs.add_row(str(e.epoch + 1), f"{e.train_loss:.4f}", shown, f"{e.seconds:.1f}")
        print_table(epochs)


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

    async def go() -> JobOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.create_job(contract, fingerprints)

    job = run(go())
    if json_out:
        print_json(job)
        return
    console.print(f"job created under contract {job.contract_id} (status {job.status}):")
    print(job.id)


@job_app.command("show")
def show(
    job_id: Annotated[str, typer.Argument(help="The job's id.")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """A job: contract, status, progress, metrics (owner, parties, operators)."""

    async def go() -> JobOut:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.job(job_id)

    job = run(go())
    if json_out:
        print_json(job)
    else:
        show_job(job)


def _urls(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        party, sep, url = value.partition("=")
        if not sep or not party or not url:
            raise fail(f"--party takes NAME=URL, not {value!r}")
        if party in out:
            raise fail(f"--party names party {party!r} twice")
        out[party] = url
    return out


@job_app.command("start")
def start(
    contract: Annotated[str, typer.Argument(help="The active contract's id.")],
    label_url: Annotated[str, typer.Option("--label-url", help="The label party's URL.")],
    party: Annotated[
        list[str] | None,
        typer.Option(
            "--party",
            help="NAME=URL of a feature party (repeat; default: the label party's "
            "SPLICE_PARTY_PEERS setting).",
        ),
    ] = None,
    job: Annotated[
        str | None,
        typer.Option("--job", help="A job already opened at the registry (default: a new one)."),
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Seed of the initial weights and batches.")] = 0,
    wait: Annotated[bool, typer.Option(help="Follow the training until it ends.")] = True,
    audience: Annotated[
        str | None,
        typer.Option(help="The label party's token audience (default: --label-url)."),
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Train the job a contract fixes at its label party: no spec is written by hand (the
    label party's organisation, scope jobs:run, token audience the label party)."""
    from pydantic import ValidationError

    from services.protocol.messages import ContractTraining

    try:
        request = ContractTraining.model_validate(
            {"job_id": job, "seed": seed, "feature_urls": _urls(party or [])}
        )
    except ValidationError as exc:
        raise fail(f"bad option: {exc.errors()[0]['msg']}") from None
    url = label_url.rstrip("/")
    status = run(_start(profile(profile_name), url, audience or url, contract, request, wait))
    if json_out:
        print_json(status)
        return
    _summary(status)


async def _start(
    loaded: Loaded, url: str, audience: str, contract: str, request: Any, wait: bool
) -> TrainingStatus:
    import httpx

    from services.protocol.oauth_client import BearerAuth, TokenSource
    from services.protocol.peers import PartyClient

    require(loaded, "org")
    http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
    auth = BearerAuth(TokenSource(client_credentials(loaded), http), audience, "jobs:run")
    try:
        async with PartyClient(url, timeout=120.0, retries=2, auth=auth) as label:
            status = await label.start_contract_training(contract, request)
            console.print(f"job {status.job_id} started at {url} (contract {contract})")
            if wait:
                status = await label.follow(status, poll=1.0, on_status=_progress)
    finally:
        await http.aclose()
    return status


def _progress(status: TrainingStatus) -> None:
    if status.history and status.history[-1].epoch + 1 == len(status.history):
        last = status.history[-1]
        shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted(last.validation.items()))
        console.print(f"  epoch {last.epoch + 1}/{status.epochs}: {shown}", highlight=False)


def _summary(status: TrainingStatus) -> None:
    table = Table(show_header=False, title=f"training {status.job_id}")
    table.add_column(style="bold")
    table.add_column()
    rows = [("state", status.state.value), ("task", status.task.value), ("mode", status.mode)]
    rows.append(("epochs", f"{len(status.history)} of {status.epochs}"))
    rows += [(f"test {k}", f"{v:.4f}") for k, v in sorted(status.test.items())]
    rows.append(("spec digest", status.spec_digest or "-"))
    rows.append(("model digest", status.model_digest or "-"))
    if status.error:
        rows.append(("error", status.error))
    if status.failed_party:
        rows.append(("party at fault", status.failed_party))
    for name, value in rows:
        table.add_row(name, str(value))
    print_table(table)
