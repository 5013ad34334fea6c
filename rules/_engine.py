"""The :class:`Rule` protocol and the combinators that compose rules.

A rule is anything with a ``name`` and an ``evaluate(facts) -> Verdict`` method. The contract
that makes ``max_payable`` exact: for a given set of facts, a rule whose answer depends on the
amount passes exactly the amounts in ``[verdict.floor, verdict.cap]`` (a missing bound is
open), and a rule that denies whatever the amount reports ``cap=Decimal(0)``. ``floor`` and
``cap`` depend on the facts but never on ``facts.amount``. Every built-in honours this.

Combinators report the smallest (``floor``) and largest (``cap``) amount they allow, exactly,
whatever the nesting. ``all_of`` and ``when`` keep the contract. ``any_of`` unites the ranges of
its alternatives, which may leave a hole between them (``any_of(MaxPayout 100, minimum 500)``
allows 100 and 500 but not 300): its ``floor`` and ``cap`` are still the exact smallest and
largest allowed amounts, but amounts in such a hole are denied.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from decimal import Decimal

from rules._bounds import (
    EXPLAIN,
    NO_BOUNDS,
    BoundedRule,
    Bounds,
    Clearance,
    Failures,
    Window,
    bounds_method,
    bounds_of,
    combine,
    passes_quietly,
    window,
)
from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict
from rules._money import SUBTRACT
from rules._protocol import Rule
from rules._ranges import Ranges
from rules._scope import When, when

__all__ = ["AnyOf", "Rule", "RuleSet", "When", "all_of", "any_of", "when"]

_ZERO = Decimal(0)
_new_tuple = tuple.__new__


def _members(rules: Iterable[Rule], combinator: str) -> list[Rule]:
    if isinstance(rules, Rule) and not isinstance(rules, Iterable):
        raise ConfigurationError(
            f"{combinator} takes a list of rules; wrap a single rule in a list: [{rules.name}]"
        )
    members = list(rules)
    for index, rule in enumerate(members):
        if not isinstance(rule, Rule):
            raise ConfigurationError(
                f"rules must provide .name and .evaluate(facts); got {type(rule).__name__}",
                path=f"rules[{index}]",
            )
    return members


def _fold(rule: RuleSet | AnyOf, facts: Facts, children: tuple[Verdict, ...]) -> Ranges:
    """Return the amounts a combinator allows: its members' ranges intersected or united."""
    every = isinstance(rule, RuleSet)
    result = Ranges(facts.currency) if every else Ranges(facts.currency, ())
    for member, verdict in zip(rule.rules, children, strict=True):
        part = _allowed(member, facts, verdict)
        result = result & part if every else result | part
    return result


def _allowed(rule: Rule, facts: Facts, verdict: Verdict) -> Ranges:
    """Return the amounts *rule* allows with *facts*, given its *verdict* on them."""
    if isinstance(rule, RuleSet | AnyOf):
        return _fold(rule, facts, verdict.children)
    if isinstance(rule, When):
        if rule.applies(facts):
            return _allowed(rule.rule, facts, verdict)
        return Ranges(facts.currency)
    floor, cap = verdict.floor, verdict.cap
    inside = (floor is None or floor <= facts.amount) and (cap is None or facts.amount <= cap)
    if verdict.denies and inside:
        # The rule broke the contract (it denies an amount within its own bounds): trust the
        # denial rather than the bounds, so that max_payable fails closed.
        return Ranges(facts.currency, ())
    return Ranges.between(facts.currency, floor, cap)


def _combined(
    rule: RuleSet | AnyOf, facts: Facts, children: tuple[Verdict, ...], *, passed: bool
) -> Verdict:
    floor: Decimal | None
    cap: Decimal | None
    if isinstance(rule, RuleSet) and rule._by_bounds:
        # Every member's _bounds are its verdict's: the window the clearance worked out.
        floor, cap, _ = rule._window(facts).clearance
    elif isinstance(rule, RuleSet) and rule.intervals:
        # Without any_of inside, every member allows one range: their bounds combine.
        _, floor, cap, _ = combine([bounds_of(child, facts) for child in children], facts)
    else:
        floor, cap = _fold(rule, facts, children).bounds()
    if passed:
        return Verdict(
            rule=rule.name, passed=True, cap=cap, floor=floor, children=children
        )
    denying = [child for child in children if child.denies]
    leaves = [leaf for child in denying for leaf in child.denials()]
    retrying = [child.retryable for child in denying]
    # Retrying helps an all_of only if every denial can clear by itself, and an any_of as
    # soon as one alternative can.
    retryable = (bool(denying) and all(retrying)) if isinstance(rule, RuleSet) else any(retrying)
    return Verdict(
        rule=rule.name,
        passed=False,
        code=leaves[0].code if leaves else "",
        message="; ".join([leaf.message for leaf in leaves]),
        retryable=retryable,
        cap=cap,
        floor=floor,
        children=children,
    )


