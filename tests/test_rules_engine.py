"""Tests for rules._engine: RuleSet, all_of, any_of, when, and the [floor, cap] contract."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, replace
from decimal import ROUND_UP, Decimal, Inexact, Rounded, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import (
    AnyOf,
    ConfigurationError,
    CurrencyMinimums,
    Facts,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    RuleSet,
    SufficientFunds,
    Verdict,
    When,
    all_of,
    any_of,
    when,
)
from rules.money import smallest_unit
from tests._facts import brl
from tests.rules_contract import check_contract
from tests.strategies import CURRENCIES, builtin_rules, currencies, facts, rule_trees

D = Decimal


def payable(verdict: Verdict, currency: str) -> tuple[Decimal, Decimal | None] | None:
    """Return the payable range a verdict reports, normalized: None when nothing is payable."""
    unit = smallest_unit(currency)
    low = unit if verdict.floor is None else max(verdict.floor, unit)
    if verdict.cap is not None and verdict.cap < low:
        return None
    return low, verdict.cap


def same_judgement(a: Verdict, b: Verdict, currency: str) -> bool:
    return (a.denies, payable(a, currency)) == (b.denies, payable(b, currency))


@st.composite
def case(draw: st.DrawFn, rules: int = 1) -> tuple[Facts, list[Rule]]:
    code = draw(currencies())
    return draw(facts(code)), [draw(rule_trees(code)) for _ in range(rules)]


class TestContract:
    @given(st.data())
    def test_compositions_without_any_of_pass_exactly_floor_to_cap(
        self, data: st.DataObject
    ) -> None:
        """all_of/when compositions of built-ins allow an amount iff floor <= amount <= cap."""
        code = data.draw(currencies())
        check_contract(data.draw(rule_trees(code, any_of_ok=False)), data.draw(facts(code)))

    @given(st.data())
    def test_any_compositions_report_the_exact_smallest_and_largest_amount(
        self, data: st.DataObject
    ) -> None:
        """With any_of too, allowed amounts lie in [floor, cap] and floor and cap are allowed."""
        code = data.draw(currencies())
        rule = data.draw(rule_trees(code))
        check_contract(rule, data.draw(facts(code)), exact=False)

    def test_any_of_may_leave_a_hole_between_its_alternatives(self) -> None:
        """any_of(max 100, min 500) allows 100 and 500 but not 300; floor/cap cannot say so."""
        rule = any_of(MaxPayout({"BRL": "100"}), CurrencyMinimums(min_payout={"BRL": "500"}))
        verdicts = [rule.evaluate(brl(a)) for a in ("100.00", "300.00", "500.00")]
        assert [True, False, True] == [v.passed for v in verdicts]
        assert (None, None) == (verdicts[1].floor, verdicts[1].cap)

    def test_cap_is_exact_when_a_hole_sits_inside_all_of(self) -> None:
        """all_of(any_of(<=100, >=500), <=300) allows at most 100.00, not 300.00."""
        rule = all_of(
            any_of(MaxPayout({"BRL": "100"}), CurrencyMinimums(min_payout={"BRL": "500"})),
            MaxPayout({"BRL": "300"}),
        )
        verdict = rule.evaluate(brl("300.00"))
        assert (False, D("100.00"), None) == (verdict.passed, verdict.cap, verdict.floor)
        assert rule.evaluate(brl("100.00")).passed

    def test_empty_intersection_reports_cap_zero(self) -> None:
        """A minimum above a maximum allows nothing: cap 0."""
        rule = all_of(MaxPayout({"BRL": "50"}), CurrencyMinimums(min_payout={"BRL": "100"}))
        verdict = rule.evaluate(brl("75.00"))
        assert (False, D(0), None) == (verdict.passed, verdict.cap, verdict.floor)

    def test_contract_breaking_custom_rule_fails_closed(self) -> None:
        """A custom rule that denies inside its own bounds makes the cap 0, not its claim."""

        @dataclass(frozen=True)
        class Liar:
            name: str = "liar"

            def evaluate(self, facts: Facts) -> Verdict:  # noqa: ARG002 - the protocol's
                return Verdict(rule="liar", passed=False, code="no", cap=D("1000.00"))

        verdict = all_of(Liar(), SufficientFunds()).evaluate(brl("10.00"))
        assert (False, D(0)) == (verdict.passed, verdict.cap)


class TestAllOf:
    @given(case(rules=3))
    def test_nested_sets_flatten(self, drawn: tuple[Facts, list[Rule]]) -> None:
        """all_of(a, all_of(b, c)) is all_of(a, b, c), and judges the same."""
        fact, (a, b, c) = drawn
        nested, flat = all_of(a, all_of(b, c)), all_of(a, b, c)
        assert flat == nested
        assert same_judgement(flat.evaluate(fact), nested.evaluate(fact), fact.currency)

    @given(case(rules=3), st.data())
    def test_order_does_not_change_the_answer(
        self, drawn: tuple[Facts, list[Rule]], data: st.DataObject
    ) -> None:
        """all_of is commutative for allowed/denied and for the payable range."""
        fact, rules = drawn
        shuffled = data.draw(st.permutations(rules))
        assert same_judgement(
            all_of(*rules).evaluate(fact), all_of(*shuffled).evaluate(fact), fact.currency
        )

    @given(facts())
    def test_empty_set_allows_everything(self, fact: Facts) -> None:
        """all_of() passes any facts, without bounds."""
        verdict = all_of().evaluate(fact)
        assert (True, None, None, "") == (verdict.passed, verdict.floor, verdict.cap, verdict.code)

    def test_denial_joins_the_leaf_reasons(self) -> None:
        """A denial takes the first leaf's code and joins every leaf message."""
        rule = all_of(SufficientFunds(), MaxPayout({"BRL": "100"}))
        verdict = rule.evaluate(brl("2000.00"))
        assert ("insufficient_funds", ["insufficient_funds", "above_maximum_payout"]) == (
            verdict.code, [d.code for d in verdict.denials()]
        )
        assert verdict.message.endswith("; 2000.00 BRL is above the maximum payout of 100.00 BRL")

    def test_retryable_only_when_every_denial_is(self) -> None:
        """Retrying helps an all_of only if each of its denials can clear by itself."""
        funds_only = all_of(SufficientFunds(), MaxPayout({"BRL": "5000"})).evaluate(brl("2000.00"))
        both = all_of(SufficientFunds(), MaxPayout({"BRL": "100"})).evaluate(brl("2000.00"))
        assert (True, False) == (funds_only.retryable, both.retryable)

    def test_warnings_do_not_deny(self) -> None:
        """A warn-only member leaves the set passing; the warning is still reported."""
        rule = all_of(FrozenFunds(when_unknown="warn"), SufficientFunds())
        verdict = rule.evaluate(brl("10.00"))
        assert (True, ["frozen_funds"]) == (verdict.passed, [w.code for w in verdict.warnings()])

    def test_names_and_repr(self) -> None:
        """A set is named after its members."""
        rule = RuleSet([SufficientFunds(), MaxPayout({"BRL": "1"})])
        assert ("all_of(sufficient_funds, max_payout)", 2) == (rule.name, len(rule))
        assert "all_of(SufficientFunds(), MaxPayout(limits={'BRL': Decimal('1.00')}))" == repr(rule)

    def test_members_must_be_rules(self) -> None:
        """Something without name/evaluate is refused, naming its position."""
        with pytest.raises(ConfigurationError, match="got str") as caught:
            RuleSet([SufficientFunds(), "max_payout"])  # type: ignore[list-item]
        assert "rules[1]" == caught.value.path

    def test_a_single_rule_must_be_wrapped_in_a_list(self) -> None:
        """RuleSet(rule) says to pass a list."""
        with pytest.raises(ConfigurationError, match=r"wrap a single rule in a list"):
            RuleSet(SufficientFunds())  # type: ignore[arg-type]

    def test_sets_are_hashable_values(self) -> None:
        """Equal sets hash equally, so they can key caches."""
        first = all_of(ReserveMargin(percent="5"), MaxPayout({"BRL": "9"}))
        second = all_of(ReserveMargin(percent="5.0"), MaxPayout({"brl": "9.00"}))
        assert {first} == {second}


