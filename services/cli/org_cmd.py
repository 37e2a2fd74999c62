"""``splice org ...``: invitations, applications, approval, OAuth clients, suspension."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from services.cli.connect import (
    JsonOpt,
    ProfileOpt,
    console,
    fail,
    once,
    print_json,
    print_table,
    profile,
    registry,
    run,
    warn,
)

if TYPE_CHECKING:
    from services.protocol.registry_types import Approval, ClientRegistered, OrganisationOut

org_app = typer.Typer(
    help="Onboard organisations: invite, apply, approve, register OAuth clients, suspend.",
    no_args_is_help=True,
)


class Kind(StrEnum):
    """What an organisation is in the supply chain."""

    SUPPLIER = "supplier"
    MANUFACTURER = "manufacturer"
    OEM = "oem"
    FINANCE = "finance"


class Status(StrEnum):
    """Onboarding state of an organisation."""

    PENDING = "pending"
    APPROVED = "approved"
    SUSPENDED = "suspended"


@org_app.command("invite")
def invite(
    note: Annotated[str, typer.Option(help="Who it is for (kept in the audit log).")] = "",
    ttl_hours: Annotated[
        int | None, typer.Option(min=1, help="Hours until the code expires (registry default).")
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Create a one-time invitation code for a company (operator)."""

    async def go() -> str:
        async with registry(profile(profile_name), "admin") as reg:
            return await reg.invite(note, ttl_hours)

    code = run(go())
    if json_out:
        print_json({"code": code})
    else:
        once("invitation code (hand it to the company; shown only now):", code)


