"""Rules about the payout itself: per-currency minimums and maximums, and balance freshness.

All amounts are major units at the currency's ISO 4217 exponent. Every rule reports ``cap``
and ``floor`` as the engine's contract asks (see ``rules._engine``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, ClassVar

from rules._bounds import BLOCKED, NO_BOUNDS, BoundedRule, Bounds, settle
from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict, passing
from rules._money import MONEY_CONTEXT
from rules._params import (
    AmountLike,
    Table,
    amounts,
    as_data,
    money,
    number,
    required_text,
    table_text,
)
from rules._schema import AmountTable, Number, RuleConfig

__all__ = ["CurrencyMinimums", "MaxBalanceAge", "MaxPayout"]

_ZERO = Decimal(0)
_MILLISECOND = Decimal("0.001")
_FRESH = passing("max_balance_age")
_SHOWN_DIGITS = 30  # whole digits of an age shown to the millisecond, within MONEY_CONTEXT


@dataclass(frozen=True, slots=True)
class CurrencyMinimums(BoundedRule):
    """Per-currency floors: the smallest payout, and the smallest balance left after it.

    Denies with ``below_minimum_payout`` (not retryable) when ``amount < min_payout[currency]``,
    and with ``min_remaining_balance`` (retryable) when
    ``spendable - (amount + fee) < min_remaining[currency]``. Currencies not listed are not
    limited. ``floor`` is the minimum payout; ``cap`` is 0 when the balance cannot cover even
    that.

    Example: ``CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"})``
    denies a 50.00 ARS payout, and with 1000.00 ARS spendable denies a 600.00 one (cap 500.00).

    Raises:
        ConfigurationError: neither table given, or a bad amount or currency in one.
    """

    min_payout: Mapping[str, Decimal] = field(default_factory=Table)
    min_remaining: Mapping[str, Decimal] = field(default_factory=Table)
    _by_currency: Mapping[str, Bounds] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        min_payout: Mapping[str, AmountLike] | None = None,
        min_remaining: Mapping[str, AmountLike] | None = None,
    ) -> None:
        if not min_payout and not min_remaining:
            raise ConfigurationError("currency_minimums needs min_payout, min_remaining or both")
        object.__setattr__(self, "min_payout", amounts(min_payout, "min_payout"))
        object.__setattr__(self, "min_remaining", amounts(min_remaining, "min_remaining"))
        # Bounds depend only on the currency: worked out once, here.
        by_currency = {
            code: Bounds(floor=self.min_payout.get(code), keep=self.min_remaining.get(code))
            for code in {*self.min_payout, *self.min_remaining}
        }
        object.__setattr__(self, "_by_currency", by_currency)

    type_name: ClassVar[str] = "currency_minimums"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives
    _age_free: ClassVar[bool] = True  # its bounds read neither amount nor age

    class Config(RuleConfig):
        """``{type = "currency_minimums", min_payout = {...}, min_remaining = {...}}``."""

        min_payout: AmountTable | None = None
        min_remaining: AmountTable | None = None

    def describe(self) -> str:
        """Return the floors, in words with their numbers."""
        parts = []
        if self.min_payout:
            parts.append(f"deny payouts below {table_text(self.min_payout)}")
        if self.min_remaining:
            parts.append(f"leave at least {table_text(self.min_remaining)} after each payout")
        return "; ".join(parts)

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys, amounts as strings."""
        return as_data(min_payout=self.min_payout, min_remaining=self.min_remaining)

    @property
    def name(self) -> str:
        """Return ``"currency_minimums"``."""
        return "currency_minimums"

    def _bounds(self, facts: Facts) -> Bounds:
        return self._by_currency.get(facts.currency, NO_BOUNDS)

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        bounds = self._bounds(facts)
        passed, floor, cap = settle(bounds, facts)
        if passed:
            return passing("currency_minimums", cap, floor)
        leaves: list[Verdict] = []
        if floor is not None and facts.amount < floor:
            leaves.append(Verdict(
                rule="currency_minimums",
                passed=False,
                code="below_minimum_payout",
                message=(
                    f"{money(facts.amount, facts.currency)} is below the minimum payout of "
                    f"{money(floor, facts.currency)}"
                ),
                details={"amount": facts.amount, "min_payout": floor},
                floor=floor,
            ))
        keep = bounds.keep
        if keep is not None:
            spendable = facts.spendable
            remaining = MONEY_CONTEXT.subtract(spendable, facts.required)
            if remaining < keep:
                leaves.append(Verdict(
                    rule="currency_minimums",
                    passed=False,
                    code="min_remaining_balance",
                    message=(
                        f"paying {required_text(facts)} would leave "
                        f"{money(remaining, facts.currency)}, below the minimum balance of "
                        f"{money(keep, facts.currency)}"
                    ),
                    retryable=True,
                    details={
                        "spendable": spendable,
                        "required": facts.required,
                        "remaining": remaining,
                        "min_remaining": keep,
                        "shortfall": MONEY_CONTEXT.subtract(keep, remaining),
                    },
                    cap=cap,
                ))
        if len(leaves) == 1:
            only = leaves[0]
            return Verdict(
                rule=only.rule, passed=False, code=only.code, message=only.message,
                retryable=only.retryable, details=only.details, cap=cap, floor=floor,
            )
        return Verdict(
            rule="currency_minimums",
            passed=False,
            code=leaves[0].code,
            message="; ".join(leaf.message for leaf in leaves),
            retryable=all(leaf.retryable for leaf in leaves),
            cap=cap,
            floor=floor,
            children=tuple(leaves),
        )


