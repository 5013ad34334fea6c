"""Validation of rule parameters at construction time (STYLE.md 6), and the wording they share."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from rules._errors import ConfigurationError
from rules._facts import Facts
from rules._money import (
    MONEY_CONTEXT,
    MONEY_DIGITS,
    float_refusal,
    normalize_currency,
    quantize_exact,
    to_decimal,
    written_digits,
)
from rules._text import QUOTE_LIMIT

AmountLike = Decimal | str | int


class Table(Mapping[str, Decimal]):
    """A read-only, hashable ``currency -> amount`` table, so that rules are hashable values.

    Equal to any mapping with the same items; iterates in currency order.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Decimal] | None = None) -> None:
        self._items: dict[str, Decimal] = dict(sorted((items or {}).items()))

    def __getitem__(self, key: str) -> Decimal:
        return self._items[key]

    def get(self, key: str, default: Decimal | None = None) -> Decimal | None:  # type: ignore[override]  # Mapping.get's overloads; same behaviour, without the slow ABC fallback
        """Return the amount for *key*, or *default*."""
        return self._items.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return repr(self._items)


def number(value: object, path: str, *, low: Decimal | None = None,
           high: Decimal | None = None, below: Decimal | None = None) -> Decimal:
    """Return *value* as a Decimal in ``[low, high]`` (and under *below*), or raise naming *path*.

    A zero is returned without a sign (``-0.0`` in TOML is ``0.0``), so that it is written
    back (``dump``) as a number the grammar reads.

    Raises:
        ConfigurationError: *value* is a float, not a number, out of range, or has more
            than 34 digits written out (the rules compute with 34: more would be rounded, and
            ``1E+999999999`` written out is a billion digits).
    """
    if isinstance(value, float):
        raise ConfigurationError(float_refusal(value), path=path)
    try:
        result = to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), path=path) from exc
    if low is not None and result < low:
        raise ConfigurationError(f"must be at least {low}, got {result}", path=path)
    if high is not None and result > high:
        raise ConfigurationError(f"must be at most {high}, got {result}", path=path)
    if below is not None and result >= below:
        raise ConfigurationError(f"must be below {below}, got {result}", path=path)
    digits = written_digits(result)
    if digits > MONEY_DIGITS:
        raise ConfigurationError(
            f"has {digits} digits written out; at most {MONEY_DIGITS} are read exactly",
            path=path,
        )
    return result.copy_abs() if result.is_zero() else result


def amounts(values: Mapping[str, AmountLike] | None, path: str) -> Table:
    """Return a per-currency amount table, each amount >= 0 and exact at its currency's exponent.

    Raises:
        ConfigurationError: not a mapping, an unknown currency, a currency listed twice
            (``"brl"`` and ``"BRL"``), or a bad amount; the path names the entry.
    """
    if values is None:
        return Table()
    if not isinstance(values, Mapping):
        raise ConfigurationError(
            f"expected a table of currency -> amount such as {{'BRL': '100.00'}}, "
            f"got {type(values).__name__}",
            path=path,
        )
    table: dict[str, Decimal] = {}
    for raw_code, raw_amount in values.items():
        where = f"{path}.{_key(raw_code)}"
        try:
            code = normalize_currency(raw_code)
        except ValueError as exc:
            raise ConfigurationError(str(exc), path=where) from exc
        if code in table:
            raise ConfigurationError(f"{code} is listed more than once", path=where)
        amount = number(raw_amount, where, low=Decimal(0))
        try:
            table[code] = quantize_exact(amount, code)
        except ValueError as exc:
            raise ConfigurationError(str(exc), path=where) from exc
    return Table(table)


def _key(key: object) -> str:
    """Return *key* for a key path, cut like a quoted input (at most 60 characters)."""
    text = str(key)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


def money(value: Decimal, currency: str) -> str:
    """Return ``"1000.00 ARS"``."""
    return f"{value} {currency}"


def spendable_text(facts: Facts) -> str:
    """Return what is spendable, showing the holds when there are any."""
    if facts.reserved:
        return (
            f"{money(facts.spendable, facts.currency)} spendable "
            f"(available {facts.available} - held {facts.reserved})"
        )
    return f"{money(facts.spendable, facts.currency)} spendable"


def required_text(facts: Facts) -> str:
    """Return what the payout debits, showing the fee when there is one."""
    if facts.fee:
        return f"{money(facts.required, facts.currency)} (amount {facts.amount} + fee {facts.fee})"
    return money(facts.required, facts.currency)


def table_text(table: Mapping[str, Decimal]) -> str:
    """Return ``"1000.00 ARS, 50.00 BRL"``."""
    return ", ".join(money(amount, code) for code, amount in table.items())


def percent_text(value: Decimal) -> str:
    """Return ``"2.5%"``."""
    return f"{value.normalize(MONEY_CONTEXT):f}%"


def as_data(**values: object) -> dict[str, Any]:
    """Return a rule's entry keys: amounts as strings, empty tables and ``None`` left out.

    Amounts are strings (``"1000.00"``), so that the entry can be written as TOML, YAML or JSON
    without ever passing through ``float``.
    """
    entry: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Decimal):
            entry[key] = format(value, "f")
        elif isinstance(value, Mapping):
            if value:
                entry[key] = {code: format(amount, "f") for code, amount in value.items()}
        elif value is not None:
            entry[key] = value
    return entry
