"""The example contracts load, and the loader, digest and derived views behave."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from contracts import (
    CkksProtection,
    Contract,
    ContractValidationError,
    ContributionShares,
    FixedShares,
    Money,
    contract_digest,
    load_contract,
    parse_contract,
    read_contract,
)
from services.protocol.errors import ErrorCode, SpliceError
from services.protocol.messages import ModelSpec, Task
from tests.contracts.util import EXAMPLES, JPY, PCB, STENCIL


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_loads(path: Path) -> None:
    contract = load_contract(path)
    assert contract.schema_version == 1
    assert contract.label_party.role == "label"
    assert contract.feature_parties


def test_pcb_paste_quality_terms() -> None:
    c = read_contract(PCB)
    assert c.owner.name == "oem"
    assert "oem" not in [p.name for p in c.parties]  # the OEM owns the contract but holds no data
    assert [p.name for p in c.parties] == ["pcb", "paste"]
    assert c.party("paste").feature_schema.key_column == "paste_lot_id"
    assert c.label_party.feature_schema.id_column == "board_id"
    assert c.task.type is Task.BINARY
    assert c.task.label.column == "defect"
    assert c.task.label.positive_class == 1
    assert isinstance(c.protection, CkksProtection)
    assert c.protection.poly_modulus_degree == 8192
    assert c.protection.coeff_mod_bit_sizes == [60, 40, 60]
    assert c.protection.label_defence.enabled
    assert c.commercial.price_per_prediction == Money(amount=Decimal("0.05"), currency="EUR")
    assert c.commercial.price_per_prediction.minor_units == 5
    shares = c.commercial.revenue_share
    assert isinstance(shares, FixedShares)
    assert shares.shares == {"pcb": Decimal(50), "paste": Decimal(35), "oem": Decimal(15)}
    assert c.payees == ["pcb", "paste", "oem"]
    assert c.usage_cap is not None and c.usage_cap.max_predictions == 2_000_000
    assert c.deployment.approvers == ["pcb", "oem"]


def test_model_spec_is_the_wire_type() -> None:
    c = read_contract(PCB)
    spec = c.model_spec()
    assert isinstance(spec, ModelSpec)
    assert set(spec.bottom) == {"pcb", "paste"}
    assert c.cut_widths() == {"pcb": 32, "paste": None}  # paste: an identity bottom
    assert ModelSpec.model_validate(spec.model_dump()) == spec


def test_three_party_contribution_example() -> None:
    c = read_contract(STENCIL)
    assert [p.name for p in c.feature_parties] == ["paste", "stencil"]
    rs = c.commercial.revenue_share
    assert isinstance(rs, ContributionShares)
    assert sum(rs.floors.values()) <= 100
    assert c.party("stencil").feature_schema.key_column == "stencil_id"


def test_jpy_example_owner_is_the_label_party() -> None:
    c = read_contract(JPY)
    assert c.commercial.price_per_prediction.currency == "JPY"
    assert c.commercial.price_per_prediction.minor_units == 8
    assert c.owner.name == c.label_party.name and c.owner.org == c.label_party.org
    assert c.payees == ["kawa", "hoshi"]
    assert c.task.type is Task.MULTICLASS


@pytest.mark.parametrize("path", [PCB, STENCIL, JPY], ids=lambda p: p.name)
def test_json_round_trip_keeps_contract_and_digest(path: Path) -> None:
    c = read_contract(path)
    again = parse_contract(c.model_dump_json())
    assert again == c
    assert contract_digest(again) == contract_digest(c)


def test_money_is_written_as_plain_decimal_strings() -> None:
    dumped = json.loads(read_contract(PCB).model_dump_json())
    assert dumped["commercial"]["price_per_prediction"] == {"amount": "0.05", "currency": "EUR"}
    assert dumped["commercial"]["revenue_share"]["shares"]["paste"] == "35"


def test_load_contract_takes_paths_and_text() -> None:
    text = PCB.read_text(encoding="utf-8")
    by_path = load_contract(PCB)
    assert load_contract(str(PCB)) == by_path
    assert load_contract(text) == by_path
    assert load_contract(by_path.model_dump_json()) == by_path


def test_digest_is_hex_sha256_and_changes_with_content() -> None:
    c = read_contract(PCB)
    digest = contract_digest(c)
    assert len(digest) == 64 and int(digest, 16) >= 0
    cheaper = c.model_copy(
        update={
            "commercial": c.commercial.model_copy(
                update={"price_per_prediction": Money(amount=Decimal("0.04"), currency="EUR")}
            )
        }
    )
    assert contract_digest(cheaper) != digest


def test_validation_error_is_a_splice_error_with_field_paths() -> None:
    with pytest.raises(ContractValidationError) as info:
        parse_contract("schema_version: 1\ntitle: x\n")
    err = info.value
    assert isinstance(err, SpliceError)
    assert err.code is ErrorCode.VALIDATION
    assert {"loc": "owner", "msg": "required field is missing"} in err.errors
    assert err.body().detail == err.errors
    assert "owner: required field is missing" in str(err)


def test_contract_is_frozen() -> None:
    c = read_contract(PCB)
    with pytest.raises(ValueError):
        c.title = "changed"  # type: ignore[misc]
    assert isinstance(c, Contract)


def test_the_example_in_the_docs_is_valid() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "contracts.md"
    text = docs.read_text(encoding="utf-8")
    block = text.split("## The example, in full", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    contract = parse_contract(block)
    assert contract.model_spec().bottom.keys() == {"pcb", "paste"}
