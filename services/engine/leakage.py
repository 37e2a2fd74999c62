"""Label-leakage attacks on the cut gradients a feature party receives (Li et al., ICLR 2022,
"Label Leakage and Protection in Two-party Split Learning").

A feature party receives ``dL/dh`` for its rows, one row per distinct handle of a batch. For a
binary task with a mean BCE loss, example ``i``'s row is ``(p_i - y_i) * dlogit_i/dh_i / B``:
its size follows ``|p_i - y_i|`` and its sign flips with the label. Three scorings exploit this:

* **norm scoring**: score = the row's L2 norm. When positives are the minority class the model
  predicts low ``p`` for most rows, so positives get the larger norms.
* **direction scoring** (Li et al.'s cosine attack): the attacker knows one positive example's
  gradient in the batch and scores every other row by its cosine similarity to it; rows of the
  same class point the same way. The sign is known, so the AUC is reported as it is.
* **principal-direction scoring** (an unsupervised variant needing no known label): project the
  centred rows on the batch's top principal direction. The attacker cannot tell which end is
  positive, so the AUC is reported as ``max(auc, 1 - auc)`` (an upper bound on what it achieves).

Each attack is scored per batch (the unit the attacker sees) with :func:`leak_auc`; 0.5 means
the scores tell nothing, 1.0 that they rank every positive above every negative.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

F64 = npt.NDArray[np.float64]
Array = npt.NDArray[Any]


def leak_auc(scores: Array, labels: Array) -> float:
    """ROC AUC of ``scores`` for ``labels`` (1 = positive); NaN when a class is absent."""
    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be equal-length vectors")
    if y.all() or not y.any():
        return math.nan
    return float(roc_auc_score(y, s))


def symmetric_auc(auc: float) -> float:
    """``max(auc, 1 - auc)``: the AUC of an attacker who cannot tell which end is positive."""
    return auc if math.isnan(auc) else max(auc, 1.0 - auc)


def _rows(grads: Array) -> F64:
    g = np.asarray(grads, dtype=np.float64)
    if g.ndim != 2:
        raise ValueError(f"gradients must be rows x features, got shape {g.shape}")
    return g


def norm_scores(grads: Array) -> F64:
    """Row L2 norms."""
    out: F64 = np.linalg.norm(_rows(grads), axis=1)
    return out


def cosine_scores(grads: Array, reference: Array) -> F64:
    """Cosine similarity of each row to ``reference`` (0 for an all-zero row or reference)."""
    g = _rows(grads)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    denom = np.linalg.norm(g, axis=1) * np.linalg.norm(ref)
    out: F64 = np.divide(g @ ref, denom, out=np.zeros(g.shape[0]), where=denom > 0)
    return out


def principal_scores(grads: Array) -> F64:
    """Projection of the centred rows on their top principal direction (sign arbitrary)."""
    g = _rows(grads)
    centred = g - g.mean(axis=0, keepdims=True)
    if g.shape[0] < 2 or not np.any(centred):
        return np.zeros(g.shape[0])
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    out: F64 = centred @ vt[0]
    return out


def norm_leak_auc(grads: Array, labels: Array) -> float:
    """AUC of norm scoring on one batch."""
    return leak_auc(norm_scores(grads), labels)


def direction_leak_auc(grads: Array, labels: Array, rng: np.random.Generator) -> float:
    """AUC of cosine scoring against one known positive row (drawn by ``rng``) on one batch.

    The reference row is left out of the scoring. NaN without two positives and a negative.
    """
    y = np.asarray(labels).astype(bool)
    positives = np.flatnonzero(y)
    if positives.size < 2 or positives.size == y.size:
        return math.nan
    known = int(rng.choice(positives))
    g = _rows(grads)
    rest = np.arange(y.size) != known
    return leak_auc(cosine_scores(g[rest], g[known]), y[rest])


def principal_leak_auc(grads: Array, labels: Array) -> float:
    """``max(auc, 1 - auc)`` of principal-direction scoring on one batch."""
    return symmetric_auc(leak_auc(principal_scores(grads), labels))


ATTACKS = ("norm", "direction", "principal")


@dataclass(slots=True)
class LeakReport:
    """Per-batch AUCs of every attack, and their means over the batches where they apply."""

    per_batch: dict[str, list[float]] = field(default_factory=lambda: {a: [] for a in ATTACKS})

    def add(self, grads: Array, labels: Array, rng: np.random.Generator) -> None:
        """Attack one batch."""
        self.per_batch["norm"].append(norm_leak_auc(grads, labels))
        self.per_batch["direction"].append(direction_leak_auc(grads, labels, rng))
        self.per_batch["principal"].append(principal_leak_auc(grads, labels))

    def mean(self, attack: str) -> float:
        """Mean AUC over the batches the attack could score (NaN if none)."""
        values = [v for v in self.per_batch[attack] if not math.isnan(v)]
        return float(np.mean(values)) if values else math.nan

    def summary(self) -> dict[str, Any]:
        """Mean, 10th and 90th percentile and batch count per attack."""
        out: dict[str, Any] = {}
        for attack, values in self.per_batch.items():
            v = np.array([x for x in values if not math.isnan(x)])
            out[attack] = {
                "mean": float(v.mean()) if v.size else math.nan,
                "p10": float(np.quantile(v, 0.1)) if v.size else math.nan,
                "p90": float(np.quantile(v, 0.9)) if v.size else math.nan,
                "batches": int(v.size),
            }
        return out


def attack_batches(batches: Iterable[tuple[Array, Array]], seed: int = 0) -> LeakReport:
    """Run every attack on each ``(grads, labels)`` batch."""
    rng = np.random.default_rng(seed)
    report = LeakReport()
    for grads, labels in batches:
        report.add(grads, labels, rng)
    return report
