"""Data harmonisation: a party's table against the feature schema it committed to.

Runs at the party, on its own table; only the :class:`HarmonisationReport` (counts, rates,
pass/fail and reasons) may leave it. See docs/contracts.md, "Checking a table against the
contract".
"""

from services.engine.harmonise.check import HarmonisationError, check_party_table, check_table
from services.engine.harmonise.report import RULES, ColumnReport, HarmonisationReport, Rule
from services.engine.harmonise.units import (
    UNIT_METADATA_KEY,
    UnitsError,
    metadata_units,
    parse_units,
    read_units,
)

__all__ = [
    "RULES",
    "UNIT_METADATA_KEY",
    "ColumnReport",
    "HarmonisationError",
    "HarmonisationReport",
    "Rule",
    "UnitsError",
    "check_party_table",
    "check_table",
    "metadata_units",
    "parse_units",
    "read_units",
]
