"""The committed JSON Schema is the one the models export (drift check)."""

from __future__ import annotations

import json
from pathlib import Path

from contracts.export_schema import SCHEMA_PATH, contract_schema, export, main, render
from tests.contracts.util import document


def test_committed_schema_matches_the_models() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == render(), (
        "contracts/schema/contract.schema.json is stale: run `python -m contracts.export_schema`"
    )


def test_export_writes_the_rendered_schema(tmp_path: Path) -> None:
    out = export(tmp_path / "nested" / "contract.schema.json")
    assert out.read_text(encoding="utf-8") == render()
    assert main([str(tmp_path / "again.json")]) == 0
    assert json.loads((tmp_path / "again.json").read_text(encoding="utf-8")) == contract_schema()


def test_schema_describes_the_document() -> None:
    schema = contract_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    assert schema["additionalProperties"] is False
    assert set(document()) <= set(schema["properties"])
    money = schema["$defs"]["Money"]["properties"]
    assert money["amount"]["type"] == "string" and "pattern" in money["amount"]
    assert "EUR" in money["currency"]["enum"] and "JPY" in money["currency"]["enum"]
    for name, definition in schema["$defs"].items():
        if definition.get("type") == "object":
            assert definition.get("additionalProperties") is False, name
