"""``splice finance ...``: revenue reports for finance departments."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import typer

from services.cli.connect import ProfileOpt, console, fail, profile, registry, run

finance_app = typer.Typer(help="Revenue reports for finance.", no_args_is_help=True)


def report_query(
    period: str | None, start: str | None, end: str | None, tz: str | None, fmt: str
) -> str:
    """The query string of ``GET /v1/reports/revenue``; exits unless exactly one of ``--period``
    and ``--from``/``--to`` is given."""
    if fmt not in ("csv", "json", "xlsx"):
        raise fail(f"--format must be csv, json or xlsx, not {fmt!r}")
    if period is not None and (start is not None or end is not None):
        raise fail("give either --period or --from and --to, not both")
    if period is None and (start is None or end is None):
        raise fail("give --period (e.g. 2026-11), or both --from and --to")
    params = {"format": fmt}
    if period is not None:
        params["period"] = period
    else:
        assert start is not None and end is not None
        params |= {"from": start, "to": end}
    if tz is not None:
        params["tz"] = tz
    return urlencode(params)


def write_atomically(path: Path, content: bytes) -> None:
    """``content`` to ``path`` through a temporary file in the same folder: a reader never sees
    half a report, and a failed export leaves the old file as it was."""
    folder = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@finance_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="File to write the report to.")],
    period: Annotated[
        str | None,
        typer.Option(help="A month YYYY-MM (local midnights in --tz), or FROM/TO."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Start (inclusive), ISO 8601 date or datetime."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End (exclusive), like --from.")] = None,
    tz: Annotated[
        str | None, typer.Option(help="IANA time zone of the period (default UTC).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv, json or xlsx.")] = "csv",
    profile_name: ProfileOpt = None,
) -> None:
    """Export the revenue report of a period (scope reports:read): one row per contract x model
    version x payer x party and a totals row, amounts exact in the contract's currency.
    Operators and organisations granted reports:all-contracts get every row, a contract's
    owner (and a finance organisation party to it) its contracts', a party its own."""
    query = report_query(period, start, end, tz, fmt)
    if out.is_dir():
        raise fail(f"--out {out} is a folder; name the file to write")
    if not out.parent.is_dir():
        raise fail(f"the folder of --out ({out.parent}) does not exist")

    async def go() -> bytes:
        async with registry(profile(profile_name), "any") as reg:
            resp = await reg.request("GET", f"/v1/reports/revenue?{query}")
            return resp.content

    content = run(go())
    try:
        write_atomically(out, content)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}") from None
    console.print(f"revenue report ({fmt}, {len(content)} bytes) written to {out}")


@finance_app.command("events")
def events(
    out: Annotated[Path, typer.Option("--out", help="File to write the events to.")],
    period: Annotated[
        str | None,
        typer.Option(help="A month YYYY-MM (local midnights in --tz), or FROM/TO."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--from", help="Start (inclusive), ISO 8601 date or datetime."),
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End (exclusive), like --from.")] = None,
    tz: Annotated[
        str | None, typer.Option(help="IANA time zone of the period (default UTC).")
    ] = None,
    contract: Annotated[str | None, typer.Option(help="Only this contract's events.")] = None,
    payer: Annotated[
        str | None, typer.Option(help="Only the events billed to this organisation id.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="csv or xlsx.")] = "csv",
    profile_name: ProfileOpt = None,
) -> None:
    """Export the usage events of a period with their prices (scope reports:read): what a
    buyer is billed for, one line per prediction call, and a totals row per currency that
    equals the revenue report's gross for the same payer."""
    if fmt not in ("csv", "xlsx"):
        raise fail(f"--format must be csv or xlsx, not {fmt!r}")
    query = report_query(period, start, end, tz, fmt)
    extra = {k: v for k, v in (("contract_id", contract), ("payer", payer)) if v is not None}
    if extra:
        query += "&" + urlencode(extra)
    if out.is_dir():
        raise fail(f"--out {out} is a folder; name the file to write")
    if not out.parent.is_dir():
        raise fail(f"the folder of --out ({out.parent}) does not exist")

    async def go() -> bytes:
        async with registry(profile(profile_name), "any") as reg:
            resp = await reg.request("GET", f"/v1/usage/events?{query}")
            return resp.content

    content = run(go())
    try:
        write_atomically(out, content)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}") from None
    console.print(f"usage events ({fmt}, {len(content)} bytes) written to {out}")
