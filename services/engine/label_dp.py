"""Label differential privacy by randomised response, applied once to the label party's labels.

``randomize`` replaces each row's class by a randomised one: the true class with probability
``e^eps / (e^eps + k - 1)``, each of the ``k - 1`` others with probability ``1 / (e^eps + k - 1)``
(Warner's randomised response; the ratio of any two outcomes' probabilities is at most
``e^eps``, so it is ``eps``-DP for the row's label). Every later computation (training, every
message a feature party receives, the model, early stopping on validation) uses only these
labels, so it is post-processing: the whole job is ``eps``-label-DP per row, however many epochs
it runs (docs/adr/0007-label-privacy.md).

A row's randomised label is a deterministic function of a secret of the label party and the row's
id: every job of one contract reuses it, so retraining spends no further budget. Protecting a
whole join key (a paste lot and all its boards) is group privacy: the per-row epsilon is the
budget divided by the most rows any key holds (:func:`row_epsilon`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.tasks import Labels
from services.protocol.messages import LabelDpSpec, Task

_TAG = b"splice/label-dp/rr/v1"


@dataclass(frozen=True, slots=True)
class PrivacySpent:
    """What a job's labels cost: the contract's budget, per unit, and per row."""

    mechanism: str
    epsilon: float
    delta: float
    unit: str
    row_epsilon: float
    rows_per_key: int
    """The most label rows under one feature-party key (group size for unit ``key``)."""
    keep_probability: float
    changed: int
    """Rows whose training label differs from the true one (known to the label party only)."""

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready."""
        return {
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "unit": self.unit,
            "row_epsilon": self.row_epsilon,
            "rows_per_key": self.rows_per_key,
            "keep_probability": self.keep_probability,
        }


def keep_probability(epsilon: float, classes: int) -> float:
    """Probability that randomised response keeps the true class."""
    e = math.exp(min(epsilon, 700.0))
    return e / (e + classes - 1)


def row_epsilon(spec: LabelDpSpec, rows_per_key: int) -> float:
    """Per-row epsilon that gives ``spec.epsilon`` per unit (group privacy for ``key``)."""
    if spec.unit == "key":
        return spec.epsilon / max(rows_per_key, 1)
    return spec.epsilon


def _uniforms(secret: bytes, row_id: str) -> tuple[float, float]:
    digest = hmac.new(secret, _TAG + b"\x00" + row_id.encode(), hashlib.sha256).digest()
    a = int.from_bytes(digest[:8], "little") >> 11
    b = int.from_bytes(digest[8:16], "little") >> 11
    return a * 2.0**-53, b * 2.0**-53


def randomize(
    labels: Labels,
    ids: Sequence[str],
    secret: bytes,
    spec: LabelDpSpec,
    rows_per_key: int,
) -> tuple[Labels, PrivacySpent]:
    """The randomised labels (same classes) and what they cost; regression is refused."""
    if labels.task is Task.REGRESSION:
        raise ValueError("randomised response needs classes: not for a regression task")
    k = len(labels.classes)
    eps = row_epsilon(spec, rows_per_key)
    keep = keep_probability(eps, k)
    values = np.asarray(labels.values, dtype=np.int64)
    if len(ids) != values.shape[0]:
        raise ValueError(f"{len(ids)} row ids for {values.shape[0]} labels")
    out: npt.NDArray[np.int64] = values.copy()
    for i, row_id in enumerate(ids):
        u, v = _uniforms(secret, row_id)
        if u >= keep:  # one of the k - 1 other classes, uniformly
            other = min(int(v * (k - 1)), k - 2)
            out[i] = other + (other >= values[i])
    spent = PrivacySpent(
        spec.mechanism,
        spec.epsilon,
        spec.delta,
        spec.unit,
        eps,
        rows_per_key,
        keep,
        int((out != values).sum()),
    )
    return Labels(labels.task, out, list(labels.classes), labels.mean, labels.std), spent


def rows_per_key(handles: dict[str, npt.NDArray[np.int64]]) -> int:
    """The most label rows sharing one key of any feature party (1 without feature parties)."""
    most = 1
    for h in handles.values():
        if h.size:
            most = max(most, int(np.bincount(h[h >= 0]).max(initial=1)))
    return most


__all__ = ["PrivacySpent", "keep_probability", "randomize", "row_epsilon", "rows_per_key"]
