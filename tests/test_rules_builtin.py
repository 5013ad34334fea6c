"""Tests for the built-in rules: exact boundaries, reasons, caps and floors, validation."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rules import (
    ConfigurationError,
    CurrencyMinimums,
    Facts,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    SufficientFunds,
    Verdict,
    when,
)
from tests.rules_contract import check_contract
from tests.strategies import builtin_rules, currencies, facts

D = Decimal


def make(amount: str, currency: str = "BRL", available: str = "1000.00", **more: object) -> Facts:
    fields: dict[str, object] = {
        "amount": D(amount), "currency": currency, "available": D(available),
    }
    money = {"fee", "frozen", "total", "reserved"}
    fields.update({k: D(v) if k in money and isinstance(v, str) else v for k, v in more.items()})
    return Facts(**fields)  # type: ignore[arg-type] # keyword values built above


def judge(rule: Rule, facts: Facts, amount: str) -> Verdict:
    return rule.evaluate(replace(facts, amount=D(amount)))


class TestContract:
    @given(st.data())
    def test_every_builtin_passes_exactly_floor_to_cap(self, data: st.DataObject) -> None:
        """Each built-in allows an amount iff floor <= amount <= cap (cap 0: none at all)."""
        code = data.draw(currencies())
        rule = data.draw(builtin_rules(code))
        check_contract(rule, data.draw(facts(code)))

    @given(st.data())
    def test_builtins_are_pure(self, data: st.DataObject) -> None:
        """The same facts always give an equal verdict."""
        code = data.draw(currencies())
        rule, fact = data.draw(builtin_rules(code)), data.draw(facts(code))
        assert rule.evaluate(fact) == rule.evaluate(fact)

    @given(builtin_rules())
    def test_builtins_are_hashable_values(self, rule: Rule) -> None:
        """Built-ins hash and compare by value, so rule sets can be compared and cached."""
        assert {rule} == {replace(rule)}  # type: ignore[type-var] # every built-in is a dataclass

    def test_tables_are_read_only(self) -> None:
        """A rule's amount table cannot be changed after validation."""
        rule = MaxPayout({"BRL": "10"})
        with pytest.raises(TypeError):
            rule.limits["BRL"] = D(1_000_000)  # type: ignore[index] # read-only on purpose


class TestSufficientFunds:
    facts = make("0.01", available="1000.00", reserved="300.00")

    def test_boundary_is_spendable(self) -> None:
        """700.00 of 1000.00 available with 300.00 held passes; 700.01 is denied."""
        rule = SufficientFunds()
        assert (True, False) == (
            judge(rule, self.facts, "700.00").passed, judge(rule, self.facts, "700.01").passed
        )

    def test_denial_carries_the_numbers(self) -> None:
        """The denial names what was needed, what was spendable and the shortfall."""
        verdict = judge(SufficientFunds(), self.facts, "800.00")
        assert (
            "insufficient_funds", True, D("700.00"),
            (
                "needs 800.00 BRL but only 700.00 BRL spendable (available 1000.00 - held "
                "300.00); short by 100.00 BRL"
            ),
        ) == (verdict.code, verdict.retryable, verdict.cap, verdict.message)
        assert {"available": D("1000.00"), "reserved": D("300.00"), "spendable": D("700.00"),
                "required": D("800.00"), "shortfall": D("100.00")} == dict(verdict.details)

    def test_fee_comes_out_of_the_same_balance(self) -> None:
        """With a 2.50 fee on 100.00, the cap is 97.50 and the message shows the fee."""
        facts = make("97.51", available="100.00", fee="2.50")
        verdict = SufficientFunds().evaluate(facts)
        assert (D("97.50"), False) == (verdict.cap, verdict.passed)
        assert "needs 100.01 BRL (amount 97.51 + fee 2.50)" in verdict.message

    def test_cap_never_goes_below_zero(self) -> None:
        """When the fee alone exceeds the balance, the cap is 0, not negative."""
        assert D(0) == SufficientFunds().evaluate(make("1.00", available="1.00", fee="2.00")).cap

    @pytest.mark.parametrize(
        ("currency", "available", "fee", "cap"),
        [("CLP", "1500", "0", "1500"), ("KWD", "1.500", "0.001", "1.499"), ("JPY", "0", "0", "0")],
    )
    def test_cap_at_the_currency_exponent(
        self, currency: str, available: str, fee: str, cap: str
    ) -> None:
        """Caps are exact at 0 and 3 decimal places too."""
        facts = make("1", currency=currency, available=available, fee=fee)
        assert D(cap) == SufficientFunds().evaluate(facts).cap


