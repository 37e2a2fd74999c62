"""A reviewer's label-leakage attacks over a whole run (issue 16; benchmarks/leakage.py).

The per-batch scorings of :mod:`services.engine.leakage` read one batch at a time. A curious
feature party holds far more: every message of every epoch, its own model and share, a few
known labels. The attacks here use that:

* **accumulation**: sum each handle's received rows over the whole run, score by the sum's norm
  and by its projection on the sums' top principal direction;
* **spectral**: each handle's per-epoch sums side by side (``epochs x width`` per handle), scored
  by the top singular direction of that trajectory matrix (a label signal that flips sign or
  drifts between epochs survives here where the sum cancels);
* **model completion** (Fu et al., USENIX Security 2022): with ``k`` known board labels, fit a
  linear (ridge) head on what the party holds per lot (its trained bottom's output, its share's
  image, its accumulated gradients) and score every other board; beside it the *same* head on
  the party's raw features with the *same* known labels. The advantage is what the protocol
  gave;
* **replay**: regress what was received on everything the party can regenerate (keyed streams
  under keys derivable from public values or its own key): adjusted R^2, chance is 0;
* **reconstruction** (the label party's view): regress the supplier's encoded features on the
  cut values ``z`` the label party sees, with a few lots whose features it knows.

Scores are per handle (a paste lot); a board takes its lot's score. :func:`board_auc` is the AUC
on board labels (``max(auc, 1 - auc)`` for label-free attacks, which cannot tell which end is
positive), :func:`lot_auc` the AUC on lot labels (a lot is positive when its defect rate is above
the median lot's), the per-lot leakage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.engine.leakage import leak_auc, principal_scores, symmetric_auc

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def board_auc(scores: F64, board_lot: I64, labels: I64, *, symmetric: bool = True) -> float:
    """AUC on board labels of per-lot ``scores`` (boards without a lot, ``-1``, are left out)."""
    keep = board_lot >= 0
    auc = leak_auc(scores[board_lot[keep]], labels[keep])
    return symmetric_auc(auc) if symmetric else auc


def lot_rates(board_lot: I64, labels: I64, lots: int) -> tuple[F64, I64]:
    """Each lot's defect rate and board count (rate NaN for a lot without boards)."""
    keep = board_lot >= 0
    counts = np.bincount(board_lot[keep], minlength=lots).astype(np.int64)
    positives = np.bincount(board_lot[keep], weights=labels[keep], minlength=lots)
    rates = np.divide(positives, counts, out=np.full(lots, np.nan), where=counts > 0)
    return rates, counts


def lot_auc(scores: F64, board_lot: I64, labels: I64, *, symmetric: bool = True) -> float:
    """AUC of per-lot ``scores`` on lot labels: positive when the lot's defect rate exceeds the
    median lot's (lots with boards only)."""
    rates, counts = lot_rates(board_lot, labels, scores.shape[0])
    used = counts > 0
    lot_labels = (rates[used] > np.median(rates[used])).astype(np.int64)
    auc = leak_auc(scores[used], lot_labels)
    return symmetric_auc(auc) if symmetric else auc


@dataclass(frozen=True, slots=True)
class Received:
    """One kind of per-row values a party received at one step: the distinct handles of the
    step, one row of values per handle, and the epoch."""

    epoch: int
    handles: I64
    rows: F64


def accumulate(steps: Sequence[Received], lots: int, epochs: int) -> tuple[F64, F64]:
    """Per-lot sums of the received rows over the run (``lots x width``) and per epoch
    (``lots x epochs x width``)."""
    width = steps[0].rows.shape[1]
    per_epoch = np.zeros((lots, epochs, width))
    for s in steps:
        np.add.at(per_epoch[:, s.epoch, :], s.handles, s.rows)
    return per_epoch.sum(axis=1), per_epoch


def norm_of(rows: F64) -> F64:
    """Row norms."""
    out: F64 = np.linalg.norm(rows, axis=1)
    return out


def spectral_scores(per_epoch: F64) -> F64:
    """Top singular direction of each lot's standardised trajectory (``epochs x width``, flat)."""
    flat = per_epoch.reshape(per_epoch.shape[0], -1)
    spread = flat.std(axis=0)
    flat = np.divide(flat - flat.mean(axis=0), spread, out=np.zeros_like(flat), where=spread > 0)
    return principal_scores(flat)


def _standardise(x: F64) -> F64:
    spread = x.std(axis=0)
    out: F64 = np.divide(x - x.mean(axis=0), spread, out=np.zeros_like(x), where=spread > 0)
    return out


def draw_known(rng: np.random.Generator, candidates: I64, labels: I64, k: int) -> I64:
    """``k`` known boards among ``candidates`` with both classes present (the attacker's pick)."""
    for _ in range(100):
        known = rng.choice(candidates, size=k, replace=False)
        if 0 < labels[known].sum() < k:
            return np.asarray(known, dtype=np.int64)
    raise ValueError(f"cannot draw {k} known boards holding both classes")


