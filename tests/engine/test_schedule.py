"""Reduce-on-plateau in lockstep (services/engine/schedule.py, docs/adr/0015): the label party's
decision, its floor, shares that follow it stay the unshared weight, and the centralized
trainer applies it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.engine.schedule import PlateauSchedule, PlateauState, apply_scale, base_rates
from services.engine.tasks import Labels
from services.engine.training import fit_local
from services.protocol.messages import ModelSpec, OptimizerSpec, SegmentSpec, Task


def test_the_rate_drops_after_patience_epochs_without_a_lower_loss_down_to_the_floor() -> None:
    state = PlateauState(PlateauSchedule(factor=0.5, patience=2, min_scale=0.2))
    losses = [1.0, 0.8, 0.81, 0.80, 0.7, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
    decided = [state.after_epoch(e, loss) for e, loss in enumerate(losses)]
    assert decided == [None, None, None, 0.5, None, None, 0.25, None, 0.2, None, None]
    assert state.changes == [(3, 0.5), (6, 0.25), (8, 0.2)]  # all a feature party learns


@pytest.mark.parametrize(
    "bad", [{"factor": 1.0}, {"factor": 0.0}, {"patience": 0}, {"min_scale": 0.0}]
)
def test_bad_settings_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PlateauSchedule(**bad)  # type: ignore[arg-type]


def test_two_shares_following_the_same_decisions_sum_to_the_unshared_weight() -> None:
    gen = torch.Generator().manual_seed(3)
    whole = torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64))
    share = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    a = torch.nn.Parameter(share.clone())
    b = torch.nn.Parameter(whole.detach() - share)
    opts = [torch.optim.SGD([p], lr=0.8, momentum=0.9) for p in (whole, a, b)]
    rates = base_rates(opts)
    scales = {3: 0.5, 6: 0.25}
    for step in range(10):
        if step in scales:
            apply_scale(opts, rates, scales[step])
        grad = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        part = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        whole.grad, a.grad, b.grad = grad, part, grad - part
        for opt in opts:
            opt.step()
    assert opts[1].param_groups[0]["lr"] == pytest.approx(0.2)
    torch.testing.assert_close(a.detach() + b.detach(), whole.detach(), rtol=0, atol=1e-12)


def test_the_centralized_trainer_applies_the_schedule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.1 * rng.normal(size=300)).astype(np.float32)
    splits = np.array([0] * 200 + [1] * 50 + [2] * 50, dtype=np.int8)
    spec = ModelSpec(bottom={"a": SegmentSpec(hidden=[8], out=4)}, optimizer=OptimizerSpec(lr=0.05))
    run = {"epochs": 12, "batch_size": 50, "patience": 12, "seed": 0}
    labels = Labels(Task.REGRESSION, y, [])
    plain = fit_local({"a": x}, labels, splits, spec, **run)  # type: ignore[arg-type]
    scheduled = fit_local(
        {"a": x}, labels, splits, spec, schedule=PlateauSchedule(patience=1), **run
    )  # type: ignore[arg-type]
    assert plain.rate_changes == [] and scheduled.rate_changes
    assert scheduled.rate_changes[0][1] == 0.5
    first = scheduled.rate_changes[0][0]
    # identical up to the first decision, different after it
    assert [h.train_loss for h in plain.history[: first + 1]] == [
        h.train_loss for h in scheduled.history[: first + 1]
    ]
    assert plain.history[first + 1].train_loss != scheduled.history[first + 1].train_loss
