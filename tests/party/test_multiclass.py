"""A multiclass job on the pcb-paste scenario's ``defect_type`` (78% ``none``) with default
settings: it beats the majority class on the metrics that see every class, says so, and the
paste supplier, whose lots add lift, gets a non-zero contribution."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from services.cli.report import beats_majority, majority_check
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    SegmentSpec,
    Task,
    TrainingSpec,
)
from services.scenario.pcb_paste import generate
from tests.conftest import InProcess
from tests.party.test_training import train
from tests.synthetic import Vertical


async def test_defect_type_beats_the_majority_class(tmp_path: Path, in_process: InProcess) -> None:
    files = generate(tmp_path / "data", boards=5000, lots=120, seed=7)
    v = Vertical(
        label=files.pcb_maker,
        features={"paste": files.paste_supplier},
        keys={"paste": files.key_paste},
    )
    spec = TrainingSpec(
        job_id="defects",
        task=Task.MULTICLASS,
        label_column=files.label_multiclass,
        party="maker",
        feature_parties=[
            FeaturePartyRef(name="paste", url="http://paste", key_column=files.key_paste)
        ],
        model=ModelSpec(bottom={n: SegmentSpec(hidden=[64], out=32) for n in ("maker", "paste")}),
        epochs=20,
        batch_size=128,
        id_column=files.id_column,
        exclude_columns=[files.label_binary],
        protection={"mode": "plain", "defence": {"enabled": False}},
    )
    status = await train(in_process(v), spec)
    assert status.state is JobState.FINISHED, status.error
    test = status.test
    assert test["majority_accuracy"] > 0.7  # an imbalanced label
    assert test["macro_f1"] > test["majority_macro_f1"] + 0.1
    assert beats_majority(test) is True
    console = Console(record=True, width=200)
    for line in majority_check(test):
        console.print(line)
    assert "beats the majority class" in console.export_text()
    shapley = status.contributions["shapley"]
    assert shapley["paste"] > 0.01 and shapley["maker"] > 0.01


def test_a_majority_class_model_is_reported_loudly() -> None:
    majority = {
        "accuracy": 0.84,
        "macro_f1": 0.15,
        "balanced_accuracy": 1 / 6,
        "majority_accuracy": 0.84,
        "majority_macro_f1": 0.15,
        **{f"auc_class_{c}": 0.5 for c in range(6)},
    }
    assert beats_majority(majority) is False
    console = Console(record=True, width=300)
    for line in majority_check(majority):
        console.print(line)
    assert "does NOT beat predicting the majority class" in console.export_text()
    assert beats_majority({"auc": 0.8}) is None
