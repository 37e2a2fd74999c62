"""A learning-rate schedule every party can apply in lockstep (issue 17, docs/adr/0015).

Reduce-on-plateau, decided by the label party alone from its validation loss (no other party
sees that loss): after ``patience`` epochs without a lower loss (relative ``tolerance`` as in
:class:`services.engine.training.EarlyStopping`), every rate is multiplied by ``factor``, down
to ``min_scale`` times the spec's rate. What a feature party needs is only the decision,
``(epoch, scale)``: from the next epoch on, every optimizer of the job (its bottom's and the
SGD on its share of the interactive weights) runs at ``scale`` times the spec's rate. Both
shares of an interactive weight then move with the same rate at every step; their update is
linear in the rate and the gradient, so their sum stays exactly the unshared weight
(``tests/engine/test_schedule.py``).

Not wired into the split job: measured on the centralized equivalent it changed no chosen
model (its first decision comes after the epoch early stopping restores), and warm-up + cosine
lost on the demo's data (docs/adr/0017). ``fit_local`` (the centralized equivalent) applies it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, slots=True)
class PlateauSchedule:
    """The schedule's settings (what the spec would carry)."""

    factor: float = 0.5
    patience: int = 3
    min_scale: float = 0.05
    tolerance: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), not {self.factor}")
        if self.patience < 1:
            raise ValueError(f"patience must be at least 1, not {self.patience}")
        if not 0.0 < self.min_scale <= 1.0:
            raise ValueError(f"min_scale must be in (0, 1], not {self.min_scale}")


@dataclass(slots=True)
class PlateauState:
    """The label party's running decision: the current scale and the decisions so far."""

    schedule: PlateauSchedule
    scale: float = 1.0
    best_loss: float = math.inf
    stale: int = 0
    changes: list[tuple[int, float]] = field(default_factory=list)
    """``(epoch, scale)``: from the epoch after ``epoch`` on, the rates are ``scale`` times the
    spec's (all a feature party learns)."""

    def after_epoch(self, epoch: int, loss: float) -> float | None:
        """Record an epoch's validation loss; the new scale when the rates change, else None."""
        s = self.schedule
        margin = s.tolerance * abs(self.best_loss) if math.isfinite(self.best_loss) else 0.0
        if not math.isnan(loss) and loss < self.best_loss - margin:
            self.best_loss, self.stale = loss, 0
            return None
        self.stale += 1
        if self.stale < s.patience or self.scale <= s.min_scale:
            return None
        self.scale = max(self.scale * s.factor, s.min_scale)
        self.stale = 0
        self.changes.append((epoch, self.scale))
        return self.scale


def base_rates(optimizers: Iterable[torch.optim.Optimizer]) -> list[list[float]]:
    """Each optimizer's param groups' rates as built from the spec (the scale's reference)."""
    return [[float(g["lr"]) for g in opt.param_groups] for opt in optimizers]


def apply_scale(
    optimizers: Iterable[torch.optim.Optimizer], base: list[list[float]], scale: float
) -> None:
    """Set every param group's rate to ``scale`` times its spec rate (momentum buffers stay)."""
    for opt, rates in zip(optimizers, base, strict=True):
        for group, rate in zip(opt.param_groups, rates, strict=True):
            group["lr"] = rate * scale
