"""The small-table pilot default (services/cli/defaults.py ``TINY``, docs/adr/0015) is a model the
split job trains exactly: feature parties' identity bottoms whose shared interactive weights
move by SGD with weight decay (linear, so both shares follow it and their sum is the
centralized model's weight), gelu in the label party's bottom and the top (dropout aside)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.cli.defaults import TINY
from services.party import protection
from services.protocol.messages import JobState, TrainingSpec
from tests.conftest import InProcess
from tests.party.test_training import centralized, spec_for, train
from tests.synthetic import Vertical


def tiny_spec(v: Vertical, mode: str) -> TrainingSpec:
    spec = spec_for(v, epochs=2)
    # dropout off: the split job's dropout masks come from the label party's key, the
    # centralized trainer's from the seed, so only a dropout-free model can match step by step
    model = replace(TINY, dropout=0.0).model(["maker", *v.features], "maker")
    assert model.interactive_optimizer.weight_decay > 0
    prot = spec.protection.model_validate({"mode": mode, "defence": {"enabled": False}})
    return spec.model_copy(update={"model": model, "protection": prot})


@pytest.mark.parametrize("mode", list(protection.MODES))
async def test_the_tiny_default_without_defence_equals_centralized(
    vertical: Vertical, in_process: InProcess, mode: str
) -> None:
    spec = tiny_spec(vertical, mode)
    status = await train(in_process(vertical, allow_plain_raw=True), spec)
    assert status.state is JobState.FINISHED, status.error
    _, central = centralized(vertical, spec, ["maker", *vertical.features])
    tol = 1e-4 if mode == "plain" else 2e-3
    for split_epoch, central_epoch in zip(status.history, central.history, strict=True):
        assert split_epoch.train_loss == pytest.approx(central_epoch.train_loss, rel=tol)
        assert split_epoch.validation["loss"] == pytest.approx(
            central_epoch.validation["loss"], rel=tol
        )
