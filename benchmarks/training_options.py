"""The demo's training configuration as command-line options, for the benchmarks that vary it
(ckks_agreement.py, perturbation.py): one option per ``DemoTraining`` field, its default the
demo's value."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from services.cli.demo import DEMO_TRAINING, DemoTraining
from services.protocol.messages import (
    FeaturePartyRef,
    ModelSpec,
    ProtectionSpec,
    Task,
    TrainingSpec,
)
from services.scenario.pcb_paste import ScenarioFiles


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """``--epochs``, ``--batch-size``, ``--lr``, ... with the demo's values as defaults."""
    for field in fields(DemoTraining):
        default = getattr(DEMO_TRAINING, field.name)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(default), default=default
        )


def training_from(args: argparse.Namespace, **overrides: Any) -> DemoTraining:
    """The configuration the options describe (``overrides`` win)."""
    values = {field.name: getattr(args, field.name) for field in fields(DemoTraining)}
    return DemoTraining(**(values | overrides))


def plain_demo_spec(
    files: ScenarioFiles,
    cfg: DemoTraining,
    *,
    job_id: str,
    seed: int,
    model: ModelSpec | None = None,
) -> TrainingSpec:
    """The demo's training job on the scenario in plain mode (``model``: else ``cfg``'s)."""
    return TrainingSpec(
        job_id=job_id,
        task=Task.BINARY,
        label_column=files.label_binary,
        party="pcb",
        id_column=files.id_column,
        exclude_columns=[files.label_multiclass],
        feature_parties=[
            FeaturePartyRef(name="paste", url="http://paste", key_column=files.key_paste)
        ],
        model=model or cfg.model(),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        patience=cfg.patience,
        seed=seed,
        protection=ProtectionSpec(mode="plain"),
    )
