"""Nothing the feature party must not predict derives from what it knows (issue 13).

A curious, protocol-following feature party holds the job spec (its public seed, the job id), every
gradient it receives, its own state and its own job key. The attacks here use exactly that:

* **Replay of the defence noise.** Regenerate every noise stream it can compute (the public-seed
  recipe the defence used before, keyed streams under every key it can derive) and regress what
  it received on it: the adjusted R^2 stays at chance (<= 0.01). As a control, the same
  regression on the label party's true noise explains most of the gradient.
* **Solving for dL/dz at the first step.** ``dL/dh = dL/dz~ W0^T`` with ``W0 = W_A + W_P``: the
  party knows ``W_P``; with any ``W_A`` it can compute, the solution misses ``dL/dz~`` by more
  than ``dL/dz~`` itself. As a control, with the label party's true share it is exact.

Both attacks run in plain and ckks mode, on messages captured at the feature party's segment.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from services.engine.interactive import feature_share_init, label_share_init
from services.engine.keyed import JobKey
from services.engine.segments import derived_seed
from services.party.protection.base import LabelLink
from services.party.segment import SegmentJob
from services.protocol.messages import TrainingSpec
from tests.conftest import InProcess, job_keys
from tests.party.test_protection import protected
from tests.party.test_training import train
from tests.synthetic import Vertical, make_vertical

F64 = npt.NDArray[np.float64]
STEPS = 8
"""Gradients attacked per run (the first ones, where W is closest to its initial value)."""


@dataclass
class Capture:
    """What the feature party received (dL/dh per step) and, for the checks only, what the
    label party computed (its defended dL/dz and its noise, per step)."""

    received: dict[int, F64] = field(default_factory=dict)
    defended: dict[int, F64] = field(default_factory=dict)


@pytest.fixture
def world(tmp_path: Path) -> Vertical:
    # many lots, so each step carries a few hundred distinct rows to regress on
    return make_vertical(tmp_path / "data", rows=5000, lots=500, seed=13)


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Capture]:
    cap = Capture()
    apply, defended = SegmentJob._apply, LabelLink._defended

    def spy_apply(self: SegmentJob, step: int, grad: torch.Tensor | None) -> None:
        if grad is not None:
            cap.received[step] = grad.detach().double().numpy().copy()
        apply(self, step, grad)

    def spy_defended(self: Any, delta: torch.Tensor, examples: int, step: int) -> F64:
        out = defended(self, delta, examples, step)
        cap.defended[step] = out.copy()
        return out

    monkeypatch.setattr(SegmentJob, "_apply", spy_apply)
    monkeypatch.setattr(LabelLink, "_defended", spy_defended)
    yield cap


def _old_recipe_noise(seed: int, name: str) -> Callable[[int, tuple[int, int]], F64]:
    """The defence's generator before issue 13: torch, seeded from the public job seed, one
    draw per step in order."""
    gen = torch.Generator().manual_seed(derived_seed(seed, "defence", name))

    def draw(_: int, shape: tuple[int, int]) -> F64:
        return torch.randn(shape, generator=gen, dtype=torch.float32).double().numpy()

    return draw


def _keyed_noise(key: JobKey, name: str) -> Callable[[int, tuple[int, int]], F64]:
    def draw(step: int, shape: tuple[int, int]) -> F64:
        return key.stream("defence", name, counter=step).normal(shape)

    return draw


def _known_keys(spec: TrainingSpec, own: JobKey) -> dict[str, JobKey]:
    """Every job key the feature party can compute from what it holds."""
    seed, job, name = spec.seed, spec.job_id, "f0"
    return {
        "own key": own,
        "public(seed)": JobKey.public(seed),
        "public(seed, local, label)": JobKey.public(seed, "local", spec.party),
        "public(seed, local, f0)": JobKey.public(seed, "local", name),
        "derive(seed, job)": JobKey.derive(str(seed).encode(), job),
        "derive(job, job)": JobKey.derive(job.encode(), job),
    }


def adjusted_r2(pairs: list[tuple[F64, F64]]) -> float:
    """Mean over steps of the adjusted R^2 of regressing a step's ``y`` (rows x d) on its ``x``
    (rows x m) with an intercept: about 0 when ``x`` is unrelated to ``y``. Each step counts
    once, whatever the size of its gradients (pooling sums of squares would let one large step
    carry its own chance fit)."""
    scores = []
    for y, x in pairs:
        design = np.hstack([x, np.ones((x.shape[0], 1))])
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        ss_res = float(((y - design @ coef) ** 2).sum())
        ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
        n, p = design.shape
        scores.append(1.0 - (ss_res / (n - p)) / (ss_tot / (n - 1)))
    return float(np.mean(scores))


def _old_label_share(seed: int, name: str, d: int, m: int) -> F64:
    """The label party's initial share before issue 13 (from the public seed alone)."""
    bound = 1.0 / math.sqrt(d) / math.sqrt(2.0)
    rng = np.random.default_rng(derived_seed(seed, "interactive", name, "label"))
    out: F64 = rng.uniform(-bound, bound, size=(d, m))
    return out


