"""Contract documents in the console: examples to start from, YAML views, checks as the API
makes them, the form's quick edits and diffs between versions."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

import contracts
from contracts import Contract, ContractValidationError, parse_contract
from services.registry.api.contract_input import within_budget
from services.registry.settings import RegistrySettings
from services.registry.store.contract_drafts import resolve

EXAMPLES = Path(contracts.__file__).resolve().parent / "examples"
MAX_YAML = 256 * 1024


def examples() -> list[str]:
    """The example contracts one can start from."""
    return sorted(p.stem for p in EXAMPLES.glob("*.yaml"))


def as_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


def check_document(text: str, settings: RegistrySettings, session: Session) -> Contract:
    """The contract in ``text`` as the API would take it, or :class:`ContractValidationError`
    listing each field's problem."""
    contract = parse_contract(text)
    within_budget(contract, settings)
    resolve(session, contract)  # every org names an approved organisation
    return contract


def errors_of(exc: ContractValidationError) -> list[dict[str, str]]:
    return [{"loc": e["loc"] or "(document)", "msg": e["msg"]} for e in exc.errors]


def apply_form(text: str, title: str, price: str) -> str:
    """The quick-edit fields of the form written into the YAML (when it parses)."""
    if not title and not price:
        return text
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(data, dict):
        return text
    if title:
        data["title"] = title
    pricing = data.get("commercial")
    if (
        price
        and isinstance(pricing, dict)
        and isinstance(pricing.get("price_per_prediction"), dict)
    ):
        pricing["price_per_prediction"]["amount"] = price
    return as_yaml(data)


def diff(old: dict[str, Any], new: dict[str, Any], a: int, b: int) -> list[str]:
    return list(
        difflib.unified_diff(
            as_yaml(old).splitlines(),
            as_yaml(new).splitlines(),
            f"version {a}",
            f"version {b}" if b else "your edit",
            lineterm="",
        )
    )
