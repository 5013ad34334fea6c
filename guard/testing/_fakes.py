"""Balance fetchers for tests: fixed balances, and a provider that is always down."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple

from pydantic import ValidationError

from guard._models import BalanceSnapshot
from guard.errors import ConfigurationError, ProviderError, ProviderUnavailable
from rules.money import normalize_currency, quantize_exact, to_decimal

__all__ = ["FailingFetcher", "StaticFetcher"]

AmountLike = Decimal | str | int
BalanceSpec = AmountLike | Mapping[str, object]


class _Entry(NamedTuple):
    available: Decimal
    frozen: Decimal | None
    total: Decimal | None
    as_of: datetime | None


def _amount(value: object, currency: str, what: str) -> Decimal:
    try:
        return quantize_exact(to_decimal(value), currency)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc), path=f"{currency}.{what}") from None


class StaticFetcher:
    """Serve fixed balances, as a provider would, and count the calls.

    Args:
        balances: Currency -> available amount, or currency -> a mapping with ``available``
            and optionally ``frozen``, ``total`` and ``as_of`` (a timezone-aware datetime).
        name: Provider name reported in decisions.
        clock: Seconds since the epoch, for ``as_of`` when none is set (default ``time.time``).

    Example:
        >>> fetcher = StaticFetcher({"BRL": "1000.00", "ARS": {"available": "5", "frozen": "1"}})
        >>> [s.available for s in fetcher.fetch("BRL")]
        [Decimal('1000.00')]
    """

    def __init__(
        self,
        balances: Mapping[str, BalanceSpec] | None = None,
        *,
        name: str = "static",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._name = name
        self._clock = clock or time.time
        self._lock = threading.Lock()
        self._balances: dict[str, _Entry] = {}
        self.calls = 0
        self.requested: list[str | None] = []
        for currency, spec in (balances or {}).items():
            if isinstance(spec, Mapping):
                unknown = set(spec) - {"available", "frozen", "total", "as_of"}
                if unknown or "available" not in spec:
                    raise ConfigurationError(
                        "a balance mapping takes available (required), frozen, total and "
                        f"as_of; got {sorted(spec)}",
                        path=str(currency),
                    )
                as_of = spec.get("as_of")
                if as_of is not None and not isinstance(as_of, datetime):
                    raise ConfigurationError("must be a datetime", path=f"{currency}.as_of")
                self.set(currency, spec["available"], frozen=spec.get("frozen"),
                         total=spec.get("total"), as_of=as_of)
            else:
                self.set(currency, spec)

    @property
    def name(self) -> str:
        """Return the provider name."""
        return self._name

    def __repr__(self) -> str:
        return f"StaticFetcher(name={self._name!r}, currencies={sorted(self._balances)!r})"

    def set(
        self,
        currency: str,
        available: object,
        *,
        frozen: object = None,
        total: object = None,
        as_of: datetime | None = None,
    ) -> None:
        """Set (or replace) the balance of *currency*.

        Raises:
            ConfigurationError: an amount is a float, not a number, or not exact for the
                currency; or *as_of* is naive.
        """
        try:
            code = normalize_currency(currency)
        except ValueError as exc:
            raise ConfigurationError(str(exc), path=str(currency)) from None
        if as_of is not None and as_of.tzinfo is None:
            raise ConfigurationError("as_of must be timezone-aware", path=f"{code}.as_of")
        entry = _Entry(
            available=_amount(available, code, "available"),
            frozen=None if frozen is None else _amount(frozen, code, "frozen"),
            total=None if total is None else _amount(total, code, "total"),
            as_of=as_of,
        )
        with self._lock:
            self._balances[code] = entry

    def remove(self, currency: str) -> None:
        """Stop reporting *currency* (as if the provider no longer held it)."""
        with self._lock:
            self._balances.pop(normalize_currency(currency), None)

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        """Return the balances (only *currency*'s when given)."""
        with self._lock:
            self.calls += 1
            self.requested.append(currency)
            chosen = {
                code: entry for code, entry in self._balances.items()
                if currency is None or code == currency
            }
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            return [
                BalanceSnapshot(
                    provider=self._name,
                    currency=code,
                    available=entry.available,
                    frozen=entry.frozen,
                    total=entry.total,
                    as_of=entry.as_of or now,
                )
                for code, entry in chosen.items()
            ]
        except ValidationError as exc:
            raise ConfigurationError(f"invalid static balance: {exc}") from None


class FailingFetcher:
    """A provider that always fails with *exc* (an instance or an exception class).

    Example:
        >>> FailingFetcher(ProviderUnavailable("down", provider="luxcore")).name
        'failing'
    """

    def __init__(
        self,
        exc: BaseException | type[BaseException] | None = None,
        *,
        name: str = "failing",
    ) -> None:
        if exc is None:
            exc = ProviderUnavailable
        if isinstance(exc, type) and issubclass(exc, ProviderError):
            exc = exc("simulated outage", provider=name)
        self._exc = exc
        self._name = name
        self.calls = 0

    @property
    def name(self) -> str:
        """Return the provider name."""
        return self._name

    def __repr__(self) -> str:
        return f"FailingFetcher(name={self._name!r})"

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:  # noqa: ARG002 - the protocol's signature
        """Raise the configured exception."""
        self.calls += 1
        raise self._exc
