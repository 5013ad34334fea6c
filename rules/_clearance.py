"""The fast answer for the common case: every rule passes, nothing to explain.

Most payouts are allowed, and an allowed payout needs no messages, no details and no verdict
tree: only the bounds from which the guard derives ``max_payable``, and the reserve kept.
Each built-in rule therefore has a ``_clear(facts)`` twin of its ``evaluate``: it returns its
bounds exactly when ``evaluate`` would pass without a warning, and ``None`` otherwise. ``None``
never decides anything; it only sends the caller to ``evaluate`` for the reasons. A twin may
answer ``None`` more often than needed (that costs time, not safety), but never bounds where
``evaluate`` would deny or warn; the tests hold every twin to it.

Twins run on the hot path of every check, outside any money block: they compute with
``MONEY_CONTEXT``'s methods (``ADD``, ``SUBTRACT``), never with operators, whose results
would depend on the caller's decimal context. They return plain ``(floor, cap, reserve)``
tuples; :class:`Clearance` is what ``RuleSet.clearance`` hands out.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import NamedTuple

from rules._facts import Facts
from rules._money import MONEY_CONTEXT, money_context, smallest_unit
from rules._protocol import Rule

__all__ = [
    "NO_BOUNDS",
    "Bounds",
    "Clear",
    "ClearByVerdict",
    "Clearance",
    "clear_of",
    "combine",
    "tighten",
]

_ZERO = Decimal(0)


class Clearance(NamedTuple):
    """What passing rules report: the amounts they allow, and the reserve they keep.

    Attributes:
        floor: Smallest amount allowed, on the currency's grid; ``None`` for no lower bound.
        cap: Largest amount allowed, on the currency's grid; ``None`` for no upper bound.
        reserve: The largest reserve a rule keeps untouched (0 when none does).
    """

    floor: Decimal | None
    cap: Decimal | None
    reserve: Decimal = _ZERO


# What a twin returns: (floor, cap, reserve), or None to have evaluate explain.
Bounds = tuple[Decimal | None, Decimal | None, Decimal]
Clear = Callable[[Facts], Bounds | None]

# A rule that passes, bounds nothing and keeps no reserve.
NO_BOUNDS: Bounds = (None, None, _ZERO)


class ClearByVerdict:
    """The ``_clear`` of a rule that has none: its verdict's bounds, when a clean pass.

    A class rather than a closure, so that rule sets holding rules of yours still pickle.
    """

    __slots__ = ("rule",)

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def __call__(self, facts: Facts) -> Bounds | None:
        with money_context():
            verdict = self.rule.evaluate(facts)
        if not verdict.passed or verdict.children:
            return None  # a denial, or a combination that may hold warnings: explain it
        reserve = verdict.details.get("reserve")
        return verdict.floor, verdict.cap, _ZERO if reserve is None else reserve


def tighten(
    low: Decimal | None, high: Decimal | None, currency: str
) -> tuple[Decimal | None, Decimal | None]:
    """Return the bounds ``(low, high)`` on the currency's grid, as an ``all_of`` reports them.

    ``low`` is rounded up and ``high`` down; a floor at or below the smallest unit is no floor.
    When no amount is left between them, the answer is ``(None, 0)``: nothing is allowed.
    """
    unit = smallest_unit(currency)
    start = unit
    if low is not None:
        low = low.quantize(unit, ROUND_CEILING, MONEY_CONTEXT)
        if low > unit:
            start = low
    if high is not None:
        high = high.quantize(unit, ROUND_FLOOR, MONEY_CONTEXT)
        if start > high:
            return None, _ZERO
    return (None if start is unit else start), high


def combine(clears: tuple[Clear, ...], facts: Facts) -> Bounds | None:
    """Return the bounds of all of *clears* together, or ``None`` when one has none."""
    low: Decimal | None = None
    high: Decimal | None = None
    reserve = _ZERO
    for clear in clears:
        found = clear(facts)
        if found is None:
            return None
        floor, cap, kept = found
        if floor is not None and (low is None or floor > low):
            low = floor
        if cap is not None and (high is None or cap < high):
            high = cap
        if kept > reserve:  # noqa: PLR1730 - max() costs a call on the hot path
            reserve = kept
    floor, cap = tighten(low, high, facts.currency)
    return floor, cap, reserve


def clear_of(rule: Rule) -> Clear:
    """Return *rule*'s ``_clear``, or one made from its verdicts when it has none.

    A subclass that overrides ``evaluate`` without its own ``_clear`` gets the latter: an
    inherited twin would no longer agree with the ``evaluate`` it is the twin of.
    """
    for klass in type(rule).__mro__:
        if "evaluate" in vars(klass):
            if "_clear" in vars(klass):
                own: Clear = getattr(rule, "_clear")  # noqa: B009 - private by design
                return own
            break
    return ClearByVerdict(rule)