@org_app.command("apply")
def apply(
    name: Annotated[str, typer.Option(help="The organisation's unique name.")],
    kind: Annotated[Kind, typer.Option(help="What the organisation is.")],
    contact_email: Annotated[str, typer.Option(help="Who the operator talks to.")],
    invitation_code: Annotated[
        str, typer.Option(envvar="SPLICE_INVITATION_CODE", help="The code an operator gave you.")
    ],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Apply to join the registry with an invitation code (no credentials needed)."""

    async def go() -> OrganisationOut:
        async with registry(profile(profile_name), "none") as reg:
            return await reg.apply(name, kind.value, contact_email, invitation_code)

    org = run(go())
    if json_out:
        print_json(org)
        return
    console.print(f"{escape(org.name)} applied; organisation id (status {org.status}):")
    print(org.id)
    console.print(f"An operator approves it with: splice org approve {org.id}")


@org_app.command("approve")
def approve(
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Approve a pending organisation (operator) and print its initial access token, once."""

    async def go() -> Approval:
        async with registry(profile(profile_name), "admin") as reg:
            return await reg.approve(org_id)

    done = run(go())
    if json_out:
        print_json(done)
        return
    org = done.organisation
    console.print(f"approved {escape(org.name)} ({org.id}).")
    until = done.initial_access_token_expires_at.isoformat().replace("+00:00", "Z")
    once(
        f"Initial access token (hand it to the organisation; shown only now, valid until {until}):",
        done.initial_access_token,
    )
    console.print("It registers a client with: splice org register-client --initial-token ...")


@org_app.command("register-client")
def register_client(
    initial_token: Annotated[
        str,
        typer.Option(
            envvar="SPLICE_INITIAL_TOKEN",
            help="The initial access token from the approval (spent by this registration).",
        ),
    ],
    scope: Annotated[
        str, typer.Option(help='Space-separated scopes, e.g. "contracts:sign jobs:run".')
    ],
    key_file: Annotated[
        Path | None,
        typer.Option(
            help="private_key_jwt: the private key (JWK or PEM); an EC P-256 key is generated "
            "there if the file does not exist. Without it: a client secret."
        ),
    ] = None,
    client_name: Annotated[str | None, typer.Option(help="A label for the client.")] = None,
    save_profile: Annotated[
        str | None,
        typer.Option(help="Write the credentials as this profile (mode 0600) instead of printing."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --save-profile.")] = False,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Register an OAuth client for an approved organisation (RFC 7591 style)."""
    from services.cli.connect import load_private_key, new_key_file, public_jwks
    from services.cli.profile import ProfileError, read_profiles
    from services.cli.profile import save_profile as write_profile
    from services.protocol.registry_client import StaticBearer

    loaded = profile(profile_name)
    if save_profile is not None and not overwrite and loaded.path.is_file():
        try:
            taken = save_profile in read_profiles(loaded.path)
        except ProfileError as exc:
            raise fail(exc.message) from None
        if taken:  # checked first: the initial token is spent by the registration
            raise fail(f"profile {save_profile!r} exists in {loaded.path}; add --overwrite")
    jwks = None
    if key_file is not None:
        key_file = key_file.expanduser().resolve()
        try:
            key = load_private_key(key_file) if key_file.exists() else new_key_file(key_file)
        except ProfileError as exc:
            raise fail(exc.message) from None
        jwks = public_jwks(key)
    method = "client_secret_basic" if jwks is None else "private_key_jwt"

    async def go() -> ClientRegistered:
        async with registry(loaded, "none") as reg:
            reg.use_auth(StaticBearer(initial_token))
            return await reg.register_client(scope, method=method, jwks=jwks, name=client_name)

    client = run(go())
    secret = client.client_secret
    saved = False
    if save_profile is not None:
        fields = {"registry_url": loaded.profile.registry_url, "client_id": client.client_id}
        if loaded.profile.issuer is not None:
            fields["issuer"] = loaded.profile.issuer
        if secret is not None:
            fields["client_secret"] = secret
        else:
            fields["client_key_file"] = str(key_file)
        fields["org_id"] = client.org_id
        try:
            write_profile(loaded.path, save_profile, fields, replace=overwrite)
            saved = True
        except ProfileError as exc:
            warn(f"{exc.message}; the credentials follow, store them now")
    if json_out:
        hidden = {"client_secret"} if saved else None
        print_json(client.model_dump(mode="json", exclude_none=True, exclude=hidden))
    else:
        console.print(f"registered {method} client for organisation {client.org_id}:")
        print(client.client_id)
        console.print(f"scopes: {client.scope}")
        if key_file is not None:
            console.print(f"private key: {key_file} (keep it; it never leaves you)")
        if secret is not None and not saved:
            once("client secret (store it now; shown only now):", secret)
    if saved:
        console.print(f"saved as profile {save_profile!r} in {loaded.path} (mode 0600)")
    elif save_profile is not None:
        raise typer.Exit(code=2)


@org_app.command("list")
def list_orgs(
    status: Annotated[Status | None, typer.Option(help="Only organisations in this state.")] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every organisation by name (operator)."""

    async def go() -> list[OrganisationOut]:
        async with registry(profile(profile_name), "admin") as reg:
            return await reg.organisations(status.value if status else None)

    orgs = run(go())
    if json_out:
        print_json(orgs)
        return
    id_col, name_col = Column("id", no_wrap=True, min_width=36), Column("name", no_wrap=True)
    table = Table(id_col, name_col, "kind", "status", "contact", "approved", title="organisations")
    for o in orgs:
        approved = o.approved_at.date().isoformat() if o.approved_at else ""
        name, contact = escape(o.name), escape(o.contact_email)
        table.add_row(o.id, name, o.kind, o.status, contact, approved)
    print_table(table)


class Grant(StrEnum):
    """Cross-contract roles an operator grants an organisation."""

    REPORTS_ALL = "reports:all-contracts"
    AUDIT_VERIFY = "audit:verify"


@org_app.command("grant")
def grant(
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    role: Annotated[Grant, typer.Argument(help="reports:all-contracts or audit:verify.")],
    revoke: Annotated[bool, typer.Option(help="Take the role back instead.")] = False,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Grant an organisation a cross-contract role (operator): every contract's revenue and
    usage (reports:all-contracts), or verifying the audit log (audit:verify). Without one, an
    organisation sees only the contracts it owns or is party to."""

    async def go() -> OrganisationOut:
        async with registry(profile(profile_name), "admin") as reg:
            return await reg.grant(org_id, role.value, revoke=revoke)

    org = run(go())
    if json_out:
        print_json(org)
    else:
        held = ", ".join(org.grants) or "none"
        console.print(f"{escape(org.name)} ({org.id}) holds: {held}.")


@org_app.command("suspend")
def suspend(
    org_id: Annotated[str, typer.Argument(help="The organisation's id.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Suspend an organisation (operator): its clients get no more tokens."""

    async def go() -> OrganisationOut:
        async with registry(profile(profile_name), "admin") as reg:
            return await reg.suspend_organisation(org_id, reason)

    org = run(go())
    if json_out:
        print_json(org)
    else:
        console.print(f"{escape(org.name)} ({org.id}) is {org.status}.")
