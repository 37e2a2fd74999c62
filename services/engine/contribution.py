"""Each party's contribution to a joint model: exact Shapley values and leave-one-out.

A coalition's value is the joint model's validation metric when the parties outside it are
replaced by a neutral baseline (their mean cut output), so no retraining is needed: ``2**n``
evaluations of the top for ``n`` parties (exact up to 8 parties, 256 evaluations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import combinations

MAX_PARTIES = 8

Value = Callable[[frozenset[str]], float]


def coalition_values(parties: Sequence[str], value: Value) -> dict[frozenset[str], float]:
    """``value`` of every coalition of ``parties`` (the empty one included)."""
    if len(parties) > MAX_PARTIES:
        raise ValueError(f"exact Shapley values for at most {MAX_PARTIES} parties")
    return {
        frozenset(c): value(frozenset(c))
        for k in range(len(parties) + 1)
        for c in combinations(parties, k)
    }


def shapley(parties: Sequence[str], values: dict[frozenset[str], float]) -> dict[str, float]:
    """Exact Shapley values: each party's average marginal value over all join orders."""
    n = len(parties)
    out: dict[str, float] = {}
    for p in parties:
        others = [q for q in parties if q != p]
        total = 0.0
        for k in range(n):
            weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
            for c in combinations(others, k):
                s = frozenset(c)
                total += weight * (values[s | {p}] - values[s])
        out[p] = total
    return out


def leave_one_out(parties: Sequence[str], values: dict[frozenset[str], float]) -> dict[str, float]:
    """What the full coalition loses without each party."""
    everyone = frozenset(parties)
    return {p: values[everyone] - values[everyone - {p}] for p in parties}
