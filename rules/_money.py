"""Currency exponents and exact quantization, shared by ``rules`` and ``guard``.

Pure functions over :class:`decimal.Decimal`; nothing here ever touches ``float``.
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager
from contextvars import ContextVar
from decimal import (
    MAX_EMAX,
    MAX_PREC,
    MIN_EMIN,
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    getcontext,
    setcontext,
)
from functools import lru_cache

from iso4217 import Currency

from rules._text import quoted

__all__ = [
    "ADD",
    "AMOUNT_GRAMMAR",
    "DIVIDE",
    "EXACT_MULTIPLY",
    "MONEY_CONTEXT",
    "MONEY_DIGITS",
    "MULTIPLY",
    "SUBTRACT",
    "currency_exponent",
    "float_refusal",
    "is_currency",
    "money_context",
    "normalize_currency",
    "parse_amount_text",
    "quantize_down",
    "quantize_exact",
    "quantize_up",
    "smallest_unit",
    "to_decimal",
    "written_digits",
    "zero",
]


# Rules compute in this context, not in whatever the calling thread set: an application that
# lowered ``getcontext().prec`` must not make ``available - reserved`` round. 34 digits is
# decimal128, far beyond any balance; a result that cannot be represented raises.
MONEY_CONTEXT = Context(
    prec=34,
    rounding=ROUND_HALF_EVEN,
    Emin=-999_999,
    Emax=999_999,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


MONEY_DIGITS = 34
"""The digits of :data:`MONEY_CONTEXT`: a rule's number written out with more is refused."""

# A product has at most the digits of its two factors, so a product worked out to unlimited
# precision is exact and costs what a rounded one does: nothing is rounded before the one
# rounding a rule means (a reserve rounded up to the currency's unit). Multiplication only:
# a division to unlimited precision might never end.
_EXACT = Context(
    prec=MAX_PREC, rounding=ROUND_HALF_EVEN, Emin=MIN_EMIN, Emax=MAX_EMAX,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)
EXACT_MULTIPLY = _EXACT.multiply
"""``EXACT_MULTIPLY(a, b)`` is ``a * b`` exactly, whatever the digits and the caller's context."""


AMOUNT_GRAMMAR = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
"""The one grammar of amount strings: ASCII digits, optionally one ``.`` and more digits.

No sign, no whitespace, no ``_`` separators, no exponent, no ``NaN``/``Infinity`` and no
digits of other scripts (``"١٢٣"``): ``"2500"``, ``"2500.00"`` and ``"0.5"`` only. The
payout requests, the rules and configuration, the CLI and the provider fetchers all read
amounts with it.
"""

_CURRENCY = re.compile(r"[A-Za-z]{3}", re.ASCII)

# Arithmetic in MONEY_CONTEXT whatever the caller's context, for code outside money blocks.
ADD = MONEY_CONTEXT.add
SUBTRACT = MONEY_CONTEXT.subtract
MULTIPLY = MONEY_CONTEXT.multiply
DIVIDE = MONEY_CONTEXT.divide


class _MoneyBlock:
    """``with`` block computing in a copy of MONEY_CONTEXT, restoring the caller's after."""

    __slots__ = ("_previous", "_token")

    def __enter__(self) -> Context:
        current = getcontext()
        self._previous = current
        context = MONEY_CONTEXT.copy()
        setcontext(context)
        self._token = _active.set(context)
        return context

    def __exit__(self, *exc: object) -> None:
        _active.reset(self._token)
        setcontext(self._previous)


class _InsideMoneyBlock:
    """The ``with`` block handed out inside a money block: it changes nothing."""

    __slots__ = ()

    def __enter__(self) -> Context:
        return getcontext()

    def __exit__(self, *exc: object) -> None:
        return None


_INSIDE = _InsideMoneyBlock()


# The context this task's outermost money block installed (decimal contexts follow contextvars).
_active: ContextVar[Context | None] = ContextVar("payout_guard_money_context", default=None)


def money_context() -> AbstractContextManager[Context]:
    """Return a ``with`` block that computes in :data:`MONEY_CONTEXT` (the caller's is restored).

    Blocks nest: the rules enter one each, and inside the guard's own block that is free.
    """
    if _active.get() is getcontext():
        return _INSIDE  # already computing in a money context on this thread or task
    return _MoneyBlock()


@lru_cache(maxsize=512)
def _lookup(code: str) -> int | None:
    try:
        exponent = Currency(code).exponent
    except ValueError:
        return None
    # Funds and metals (XAU, XDR, ...) have no minor unit; a payout cannot be made in them.
    return exponent if isinstance(exponent, int) else None


def is_currency(code: str) -> bool:
    """Return whether *code* is an active ISO 4217 currency with a minor unit."""
    return isinstance(code, str) and _lookup(code) is not None


def normalize_currency(code: object) -> str:
    """Return *code* as an upper-case active ISO 4217 code.

    Raises:
        ValueError: *code* is not a string naming an active ISO 4217 currency.
    """
    if not isinstance(code, str):
        raise ValueError(
            f"currency must be a 3-letter ISO 4217 code string such as 'BRL', "
            f"not {type(code).__name__}"
        )
    # Three ASCII letters before any case folding: a dotless i or a long s would otherwise
    # upper-case into INR or SEK.
    upper = code.upper() if _CURRENCY.fullmatch(code) else ""
    if not upper or _lookup(upper) is None:
        raise ValueError(
            f"unknown currency {quoted(code)}: expected an active ISO 4217 code with a minor "
            f"unit (three ASCII letters), such as 'BRL', 'ARS', 'MXN', 'CLP' or 'KWD'"
        )
    return upper


