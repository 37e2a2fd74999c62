"""Check a party's table against the feature schema it committed to in the contract.

Hard failures (the table cannot be used at all): a committed column is absent, holds the wrong
type or is declared in another unit; the key or row-id column is absent, has missing values or
repeats a value; the table has no rows. Per-row violations (a missing value under
``missing: reject``, a value out of range or not finite, an unknown category) are counted per
column; a column passes while its share of violating rows is at most ``max_violation_rate``.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

from contracts.schema_types import FeatureColumn, FeatureSchema
from contracts.spec import Contract
from services.engine.harmonise.report import ColumnReport, HarmonisationReport, Role, Rule
from services.engine.harmonise.rules import check_values, key_problems, missing_count, type_name
from services.engine.harmonise.units import metadata_units

_RATE_SLACK = 1e-12  # 1 violating row in 100 is exactly at a 0.01 threshold, whatever the floats


class HarmonisationError(ValueError):
    """The check cannot run: e.g. the contract has no party of that name."""


def check_table(
    table: pa.Table,
    schema: FeatureSchema,
    *,
    declared_units: Mapping[str, str] | None = None,
    party: str | None = None,
    required: Mapping[str, Role] | None = None,
) -> HarmonisationReport:
    """Check ``table`` against ``schema``; the report holds counts, rates and reasons only.

    ``declared_units`` (column -> unit) adds to and overrides units in the table's field metadata.
    ``required`` names further columns that must be present (e.g. the feature parties' join keys
    in the label party's table), with their role; their missing values are counted, not judged.
    """
    units = {**metadata_units(table), **(declared_units or {})}
    rows = table.num_rows
    cols: list[ColumnReport] = []
    if schema.key_column is not None:
        cols.append(_identifier(table, schema.key_column, "key", "join key"))
    if schema.id_column is not None:
        cols.append(_identifier(table, schema.id_column, "id", "row id"))
    for name, role in (required or {}).items():
        cols.append(_carried(table, name, role))
    for spec in schema.columns:
        cols.append(_feature(table, spec, units.get(spec.name), schema.max_violation_rate))
    checked = {c.name for c in cols}
    reasons = [f"{c.name}: {r}" for c in cols for r in c.reasons if not c.passed]
    if rows == 0:
        reasons.insert(0, "the table has no rows")
    return HarmonisationReport(
        party=party,
        rows=rows,
        max_violation_rate=schema.max_violation_rate,
        passed=rows > 0 and all(c.passed for c in cols),
        columns=cols,
        extra_columns=sum(1 for n in table.column_names if n not in checked),
        reasons=reasons,
    )


def check_party_table(
    table: pa.Table,
    contract: Contract,
    party: str,
    *,
    declared_units: Mapping[str, str] | None = None,
    require_label: bool = True,
) -> HarmonisationReport:
    """Check ``party``'s table against its schema in ``contract`` (what a party service calls).

    The label party's table must also carry every feature party's key, and the label column
    unless ``require_label`` is False (a table of new rows to predict).
    """
    try:
        me = contract.party(party)
    except KeyError:
        names = ", ".join(p.name for p in contract.parties)
        raise HarmonisationError(
            f"the contract has no party {party!r} (parties: {names})"
        ) from None
    required: dict[str, Role] = {}
    if me.role == "label":
        required = {
            p.feature_schema.key_column: "join_key"
            for p in contract.feature_parties
            if p.feature_schema.key_column is not None
        }
        if require_label:
            required[contract.task.label.column] = "label"
    return check_table(
        table, me.feature_schema, declared_units=declared_units, party=party, required=required
    )


def _absent(name: str, role: Role, committed: str | None = None) -> ColumnReport:
    return ColumnReport(
        name=name,
        role=role,
        committed_type=committed,
        present=False,
        passed=False,
        reasons=["column is missing from the table"],
    )


def _identifier(table: pa.Table, name: str, role: Role, what: str) -> ColumnReport:
    if name not in table.column_names:
        return _absent(name, role)
    col = table.column(name)
    problems = key_problems(col, what)
    return ColumnReport(
        name=name,
        role=role,
        found_type=type_name(col.type),
        present=True,
        missing=missing_count(col),
        passed=not problems,
        reasons=problems,
    )


def _carried(table: pa.Table, name: str, role: Role) -> ColumnReport:
    if name not in table.column_names:
        return _absent(name, role)
    col = table.column(name)
    return ColumnReport(
        name=name,
        role=role,
        found_type=type_name(col.type),
        present=True,
        missing=missing_count(col),
        passed=True,
    )


def _feature(
    table: pa.Table, spec: FeatureColumn, declared: str | None, max_rate: float
) -> ColumnReport:
    if spec.name not in table.column_names:
        return _absent(spec.name, "feature", spec.type)
    col = table.column(spec.name)
    counts = check_values(col, spec)
    reasons: list[str] = []
    if counts.type_problem is not None:
        reasons.append(f"wrong type: {counts.type_problem}")
    unit_ok = declared is None or declared == spec.unit
    if not unit_ok:
        committed = f"{spec.unit!r}" if spec.unit is not None else "no unit"
        reasons.append(f"wrong unit: declared {declared!r}, the contract commits to {committed}")
    rows = table.num_rows
    violating = sum(counts.violations.values())  # one cell per row: the rules never overlap
    rate = violating / rows if rows else 0.0
    within = rate <= max_rate + _RATE_SLACK
    if violating:
        detail = ", ".join(f"{n} {rule.replace('_', ' ')}" for rule, n in counts.violations.items())
        verdict = "above" if not within else "within"
        reasons.append(
            f"{violating} of {rows} rows violate ({100 * rate:.2f}%, {verdict} the "
            f"{100 * max_rate:.2f}% threshold): {detail}{_terms(spec, counts.violations)}"
        )
    return ColumnReport(
        name=spec.name,
        role="feature",
        committed_type=spec.type,
        found_type=type_name(col.type),
        present=True,
        type_ok=counts.type_problem is None,
        committed_unit=spec.unit,
        declared_unit=declared,
        unit_ok=unit_ok,
        missing=counts.missing,
        missing_policy=spec.missing,
        violations=counts.violations,
        violating_rows=violating,
        violation_rate=rate,
        passed=counts.type_problem is None and unit_ok and within,
        reasons=reasons,
    )


def _terms(spec: FeatureColumn, violations: Mapping[Rule, int]) -> str:
    """The contract's own terms the violations break (never the offending values)."""
    if "out_of_range" in violations and spec.range is not None:
        low = "-inf" if spec.range.min is None else f"{spec.range.min:g}"
        high = "inf" if spec.range.max is None else f"{spec.range.max:g}"
        return f" (range [{low}, {high}])"
    if "unknown_category" in violations:
        return f" ({len(spec.categories or [])} categories committed)"
    return ""
