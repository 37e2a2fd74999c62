"""Allocation: exact sums, deterministic ties, floors respected, no floats (property-tested)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Commercial, FixedShares, Money
from contracts.money import CURRENCY_MINOR_UNITS
from services.finance import (
    AllocationError,
    allocate,
    contribution_shares,
    gross_minor,
    shares_for,
)

NAMES = st.from_regex(r"[a-z][a-z0-9_-]{0,7}", fullmatch=True)
WEIGHTS = st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False)
WEIGHT_MAPS = st.dictionaries(NAMES, WEIGHTS, min_size=1, max_size=12).filter(
    lambda w: sum(w.values()) > 0
)
TOTALS = st.integers(min_value=0, max_value=10**15)
CURRENCIES = st.sampled_from(sorted(CURRENCY_MINOR_UNITS))
CONTRIBUTIONS = st.one_of(
    st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
    st.decimals(min_value=-1, max_value=1, places=8, allow_nan=False),
)


def _percent_maps(draw: st.DrawFn) -> dict[str, Decimal]:
    """Fixed shares: up to 8 payees with 6-place percentages summing to exactly 100."""
    names = draw(st.lists(NAMES, min_size=1, max_size=8, unique=True))
    micro = draw(st.lists(st.integers(0, 10**8), min_size=len(names), max_size=len(names)))
    if sum(micro) == 0:
        micro[0] = 1
    parts = allocate(10**8, {n: Decimal(m) for n, m in zip(names, micro, strict=True)})
    return {n: Decimal(v).scaleb(-6) for n, v in parts.items()}


percent_maps = st.composite(_percent_maps)


@given(TOTALS, WEIGHT_MAPS)
def test_allocate_sums_exactly_and_is_non_negative(total: int, weights: dict[str, Decimal]) -> None:
    parts = allocate(total, weights)
    assert sum(parts.values()) == total
    assert set(parts) == set(weights)
    assert all(type(v) is int and v >= 0 for v in parts.values())
    # Each part is within one unit of its exact share.
    wsum = sum(weights.values())
    for name, part in parts.items():
        assert abs(Decimal(part) - Decimal(total) * weights[name] / wsum) < 1 + Decimal("1e-9")


@given(TOTALS, WEIGHT_MAPS, st.randoms(use_true_random=False))
def test_allocate_is_independent_of_order(total: int, weights: dict[str, Decimal], rnd) -> None:  # type: ignore[no-untyped-def]
    items = list(weights.items())
    rnd.shuffle(items)
    assert allocate(total, dict(items)) == allocate(total, weights)


@given(TOTALS, percent_maps())
def test_allocate_agrees_with_fixed_shares(total: int, shares: dict[str, Decimal]) -> None:
    fixed = FixedShares(scheme="fixed", shares=shares)
    assert allocate(total, shares) == fixed.allocate(total)


def test_ties_go_to_the_first_name() -> None:
    assert allocate(1, {"b": Decimal(1), "a": Decimal(1)}) == {"a": 1, "b": 0}
    assert allocate(2, {"c": Decimal(1), "b": Decimal(1), "a": Decimal(1)}) == {
        "a": 1,
        "b": 1,
        "c": 0,
    }
    assert allocate(100, {"x": Decimal(1), "y": Decimal(1), "z": Decimal(1)}) == {
        "x": 34,
        "y": 33,
        "z": 33,
    }


def test_zero_total_and_zero_weights() -> None:
    assert allocate(0, {"a": Decimal(0), "b": Decimal(0)}) == {"a": 0, "b": 0}
    assert allocate(0, {"a": Decimal(3), "b": Decimal(1)}) == {"a": 0, "b": 0}


@pytest.mark.parametrize(
    ("total", "weights"),
    [
        (-1, {"a": Decimal(1)}),
        (5, {}),
        (5, {"a": Decimal(0)}),
        (5, {"a": Decimal(-1), "b": Decimal(2)}),
        (5, {"a": Decimal("NaN")}),
        (5, {"a": Decimal("Infinity")}),
        (True, {"a": Decimal(1)}),
        (1.5, {"a": Decimal(1)}),
    ],
)
def test_allocate_refuses(total: int, weights: dict[str, Decimal]) -> None:
    with pytest.raises(AllocationError):
        allocate(total, weights)


def _floors(draw: st.DrawFn) -> dict[str, Decimal]:
    names = draw(st.lists(NAMES, max_size=6, unique=True))
    left = 100 * 10**6
    floors = {}
    for n in names:
        units = draw(st.integers(0, left // 2))
        left -= units
        floors[n] = Decimal(units).scaleb(-6)
    return floors


floor_maps = st.composite(_floors)


@given(st.dictionaries(NAMES, CONTRIBUTIONS, max_size=8), floor_maps())
def test_contribution_shares_sum_to_100_and_respect_floors(
    contributions: dict[str, float | Decimal], floors: dict[str, Decimal]
) -> None:
    if not contributions and not floors:
        return
    shares = contribution_shares(contributions, floors)
    assert sum(shares.values()) == 100
    assert set(shares) == set(contributions) | set(floors)
    for name, pct in shares.items():
        assert type(pct) is Decimal
        assert pct >= floors.get(name, 0)
        assert pct == pct.quantize(Decimal("0.000001"))  # the contract's percent precision
    positive = {n for n, c in contributions.items() if c > 0}
    if positive:
        for name in set(shares) - positive:  # no positive contribution: the floor only
            assert shares[name] == floors.get(name, 0)
    # The same input in another order gives the same answer.
    assert contribution_shares(dict(reversed(contributions.items())), floors) == shares


def test_contribution_shares_examples() -> None:
    floors = {"pcb": Decimal(30), "paste": Decimal(15), "stencil": Decimal(10), "oem": Decimal(10)}
    shares = contribution_shares({"pcb": 0.5, "paste": 0.3, "stencil": 0.2}, floors)
    assert shares == {
        "oem": Decimal(10),
        "paste": Decimal("25.5"),
        "pcb": Decimal("47.5"),
        "stencil": Decimal("17"),
    }
    # Negative or zero contributions count as zero; all zero splits the rest equally.
    assert contribution_shares({"a": -1.0, "b": 2.0}, {}) == {"a": 0, "b": 100}
    assert contribution_shares({"a": 0.0, "b": -0.5}, {"a": Decimal(20)}) == {
        "a": 60,
        "b": 40,
    }
    # Thirds: exact to six places, the extra millionth to the first name.
    assert contribution_shares({"b": 1.0, "a": 1.0, "c": 1.0}, {}) == {
        "a": Decimal("33.333334"),
        "b": Decimal("33.333333"),
        "c": Decimal("33.333333"),
    }
    # Floors only (no contributions measured yet): the rest is split among the floor holders.
    assert contribution_shares({}, {"a": Decimal(50), "b": Decimal(10)}) == {"a": 70, "b": 30}


@pytest.mark.parametrize(
    ("contributions", "floors"),
    [
        ({}, {}),
        ({"a": float("nan")}, {}),
        ({"a": float("inf")}, {}),
        ({"a": 1.0}, {"a": Decimal(60), "b": Decimal(50)}),
        ({"a": 1.0}, {"a": Decimal("-1")}),
    ],
)
def test_contribution_shares_refuses(
    contributions: dict[str, float], floors: dict[str, Decimal]
) -> None:
    with pytest.raises(AllocationError):
        contribution_shares(contributions, floors)


def _commercial(
    scheme: dict[str, object], price: str = "0.05", currency: str = "EUR"
) -> Commercial:
    return Commercial.model_validate(
        {"price_per_prediction": {"amount": price, "currency": currency}, "revenue_share": scheme}
    )


def test_shares_for_both_schemes() -> None:
    fixed = _commercial({"scheme": "fixed", "shares": {"a": "62.5", "b": "37.5"}})
    assert shares_for(fixed, None) == {"a": Decimal("62.5"), "b": Decimal("37.5")}
    assert shares_for(fixed, {"a": 1.0}) == {"a": Decimal("62.5"), "b": Decimal("37.5")}
    contrib = _commercial({"scheme": "contribution", "floors": {"o": "10"}})
    assert shares_for(contrib, {"a": 3.0, "b": 1.0}) == {
        "o": Decimal(10),
        "a": Decimal("67.5"),
        "b": Decimal("22.5"),
    }
    with pytest.raises(AllocationError, match="no contributions"):
        shares_for(contrib, None)


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    CURRENCIES,
)
def test_gross_is_exact_in_minor_units(predictions: int, price_units: int, currency: str) -> None:
    price = Money.from_minor_units(price_units, currency)
    gross = gross_minor(predictions, price)
    assert type(gross) is int
    assert gross == predictions * price_units
    assert Decimal(gross).scaleb(-CURRENCY_MINOR_UNITS[currency]) == predictions * price.amount


def test_gross_examples_and_refusals() -> None:
    assert gross_minor(3, Money(amount=Decimal("0.05"), currency="EUR")) == 15
    assert gross_minor(7, Money(amount=Decimal("8"), currency="JPY")) == 56
    assert gross_minor(2, Money(amount=Decimal("1.234"), currency="KWD")) == 2468
    assert gross_minor(0, Money(amount=Decimal("0.05"), currency="EUR")) == 0
    for bad in (-1, True, 1.0):
        with pytest.raises(AllocationError):
            gross_minor(bad, Money(amount=Decimal("1"), currency="EUR"))  # type: ignore[arg-type]


@settings(max_examples=200)
@given(
    st.integers(0, 10**7),
    st.integers(0, 10**4),
    st.sampled_from(["JPY", "EUR", "KWD", "CLF"]),  # exponents 0, 2, 3, 4
    percent_maps(),
)
def test_gross_split_sums_to_gross_in_any_currency(
    predictions: int, price_units: int, currency: str, shares: dict[str, Decimal]
) -> None:
    price = Money.from_minor_units(price_units, currency)
    gross = gross_minor(predictions, price)
    parts = allocate(gross, shares)
    assert sum(parts.values()) == gross
    if predictions == 0:
        assert set(parts.values()) == {0}
