"""Rules about the money itself: enough of it, a reserve kept, and frozen funds.

All amounts are major units at the currency's ISO 4217 exponent. Every rule reports ``cap``
(the largest amount it allows with these facts, never below 0), from which the guard derives
``max_payable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Context, Decimal, DivisionByZero, InvalidOperation, Overflow
from typing import Any, ClassVar, Literal

from rules._bounds import (
    BLOCKED,
    EXPLAIN,
    NO_BOUNDS,
    SPENDABLE,
    BoundedRule,
    Bounds,
    keeping,
    settle,
)
from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict, passing
from rules._money import (
    ADD,
    EXACT_MULTIPLY,
    MONEY_CONTEXT,
    SUBTRACT,
    money_context,
    quantize_up,
)
from rules._params import (
    AmountLike,
    Table,
    amounts,
    as_data,
    money,
    number,
    percent_text,
    required_text,
    spendable_text,
    table_text,
)
from rules._schema import AmountTable, Number, RuleConfig
from rules._text import quoted

__all__ = ["FrozenFunds", "ReserveMargin", "SufficientFunds"]

_ZERO = Decimal(0)
_HUNDRED = Decimal(100)
_RATIO_UNIT = Decimal("0.0001")
_FROZEN_PASSES = passing("frozen_funds")
_DIVIDE_UP = Context(
    prec=MONEY_CONTEXT.prec, rounding=ROUND_CEILING, Emin=MONEY_CONTEXT.Emin,
    Emax=MONEY_CONTEXT.Emax, traps=[InvalidOperation, DivisionByZero, Overflow],
).divide


@dataclass(frozen=True, slots=True)
class SufficientFunds(BoundedRule):
    """Deny (``insufficient_funds``, retryable) when ``amount + fee > available - reserved``.

    The guard always applies this rule. Example: available 1000.00 BRL, held 300.00, payout
    800.00 -> denied, short by 100.00 BRL; ``cap`` is 700.00.
    """

    type_name: ClassVar[str] = "sufficient_funds"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives
    _age_free: ClassVar[bool] = True  # its bounds read neither amount nor age

    class Config(RuleConfig):
        """``{type = "sufficient_funds"}``: no keys of its own."""

    def describe(self) -> str:
        """Return what the rule does, in words."""
        return "deny when amount + fee is more than available - held"

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys (none)."""
        return {}

    @property
    def name(self) -> str:
        """Return ``"sufficient_funds"``."""
        return "sufficient_funds"

    def _bounds(self, facts: Facts) -> Bounds:  # noqa: ARG002 - the same whatever the facts
        return SPENDABLE

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        passed, _, cap = settle(self._bounds(facts), facts)
        if passed:
            return passing("sufficient_funds", cap)
        spendable, required = facts.spendable, facts.required
        shortfall = SUBTRACT(required, spendable)
        return Verdict(
            rule="sufficient_funds",
            passed=False,
            code="insufficient_funds",
            message=(
                f"needs {required_text(facts)} but only {spendable_text(facts)}; "
                f"short by {money(shortfall, facts.currency)}"
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
class ReserveMargin(BoundedRule):
    """Keep a reserve untouched: deny (``reserve_margin``, retryable) when a payout would eat it.

    The reserve is ``max(percent% of the basis, minimum[currency])``, rounded up to the currency
    unit; the basis is ``available`` (default) or the provider's ``total`` (falling back to
    ``available`` when the provider does not report one). The rule denies when
    ``spendable - (amount + fee) < reserve``. Its verdict's ``details`` carry the ``reserve``
    kept, whether it passes or not.

    Example: ``ReserveMargin(percent="5", minimum={"ARS": "1000.00"})`` with 10000.00 ARS
    available keeps 1000.00 (5% is only 500.00), so a 9500.00 payout is denied and ``cap`` is
    9000.00.

    Raises:
        ConfigurationError: neither *percent* nor *minimum* given, percent outside [0, 100),
            a bad *basis*, or a bad amount or currency in *minimum*.
    """

    percent: Decimal | None = None
    minimum: Mapping[str, Decimal] = field(default_factory=Table)
    basis: Literal["available", "total"] = "available"
    # percent / 100 and the minimums as a plain dict: worked out once, for the hot path.
    _share: Decimal | None = field(default=None, init=False, repr=False, compare=False)
    _floors: Mapping[str, Decimal] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __init__(
        self,
        percent: AmountLike | None = None,
        minimum: Mapping[str, AmountLike] | None = None,
        basis: Literal["available", "total"] = "available",
    ) -> None:
        if percent is None and not minimum:
            raise ConfigurationError("reserve_margin needs percent, minimum or both")
        if basis not in ("available", "total"):
            raise ConfigurationError(
                f"must be 'available' or 'total', got {quoted(basis)}", path="basis"
            )
        pct = None if percent is None else number(percent, "percent", low=_ZERO, below=_HUNDRED)
        object.__setattr__(self, "percent", pct)
        object.__setattr__(self, "minimum", amounts(minimum, "minimum"))
        object.__setattr__(self, "basis", basis)
        # Dividing by 100 only moves the exponent: base * (percent / 100) is the same number.
        share = None if pct is None else pct.scaleb(-2, MONEY_CONTEXT)
        object.__setattr__(self, "_share", share)
        object.__setattr__(self, "_floors", dict(self.minimum))

    type_name: ClassVar[str] = "reserve_margin"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives
    _age_free: ClassVar[bool] = True  # its bounds read neither amount nor age

    class Config(RuleConfig):
        """``{type = "reserve_margin", percent = "5", minimum = {ARS = "1000.00"}}``."""

        percent: Number | None = None
        minimum: AmountTable | None = None
        basis: Literal["available", "total"] = "available"

    def describe(self) -> str:
        """Return what the rule keeps, in words with its numbers."""
        basis = "available" if self.basis == "available" else "total (available if not reported)"
        share = None if self.percent is None else f"{percent_text(self.percent)} of {basis}"
        if not self.minimum:
            return f"keep {share} untouched"
        floor = table_text(self.minimum)
        if len(self.minimum) > 1:
            floor = f"by currency {floor}"
        if share is None:
            return f"keep {floor} untouched"
        return f"keep max({share}, {floor}) untouched"

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys, amounts as strings."""
        return as_data(percent=self.percent, minimum=self.minimum, basis=self.basis)

    @property
    def name(self) -> str:
        """Return ``"reserve_margin"``."""
        return "reserve_margin"

    def reserve_for(self, facts: Facts) -> Decimal:
        """Return the reserve this rule keeps for *facts* (never negative)."""
        reserve = self._floors.get(facts.currency, _ZERO)
        if self._share is not None:
            base = facts.total if self.basis == "total" and facts.total is not None else (
                facts.available
            )
            # Exactly, then rounded up once: a product rounded to 34 digits first could lose
            # the part that makes the reserve one unit more.
            share = quantize_up(EXACT_MULTIPLY(base, self._share), facts.currency)
            if share > reserve:  # noqa: PLR1730 - max() costs a call on the hot path
                reserve = share
        return reserve

    def _bounds(self, facts: Facts) -> Bounds:
        reserve = self.reserve_for(facts)
        if not reserve:
            # Nothing to keep for this currency: whether the funds suffice is SufficientFunds'
            # question, and a second reason saying the same thing would only confuse.
            return NO_BOUNDS
        return keeping(reserve)

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        bounds = self._bounds(facts)
        reserve = bounds.reserve
        if bounds.keep is None:
            return passing("reserve_margin", details={"reserve": reserve})
        passed, _, cap = settle(bounds, facts)
        spendable, required = facts.spendable, facts.required
        remaining = SUBTRACT(spendable, required)
        details = {
            "spendable": spendable,
            "required": required,
            "remaining": remaining,
            "reserve": reserve,
        }
        if passed:
            # The details say what was kept even when nothing was eaten into.
            return passing("reserve_margin", cap, details=details)
        shortfall = SUBTRACT(reserve, remaining)
        return Verdict(
            rule="reserve_margin",
            passed=False,
            code="reserve_margin",
            message=(
                f"paying {required_text(facts)} would leave "
                f"{money(remaining, facts.currency)} of {spendable_text(facts)}, "
                f"below the reserve of {money(reserve, facts.currency)}"
            ),
            retryable=True,
            details={**details, "shortfall": shortfall},
            cap=cap,
        )


@dataclass(frozen=True, slots=True)
class FrozenFunds(BoundedRule):
    """Be wary of funds the provider has frozen for pending withdrawals.

    Denies (``frozen_funds``, retryable) when ``frozen / total`` exceeds *max_ratio*: a high
    ratio is a sign of withdrawals stuck at the provider. ``total`` is ``available + frozen``
    when the provider does not send one. When the provider does not report frozen funds at
    all, *when_unknown* decides: ``"allow"`` (default) passes, ``"warn"`` passes with a
    warning, ``"deny"`` denies (not retryable). Frozen money is never counted as spendable: the
    guard spends ``available``, not ``total``. Without *max_ratio* only *when_unknown* acts.

    Frozen money this merchant's own payouts explain is not a sign of anything: LuxCore, for
    one, freezes a withdrawal from its creation until it completes. So the ratio is of the
    frozen funds *not* explained by ``facts.own_in_flight`` (what this merchant's payouts
    committed within the guard's ``own_payouts_window``, default one hour, take).

    Example: ``FrozenFunds(max_ratio="0.5")`` with 400.00 available and 600.00 frozen (ratio
    0.6) denies every payout; ``cap`` is 0. The same balance while our own payouts of the last
    hour sum 500.00 has 100.00 unexplained (ratio 0.1) and passes; frozen funds nobody here
    sent still deny.

    Raises:
        ConfigurationError: *max_ratio* outside [0, 1], or a bad *when_unknown*.
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
                f"must be 'allow', 'warn' or 'deny', got {quoted(when_unknown)}",
                path="when_unknown",
            )
        ratio = None if max_ratio is None else number(
            max_ratio, "max_ratio", low=_ZERO, high=Decimal(1)
        )
        object.__setattr__(self, "max_ratio", ratio)
        object.__setattr__(self, "when_unknown", when_unknown)

    type_name: ClassVar[str] = "frozen_funds"
    _exact: ClassVar[bool] = True  # its verdicts report the bounds _bounds gives
    _age_free: ClassVar[bool] = True  # its bounds read neither amount nor age

    class Config(RuleConfig):
        """``{type = "frozen_funds", max_ratio = "0.5", when_unknown = "warn"}``."""

        max_ratio: Number | None = None
        when_unknown: Literal["allow", "warn", "deny"] = "allow"

    def describe(self) -> str:
        """Return when the rule denies or warns, in words with its numbers."""
        unknown = {
            "allow": "allow",
            "warn": "allow with a warning",
            "deny": "deny every payout",
        }[self.when_unknown]
        if self.max_ratio is None:
            return f"when the provider does not report frozen funds: {unknown}"
        return (
            f"deny every payout while frozen / total is above {self.max_ratio:f} "
            f"({percent_text(self.max_ratio.scaleb(2, MONEY_CONTEXT))}); when frozen funds are "
            f"not reported: "
            f"{unknown}"
        )

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys, numbers as strings."""
        return as_data(max_ratio=self.max_ratio, when_unknown=self.when_unknown)

    @property
    def name(self) -> str:
        """Return ``"frozen_funds"``."""
        return "frozen_funds"

    def _bounds(self, facts: Facts) -> Bounds:
        frozen = facts.frozen
        if frozen is None:
            return _UNKNOWN[self.when_unknown]
        limit = self.max_ratio
        if limit is None or not _above(facts, frozen, limit):
            return NO_BOUNDS
        return BLOCKED

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*."""
        if self._bounds(facts) is NO_BOUNDS:
            return _FROZEN_PASSES
        where = facts.provider or "the provider"
        if facts.frozen is None:
            return Verdict(
                rule="frozen_funds",
                passed=False,
                code="frozen_funds",
                message=(
                    f"{where} does not report frozen funds for {facts.currency}, "
                    f"so stuck withdrawals cannot be ruled out"
                ),
                severity="warn" if self.when_unknown == "warn" else "deny",
                retryable=False,
                cap=None if self.when_unknown == "warn" else _ZERO,
            )
        limit = self.max_ratio
        if limit is None:  # pragma: no cover - _bounds passes every payout then
            return _FROZEN_PASSES
        with money_context():
            ratio, total = _frozen_ratio(facts, facts.frozen)
            # Rounded up, so that the shown ratio never looks equal to the limit it exceeds.
            shown = ratio.quantize(_RATIO_UNIT, rounding=ROUND_CEILING)
        return Verdict(
            rule="frozen_funds",
            passed=False,
            code="frozen_funds",
            message=(
                f"{money(facts.frozen, facts.currency)} of {money(total, facts.currency)} "
                f"is frozen{_own_part(facts)} (ratio {shown} > {limit}); withdrawals may be "
                f"stuck at {where}"
            ),
            retryable=True,
            details={
                "frozen": facts.frozen,
                "total": total,
                "ratio": shown,
                "max_ratio": limit,
                "own_in_flight": facts.own_in_flight,
            },
            cap=_ZERO,
        )


# What FrozenFunds does when the provider does not report frozen funds.
_UNKNOWN = {"allow": NO_BOUNDS, "warn": EXPLAIN, "deny": BLOCKED}


def _own_part(facts: Facts) -> str:
    """Return how much of the frozen funds our own payouts explain, in words (or nothing)."""
    if not facts.own_in_flight:
        return ""
    return f", {money(facts.own_in_flight, facts.currency)} of it our own recent payouts"


def _above(facts: Facts, frozen: Decimal, limit: Decimal) -> bool:
    """Return whether unexplained frozen / total is above *limit*, compared exactly.

    ``unexplained > limit * total``, not a quotient rounded to 34 digits, which can round
    down onto the limit it exceeds.
    """
    total = facts.total if facts.total is not None else ADD(facts.available, frozen)
    unexplained = SUBTRACT(frozen, facts.own_in_flight) if facts.own_in_flight else frozen
    if unexplained <= 0:
        return False  # ratio 0: never above a limit, which is at least 0
    if total <= 0:
        return limit < 1  # frozen money in a balance that totals nothing: ratio 1
    return unexplained > EXACT_MULTIPLY(limit, total)


def _frozen_ratio(facts: Facts, frozen: Decimal) -> tuple[Decimal, Decimal]:
    """Return ``(unexplained frozen / total, total)``: frozen beyond our own payouts.

    The ratio is rounded up (to 34 digits), as it is shown: never down onto a limit it
    exceeds. Whether it exceeds one is :func:`_above`'s exact question.
    """
    total = facts.total if facts.total is not None else ADD(facts.available, frozen)
    unexplained = SUBTRACT(frozen, facts.own_in_flight) if facts.own_in_flight else frozen
    if unexplained <= 0:
        return _ZERO, total
    # Frozen money in a balance that totals nothing counts as all frozen (ratio 1).
    return (_DIVIDE_UP(unexplained, total) if total > 0 else Decimal(1)), total
