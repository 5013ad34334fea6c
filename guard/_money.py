"""Parsing of payout amounts and currencies at the edge of the guard.

Everything that enters ``check``/``reserve`` passes through here once; what comes out is an
upper-case ISO 4217 code and a ``Decimal`` at that currency's exponent. Bad input raises
:class:`~guard.errors.InvalidPayoutRequest` saying what was wrong and what is accepted.
"""

from __future__ import annotations

from decimal import Decimal

from guard._text import quoted
from guard.errors import InvalidPayoutRequest
from rules.money import (
    currency_exponent,
    normalize_currency,
    quantize_exact,
    smallest_unit,
    to_decimal,
    zero,
)

__all__ = [
    "currency_exponent",
    "minor_to_major",
    "parse_amount",
    "parse_currency",
    "smallest_unit",
    "zero",
]

AmountInput = Decimal | str | int


def parse_currency(value: object) -> str:
    """Return *value* as an upper-case active ISO 4217 code.

    Raises:
        InvalidPayoutRequest: *value* is not an active ISO 4217 currency with a minor unit.
    """
    try:
        return normalize_currency(value)
    except ValueError as exc:
        raise InvalidPayoutRequest(str(exc)) from None


def parse_amount(
    value: object, currency: str, *, field: str = "amount", allow_zero: bool = False
) -> Decimal:
    """Return *value* as a ``Decimal`` exact at *currency*'s exponent.

    Accepts ``Decimal``, ``int`` and ``str`` in major units, a string in the one amount
    grammar (ASCII digits with at most one ``.``: see ``rules.money.AMOUNT_GRAMMAR``).
    ``"10"`` BRL becomes ``Decimal("10.00")``.

    Raises:
        InvalidPayoutRequest: *value* is a float, a string outside the grammar (a sign,
            spaces, ``_``, an exponent, non-ASCII digits), NaN, infinite, zero (unless
            *allow_zero*), negative, or has more decimal places than the currency allows.
            The message quotes at most 60 characters of *value*.
    """
    try:
        number = to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise InvalidPayoutRequest(f"{field}: {exc}") from None
    if number < 0 or (number == 0 and not allow_zero):
        raise InvalidPayoutRequest(
            f"{field} must be {'zero or ' if allow_zero else ''}positive, got {quoted(value)}"
        )
    try:
        return quantize_exact(number, currency)
    except ValueError as exc:
        raise InvalidPayoutRequest(f"{field}: {exc}") from None


def minor_to_major(minor: int | str | Decimal, currency: str) -> Decimal:
    """Convert an integer amount in minor units to major units at the currency's exponent.

    ``minor_to_major("1200000", "ARS") == Decimal("12000.00")``; ``("1500", "CLP")`` is
    ``Decimal("1500")``; ``("1500", "KWD")`` is ``Decimal("1.500")``.

    Raises:
        ValueError: *minor* is not a whole number.
    """
    value = to_decimal(minor)
    if value != value.to_integral_value():
        raise ValueError(f"minor-unit amount {minor!r} is not a whole number")
    exponent = currency_exponent(currency)
    return value.to_integral_value().scaleb(-exponent).quantize(smallest_unit(currency))