class TestReserveMargin:
    rule = ReserveMargin(percent="5", minimum={"ARS": "1000.00"})

    def test_minimum_wins_over_a_smaller_percentage(self) -> None:
        """On 10000.00 ARS, 5% is 500.00, so the 1000.00 minimum is kept: cap 9000.00."""
        facts = make("9000.00", currency="ARS", available="10000.00")
        verdict = self.rule.evaluate(facts)
        assert (True, D("9000.00"), D("1000.00")) == (
            verdict.passed, verdict.cap, self.rule.reserve_for(facts)
        )

    def test_one_unit_into_the_reserve_is_denied_with_numbers(self) -> None:
        """9000.01 ARS would leave 999.99 of the 1000.00 reserve: denied, retryable."""
        facts = make("9000.01", currency="ARS", available="10000.00")
        verdict = self.rule.evaluate(facts)
        assert ("reserve_margin", True, D("9000.00")) == (
            verdict.code, verdict.retryable, verdict.cap
        )
        assert (
            "paying 9000.01 ARS would leave 999.99 ARS of 10000.00 ARS spendable, below the "
            "reserve of 1000.00 ARS"
        ) == verdict.message
        details = verdict.details
        assert (D("0.01"), D("1000.00")) == (details["shortfall"], details["reserve"])

    def test_passing_verdict_says_what_was_kept(self) -> None:
        """A pass still reports the reserve, so the guard can show it."""
        verdict = self.rule.evaluate(make("10.00", currency="ARS", available="10000.00"))
        assert (True, D("1000.00"), D("9990.00")) == (
            verdict.passed, verdict.details["reserve"], verdict.details["remaining"]
        )

    def test_percentage_wins_when_larger(self) -> None:
        """On 100000.00 ARS, 5% (5000.00) beats the minimum: cap 95000.00."""
        facts = make("1.00", currency="ARS", available="100000.00")
        assert D("95000.00") == self.rule.evaluate(facts).cap

    def test_percentage_is_rounded_up_to_the_unit(self) -> None:
        """5% of 10.01 BRL is 0.5005, kept as 0.51, so the cap is 9.50."""
        rule = ReserveMargin(percent="5")
        facts = make("9.50", available="10.01")
        assert (D("0.51"), D("9.50"), True) == (
            rule.reserve_for(facts), rule.evaluate(facts).cap, rule.evaluate(facts).passed
        )

    def test_a_percentage_of_34_digits_is_kept_exactly(self) -> None:
        """5.000000000000000000000000000000001% of 2000.00 is 100.00 and a bit: 100.01 kept."""
        rule = ReserveMargin(percent="5.000000000000000000000000000000001")
        facts = make("1900.00", available="2000.00")
        verdict = rule.evaluate(facts)
        assert (D("100.01"), D("1899.99"), False) == (
            rule.reserve_for(facts), verdict.cap, verdict.passed
        )

    def test_total_basis_falls_back_to_available(self) -> None:
        """basis='total' takes the provider's total, or available when it sends none."""
        rule = ReserveMargin(percent="10", basis="total")
        with_total = make("1.00", available="1000.00", total="3000.00")
        without = make("1.00", available="1000.00")
        assert (D("300.00"), D("100.00")) == (
            rule.reserve_for(with_total), rule.reserve_for(without)
        )

    def test_unlisted_currency_keeps_no_minimum(self) -> None:
        """A minimum-only rule keeps nothing in a currency it does not list, and so never denies.

        Whether the funds suffice there is SufficientFunds' question alone: no second reason.
        """
        rule = ReserveMargin(minimum={"ARS": "1000.00"})
        verdict = rule.evaluate(make("5000.00"))
        assert (True, None, D("0")) == (verdict.passed, verdict.cap, verdict.details["reserve"])

    def test_holds_and_fee_reduce_the_cap(self) -> None:
        """The cap is spendable - reserve - fee."""
        facts = make("1.00", currency="ARS", available="10000.00", reserved="2000.00", fee="10.00")
        assert D("6990.00") == self.rule.evaluate(facts).cap

    @pytest.mark.parametrize(
        ("kwargs", "path", "message"),
        [
            ({}, "", "needs percent, minimum or both"),
            ({"percent": "100"}, "percent", "must be below 100, got 100"),
            ({"percent": -1}, "percent", "must be at least 0"),
            ({"percent": "-1"}, "percent", "not an amount: write ASCII digits"),
            ({"percent": 5.5}, "percent", r"5\.5 is a float.*quote it \('5\.5'\)"),
            ({"percent": "five"}, "percent", "'five' is not an amount"),
            ({"percent": "5", "basis": "balance"}, "basis", "must be 'available' or 'total'"),
            ({"minimum": {"XYZ": "1"}}, "minimum.XYZ", "unknown currency 'XYZ'"),
            ({"minimum": {"BRL": "1.001"}}, "minimum.BRL", "more decimal places than BRL"),
            ({"minimum": {"CLP": "1.5"}}, "minimum.CLP", "more decimal places than CLP"),
            ({"minimum": {"BRL": -1}}, "minimum.BRL", "must be at least 0"),
            ({"minimum": {"brl": "1", "BRL": "2"}}, "minimum.BRL", "BRL is listed more than once"),
            ({"minimum": ["BRL"]}, "minimum", "expected a table of currency -> amount"),
            ({"percent": "5.0000000000000000000000000000000001"}, "percent",
             "has 35 digits written out; at most 34"),
            ({"percent": D("1E-999999999")}, "percent", "has 1000000000 digits written out"),
        ],
    )
    def test_bad_configuration_names_the_field(
        self, kwargs: dict[str, object], path: str, message: str
    ) -> None:
        """Every bad parameter raises ConfigurationError at construction, naming its path."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            ReserveMargin(**kwargs)  # type: ignore[arg-type] # wrong on purpose
        assert path == caught.value.path


class TestFrozenFunds:
    rule = FrozenFunds(max_ratio="0.5")

    def test_ratio_at_the_limit_passes(self) -> None:
        """500 frozen of 1000 total is exactly 0.5: allowed, no bound."""
        verdict = self.rule.evaluate(make("1.00", available="500.00", frozen="500.00"))
        assert (True, None) == (verdict.passed, verdict.cap)

    def test_ratio_above_the_limit_denies_everything(self) -> None:
        """600 frozen of 1000 (0.6 > 0.5) denies every payout: cap 0, retryable."""
        facts = make("1.00", available="400.00", frozen="600.00", provider="luxtak")
        verdict = self.rule.evaluate(facts)
        assert ("frozen_funds", True, D(0), D("0.6000")) == (
            verdict.code, verdict.retryable, verdict.cap, verdict.details["ratio"]
        )
        assert (
            "600.00 BRL of 1000.00 BRL is frozen (ratio 0.6000 > 0.5); withdrawals may be "
            "stuck at luxtak"
        ) == verdict.message

    def test_shown_ratio_is_rounded_up(self) -> None:
        """A ratio just above the limit never shows as equal to it."""
        rule = FrozenFunds(max_ratio="0.3333")
        verdict = rule.evaluate(make("1.00", available="2.00", frozen="1.00"))
        assert "ratio 0.3334 > 0.3333" in verdict.message

    def test_a_ratio_just_above_the_limit_denies_however_large_the_balance(self) -> None:
        """3e33 frozen of 9999...9 (34 digits) CLP is 0.3 and 3e-35 more: above 0.3, denied."""
        total = D("9" * 34)
        frozen = D("3" + "0" * 33)
        facts = Facts(amount=D(1), currency="CLP", available=total - frozen, frozen=frozen,
                      total=total)
        verdict = FrozenFunds(max_ratio="0.3").evaluate(facts)
        assert (False, "frozen_funds", D(0)) == (verdict.passed, verdict.code, verdict.cap)

    def test_reported_total_is_used(self) -> None:
        """The provider's total, when sent, is the denominator."""
        facts = make("1.00", available="400.00", frozen="600.00", total="2000.00")
        assert self.rule.evaluate(facts).passed

    def test_frozen_money_in_an_empty_total_counts_as_all_frozen(self) -> None:
        """Frozen funds with a total of zero fail closed (ratio 1)."""
        facts = make("1.00", available="0.00", frozen="5.00", total="0.00")
        assert (False, True) == (
            self.rule.evaluate(facts).passed, FrozenFunds(max_ratio="1").evaluate(facts).passed
        )

    @pytest.mark.parametrize(
        ("when_unknown", "passed", "denies", "severity", "cap"),
        [
            ("allow", True, False, "deny", None),
            ("warn", False, False, "warn", None),
            ("deny", False, True, "deny", D(0)),
        ],
    )
    def test_unreported_frozen_funds(
        self, when_unknown: str, passed: bool, denies: bool, severity: str, cap: object
    ) -> None:
        """when_unknown decides when the provider reports no frozen funds; never retryable."""
        rule = FrozenFunds(max_ratio="0.5", when_unknown=when_unknown)  # type: ignore[arg-type]
        verdict = rule.evaluate(make("1.00", provider="pagsmile"))
        assert (passed, denies, severity, cap, False) == (
            verdict.passed, verdict.denies, verdict.severity, verdict.cap, verdict.retryable
        )
        if not passed:
            assert (
                "pagsmile does not report frozen funds for BRL, so stuck withdrawals cannot be "
                "ruled out"
            ) == verdict.message

    def test_without_a_ratio_reported_funds_pass(self) -> None:
        """With no max_ratio, any reported frozen amount passes."""
        assert FrozenFunds().evaluate(make("1.00", available="0.00", frozen="9.00")).passed

    @pytest.mark.parametrize(
        ("kwargs", "path", "message"),
        [
            ({"max_ratio": "1.5"}, "max_ratio", "must be at most 1"),
            ({"max_ratio": Decimal("-0.1")}, "max_ratio", "must be at least 0"),
            ({"max_ratio": 0.5}, "max_ratio", "is a float"),
            ({"when_unknown": "ignore"}, "when_unknown", "must be 'allow', 'warn' or 'deny'"),
        ],
    )
    def test_bad_configuration_names_the_field(
        self, kwargs: dict[str, object], path: str, message: str
    ) -> None:
        """Every bad parameter raises ConfigurationError at construction, naming its path."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            FrozenFunds(**kwargs)  # type: ignore[arg-type] # wrong on purpose
        assert path == caught.value.path


class TestCurrencyMinimums:
    rule = CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"})
    facts = make("1.00", currency="ARS", available="1000.00")

    def test_minimum_payout_boundary(self) -> None:
        """100.00 ARS passes, 99.99 is below_minimum_payout (not retryable), floor 100.00."""
        low = judge(self.rule, self.facts, "99.99")
        assert (True, False, "below_minimum_payout", False, D("100.00")) == (
            judge(self.rule, self.facts, "100.00").passed, low.passed, low.code, low.retryable,
            low.floor,
        )
        assert "99.99 ARS is below the minimum payout of 100.00 ARS" == low.message

    def test_minimum_remaining_boundary(self) -> None:
        """With 1000.00 spendable and 500.00 to keep, 500.00 passes and 500.01 is denied."""
        high = judge(self.rule, self.facts, "500.01")
        assert (True, False, "min_remaining_balance", True, D("500.00")) == (
            judge(self.rule, self.facts, "500.00").passed, high.passed, high.code,
            high.retryable, high.cap,
        )
        assert (
            "paying 500.01 ARS would leave 499.99 ARS, below the minimum balance of 500.00 ARS"
        ) == high.message

    def test_both_failing_reports_both(self) -> None:
        """Below the minimum and eating the balance: two reasons, the first one's code."""
        facts = make("50.00", currency="ARS", available="520.00")
        verdict = self.rule.evaluate(facts)
        codes = ["below_minimum_payout", "min_remaining_balance"]
        assert ("below_minimum_payout", False, codes) == (
            verdict.code, verdict.retryable, [d.code for d in verdict.denials()]
        )

    def test_cap_is_zero_when_even_the_minimum_does_not_fit(self) -> None:
        """With 550.00 spendable, keeping 500.00 leaves 50.00 < the 100.00 minimum: cap 0."""
        verdict = judge(self.rule, make("1.00", currency="ARS", available="550.00"), "100.00")
        assert (D(0), D("100.00"), False) == (verdict.cap, verdict.floor, verdict.passed)

    def test_unlisted_currency_is_not_limited(self) -> None:
        """A currency absent from both tables passes without bounds."""
        verdict = self.rule.evaluate(make("0.01"))
        assert (True, None, None) == (verdict.passed, verdict.floor, verdict.cap)

    def test_zero_decimal_currency(self) -> None:
        """CLP minimums are whole pesos."""
        rule = CurrencyMinimums(min_payout={"CLP": "1000"})
        facts = make("999", currency="CLP", available="5000")
        assert (False, True) == (
            judge(rule, facts, "999").passed, judge(rule, facts, "1000").passed
        )

    @pytest.mark.parametrize(
        ("kwargs", "path", "message"),
        [
            ({}, "", "needs min_payout, min_remaining or both"),
            ({"min_payout": {"ARS": "x"}}, "min_payout.ARS", "not an amount"),
            ({"min_remaining": {"KWD": "0.0001"}}, "min_remaining.KWD", "more decimal places"),
            ({"min_remaining": {"EURO": "1"}}, "min_remaining.EURO", "unknown currency"),
        ],
    )
    def test_bad_configuration_names_the_field(
        self, kwargs: dict[str, object], path: str, message: str
    ) -> None:
        """Every bad parameter raises ConfigurationError at construction, naming its path."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            CurrencyMinimums(**kwargs)  # type: ignore[arg-type] # wrong on purpose
        assert path == caught.value.path


class TestMaxPayout:
    rule = MaxPayout({"BRL": "5000", "JPY": "100000"})

    def test_boundary(self) -> None:
        """5000.00 BRL passes; 5000.01 is above_maximum_payout, not retryable; cap 5000.00."""
        facts = make("1.00")
        high = judge(self.rule, facts, "5000.01")
        assert (True, False, "above_maximum_payout", False, D("5000.00")) == (
            judge(self.rule, facts, "5000.00").passed, high.passed, high.code, high.retryable,
            high.cap,
        )
        assert "5000.01 BRL is above the maximum payout of 5000.00 BRL" == high.message

    def test_zero_decimal_limit(self) -> None:
        """JPY limits are whole yen."""
        facts = make("100001", currency="JPY", available="0")
        verdict = self.rule.evaluate(facts)
        assert (False, D("100000")) == (verdict.passed, verdict.cap)

    def test_unlisted_currency_is_not_limited(self) -> None:
        """A currency without a limit passes with no cap."""
        verdict = self.rule.evaluate(make("999999.99", currency="MXN"))
        assert (True, None) == (verdict.passed, verdict.cap)

    @pytest.mark.parametrize(
        ("limits", "path", "message"),
        [
            ({}, "limits", "needs at least one currency limit"),
            ({"BRL": "5000.001"}, "limits.BRL", "more decimal places than BRL"),
            ({"BRL": 5000.0}, "limits.BRL", "is a float"),
            ({"US$": "1"}, "limits.US$", "unknown currency"),
        ],
    )
    def test_bad_configuration_names_the_field(
        self, limits: dict[str, object], path: str, message: str
    ) -> None:
        """Every bad limit raises ConfigurationError at construction, naming its path."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            MaxPayout(limits)  # type: ignore[arg-type] # wrong on purpose
        assert path == caught.value.path


