"""The :class:`Rule` protocol and the combinators that compose rules.

A rule is anything with a ``name`` and an ``evaluate(facts) -> Verdict`` method. The contract
that makes ``max_payable`` exact: for a given set of facts, a rule whose answer depends on the
amount passes exactly the amounts in ``[verdict.floor, verdict.cap]`` (a missing bound is
open), and a rule that denies whatever the amount reports ``cap=Decimal(0)``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from decimal import Decimal
from typing import Protocol, runtime_checkable

from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict
from rules._money import normalize_currency

__all__ = ["AnyOf", "Rule", "RuleSet", "When", "all_of", "any_of", "when"]


@runtime_checkable
class Rule(Protocol):
    """What every rule provides: a stable name and a pure ``evaluate``."""

    @property
    def name(self) -> str:
        """Return the rule's name as it appears in verdicts (``"reserve_margin"``)."""
        ...

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*; never raise for a denial, never do I/O."""
        ...


def _min_cap(verdicts: tuple[Verdict, ...]) -> Decimal | None:
    caps = [v.cap for v in verdicts if v.cap is not None]
    return min(caps) if caps else None


def _max_floor(verdicts: tuple[Verdict, ...]) -> Decimal | None:
    floors = [v.floor for v in verdicts if v.floor is not None]
    return max(floors) if floors else None


def _joined(verdicts: Iterator[Verdict]) -> tuple[str, str, bool]:
    leaves = list(verdicts)
    if not leaves:
        return "", "", False
    return (
        leaves[0].code,
        "; ".join(v.message for v in leaves),
        all(v.retryable for v in leaves),
    )


class RuleSet:
    """Rules that must all pass; ``all_of(...)`` builds one and nested sets flatten.

    A ``RuleSet`` is itself a :class:`Rule`, so sets nest inside ``any_of`` and ``when``.

    Example:
        >>> from rules import RuleSet, SufficientFunds, MaxPayout
        >>> RuleSet([SufficientFunds(), MaxPayout({"BRL": "5000"})]).names
        ('sufficient_funds', 'max_payout')
    """

    __slots__ = ("rules",)

    def __init__(self, rules: Collection[Rule] = ()) -> None:
        flat: list[Rule] = []
        for rule in rules:
            if isinstance(rule, RuleSet):
                flat.extend(rule.rules)
            elif isinstance(rule, Rule):
                flat.append(rule)
            else:
                raise ConfigurationError(
                    f"rules must provide .name and .evaluate(facts); got {type(rule).__name__}"
                )
        self.rules: tuple[Rule, ...] = tuple(flat)

    @property
    def name(self) -> str:
        """Return ``all_of(<names>)``."""
        return f"all_of({', '.join(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        """Return the names of the member rules, in order."""
        return tuple(rule.name for rule in self.rules)

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with every member; passes when no member denies."""
        children = tuple(rule.evaluate(facts) for rule in self.rules)
        passed = not any(child.denies for child in children)
        code, message, retryable = ("", "", False) if passed else _joined(
            d for child in children for d in child.denials()
        )
        return Verdict(
            rule=self.name,
            passed=passed,
            code=code,
            message=message,
            retryable=retryable,
            cap=_min_cap(children),
            floor=_max_floor(children),
            children=children,
        )

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        return f"all_of({', '.join(map(repr, self.rules))})"


