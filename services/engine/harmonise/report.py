"""What a harmonisation check found: counts, rates, pass/fail and reasons, never row values.

Only this report leaves the party, so nothing in it is copied from the table's cells: a reason
names a column, a rule, a count and the contract's own terms (range, unit, policy).
"""

from __future__ import annotations

import io
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.markup import escape
from rich.table import Table

Rule = Literal["missing_value", "out_of_range", "not_finite", "unknown_category"]
"""A per-row violation: it counts towards the column's violation rate."""

Role = Literal["feature", "key", "id", "join_key", "label"]
"""Why the column is checked: a committed feature, the party's join key or row id, another
party's join key the label party's table carries, or the label column."""

RULES: tuple[Rule, ...] = ("missing_value", "out_of_range", "not_finite", "unknown_category")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnReport(_Model):
    """One checked column."""

    name: str
    role: Role
    committed_type: str | None = None
    found_type: str | None = None
    present: bool
    type_ok: bool = True
    committed_unit: str | None = None
    declared_unit: str | None = None
    unit_ok: bool = True
    missing: int = 0
    missing_policy: str | None = None
    violations: dict[Rule, int] = Field(default_factory=dict)
    violating_rows: int = 0
    violation_rate: float = 0.0
    passed: bool
    reasons: list[str] = Field(default_factory=list)


class HarmonisationReport(_Model):
    """The whole table: passes when every column passes and the table has rows."""

    party: str | None = None
    rows: int
    max_violation_rate: float
    passed: bool
    columns: list[ColumnReport]
    extra_columns: int = 0
    reasons: list[str] = Field(default_factory=list)

    @property
    def failed_columns(self) -> list[ColumnReport]:
        """The columns that did not pass."""
        return [c for c in self.columns if not c.passed]

    def to_json(self, *, indent: int | None = 2) -> str:
        """The report as JSON (what may leave the party)."""
        return self.model_dump_json(indent=indent)

    def rich_table(self) -> Table:
        """A readable table of the columns, for a terminal."""
        who = f" for party {escape(self.party)}" if self.party else ""
        limit = _pct(self.max_violation_rate)
        table = Table(
            title=f"Harmonisation{who}: {self.rows} rows, threshold {limit}", title_justify="left"
        )
        for head in ("column", "role", "type", "unit", "missing", "violations", "rate", "result"):
            table.add_column(head, justify="right" if head in ("missing", "rate") else "left")
        for col in self.columns:
            table.add_row(*_cells(col))
        return table

    def to_text(self) -> str:
        """The table and the verdict as plain text, at the table's natural width."""
        buf = io.StringIO()
        console = Console(file=buf, width=1000, no_color=True, highlight=False)
        console.print(self.rich_table(), soft_wrap=False)
        for line in self.summary():
            console.print(line)
        return "\n".join(line.rstrip() for line in buf.getvalue().splitlines()) + "\n"

    def summary(self) -> list[str]:
        """Rich-markup lines under the table: ignored columns, PASS or FAIL, every reason."""
        lines: list[str] = []
        if self.extra_columns:
            lines.append(f"{self.extra_columns} column(s) not in the contract were ignored.")
        verdict = "[bold green]PASS[/]" if self.passed else "[bold red]FAIL[/]"
        failed = len(self.failed_columns)
        lines.append(f"{verdict}: {failed} of {len(self.columns)} checked column(s) fail")
        lines.extend(f"  - {escape(reason)}" for reason in self.reasons)
        return lines


def _pct(rate: float) -> str:
    return f"{100 * rate:.2f}%"


def _cells(col: ColumnReport) -> tuple[str, ...]:
    kind = col.committed_type or "-"
    if col.found_type is not None and not col.type_ok:
        kind = f"{kind} [red](found {escape(col.found_type)})[/]"
    unit = escape(col.committed_unit or "-")
    if col.declared_unit is not None and not col.unit_ok:
        unit = f"{unit} [red](declared {escape(col.declared_unit)})[/]"
    elif col.declared_unit is not None:
        unit = f"{unit} (declared)"
    missing = str(col.missing) if col.present else "-"
    if col.missing_policy and col.present:
        missing = f"{missing} ({col.missing_policy})"
    viol = ", ".join(f"{rule}: {n}" for rule, n in col.violations.items() if n) or "-"
    rate = _pct(col.violation_rate) if col.present else "-"
    if not col.present:
        result = "[red]absent[/]"
    else:
        result = "[green]ok[/]" if col.passed else "[red]fail[/]"
    return escape(col.name), col.role, kind, unit, missing, viol, rate, result
