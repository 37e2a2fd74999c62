"""Model selection on the validation loss (services/engine/training.py, docs/adr/0009)."""

from __future__ import annotations

import math

from services.engine.training import EarlyStopping, min_epochs


def test_a_saturated_metric_does_not_freeze_the_choice_on_the_first_epoch() -> None:
    stopper = EarlyStopping(patience=3)
    losses = [0.66, 0.40, 0.21, 0.12, 0.15, 0.16, 0.17]
    chosen = [stopper.update(e, 1.0, loss) for e, loss in enumerate(losses)]
    assert chosen == [True, True, True, True, False, False, False]
    assert stopper.best_epoch == 3 and stopper.should_stop


def test_equal_losses_are_decided_by_the_metric() -> None:
    stopper = EarlyStopping(patience=5)
    stopper.update(0, 0.80, 0.30)
    assert stopper.update(1, 0.85, 0.30 * (1 + 1e-5))  # within the tolerance, better metric
    assert not stopper.update(2, 0.90, 0.31)  # higher loss: a better metric alone is not enough
    assert not stopper.update(3, math.nan, math.nan)
    assert stopper.best_epoch == 1 and stopper.best == 0.85


def test_no_stop_before_the_minimum_number_of_epochs() -> None:
    stopper = EarlyStopping(patience=2, min_epochs=6)
    for epoch, loss in enumerate([0.5, 0.6, 0.7, 0.8]):
        stopper.update(epoch, 0.5, loss)
    assert stopper.stale == 3 and not stopper.should_stop
    stopper.update(4, 0.5, 0.9)
    stopper.update(5, 0.5, 0.9)
    assert stopper.should_stop and stopper.best_epoch == 0


def test_minimum_epochs_follow_the_steps_an_epoch_gives() -> None:
    assert min_epochs(60, 7) == 43  # the demo: 300 steps of 2,048 boards
    assert min_epochs(200, 13) == 24  # a small table
    assert min_epochs(10, 1) == 10  # never more than the job's epochs
    assert min_epochs(100, 10_000) == 3