class TestAnyOf:
    @given(case())
    def test_any_of_one_judges_like_it(self, drawn: tuple[Facts, list[Rule]]) -> None:
        """any_of(a) allows and denies what a does, with the same payable range."""
        fact, (rule,) = drawn
        assert same_judgement(rule.evaluate(fact), any_of(rule).evaluate(fact), fact.currency)

    @given(case(rules=3))
    def test_nested_any_of_flattens(self, drawn: tuple[Facts, list[Rule]]) -> None:
        """any_of(a, any_of(b, c)) is any_of(a, b, c), and judges the same."""
        fact, (a, b, c) = drawn
        nested, flat = any_of(a, any_of(b, c)), any_of(a, b, c)
        assert flat == nested
        assert same_judgement(flat.evaluate(fact), nested.evaluate(fact), fact.currency)

    @given(case(rules=2))
    def test_order_does_not_change_the_answer(self, drawn: tuple[Facts, list[Rule]]) -> None:
        """any_of is commutative for allowed/denied and for the payable range."""
        fact, (a, b) = drawn
        forward, backward = any_of(a, b).evaluate(fact), any_of(b, a).evaluate(fact)
        assert same_judgement(forward, backward, fact.currency)

    def test_passes_when_one_alternative_passes(self) -> None:
        """One passing alternative is enough."""
        rule = any_of(MaxPayout({"BRL": "10"}), MaxBalanceAge(60))
        assert rule.evaluate(brl("50.00")).passed

    def test_retryable_when_one_alternative_is(self) -> None:
        """Retrying helps an any_of as soon as one alternative can clear."""
        rule = any_of(MaxPayout({"BRL": "10"}), MaxBalanceAge(60))
        verdict = rule.evaluate(brl("50.00", age_seconds=90))
        assert (False, True, "above_maximum_payout") == (
            verdict.passed, verdict.retryable, verdict.code
        )

    def test_empty_any_of_is_refused(self) -> None:
        """any_of() would deny everything, so it is a configuration error."""
        with pytest.raises(ConfigurationError, match="at least one rule"):
            any_of()

    def test_members_must_be_rules(self) -> None:
        """Something without name/evaluate is refused, naming its position."""
        with pytest.raises(ConfigurationError) as caught:
            AnyOf([SufficientFunds(), 3])  # type: ignore[list-item]
        assert "rules[1]" == caught.value.path


