"""The rule engine's [floor, cap] contract, as an assertion the rule tests share."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from rules import Facts, Rule, Verdict
from rules.money import smallest_unit


def bounds_in(verdict: Verdict) -> set[Decimal]:
    """Return every floor and cap reported anywhere in *verdict*'s tree."""
    found = {b for b in (verdict.floor, verdict.cap) if b is not None}
    for child in verdict.children:
        found |= bounds_in(child)
    return found


def probe_amounts(verdict: Verdict, facts: Facts) -> list[Decimal]:
    """Return payable amounts around every bound in *verdict*, and the facts' own amount."""
    unit = smallest_unit(facts.currency)
    around = {facts.amount, unit, unit * 2}
    for bound in bounds_in(verdict):
        around |= {bound - unit, bound, bound + unit}
    return sorted(a.quantize(unit) for a in around if a >= unit)


def in_bounds(verdict: Verdict, amount: Decimal) -> bool:
    """Return whether *amount* lies in ``[verdict.floor, verdict.cap]``."""
    return (verdict.floor is None or verdict.floor <= amount) and (
        verdict.cap is None or amount <= verdict.cap
    )


def check_contract(rule: Rule, facts: Facts, *, exact: bool = True) -> None:
    """Assert that *rule* honours the contract with *facts*, whatever the amount.

    Always: ``floor`` and ``cap`` do not depend on the amount; every allowed amount lies in
    ``[floor, cap]``; ``floor`` and ``cap`` themselves are allowed, unless ``cap`` is 0, in
    which case nothing is.
    With *exact*: an amount is allowed if and only if it lies in ``[floor, cap]``.
    """
    unit = smallest_unit(facts.currency)
    first = rule.evaluate(facts)
    for amount in probe_amounts(first, facts):
        verdict = rule.evaluate(replace(facts, amount=amount))
        assert (first.floor, first.cap) == (verdict.floor, verdict.cap), amount
        allowed = not verdict.denies
        if exact:
            assert in_bounds(first, amount) == allowed, amount
        elif allowed:
            assert in_bounds(first, amount), amount
    if first.cap == 0:
        assert rule.evaluate(replace(facts, amount=unit)).denies
        return
    for edge in (first.floor, first.cap):
        if edge is not None and edge >= unit:
            assert not rule.evaluate(replace(facts, amount=edge)).denies, edge