def currency_exponent(code: str) -> int:
    """Return the ISO 4217 minor-unit exponent of *code* (2 for BRL, 0 for CLP, 3 for KWD).

    Raises:
        ValueError: *code* is not an active ISO 4217 currency.
    """
    exponent = _lookup(code) if isinstance(code, str) else None
    if exponent is not None:
        return exponent
    # Lower case codes are accepted; anything else raises with the full message.
    exponent = _lookup(normalize_currency(code))
    if exponent is None:  # pragma: no cover - normalize_currency accepts only known codes
        raise ValueError(f"unknown currency {code!r}")
    return exponent


@lru_cache(maxsize=512)
def smallest_unit(code: str) -> Decimal:
    """Return the smallest amount of *code*: ``Decimal("0.01")`` BRL, ``Decimal("1")`` CLP."""
    return Decimal(1).scaleb(-currency_exponent(code), context=MONEY_CONTEXT)


@lru_cache(maxsize=512)
def zero(code: str) -> Decimal:
    """Return zero at *code*'s exponent: ``Decimal("0.00")`` BRL, ``Decimal("0")`` CLP."""
    return Decimal(0).quantize(smallest_unit(code), context=MONEY_CONTEXT)


def written_digits(value: Decimal) -> int:
    """Return how many digits *value* has written out in full (``0.05`` has 3, ``1E+3`` 4).

    Worked out from the exponent, without writing it out: ``1E+999999999`` has a billion.
    """
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"{value} is not a finite number")
    adjusted = value.adjusted()
    return (adjusted if adjusted > 0 else 0) + 1 + (-exponent if exponent < 0 else 0)


def quantize_exact(value: Decimal, code: str) -> Decimal:
    """Return *value* at *code*'s exponent, refusing any rounding.

    ``Decimal("6000000.000000")`` BRL becomes ``Decimal("6000000.00")``; ``Decimal("10.001")``
    BRL raises, because dropping the ``1`` would silently change the amount.

    Raises:
        ValueError: *value* is not finite or has non-zero digits below the currency's unit.
    """
    if not value.is_finite():
        raise ValueError(f"amount {value} is not a finite number")
    unit = smallest_unit(code)
    try:
        exact = value.quantize(unit, None, MONEY_CONTEXT)
    except InvalidOperation as exc:
        raise ValueError(f"amount {quoted(value)} has too many digits for {code}") from exc
    if exact != value:
        places = currency_exponent(code)
        raise ValueError(
            f"amount {quoted(value)} has more decimal places than {code} allows ({places}); "
            f"payout-guard never rounds money silently"
        )
    return exact


def quantize_down(value: Decimal, code: str) -> Decimal:
    """Return *value* rounded toward minus infinity to *code*'s exponent (for caps)."""
    return value.quantize(smallest_unit(code), ROUND_FLOOR, MONEY_CONTEXT)


def quantize_up(value: Decimal, code: str) -> Decimal:
    """Return *value* rounded toward plus infinity to *code*'s exponent (for reserves)."""
    return value.quantize(smallest_unit(code), ROUND_CEILING, MONEY_CONTEXT)


def float_refusal(value: float) -> str:
    """Return the message that refuses the float *value* and says to quote it."""
    return (
        f"{value!r} is a float, which cannot hold decimal amounts exactly; "
        f"quote it ({repr(value)!r}) or pass a Decimal"
    )


def parse_amount_text(text: str) -> Decimal:
    """Return the amount string *text* as a ``Decimal``, read by :data:`AMOUNT_GRAMMAR`.

    Raises:
        ValueError: *text* is not ASCII digits with at most one ``.`` (the message quotes
            at most 60 characters of it).
    """
    if AMOUNT_GRAMMAR.fullmatch(text) is None:
        raise ValueError(
            f"{quoted(text)} is not an amount: write ASCII digits with at most one '.', "
            f"such as '2500' or '2500.00' (no sign, spaces, '_' or exponent)"
        )
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the grammar admits only decimal literals
        raise ValueError(f"{quoted(text)} is not a decimal number") from None


def to_decimal(value: object) -> Decimal:
    """Return *value* (``Decimal``, ``str`` or ``int``) as a finite ``Decimal``.

    A string must follow :data:`AMOUNT_GRAMMAR` (``"2500.00"``); ``int`` and ``Decimal``
    are taken as they are (a negative one is the caller's to refuse).

    Raises:
        TypeError: *value* is a ``float`` (it may already have lost digits) or another type.
        ValueError: *value* is not a number in the grammar, or is NaN or infinite.
    """
    if isinstance(value, bool):
        raise TypeError("expected an amount as a Decimal, str or int, not bool")
    if isinstance(value, float):
        raise TypeError(float_refusal(value))
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        result = parse_amount_text(value)
    else:
        raise TypeError(
            f"expected an amount as a Decimal, str or int, not {type(value).__name__}"
        )
    if not result.is_finite():
        raise ValueError(f"{quoted(value)} is not a finite number")
    return result
