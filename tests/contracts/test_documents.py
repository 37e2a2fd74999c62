"""Contract text is refused when it is not a well-formed document, before any field is read."""

from __future__ import annotations

import pytest

from contracts import ContractValidationError, parse_contract
from tests.contracts.util import PCB, assert_error

PRICE = "commercial.price_per_prediction"

YAML_CASES = {
    "unquoted float price": ('amount: "0.05"', "amount: 0.05", f"{PRICE}.amount", "quote it"),
    "unquoted exponent price": ('amount: "0.05"', "amount: 1e-3", f"{PRICE}.amount", "exponent"),
    "quoted exponent price": ('amount: "0.05"', 'amount: "5E-2"', f"{PRICE}.amount", "exponent"),
    "negative price": ('amount: "0.05"', 'amount: "-0.05"', f"{PRICE}.amount", "negative"),
    "duplicate share key": ('oem: "15"', 'oem: "15", pcb: "0"', "", "duplicate key 'pcb'"),
    "syntax error": ("approvers: [pcb, oem]", "approvers: [pcb, oem", "", "line"),
    "naive date": (
        "start: 2026-01-01T00:00:00Z",
        "start: 2026-01-01",
        "validity.start",
        "timezone",
    ),
}


@pytest.mark.parametrize("case", YAML_CASES, ids=list(YAML_CASES))
def test_yaml_text_rejected(case: str) -> None:
    old, new, loc, fragment = YAML_CASES[case]
    text = PCB.read_text(encoding="utf-8")
    assert old in text
    with pytest.raises(ContractValidationError) as info:
        parse_contract(text.replace(old, new, 1))
    assert_error(info.value.errors, loc, fragment)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("- a\n- b\n", "list"),
        ("just a string", "str"),
        ('{"title": "x", "title": "y"}', "duplicate key 'title'"),
        ('{"title": ', "JSON"),
    ],
)
def test_malformed_documents(text: str, fragment: str) -> None:
    with pytest.raises(ContractValidationError) as info:
        parse_contract(text)
    assert_error(info.value.errors, "", fragment)
