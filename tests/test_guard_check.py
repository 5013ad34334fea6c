"""PayoutGuard construction and check(): allow/deny with reasons, inputs, no side effects."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, localcontext

import pytest

from guard import BalanceSnapshot, ConfigurationError, InvalidPayoutRequest, PayoutGuard
from guard.stores import InMemoryReservations, balance_key
from guard.testing import StaticFetcher
from rules import CurrencyMinimums, MaxPayout, ReserveMargin, SufficientFunds
from tests._guard_strategies import START, FakeClock


class TwoAccounts:
    """A provider reporting one BRL balance per sub-account."""

    name = "multi"

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        self.calls += 1
        as_of = datetime.fromtimestamp(START, UTC)
        return [
            BalanceSnapshot(provider="multi", currency="BRL", available=Decimal(avail),
                            as_of=as_of, account=account)
            for account, avail in (("shop-a", "100.00"), ("shop-b", "900.00"))
            if currency in (None, "BRL")
        ]


def make_guard(balances: dict[str, object], rules: tuple[object, ...] = (),
               **options: object) -> PayoutGuard:
    clock = FakeClock()
    return PayoutGuard(StaticFetcher(balances, clock=clock), rules, clock=clock, **options)  # type: ignore[arg-type]  # rules and options as a user passes them


class TestConstruction:
    @pytest.mark.parametrize(
        ("options", "path"),
        [
            ({"mode": "shadow"}, "mode"),
            ({"cache_ttl": -1}, "cache_ttl"),
            ({"cache_ttl": float("nan")}, "cache_ttl"),
            ({"cache_ttl": "5"}, "cache_ttl"),
            ({"cache_ttl": True}, "cache_ttl"),
            ({"settle_lag": float("inf")}, "settle_lag"),
            ({"hold_ttl": 0}, "hold_ttl"),
            ({"reservations": {}}, "reservations"),
        ],
    )
    def test_bad_options_fail_at_construction_naming_the_option(
        self, options: dict[str, object], path: str
    ) -> None:
        """A bad option is a ConfigurationError with the option's name as its path."""
        with pytest.raises(ConfigurationError) as info:
            PayoutGuard(StaticFetcher({"BRL": "1"}), **options)  # type: ignore[arg-type]  # bad values on purpose
        assert path == info.value.path

    def test_a_fetcher_must_follow_the_protocol(self) -> None:
        """Something without name/fetch is refused, naming its type."""
        with pytest.raises(ConfigurationError, match=r"fetcher must provide \.name and \.fetch"):
            PayoutGuard(object())  # type: ignore[arg-type]  # a wrong fetcher on purpose

    def test_a_rule_must_follow_the_protocol(self) -> None:
        """A rule list holding a non-rule is refused when the guard is built."""
        with pytest.raises(ConfigurationError):
            PayoutGuard(StaticFetcher({"BRL": "1"}), ["reserve_margin"])  # type: ignore[list-item]  # a wrong rule on purpose

    def test_sufficient_funds_always_applies_once(self) -> None:
        """It is added in front when missing and not doubled when given."""
        fetcher = StaticFetcher({"BRL": "1"})
        assert ("sufficient_funds", "max_payout") == PayoutGuard(
            fetcher, [MaxPayout({"BRL": "5"})]).rules.names
        assert ("max_payout", "sufficient_funds") == PayoutGuard(
            fetcher, [MaxPayout({"BRL": "5"}), SufficientFunds()]).rules.names

    def test_repr_names_provider_mode_and_rules(self) -> None:
        """The repr is short and shows what the guard does."""
        guard = PayoutGuard(StaticFetcher({"BRL": "1"}, name="luxcore"), mode="dry_run")
        assert "PayoutGuard(provider='luxcore', mode='dry_run', rules=['sufficient_funds'])" == (
            repr(guard)
        )

    def test_default_store_is_in_memory(self) -> None:
        """Without a store the guard holds funds in this process's memory."""
        assert isinstance(PayoutGuard(StaticFetcher()).reservations, InMemoryReservations)


