"""Exact money and percentages: decimal strings, ISO 4217 currencies, integer minor units.

Every amount in a contract is written as a *plain decimal string* such as ``"0.05"``: digits, at
most one point, no sign, no exponent. Numbers (``0.05`` unquoted in YAML) are refused because a
binary float cannot hold most decimal fractions exactly; exponent forms (``"1e-3"``) are refused so
that what is signed is what is read. Values become :class:`decimal.Decimal` and are written back in
the same plain form.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.base import Frozen
from contracts.errors import raise_issues

# ISO 4217 active codes (2025) and their minor-unit exponents: an amount in EUR has at most two
# decimal places, one in JPY none, one in KWD three. Codes not listed are refused.
_ZERO = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE = "BHD IQD JOD KWD LYD OMR TND"
_FOUR = "CLF UYW"
_TWO = (
    "AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL "
    "GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC "
    "SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW "
    "ZWG"
)
CURRENCY_MINOR_UNITS: dict[str, int] = {
    code: exponent
    for codes, exponent in ((_ZERO, 0), (_TWO, 2), (_THREE, 3), (_FOUR, 4))
    for code in codes.split()
}
"""ISO 4217 currency code -> number of decimal places of its minor unit."""

PLAIN_DECIMAL_PATTERN = r"^(0|[1-9][0-9]*)(\.[0-9]+)?$"
_PLAIN = re.compile(PLAIN_DECIMAL_PATTERN)
_EXPONENT = re.compile(r"[0-9]*\.?[0-9]*[eE][+-]?[0-9]+")
_MAX_CHARS = 24  # well inside Decimal's default 28-digit precision
PERCENT_MAX_PLACES = 6


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (2 for EUR, 0 for JPY, 3 for KWD)."""
    try:
        return CURRENCY_MINOR_UNITS[currency]
    except KeyError:
        raise ValueError(f"unknown currency {currency!r}") from None


def parse_plain_decimal(value: object) -> Decimal:
    """``value`` as a non-negative Decimal; it must be a plain decimal string (or a Decimal).

    Raises :class:`pydantic_core.PydanticCustomError` with a message that says what is wrong.
    """
    if isinstance(value, Decimal):
        if not value.is_finite() or value.is_signed() or len(format(value, "f")) > _MAX_CHARS:
            raise PydanticCustomError(
                "decimal_invalid",
                "must be a finite, non-negative decimal of at most {n} characters, got {value}",
                {"value": str(value), "n": _MAX_CHARS},
            )
        return value
    if isinstance(value, int | float):  # bool too
        raise PydanticCustomError(
            "decimal_not_string",
            'must be written as a decimal string such as "0.05", not the number {value}; quote it',
            {"value": repr(value)},
        )
    if not isinstance(value, str):
        raise PydanticCustomError(
            "decimal_type",
            'must be a decimal string such as "0.05", got {kind}',
            {"kind": type(value).__name__},
        )
    text = value
    if len(text) > _MAX_CHARS:
        raise PydanticCustomError(
            "decimal_too_long", "decimal string longer than {n} characters", {"n": _MAX_CHARS}
        )
    if _PLAIN.fullmatch(text):
        return Decimal(text)
    if text.strip().startswith("-"):
        raise PydanticCustomError(
            "decimal_negative", "must not be negative, got {value}", {"value": repr(text)}
        )
    if _EXPONENT.fullmatch(text.strip()):
        raise PydanticCustomError(
            "decimal_exponent",
            "exponent form {value} is not allowed; write the plain decimal{hint}",
            {"value": repr(text), "hint": _plain_hint(text)},
        )
    raise PydanticCustomError(
        "decimal_format",
        "{value} is not a plain decimal: digits with an optional point and fraction, no sign, "
        'no spaces, no leading zeros, e.g. "0.05" or "12"',
        {"value": repr(text)},
    )


def _plain_hint(text: str) -> str:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return ""
    return f' "{format(value, "f")}"' if value.is_finite() and not value.is_signed() else ""


