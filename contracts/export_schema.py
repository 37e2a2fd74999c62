"""Export the contract language's JSON Schema to ``contracts/schema/contract.schema.json``.

Run ``python -m contracts.export_schema`` after changing a contract model; a test fails while the
committed file differs from the models. The schema checks structure and field formats; rules that
tie sections together (one label party, shares summing to 100, ...) are only checked by
:func:`contracts.load_contract`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from contracts.spec import CONTRACT_SCHEMA_VERSION, Contract

SCHEMA_PATH = Path(__file__).parent / "schema" / "contract.schema.json"
SCHEMA_ID = f"https://splice.dev/schemas/contract/v{CONTRACT_SCHEMA_VERSION}.json"


def contract_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a contract document."""
    schema = Contract.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def render() -> str:
    """The schema as the committed file holds it: two-space indent, trailing newline."""
    return json.dumps(contract_schema(), indent=2, ensure_ascii=False) + "\n"


def export(path: str | Path = SCHEMA_PATH) -> Path:
    """Write the schema to ``path`` and return it."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m contracts.export_schema [PATH]``."""
    args = sys.argv[1:] if argv is None else argv
    written = export(args[0]) if args else export()
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
