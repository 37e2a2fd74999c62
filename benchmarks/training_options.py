"""The demo's training configuration as command-line options, for the benchmarks that vary it
(ckks_agreement.py, perturbation.py): one option per ``DemoTraining`` field, its default the
demo's value."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from services.cli.demo import DEMO_TRAINING, DemoTraining


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
