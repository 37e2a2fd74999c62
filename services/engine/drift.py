"""Drift of one party's features between the training window and the serving window.

Each party computes these on its own rows and shares only the scores: per column, the
population stability index (PSI) over ten bins cut at the training window's deciles, and the
two-sample Kolmogorov-Smirnov statistic. Columns are the encoder's (standardised numbers,
one-hot categories), so a score never carries a value. Rule of thumb for PSI: below 0.1 stable,
0.1-0.25 a shift, above 0.25 a large shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

BINS = 10
_FLOOR = 1e-4
"""Share given to an empty bin (PSI is undefined on empty bins)."""
MIN_ROWS = 30
"""Fewer serving rows than this give no score (too few to say anything)."""


@dataclass(frozen=True, slots=True)
class ColumnDrift:
    """One column's scores."""

    column: str
    psi: float
    ks: float


def psi(train: npt.NDArray[np.floating], serve: npt.NDArray[np.floating]) -> float:
    """Population stability index of ``serve`` against ``train`` (bins at train's deciles)."""
    train, serve = train[np.isfinite(train)], serve[np.isfinite(serve)]
    if train.size == 0 or serve.size == 0:
        return 0.0
    edges = np.unique(np.quantile(train, np.linspace(0, 1, BINS + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, train, side="right"), minlength=edges.size + 1)
    actual = np.bincount(np.searchsorted(edges, serve, side="right"), minlength=edges.size + 1)
    e = np.maximum(expected / train.size, _FLOOR)
    a = np.maximum(actual / serve.size, _FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def ks(train: npt.NDArray[np.floating], serve: npt.NDArray[np.floating]) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (0: same distribution, 1: disjoint)."""
    train, serve = train[np.isfinite(train)], serve[np.isfinite(serve)]
    if train.size == 0 or serve.size == 0:
        return 0.0
    a, b = np.sort(train), np.sort(serve)
    points = np.concatenate([a, b])
    fa = np.searchsorted(a, points, side="right") / a.size
    fb = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


class Window:
    """The latest ``capacity`` serving rows (a ring of row indices or feature rows)."""

    def __init__(self, capacity: int = 5000) -> None:
        self.capacity = capacity
        self._parts: list[npt.NDArray[np.generic]] = []
        self._rows = 0

    def add(self, rows: npt.NDArray[np.generic]) -> None:
        """Append ``rows`` (the oldest rows beyond the capacity are dropped)."""
        if rows.shape[0] == 0:
            return
        self._parts.append(rows[-self.capacity :].copy())
        self._rows += min(rows.shape[0], self.capacity)
        while self._parts and self._rows - self._parts[0].shape[0] >= self.capacity:
            self._rows -= self._parts.pop(0).shape[0]

    def values(self) -> npt.NDArray[np.generic] | None:
        """The rows held, oldest first (None when empty)."""
        if not self._parts:
            return None
        joined = np.concatenate(self._parts)
        return joined[-self.capacity :]

    def __len__(self) -> int:
        return min(self._rows, self.capacity)


def drift(
    names: list[str], train: npt.NDArray[np.floating], serve: npt.NDArray[np.floating]
) -> list[ColumnDrift]:
    """Scores of every column (``train`` and ``serve`` are rows x columns); none when the
    serving window holds fewer than :data:`MIN_ROWS` rows."""
    if serve.shape[0] < MIN_ROWS:
        return []
    return [
        ColumnDrift(
            name, round(psi(train[:, j], serve[:, j]), 4), round(ks(train[:, j], serve[:, j]), 4)
        )
        for j, name in enumerate(names)
        if j < train.shape[1]
    ]


def report(
    party: str, columns: list[ColumnDrift], rows_train: int, rows_serving: int
) -> dict[str, Any]:
    """What a party shares of its drift: scores only."""
    return {
        "party": party,
        "rows_train": rows_train,
        "rows_serving": rows_serving,
        "max_psi": max((c.psi for c in columns), default=None),
        "columns": [{"column": c.column, "psi": c.psi, "ks": c.ks} for c in columns],
    }


__all__ = ["BINS", "MIN_ROWS", "ColumnDrift", "Window", "drift", "ks", "psi", "report"]
