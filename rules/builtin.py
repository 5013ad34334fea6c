"""The built-in rules. Each docstring says exactly when the rule denies.

All amounts are major units at the currency's ISO 4217 exponent. Every rule reports ``cap``
(the largest amount it allows with these facts), from which the guard derives ``max_payable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict
from rules._money import quantize_down, quantize_up
from rules._params import AmountLike, amounts, number

__all__ = [
    "CurrencyMinimums",
    "FrozenFunds",
    "MaxBalanceAge",
    "MaxPayout",
    "ReserveMargin",
    "SufficientFunds",
]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)


def _money(value: Decimal, currency: str) -> str:
    return f"{value} {currency}"


def _spendable_text(facts: Facts) -> str:
    if facts.reserved:
        return (
            f"{_money(facts.spendable, facts.currency)} spendable "
            f"(available {facts.available} - held {facts.reserved})"
        )
    return f"{_money(facts.spendable, facts.currency)} spendable"


def _required_text(facts: Facts) -> str:
    if facts.fee:
        return f"{_money(facts.required, facts.currency)} (amount {facts.amount} + fee {facts.fee})"
    return _money(facts.required, facts.currency)


@dataclass(frozen=True, slots=True)
class SufficientFunds:
    """Deny (``insufficient_funds``, retryable) when ``amount + fee > available - reserved``.

    The guard always applies this rule. Example: available 1000.00 BRL, held 300.00, payout
    800.00 -> denied, short by 100.00 BRL; ``cap`` is 700.00.
    """

    @property
    def name(self) -> str:
        """Return ``"sufficient_funds"``."""
        return "sufficient_funds"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        spendable = facts.spendable
        cap = quantize_down(spendable - facts.fee, facts.currency)
        required = facts.required
        if required <= spendable:
            return Verdict(rule="sufficient_funds", passed=True, cap=cap)
        shortfall = required - spendable
        return Verdict(
            rule="sufficient_funds",
            passed=False,
            code="insufficient_funds",
            message=(
                f"needs {_required_text(facts)} but only {_spendable_text(facts)}; "
                f"short by {_money(shortfall, facts.currency)}"
            ),
            retryable=True,
            details={
                "available": facts.available,
                "reserved": facts.reserved,
                "spendable": spendable,
                "required": required,
                "shortfall": shortfall,
            },
            cap=cap,
        )


@dataclass(frozen=True, slots=True)
class ReserveMargin:
    """Keep a reserve untouched: deny (``reserve_margin``, retryable) when a payout would eat it.

    The reserve is ``max(percent% of the basis, minimum[currency])``, rounded up to the currency
    unit; the basis is ``available`` (default) or the provider's ``total`` (falling back to
    ``available`` when the provider does not report one). The rule denies when
    ``spendable - (amount + fee) < reserve``.

    Example: ``ReserveMargin(percent="5", minimum={"ARS": "1000.00"})`` with 10000.00 ARS
    available keeps 1000.00 (5% is only 500.00), so a 9500.00 payout is denied and ``cap`` is
    9000.00.

    Raises:
        ConfigurationError: neither *percent* nor *minimum* given, percent outside [0, 100),
            or a bad amount or currency in *minimum*.
    """

    percent: Decimal | None = None
    minimum: Mapping[str, Decimal] = field(default_factory=dict)
    basis: Literal["available", "total"] = "available"

    def __init__(
        self,
        percent: AmountLike | None = None,
        minimum: Mapping[str, AmountLike] | None = None,
        basis: Literal["available", "total"] = "available",
    ) -> None:
        if percent is None and not minimum:
            raise ConfigurationError("ReserveMargin needs percent=..., minimum=... or both")
        if basis not in ("available", "total"):
            raise ConfigurationError(
                f"must be 'available' or 'total', got {basis!r}", path="basis"
            )
        pct = None if percent is None else number(
            percent, "percent", low=_ZERO, high=Decimal("99.99")
        )
        object.__setattr__(self, "percent", pct)
        object.__setattr__(self, "minimum", amounts(minimum, "minimum"))
        object.__setattr__(self, "basis", basis)

    @property
    def name(self) -> str:
        """Return ``"reserve_margin"``."""
        return "reserve_margin"

    def reserve_for(self, facts: Facts) -> Decimal:
        """Return the reserve this rule keeps for *facts*."""
        reserve = self.minimum.get(facts.currency, _ZERO)
        if self.percent is not None:
            base = facts.total if self.basis == "total" and facts.total is not None else (
                facts.available
            )
            reserve = max(reserve, quantize_up(base * self.percent / _HUNDRED, facts.currency))
        return reserve

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        reserve = self.reserve_for(facts)
        spendable = facts.spendable
        cap = quantize_down(spendable - reserve - facts.fee, facts.currency)
        remaining = spendable - facts.required
        if remaining >= reserve:
            return Verdict(rule="reserve_margin", passed=True, cap=cap)
        return Verdict(
            rule="reserve_margin",
            passed=False,
            code="reserve_margin",
            message=(
                f"paying {_required_text(facts)} would leave "
                f"{_money(remaining, facts.currency)} of {_spendable_text(facts)}, "
                f"below the reserve of {_money(reserve, facts.currency)}"
            ),
            retryable=True,
            details={
                "spendable": spendable,
                "required": facts.required,
                "remaining": remaining,
                "reserve": reserve,
                "shortfall": reserve - remaining,
            },
            cap=cap,
        )


@dataclass(frozen=True, slots=True)
class FrozenFunds:
    """Be wary of funds the provider has frozen for pending withdrawals.

    Denies (``frozen_funds``, retryable) when ``frozen / total`` exceeds *max_ratio*: a high
    ratio is a sign of withdrawals stuck at the provider. ``total`` is ``available + frozen``
    when the provider does not send one. When the provider does not report frozen funds at
    all, *when_unknown* decides: ``"allow"`` (default) passes, ``"warn"`` passes with a
    warning, ``"deny"`` denies. Frozen money is never counted as spendable: the guard spends
    ``available``, not ``total``.

    Example: ``FrozenFunds(max_ratio="0.5")`` with 400.00 available and 600.00 frozen (ratio
    0.6) denies every payout; ``cap`` is 0.
    """

    max_ratio: Decimal | None = None
    when_unknown: Literal["allow", "warn", "deny"] = "allow"

    def __init__(
        self,
        max_ratio: AmountLike | None = None,
        when_unknown: Literal["allow", "warn", "deny"] = "allow",
    ) -> None:
        if when_unknown not in ("allow", "warn", "deny"):
            raise ConfigurationError(
                f"must be 'allow', 'warn' or 'deny', got {when_unknown!r}", path="when_unknown"
            )
        ratio = None if max_ratio is None else number(
            max_ratio, "max_ratio", low=_ZERO, high=Decimal(1)
        )
        object.__setattr__(self, "max_ratio", ratio)
        object.__setattr__(self, "when_unknown", when_unknown)

    @property
    def name(self) -> str:
        """Return ``"frozen_funds"``."""
        return "frozen_funds"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        if facts.frozen is None:
            if self.when_unknown == "allow":
                return Verdict(rule="frozen_funds", passed=True)
            return Verdict(
                rule="frozen_funds",
                passed=False,
                code="frozen_funds",
                message=(
                    f"{facts.provider or 'the provider'} does not report frozen funds for "
                    f"{facts.currency}, so stuck withdrawals cannot be ruled out"
                ),
                severity="warn" if self.when_unknown == "warn" else "deny",
                retryable=False,
                cap=None if self.when_unknown == "warn" else _ZERO,
            )
        if self.max_ratio is None:
            return Verdict(rule="frozen_funds", passed=True)
        total = facts.total if facts.total is not None else facts.available + facts.frozen
        ratio = facts.frozen / total if total > 0 else _ZERO
        if ratio <= self.max_ratio:
            return Verdict(rule="frozen_funds", passed=True)
        return Verdict(
            rule="frozen_funds",
            passed=False,
            code="frozen_funds",
            message=(
                f"{_money(facts.frozen, facts.currency)} of {_money(total, facts.currency)} "
                f"is frozen (ratio {ratio:.4f} > {self.max_ratio}); withdrawals may be stuck "
                f"at {facts.provider or 'the provider'}"
            ),
            retryable=True,
            details={
                "frozen": facts.frozen,
                "total": total,
                "ratio": ratio.quantize(Decimal("0.0001")),
                "max_ratio": self.max_ratio,
            },
            cap=_ZERO,
        )


@dataclass(frozen=True, slots=True)
class CurrencyMinimums:
    """Per-currency floors: the smallest payout, and the smallest balance left after it.

    Denies with ``below_minimum_payout`` (not retryable) when ``amount < min_payout[currency]``,
    and with ``min_remaining_balance`` (retryable) when
    ``spendable - (amount + fee) < min_remaining[currency]``. Currencies not listed are not
    limited.

    Example: ``CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"})``
    denies a 50.00 ARS payout, and with 1000.00 ARS spendable denies a 600.00 one (cap 500.00).
    """

    min_payout: Mapping[str, Decimal] = field(default_factory=dict)
    min_remaining: Mapping[str, Decimal] = field(default_factory=dict)

    def __init__(
        self,
        min_payout: Mapping[str, AmountLike] | None = None,
        min_remaining: Mapping[str, AmountLike] | None = None,
    ) -> None:
        if not min_payout and not min_remaining:
            raise ConfigurationError("CurrencyMinimums needs min_payout=..., min_remaining=...")
        object.__setattr__(self, "min_payout", amounts(min_payout, "min_payout"))
        object.__setattr__(self, "min_remaining", amounts(min_remaining, "min_remaining"))

    @property
    def name(self) -> str:
        """Return ``"currency_minimums"``."""
        return "currency_minimums"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        leaves: list[Verdict] = []
        floor = self.min_payout.get(facts.currency)
        if floor is not None and facts.amount < floor:
            leaves.append(Verdict(
                rule="currency_minimums",
                passed=False,
                code="below_minimum_payout",
                message=(
                    f"{_money(facts.amount, facts.currency)} is below the minimum payout of "
                    f"{_money(floor, facts.currency)}"
                ),
                details={"amount": facts.amount, "min_payout": floor},
                floor=floor,
            ))
        keep = self.min_remaining.get(facts.currency)
        cap = None
        if keep is not None:
            cap = quantize_down(facts.spendable - keep - facts.fee, facts.currency)
            remaining = facts.spendable - facts.required
            if remaining < keep:
                leaves.append(Verdict(
                    rule="currency_minimums",
                    passed=False,
                    code="min_remaining_balance",
                    message=(
                        f"paying {_required_text(facts)} would leave "
                        f"{_money(remaining, facts.currency)}, below the minimum balance of "
                        f"{_money(keep, facts.currency)}"
                    ),
                    retryable=True,
                    details={
                        "spendable": facts.spendable,
                        "required": facts.required,
                        "remaining": remaining,
                        "min_remaining": keep,
                        "shortfall": keep - remaining,
                    },
                    cap=cap,
                ))
        if not leaves:
            return Verdict(rule="currency_minimums", passed=True, cap=cap, floor=floor)
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
            cap=cap,
            floor=floor,
            children=tuple(leaves),
        )


@dataclass(frozen=True, slots=True)
class MaxPayout:
    """Deny (``above_maximum_payout``, not retryable) when ``amount > limits[currency]``.

    Currencies not listed are not limited. Example: ``MaxPayout({"BRL": "5000"})`` denies a
    5000.01 BRL payout; ``cap`` is 5000.00.
    """

    limits: Mapping[str, Decimal] = field(default_factory=dict)

    def __init__(self, limits: Mapping[str, AmountLike]) -> None:
        if not limits:
            raise ConfigurationError("MaxPayout needs at least one currency limit", path="limits")
        object.__setattr__(self, "limits", amounts(limits, "limits"))

    @property
    def name(self) -> str:
        """Return ``"max_payout"``."""
        return "max_payout"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        limit = self.limits.get(facts.currency)
        if limit is None or facts.amount <= limit:
            return Verdict(rule="max_payout", passed=True, cap=limit)
        return Verdict(
            rule="max_payout",
            passed=False,
            code="above_maximum_payout",
            message=(
                f"{_money(facts.amount, facts.currency)} is above the maximum payout of "
                f"{_money(limit, facts.currency)}"
            ),
            details={"amount": facts.amount, "max_payout": limit},
            cap=limit,
        )


@dataclass(frozen=True, slots=True)
class MaxBalanceAge:
    """Deny (``stale_balance``, retryable) when the balance is older than *seconds*.

    Example: ``MaxBalanceAge(30)`` denies every payout judged on a balance fetched 31 seconds
    ago; ``cap`` is 0. The guard refreshes the balance once before returning such a denial.
    """

    seconds: Decimal = Decimal(60)

    def __init__(self, seconds: AmountLike = 60) -> None:
        object.__setattr__(self, "seconds", number(seconds, "seconds", low=Decimal(0)))

    @property
    def name(self) -> str:
        """Return ``"max_balance_age"``."""
        return "max_balance_age"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        age = Decimal(repr(facts.age_seconds)).quantize(Decimal("0.001"))
        if age <= self.seconds:
            return Verdict(rule="max_balance_age", passed=True)
        return Verdict(
            rule="max_balance_age",
            passed=False,
            code="stale_balance",
            message=(
                f"the {facts.currency} balance from {facts.provider or 'the provider'} is "
                f"{age}s old, older than the {self.seconds}s allowed"
            ),
            retryable=True,
            details={"age_seconds": age, "max_age_seconds": self.seconds},
            cap=_ZERO,
        )
