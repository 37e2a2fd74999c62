"""Split training in one process (ASGI transports): the math equals centralized training."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.cli.baselines import join_locally, train_baseline
from services.engine.training import min_epochs
from services.protocol.messages import (
    FeaturePartyRef,
    JobState,
    ModelSpec,
    OptimizerSpec,
    SegmentSpec,
    Task,
    TopSpec,
    TrainingSpec,
    TrainingStatus,
)
from services.protocol.peers import PartyClient
from tests.conftest import InProcess, job_keys
from tests.synthetic import Vertical, make_vertical


def spec_for(v: Vertical, *, epochs: int = 4, batch_size: int = 64, **kw: object) -> TrainingSpec:
    names = ["maker", *v.features]
    return TrainingSpec.model_validate(
        {
            "job_id": "job-1",
            "task": Task.BINARY,
            "label_column": "y",
            "party": "maker",
            "id_column": "row_id",
            "feature_parties": [
                FeaturePartyRef(name=n, url=f"http://{n}", key_column=v.keys[n]) for n in v.features
            ],
            "model": ModelSpec(
                bottom={n: SegmentSpec(hidden=[16], out=8) for n in names},
                top=TopSpec(interactive=8, hidden=[8]),
            ),
            "epochs": epochs,
            "batch_size": batch_size,
            "patience": 100,
            "seed": 11,
            "protection": {"mode": "plain", "defence": {"enabled": False}},
            **kw,
        }
    )


async def train(client: PartyClient, spec: TrainingSpec) -> TrainingStatus:
    status = await client.start_training(spec)
    for _ in range(1200):
        if status.state in (JobState.FINISHED, JobState.FAILED):
            return status
        await asyncio.sleep(0.05)
        status = await client.training(spec.job_id)
    raise AssertionError("training did not finish")


def centralized(v: Vertical, spec: TrainingSpec, parties: list[str]):  # type: ignore[no-untyped-def]
    local = join_locally(
        spec, str(v.label), {n: str(p) for n, p in v.features.items()}, dict(v.keys)
    )
    keys = job_keys(["maker", *v.features], spec.job_id)
    return local, train_baseline(local, spec, parties, keys=keys)


@pytest.mark.parametrize("bins", [0, 6])
async def test_split_training_equals_centralized(
    vertical: Vertical, in_process: InProcess, bins: int
) -> None:
    """Same seeds and batches: every epoch's loss and metrics match the one-process model.

    With ``numeric_bins`` every party fits its piecewise-linear encoding on its own rows, as
    the centralized baseline does on the same tables."""
    spec = spec_for(vertical)
    if bins:
        model = spec.model.model_copy(
            update={
                "bottom": {
                    p: b.model_copy(update={"numeric_bins": bins})
                    for p, b in spec.model.bottom.items()
                }
            }
        )
        spec = spec.model_copy(update={"model": model})
    status = await train(in_process(vertical), spec)
    assert status.state is JobState.FINISHED, status.error
    local, central = centralized(vertical, spec, ["maker", "f0"])
    plain = join_locally(
        spec_for(vertical), str(vertical.label), {n: str(p) for n, p in vertical.features.items()},
        dict(vertical.keys),
    )  # fmt: skip
    for party in ("maker", "f0"):  # the bins widen each party's numeric inputs
        widths = (local.inputs[party].shape[1], plain.inputs[party].shape[1])
        assert (widths[0] > widths[1]) if bins else (widths[0] == widths[1])
    assert status.rows["aligned"] == local.data.rows.shape[0]
    # rows whose lot the feature party lacks are dropped by alignment
    assert 0 < status.rows["aligned"] < status.rows["label_rows"]
    assert len(status.history) == len(central.history) == spec.epochs
    for split_epoch, central_epoch in zip(status.history, central.history, strict=True):
        assert split_epoch.train_loss == pytest.approx(central_epoch.train_loss, rel=1e-4)
        assert split_epoch.validation["auc"] == pytest.approx(
            central_epoch.validation["auc"], abs=1e-4
        )
    assert status.test["auc"] == pytest.approx(central.test["auc"], abs=1e-4)
    assert status.bytes_sent > 0 and status.bytes_received > 0


async def test_two_feature_parties_beat_label_party_alone(tmp_path, in_process: InProcess) -> None:  # type: ignore[no-untyped-def]
    v = make_vertical(tmp_path / "d2", rows=2500, lots=100, seed=5, parties=2)
    spec = spec_for(v, epochs=12, batch_size=128)
    status = await train(in_process(v), spec)
    assert status.state is JobState.FINISHED, status.error
    _, alone = centralized(v, spec, ["maker"])
    _, both = centralized(v, spec, ["maker", "f0", "f1"])
    assert status.test["auc"] > alone.test["auc"] + 0.05
    assert status.test["auc"] == pytest.approx(both.test["auc"], abs=1e-3)
    assert set(status.test) == {"auc", "accuracy", "log_loss", "loss"}
    # contributions on the validation split: every party, and Shapley is efficient: the values
    # add up to the restored model's validation AUC minus the all-baseline coalition's 0.5
    shapley = status.contributions["shapley"]
    assert set(shapley) == set(status.contributions["leave_one_out"]) == {"maker", "f0", "f1"}
    assert status.best_epoch is not None
    best = status.history[status.best_epoch].validation["auc"]
    assert sum(shapley.values()) == pytest.approx(best - 0.5, abs=1e-6)
    assert all(v > 0 for v in shapley.values())


async def test_early_stopping_restores_the_epoch_of_lowest_validation_loss(
    vertical: Vertical, in_process: InProcess
) -> None:
    base = spec_for(vertical, epochs=40, patience=2)
    model = base.model.model_copy(update={"optimizer": OptimizerSpec(lr=0.05)})
    spec = base.model_copy(update={"model": model})
    status = await train(in_process(vertical), spec)
    assert status.state is JobState.FINISHED, status.error
    assert status.best_epoch is not None
    floor = min_epochs(spec.epochs, status.steps_per_epoch)
    assert 3 <= floor < spec.epochs
    # stopped after `patience` epochs without a lower validation loss, never before the floor
    assert len(status.history) == max(status.best_epoch + 1 + spec.patience, floor) < spec.epochs
    losses = [h.validation["loss"] for h in status.history]
    assert losses[status.best_epoch] == min(losses)
    # the test metrics are those of the restored epoch (the label party re-evaluates it)
    assert status.test["loss"] > 0


@pytest.mark.parametrize(
    ("task", "metrics"),
    [
        (Task.MULTICLASS, {"accuracy", "macro_f1", "balanced_accuracy", "loss"}),
        (Task.REGRESSION, {"r2", "rmse", "loss"}),
    ],
)
async def test_other_tasks(tmp_path, in_process: InProcess, task: Task, metrics: set[str]) -> None:  # type: ignore[no-untyped-def]
    v = make_vertical(tmp_path / "d3", rows=1200, lots=80, seed=9)
    label = "line" if task is Task.MULTICLASS else "a"
    spec = spec_for(v, epochs=3).model_copy(update={"task": task, "label_column": label})
    status = await train(in_process(v), spec)
    assert status.state is JobState.FINISHED, status.error
    assert metrics <= set(status.test)
    assert all(np.isfinite(list(status.test.values())))


async def test_failure_is_reported_not_raised(vertical: Vertical, in_process: InProcess) -> None:
    spec = spec_for(vertical).model_copy(update={"label_column": "no_such_column"})
    status = await train(in_process(vertical), spec)
    assert status.state is JobState.FAILED
    assert status.error is not None and "no_such_column" in status.error
