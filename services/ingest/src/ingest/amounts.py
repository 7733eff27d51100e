"""Money in a payment request: the currencies and countries Pulse takes (ISO 4217 and
ISO 3166-1 codes), how many decimals each currency has, an amount read from its decimal
text, and the JSON Schema that describes an amount. Pure.

How many decimals a currency has comes from the Unicode CLDR's currency data, through Babel
(:func:`currency_digits`). Pulse keeps every amount to two places, so an amount may have at
most two decimal places, and none but zeros in a currency without a minor unit (JPY, KRW,
…: ``1500`` or ``1500.00``, never ``1500.50``); in a currency with three (BHD, KWD, …) the
third is refused too (:func:`kept_places`).

An amount is read from its decimal text (:func:`decimal_from_text`; a JSON number reaches it
as the text the client sent, :class:`ingest.validation.JsonNumber`), never from a float.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import pycountry
from babel.numbers import get_currency_precision

__all__ = [
    "COUNTRY_CODES",
    "CURRENCY_CODES",
    "DEFAULT_MAX_AMOUNT",
    "WHOLE_AMOUNT_CURRENCIES",
    "amount_field_schema",
    "amount_pattern",
    "amount_schema",
    "currency_digits",
    "decimal_from_text",
    "kept_places",
    "whole_amount_rule",
]

DEFAULT_MAX_AMOUNT: Final = Decimal("1000000.00")

# ISO 4217 codes for real money: XTS (testing) and XXX (no currency) are not payable.
CURRENCY_CODES: Final = tuple(sorted({c.alpha_3 for c in pycountry.currencies} - {"XTS", "XXX"}))
COUNTRY_CODES: Final = tuple(sorted(c.alpha_2 for c in pycountry.countries))
# Decimal places of each currency's minor unit (CLDR's ``digits``): 0 for JPY, 3 for BHD.
_DIGITS: Final = {code: get_currency_precision(code) for code in CURRENCY_CODES}
# Currencies without a minor unit: their amounts are whole (JPY, KRW, …).
WHOLE_AMOUNT_CURRENCIES: Final = tuple(code for code in CURRENCY_CODES if _DIGITS[code] == 0)
# Decimal places Pulse keeps of any amount (stored, in events and responses).
_PLACES: Final = 2

# Plain decimal notation, optionally negative (so "-5" gets "must be greater than 0").
_DECIMAL_TEXT: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_MAX_AMOUNT_TEXT: Final = 40
_CENT: Final = Decimal("0.01")


def amount_pattern(max_amount: Decimal, *, whole: bool = False) -> str:
    """A regular expression for amount strings in ``(0, max_amount]`` (``whole``: with no
    fraction but zeros, as for a currency without a minor unit).

    Exact when ``max_amount`` is a power of ten (the default); otherwise it bounds the number
    of integer digits and the server checks the rest.
    """
    integer = max_amount.to_integral_value()
    digits = len(str(int(integer)))
    places = r"(?:\.00?)?" if whole else r"(?:\.[0-9]{1,2})?"
    below_one = "" if whole else r"0\.(?:0[1-9]|[1-9][0-9]?)|"
    if max_amount == integer and str(int(integer)) == "1" + "0" * (digits - 1):
        body = rf"{below_one}[1-9][0-9]{{0,{digits - 2}}}{places}|{int(integer)}(?:\.00?)?"
    else:
        body = rf"{below_one}[1-9][0-9]{{0,{digits - 1}}}{places}"
    return rf"^(?:{body})$"


def amount_schema(max_amount: Decimal, *, whole: bool = False) -> dict[str, Any]:
    """The JSON Schema of an amount up to ``max_amount`` (``whole``: no fraction)."""
    return {
        "anyOf": [
            {"type": "string", "pattern": amount_pattern(max_amount, whole=whole)},
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": float(max_amount),
                "multipleOf": 1 if whole else 0.01,
            },
        ]
    }


def amount_field_schema() -> dict[str, Any]:
    """The JSON Schema of a request's ``amount`` field: described in words, up to
    :data:`DEFAULT_MAX_AMOUNT`, with an example."""
    return {
        "description": (
            "A decimal string or JSON number in plain notation (no exponent), greater than 0, "
            "with at most two decimal places (a whole number in a currency without a minor "
            "unit, such as JPY), at most the configured maximum."
        ),
        **amount_schema(DEFAULT_MAX_AMOUNT),
        "examples": ["12.50"],
    }


def whole_amount_rule(max_amount: Decimal) -> dict[str, Any]:
    """The request schema's rule that a currency without a minor unit takes whole amounts
    (JSON Schema ``if``/``then``, in the request's ``allOf``)."""
    return {
        "if": {
            "properties": {"currency": {"enum": list(WHOLE_AMOUNT_CURRENCIES)}},
            "required": ["currency"],
        },
        "then": {"properties": {"amount": amount_schema(max_amount, whole=True)}},
    }


def currency_digits(currency: str) -> int:
    """Decimal places of the currency's minor unit (CLDR, through Babel): EUR 2, JPY 0,
    BHD 3; 2 for a code Pulse does not take."""
    return _DIGITS.get(currency, _PLACES)


def decimal_from_text(text: str) -> Decimal:
    """The amount written as ``text`` in plain decimal notation; raises :class:`ValueError`
    (its message says what is allowed) for any other text."""
    if len(text) > _MAX_AMOUNT_TEXT or not _DECIMAL_TEXT.fullmatch(text):
        raise ValueError("amount must be a decimal in plain notation, such as 12.50")
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        raise ValueError("amount must be a decimal in plain notation, such as 12.50") from None


def kept_places(value: Decimal, currency: str | None) -> Decimal:
    """``value`` to the two places Pulse keeps; raises :class:`ValueError` for decimals the
    currency does not have, or that Pulse does not keep."""
    _check_places(value, currency)
    return value.quantize(_CENT)


def _check_places(value: Decimal, currency: str | None) -> None:
    """Refuse decimals the currency does not have, or that Pulse does not keep."""
    exponent = value.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    digits = currency_digits(currency) if currency else _PLACES
    if digits == 0 and value != value.to_integral_value():
        raise ValueError(f"amount must be a whole number: {currency} has no minor unit")
    if places > _PLACES:
        note = (
            f" (Pulse keeps amounts to {_PLACES} places; {currency} has {digits})"
            if digits > _PLACES
            else ""
        )
        raise ValueError(f"amount must have at most {_PLACES} decimal places{note}")
