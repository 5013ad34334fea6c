"""Tests for RuleSet.clearance: the verdict-free answer for payouts every rule allows.

A clearance must never allow what ``evaluate`` denies or warns about, and must report the same
bounds and reserve. Both read each rule's one ``_bounds``; these tests hold every built-in (and
the combinators) to that.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import ROUND_UP, Decimal, localcontext
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from guard import _judge
from guard._request import Request
from guard.testing import StaticFetcher
from rules import (
    Clearance,
    Facts,
    Failures,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    RuleSet,
    SufficientFunds,
    Verdict,
    all_of,
    any_of,
    when,
)
from rules._bounds import (  # the private protocol: what a subclass overrides, the oracle
    BLOCKED,
    Bounds,
    bounds_of,
    combine,
)
from tests._facts import brl
from tests.rules_contract import probe_amounts
from tests.strategies import builtin_rules, currencies, facts, rule_trees

D = Decimal


def largest_reserve(verdict: Verdict) -> Decimal:
    """Return the largest ``details["reserve"]`` among *verdict*'s leaves (0 when none)."""
    if verdict.children:
        return max((largest_reserve(child) for child in verdict.children), default=D(0))
    return max(verdict.details.get("reserve", D(0)), D(0))


def clean_pass(verdict: Verdict) -> bool:
    return not verdict.denies and next(verdict.warnings(), None) is None


def assert_clears_exactly_clean_passes(fact: Facts, rules: RuleSet) -> None:
    """Assert clearance == what evaluate reports, at amounts on both sides of every bound."""
    for amount in probe_amounts(rules.evaluate(fact), fact):
        at = replace(fact, amount=amount)
        verdict = rules.evaluate(at)
        clearance = rules.clearance(at)
        assert clean_pass(verdict) == (clearance is not None), amount
        if clearance is not None:
            expected = Clearance(verdict.floor, verdict.cap, largest_reserve(verdict))
            assert expected == clearance, amount


@st.composite
def judged(draw: st.DrawFn, *, any_of_ok: bool) -> tuple[Facts, RuleSet]:
    code = draw(currencies())
    return draw(facts(code)), RuleSet([draw(rule_trees(code, any_of_ok=any_of_ok))])


@st.composite
def one_rule(draw: st.DrawFn) -> tuple[Facts, RuleSet]:
    code = draw(currencies())
    return draw(facts(code)), RuleSet([draw(builtin_rules(code))])


