"""The job a contract fixes (issue 15): one derivation, its digest, field-by-field comparison,
the model family and the size bounds of the contract schema."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from contracts import ContractValidationError, read_contract, validate_contract
from contracts.export_schema import contract_schema
from contracts.job import job_terms, prepare_job, spec_digest, training_spec
from services.protocol.messages import Task
from services.protocol.terms import differences, terms_document
from services.protocol.terms import spec_digest as spec_digest_of
from tests.contracts.util import EXAMPLES, document

PCB = EXAMPLES / "pcb-paste-quality.yaml"
URLS = {"paste": "http://paste.test"}


def _refused(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ContractValidationError) as err:
        validate_contract(doc)
    return {e["loc"]: e["msg"] for e in err.value.errors}


def test_the_job_is_what_the_contract_says() -> None:
    contract = read_contract(PCB)
    terms = job_terms(contract)
    assert terms.task is Task.BINARY and terms.label_party == "pcb"
    assert terms.label_column == "defect" and terms.id_column == "board_id"
    # every party's columns, in the contract's order; the label proxy defect_type is none
    assert terms.columns == {p.name: p.feature_schema.column_names for p in contract.parties}
    assert "defect_type" not in terms.columns["pcb"] and len(terms.columns["paste"]) == 13
    assert terms.key_columns == {"paste": "paste_lot_id"}
    assert terms.model == contract.model and terms.model.family == "nn"
    assert terms.protection.model_dump() == contract.protection.to_wire()
    assert (terms.epochs, terms.batch_size, terms.patience) == (60, 2048, 8)

    spec = training_spec(contract, job_id="j1", contract_id="c1", feature_urls=URLS, seed=3)
    assert spec.columns == terms.columns["pcb"]
    assert spec.feature_parties[0].columns == terms.columns["paste"]
    assert spec.epochs == 60 and spec.batch_size == 2048 and spec.seed == 3
    # the spec states exactly the contract's terms: equal digests, no difference
    assert differences(terms.model_dump(mode="json"), terms_document(spec)) == []
    assert spec_digest_of(spec) == spec_digest(contract)

    body = prepare_job(contract, "paste", job_id="j1", seed=3, contract_id="c1")
    assert body.segment == contract.model.bottom["paste"] and body.terms == terms
    assert body.columns == terms.columns["paste"] and body.family == "nn"
    with pytest.raises(KeyError, match="paste"):
        training_spec(contract, job_id="j1", contract_id="c1", feature_urls={})


def test_differences_name_each_field() -> None:
    contract = read_contract(PCB)
    terms = job_terms(contract).model_dump(mode="json")
    asked = copy.deepcopy(terms)
    asked["task"] = "multiclass"
    asked["label_column"] = "defect_type"
    asked["columns"]["pcb"] = [*asked["columns"]["pcb"], "defect_type"]
    asked["model"]["bottom"]["paste"]["hidden"] = [4096] * 4
    found = {d.field: (d.contract, d.job) for d in differences(terms, asked)}
    assert set(found) == {"task", "label_column", "columns.pcb", "model.bottom.paste.hidden"}
    assert found["model.bottom.paste.hidden"] == ([64], [4096] * 4)
    # 1 and 1.0 are the same JSON number; True and 1 are not
    assert differences({"a": 1}, {"a": 1.0}) == [] and differences({"a": True}, {"a": 1})


def test_the_spec_digest_changes_with_any_term() -> None:
    doc = document(PCB)
    base = spec_digest(validate_contract(doc))
    doc["model"]["bottom"]["paste"]["out"] = 16
    assert spec_digest(validate_contract(doc)) != base
    doc = document(PCB)
    doc["title"] = "another title"  # not a term of the job
    assert spec_digest(validate_contract(doc)) == base


def test_the_model_family_is_a_tagged_union() -> None:
    doc = document(PCB)
    del doc["model"]["family"]  # documents from before families existed are nn
    assert validate_contract(doc).model.family == "nn"
    doc["model"]["family"] = "forest"
    errors = _refused(doc)
    assert "forest" in errors["model.family"] and "gbdt" in errors["model.family"]
    doc["model"]["family"] = "gbdt"  # an nn model section under the tree family: mixed, refused
    errors = _refused(doc)
    assert "unknown field" in errors["model.bottom"]
    schema = contract_schema()
    model = schema["properties"]["model"]
    assert model["discriminator"]["propertyName"] == "family"
    assert set(model["discriminator"]["mapping"]) == {"nn", "gbdt"}


@pytest.mark.parametrize(
    ("section", "change", "loc"),
    [
        ("bottom", {"hidden": [8] * 9, "out": 8}, "model.bottom.paste.hidden"),
        ("bottom", {"hidden": [4097], "out": 8}, "model.bottom.paste.hidden.0"),
        ("bottom", {"hidden": [4096] * 4, "out": 4096}, "model.bottom.paste"),
        ("top", {"interactive": 16, "hidden": [32] * 9}, "model.top.hidden"),
    ],
)
def test_model_sizes_are_bounded(section: str, change: dict[str, Any], loc: str) -> None:
    doc = document(PCB)
    if section == "bottom":
        doc["model"]["bottom"]["paste"] = change
    else:
        doc["model"]["top"] = change
    errors = _refused(doc)
    assert loc in errors, errors


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_epochs", 1001), ("batch_size", 65_537), ("patience", 0), ("test_fraction", 0.5)],
)
def test_training_terms_are_bounded(field: str, value: float) -> None:
    doc = document(PCB)
    doc["training"][field] = value
    assert f"training.{field}" in _refused(doc)


def test_the_exported_schema_carries_the_bounds() -> None:
    defs = contract_schema()["$defs"]
    hidden = defs["SegmentSpec"]["properties"]["hidden"]
    assert hidden["maxItems"] == 8 and hidden["items"]["maximum"] == 4096
    training = defs["TrainingTerms"]["properties"]
    assert training["max_epochs"]["maximum"] == 1000
    assert training["batch_size"]["maximum"] == 65_536