def completion_auc(
    features: F64, board_lot: I64, labels: I64, known: I64, ridge: float = 1.0
) -> float:
    """AUC on the unknown boards of a linear head fitted on the ``known`` boards' lot
    ``features`` (standardised over every lot: the party holds them all). The head is ridge
    regression on +-1 labels (a regularised linear discriminant: closed form, so thousands of
    fits stay cheap); any linear head ranks with a score of this form."""
    x = np.hstack([_standardise(features), np.ones((features.shape[0], 1))])
    a = x[board_lot[known]]
    target = 2.0 * labels[known] - 1.0
    penalty = ridge * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    coef = np.linalg.solve(a.T @ a + penalty, a.T @ target)
    scores: F64 = x @ coef
    rest = np.ones(board_lot.shape[0], dtype=bool)
    rest[known] = False
    rest &= board_lot >= 0
    return leak_auc(scores[board_lot[rest]], labels[rest])


@dataclass(frozen=True, slots=True)
class Completion:
    """Mean AUC of a completion attack and of the same head on raw features, same draws."""

    known: int
    attack: float
    raw: float
    draws: int

    @property
    def advantage(self) -> float:
        """What the party's protocol-derived features add over its raw features."""
        return self.attack - self.raw


def completion(
    features: F64, raw: F64, board_lot: I64, labels: I64, known: int, draws: int, seed: int
) -> Completion:
    """:func:`completion_auc` with ``features`` and with ``raw`` on the same ``draws`` sets of
    ``known`` boards."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(board_lot >= 0).astype(np.int64)
    a, r = [], []
    for _ in range(draws):
        k = draw_known(rng, candidates, labels, known)
        a.append(completion_auc(features, board_lot, labels, k))
        r.append(completion_auc(raw, board_lot, labels, k))
    return Completion(known, float(np.mean(a)), float(np.mean(r)), draws)


def adjusted_r2(pairs: Sequence[tuple[F64, F64]]) -> float:
    """Mean over pairs of the adjusted R^2 of regressing ``y`` (n x a) on ``x`` (n x b) with an
    intercept: about 0 when ``x`` is unrelated to ``y``. Each pair (a step) counts once."""
    scores = []
    for y, x in pairs:
        design = np.hstack([x, np.ones((x.shape[0], 1))])
        n, p = design.shape
        if n <= p:
            continue
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        ss_res = float(((y - design @ coef) ** 2).sum())
        ss_tot = float(((y - y.mean(axis=0)) ** 2).sum())
        if ss_tot == 0:
            continue
        scores.append(1.0 - (ss_res / (n - p)) / (ss_tot / (n - 1)))
    return float(np.mean(scores)) if scores else math.nan


Draw = Callable[[int, tuple[int, int]], F64]
"""A regenerable stream: ``draw(step, shape)``."""


def replay_r2(received: dict[int, F64], draw: Draw, regressors: int | None = None) -> float:
    """Adjusted R^2 of each step's received values on the candidate stream's values of that
    step, mean over steps. ``regressors`` columns per row (a noise that enters through a
    ``regressors``-wide layer, ``dz W^T``); None: one regressor, every value flattened."""
    pairs = []
    for step, y in sorted(received.items()):
        if regressors is None:
            x = draw(step, y.shape).reshape(-1, 1)
            pairs.append((y.reshape(-1, 1), x))
        else:
            pairs.append((y, draw(step, (y.shape[0], regressors))))
    return adjusted_r2(pairs)


def reconstruction_r2(z: F64, x: F64, known: int, draws: int, seed: int) -> float:
    """The label party's attack on the supplier's features: with ``known`` lots whose encoded
    features ``x`` it knows, fit a ridge map from the cut values ``z`` it sees to ``x``; the mean
    R^2 per feature column on the other lots (0: no better than the column mean of the known
    lots), mean over ``draws``."""
    rng = np.random.default_rng(seed)
    lots = x.shape[0]
    out = []
    for _ in range(draws):
        idx = rng.permutation(lots)
        fit, rest = idx[:known], idx[known:]
        zf = np.hstack([z[fit], np.ones((known, 1))])
        alpha = 1e-3 * float(np.trace(zf.T @ zf)) / zf.shape[1]
        coef = np.linalg.solve(zf.T @ zf + alpha * np.eye(zf.shape[1]), zf.T @ x[fit])
        pred = np.hstack([z[rest], np.ones((rest.shape[0], 1))]) @ coef
        var = x[rest].var(axis=0)
        cols = var > 1e-12
        baseline = ((x[rest] - x[fit].mean(axis=0)) ** 2).mean(axis=0)
        err = ((x[rest] - pred) ** 2).mean(axis=0)
        out.append(float(np.mean(1.0 - err[cols] / baseline[cols])))
    return float(np.mean(out))


__all__ = [
    "Completion",
    "Received",
    "accumulate",
    "adjusted_r2",
    "board_auc",
    "completion",
    "completion_auc",
    "draw_known",
    "lot_auc",
    "lot_rates",
    "norm_of",
    "reconstruction_r2",
    "replay_r2",
    "spectral_scores",
]
