"""``splice contract ...``: create, amend, propose, sign, reject, show, list, suspend,
reinstate, terminate."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

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
    warn,
)

if TYPE_CHECKING:
    from services.protocol.registry_contracts import ContractOut, ContractSummary, VersionOut

contract_app = typer.Typer(
    help="Joint-model contracts: create, propose, sign or reject, inspect, end.",
    no_args_is_help=True,
)
Json = dict[str, Any]
IdArg = Annotated[str, typer.Argument(help="The contract's id.")]
PartyOpt = Annotated[str, typer.Option(help="The party you sign for, as the contract names it.")]
ReasonOpt = Annotated[str, typer.Option(help="Why (kept in the audit log).")]
DigestOpt = Annotated[
    str | None, typer.Option(help="Answer only if the proposed digest is this one.")
]


def _proposed(contract: ContractOut) -> VersionOut | None:
    return next((v for v in contract.versions if v.state == "proposed"), None)


def _orgs(version: VersionOut) -> dict[str, str]:
    """Party name -> the organisation as the document names it."""
    parties = version.document.get("parties", [])
    return {str(p.get("name")): str(p.get("org")) for p in parties if isinstance(p, dict)}


def _waiting(version: VersionOut) -> list[str]:
    signed = {s.party for s in version.signatures}
    return [p.name for p in version.parties if p.name not in signed]


@contract_app.command("create")
def create(
    file: Annotated[Path, typer.Argument(help="The contract document (YAML or JSON).")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Validate a contract document locally, then create it as a draft (the owner's
    organisation, scope contracts:write)."""
    from contracts import ContractValidationError, contract_digest, load_contract

    try:
        local = contract_digest(load_contract(file))
        text = file.read_bytes()
    except ContractValidationError as exc:
        raise fail(f"{file}: {exc.message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {file}: {exc}") from None

    async def go() -> ContractOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.create_contract_yaml(text)

    created = run(go())
    head = created.versions[-1]
    if head.digest != local:
        warn(f"the registry's digest {head.digest} differs from this file's {local}")
    if json_out:
        print_json(created)
        return
    title = escape(repr(created.title))
    console.print(f"created contract {title} (draft, version {head.version}):")
    print(created.id)
    console.print(f"digest: {head.digest}")
    console.print(f"Propose it with: splice contract propose {created.id}")