def plain_decimal_string(value: Decimal) -> str:
    """``value`` written as a plain decimal (never in exponent form)."""
    return format(value, "f")


def _decimal_places(value: Decimal) -> int:
    """Decimal places needed to write ``value`` exactly (trailing zeros do not count)."""
    exponent = value.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite values only
    return max(0, -exponent)


def _check_percent(value: Decimal) -> Decimal:
    if value > 100:
        raise PydanticCustomError(
            "percent_range", "a percentage must be at most 100, got {value}", {"value": str(value)}
        )
    if _decimal_places(value) > PERCENT_MAX_PLACES:
        raise PydanticCustomError(
            "percent_precision",
            "a percentage has at most {n} decimal places",
            {"n": PERCENT_MAX_PLACES},
        )
    return value


def _check_currency(value: str) -> str:
    if value not in CURRENCY_MINOR_UNITS:
        hint = (
            f"; codes are upper case, e.g. {value.upper()!r}"
            if value.upper() in CURRENCY_MINOR_UNITS
            else ""
        )
        raise PydanticCustomError(
            "currency_unknown",
            "unknown ISO 4217 currency code {value}{hint}",
            {"value": repr(value), "hint": hint},
        )
    return value


_DECIMAL_SCHEMA: dict[str, Any] = {
    "type": "string",
    "pattern": PLAIN_DECIMAL_PATTERN,
    "maxLength": _MAX_CHARS,
}

PlainDecimal = Annotated[
    Decimal,
    BeforeValidator(parse_plain_decimal),
    PlainSerializer(plain_decimal_string, return_type=str, when_used="json"),
    WithJsonSchema(
        {**_DECIMAL_SCHEMA, "description": 'Non-negative plain decimal string, e.g. "0.05".'}
    ),
]
"""A non-negative decimal given as a plain decimal string."""

Percent = Annotated[
    Decimal,
    BeforeValidator(parse_plain_decimal),
    AfterValidator(_check_percent),
    PlainSerializer(plain_decimal_string, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            **_DECIMAL_SCHEMA,
            "description": f'Percentage 0..100 as a plain decimal string, e.g. "37.5"; at most '
            f"{PERCENT_MAX_PLACES} decimal places.",
        }
    ),
]
"""A percentage in [0, 100] given as a plain decimal string."""

Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema(
        {"type": "string", "enum": sorted(CURRENCY_MINOR_UNITS), "description": "ISO 4217 code."}
    ),
]
"""An ISO 4217 currency code from :data:`CURRENCY_MINOR_UNITS`."""


class Money(Frozen):
    """An exact amount in a currency, with no more decimals than the currency's minor unit."""

    amount: PlainDecimal
    currency: Currency

    @model_validator(mode="after")
    def _precision(self) -> Money:
        places = minor_unit_exponent(self.currency)
        if _decimal_places(self.amount) > places:
            raise_issues(
                [
                    (
                        ("amount",),
                        f"{plain_decimal_string(self.amount)} {self.currency} has "
                        f"{_decimal_places(self.amount)} decimal places; {self.currency} allows "
                        f"{places}",
                    )
                ]
            )
        return self

    @property
    def minor_units(self) -> int:
        """The amount in integer minor units (cents for EUR, yen for JPY, fils for KWD)."""
        return int(self.amount.scaleb(minor_unit_exponent(self.currency)))

    @classmethod
    def from_minor_units(cls, units: int, currency: str) -> Money:
        """The amount of ``units`` minor units of ``currency``."""
        if units < 0:
            raise ValueError("minor units must be non-negative")
        places = minor_unit_exponent(currency)
        return cls(amount=Decimal(units).scaleb(-places), currency=currency)

    def __str__(self) -> str:
        return f"{plain_decimal_string(self.amount)} {self.currency}"


__all__ = [
    "CURRENCY_MINOR_UNITS",
    "Currency",
    "Money",
    "Percent",
    "PlainDecimal",
    "minor_unit_exponent",
    "parse_plain_decimal",
    "plain_decimal_string",
]