class TestAgreesWithEvaluate:
    @given(one_rule())
    def test_each_builtin_clears_exactly_what_its_evaluate_passes_cleanly(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        assert_clears_exactly_clean_passes(*case)

    @given(judged(any_of_ok=False))
    def test_without_any_of_a_clearance_exactly_when_evaluate_passes_cleanly(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        assert_clears_exactly_clean_passes(*case)

    @given(judged(any_of_ok=True))
    def test_with_any_of_a_clearance_is_never_given_where_evaluate_denies_or_warns(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        fact, rules = case
        for amount in probe_amounts(rules.evaluate(fact), fact):
            at = replace(fact, amount=amount)
            clearance = rules.clearance(at)
            verdict = rules.evaluate(at)
            if clearance is not None:
                assert clean_pass(verdict), amount
                assert (verdict.floor, verdict.cap) == (clearance.floor, clearance.cap), amount

    @given(judged(any_of_ok=True))
    def test_the_callers_decimal_context_changes_nothing(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        """Twins compute in MONEY_CONTEXT: a caller's 3-digit, rounding-up context is ignored."""
        fact, rules = case
        expected = rules.clearance(fact)
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.rounding = ROUND_UP
            ctx.clear_traps()
            assert expected == rules.clearance(fact)


_CHANGES = ("amount", "age_seconds", "available", "fee", "frozen", "total", "reserved",
            "provider", "account", "own_in_flight", "all")


class TestOneBalanceJudgedManyTimes:
    """A rule set reuses the bounds it worked out for a balance: never where it must not."""

    @given(judged(any_of_ok=False), st.lists(st.sampled_from(_CHANGES), max_size=8), st.data())
    def test_a_set_judging_in_turn_answers_as_a_fresh_set_would(
        self, case: tuple[Facts, RuleSet], changes: list[str], data: st.DataObject
    ) -> None:
        """Each next payout changes one fact (or all): judged as if it came first."""
        fact, drawn = case
        rules = all_of(SufficientFunds(), drawn)  # as every guard judges: funds first

        def assert_as_fresh(fact: Facts, change: str) -> None:
            fresh = RuleSet(rules.rules)  # at amounts on both sides of every bound
            for amount in probe_amounts(fresh.evaluate(fact), fact):
                at = replace(fact, amount=amount)
                assert rules.clearance(at) == fresh.clearance(at), (change, amount)

        assert_as_fresh(fact, "first")
        for change in changes:
            other = data.draw(facts(fact.currency))
            if change == "all":
                fact = other
            elif change == "own_in_flight":  # not drawn by facts(): some of the frozen funds
                fact = replace(fact, own_in_flight=other.frozen or D(0))
            else:
                fact = replace(fact, **{change: getattr(other, change)})
            assert_as_fresh(fact, change)

    @given(judged(any_of_ok=False))
    def test_all_of_reports_the_bounds_its_members_verdicts_report(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        """Built from the members' bounds, whatever they decide: as from their verdicts."""
        fact, drawn = case
        rules = all_of(SufficientFunds(), drawn)
        for amount in probe_amounts(rules.evaluate(fact), fact):
            at = replace(fact, amount=amount)
            verdict = rules.evaluate(at)
            _, floor, cap, _ = combine([bounds_of(c, at) for c in verdict.children], at)
            assert (verdict.floor, verdict.cap) == (floor, cap), amount

    def test_a_balance_that_moves_is_judged_on_its_new_numbers(self) -> None:
        rules = all_of(SufficientFunds(), ReserveMargin(percent="10"))
        assert rules.clearance(brl("80.00", available="100.00")) is not None
        assert rules.clearance(brl("80.00", available="100.00", reserved=D("20.00"))) is None
        assert rules.clearance(brl("80.00", available="85.00", reserved=D("20.00"))) is None

    def test_frozen_funds_are_judged_on_each_balance_s_own_numbers(self) -> None:
        rules = all_of(SufficientFunds(), FrozenFunds(max_ratio="0.5"))
        some = {"frozen": D("10.00"), "total": D("300.00")}
        assert rules.clearance(brl("10.00", available="100.00", **some)) is not None
        more = {"frozen": D("200.00"), "total": D("300.00")}
        assert rules.clearance(brl("10.00", available="100.00", **more)) is None
        ours = {**more, "own_in_flight": D("200.00")}
        assert rules.clearance(brl("10.00", available="100.00", **ours)) is not None
        assert rules.clearance(brl("10.00", available="100.00", **more)) is None
        less_total = {"frozen": D("10.00"), "total": D("15.00")}
        assert rules.clearance(brl("10.00", available="100.00", **some)) is not None
        assert rules.clearance(brl("10.00", available="100.00", **less_total)) is None

    def test_a_subclass_with_its_own_bounds_is_asked_every_time(self) -> None:
        """A built-in's claim that its bounds ignore the age is not inherited."""
        assert not YoungFunds._age_free
        rules = all_of(YoungFunds())
        assert rules.clearance(brl("10.00", age_seconds=1.0)) is not None
        assert rules.clearance(brl("10.00", age_seconds=20.0)) is None

    def test_a_rule_scoped_to_a_provider_is_judged_per_provider(self) -> None:
        rules = all_of(SufficientFunds(), when(MaxPayout({"BRL": "5"}), provider="x"))
        assert rules.clearance(brl("10.00", provider="y")) is not None
        assert rules.clearance(brl("10.00", provider="x")) is None

    def test_a_stale_balance_is_refused_though_the_same_balance_was_fresh(self) -> None:
        rules = all_of(SufficientFunds(), MaxBalanceAge(30))
        assert rules.clearance(brl("10.00", age_seconds=1.0)) is not None
        assert rules.clearance(brl("10.00", age_seconds=31.0)) is None


class TestBuiltins:
    def test_every_rule_passing_gives_the_tightest_bounds_and_the_reserve(self) -> None:
        rules = all_of(SufficientFunds(), ReserveMargin(percent="10"), MaxPayout({"BRL": "500"}))
        assert Clearance(None, D("500"), D("100.00")) == rules.clearance(brl("100.00"))

    def test_a_denying_rule_gives_none(self) -> None:
        assert None is all_of(SufficientFunds()).clearance(brl("1000.01"))

    def test_a_warning_gives_none_so_that_the_warning_is_reported(self) -> None:
        rules = all_of(SufficientFunds(), FrozenFunds(when_unknown="warn"))
        assert None is rules.clearance(brl("10.00"))
        assert rules.evaluate(brl("10.00")).passed

    def test_a_scope_that_does_not_apply_bounds_nothing(self) -> None:
        rules = all_of(SufficientFunds(), when(MaxPayout({"BRL": "5"}), provider="luxtak"))
        assert Clearance(None, D("1000.00"), D(0)) == rules.clearance(brl("10.00", provider="x"))
        assert None is rules.clearance(brl("10.00", provider="luxtak"))

    def test_any_of_is_always_explained_by_evaluate(self) -> None:
        rules = all_of(SufficientFunds(), any_of(MaxPayout({"BRL": "5"}), MaxPayout({"BRL": "50"})))
        assert None is rules.clearance(brl("10.00"))
        assert rules.evaluate(brl("10.00")).passed


@dataclass(frozen=True)
class AtMost:
    """A rule of one's own: no ``_bounds``, so the clearance comes from its verdict."""

    limit: Decimal

    @property
    def name(self) -> str:
        return "at_most"

    def evaluate(self, facts: Facts) -> Verdict:
        ok = facts.amount <= self.limit
        return Verdict(rule="at_most", passed=ok, code="" if ok else "too_much", cap=self.limit,
                       details={"reserve": D("7.00")})


class StrictFunds(SufficientFunds):
    """A built-in whose evaluate is overridden: its inherited ``_bounds`` must not be used."""

    def evaluate(self, facts: Facts) -> Verdict:  # noqa: ARG002 - denies whatever the facts
        return Verdict(rule="strict_funds", passed=False, code="never", cap=D(0))


class YoungFunds(SufficientFunds):
    """A built-in subclass whose own ``_bounds`` reads the balance's age."""

    def _bounds(self, facts: Facts) -> Bounds:
        return BLOCKED if facts.age_seconds > 10 else super()._bounds(facts)


class TestRulesWithoutBounds:
    def test_a_custom_rule_is_cleared_from_its_verdict(self) -> None:
        rules: RuleSet = all_of(SufficientFunds(), AtMost(D("20.00")))
        assert Clearance(None, D("20.00"), D("7.00")) == rules.clearance(brl("10.00"))
        assert None is rules.clearance(brl("30.00"))

    def test_a_subclass_overriding_evaluate_is_judged_by_its_own_evaluate(self) -> None:
        strict: Rule = StrictFunds()
        assert None is all_of(strict).clearance(brl("10.00"))

    def test_a_rule_set_holding_them_still_pickles(self) -> None:
        """Rule sets travel to worker processes; clearing by verdict must not stop that."""
        rules = all_of(SufficientFunds(), AtMost(D("20.00")), when(AtMost(D("5")), provider="x"))
        again = pickle.loads(pickle.dumps(rules))
        assert (rules, rules.clearance(brl("10.00"))) == (again, again.clearance(brl("10.00")))


class TestMaxBalanceAge:
    @given(
        st.decimals(min_value=0, max_value=10**6, places=3),
        st.floats(min_value=0, max_value=2e6, allow_nan=False)
        | st.floats(allow_nan=True, allow_infinity=True),
    )
    def test_a_float_age_is_judged_alike_by_bounds_and_evaluate(
        self, seconds: Decimal, age: float
    ) -> None:
        """The float shortcut of _bounds never passes an age that evaluate finds too old."""
        rule = MaxBalanceAge(seconds)
        fact = replace(brl("10.00"), age_seconds=age)
        assert rule.evaluate(fact).passed == (all_of(rule).clearance(fact) is not None)

    @given(st.decimals(min_value=0, max_value=10**6, places=3))
    def test_an_age_equal_to_the_limit_passes(self, seconds: Decimal) -> None:
        """Exactly as old as allowed is fresh enough, on both paths."""
        fact = replace(brl("10.00"), age_seconds=float(seconds))
        rule = MaxBalanceAge(seconds)
        assert rule.evaluate(fact).passed == (all_of(rule).clearance(fact) is not None)


def decisions(fact: Facts, *found: Clearance | Failures) -> list[dict[str, Any]]:
    """Return the decisions (but their ids) the guard builds of each of *found* for *fact*."""
    [snapshot] = StaticFetcher({fact.currency: str(fact.available)}).fetch(fact.currency)
    request = Request(fact.amount, fact.currency, fact.fee, None, None)
    on: dict[str, Any] = {
        "mode": "enforce", "provider": "static", "balance": snapshot, "reserved": fact.reserved,
        "now": time.time(),
        "judged": _judge.JudgedOn(fact.age_seconds, "cached", fact.own_in_flight),
    }
    return [
        (_judge.from_clearance(request, one, **on) if isinstance(one, Clearance)
         else _judge.from_failures(request, one, **on)).model_dump(exclude={"decision_id"})
        for one in found
    ]


@given(judged(any_of_ok=True))
def test_the_guard_decides_the_same_with_or_without_verdicts(case: tuple[Facts, RuleSet]) -> None:
    """from_clearance and from_failures build the same decision (but its id) for a clean pass."""
    fact, rules = case
    clearance = rules.clearance(fact)
    assume(clearance is not None)
    assert clearance is not None
    fast, full = decisions(fact, clearance, _judge.failures_of(rules.evaluate(fact)))
    assert full == fast


Shown = list[tuple[object, ...]]


def leaves(verdicts: Iterable[Verdict]) -> tuple[Shown, Shown]:
    """Return what a decision shows of *verdicts*: its denial leaves and its warning leaves."""

    def shown(leaf: Verdict) -> tuple[object, ...]:
        return (leaf.rule, leaf.code, leaf.message, leaf.retryable, dict(leaf.details))

    verdicts = list(verdicts)
    return ([shown(leaf) for v in verdicts for leaf in v.denials()],
            [shown(leaf) for v in verdicts for leaf in v.warnings()])


class TestFailures:
    """RuleSet.failures: only the members that deny or warn explain themselves."""

    @given(judged(any_of_ok=False))
    def test_it_reports_what_evaluate_reports_at_every_bound(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        fact, rules = case
        # Built-ins, scoped or not, say their bounds are their verdicts' (a scoped set does not).
        assume(rules.failures(fact) is not None)
        for amount in probe_amounts(rules.evaluate(fact), fact):
            at = replace(fact, amount=amount)
            verdict = rules.evaluate(at)
            failures = rules.failures(at)
            assert failures is not None
            assert Clearance(verdict.floor, verdict.cap, largest_reserve(verdict)) == (
                failures.clearance), amount
            assert leaves([verdict]) == leaves(failures.verdicts), amount
            assert all(not v.passed for v in failures.verdicts)

    @given(judged(any_of_ok=False))
    def test_the_callers_decimal_context_changes_nothing(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        """Built-ins compute in MONEY_CONTEXT: the guard asks for failures outside a money block.

        A caller's 3-digit, rounding-up context changes no verdict, bound or word.
        """
        fact, rules = case
        assume(rules.failures(fact) is not None)
        for amount in probe_amounts(rules.evaluate(fact), fact):
            at = replace(fact, amount=amount)
            with localcontext() as ctx:
                ctx.prec = 3
                ctx.rounding = ROUND_UP
                ctx.clear_traps()
                # A fresh set: nothing it remembers was worked out in the other context.
                low = RuleSet(rules.rules).failures(at)
            assert RuleSet(rules.rules).failures(at) == low, amount

    @given(judged(any_of_ok=True))
    def test_the_guard_decides_the_same_from_failures_as_from_every_verdict(
        self, case: tuple[Facts, RuleSet]
    ) -> None:
        fact, rules = case
        failures = rules.failures(fact)
        assume(failures is not None)
        assert failures is not None
        sparse, full = decisions(fact, failures, _judge.failures_of(rules.evaluate(fact)))
        assert full == sparse

    def test_a_denial_asks_only_the_members_that_deny(self) -> None:
        """Of three rules, the one that denies is the one asked for its verdict."""
        fact = brl(amount="600.00", available="1000.00")
        rules = RuleSet([MaxPayout({"BRL": "500"}), SufficientFunds(), ReserveMargin(percent="5")])
        failures = rules.failures(fact)
        assert failures is not None
        assert ["max_payout"] == [v.rule for v in failures.verdicts]
        assert Clearance(None, D("500.00"), D("50.00")) == failures.clearance

    def test_without_known_bounds_it_leaves_the_verdicts_to_evaluate(self) -> None:
        """A rule of your own, or any_of: which members deny is not known without asking."""
        fact = brl(amount="600.00", available="1000.00")
        assert RuleSet([AtMost(D("500"))]).failures(fact) is None
        either = any_of(MaxPayout({"BRL": "500"}), SufficientFunds())
        assert RuleSet([either]).failures(fact) is None
