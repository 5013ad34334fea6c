"""What a rule allows, as numbers: the one copy of each rule's arithmetic, and where it combines.

Every built-in rule computes its :class:`Bounds` in one private method, ``_bounds(facts)``
(the :class:`Bounded` protocol). Its ``evaluate`` calls it and builds words only when it
denies or warns; the fast path, ``RuleSet.clearance``, calls nothing else. Bounds never depend
on ``facts.amount``: a rule passes exactly the amounts ``floor <= amount <= cap``, where the
cap of a rule that keeps part of the balance untouched is ``spendable - fee - keep``. Keeping
``keep`` rather than a cap lets :func:`combine` compute spendable once per check, however many
rules depend on it.

:func:`combine` is the only place bounds combine, for the fast path and for ``all_of``'s
verdicts alike. Everything here computes with ``MONEY_CONTEXT``'s methods (``SUBTRACT``),
never with operators, whose results would depend on the caller's decimal context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

from rules._facts import Facts, Verdict
from rules._money import MONEY_CONTEXT, SUBTRACT, money_context, smallest_unit
from rules._protocol import Rule

__all__ = [
    "BLOCKED",
    "EXPLAIN",
    "NO_BOUNDS",
    "SPENDABLE",
    "Bounded",
    "BoundedRule",
    "Bounds",
    "BoundsByVerdict",
    "BoundsOf",
    "Clearance",
    "Failures",
    "Window",
    "bounds_method",
    "bounds_of",
    "combine",
    "keeping",
    "passes_quietly",
    "payable_cap",
    "settle",
    "tighten",
    "window",
]

_ZERO = Decimal(0)


class Bounds(NamedTuple):
    """The amounts one rule allows with some facts, and what it keeps.

    Attributes:
        floor: Smallest amount allowed; ``None`` for none.
        cap: Largest amount allowed, before ``keep``; ``None`` for none.
        keep: Spendable this rule leaves untouched: amounts above ``spendable - fee - keep``
            are denied. ``None`` when the rule does not look at spendable.
        reserve: The reserve the rule reports keeping (``Decision.reserve``).
        explain: The rule warns, or allows amounts one range cannot describe: only its
            ``evaluate`` can say what it does.
        blocked: The rule denies whatever the amount (``cap`` 0).
    """

    floor: Decimal | None = None
    cap: Decimal | None = None
    keep: Decimal | None = None
    reserve: Decimal = _ZERO
    explain: bool = False
    blocked: bool = False


NO_BOUNDS = Bounds()
"""A rule that passes, bounds nothing and keeps nothing."""
EXPLAIN = Bounds(explain=True)
"""A rule whose ``evaluate`` must explain it (a warning, or a union of ranges)."""
BLOCKED = Bounds(cap=_ZERO, blocked=True)
"""A rule that denies every amount."""
SPENDABLE = Bounds(keep=_ZERO)
"""A rule that allows what is spendable, fee included (``SufficientFunds``)."""

_new_tuple = tuple.__new__


def keeping(reserve: Decimal) -> Bounds:
    """Return the bounds of a rule that keeps *reserve* of spendable untouched, and says so.

    The same as ``Bounds(keep=reserve, reserve=reserve)`` in half the time: a rule with a
    reserve builds one every check.
    """
    return _new_tuple(Bounds, (None, None, reserve, reserve, False, False))


@runtime_checkable
class Bounded(Protocol):
    """A rule whose bounds are known without its verdict: every built-in and combinator."""

    def _bounds(self, facts: Facts) -> Bounds:
        """Return what the rule allows with *facts*.

        ``floor``, ``cap``, ``keep`` and ``reserve`` never depend on ``facts.amount``;
        ``explain`` may (a combination, or a rule of yours, that denies this amount).
        """
        ...


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


class Failures(NamedTuple):
    """What rules that must all pass report of facts they do not all pass without a word.

    What ``RuleSet.evaluate`` reports, less the verdicts of the members that pass without
    a warning (see ``RuleSet.failures``).

    Attributes:
        clearance: The set's ``floor`` and ``cap`` (as its verdict reports them) and the
            largest reserve a member reports keeping.
        verdicts: The verdicts of the members that deny or warn, in the set's order.
    """

    clearance: Clearance
    verdicts: tuple[Verdict, ...]


def passes_quietly(bounds: Bounds, amount: Decimal, room: Decimal) -> bool:
    """Return whether a rule with *bounds* passes *amount* without anything to explain.

    *room* is spendable less the fee (``spendable - fee``), worked out once for every member
    of a set. Only for a rule whose bounds are its verdict's (``BoundedRule._exact``).
    """
    if bounds is NO_BOUNDS:
        return True  # most rules, most of the time
    floor, cap, keep, _, explain, blocked = bounds
    if explain or blocked:
        return False
    return (
        (floor is None or amount >= floor)
        and (cap is None or amount <= cap)
        and (keep is None or amount <= SUBTRACT(room, keep))
    )


def payable_cap(limit: Decimal, currency: str) -> Decimal:
    """Return the largest whole-unit amount ``<= limit``, or 0 when even that is negative."""
    cap = limit.quantize(smallest_unit(currency), ROUND_FLOOR, MONEY_CONTEXT)
    return cap if cap >= 0 else _ZERO  # what max(cap, 0) returns, without the call


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


def _limit(facts: Facts, keep: Decimal) -> Decimal:
    """Return the largest amount that leaves *keep* of spendable untouched, fee paid."""
    return SUBTRACT(SUBTRACT(facts.spendable, facts.fee), keep)


def settle(bounds: Bounds, facts: Facts) -> tuple[bool, Decimal | None, Decimal | None]:
    """Return ``(passed, floor, cap)`` of one rule's *bounds*, as its verdict reports them.

    ``cap`` is on the currency's grid and never below 0; it is 0 when nothing is allowed.
    """
    if bounds.blocked:
        return False, bounds.floor, _ZERO
    floor, high = bounds.floor, bounds.cap
    if bounds.keep is not None:
        limit = _limit(facts, bounds.keep)
        if high is None or limit < high:
            high = limit
    amount = facts.amount
    passed = (floor is None or amount >= floor) and (high is None or amount <= high)
    cap = None if high is None else payable_cap(high, facts.currency)
    if floor is not None and cap is not None and floor > cap:
        cap = _ZERO  # not even the smallest allowed amount is payable: nothing is allowed
    return passed, floor, cap


class Window(NamedTuple):
    """What rules that must all pass allow with some facts, whatever the amount.

    Attributes:
        clean: No rule denies every amount or needs its ``evaluate`` to explain itself.
        low: The largest floor, before rounding to the currency's grid; ``None`` for none.
        high: The smallest cap, ``spendable - fee - keep`` included, before rounding.
        clearance: ``floor`` and ``cap`` on the grid (see :func:`tighten`) and the reserve.
    """

    clean: bool
    low: Decimal | None
    high: Decimal | None
    clearance: Clearance

    def admits(self, amount: Decimal) -> bool:
        """Return whether every rule passes *amount* without anything to explain."""
        low, high = self.low, self.high
        return self.clean and (low is None or amount >= low) and (high is None or amount <= high)


def window(parts: Iterable[Bounds], facts: Facts) -> Window:
    """Return what rules with bounds *parts* allow together with *facts*: bounds combined.

    The only place bounds combine. ``facts.amount`` is not read. Spendable is computed once,
    for the largest ``keep``.
    """
    low: Decimal | None = None
    high: Decimal | None = None
    keep: Decimal | None = None
    reserve = _ZERO
    clean = True
    for part in parts:
        if part is NO_BOUNDS:
            continue  # most rules, most of the time
        floor, cap, kept, held, explain, blocked = part
        if blocked:
            nothing = Clearance(None, _ZERO, reserve)
            return Window(clean=False, low=None, high=_ZERO, clearance=nothing)
        if floor is not None and (low is None or floor > low):
            low = floor
        if cap is not None and (high is None or cap < high):
            high = cap
        if kept is not None and (keep is None or kept > keep):
            keep = kept
        if held is not _ZERO and held > reserve:  # most rules keep no reserve: no compare
            reserve = held
        if explain:
            clean = False
    if keep is not None:
        limit = _limit(facts, keep)
        if high is None or limit < high:
            high = limit
    floor, cap = tighten(low, high, facts.currency)
    return Window(clean, low, high, Clearance(floor, cap, reserve))


def combine(
    parts: Iterable[Bounds], facts: Facts
) -> tuple[bool, Decimal | None, Decimal | None, Decimal]:
    """Return ``(clean, floor, cap, reserve)`` of rules that must all pass (see :func:`window`).

    ``clean`` is whether every rule passes ``facts.amount`` without anything to explain.
    ``floor`` and ``cap`` are the tightest bounds, on the currency's grid (see
    :func:`tighten`); ``reserve`` is the largest reserve kept.
    """
    found = window(parts, facts)
    floor, cap, reserve = found.clearance
    return found.admits(facts.amount), floor, cap, reserve


def bounds_of(verdict: Verdict, facts: Facts) -> Bounds:
    """Return the bounds a *verdict* reports, for combining verdicts (``all_of.evaluate``).

    A verdict that denies an amount within its own bounds broke the contract drawn in
    ``rules._engine``: trust the denial rather than the bounds, so that max_payable fails
    closed.
    """
    floor, cap = verdict.floor, verdict.cap
    if not verdict.passed and verdict.severity == "deny":  # verdict.denies, without the call
        amount = facts.amount
        if (floor is None or floor <= amount) and (cap is None or amount <= cap):
            return BLOCKED
    if floor is None and cap is None:
        return NO_BOUNDS
    return _new_tuple(Bounds, (floor, cap, None, _ZERO, False, False))


class BoundsByVerdict:
    """The ``_bounds`` of a rule that has none (yours): its verdict's, when a clean pass.

    A class rather than a closure, so that rule sets holding rules of yours still pickle.
    """

    __slots__ = ("rule",)

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def __call__(self, facts: Facts) -> Bounds:
        with money_context():
            verdict = self.rule.evaluate(facts)
        if not verdict.passed or verdict.children:
            return EXPLAIN  # a denial, or a combination that may hold warnings: explain it
        reserve = verdict.details.get("reserve")
        return Bounds(verdict.floor, verdict.cap, None, _ZERO if reserve is None else reserve)


BoundsOf = Callable[[Facts], Bounds]


def bounds_method(rule: Rule) -> BoundsOf:
    """Return *rule*'s ``_bounds``, or bounds read from its verdicts when it has none."""
    if isinstance(rule, Bounded):
        method: BoundsOf = rule._bounds  # the Bounded protocol, declared above
        return method
    return BoundsByVerdict(rule)