class AnyOf:
    """Rules of which at least one must pass; ``any_of(...)`` builds one."""

    __slots__ = ("rules",)

    def __init__(self, rules: Collection[Rule]) -> None:
        flat: list[Rule] = []
        for rule in rules:
            flat.extend(rule.rules if isinstance(rule, AnyOf) else (rule,))
        if not flat:
            raise ConfigurationError("any_of needs at least one rule (any of nothing denies all)")
        self.rules: tuple[Rule, ...] = tuple(flat)

    @property
    def name(self) -> str:
        """Return ``any_of(<names>)``."""
        return f"any_of({', '.join(rule.name for rule in self.rules)})"

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with every member; passes when at least one member does not deny."""
        children = tuple(rule.evaluate(facts) for rule in self.rules)
        passed = any(not child.denies for child in children)
        # The alternatives allow the union of their ranges; report its outer bounds, taken
        # over the alternatives whose own range is not empty.
        open_ = [c for c in children if c.cap is None or c.floor is None or c.floor <= c.cap]
        caps = [c.cap for c in open_]
        floors = [c.floor for c in open_]
        cap = None if not caps or None in caps else max(c for c in caps if c is not None)
        floor = None if not floors or None in floors else min(f for f in floors if f is not None)
        if not open_:
            cap = Decimal(0)
        code, message, retryable = ("", "", False) if passed else _joined(
            d for child in children for d in child.denials()
        )
        return Verdict(
            rule=self.name,
            passed=passed,
            code=code,
            message=message,
            retryable=retryable,
            cap=cap,
            floor=floor,
            children=children,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyOf) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(("any_of", self.rules))

    def __repr__(self) -> str:
        return f"any_of({', '.join(map(repr, self.rules))})"


class When:
    """A rule applied only to some currencies and/or providers; ``when(...)`` builds one."""

    __slots__ = ("currencies", "providers", "rule")

    def __init__(
        self,
        rule: Rule,
        *,
        currency: str | Collection[str] | None = None,
        provider: str | Collection[str] | None = None,
    ) -> None:
        if currency is None and provider is None:
            raise ConfigurationError("when() needs currency=..., provider=... or both")
        self.rule = rule
        self.currencies = _codes(currency, normalize=True)
        self.providers = _codes(provider, normalize=False)

    @property
    def name(self) -> str:
        """Return the wrapped rule's name: a scoped rule reports as itself."""
        return self.rule.name

    def applies(self, facts: Facts) -> bool:
        """Return whether *facts* fall within this scope."""
        return (self.currencies is None or facts.currency in self.currencies) and (
            self.providers is None or facts.provider in self.providers
        )

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with the wrapped rule when in scope; pass otherwise."""
        if self.applies(facts):
            return self.rule.evaluate(facts)
        return Verdict(rule=self.rule.name, passed=True)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, When)
            and (self.rule, self.currencies, self.providers)
            == (other.rule, other.currencies, other.providers)
        )

    def __hash__(self) -> int:
        return hash(("when", self.rule, self.currencies, self.providers))

    def __repr__(self) -> str:
        scope = []
        if self.currencies is not None:
            scope.append(f"currency={sorted(self.currencies)!r}")
        if self.providers is not None:
            scope.append(f"provider={sorted(self.providers)!r}")
        return f"when({self.rule!r}, {', '.join(scope)})"


def _codes(value: str | Collection[str] | None, *, normalize: bool) -> frozenset[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ConfigurationError("when() scope must name at least one currency or provider")
    try:
        return frozenset(normalize_currency(v) if normalize else str(v) for v in items)
    except ValueError as exc:
        raise ConfigurationError(str(exc), path="currency") from exc


def all_of(*rules: Rule) -> RuleSet:
    """Return a rule that passes when every one of *rules* passes (nested sets flatten)."""
    return RuleSet(rules)


def any_of(*rules: Rule) -> AnyOf:
    """Return a rule that passes when at least one of *rules* passes (nested ones flatten)."""
    return AnyOf(rules)


def when(
    rule: Rule,
    *,
    currency: str | Collection[str] | None = None,
    provider: str | Collection[str] | None = None,
) -> When:
    """Return *rule* restricted to the given currencies and/or providers.

    Example:
        >>> from rules import MaxPayout, when
        >>> when(MaxPayout({"BRL": "5000"}), provider="luxtak").name
        'max_payout'
    """
    return When(rule, currency=currency, provider=provider)
