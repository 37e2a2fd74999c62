"""Weight averaging every party can apply to its own parameters in lockstep (issue 17).

An exponential moving average of the weights over optimizer steps, ``a <- d_t a + (1 - d_t) w``
after step ``t`` with ``d_t = min(decay, (1 + t) / (10 + t))`` (the usual warm-up: the first
steps do not drag the average towards the initial weights). The coefficients depend only on
``decay`` and the step count, which every party of a job knows, and the update is linear in
``w``: the averages of two additive shares of an interactive weight, each kept by its holder,
sum exactly to the average of the unshared weight (``tests/engine/test_averaging.py``).

Validation, model selection, test and serving use the averaged weights; training continues
from the raw ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt
import torch

F64 = npt.NDArray[np.float64]

WARMUP = 10
"""``d_t = min(decay, (1 + t) / (WARMUP + t))``."""


def step_decay(decay: float, step: int) -> float:
    """The averaging coefficient after optimizer step ``step`` (0-based)."""
    return min(decay, (1.0 + step) / (WARMUP + step))


def fold(average: F64, w: F64, decay: float, step: int) -> F64:
    """The average of an array (a share of an interactive weight) after step ``step``."""
    d = step_decay(decay, step)
    out: F64 = d * average + (1.0 - d) * w
    return out


class WeightAverage:
    """The running average of ``params`` (tensors updated in place by an optimizer)."""

    def __init__(self, params: Iterable[torch.Tensor], decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), not {decay}")
        self.params = list(params)
        self.decay = decay
        self.steps = 0
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights into the average (after an optimizer step)."""
        d = step_decay(self.decay, self.steps)  # the same coefficient as :func:`fold`
        for a, p in zip(self.average, self.params, strict=True):
            a.mul_(d).add_(p.detach(), alpha=1.0 - d)
        self.steps += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in place of the raw ones inside the block."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, a in zip(self.params, self.average, strict=True):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw, strict=True):
                    p.copy_(r)

    def state(self) -> dict[str, object]:
        """What a checkpoint keeps to resume the average."""
        return {"steps": self.steps, "average": [a.clone() for a in self.average]}

    def load(self, state: dict[str, object]) -> None:
        """Resume from :meth:`state`."""
        steps, average = state["steps"], state["average"]
        assert isinstance(steps, int) and isinstance(average, list)
        with torch.no_grad():
            for a, s in zip(self.average, average, strict=True):
                a.copy_(s)
        self.steps = steps
