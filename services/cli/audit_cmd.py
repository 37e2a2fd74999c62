"""``splice audit list|verify``: the registry's hash-chained audit log."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
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
    from services.protocol.registry_types import AuditEntryOut, ChainVerification

audit_app = typer.Typer(help="The registry's audit log: list and verify.", no_args_is_help=True)


@audit_app.command("list")
def list_entries(
    after: Annotated[int, typer.Option(min=0, help="Only entries after this seq.")] = 0,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. job.status_changed.")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="Only this subject, e.g. job:<id> or contract:<id>.")
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Audit entries oldest first (operators): who did what to which object, and the hash
    chain linking them."""

    async def go() -> list[AuditEntryOut]:
        async with registry(profile(profile_name), "any") as reg:
            return await reg.audit(after, limit)

    entries = [
        e
        for e in run(go())
        if (action is None or e.action == action) and (subject is None or e.subject == subject)
    ]
    if json_out:
        print_json(entries)
        return
    table = Table("seq", "at", "actor", "action", "subject", "payload", title="audit log")
    for e in entries:
        payload = json.dumps(e.payload, sort_keys=True, ensure_ascii=False)
        table.add_row(
            str(e.seq),
            e.at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(e.actor),
            e.action,
            escape(e.subject),
            escape(payload[:120]),
        )
    print_table(table)


@audit_app.command("verify")
def verify(
    head: Annotated[
        str | None,
        typer.Option(help="A head hash kept earlier: fail unless the chain still leads to it."),
    ] = None,
    profile_name: ProfileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Recompute the audit log's hash chain (operators, or organisations granted
    audit:verify); exit 2 when any entry was edited, deleted or reordered."""

    async def go() -> tuple[ChainVerification, list[str]]:
        async with registry(profile(profile_name), "any") as reg:
            result = await reg.verify_audit()
            kept: list[str] = []
            if head is not None and result.ok:
                after, found = 0, False
                while not found:
                    page = await reg.audit(after, 1000)
                    if not page:
                        break
                    found = any(e.hash == head for e in page)
                    after = page[-1].seq
                kept = [] if found else [head]
            return result, kept

    result, missing = run(go())
    if json_out:
        print_json(result)
    elif result.ok:
        console.print(f"audit log intact: {result.entries} entries; head {result.head_hash}")
    if not result.ok:
        raise fail(
            f"the audit log does not verify at entry {result.first_bad_seq}: {result.reason}"
        )
    if missing:
        raise fail(f"no entry has the kept head hash {missing[0]}: entries were cut off the end")
