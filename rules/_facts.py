"""The two values the rule engine speaks: :class:`Facts` in, :class:`Verdict` out."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

from rules._money import MONEY_CONTEXT, normalize_currency

__all__ = ["Facts", "Severity", "Verdict"]

Severity = Literal["deny", "warn"]

# Shared by every verdict without details; read-only, so no verdict can change another's.
_NO_DETAILS: Mapping[str, Decimal] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Facts:
    """Everything a rule may look at when judging one payout, in major units.

    Attributes:
        amount: The payout amount.
        fee: What the provider charges on top, debited from the same balance.
        currency: ISO 4217 code.
        available: What the provider says can be spent now.
        frozen: Funds held by the provider for pending withdrawals; ``None`` when not reported.
        total: The provider's total balance; ``None`` when not reported.
        reserved: This merchant's own in-flight holds the provider does not show yet.
        age_seconds: How old the balance is.
        provider: Name of the provider the balance came from.
        account: Account or sub-merchant, if the guard was given one.
        own_in_flight: What this merchant's own payouts committed lately (within the guard's
            ``own_payouts_window``) take: the provider may still show them as frozen.

    Raises:
        TypeError: an amount is not a ``Decimal`` (a ``float`` above all), or the age is not
            a number.
        ValueError: an amount is NaN or infinite, or the currency is not an ISO 4217 code.
    """

    amount: Decimal
    currency: str
    available: Decimal
    fee: Decimal = Decimal(0)
    frozen: Decimal | None = None
    total: Decimal | None = None
    reserved: Decimal = Decimal(0)
    age_seconds: float = 0.0
    provider: str = ""
    account: str | None = None
    own_in_flight: Decimal = Decimal(0)
    # available - reserved, worked out once: every rule that keeps part of it reads it.
    _spendable: Decimal = field(default=Decimal(0), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Fail here, naming the field, rather than deep inside a rule comparing str to Decimal.
        object.__setattr__(self, "currency", normalize_currency(self.currency))
        for name in ("amount", "fee", "available", "reserved", "frozen", "total",
                     "own_in_flight"):
            value = getattr(self, name)
            if value is None and name in ("frozen", "total"):
                continue
            if not isinstance(value, Decimal):
                raise TypeError(
                    f"Facts.{name} must be a Decimal, not {type(value).__name__} ({value!r})"
                )
            if not value.is_finite():
                raise ValueError(f"Facts.{name} must be a finite amount, got {value}")
        age = self.age_seconds
        if isinstance(age, bool) or not isinstance(age, int | float | Decimal):
            raise TypeError(
                f"Facts.age_seconds must be a number of seconds, not {type(age).__name__}"
            )
        if (isinstance(age, float) and math.isnan(age)) or (
            isinstance(age, Decimal) and age.is_nan()
        ):
            # An unknown age is judged as infinitely old (MaxBalanceAge denies), never as fresh.
            object.__setattr__(self, "age_seconds", math.inf)
        object.__setattr__(self, "_spendable", _SUBTRACT(self.available, self.reserved))

    @classmethod
    def trusted(  # noqa: PLR0917 - positional on purpose: the hot path of every check
        cls,
        amount: Decimal,
        currency: str,
        available: Decimal,
        fee: Decimal,
        frozen: Decimal | None,
        total: Decimal | None,
        reserved: Decimal,
        age_seconds: float,
        provider: str,
        account: str | None,
        own_in_flight: Decimal = Decimal(0),
    ) -> Facts:
        """Return facts built from values already validated (the guard's hot path).

        Skips the checks of ``__post_init__``; every argument must already be what those
        checks would accept (Decimals, a normalized currency code, a number of seconds).
        A subclass of ``Facts`` is built by its own constructor, checks included.
        """
        if cls is not Facts:
            return cls(amount, currency, available, fee, frozen, total, reserved, age_seconds,
                       provider, account, own_in_flight)
        # Built as its writable twin, then made a Facts: plain attribute stores instead of a
        # slot descriptor called per field (the class switch is checked by CPython: the
        # layouts are the same). A twelfth of an allowed check, measured.
        # Any: mypy would hold the twin to the frozen fields it inherits.
        facts: Any = object.__new__(_Unsealed)
        facts.amount = amount
        facts.currency = currency
        facts.available = available
        facts.fee = fee
        facts.frozen = frozen
        facts.total = total
        facts.reserved = reserved
        facts.age_seconds = age_seconds
        facts.provider = provider
        facts.account = account
        facts.own_in_flight = own_in_flight
        facts._spendable = _SUBTRACT(available, reserved)
        facts.__class__ = Facts
        made: Facts = facts
        return made

    @property
    def required(self) -> Decimal:
        """Return what the payout debits: ``amount + fee``."""
        return MONEY_CONTEXT.add(self.amount, self.fee)

    @property
    def spendable(self) -> Decimal:
        """Return what is left to spend: ``available - reserved`` (worked out once)."""
        return self._spendable


_SUBTRACT = MONEY_CONTEXT.subtract


class _Unsealed(Facts):
    """Facts while ``Facts.trusted`` fills them in: the same layout, without the frozen guard.

    Both ``__setattr__`` and ``__delattr__`` are object's own, so CPython stores straight
    into the slots.
    """

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


class Verdict(NamedTuple):
    """One rule's judgement of one set of facts: an immutable value.

    A ``NamedTuple`` rather than a frozen dataclass because every check builds several and a
    tuple is built in under half the time.

    Attributes:
        rule: Name of the rule that judged, e.g. ``"reserve_margin"``.
        passed: Whether the rule is satisfied.
        code: Stable reason code used when the rule is not satisfied.
        message: What a person should read, with the numbers; empty when passed.
        severity: ``"deny"`` blocks the payout; ``"warn"`` only reports.
        retryable: Whether the same payout may succeed later without changing it.
        details: Observed and required amounts (``available``, ``required``, ``shortfall``...).
        cap: Largest amount this rule allows with these facts; ``None`` for no upper bound.
        floor: Smallest amount this rule allows; ``None`` for no lower bound.
        children: Verdicts of the rules a combinator judged with.
    """

    rule: str
    passed: bool
    code: str = ""
    message: str = ""
    severity: Severity = "deny"
    retryable: bool = False
    details: Mapping[str, Decimal] = _NO_DETAILS
    cap: Decimal | None = None
    floor: Decimal | None = None
    children: tuple[Verdict, ...] = ()

    @property
    def denies(self) -> bool:
        """Return whether this verdict blocks the payout."""
        return not self.passed and self.severity == "deny"

    def denials(self) -> Iterator[Verdict]:
        """Yield the leaf verdicts that block the payout, in order."""
        found: list[Verdict] = []
        pending = [self]
        while pending:
            verdict = pending.pop()
            if not (not verdict.passed and verdict.severity == "deny"):
                continue
            if verdict.children:
                pending.extend(reversed(verdict.children))
            else:
                found.append(verdict)
        return iter(found)

    def warnings(self) -> Iterator[Verdict]:
        """Yield the leaf verdicts that only warn, in order."""
        found: list[Verdict] = []
        pending = [self]
        while pending:
            verdict = pending.pop()
            if verdict.children:
                pending.extend(reversed(verdict.children))
            elif not verdict.passed and verdict.severity == "warn":
                found.append(verdict)
        return iter(found)


_new_tuple = tuple.__new__


def passing(
    rule: str,
    cap: Decimal | None = None,
    floor: Decimal | None = None,
    details: Mapping[str, Decimal] = _NO_DETAILS,
) -> Verdict:
    """Return the verdict of *rule* passing: ``Verdict(rule=rule, passed=True, ...)``, faster.

    Every rule passes far more often than it denies, and the keyword form of a ``NamedTuple``
    costs twice as much.
    """
    return _new_tuple(Verdict, (rule, True, "", "", "deny", False, details, cap, floor, ()))
