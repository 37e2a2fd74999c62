"""The reviewer's attacks find what is there and nothing that is not (synthetic data)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from services.engine import attack_suite as suite
from services.engine.keyed import JobKey
from services.engine.leakage import leak_auc, principal_scores

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
LOTS, BOARDS, WIDTH, EPOCHS = 300, 6000, 8, 12


def world(seed: int) -> tuple[I64, I64, F64]:
    """Boards in lots; each lot has its own defect rate; the lots' raw features explain part of
    it (one column)."""
    rng = np.random.default_rng(seed)
    board_lot = rng.integers(0, LOTS, BOARDS).astype(np.int64)
    x = rng.normal(size=(LOTS, WIDTH))
    logit = 0.8 * x[:, 0] + rng.normal(size=LOTS)
    rate = 1 / (1 + np.exp(-(logit - 1.5)))
    labels = (rng.random(BOARDS) < rate[board_lot]).astype(np.int64)
    return board_lot, labels, x


def gradient_steps(
    board_lot: I64, labels: I64, signal: float, seed: int, steps_per_epoch: int = 4
) -> list[suite.Received]:
    """Per-step lot rows: noise plus ``signal`` times the batch's positives in the lot along one
    fixed direction (a gradient channel with a weak per-step label signal)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=WIDTH)
    out = []
    for epoch in range(EPOCHS):
        order = rng.permutation(BOARDS)
        for batch in np.array_split(order, steps_per_epoch):
            handles = np.unique(board_lot[batch])
            pos = np.bincount(board_lot[batch], weights=labels[batch], minlength=LOTS)[handles]
            rows = rng.normal(size=(handles.size, WIDTH)) + signal * pos[:, None] * direction
            out.append(suite.Received(epoch, handles, rows))
    return out


def test_board_and_lot_auc() -> None:
    board_lot = np.array([0, 0, 1, 1, -1], dtype=np.int64)
    labels = np.array([1, 1, 0, 0, 1], dtype=np.int64)
    assert suite.board_auc(np.array([1.0, 0.0]), board_lot, labels) == 1.0
    assert suite.board_auc(np.array([0.0, 1.0]), board_lot, labels) == 1.0  # symmetric
    assert suite.board_auc(np.array([0.0, 1.0]), board_lot, labels, symmetric=False) == 0.0
    rates, counts = suite.lot_rates(board_lot, labels, 3)
    assert rates[:2].tolist() == [1.0, 0.0] and math.isnan(rates[2])
    assert counts.tolist() == [2, 2, 0]
    assert suite.lot_auc(np.array([3.0, 1.0, 0.0]), board_lot, labels) == 1.0


def test_accumulation_finds_what_single_batches_miss() -> None:
    """A per-step signal too weak for one batch adds up over epochs in each lot's sum."""
    board_lot, labels, _ = world(1)
    steps = gradient_steps(board_lot, labels, signal=0.08, seed=2)
    per_batch = []
    for s in steps:
        scores = np.zeros(LOTS)
        scores[s.handles] = principal_scores(s.rows)
        per_batch.append(suite.lot_auc(scores, board_lot, labels))
    total, per_epoch = suite.accumulate(steps, LOTS, EPOCHS)
    summed = suite.lot_auc(principal_scores(total), board_lot, labels)
    spectral = suite.lot_auc(suite.spectral_scores(per_epoch), board_lot, labels)
    assert float(np.mean(per_batch)) < 0.62
    assert summed > 0.8
    assert spectral > 0.75
    # without a signal the same attacks stay near chance (symmetric AUC of noise)
    quiet, quiet_epochs = suite.accumulate(gradient_steps(board_lot, labels, 0.0, 2), LOTS, EPOCHS)
    assert suite.lot_auc(principal_scores(quiet), board_lot, labels) < 0.6
    assert suite.lot_auc(suite.spectral_scores(quiet_epochs), board_lot, labels) < 0.6


def test_completion_measures_the_advantage_over_raw_features() -> None:
    board_lot, labels, x = world(3)
    rates, _ = suite.lot_rates(board_lot, labels, LOTS)
    leaky = np.hstack([x, np.nan_to_num(rates)[:, None]])  # a feature carrying the lot's rate
    gained = suite.completion(leaky, x, board_lot, labels, known=50, draws=6, seed=0)
    assert gained.advantage > 0.05
    assert gained.raw > 0.55  # the raw features alone carry part of the signal
    same = suite.completion(x, x, board_lot, labels, known=50, draws=6, seed=0)
    assert same.advantage == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        suite.draw_known(np.random.default_rng(0), np.arange(5), np.zeros(5, np.int64), 3)


def test_replay_finds_a_regenerable_stream_only() -> None:
    key = JobKey.generate()
    other = JobKey.generate()

    def draw(k: JobKey) -> suite.Draw:
        return lambda step, shape: k.stream("defence", "f", counter=step).normal(shape)

    w = np.random.default_rng(0).normal(size=(4, 16))
    received = {s: draw(key)(s, (300, 4)) @ w + 0.1 for s in range(1, 6)}
    assert suite.replay_r2(received, draw(key), 4) > 0.99
    assert abs(suite.replay_r2(received, draw(other), 4)) < 0.02
    flat = {s: draw(key)(s, (16, 4)) + 3.0 for s in range(1, 6)}
    assert suite.replay_r2(flat, draw(key)) > 0.99
    assert abs(suite.replay_r2(flat, draw(other))) < 0.05


def test_reconstruction_inverts_a_linear_cut_with_enough_known_lots() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(LOTS, WIDTH))
    z = x @ rng.normal(size=(WIDTH, 16))
    assert suite.reconstruction_r2(z, x, known=50, draws=3, seed=0) > 0.99
    assert suite.reconstruction_r2(rng.normal(size=(LOTS, 16)), x, 50, 3, 0) < 0.05
    assert leak_auc(np.array([0.0, 1.0]), np.array([0, 1])) == 1.0
