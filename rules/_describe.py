"""Rules in plain words, one line per rule, for people reviewing a configuration."""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal

from rules._engine import AnyOf, Rule, RuleSet, When
from rules._funds import FrozenFunds, ReserveMargin, SufficientFunds
from rules._limits import CurrencyMinimums, MaxBalanceAge, MaxPayout
from rules._params import table_text

__all__ = ["describe"]

_INDENT = "  "


def _percent(value: Decimal) -> str:
    return f"{value.normalize():f}%"


def _reserve(rule: ReserveMargin) -> str:
    basis = "available" if rule.basis == "available" else "total (available if not reported)"
    share = None if rule.percent is None else f"{_percent(rule.percent)} of {basis}"
    if not rule.minimum:
        return f"keep {share} untouched"
    floor = table_text(rule.minimum)
    if len(rule.minimum) > 1:
        floor = f"by currency {floor}"
    if share is None:
        return f"keep {floor} untouched"
    return f"keep max({share}, {floor}) untouched"


def _frozen(rule: FrozenFunds) -> str:
    unknown = {
        "allow": "allow",
        "warn": "allow with a warning",
        "deny": "deny every payout",
    }[rule.when_unknown]
    if rule.max_ratio is None:
        return f"when the provider does not report frozen funds: {unknown}"
    return (
        f"deny every payout while frozen / total is above {rule.max_ratio:f} "
        f"({_percent(rule.max_ratio * 100)}); when frozen funds are not reported: {unknown}"
    )


def _minimums(rule: CurrencyMinimums) -> str:
    parts = []
    if rule.min_payout:
        parts.append(f"deny payouts below {table_text(rule.min_payout)}")
    if rule.min_remaining:
        parts.append(f"leave at least {table_text(rule.min_remaining)} after each payout")
    return "; ".join(parts)


def _leaf(rule: Rule) -> str:
    """Return what a single rule does, without its name."""
    if isinstance(rule, SufficientFunds):
        return "deny when amount + fee is more than available - held"
    if isinstance(rule, ReserveMargin):
        return _reserve(rule)
    if isinstance(rule, FrozenFunds):
        return _frozen(rule)
    if isinstance(rule, CurrencyMinimums):
        return _minimums(rule)
    if isinstance(rule, MaxPayout):
        return f"deny payouts above {table_text(rule.limits)}"
    if isinstance(rule, MaxBalanceAge):
        return f"deny when the balance is more than {rule.seconds:f}s old"
    return f"custom rule {rule!r}"


def _scope(rule: When) -> str:
    parts = []
    for label, values in (("currency", rule.currencies), ("provider", rule.providers)):
        if values is not None:
            parts.append(f"{label} is {_either(sorted(values))}")
    return "when " + " and ".join(parts)


def _either(values: Collection[str]) -> str:
    items = list(values)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" or {items[-1]}"


def _lines(rule: Rule, depth: int, prefix: str = "") -> list[str]:
    pad = _INDENT * depth
    if isinstance(rule, When):
        return _lines(rule.rule, depth, f"{prefix}{_scope(rule)}: ")
    if isinstance(rule, RuleSet | AnyOf):
        head = (
            f"all_of, every one must pass ({len(rule.rules)} rules)"
            if isinstance(rule, RuleSet)
            else f"any_of, at least one must pass ({len(rule.rules)} rules)"
        )
        lines = [f"{pad}{prefix}{head}"]
        for member in rule.rules:
            lines.extend(_lines(member, depth + 1))
        return lines
    return [f"{pad}{prefix}{rule.name}: {_leaf(rule)}"]


def describe(rule: Rule | RuleSet) -> str:
    """Return *rule* in plain words, one line per rule, numbers included.

    A top-level ``RuleSet`` lists its members one per line; combinators nested inside show
    their members indented below them, and ``when`` scopes lead their rule's line::

        reserve_margin: keep max(5% of available, 1000.00 ARS) untouched
        when provider is luxtak: max_payout: deny payouts above 5000.00 BRL

    Args:
        rule: Any rule; rules that are not built-in are shown by their ``repr``.

    Returns:
        The description, one line per rule, without a trailing newline.
    """
    if isinstance(rule, RuleSet):
        if not rule.rules:
            return "no rules: every payout the guard's own checks allow passes"
        return "\n".join(line for member in rule.rules for line in _lines(member, 0))
    return "\n".join(_lines(rule, 0))

