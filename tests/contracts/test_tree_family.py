"""The contract's model section names its family: a ``gbdt`` contract with typed tree
parameters loads; unknown families, invalid tree parameters and contracts mixing families are
refused naming the field; nn-only code refuses a tree job with ``family_not_implemented``."""

from __future__ import annotations

import pytest

from contracts import load_contract
from services.engine.gbdt.params import GbdtParams
from services.protocol.errors import ErrorCode, SpliceError
from services.protocol.messages import GbdtModelSpec, nn_model
from tests.contracts.util import EXAMPLES, assert_error, errors_of, mutated, set_at

TREES = EXAMPLES / "pcb-paste-trees.yaml"


def test_tree_contract_loads_with_typed_parameters() -> None:
    c = load_contract(TREES)
    assert isinstance(c.model, GbdtModelSpec)
    assert (c.model.trees, c.model.depth, c.model.bins, c.model.learning_rate) == (50, 5, 32, 0.3)
    assert c.cut_widths() == {}
    # the engine takes the contract's tree parameters as they are
    params = GbdtParams.parse(
        {**c.model.model_dump(exclude={"family"}), "protection": c.protection.scheme}
    )
    assert params.trees == 50 and params.protection == "ckks"
    with pytest.raises(SpliceError) as info:
        c.model_spec()  # the neural protocol refuses a tree contract by name
    assert info.value.code is ErrorCode.FAMILY_NOT_IMPLEMENTED
    with pytest.raises(SpliceError):
        nn_model(c.model)


@pytest.mark.parametrize(
    ("change", "loc", "fragment"),
    [
        (set_at("model.family", "forest"), "model.family", "gbdt"),
        (set_at("model.depth", 0), "model.depth", "greater than"),
        (set_at("model.bins", 1000), "model.bins", "less than"),
        (set_at("model.learning_rate", 0), "model.learning_rate", "greater than"),
        (set_at("model.row_subsample", 1.5), "model.row_subsample", "less than"),
        (set_at("model.bottom", {"pcb": {"out": 8}}), "model.bottom", "unknown field"),
        (
            set_at("protection.label_defence", {"enabled": True}),
            "protection.label_defence.enabled",
            "neural",
        ),
        (
            set_at("protection.label_privacy", {"mechanism": "randomized_response"}),
            "protection.label_privacy.mechanism",
            "gbdt",
        ),
    ],
    ids=[
        "unknown family",
        "depth",
        "bins",
        "learning rate",
        "row subsample",
        "mixed: nn bottom",
        "mixed: label defence",
        "mixed: label dp",
    ],
)
def test_bad_tree_contracts_refused(change: object, loc: str, fragment: str) -> None:
    errors = errors_of(mutated(change, TREES))  # type: ignore[arg-type]
    assert_error(errors, loc, fragment)
