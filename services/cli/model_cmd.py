"""``splice model ...``: a contract's model versions, what each one is, approvals (the last one
deploys), deployment and rollback.

The approval view (``splice model show CONTRACT VERSION``) says what an approver signs off: the
contract version and task it was trained under, each party's columns, the job's spec digest,
every party's segment digest and the model digest that prediction answers carry, beside the
metrics and the approvals so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

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

if TYPE_CHECKING:
    from services.protocol.registry_contracts import ModelVersionOut

Json = dict[str, Any]
model_app = typer.Typer(
    help="Model versions: what each is (task, columns, digests), approvals.", no_args_is_help=True
)
ContractArg = Annotated[str, typer.Argument(help="The contract's id.")]
VersionArg = Annotated[int, typer.Argument(min=1, help="The model version.")]


def approval_view(model: ModelVersionOut) -> Table:
    """One model version as an approver reads it."""
    table = Table(show_header=False, title=f"model version {model.version}")
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # digests in full, wrapped on narrow terminals
    rows = [
        ("status", model.status),
        ("contract", f"{model.contract_id} (version {model.contract_version or '-'})"),
        ("job", model.job_id),
        ("task", model.task or "-"),
    ]
    for party, columns in sorted((model.columns or {}).items()):
        rows.append((f"columns {party}", ", ".join(columns) or "(none)"))
    rows.append(("spec digest", model.spec_digest or "-"))
    for party, digest in sorted((model.segment_digests or {}).items()):
        rows.append((f"segment {party}", digest))
    rows.append(("model digest", model.model_digest or "-"))
    rows += [(f"metric {k}", f"{v:.4f}") for k, v in sorted(model.metrics.items())]
    approvals = ", ".join(a.approver for a in model.approvals) or "none yet"
    rows.append(("approvals", approvals))
    if model.deployed_at is not None:
        rows.append(("deployed at", model.deployed_at.isoformat()))
    if model.retired_at is not None:
        rows.append(("retired at", model.retired_at.isoformat()))
    for name, value in rows:
        table.add_row(name, str(value))
    return table


@model_app.command("list")
def list_versions(
    contract: ContractArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False
) -> None:
    """A contract's model versions, oldest first (owner, parties, operators)."""

    async def go() -> list[ModelVersionOut]:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.model_versions(contract)

    models = run(go())
    if json_out:
        print_json(models)
        return
    table = Table(
        "version", "status", "task", "contract version", "approvals", "model digest", "job"
    )
    for m in models:
        table.add_row(
            str(m.version),
            m.status,
            m.task or "-",
            str(m.contract_version or "-"),
            ", ".join(a.approver for a in m.approvals) or "-",
            (m.model_digest or "-")[:16],
            m.job_id,
        )
    print_table(table)


@model_app.command("show")
def show(
    contract: ContractArg,
    version: VersionArg,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The approval view of one model version: contract version, task, columns, spec digest,
    segment digests, model digest, metrics, approvals."""

    async def go() -> ModelVersionOut:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.model_version(contract, version)

    model = run(go())
    if json_out:
        print_json(model)
    else:
        print_table(approval_view(model))


@model_app.command("approve")
def approve(
    contract: ContractArg,
    version: VersionArg,
    approver: Annotated[
        str, typer.Option(help="The approver you stand for, as the contract names it.")
    ],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Approve a model version for one of the contract's approvers (its organisation, scope
    contracts:sign); the last approval deploys it."""

    async def go() -> ModelVersionOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.approve_model(contract, version, approver)

    model = run(go())
    if json_out:
        print_json(model)
        return
    print_table(approval_view(model))
    console.print(f"model version {version}: {model.status}")


@model_app.command("deploy")
def deploy(
    contract: ContractArg,
    version: VersionArg,
    approver: Annotated[
        str, typer.Option(help="The approver you stand for, as the contract names it.")
    ],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Deploy a model version: your approval of it (scope contracts:sign). A version is deployed
    when its last approver approves, so this says who is still missing."""

    async def go() -> tuple[ModelVersionOut, list[str]]:
        async with registry(profile(profile_name), "org") as reg:
            model = await reg.approve_model(contract, version, approver)
            document = await reg.contract(contract)
        in_force = next(
            (v for v in document.versions if v.version == model.contract_version),
            document.versions[-1],
        )
        wanted = in_force.document.get("deployment", {}).get("approvers", [])
        done = {a.approver for a in model.approvals}
        return model, [str(a) for a in wanted if a not in done]

    model, missing = run(go())
    if json_out:
        print_json(model)
        return
    if model.status == "deployed":
        console.print(f"model version {version} of {contract} is deployed (serving predictions).")
    else:
        console.print(
            f"model version {version}: {model.status}; still to approve: "
            + (", ".join(missing) or "-")
        )


@model_app.command("rollback")
def rollback(
    contract: ContractArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False
) -> None:
    """Roll the contract's model back: the deployed version retires and the one deployed before
    it serves again (an approver's organisation, scope contracts:sign)."""

    async def go() -> ModelVersionOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.rollback(contract)

    model = run(go())
    if json_out:
        print_json(model)
        return
    console.print(f"rolled back: model version {model.version} of {contract} serves again.")


@model_app.command("status")
def status(
    contract: ContractArg,
    label_url: Annotated[str, typer.Option("--label-url", help="The label party's URL.")],
    audience: Annotated[
        str | None, typer.Option(help="The label party's token audience (default: --label-url).")
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """The deployed model's live quality at the label party: the live metric of each model
    version over its latest outcomes, each party's drift scores (PSI and KS per column) and
    whether the contract's monitoring thresholds raise an alert (scope predict:call)."""
    import httpx

    from services.cli.lifecycle import show_quality
    from services.cli.predict_cmd import auth_for

    async def go() -> Json:
        auth, http = auth_for(profile(profile_name), audience or label_url, contract)
        try:
            async with httpx.AsyncClient(base_url=label_url, auth=auth, timeout=60) as party:
                resp = await party.get(f"/v1/contracts/{contract}/quality")
        finally:
            await http.aclose()
        if resp.status_code != 200:
            raise fail(f"the label party answered {resp.status_code}: {resp.text[:300]}")
        answer: Json = resp.json()
        return answer

    quality = run(go())
    if json_out:
        print_json(quality)
    else:
        show_quality(console, quality)