class TestCheck:
    def test_allows_a_payout_the_balance_covers(self) -> None:
        """Enough funds: allowed, no reasons, the numbers filled in."""
        decision = make_guard({"BRL": "1000.00"}).check("1000", "BRL", payout_id="po_1")
        assert (True, (), Decimal("1000.00"), Decimal("0.00"), Decimal("1000.00")) == (
            decision.allowed, decision.reasons, decision.spendable, decision.reserved,
            decision.max_payable,
        )
        assert ("BRL", "static", "po_1", "enforce") == (
            decision.currency, decision.provider, decision.payout_id, decision.mode
        )

    def test_denies_a_payout_the_balance_does_not_cover_with_numbers(self) -> None:
        """One unit too many: insufficient_funds, retryable, shortfall in the details."""
        decision = make_guard({"BRL": "1000.00"}).check("1000.01", "BRL")
        assert (False, ("insufficient_funds",), True) == (
            decision.allowed, decision.codes, decision.retryable
        )
        reason = decision.reasons[0]
        assert ("sufficient_funds", Decimal("0.01"), Decimal("1000.01")) == (
            reason.rule, reason.details["shortfall"], reason.details["required"]
        )
        assert "short by 0.01 BRL" in reason.message

    def test_the_fee_is_paid_from_the_same_balance(self) -> None:
        """The amount plus the fee must fit; the fee is written at the currency exponent."""
        guard = make_guard({"KWD": "10.000"})
        assert guard.check("9.5", "KWD", fee="0.5").allowed
        denied = guard.check("9.5", "KWD", fee="0.501")
        assert (("insufficient_funds",), "0.501", Decimal("9.499")) == (
            denied.codes, str(denied.fee), denied.max_payable
        )

    def test_every_failing_rule_is_a_reason(self) -> None:
        """All rules are judged; each failure is listed in rule order."""
        guard = make_guard({"ARS": "1000.00"}, (
            ReserveMargin(percent="5", minimum={"ARS": "100"}),
            CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"}),
            MaxPayout({"ARS": "50"}),
        ))
        decision = guard.check("960", "ARS")
        assert ("reserve_margin", "min_remaining_balance", "above_maximum_payout") == (
            decision.codes
        )

    def test_a_currency_the_provider_does_not_report_is_not_held(self) -> None:
        """currency_not_held, not retryable, names the provider and currency."""
        decision = make_guard({"BRL": "1000.00"}).check("1", "ARS")
        assert (False, ("currency_not_held",), False, None) == (
            decision.allowed, decision.codes, decision.retryable, decision.balance
        )
        assert "static reports no ARS balance" == decision.reasons[0].message

    def test_an_account_picks_its_own_balance(self) -> None:
        """With several accounts, the one asked for is judged; an unknown one is not held."""
        guard = PayoutGuard(TwoAccounts(), clock=FakeClock())
        assert guard.check("900", "BRL", account="shop-b").allowed
        assert ("insufficient_funds",) == guard.check("900", "BRL", account="shop-a").codes
        missing = guard.check("1", "BRL", account="shop-c")
        assert (("currency_not_held",), "shop-c") == (missing.codes, missing.account)
        assert "multi account shop-c reports no BRL balance" == missing.reasons[0].message

    @pytest.mark.parametrize(
        ("kwargs", "needle"),
        [
            ({"amount": 10.5}, "float"),
            ({"amount": "NaN"}, "not an amount: write ASCII digits"),
            ({"amount": "-1"}, "not an amount: write ASCII digits"),
            ({"amount": -1}, "must be positive"),
            ({"amount": "0"}, "must be positive"),
            ({"amount": "1.001"}, "more decimal places than BRL allows"),
            ({"currency": "VEF"}, "unknown currency"),
            ({"currency": None}, "3-letter ISO 4217"),
            ({"fee": "-0.01"}, "fee: '-0.01' is not an amount"),
            ({"fee": Decimal("-0.01")}, "fee must be zero or positive"),
            ({"fee": 0.5}, "float"),
            ({"account": ""}, "account must be a non-empty string"),
            ({"account": 7}, "account must be a non-empty string"),
            ({"payout_id": "x" * 201}, "payout_id has 201 characters"),
            ({"payout_id": b"po"}, "payout_id must be a string of 1 to 200 characters"),
        ],
    )
    def test_a_malformed_request_raises_invalid_payout_request(
        self, kwargs: dict[str, object], needle: str
    ) -> None:
        """Only InvalidPayoutRequest is raised, and only for a malformed request."""
        request: dict[str, object] = {"amount": "1", "currency": "BRL", **kwargs}
        amount, currency = request.pop("amount"), request.pop("currency")
        fetcher = StaticFetcher({"BRL": "100.00"})
        with pytest.raises(InvalidPayoutRequest, match=needle):
            PayoutGuard(fetcher).check(amount, currency, **request)  # type: ignore[arg-type]  # bad values on purpose
        assert 0 == fetcher.calls

    def test_check_changes_nothing(self) -> None:
        """No hold, no balance change, the cached balance only read; same answer twice."""
        clock = FakeClock()
        fetcher = StaticFetcher({"BRL": "1000.00"}, clock=clock)
        store = InMemoryReservations()
        guard = PayoutGuard(fetcher, [ReserveMargin(percent="10")], reservations=store,
                            clock=clock)
        guard.reserve("100", "BRL", payout_id="po_0")
        key = balance_key("static", None, "BRL")
        before = (store.holds(key, counted_since=0, now=clock()), fetcher.fetch("BRL"))
        calls = fetcher.calls
        first = guard.check("850", "BRL", payout_id="po_1")
        second = guard.check("850", "BRL", payout_id="po_1")
        after = (store.holds(key, counted_since=0, now=clock()), fetcher.fetch("BRL"))
        assert before == after
        assert None is store.get("po_1")
        assert calls + 1 == fetcher.calls
        assert first.model_dump(exclude={"decision_id"}) == second.model_dump(
            exclude={"decision_id"}
        )
        assert first.decision_id != second.decision_id

    def test_a_lowered_decimal_precision_in_the_caller_changes_nothing(self) -> None:
        """An application that set getcontext().prec = 6 gets exact amounts, no exception."""
        guard = make_guard({"BRL": "1000000.00"})
        guard.reserve("123456.78", "BRL", payout_id="po_1")
        with localcontext() as ctx:
            ctx.prec = 6
            decision = guard.check("100.00", "BRL")
        assert ("876543.22", "123456.78") == (str(decision.spendable), str(decision.reserved))