def _built_in(rule: Rule) -> BoundedRule | None:
    """Return the built-in *rule* is or scopes (``when``), whose claims it shares; else None.

    A scope reads only the currency and provider, and outside it there are no bounds and a
    pass, alike: ``_age_free`` and ``_exact`` (the rules' private protocol) hold for it too.
    """
    while isinstance(rule, When):
        rule = rule.rule
    return rule if isinstance(rule, BoundedRule) else None


def _has_any_of(rule: Rule) -> bool:
    if isinstance(rule, AnyOf):
        return True
    if isinstance(rule, RuleSet):
        return not rule.intervals
    if isinstance(rule, When):
        return _has_any_of(rule.rule)
    return False


class RuleSet:
    """Rules that must all pass; ``all_of(...)`` builds one and nested sets flatten.

    A ``RuleSet`` is itself a :class:`Rule`, so sets nest inside ``any_of`` and ``when``. An
    empty set allows everything.

    Example:
        >>> from rules import RuleSet, SufficientFunds, MaxPayout
        >>> RuleSet([SufficientFunds(), MaxPayout({"BRL": "5000"})]).names
        ('sufficient_funds', 'max_payout')

    Raises:
        ConfigurationError: a member is not a rule.
    """

    __slots__ = (
        "_by_bounds", "_fixed", "_last", "_moving", "_name", "_parts", "_steady", "intervals",
        "rules",
    )

    def __init__(self, rules: Collection[Rule] = ()) -> None:
        flat: list[Rule] = []
        for rule in _members(rules, "all_of"):
            flat.extend(rule.rules if isinstance(rule, RuleSet) else (rule,))
        self.rules: tuple[Rule, ...] = tuple(flat)
        # Without any_of inside, every member allows one range: bounds are simple arithmetic.
        self.intervals: bool = not any(_has_any_of(rule) for rule in flat)
        built_in = [_built_in(rule) for rule in flat]
        # Whether every member's bounds are those its verdict reports (every built-in's).
        self._by_bounds: bool = all(b is not None and b._exact for b in built_in)
        self._name = f"all_of({', '.join(self.names)})"
        self._parts = tuple(bounds_method(rule) for rule in flat)
        # Bounds that read neither the amount nor the balance's age are worked out once per
        # balance (see clearance); the others (MaxBalanceAge, yours) every time.
        self._fixed = tuple(b is not None and b._age_free for b in built_in)
        self._steady = tuple(p for p, fixed in zip(self._parts, self._fixed, strict=True) if fixed)
        self._moving = tuple(
            p for p, fixed in zip(self._parts, self._fixed, strict=True) if not fixed
        )
        # The facts the steady bounds were last worked out for, what they allow together,
        # and the steady bounds themselves (in order).
        self._last: tuple[tuple[object, ...], Window, tuple[Bounds, ...]] | None = None

    @property
    def name(self) -> str:
        """Return ``all_of(<names>)``."""
        return self._name

    @property
    def names(self) -> tuple[str, ...]:
        """Return the names of the member rules, in order."""
        return tuple(rule.name for rule in self.rules)

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with every member; passes when no member denies."""
        children = tuple([rule.evaluate(facts) for rule in self.rules])
        passed = True
        for child in children:
            if not child.passed and child.severity == "deny":
                passed = False
                break
        return _combined(self, facts, children, passed=passed)

    def clearance(self, facts: Facts) -> Clearance | None:
        """Return the bounds and reserve when every member passes *facts* without a warning.

        The fast answer for the common case, building no verdicts: ``None`` when any member
        denies or warns (call :meth:`evaluate` for the reasons). When not ``None``, its
        ``floor`` and ``cap`` are those :meth:`evaluate` reports, and ``reserve`` is the
        largest ``details["reserve"]`` of its verdicts.
        """
        found = self._window(facts)
        return found.clearance if found.admits(facts.amount) else None

    def failures(self, facts: Facts) -> Failures | None:
        """Return the verdicts of the members that deny or warn, with the set's bounds.

        What :meth:`evaluate` reports when :meth:`clearance` is ``None``, for less: only
        the members whose bounds do not pass *facts* quietly are asked for a verdict. The
        reasons, warnings, bounds and reserve are :meth:`evaluate`'s. ``None`` when a
        member's bounds are not known to be its verdict's (a rule of your own, ``any_of``):
        call :meth:`evaluate`. Members compute in the money context, as in :meth:`evaluate`.
        """
        if not self._by_bounds:
            return None
        found: list[Verdict] = []
        reserve = _ZERO  # every member's, as evaluate reports it (the window stops at a block)
        amount, room = facts.amount, SUBTRACT(facts.spendable, facts.fee)
        found_window = self._window(facts)
        last = self._last
        if last is not None and last[1] is found_window:  # the steady bounds of these facts
            steady = iter(last[2])
            every = [next(steady) if fixed else part(facts)
                     for part, fixed in zip(self._parts, self._fixed, strict=True)]
        else:
            every = [part(facts) for part in self._parts]
        for rule, bounds in zip(self.rules, every, strict=True):
            if bounds is NO_BOUNDS:
                continue  # passes quietly, keeps nothing: most members, most of the time
            if bounds.reserve > reserve:  # noqa: PLR1730 - max() costs a call per member
                reserve = bounds.reserve
            if not passes_quietly(bounds, amount, room):
                verdict = rule.evaluate(facts)
                if not verdict.passed:
                    found.append(verdict)
        floor, cap, _ = found_window.clearance
        # Built as the tuples they are: a NamedTuple's constructor is a Python function.
        return _new_tuple(Failures, (_new_tuple(Clearance, (floor, cap, reserve)), tuple(found)))

    def _window(self, facts: Facts) -> Window:
        """Return what the members allow together with *facts*, whatever the amount."""
        for part in self._moving:
            if part(facts) is not NO_BOUNDS:  # e.g. a stale balance: combine them all
                return window([part(facts) for part in self._parts], facts)
        # Every check of one cached balance judges the same numbers but for the amount (and
        # the age, which only the moving rules read): their window is reused. The tuple is
        # swapped whole, so threads sharing the set never see half of one.
        key = (facts.currency, facts.available, facts.fee, facts.frozen, facts.total,
               facts.reserved, facts.provider, facts.account, facts.own_in_flight)
        last = self._last
        if last is None or last[0] != key:
            steady = tuple([part(facts) for part in self._steady])
            last = self._last = (key, window(steady, facts), steady)
        return last[1]

    def _bounds(self, facts: Facts) -> Bounds:
        clean, floor, cap, reserve = combine([part(facts) for part in self._parts], facts)
        return Bounds(floor, cap, None, reserve) if clean else EXPLAIN

    def __iter__(self) -> Iterator[Rule]:
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RuleSet) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(("all_of", self.rules))

    def __repr__(self) -> str:
        return f"all_of({', '.join(map(repr, self.rules))})"


class AnyOf:
    """Rules of which at least one must pass; ``any_of(...)`` builds one.

    Raises:
        ConfigurationError: no rules (any of nothing would deny everything), or a member is
            not a rule.
    """

    __slots__ = ("_name", "rules")

    def __init__(self, rules: Collection[Rule]) -> None:
        flat: list[Rule] = []
        for rule in _members(rules, "any_of"):
            flat.extend(rule.rules if isinstance(rule, AnyOf) else (rule,))
        if not flat:
            raise ConfigurationError("any_of needs at least one rule (any of nothing denies all)")
        self.rules: tuple[Rule, ...] = tuple(flat)
        self._name = f"any_of({', '.join(rule.name for rule in self.rules)})"

    @property
    def name(self) -> str:
        """Return ``any_of(<names>)``."""
        return self._name

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts* with every member; passes when at least one member does not deny."""
        children = tuple(rule.evaluate(facts) for rule in self.rules)
        return _combined(self, facts, children, passed=any(not c.denies for c in children))

    def _bounds(self, facts: Facts) -> Bounds:  # noqa: ARG002 - the Bounded protocol
        # A union of ranges may have holes, which one range cannot describe: explain it.
        return EXPLAIN

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnyOf) and self.rules == other.rules

    def __hash__(self) -> int:
        return hash(("any_of", self.rules))

    def __repr__(self) -> str:
        return f"any_of({', '.join(map(repr, self.rules))})"


def all_of(*rules: Rule) -> RuleSet:
    """Return a rule that passes when every one of *rules* passes (nested sets flatten).

    Raises:
        ConfigurationError: a member is not a rule.
    """
    return RuleSet(rules)


def any_of(*rules: Rule) -> AnyOf:
    """Return a rule that passes when at least one of *rules* passes (nested ones flatten).

    Raises:
        ConfigurationError: no rules, or a member is not a rule.
    """
    return AnyOf(rules)
