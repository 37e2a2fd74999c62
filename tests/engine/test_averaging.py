"""Weight averaging (services/engine/averaging.py): linear over additive shares, in lockstep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.engine.averaging import WeightAverage, fold, step_decay
from services.engine.interactive import SgdShare
from services.engine.tasks import Labels
from services.engine.training import fit_local
from services.protocol.messages import ModelSpec, OptimizerSpec, SegmentSpec, Task, TopSpec


def test_averages_of_two_shares_sum_to_the_average_of_the_weight() -> None:
    rng = np.random.default_rng(0)
    spec = OptimizerSpec(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.01)
    a0, p0 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    whole, a, p = SgdShare(a0 + p0, spec), SgdShare(a0, spec), SgdShare(p0, spec)
    avg_w, avg_a, avg_p = whole.w.copy(), a.w.copy(), p.w.copy()
    for t in range(200):
        g = rng.normal(size=(5, 3))
        r = rng.normal(size=(5, 3)) * 1e3  # the mask A picks: P's share takes g + r, A's -r
        whole.step(g)
        a.step(-r)
        p.step(g + r)
        avg_w, avg_a, avg_p = (
            fold(x, s.w, 0.98, t) for x, s in ((avg_w, whole), (avg_a, a), (avg_p, p))
        )
    np.testing.assert_allclose(avg_a + avg_p, avg_w, rtol=0, atol=1e-9)
    assert not np.allclose(avg_w, whole.w)  # the average is not the last weight


def test_weight_average_follows_fold_and_swaps_back() -> None:
    lin = torch.nn.Linear(3, 2)
    avg = WeightAverage(lin.parameters(), 0.9)
    expected = lin.weight.detach().double().numpy().copy()
    for t in range(30):
        with torch.no_grad():
            lin.weight.add_(torch.randn_like(lin.weight))
        avg.update()
        expected = fold(expected, lin.weight.detach().double().numpy(), 0.9, t)
    raw = lin.weight.detach().clone()
    with avg.applied():
        np.testing.assert_allclose(lin.weight.detach().double().numpy(), expected, atol=1e-5)
    assert torch.equal(lin.weight.detach(), raw)
    assert step_decay(0.9, 0) == pytest.approx(0.1) and step_decay(0.9, 1000) == 0.9


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_decay_out_of_range_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(torch.nn.Linear(2, 1).parameters(), decay)


def test_fit_local_with_averaging_tests_the_averaged_weights() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=200)).astype(np.float32)
    labels = Labels(Task.REGRESSION, y, [])
    splits = np.array([0] * 140 + [1] * 30 + [2] * 30, dtype=np.int8)
    spec = ModelSpec(bottom={"a": SegmentSpec(hidden=[8], out=4)}, top=TopSpec(interactive=4))
    run = {"epochs": 6, "batch_size": 16, "patience": 6, "seed": 3}
    plain = fit_local({"a": x}, labels, splits, spec, **run)  # type: ignore[arg-type]
    again = fit_local({"a": x}, labels, splits, spec, **run)  # type: ignore[arg-type]
    averaged = fit_local({"a": x}, labels, splits, spec, ema_decay=0.9, **run)  # type: ignore[arg-type]
    assert plain.test == again.test
    assert averaged.test != plain.test
    assert averaged.history[0].validation != plain.history[0].validation