@contract_app.command("propose")
def propose(contract_id: IdArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """Propose the draft to every party (owner, contracts:write); it never changes again."""

    async def go() -> ContractOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.propose(contract_id)

    contract = run(go())
    if json_out:
        print_json(contract)
        return
    version = _proposed(contract) or contract.versions[-1]
    orgs = _orgs(version)
    names = [f"{p.name} ({orgs.get(p.name) or p.org_id})" for p in version.parties]
    parties = ", ".join(names)
    console.print(f"proposed version {version.version} of {contract.id} to: {parties}")
    console.print(f"digest: {version.digest}")


def _decide(
    contract_id: str,
    party: str,
    decision: str,
    digest: str | None,
    reason: str | None,
    profile_name: str | None,
    json_out: bool,
) -> None:
    async def go() -> ContractOut:
        async with registry(profile(profile_name), "org") as reg:
            contract = await reg.contract(contract_id)
            version = _proposed(contract)
            if version is None:
                state = contract.state
                raise fail(f"contract {contract_id} has no proposed version to sign ({state})")
            if not json_out:
                title = escape(contract.title)
                console.print(f"contract: {title} ({contract_id})")
                console.print(f"version:  {version.version}")
                console.print(f"digest:   {version.digest}")
            if digest is not None and digest != version.digest:
                raise fail(f"the proposed digest is not {digest}: review the contract again")
            return await reg.sign(contract_id, party, version.digest, decision, reason)

    contract = run(go())
    if json_out:
        print_json(contract)
        return
    verb = "accepted" if decision == "accept" else "rejected"
    console.print(f"{party} {verb}. The contract is {contract.state}.")
    pending = _proposed(contract)
    if pending is not None and _waiting(pending):
        console.print(f"waiting for: {', '.join(_waiting(pending))}")


@contract_app.command("sign")
def sign(
    contract_id: IdArg,
    party: PartyOpt,
    digest: DigestOpt = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Accept the proposed version for a party (its organisation, contracts:sign): shows the
    title and digest, then signs that digest."""
    _decide(contract_id, party, "accept", digest, None, profile_name, json_out)


@contract_app.command("reject")
def reject(
    contract_id: IdArg,
    party: PartyOpt,
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit log).")] = None,
    digest: DigestOpt = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Reject the proposed version for a party; a rejected first proposal ends the contract."""
    _decide(contract_id, party, "reject", digest, reason, profile_name, json_out)


def when(at: datetime | None) -> str:
    """A time as ``YYYY-MM-DD HH:MM`` (UTC), or empty."""
    return "" if at is None else at.strftime("%Y-%m-%d %H:%M")


def _show(contract: ContractOut) -> None:
    console.print(f"[bold]{escape(contract.title)}[/]")
    console.print(f"id:       {contract.id}")
    active = contract.active_version
    in_force = f"version {active} in force" if active else "no version in force"
    console.print(f"state:    [bold]{contract.state}[/] ({in_force})")
    console.print(f"owner:    organisation {contract.owner_org_id}")
    versions = contract.versions
    current = next((v for v in versions if v.version == active), versions[-1])
    console.print(
        f"validity: {when(current.valid_from)} to {when(current.valid_until)} UTC; "
        f"training by {when(current.training_deadline)} (version {current.version})",
    )
    table = Table("version", "state", "digest", "proposed", "decided", title="versions")
    for v in versions:
        short = v.digest[:16] + "…"
        table.add_row(str(v.version), v.state, short, when(v.proposed_at), when(v.decided_at))
    print_table(table)
    head = versions[-1]
    console.print(f"digest of version {head.version}: {head.digest}")
    orgs = _orgs(head)
    signed = {s.party: s for s in head.signatures}
    parties = Table("party", "role", "organisation", "decision", "at", "reason")
    parties.title = f"parties of version {head.version}"
    for p in head.parties:
        sig = signed.get(p.name)
        parties.add_row(
            p.name,
            p.role,
            orgs.get(p.name) or p.org_id,
            sig.decision if sig else "(pending)",
            when(sig.at) if sig else "",
            escape(sig.reason or "") if sig else "",
        )
    print_table(parties)


@contract_app.command("show")
def show(contract_id: IdArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """A contract: state, versions, parties, signatures, validity (owner, parties, operators)."""

    async def go() -> ContractOut:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.contract(contract_id)

    contract = run(go())
    if json_out:
        print_json(contract)
    else:
        _show(contract)


@contract_app.command("list")
def list_contracts(profile_name: ProfileOpt = None, json_out: JsonOpt = False) -> None:
    """Contracts your organisation owns or is a party to (operators: all), newest first."""

    async def go() -> list[ContractSummary]:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.contracts()

    contracts = run(go())
    if json_out:
        print_json(contracts)
        return
    id_col = Column("id", no_wrap=True, min_width=36)
    table = Table(id_col, "title", "state", "newest", "in force", "valid until", title="contracts")
    for c in contracts:
        table.add_row(
            c.id,
            escape(c.title),
            c.state,
            str(c.head_version),
            str(c.active_version or "-"),
            when(c.valid_until),
        )
    print_table(table)


def _end(
    action: str, contract_id: str, reason: str, profile_name: str | None, json_out: bool
) -> None:
    async def go() -> ContractOut:
        async with registry(profile(profile_name), "any") as reg:
            if action == "suspend":
                return await reg.suspend(contract_id, reason)
            if action == "reinstate":
                return await reg.reinstate(contract_id)
            return await reg.terminate(contract_id, reason)

    contract = run(go())
    if json_out:
        print_json(contract)
    else:
        console.print(f"contract {contract.id} is {contract.state}.")


@contract_app.command("suspend")
def suspend(
    contract_id: IdArg,
    reason: ReasonOpt,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Suspend an active contract (owner with contracts:write, or operator)."""
    _end("suspend", contract_id, reason, profile_name, json_out)


@contract_app.command("terminate")
def terminate(
    contract_id: IdArg,
    reason: ReasonOpt,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Terminate a contract for good (owner with contracts:write, or operator)."""
    _end("terminate", contract_id, reason, profile_name, json_out)


@contract_app.command("reinstate")
def reinstate(
    contract_id: IdArg, profile_name: ProfileOpt = None, json_out: JsonOpt = False
) -> None:
    """Reinstate a suspended contract (owner, or operator for an operator's suspension)."""
    _end("reinstate", contract_id, "", profile_name, json_out)


@contract_app.command("amend")
def amend(
    contract_id: IdArg,
    file: Annotated[Path, typer.Argument(help="The amended contract document (YAML or JSON).")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Start an amendment of an agreed contract (owner, contracts:write): the document becomes
    a new draft version; propose it and every party signs again. The version in force stays
    in force until the amendment is agreed."""
    from contracts import ContractValidationError, contract_digest, load_contract

    try:
        local = contract_digest(load_contract(file))
        text = file.read_bytes()
    except ContractValidationError as exc:
        raise fail(f"{file}: {exc.message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {file}: {exc}") from None

    async def go() -> ContractOut:
        async with registry(profile(profile_name), "org") as reg:
            return await reg.amend(contract_id, text)

    contract = run(go())
    head = contract.versions[-1]
    if head.digest != local:
        warn(f"the registry's digest {head.digest} differs from this file's {local}")
    if json_out:
        print_json(contract)
        return
    in_force = contract.active_version
    console.print(
        f"amendment drafted as version {head.version} of {contract.id} "
        f"(version {in_force or '-'} stays in force until it is agreed)"
    )
    console.print(f"digest: {head.digest}")
    console.print(f"Propose it with: splice contract propose {contract.id}")
