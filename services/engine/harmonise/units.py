"""Units a party declares for its table's columns.

A CSV has no place for units, so a party states them in a small side file: a YAML or JSON mapping
from column name to unit text, e.g. ``{viscosity_pa_s: Pa.s, metal_content_pct: "%"}``. A Parquet
file may instead carry a ``unit`` entry in a column's field metadata; the side file wins where both
name a column. Units compare as exact text, as the contract writes them (``Pa.s`` is not
``mPa.s``, ``degC`` is not ``C``).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import yaml

UNIT_METADATA_KEY = b"unit"
"""Field-metadata key under which a Parquet/Arrow column may carry its unit."""


class UnitsError(ValueError):
    """The units file cannot be read or is not a mapping of column names to unit text."""


def read_units(path: Path | str) -> dict[str, str]:
    """A units side file (YAML or JSON): column name -> unit."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UnitsError(f"cannot read units file {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UnitsError(f"units file {p} is not valid YAML or JSON: {exc}") from None
    return parse_units(doc, str(p))


def parse_units(doc: object, source: str = "units") -> dict[str, str]:
    """Check that ``doc`` maps column names to non-empty unit text (numbers become text)."""
    if not isinstance(doc, dict):
        raise UnitsError(f"{source} must map column names to units, e.g. {{viscosity_pa_s: Pa.s}}")
    units: dict[str, str] = {}
    for name, unit in doc.items():
        if not isinstance(name, str) or not isinstance(unit, str | int | float):
            raise UnitsError(f"{source}: {name!r} must map a column name to a unit as text")
        if isinstance(unit, bool) or not str(unit).strip():
            raise UnitsError(f"{source}: the unit of {name!r} must be non-empty text")
        units[name] = str(unit).strip()
    return units


def metadata_units(table: pa.Table) -> dict[str, str]:
    """Units carried in the table's own field metadata (``unit``), if any."""
    units: dict[str, str] = {}
    for f in table.schema:
        raw = (f.metadata or {}).get(UNIT_METADATA_KEY)
        if raw:
            units[f.name] = raw.decode("utf-8", errors="replace").strip()
    return units