class TestWhen:
    @given(facts(), builtin_rules(), st.sampled_from(CURRENCIES))
    def test_outside_its_currencies_it_passes(self, fact: Facts, rule: Rule, other: str) -> None:
        """A rule scoped to other currencies passes without bounds."""
        if other == fact.currency:
            other = "EUR"
        verdict = when(rule, currency=other).evaluate(fact)
        assert (True, None, None) == (verdict.passed, verdict.floor, verdict.cap)

    @given(facts(), builtin_rules())
    def test_inside_its_scope_it_judges_like_the_rule(self, fact: Facts, rule: Rule) -> None:
        """In scope, when(rule) gives the rule's own verdict."""
        scoped = when(rule, currency=fact.currency, provider=[fact.provider.upper()])
        assert rule.evaluate(fact) == scoped.evaluate(fact)

    def test_outside_its_providers_it_passes(self) -> None:
        """A rule scoped to luxtak does not judge a luxcore balance."""
        rule = when(MaxPayout({"BRL": "1"}), provider="luxtak")
        assert (True, False) == (
            rule.evaluate(brl("5.00", provider="luxcore")).passed,
            rule.evaluate(brl("5.00", provider="LuxTak")).passed,
        )

    def test_scoped_rule_reports_as_itself(self) -> None:
        """The name of a scoped rule is the rule's own name."""
        assert "max_payout" == when(MaxPayout({"BRL": "1"}), currency="brl").name

    def test_nested_scopes_merge(self) -> None:
        """when(when(r, currency), provider) is when(r, currency, provider); overlaps intersect."""
        rule = MaxPayout({"BRL": "1"})
        merged = when(when(rule, currency=["BRL", "ARS"]), provider="luxtak", currency="BRL")
        assert When(rule, currency="BRL", provider="luxtak") == merged

    def test_nested_scopes_that_share_nothing_are_refused(self) -> None:
        """A rule that could never apply is a configuration error."""
        with pytest.raises(ConfigurationError, match="share no currency"):
            when(when(SufficientFunds(), currency="BRL"), currency="ARS")

    @pytest.mark.parametrize(
        ("kwargs", "path", "message"),
        [
            ({}, "", "needs currency=..., provider=... or both"),
            ({"currency": []}, "currency", "at least one currency"),
            ({"currency": ["BRL", "XYZ"]}, "currency[1]", "unknown currency 'XYZ'"),
            ({"currency": "REAL"}, "currency", "unknown currency 'REAL'"),
            ({"provider": ["luxtak", ""]}, "provider[1]", "expected a provider name"),
            ({"provider": [7]}, "provider[0]", "expected a provider name"),
        ],
    )
    def test_bad_scope_names_the_field(
        self, kwargs: dict[str, object], path: str, message: str
    ) -> None:
        """A bad scope raises ConfigurationError at construction, naming its path."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            when(SufficientFunds(), **kwargs)  # type: ignore[arg-type]
        assert path == caught.value.path

    def test_only_rules_can_be_scoped(self) -> None:
        """when() refuses something that is not a rule."""
        with pytest.raises(ConfigurationError, match="got int"):
            when(5, currency="BRL")  # type: ignore[arg-type]


class TestTheCallersDecimalContext:
    """Rules judge in the money context: a caller's context changes nothing, raises nothing."""

    @given(case())
    def test_no_verdict_depends_on_a_three_digit_trapping_context(
        self, drawn: tuple[Facts, list[Rule]]
    ) -> None:
        """Precision 3, rounding up, Inexact and Rounded trapped: the same verdict."""
        fact, [rule] = drawn
        expected = rule.evaluate(fact)
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.rounding = ROUND_UP
            ctx.traps[Inexact] = ctx.traps[Rounded] = True
            assert expected == rule.evaluate(fact)

    def test_any_of_with_a_hole_judges_alike(self) -> None:
        """At most 12345.67, or at least 12345.69: 300.00 passes, whatever the context."""
        rule = any_of(MaxPayout({"BRL": "12345.67"}),
                      CurrencyMinimums(min_payout={"BRL": "12345.69"}))
        fact = brl(amount="300.00", available="100000.00")
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.traps[Inexact] = True
            verdict = rule.evaluate(fact)
        assert (True, None, None) == (verdict.passed, verdict.floor, verdict.cap)


class TestPurity:
    @given(case())
    def test_same_facts_same_verdict(self, drawn: tuple[Facts, list[Rule]]) -> None:
        """Evaluating twice, or after judging other amounts, gives an equal verdict."""
        fact, (rule,) = drawn
        first = rule.evaluate(fact)
        rule.evaluate(replace(fact, amount=fact.amount + smallest_unit(fact.currency)))
        assert first == rule.evaluate(fact)

    @given(rule_trees())
    def test_rules_pickle_to_equal_rules(self, rule: Rule) -> None:
        """Rules cross process boundaries unchanged."""
        assert rule == pickle.loads(pickle.dumps(rule))

    @given(builtin_rules())
    def test_rules_are_rules(self, rule: Rule) -> None:
        """Every built-in satisfies the Rule protocol."""
        assert isinstance(rule, Rule)
