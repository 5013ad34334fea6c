"""Tests for rules._facts: the Facts going into rules and the Verdicts coming out."""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import pytest

from rules import Facts, Verdict

D = Decimal


def brl(**overrides: object) -> Facts:
    fields: dict[str, object] = {
        "amount": D("100.00"), "currency": "BRL", "available": D("1000.00"),
    }
    fields.update(overrides)
    return Facts(**fields)  # type: ignore[arg-type] # the tests pass wrong types on purpose


class TestFacts:
    def test_required_is_amount_plus_fee(self) -> None:
        """What a payout debits is its amount plus the provider's fee."""
        assert D("102.50") == brl(fee=D("2.50")).required

    def test_spendable_is_available_minus_holds(self) -> None:
        """What is left to spend is available minus this merchant's in-flight holds."""
        assert D("700.00") == brl(reserved=D("300.00")).spendable

    def test_arithmetic_ignores_the_callers_precision(self) -> None:
        """A low decimal precision set by the application does not round balances."""
        facts = brl(available=D("123456789.01"), reserved=D("0.01"))
        with localcontext() as ctx:
            ctx.prec = 3
            assert D("123456789.00") == facts.spendable

    def test_defaults(self) -> None:
        """Fee, holds, age default to zero; frozen, total and account to unknown."""
        facts = brl()
        assert (D(0), D(0), 0.0, None, None, "", None) == (
            facts.fee, facts.reserved, facts.age_seconds, facts.frozen, facts.total,
            facts.provider, facts.account,
        )

    def test_currency_is_normalized(self) -> None:
        """A lower-case currency is stored upper-case."""
        assert "CLP" == brl(currency="clp", amount=D(100), available=D(500)).currency

    def test_unknown_currency_is_refused(self) -> None:
        """Facts in a currency that does not exist are refused at construction."""
        with pytest.raises(ValueError, match="unknown currency 'XYZ'"):
            brl(currency="XYZ")

    @pytest.mark.parametrize("name", ["amount", "fee", "available", "reserved", "frozen", "total"])
    def test_float_money_is_refused_naming_the_field(self, name: str) -> None:
        """Money must be Decimal; a float is refused with the field's name."""
        with pytest.raises(TypeError, match=rf"Facts\.{name} must be a Decimal, not float"):
            brl(**{name: 10.5})

    def test_non_finite_money_is_refused(self) -> None:
        """NaN and infinite amounts are refused."""
        with pytest.raises(ValueError, match=r"Facts\.available must be a finite amount"):
            brl(available=D("NaN"))

    def test_age_must_be_a_number(self) -> None:
        """The balance age is a number of seconds, not text or bool."""
        with pytest.raises(TypeError, match="age_seconds must be a number of seconds"):
            brl(age_seconds="5")

    @pytest.mark.parametrize("age", [math.nan, D("NaN")])
    def test_unknown_age_counts_as_infinitely_old(self, age: object) -> None:
        """A NaN age becomes infinity, so staleness checks fail closed."""
        assert math.inf == brl(age_seconds=age).age_seconds

    def test_facts_are_frozen_values(self) -> None:
        """Facts are immutable and compare by value."""
        facts = brl()
        with pytest.raises(AttributeError):
            facts.amount = D(1)  # type: ignore[misc] # frozen on purpose
        assert brl() == facts

    def test_trusted_facts_are_the_same_frozen_value(self) -> None:
        """The guard's fast constructor makes a Facts like any other: equal, hashed, frozen."""
        made = Facts.trusted(D("100.00"), "BRL", D("1000.00"), D("2.00"), D("5.00"), None,
                             D("300.00"), 4.0, "luxtak", "acc-1", D("1.00"))
        built = Facts(amount=D("100.00"), currency="BRL", available=D("1000.00"),
                      fee=D("2.00"), frozen=D("5.00"), reserved=D("300.00"), age_seconds=4.0,
                      provider="luxtak", account="acc-1", own_in_flight=D("1.00"))
        assert type(made) is Facts
        assert (made, hash(made), made.spendable) == (built, hash(built), D("700.00"))
        with pytest.raises(AttributeError):
            made.amount = D(1)  # type: ignore[misc] # frozen on purpose
        with pytest.raises(AttributeError):
            del made.currency

    def test_a_subclass_built_by_trusted_runs_its_own_checks(self) -> None:
        """Only Facts itself skips the checks; a subclass is built by its own constructor."""

        class Mine(Facts):
            __slots__ = ()

        made = Mine.trusted(D("1"), "brl", D("5"), D(0), None, None, D(0), 0.0, "", None)
        assert (type(made), made.currency) == (Mine, "BRL")
        with pytest.raises(TypeError, match="amount"):
            Mine.trusted(1.5, "BRL", D("5"), D(0), None, None, D(0), 0.0, "", None)  # type: ignore[arg-type] # the float is the point


class TestVerdict:
    def test_passing_verdict_neither_denies_nor_warns(self) -> None:
        """A passed verdict blocks nothing and yields no denials or warnings."""
        verdict = Verdict(rule="r", passed=True)
        assert (False, [], []) == (
            verdict.denies, list(verdict.denials()), list(verdict.warnings())
        )

    def test_warning_does_not_deny(self) -> None:
        """A failed warn-severity verdict is a warning, not a denial."""
        verdict = Verdict(rule="r", passed=False, code="c", severity="warn")
        assert (False, [verdict]) == (verdict.denies, list(verdict.warnings()))

    def test_denials_and_warnings_come_from_the_leaves(self) -> None:
        """A combinator's denials and warnings are those of its leaf verdicts, in order."""
        deny_a = Verdict(rule="a", passed=False, code="x")
        warn_b = Verdict(rule="b", passed=False, code="y", severity="warn")
        deny_c = Verdict(rule="c", passed=False, code="z")
        inner = Verdict(rule="all_of(b, c)", passed=False, children=(warn_b, deny_c))
        outer = Verdict(rule="all_of(a, b, c)", passed=False, children=(deny_a, inner))
        assert ([deny_a, deny_c], [warn_b]) == (list(outer.denials()), list(outer.warnings()))
