"""``splice data check``: a party's table against the feature schema it committed to.

Runs locally on the party's own table; nothing is sent anywhere. Exit codes: 0 the table passes,
1 it fails the contract's checks, 2 the command could not run (missing file, unknown party, bad
contract or units file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.connect import console, fail, print_table

data_app = typer.Typer(
    help="Your own data against the contract: checked locally, only counts are shown.",
    no_args_is_help=True,
)

EXIT_FAIL = 1
"""The table does not meet the contract: a missing column, wrong type or unit, or too many
violating rows."""


@data_app.command("check")
def check(
    contract: Annotated[Path, typer.Option(help="The contract document (YAML or JSON).")],
    party: Annotated[str, typer.Option(help="Your party's name in the contract.")],
    table: Annotated[Path, typer.Option(help="Your table: CSV, or Parquet (.parquet, .pq).")],
    units: Annotated[
        Path | None,
        typer.Option(help="YAML/JSON mapping column -> unit you measure it in, e.g. {ph: '1'}."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON to this file.")
    ] = None,
) -> None:
    """Check a table against your feature schema: columns, types, units, ranges, categories and
    missing values. Exit 0 when it passes, 1 when it fails, 2 when the check cannot run."""
    from contracts import ContractValidationError, read_contract
    from services.engine.harmonise import (
        HarmonisationError,
        UnitsError,
        check_party_table,
        read_units,
    )
    from services.engine.tabular import TableError, read_table

    try:
        doc = read_contract(contract)
    except ContractValidationError as exc:
        raise fail(f"{contract}: {exc.message}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read contract {contract}: {exc}") from None
    try:
        declared = read_units(units) if units is not None else None
        report = check_party_table(read_table(table), doc, party, declared_units=declared)
    except (HarmonisationError, UnitsError, TableError) as exc:
        raise fail(str(exc)) from None
    print_table(report.rich_table())
    for line in report.summary():
        console.print(line)
    if json_out is not None:
        try:
            json_out.write_text(report.to_json() + "\n", encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot write {json_out}: {exc}") from None
    if not report.passed:
        raise typer.Exit(code=EXIT_FAIL)
