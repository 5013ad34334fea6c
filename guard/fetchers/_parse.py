"""Reading provider JSON without trusting it: exact amounts, named fields, clear complaints.

Everything here is pure. A problem is a :class:`BodyError` naming the field path
(``data[3].amount``) and what was wrong; the HTTP layer turns it into a
``ProviderResponseError`` that also names the provider.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from guard._models import BalanceSnapshot
from guard._money import minor_to_major
from rules.money import (
    AMOUNT_GRAMMAR,
    money_context,
    normalize_currency,
    quantize_down,
    quantize_exact,
)

__all__ = [
    "BodyError",
    "amount",
    "currency",
    "field",
    "integer",
    "loads",
    "obj",
    "seq",
    "snapshot",
    "unique",
]

# The one amount grammar (rules.money), with a sign so that a negative balance ("-5", and
# "-0" alike) is refused as negative rather than as unreadable.
_MAJOR = re.compile(r"-?" + AMOUNT_GRAMMAR.pattern, re.ASCII)
_MINOR = re.compile(r"-?[0-9]+", re.ASCII)
_MAX_SHOWN = 40


class BodyError(ValueError):
    """A response body field is missing, of the wrong type, or not a valid amount.

    Attributes:
        path: Where in the body (``"data[3].amount"``, ``"<body>"``).
        problem: What was wrong and what is accepted.
    """

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"field {path}: {problem}")


def shown(value: object) -> str:
    """Return a short, safe rendering of a body value for an error message."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, Decimal | int) and not isinstance(value, bool):
        text = str(value)
    else:
        text = json.dumps(value, default=str)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _type_name(value: object) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", Decimal: "a number",
             dict: "an object", list: "an array", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a number that money can take")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice, so its value is ambiguous")
        result[key] = value
    return result


def loads(raw: bytes) -> Any:
    """Decode a JSON body with every number exact: fractions as ``Decimal``, never ``float``.

    Args:
        raw: The body bytes (UTF-8, as JSON requires).

    Returns:
        The decoded value.

    Raises:
        BodyError: the bytes are not UTF-8, not JSON, hold NaN/Infinity or a duplicated key.
    """
    try:
        text = raw.decode("utf-8")
        return json.loads(
            text,
            parse_float=Decimal,
            parse_constant=_no_constants,
            object_pairs_hook=_no_duplicates,
        )
    except UnicodeDecodeError:
        raise BodyError("<body>", "is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            "<body>", f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise BodyError("<body>", f"is not acceptable JSON: {exc}") from None


def obj(value: object, path: str) -> dict[str, Any]:
    """Return *value* if it is a JSON object, else raise ``BodyError`` for *path*."""
    if not isinstance(value, dict):
        raise BodyError(path, f"expected an object, got {_type_name(value)}")
    return value


def seq(value: object, path: str) -> list[Any]:
    """Return *value* if it is a JSON array, else raise ``BodyError`` for *path*."""
    if not isinstance(value, list):
        raise BodyError(path, f"expected an array, got {_type_name(value)}")
    return value


def field(container: Mapping[str, Any], key: str, path: str = "") -> Any:
    """Return ``container[key]``; raise ``BodyError`` naming ``path.key`` when it is missing."""
    where = f"{path}.{key}" if path else key
    if key not in container:
        raise BodyError(where, "is missing")
    return container[key]


def integer(value: object, path: str) -> int:
    """Return *value* if it is a JSON integer (not a boolean), else raise ``BodyError``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(path, f"expected an integer, got {_type_name(value)} {shown(value)}")
    return value


def currency(value: object, path: str) -> str:
    """Return *value* as an ISO 4217 code, else raise ``BodyError`` for *path*."""
    try:
        return normalize_currency(value)
    except ValueError as exc:
        raise BodyError(path, str(exc)) from None


def amount(value: object, code: str, path: str, *, minor: bool = False) -> Decimal:
    """Return *value* as an exact, non-negative ``Decimal`` at *code*'s exponent.

    Accepts a decimal string (``"551.38"``, ``"0"``; digits and one point only), a JSON integer
    or a JSON number already decoded as ``Decimal``. With *minor*, the value is a whole number
    of minor units (``"1200000"`` ARS) and is returned in major units (``12000.00``).

    A major amount finer than the currency's unit is rounded **down** to it: Luxtak's amounts
    have no fixed scale and Pagsmile's carry six decimals, so ``"551.385"`` USD or
    ``100.123456`` BRL is a balance the provider may well send. Down never reads a cent that
    is not there, and the rest of the body (Luxtak's other currencies) stays readable.

    Args:
        value: The body value.
        code: ISO 4217 currency code of the amount.
        path: Field path for error messages.
        minor: Whether *value* is in minor units.

    Returns:
        The amount in major units at the currency's exponent.

    Raises:
        BodyError: wrong type, not a number, negative (``-0`` too), not whole (minor units), or
            beyond what money arithmetic holds.
    """
    try:
        with money_context():
            return _amount(value, code, path, minor=minor)
    except ArithmeticError:
        # Digits beyond what money arithmetic holds (34), or an exponent such as 1e999.
        raise BodyError(path, f"{shown(value)} is not an amount a balance can have") from None


def _amount(value: object, code: str, path: str, *, minor: bool) -> Decimal:
    grammar = _MINOR if minor else _MAJOR
    expected = "a whole number of minor units" if minor else "a decimal amount such as '551.38'"
    if isinstance(value, str):
        if grammar.fullmatch(value) is None:
            raise BodyError(path, f"{shown(value)} is not {expected}")
        number = Decimal(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = Decimal(value)
    elif isinstance(value, Decimal) and value.is_finite():
        number = value
    else:
        raise BodyError(path, f"expected {expected}, got {_type_name(value)} {shown(value)}")
    if number.is_signed():  # "-0" too: a balance is never below zero, so never signed
        raise BodyError(path, f"{shown(value)} is negative; a balance cannot be below zero")
    if minor:
        if number != number.to_integral_value():
            raise BodyError(path, f"{shown(value)} is not {expected}")
        number = minor_to_major(number, code)
    else:
        number = quantize_down(number, code)
    try:
        return quantize_exact(number, code)
    except ValueError as exc:
        raise BodyError(path, f"{exc} (got {shown(value)})") from None


def snapshot(
    provider: str,
    code: str,
    available: Decimal,
    *,
    as_of: datetime,
    path: str,
    frozen: Decimal | None = None,
    total: Decimal | None = None,
) -> BalanceSnapshot:
    """Build a ``BalanceSnapshot``, turning its validation errors into ``BodyError``.

    Raises:
        BodyError: the snapshot refused a value (its pydantic message, without the input).
    """
    try:
        return BalanceSnapshot(
            provider=provider, currency=code, available=available, frozen=frozen, total=total,
            as_of=as_of,
        )
    except ValidationError as exc:
        problems = "; ".join(str(error["msg"]) for error in exc.errors())
        raise BodyError(path, f"not a valid balance: {problems}") from None


def unique(snapshots: list[BalanceSnapshot], path: str) -> list[BalanceSnapshot]:
    """Return *snapshots*, refusing a body that lists one currency twice (which is right?).

    Raises:
        BodyError: two snapshots have the same currency.
    """
    seen: set[str] = set()
    for item in snapshots:
        if item.currency in seen:
            raise BodyError(path, f"lists {item.currency} twice, so its balance is ambiguous")
        seen.add(item.currency)
    return snapshots
