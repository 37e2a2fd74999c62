"""Money and percentages: plain decimal strings only, exact to the currency's minor unit."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from contracts import (
    CURRENCY_MINOR_UNITS,
    ContractValidationError,
    FixedShares,
    Money,
    minor_unit_exponent,
)

CURRENCIES = sorted(CURRENCY_MINOR_UNITS)


def test_minor_unit_exponents() -> None:
    expected = {"USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CNY": 2, "INR": 2, "SEK": 2, "NOK": 2}
    expected |= {"DKK": 2, "JPY": 0, "KRW": 0, "BHD": 3, "KWD": 3, "TND": 3, "CLF": 4}
    for code, places in expected.items():
        assert minor_unit_exponent(code) == places
    with pytest.raises(ValueError):
        minor_unit_exponent("EURO")


def _money_error(amount: object, currency: str = "EUR") -> str:
    """The message of the one error validating the amount raises, which must be at ``amount``."""
    data = {"amount": amount, "currency": currency}
    with pytest.raises(ValidationError) as info:
        Money.model_validate(data)
    errors = ContractValidationError.from_pydantic(info.value, data).errors
    assert [e["loc"] for e in errors] == ["amount"]
    return errors[0]["msg"]


@given(
    currency=st.sampled_from(CURRENCIES),
    units=st.integers(min_value=0, max_value=10**12),
    extra_zeros=st.integers(min_value=0, max_value=2),
)
def test_plain_decimals_within_the_minor_unit_are_accepted(
    currency: str, units: int, extra_zeros: int
) -> None:
    places = minor_unit_exponent(currency)
    text = format(Decimal(units).scaleb(-places), "f")
    if extra_zeros and places:
        text += "0" * extra_zeros  # trailing zeros do not add precision
    money = Money.model_validate({"amount": text, "currency": currency})
    assert money.minor_units == units
    assert Money.from_minor_units(units, currency) == Money(amount=Decimal(text), currency=currency)
    assert money.model_dump(mode="json")["amount"] == text


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_rejected(value: float) -> None:
    assert "quote it" in _money_error(value)


@given(st.integers())
def test_numbers_are_rejected_even_when_exact(value: int) -> None:
    assert "quote it" in _money_error(value)


@given(
    mantissa=st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False),
    exponent=st.integers(min_value=-12, max_value=12),
    letter=st.sampled_from(["e", "E"]),
)
def test_exponent_forms_are_rejected(mantissa: Decimal, exponent: int, letter: str) -> None:
    assert "exponent form" in _money_error(f"{mantissa}{letter}{exponent}")


@given(st.decimals(min_value=Decimal("0.01"), max_value=10**9, places=2, allow_nan=False))
def test_negative_amounts_are_rejected(value: Decimal) -> None:
    assert "negative" in _money_error(f"-{value}")


@given(
    currency=st.sampled_from(CURRENCIES),
    units=st.integers(min_value=0, max_value=10**9),
    excess=st.integers(min_value=1, max_value=3),
    last=st.integers(min_value=1, max_value=9),
)
def test_more_decimals_than_the_currency_has_are_rejected(
    currency: str, units: int, excess: int, last: int
) -> None:
    places = minor_unit_exponent(currency)
    text = format(Decimal(units).scaleb(-places), "f")
    text += ("" if "." in text else ".") + "0" * (excess - 1) + str(last)
    assert f"{currency} allows {places}" in _money_error(text, currency)


@pytest.mark.parametrize(
    "text", ["", ".5", "5.", "05", "+5", "0x10", "1,5", "1_000", "NaN", "Infinity", "٣"]
)
def test_other_malformed_amounts_are_rejected(text: str) -> None:
    _money_error(text)


def test_decimal_objects_are_accepted_from_code() -> None:
    assert Money(amount=Decimal("1E+2"), currency="JPY").model_dump(mode="json") == {
        "amount": "100",
        "currency": "JPY",
    }
    with pytest.raises(ValidationError):
        Money(amount=Decimal("-1"), currency="JPY")
    with pytest.raises(ValidationError):
        Money(amount=Decimal("NaN"), currency="JPY")


def test_str_and_minor_units() -> None:
    kwd = Money.model_validate({"amount": "1.234", "currency": "KWD"})
    assert kwd.minor_units == 1234
    assert str(kwd) == "1.234 KWD"


@given(
    shares=st.lists(st.integers(min_value=0, max_value=10**8), min_size=1, max_size=6).map(sorted),
    total=st.integers(min_value=0, max_value=10**12),
)
def test_allocation_in_minor_units_is_exact(shares: list[int], total: int) -> None:
    cuts = [0, *shares, 10**8]  # ten-thousandths of a basis point: 100% = 10**8
    parts = {
        f"p{i}": format(Decimal(b - a).scaleb(-6), "f")
        for i, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))
    }
    split = FixedShares.model_validate({"scheme": "fixed", "shares": parts}).allocate(total)
    assert sum(split.values()) == total
    for name, pct in parts.items():
        exact = Decimal(total) * Decimal(pct) / 100
        assert abs(Decimal(split[name]) - exact) < 1