class TestMaxBalanceAge:
    rule = MaxBalanceAge(30)

    @pytest.mark.parametrize(
        ("age", "passed"),
        [
            (30.0, True), (30, True), (D("30.000"), True), (30.0004, False), (31, False),
            (-2.0, True),
        ],
    )
    def test_boundary_is_exact(self, age: object, passed: bool) -> None:
        """A balance exactly 30s old passes; any older is stale, however little."""
        assert passed == self.rule.evaluate(make("1.00", age_seconds=age)).passed

    def test_stale_denial_carries_the_numbers(self) -> None:
        """The denial is stale_balance, retryable, cap 0, the age rounded up to the ms."""
        verdict = self.rule.evaluate(make("1.00", age_seconds=30.0004, provider="luxcore"))
        assert ("stale_balance", True, D(0), D("30.001"), D(30)) == (
            verdict.code, verdict.retryable, verdict.cap, verdict.details["age_seconds"],
            verdict.details["max_age_seconds"],
        )
        assert (
            "the BRL balance from luxcore is 30.001s old, older than the 30s allowed"
        ) == verdict.message

    def test_unknown_age_is_stale(self) -> None:
        """A NaN age fails closed."""
        verdict = self.rule.evaluate(make("1.00", age_seconds=math.nan))
        assert (False, True) == (verdict.passed, "unknown age" in verdict.message)

    def test_float_age_compares_as_written(self) -> None:
        """0.1 seconds is not older than a limit of '0.1' seconds."""
        assert MaxBalanceAge("0.1").evaluate(make("1.00", age_seconds=0.1)).passed

    def test_default_is_sixty_seconds(self) -> None:
        """Without arguments the limit is 60 seconds."""
        assert D(60) == MaxBalanceAge().seconds

    @pytest.mark.parametrize(
        ("seconds", "message"), [
            (-1, "must be at least 0"), (1.5, "is a float"), ("soon", "not a"),
            (D("1E+999999999"), "has 1000000000 digits written out; at most 34"),
        ]
    )
    def test_bad_configuration_names_the_field(self, seconds: object, message: str) -> None:
        """A bad limit raises ConfigurationError naming 'seconds'."""
        with pytest.raises(ConfigurationError, match=message) as caught:
            MaxBalanceAge(seconds)  # type: ignore[arg-type] # wrong on purpose
        assert "seconds" == caught.value.path


class TestLongBadValues:
    @pytest.mark.parametrize("make_rule", [
        lambda: ReserveMargin(percent="5", basis="x" * 5000),  # type: ignore[arg-type] # wrong on purpose
        lambda: FrozenFunds(when_unknown="x" * 5000),  # type: ignore[arg-type] # wrong on purpose
        lambda: when(SufficientFunds(), provider=["luxtak", " " * 5000]),
    ], ids=["basis", "when_unknown", "provider"])
    def test_are_quoted_at_most_60_characters(self, make_rule: Callable[[], Rule]) -> None:
        """A 5,000-character wrong value is named by its first characters, not whole."""
        with pytest.raises(ConfigurationError) as caught:
            make_rule()
        assert len(str(caught.value)) < 200
