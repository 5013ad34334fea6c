"""Validation of rule parameters at construction time (STYLE.md 6)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from rules._errors import ConfigurationError
from rules._money import normalize_currency, quantize_exact, to_decimal

AmountLike = Decimal | str | int


def number(value: object, path: str, *, low: Decimal | None = None,
           high: Decimal | None = None) -> Decimal:
    """Return *value* as a Decimal within ``[low, high]`` or raise naming *path*."""
    try:
        result = to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), path=path) from exc
    if low is not None and result < low:
        raise ConfigurationError(f"must be at least {low}, got {result}", path=path)
    if high is not None and result > high:
        raise ConfigurationError(f"must be at most {high}, got {result}", path=path)
    return result


def amounts(values: Mapping[str, AmountLike] | None, path: str) -> dict[str, Decimal]:
    """Return a per-currency amount table, each amount exact at its currency's exponent."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigurationError(
            f"expected a table of currency -> amount such as {{'BRL': '100.00'}}, "
            f"got {type(values).__name__}",
            path=path,
        )
    table: dict[str, Decimal] = {}
    for raw_code, raw_amount in values.items():
        try:
            code = normalize_currency(raw_code)
        except ValueError as exc:
            raise ConfigurationError(str(exc), path=f"{path}.{raw_code}") from exc
        amount = number(raw_amount, f"{path}.{raw_code}", low=Decimal(0))
        try:
            table[code] = quantize_exact(amount, code)
        except ValueError as exc:
            raise ConfigurationError(str(exc), path=f"{path}.{raw_code}") from exc
    return table
