"""``splice pilot --tune``: argument checks (nothing starts on bad input) and the trial specs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.cli.pilot import PartyTable, PilotConfig
from services.cli.tune import (
    TUNABLE,
    TuneError,
    batch_choices,
    contract_training,
    converged_point,
    run_trials,
    suggest,
    too_late,
    tune_config,
)
from services.protocol.messages import (
    EpochMetrics,
    JobState,
    ModelSpec,
    SegmentSpec,
    Task,
    TrainingSpec,
    TrainingStatus,
    nn_model,
)
from tests.synthetic import make_vertical


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tune", "0"], "at least 1 trial"),
        (["--tune", "3", "--tune-budget", "0"], "positive number of seconds"),
        (["--tune", "3", "--tune-params", "momentum"], "unknown --tune-params"),
        (["--tune-budget", "60"], "need --tune N"),
    ],
)
def test_bad_tuning_input_is_refused_before_anything_starts(
    tmp_path: Path, args: list[str], message: str
) -> None:
    v = make_vertical(tmp_path / "data", rows=200, lots=20, seed=1)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "pilot", "--label", f"maker={v.label}:y", "--features", f"f0={v.features['f0']}:lot",
            "--key", "lot", "--task", "binary", "--out", str(out), *args,
        ],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()  # no party started, nothing written


def test_tune_config_defaults_to_every_parameter() -> None:
    cfg = tune_config(5, 600.0)
    assert cfg.params == TUNABLE and cfg.budget_seconds == 600.0
    with pytest.raises(TuneError):
        tune_config(2, float("nan"))


def _base() -> TrainingSpec:
    cfg = PilotConfig(
        label=PartyTable("maker", Path(__file__), "y"),
        features=[PartyTable("f0", Path(__file__), "lot")],
        key="lot",
        task=Task.BINARY,
        out=Path("unused"),
        batch_size=256,
        model=ModelSpec(
            bottom={"maker": SegmentSpec(hidden=[64], out=32), "f0": SegmentSpec(kind="identity")}
        ),
    )
    return cfg.spec({})


def test_a_trial_changes_only_the_tuned_parameters() -> None:
    base = _base()
    trial = optuna.trial.FixedTrial(
        {"width": 128, "cut": 16, "interactive": 32, "top": 64, "lr": 0.004, "batch_size": 512}
    )
    spec = suggest(trial, base, ("widths", "lr", "batch"), train_rows=10_000)
    assert spec.model.bottom["maker"].hidden == [128] and spec.model.bottom["maker"].out == 16
    assert spec.model.bottom["f0"].kind == "identity"  # an identity bottom stays one
    assert spec.model.top.interactive == 32 and spec.model.optimizer.lr == 0.004
    assert spec.batch_size == 512 and spec.epochs == base.epochs
    section = contract_training(spec)
    assert section["training"]["batch_size"] == 512
    assert ModelSpec.model_validate(section["model"]) == spec.model


def test_batch_choices_stay_near_the_untuned_batch() -> None:
    assert batch_choices(256, 10_000) == [128, 256, 512, 1024]  # at least 8 steps an epoch
    assert batch_choices(2048, 100_000) == [1024, 2048]
    assert batch_choices(32, 300) == [32]


def test_trials_stop_at_the_budget_and_the_lowest_validation_loss_wins() -> None:
    losses = iter([0.5, 0.3, 0.4])
    seen: list[str] = []

    def train(spec: TrainingSpec) -> TrainingStatus:
        loss = next(losses)
        return TrainingStatus(
            job_id=spec.job_id,
            task=Task.BINARY,
            epochs=1,
            state=JobState.FINISHED,
            best_epoch=0,
            history=[EpochMetrics(epoch=0, train_loss=1.0, seconds=0.1, validation={"loss": loss})],
        )

    tuning = run_trials(tune_config(3, None, ["lr"]), _base(), 1000, train, seen.append)
    assert [t.loss for t in tuning.trials] == [0.5, 0.3, 0.4]
    assert tuning.best.number == 1 and tuning.best.spec.job_id == "pilot-trial1"
    assert len(seen) == 3 and seen[0].startswith("trial 1/3: defaults")
    # the first trial is the untuned configuration, the others are the sampler's
    assert tuning.trials[0].spec.model == _base().model
    assert tuning.trials[1].spec.model.optimizer.lr != _base().model.optimizer.lr
    short = run_trials(tune_config(3, 1e-9, ["lr"]), _base(), 1000, train_once(), seen.append)
    assert len(short.trials) == 1  # the first trial always runs; none starts after the budget
    assert "time budget" in seen[-1]


def train_once():  # type: ignore[no-untyped-def]
    def train(spec: TrainingSpec) -> TrainingStatus:
        return TrainingStatus(
            job_id=spec.job_id,
            task=Task.BINARY,
            epochs=1,
            state=JobState.FINISHED,
            best_epoch=0,
            history=[EpochMetrics(epoch=0, train_loss=1.0, seconds=0.1, validation={"loss": 0.2})],
        )

    return train


def test_interactive_rate_and_the_top_width_are_tuned_apart() -> None:
    base = _base()
    trial = optuna.trial.FixedTrial({"width": 256, "cut": 64, "interactive": 64, "top": 128,
                                     "interactive_lr": 0.5})  # fmt: skip
    model = nn_model(suggest(trial, base, ("widths", "interactive_lr"), train_rows=10_000).model)
    untuned = nn_model(base.model)
    assert model.top.hidden == [128] and model.bottom["maker"].hidden == [256]
    assert model.interactive_optimizer.lr == 0.5
    assert model.interactive_optimizer.momentum == untuned.interactive_optimizer.momentum
    assert model.optimizer == untuned.optimizer  # the bottoms' and top's rate untouched


def test_trial_two_is_the_converged_point_of_the_tuned_parameters() -> None:
    assert converged_point(("lr", "batch"), [128, 256, 1024]) == {"lr": 2e-3, "batch_size": 1024}
    point = converged_point(TUNABLE, [256])
    assert point["interactive_lr"] == 0.8 and point["width"] == 128 and point["epochs"] == 60
    seen: list[TrainingSpec] = []

    def train(spec: TrainingSpec) -> TrainingStatus:
        seen.append(spec)
        status: TrainingStatus = train_once()(spec)  # type: ignore[no-untyped-call]
        return status

    run_trials(tune_config(3, None, ["interactive_lr", "lr"]), _base(), 10_000, train, print)
    second, third = nn_model(seen[1].model), nn_model(seen[2].model)
    assert second.interactive_optimizer.lr == 0.8 and second.optimizer.lr == 2e-3
    assert third.interactive_optimizer.lr != 0.8  # then the sampler


def test_no_trial_starts_that_a_typical_trial_would_not_finish() -> None:
    assert not too_late(100.0, 0.0, [])  # the first trial always runs
    assert not too_late(100.0, 60.0, [30.0, 40.0, 10.0])  # 60 + 30 fits
    assert too_late(100.0, 75.0, [30.0, 40.0, 10.0])
    assert not too_late(None, 1e9, [30.0])


def test_feature_bottoms_may_become_identity_never_the_label_partys() -> None:
    base = _base()
    spec = suggest(
        optuna.trial.FixedTrial(
            {"feature_bottom": "identity", "width": 32, "cut": 16, "interactive": 16, "top": 32}
        ),  # fmt: skip
        base.model_copy(
            update={
                "model": nn_model(base.model).model_copy(
                    update={
                        "bottom": {
                            "maker": SegmentSpec(hidden=[64], out=32),
                            "f0": SegmentSpec(hidden=[64], out=32),
                        }
                    }
                )
            }
        ),  # fmt: skip
        ("widths", "feature_bottom"),
        train_rows=10_000,
    )
    model = nn_model(spec.model)
    assert model.bottom["f0"].kind == "identity"
    assert model.bottom["maker"].kind == "mlp" and model.bottom["maker"].hidden == [32]
    assert converged_point(("feature_bottom",), [256]) == {"feature_bottom": "identity"}
