"""The pilot trains the job a contract fixes when given one (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts import read_contract
from contracts.job import training_spec
from services.cli.demo import CONTRACT
from services.cli.pilot import PartyTable, PilotConfig, PilotError
from services.protocol.messages import Task


def _config(tmp_path: Path, label: str = "pcb") -> PilotConfig:
    return PilotConfig(
        label=PartyTable(label, tmp_path / "pcb.csv", "defect"),
        features=[PartyTable("paste", tmp_path / "paste.csv", "paste_lot_id")],
        key="paste_lot_id",
        task=Task.REGRESSION,  # the contract's task wins
        out=tmp_path,
        epochs=3,
        contract=read_contract(CONTRACT),
    )


def test_the_pilot_spec_is_the_contract_s_job(tmp_path: Path) -> None:
    urls = {"paste": "http://127.0.0.1:9"}
    spec = _config(tmp_path).spec(urls)
    want = training_spec(
        read_contract(CONTRACT), job_id="pilot", contract_id=None, feature_urls=urls
    )
    assert spec == want
    assert spec.task is Task.BINARY and spec.epochs == 60 and "defect_type" not in spec.columns


def test_party_names_must_be_the_contract_s(tmp_path: Path) -> None:
    with pytest.raises(PilotError, match="label party 'pcb'"):
        _config(tmp_path, label="maker").spec({})