def bounds_from_evaluate(self: Any, facts: Facts) -> Bounds:
    """Return the bounds of a subclass's own ``evaluate`` (see ``BoundedRule``)."""
    return BoundsByVerdict(self)(facts)


class BoundedRule:
    """Base of the built-in rules: one that overrides ``evaluate`` keeps its word.

    A subclass that overrides ``evaluate`` without ``_bounds`` would otherwise inherit bounds
    that no longer agree with what it does; it gets bounds read from its own verdicts.
    """

    __slots__ = ()

    # Whether ``_bounds`` reads neither ``facts.amount`` nor ``facts.age_seconds``: then the
    # bounds of a balance are worked out once and reused while it is judged (``RuleSet``).
    # A built-in says so in its own class; a subclass that changes ``evaluate`` or
    # ``_bounds`` does not inherit the claim.
    _age_free: ClassVar[bool] = False
    # Whether ``_bounds`` gives the floor and cap the verdict reports whatever it decides
    # (not only when it passes cleanly): ``all_of.evaluate`` then combines bounds, not verdicts.
    _exact: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "evaluate" in vars(cls) and "_bounds" not in vars(cls):
            cls._bounds = bounds_from_evaluate  # type: ignore[attr-defined] # set on the class, on purpose
        if "evaluate" in vars(cls) or "_bounds" in vars(cls):
            for claim in ("_age_free", "_exact"):
                if claim not in vars(cls):
                    setattr(cls, claim, False)
