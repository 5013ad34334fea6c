"""Rules in plain words, one line per rule, for people reviewing a configuration."""

from __future__ import annotations

from collections.abc import Collection

from rules._engine import AnyOf, Rule, RuleSet, When
from rules._registry import DataRule, type_name_of

__all__ = ["describe"]

_INDENT = "  "


def _leaf(rule: Rule) -> str:
    """Return what a single rule does, without its name."""
    if type_name_of(rule) is not None and isinstance(rule, DataRule):
        return rule.describe()
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
        rule: Any rule; registered rules describe themselves (``describe()``), others are
            shown by their ``repr``.

    Returns:
        The description, one line per rule, without a trailing newline.
    """
    if isinstance(rule, RuleSet):
        if not rule.rules:
            return "no rules: every payout the guard's own checks allow passes"
        return "\n".join(line for member in rule.rules for line in _lines(member, 0))
    return "\n".join(_lines(rule, 0))

