"""PayoutGuard.max_payable and Decision.max_payable: the largest amount allowed now."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from guard import InvalidPayoutRequest, PayoutGuard
from guard.testing import FailingFetcher, StaticFetcher
from rules import (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    any_of,
    when,
)
from tests._guard_strategies import START, FakeClock


def make_guard(balances: dict[str, Any], rules: list[Rule] | None = None) -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher(balances, clock=clock), rules or [], clock=clock)


class TestMaxPayable:
    @pytest.mark.parametrize(
        ("rules", "expected"),
        [
            ([], "1000.00"),
            ([ReserveMargin(percent="10")], "900.00"),
            ([ReserveMargin(percent="5", minimum={"BRL": "100"})], "900.00"),
            ([ReserveMargin(percent="3.333")], "966.67"),
            ([MaxPayout({"BRL": "250"})], "250.00"),
            ([MaxPayout({"ARS": "250"})], "1000.00"),
            ([CurrencyMinimums(min_remaining={"BRL": "400"})], "600.00"),
            ([CurrencyMinimums(min_payout={"BRL": "2000"})], "0.00"),
            ([FrozenFunds(when_unknown="deny")], "0.00"),
            ([FrozenFunds(when_unknown="warn")], "1000.00"),
            ([ReserveMargin(percent="10"), MaxPayout({"BRL": "950"})], "900.00"),
            ([any_of(MaxPayout({"BRL": "100"}), CurrencyMinimums(min_payout={"BRL": "500"})),
              MaxPayout({"BRL": "300"})], "100.00"),
            ([when(MaxPayout({"BRL": "10"}), provider="luxcore")], "1000.00"),
            ([when(MaxPayout({"BRL": "10"}), provider="static")], "10.00"),
        ],
    )
    def test_follows_the_rules_caps(self, rules: list[Rule], expected: str) -> None:
        """The smallest cap wins; a floor above the cap means nothing can be paid."""
        guard = make_guard({"BRL": "1000.00"}, rules)
        actual = guard.max_payable("BRL")
        assert expected == str(actual)

    @pytest.mark.parametrize(
        ("currency", "balance", "expected"),
        [("CLP", "90000", "81000"), ("KWD", "10.000", "9.000"), ("JPY", "7", "6")],
    )
    def test_is_written_at_the_currency_exponent(
        self, currency: str, balance: str, expected: str
    ) -> None:
        """A reserve rounded up leaves a cap rounded down to whole units (CLP, JPY)."""
        guard = make_guard({currency: balance}, [ReserveMargin(percent="10")])
        assert expected == str(guard.max_payable(currency))

    def test_max_payable_is_allowed_and_one_unit_more_is_denied(self) -> None:
        """The answer is exact: max_payable passes, max_payable + 0.001 KWD does not."""
        guard = make_guard({"KWD": "12.345"}, [ReserveMargin(percent="7")])
        best = guard.max_payable("KWD")
        assert guard.check(best, "KWD").allowed
        assert ("reserve_margin",) == guard.check(best + Decimal("0.001"), "KWD").codes

    def test_holds_reduce_it(self) -> None:
        """Funds held by in-flight payouts cannot be paid again."""
        guard = make_guard({"BRL": "1000.00"})
        guard.reserve("400", "BRL", payout_id="po_1", fee="2.50")
        assert Decimal("597.50") == guard.max_payable("BRL")

    def test_the_decision_carries_it_net_of_the_fee(self) -> None:
        """Decision.max_payable is for the same fee as the request."""
        decision = make_guard({"BRL": "1000.00"}).check("2000", "BRL", fee="15.00")
        assert Decimal("985.00") == decision.max_payable

    def test_is_zero_when_the_provider_is_down(self) -> None:
        """No balance, nothing payable; max_payable itself does not raise."""
        assert Decimal("0.00") == PayoutGuard(FailingFetcher()).max_payable("BRL")

    def test_is_zero_for_a_currency_not_held(self) -> None:
        """A currency the provider does not report has nothing payable."""
        assert Decimal("0") == make_guard({"BRL": "1.00"}).max_payable("CLP")

    def test_is_zero_for_a_stale_balance(self) -> None:
        """A balance older than allowed (even after one refresh) pays nothing."""
        old = datetime.fromtimestamp(START - 600, UTC)
        guard = make_guard({"BRL": {"available": "1000.00", "as_of": old}}, [MaxBalanceAge(60)])
        assert Decimal("0.00") == guard.max_payable("BRL")

    def test_refuses_an_unknown_currency(self) -> None:
        """The currency is checked like check() checks it."""
        with pytest.raises(InvalidPayoutRequest, match="unknown currency"):
            make_guard({"BRL": "1.00"}).max_payable("ZZZ")
