"""The example contract fixes exactly the demo's training configuration (issue 17)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from contracts import read_contract
from services.cli.demo import CONTRACT, DEMO_TRAINING, demo_contract
from services.protocol.messages import ModelSpec


def test_the_example_contract_is_the_demo_s_training(tmp_path: Path) -> None:
    # demo_contract returns the example itself only when nothing differs from it
    assert demo_contract(tmp_path, "ckks") == CONTRACT
    signed = read_contract(CONTRACT)
    assert ModelSpec.model_validate(signed.model.model_dump()) == DEMO_TRAINING.model()
    assert signed.training.max_epochs == DEMO_TRAINING.epochs
    assert signed.training.batch_size == DEMO_TRAINING.batch_size
    assert signed.training.patience == DEMO_TRAINING.patience


def test_another_configuration_gets_its_own_contract(tmp_path: Path) -> None:
    other = replace(DEMO_TRAINING, dropout=DEMO_TRAINING.dropout + 0.05)
    path = demo_contract(tmp_path, "ckks", training=other)
    assert path != CONTRACT
    model = read_contract(path).model
    assert model.model_dump()["top"]["dropout"] == other.dropout


def test_dropout_reaches_the_trained_segments_only() -> None:
    model = replace(DEMO_TRAINING, dropout=0.25).model()
    assert model.bottom["pcb"].dropout == 0.25 and model.top.dropout == 0.25
    assert model.bottom["paste"].kind == "identity" and model.bottom["paste"].dropout == 0.0