def relative_error(dh: F64, w_guess: F64, truth: F64) -> float:
    """``||dz - dz~|| / ||dz~||`` for ``dz`` solved from ``dh = dz w_guess^T``."""
    solved, *_ = np.linalg.lstsq(w_guess, dh.T, rcond=None)
    return float(np.linalg.norm(solved.T - truth) / np.linalg.norm(truth))


@pytest.mark.parametrize("mode", ["plain", "ckks"])
async def test_feature_party_cannot_replay_noise_or_solve_for_dz(
    world: Vertical, in_process: InProcess, capture: Capture, mode: str
) -> None:
    spec = protected(world, mode, epochs=2, batch_size=1024)
    status = await train(in_process(world), spec)
    assert status.error is None, status.error
    steps = sorted(capture.received)[:STEPS]
    assert len(steps) == STEPS
    keys = job_keys(["maker", "f0"], spec.job_id)
    label_key, own_key = keys["maker"], keys["f0"]
    m, d = spec.model.top.interactive, spec.model.bottom["f0"].out

    # --- the replay: regress what was received on every noise the party can regenerate -----
    def r2_on(draw: Callable[[int, tuple[int, int]], F64]) -> float:
        pairs = []
        for step in steps:
            dh = capture.received[step]
            pairs.append((dh, draw(step, (dh.shape[0], m))))
        return adjusted_r2(pairs)

    candidates = {"public-seed torch recipe": _old_recipe_noise(spec.seed, "f0")}
    candidates |= {k: _keyed_noise(key, "f0") for k, key in _known_keys(spec, own_key).items()}
    replay = {name: r2_on(draw) for name, draw in candidates.items()}
    control = r2_on(_keyed_noise(label_key, "f0"))
    print(f"\n{mode}: replay adjusted R^2 {replay}; with the label party's key {control:.3f}")
    assert max(replay.values()) <= 0.01, replay
    # control: the label party's true noise explains most of what the party received
    assert control > 0.5

    # --- the first step: solve dh = dz~ W0^T with every W_A the party can compute ----------
    first = steps[0]
    dh, truth = capture.received[first], capture.defended[first]
    w_p = feature_share_init(own_key, "f0", d, m)
    guesses = {"public-seed recipe": _old_label_share(spec.seed, "f0", d, m)}
    guesses |= {
        k: label_share_init(key, "f0", d, m) for k, key in _known_keys(spec, own_key).items()
    }
    errors = {k: relative_error(dh, w_a + w_p, truth) for k, w_a in guesses.items()}
    true_w = label_share_init(label_key, "f0", d, m) + w_p
    exact = relative_error(dh, true_w, truth)
    print(f"{mode}: relative error solving for dz~ {errors}; with the true W_A {exact:.2e}")
    assert min(errors.values()) >= 1.0, errors
    # control: with the label party's true share the solution is exact (up to CKKS rounding)
    assert exact < 1e-3


def test_keyed_streams_are_independent_and_reproducible() -> None:
    key = JobKey.generate()
    a = key.stream("defence", "f0", counter=3).normal((200, 8))
    assert np.array_equal(a, key.stream("defence", "f0", counter=3).normal((200, 8)))
    others = [
        key.stream("defence", "f0", counter=4).normal((200, 8)),
        key.stream("defence", "f1", counter=3).normal((200, 8)),
        JobKey.generate().stream("defence", "f0", counter=3).normal((200, 8)),
    ]
    for b in others:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.1
    # the normal draws are standard normal (mean, spread, tails)
    z = key.stream("check").normal((200_000,))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert 0.040 < float((np.abs(z) > 2.0).mean()) < 0.051
    u = key.stream("check", counter=1).uniform(-2.0, 2.0, (100_000,))
    assert u.min() >= -2.0 and u.max() < 2.0 and abs(u.mean()) < 0.02
    assert repr(key) == "JobKey(<secret>)"


async def test_narrower_share_offsets_are_reported_not_silent(
    vertical: Vertical, in_process: InProcess
) -> None:
    """ckks, interactive lr 1e-4: the offsets that hide W's trajectory cannot be 2^10 wide under
    the kernel's masks; the run says so (status warning and figure), it does not hide it."""
    spec = protected(vertical, "ckks", epochs=1, batch_size=256)
    model = spec.model.model_copy(
        update={"interactive_optimizer": spec.model.interactive_optimizer.model_copy(
            update={"lr": 1e-4})}
    )  # fmt: skip
    status = await train(in_process(vertical), spec.model_copy(update={"model": model}))
    assert status.error is None, status.error
    wanted = spec.protection.ckks.share_bits
    assert 0 <= status.share_bits["f0"] < wanted
    (warning,) = status.warnings
    assert f"+-2**{status.share_bits['f0']}" in warning and f"+-2**{wanted}" in warning
    # the default lr keeps the contract's width, and says nothing
    status = await train(in_process(vertical), spec.model_copy(update={"job_id": "job-2"}))
    assert status.share_bits == {"f0": wanted} and status.warnings == []
