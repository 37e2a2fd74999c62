"""A party's committed feature schema: the columns it promises to bring, and how to check them.

Before a job runs, each party's data-harmonisation step compares its local table with the schema it
committed to: every column present with the promised type and unit, values inside the allowed range
or category set, missing values handled by the column's policy. A row breaking any of these is a
*violation*; a party whose share of violating rows exceeds ``max_violation_rate`` blocks the job.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.base import Frozen
from contracts.errors import Issue, raise_issues
from services.protocol.messages import ColumnName

ColumnType = Literal["float", "int", "bool", "category"]
MissingPolicy = Literal["reject", "drop_row", "fill", "impute_mean", "impute_median", "impute_mode"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Category = Annotated[str, Field(min_length=1, max_length=128)]

_NUMERIC = ("float", "int")


class ValueRange(Frozen):
    """Inclusive bounds of a numeric column; either may be left open."""

    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ValueRange:
        if self.min is None and self.max is None:
            raise_issues([((), "give min, max or both")])
        if self.min is not None and self.max is not None and self.min > self.max:
            raise_issues([(("max",), f"max {self.max} is below min {self.min}")])
        return self

    def contains(self, value: float) -> bool:
        """True when ``value`` lies within the bounds."""
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


class FeatureColumn(Frozen):
    """One committed column.

    ``missing`` says what happens to a missing value: ``reject`` counts it as a violation,
    ``drop_row`` leaves the row out of the job, ``fill`` uses ``fill_value``, ``impute_mean`` /
    ``impute_median`` (numeric) and ``impute_mode`` use a statistic of the party's own training
    rows.
    """

    name: ColumnName
    type: ColumnType
    unit: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    range: ValueRange | None = None
    categories: Annotated[list[Category], Field(min_length=2, max_length=1000)] | None = None
    missing: MissingPolicy = "reject"
    fill_value: bool | int | FiniteFloat | str | None = None
    description: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureColumn:
        issues: list[Issue] = []
        numeric = self.type in _NUMERIC
        if self.unit is not None and not numeric:
            issues.append((("unit",), f"a unit applies to numeric columns, not to {self.type}"))
        if self.range is not None and not numeric:
            issues.append((("range",), f"a range applies to numeric columns, not to {self.type}"))
        if self.type == "category":
            if self.categories is None:
                issues.append((("categories",), "a category column lists its categories"))
            elif len(set(self.categories)) != len(self.categories):
                issues.append((("categories",), "categories must be distinct"))
        elif self.categories is not None:
            issues.append(
                (("categories",), f"categories apply to category columns, not to {self.type}")
            )
        if self.missing in ("impute_mean", "impute_median") and not numeric:
            issues.append((("missing",), f"{self.missing} needs a numeric column, not {self.type}"))
        if self.missing == "fill":
            if self.fill_value is None:
                issues.append((("fill_value",), "missing: fill needs a fill_value"))
            else:
                problem = self.value_problem(self.fill_value)
                if problem:
                    issues.append((("fill_value",), problem))
        elif self.fill_value is not None:
            issues.append((("fill_value",), "fill_value is only used with missing: fill"))
        raise_issues(issues)
        return self

    def value_problem(self, value: object) -> str | None:
        """Why ``value`` breaks this column's type, range or categories, or None if it fits."""
        if self.type == "bool":
            return None if isinstance(value, bool) else f"{value!r} is not a bool"
        if self.type == "category":
            if not isinstance(value, str):
                return f"{value!r} is not a category name (a string)"
            cats = self.categories or []
            return None if value in cats else f"{value!r} is not one of the categories {cats}"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{value!r} is not a number"
        if self.type == "int" and not (isinstance(value, int) or float(value).is_integer()):
            return f"{value!r} is not an integer"
        if math.isnan(value):
            return "NaN is not a value; it is a missing value"
        if self.range is not None and not self.range.contains(float(value)):
            return f"{value!r} is outside the range [{self.range.min}, {self.range.max}]"
        return None


class FeatureSchema(Frozen):
    """The columns of one party's table that the contract commits to.

    ``key_column`` is the join key of a feature party's table (the label party's table carries the
    same column to say which of the feature party's rows each example uses). ``id_column`` names
    the label party's row identifier, used for deterministic train/validation/test splits.
    """

    key_column: ColumnName | None = None
    id_column: ColumnName | None = None
    columns: Annotated[list[FeatureColumn], Field(max_length=2000)] = Field(default_factory=list)
    max_violation_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01

    @model_validator(mode="after")
    def _distinct(self) -> FeatureSchema:
        issues: list[Issue] = []
        seen: dict[str, int] = {}
        for i, col in enumerate(self.columns):
            if col.name in seen:
                issues.append(
                    (
                        ("columns", i, "name"),
                        f"duplicate column {col.name!r} (also columns.{seen[col.name]})",
                    )
                )
            seen.setdefault(col.name, i)
        for field in ("key_column", "id_column"):
            name = getattr(self, field)
            if name is not None and name in seen:
                issues.append(((field,), f"{name!r} is also listed as a feature column"))
        if self.key_column is not None and self.key_column == self.id_column:
            issues.append((("id_column",), "id_column and key_column must differ"))
        raise_issues(issues)
        return self

    @property
    def column_names(self) -> list[str]:
        """Names of the feature columns, in order."""
        return [c.name for c in self.columns]

    def column(self, name: str) -> FeatureColumn:
        """The column called ``name``; KeyError if there is none."""
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)