@dataclass(frozen=True, slots=True)
class MaxPayout(BoundedRule):
    """Deny (``above_maximum_payout``, not retryable) when ``amount > limits[currency]``.

    Currencies not listed are not limited. Example: ``MaxPayout({"BRL": "5000"})`` denies a
    5000.01 BRL payout; ``cap`` is 5000.00.

    Raises:
        ConfigurationError: no limits, or a bad amount or currency in *limits*.
    """

    limits: Mapping[str, Decimal] = field(default_factory=Table)
    _by_currency: Mapping[str, Bounds] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __init__(self, limits: Mapping[str, AmountLike]) -> None:
        if not limits:
            raise ConfigurationError("max_payout needs at least one currency limit", path="limits")
        object.__setattr__(self, "limits", amounts(limits, "limits"))
        # Bounds depend only on the currency: worked out once, here.
        by_currency = {code: Bounds(cap=limit) for code, limit in self.limits.items()}
        object.__setattr__(self, "_by_currency", by_currency)

    type_name: ClassVar[str] = "max_payout"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives
    _age_free: ClassVar[bool] = True  # its bounds read neither amount nor age

    class Config(RuleConfig):
        """``{type = "max_payout", limits = {BRL = "5000.00"}}``."""

        limits: AmountTable

    def describe(self) -> str:
        """Return the limits, in words with their numbers."""
        return f"deny payouts above {table_text(self.limits)}"

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys, amounts as strings."""
        return as_data(limits=self.limits)

    @property
    def name(self) -> str:
        """Return ``"max_payout"``."""
        return "max_payout"

    def _bounds(self, facts: Facts) -> Bounds:
        return self._by_currency.get(facts.currency, NO_BOUNDS)

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        limit = self._bounds(facts).cap
        if limit is None or facts.amount <= limit:
            return passing("max_payout", limit)
        return Verdict(
            rule="max_payout",
            passed=False,
            code="above_maximum_payout",
            message=(
                f"{money(facts.amount, facts.currency)} is above the maximum payout of "
                f"{money(limit, facts.currency)}"
            ),
            details={"amount": facts.amount, "max_payout": limit},
            cap=limit,
        )


def _age(value: float | Decimal) -> Decimal:
    if isinstance(value, Decimal):
        return value
    # repr gives the shortest decimal that reads back as the same float: 0.1, not 0.1000...0555.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


@dataclass(frozen=True, slots=True)
class MaxBalanceAge(BoundedRule):
    """Deny (``stale_balance``, retryable) when the balance is older than *seconds*.

    An age that is not known (NaN) counts as infinitely old. Example: ``MaxBalanceAge(30)``
    denies every payout judged on a balance fetched 30.5 seconds ago; ``cap`` is 0. The guard
    refreshes the balance once before returning such a denial.

    Raises:
        ConfigurationError: *seconds* is negative, a float or not a number.
    """

    seconds: Decimal = Decimal(60)
    # Float ages below this are within the limit, however they are read (see _bounds).
    _surely_fresh: float = field(default=0.0, init=False, repr=False, compare=False)

    def __init__(self, seconds: AmountLike = 60) -> None:
        object.__setattr__(self, "seconds", number(seconds, "seconds", low=_ZERO))
        # Two floats below the largest float <= seconds: a float age under it, even read as
        # its shortest decimal (what _age does), is below seconds.
        below = float(self.seconds)
        while Decimal(below) > self.seconds:
            below = math.nextafter(below, -math.inf)
        object.__setattr__(self, "_surely_fresh", math.nextafter(below, -math.inf))

    type_name: ClassVar[str] = "max_balance_age"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives

    class Config(RuleConfig):
        """``{type = "max_balance_age", seconds = 30}``."""

        seconds: Number | None = None

    def describe(self) -> str:
        """Return the age limit, in words."""
        return f"deny when the balance is more than {self.seconds:f}s old"

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys, seconds as a string."""
        return as_data(seconds=self.seconds)

    @property
    def name(self) -> str:
        """Return ``"max_balance_age"``."""
        return "max_balance_age"

    def _bounds(self, facts: Facts) -> Bounds:
        age = facts.age_seconds
        if type(age) is float and age < self._surely_fresh:
            return NO_BOUNDS  # the common case, without making a Decimal of the age
        return NO_BOUNDS if _age(age) <= self.seconds else BLOCKED

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        if self._bounds(facts) is NO_BOUNDS:
            return _FRESH
        age = _age(facts.age_seconds)
        # Rounded up, so that the shown age never looks equal to the limit it exceeds.
        # (An age of more digits than the money context holds is shown as it is.)
        exact = age.is_finite() and age.adjusted() < _SHOWN_DIGITS
        shown = age.quantize(_MILLISECOND, ROUND_CEILING, MONEY_CONTEXT) if exact else age
        old = f"{shown}s old" if age.is_finite() else "of unknown age"
        return Verdict(
            rule="max_balance_age",
            passed=False,
            code="stale_balance",
            message=(
                f"the {facts.currency} balance from {facts.provider or 'the provider'} is "
                f"{old}, older than the {self.seconds}s allowed"
            ),
            retryable=True,
            details={"age_seconds": shown, "max_age_seconds": self.seconds},
            cap=_ZERO,
        )
