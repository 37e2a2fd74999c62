"""The column rules, vectorised over Arrow arrays; every function returns counts only."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from contracts.schema_types import FeatureColumn
from services.engine.harmonise.report import Rule


@dataclass
class ValueCounts:
    """What one column's values hold: missing cells, per-rule violations, or a type problem."""

    missing: int = 0
    violations: dict[Rule, int] = field(default_factory=dict)
    type_problem: str | None = None


def type_name(t: pa.DataType) -> str:
    """A short name of an Arrow type (``int64``, ``string``, ...)."""
    return str(t.value_type if pa.types.is_dictionary(t) else t)


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _is_number(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    """True cells of a boolean mask (nulls count as False)."""
    return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)


def _nulls(col: pa.ChunkedArray) -> int:
    return int(col.null_count)


def check_values(col: pa.ChunkedArray, spec: FeatureColumn) -> ValueCounts:
    """Missing cells, per-row violations and type compatibility of ``col`` against ``spec``."""
    if pa.types.is_null(col.type):  # an all-empty CSV column: every cell is missing
        return _with_policy(ValueCounts(missing=len(col)), spec)
    if spec.type in ("float", "int"):
        counts = _numeric(col, spec)
    elif spec.type == "bool":
        counts = _boolean(col)
    else:
        counts = _category(col, spec)
    return _with_policy(counts, spec)


def _with_policy(counts: ValueCounts, spec: FeatureColumn) -> ValueCounts:
    if spec.missing == "reject" and counts.missing and counts.type_problem is None:
        counts.violations = {"missing_value": counts.missing, **counts.violations}
    return counts


def _numeric(col: pa.ChunkedArray, spec: FeatureColumn) -> ValueCounts:
    if not _is_number(col.type):
        return ValueCounts(type_problem=f"{type_name(col.type)} is not numeric")
    values = pc.cast(col, pa.float64())
    nan = pc.is_nan(values)
    missing = _nulls(values) + _count(nan)
    inf = _count(pc.is_inf(values))
    finite = pc.filter(values, pc.is_finite(values))
    if spec.type == "int" and pa.types.is_floating(col.type):
        fractional = _count(pc.not_equal(pc.floor(finite), finite))
        if fractional:
            return ValueCounts(
                missing=missing,
                type_problem=f"{fractional} value(s) have a fractional part; the contract commits "
                "to int",
            )
    violations: dict[Rule, int] = {}
    if inf:
        violations["not_finite"] = inf
    if spec.range is not None:
        low = _count(pc.less(finite, spec.range.min)) if spec.range.min is not None else 0
        high = _count(pc.greater(finite, spec.range.max)) if spec.range.max is not None else 0
        if low + high:
            violations["out_of_range"] = low + high
    return ValueCounts(missing=missing, violations=violations)


def _boolean(col: pa.ChunkedArray) -> ValueCounts:
    if pa.types.is_boolean(col.type):
        return ValueCounts(missing=_nulls(col))
    if pa.types.is_integer(col.type):
        in_01 = pc.is_in(col, value_set=pa.array([0, 1], type=col.type))
        not_01 = _count(pc.and_(pc.invert(in_01), pc.is_valid(col)))
        if not not_01:
            return ValueCounts(missing=_nulls(col))
        return ValueCounts(type_problem=f"{not_01} value(s) are neither 0 nor 1 (bool committed)")
    return ValueCounts(type_problem=f"{type_name(col.type)} is not bool")


def _category(col: pa.ChunkedArray, spec: FeatureColumn) -> ValueCounts:
    cats = spec.categories or []
    if pa.types.is_integer(col.type) and all(_is_int_text(c) for c in cats):
        col = pc.cast(col, pa.string())  # categories like "1", "2" read from CSV as integers
    elif not _is_text(col.type):
        return ValueCounts(type_problem=f"{type_name(col.type)} is not a category (text) column")
    if pa.types.is_dictionary(col.type):
        col = pc.cast(col, col.type.value_type)
    empty = _count(pc.equal(col, ""))
    known = pc.is_in(col, value_set=pa.array(cats, type=col.type))
    unknown = _count(pc.and_(pc.invert(known), pc.is_valid(col))) - empty  # "" is missing
    violations: dict[Rule, int] = {"unknown_category": unknown} if unknown else {}
    return ValueCounts(missing=_nulls(col) + empty, violations=violations)


def _is_int_text(text: str) -> bool:
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def key_problems(col: pa.ChunkedArray, what: str) -> list[str]:
    """Why a key or row-id column cannot identify rows: missing or repeated values (counts)."""
    problems: list[str] = []
    missing = _nulls(col)
    if _is_text(col.type):
        missing += _count(pc.equal(pc.cast(col, pa.string()), ""))
    if missing:
        problems.append(f"{what} has {missing} missing value(s); every row needs one")
    present = pc.drop_null(col)
    if pa.types.is_null(col.type):
        return problems
    repeated = len(present) - int(pc.count_distinct(present).as_py() or 0)
    if repeated:
        problems.append(f"{what} repeats {repeated} value(s); each row needs its own")
    return problems


def missing_count(col: pa.ChunkedArray) -> int:
    """Null cells, NaN in float columns and empty text."""
    if pa.types.is_null(col.type):
        return len(col)
    n = _nulls(col)
    if pa.types.is_floating(col.type):
        n += _count(pc.is_nan(col))
    elif _is_text(col.type):
        n += _count(pc.equal(pc.cast(col, pa.string()), ""))
    return n
