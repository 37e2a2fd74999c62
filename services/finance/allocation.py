"""Exact revenue allocation: largest remainder over integer units, deterministic ties.

All arithmetic is exact (:class:`fractions.Fraction` over the weights), so no amount depends on a
rounding context: the parts of a total always sum to the total, every part is non-negative, and
the same input gives the same output whatever the order of the mapping. Ties between equal
remainders go to the payee whose name sorts first.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction

from contracts.commercial import Commercial, FixedShares
from contracts.money import PERCENT_MAX_PLACES, Money

HUNDRED = Decimal(100)


class AllocationError(ValueError):
    """Allocation input that cannot be split (negative, non-finite, no weight to split by)."""

    code = "allocation_invalid"


def _exact(name: str, value: Decimal | float | int) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, Decimal | float | int):
        raise AllocationError(f"{name!r}: weight must be a number, got {type(value).__name__}")
    if isinstance(value, Decimal | float) and not Decimal(value).is_finite():
        raise AllocationError(f"{name!r}: weight must be finite, got {value}")
    return Fraction(value)


def allocate(total_minor: int, weights: Mapping[str, Decimal]) -> dict[str, int]:
    """Split ``total_minor`` integer units in proportion to ``weights``.

    Each payee gets the floor of its exact part; the units left over go one each to the largest
    remainders, ties by name. The parts sum exactly to ``total_minor`` and are non-negative.
    Raises :class:`AllocationError` for a negative total, a negative or non-finite weight, no
    payees, or weights summing to zero while there is something to split (a zero total with zero
    weights gives every payee zero).
    """
    if isinstance(total_minor, bool) or not isinstance(total_minor, int):
        raise AllocationError(
            f"total must be an integer number of minor units, got {total_minor!r}"
        )
    if total_minor < 0:
        raise AllocationError(f"total must be non-negative, got {total_minor}")
    if not weights:
        raise AllocationError("no payees to allocate to")
    exact_weights = {name: _exact(name, w) for name, w in weights.items()}
    for name, w in exact_weights.items():
        if w < 0:
            raise AllocationError(f"{name!r}: weight must be non-negative, got {weights[name]}")
    return _largest_remainder(total_minor, exact_weights)


def _largest_remainder(total: int, weights: Mapping[str, Fraction]) -> dict[str, int]:
    weight_sum = sum(weights.values(), Fraction(0))
    if weight_sum == 0:
        if total == 0:
            return dict.fromkeys(sorted(weights), 0)
        raise AllocationError("weights sum to zero; nothing to split by")
    parts: dict[str, int] = {}
    remainders: dict[str, Fraction] = {}
    for name in sorted(weights):
        share = total * weights[name] / weight_sum
        parts[name] = share.numerator // share.denominator
        remainders[name] = share - parts[name]
    left = total - sum(parts.values())
    for name in sorted(remainders, key=lambda n: (-remainders[n], n))[:left]:
        parts[name] += 1
    return parts


def contribution_shares(
    contributions: Mapping[str, float | Decimal], floors: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """Percentages summing to exactly 100: floors first, the rest by contribution.

    Payees are the names in either mapping. Each gets its floor (0 if none); the remaining
    ``100 - sum(floors)`` is split in proportion to ``max(contribution, 0)``, or equally among the
    contributors when no contribution is positive (among the floor holders if there are no
    contributors). Percentages are exact to the contract's percent precision (6 places): the rest
    is allocated in millionths of a percent by :func:`allocate`.
    """
    for name, floor in floors.items():
        if not Decimal(floor).is_finite() or floor < 0:
            raise AllocationError(f"{name!r}: floor must be a non-negative percentage")
    floor_sum = sum((Decimal(f) for f in floors.values()), Decimal(0))
    if floor_sum > HUNDRED:
        raise AllocationError(f"floors sum to {floor_sum}, more than 100")
    payees = sorted(set(contributions) | set(floors))
    if not payees:
        raise AllocationError("no payees")
    rest_units = (HUNDRED - floor_sum).scaleb(PERCENT_MAX_PLACES)
    if rest_units != rest_units.to_integral_value():
        raise AllocationError(f"floors have more than {PERCENT_MAX_PLACES} decimal places")
    positive = {n: max(_exact(n, c), Fraction(0)) for n, c in contributions.items()}
    if sum(positive.values(), Fraction(0)) > 0:
        split = _largest_remainder(int(rest_units), positive)
    else:
        equal = sorted(contributions) or payees
        split = _largest_remainder(int(rest_units), {n: Fraction(1) for n in equal})
    return {
        name: Decimal(floors.get(name, Decimal(0)))
        + Decimal(split.get(name, 0)).scaleb(-PERCENT_MAX_PLACES)
        for name in payees
    }


def shares_for(
    commercial: Commercial, contributions: Mapping[str, float | Decimal] | None = None
) -> dict[str, Decimal]:
    """Each payee's percentage under the contract's revenue-share scheme (sums to exactly 100).

    ``fixed``: the contract's shares, ``contributions`` ignored. ``contribution``: the measured
    contributions (required) with the contract's floors, by :func:`contribution_shares`.
    """
    rs = commercial.revenue_share
    if isinstance(rs, FixedShares):
        return dict(rs.shares)
    if contributions is None:
        raise AllocationError(
            "the contract shares revenue by contribution, but no contributions were given"
        )
    return contribution_shares(contributions, rs.floors)


def gross_minor(predictions: int, price: Money) -> int:
    """``predictions`` x ``price`` in integer minor units of the price's currency.

    Exact, never rounded: :class:`~contracts.money.Money` refuses prices with more decimals than
    the currency's minor unit, so the price is a whole number of minor units.
    """
    if isinstance(predictions, bool) or not isinstance(predictions, int):
        raise AllocationError(f"predictions must be an integer, got {predictions!r}")
    if predictions < 0:
        raise AllocationError(f"predictions must be non-negative, got {predictions}")
    return predictions * price.minor_units


__all__ = [
    "AllocationError",
    "allocate",
    "contribution_shares",
    "gross_minor",
    "shares_for",
]
