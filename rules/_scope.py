"""Scoping a rule to some currencies and/or providers: :class:`When` and ``when()``."""

from __future__ import annotations

from collections.abc import Collection

from rules._bounds import NO_BOUNDS, Bounds, BoundsOf, bounds_method
from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict
from rules._money import normalize_currency
from rules._protocol import Rule
from rules._text import quoted

__all__ = ["When", "when"]


class When:
    """A rule applied only to some currencies and/or providers; ``when(...)`` builds one.

    Outside its scope the rule passes without a bound. Nested scopes merge:
    ``when(when(r, currency="ARS"), provider="luxtak")`` is ``when(r, currency="ARS",
    provider="luxtak")``. Provider names compare case-insensitively.

    Raises:
        ConfigurationError: no scope, an empty scope, an unknown currency, or nested scopes
            that do not overlap (the rule would never apply).
    """

    __slots__ = ("_inner", "currencies", "providers", "rule")

    def __init__(
        self,
        rule: Rule,
        *,
        currency: str | Collection[str] | None = None,
        provider: str | Collection[str] | None = None,
    ) -> None:
        if currency is None and provider is None:
            raise ConfigurationError("when() needs currency=..., provider=... or both")
        if not isinstance(rule, Rule):
            raise ConfigurationError(
                f"when() scopes a rule with .name and .evaluate(facts); "
                f"got {type(rule).__name__}"
            )
        currencies = _codes(currency, "currency")
        providers = _codes(provider, "provider")
        if isinstance(rule, When):
            currencies = _overlap(rule.currencies, currencies, "currency")
            providers = _overlap(rule.providers, providers, "provider")
            rule = rule.rule
        self.rule: Rule = rule
        self.currencies: frozenset[str] | None = currencies
        self.providers: frozenset[str] | None = providers
        self._inner: BoundsOf = bounds_method(rule)

    @property
    def name(self) -> str:
        """Return the wrapped rule's name: a scoped rule reports as itself."""
        return self.rule.name

    def applies(self, facts: Facts) -> bool:
        """Return whether *facts* fall within this scope."""
        return (self.currencies is None or facts.currency in self.currencies) and (
            self.providers is None or facts.provider.lower() in self.providers
        )

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with the wrapped rule when in scope; pass otherwise."""
        if self.applies(facts):
            return self.rule.evaluate(facts)
        return Verdict(rule=self.rule.name, passed=True)

    def _bounds(self, facts: Facts) -> Bounds:
        return self._inner(facts) if self.applies(facts) else NO_BOUNDS

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


def _codes(value: str | Collection[str] | None, key: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items:
        raise ConfigurationError(f"must name at least one {key}", path=key)
    codes: set[str] = set()
    for index, item in enumerate(items):
        where = key if isinstance(value, str) else f"{key}[{index}]"
        if key == "currency":
            try:
                codes.add(normalize_currency(item))
            except ValueError as exc:
                raise ConfigurationError(str(exc), path=where) from exc
        elif isinstance(item, str) and item.strip():
            codes.add(item.strip().lower())
        else:
            raise ConfigurationError(
                f"expected a provider name such as 'luxtak', got {quoted(item)}", path=where
            )
    return frozenset(codes)


def _overlap(
    inner: frozenset[str] | None, outer: frozenset[str] | None, key: str
) -> frozenset[str] | None:
    if inner is None or outer is None:
        return outer if inner is None else inner
    both = inner & outer
    if not both:
        raise ConfigurationError(
            f"nested when() scopes {sorted(inner)} and {sorted(outer)} share no {key}, "
            f"so the rule would never apply",
            path=key,
        )
    return frozenset(both)


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

    Raises:
        ConfigurationError: see :class:`When`.
    """
    return When(rule, currency=currency, provider=provider)
