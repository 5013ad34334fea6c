"""Fail closed: a provider that cannot answer is a retryable denial, never an allow."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
from structlog.testing import capture_logs

from guard import (
    BalanceSnapshot,
    PayoutDenied,
    PayoutGuard,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.stores import Hold, RedisReservations
from guard.testing import FailingFetcher, StaticFetcher
from rules import Facts, Verdict

SECRET = "sk_live_5ecr3t"


class Garbage:
    """A fetcher whose answer is not a list of snapshots."""

    name = "garbage"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:  # noqa: ARG002 - the protocol's signature
        return self.answer  # type: ignore[return-value]  # a broken fetcher on purpose


class TestFailClosed:
    @pytest.mark.parametrize(
        "exc",
        [
            ProviderUnavailable("connect timeout", provider="luxcore", attempts=3),
            ProviderRateLimited("too many requests", provider="luxcore", status=429),
            ProviderResponseError("malformed body", provider="luxcore", status=200),
        ],
    )
    def test_a_provider_error_is_a_retryable_balance_unavailable_denial(
        self, exc: Exception
    ) -> None:
        """The reason names the provider, the error class and the error's own message."""
        decision = PayoutGuard(FailingFetcher(exc, name="luxcore")).check("10", "BRL")
        assert (False, ("balance_unavailable",), True, "guard", None) == (
            decision.allowed, decision.codes, decision.retryable, decision.reasons[0].rule,
            decision.balance,
        )
        message = decision.reasons[0].message
        assert f"could not read the BRL balance from luxcore ({type(exc).__name__}: {exc})" in (
            message
        )
        assert "can be retried later" in message

    @pytest.mark.parametrize(
        "exc", [RuntimeError(SECRET), KeyError(SECRET), OSError(SECRET), ZeroDivisionError()]
    )
    def test_any_other_exception_is_a_denial_naming_only_its_class(self, exc: Exception) -> None:
        """Anything a fetcher raises denies; text we do not own is kept out (may hold secrets)."""
        with capture_logs() as logs:
            decision = PayoutGuard(FailingFetcher(exc, name="luxtak")).check("10", "BRL")
        assert (("balance_unavailable",), True) == (decision.codes, decision.retryable)
        assert (f"could not read the BRL balance from luxtak ({type(exc).__name__}); the payout "
                "was not sent and can be retried later") == decision.reasons[0].message
        assert SECRET not in decision.model_dump_json()
        assert SECRET not in repr(logs)

    @pytest.mark.parametrize("answer", [None, [{"currency": "BRL"}], "BRL 10.00", 42])
    def test_a_malformed_answer_is_a_denial(self, answer: object) -> None:
        """A fetcher returning something that is not snapshots denies, it does not raise."""
        assert ("balance_unavailable",) == PayoutGuard(Garbage(answer)).check("1", "BRL").codes

    def test_a_denial_when_down_has_nothing_payable(self) -> None:
        """No balance to judge: spendable and max payable are zero, no balance attached."""
        decision = PayoutGuard(FailingFetcher()).check("1", "KWD")
        assert ("0.000", "0.000", None) == (
            str(decision.spendable), str(decision.max_payable), decision.balance
        )

    def test_the_failure_is_logged_with_the_provider_and_error_class(self) -> None:
        """A payout_guard.balance_unavailable warning precedes the decision event."""
        with capture_logs() as logs:
            PayoutGuard(FailingFetcher(RuntimeError(SECRET), name="pagsmile")).check("1", "BRL")
        assert {
            "event": "payout_guard.balance_unavailable", "log_level": "warning",
            "provider": "pagsmile", "currency": "BRL", "error": "RuntimeError",
        } == logs[0]
        assert ["payout_guard.balance_unavailable", "payout_guard.decision"] == [
            entry["event"] for entry in logs
        ]

    def test_the_next_check_asks_the_provider_again(self) -> None:
        """A failure is not cached: every check tries the provider."""
        fetcher = FailingFetcher()
        guard = PayoutGuard(fetcher, cache_ttl=60)
        guard.check("1", "BRL")
        guard.check("1", "BRL")
        assert 2 == fetcher.calls

    def test_base_exceptions_are_not_swallowed(self) -> None:
        """KeyboardInterrupt in a fetcher stops the program; it is not a denial."""
        with pytest.raises(KeyboardInterrupt):
            PayoutGuard(FailingFetcher(KeyboardInterrupt())).check("1", "BRL")


class TestFailOpen:
    def test_allows_with_a_balance_unavailable_warning(self) -> None:
        """fail_open=True: allowed, no reasons, the outage reported as a warning."""
        decision = PayoutGuard(FailingFetcher(), fail_open=True).check("10", "BRL")
        assert (True, (), ("balance_unavailable",)) == (
            decision.allowed, decision.reasons, tuple(w.code for w in decision.warnings)
        )
        assert "  ! balance_unavailable: could not read the BRL balance" in decision.explain()

    def test_the_warning_does_not_claim_the_payout_was_stopped(self) -> None:
        """An allowed payout's warning says it went ahead unchecked, not that it was refused."""
        decision = PayoutGuard(FailingFetcher(), fail_open=True).check("10", "BRL")
        assert "not sent" not in decision.warnings[0].message

    def test_a_reachable_provider_is_still_judged(self) -> None:
        """fail_open changes nothing when the balance can be read."""
        decision = PayoutGuard(StaticFetcher({"BRL": "5.00"}), fail_open=True).check("6", "BRL")
        assert (False, ("insufficient_funds",)) == (decision.allowed, decision.codes)

    def test_a_currency_not_held_still_denies(self) -> None:
        """fail_open is about outages, not about currencies the provider says it lacks."""
        decision = PayoutGuard(StaticFetcher({"BRL": "5.00"}), fail_open=True).check("1", "ARS")
        assert ("currency_not_held",) == decision.codes

    def test_fail_open_reserve_holds_the_funds(self) -> None:
        """An allowed payout without a balance still holds, so it counts once one returns."""
        guard = PayoutGuard(FailingFetcher(), fail_open=True)
        reservation = guard.reserve("10", "BRL", payout_id="po_1")
        assert ("pending", Decimal("10.00")) == (
            reservation.state, reservation.hold.held if reservation.hold else None
        )


class TestStoreOutage:
    @staticmethod
    def unreachable_store() -> RedisReservations:
        """Return a Redis store on a loopback port where nothing listens (a real failure)."""
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return RedisReservations(f"redis://127.0.0.1:{port}/0", timeout=0.5)

    def test_a_store_that_cannot_answer_denies_check(self) -> None:
        """Without the holds, spendable is unknown: a retryable balance_unavailable denial."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=self.unreachable_store())
        decision = guard.check("10", "BRL")
        assert (False, ("balance_unavailable",), True) == (
            decision.allowed, decision.codes, decision.retryable
        )
        assert "reservation store" in decision.reasons[0].message

    def test_a_store_that_cannot_answer_denies_reserve(self) -> None:
        """Reserve raises PayoutDenied, never StoreUnavailable nor a redis error."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=self.unreachable_store())
        with pytest.raises(PayoutDenied) as denied:
            guard.reserve("10", "BRL", payout_id="po_1")
        assert ("balance_unavailable",) == denied.value.decision.codes

    def test_fail_open_does_not_open_for_a_store_outage(self) -> None:
        """fail_open is about unreadable balances; without holds, overspend is possible."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), fail_open=True,
                            reservations=self.unreachable_store())
        assert not guard.check("10", "BRL").allowed


class CountedStore(RedisReservations):
    """A Redis store that counts the reads a guard asks of it."""

    asked = 0

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        self.asked += 1
        return super().reserved(key, counted_since=counted_since, now=now)

    def get(self, payout_id: str) -> Hold | None:
        self.asked += 1
        return super().get(payout_id)


class TestAStoreOutageIsWaitedForOnce:
    """Every provider shares the guard's store: one that did not answer is not asked again."""

    @staticmethod
    def guard_over_three() -> tuple[PayoutGuard, CountedStore]:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        store = CountedStore(f"redis://127.0.0.1:{port}/0", timeout=0.5)
        fetchers = [StaticFetcher({"BRL": "100.00"}, name=n) for n in ("p1", "p2", "p3")]
        return PayoutGuard(fetchers, reservations=store, share_balances=False), store

    def test_a_routed_check_with_a_payout_id_asks_the_store_once(self) -> None:
        guard, store = self.guard_over_three()
        decision = guard.check("10", "BRL", payout_id="po_1")
        assert (("balance_unavailable",), 1) == (decision.codes, store.asked)
        assert [("p1", ("balance_unavailable",)), ("p2", ("balance_unavailable",)),
                ("p3", ("balance_unavailable",))] == [
            (c.provider, c.codes) for c in decision.candidates
        ]
        assert "redis" == decision.reasons[0].details["store"]

    def test_max_payable_by_provider_asks_the_store_once(self) -> None:
        guard, store = self.guard_over_three()
        by_provider = guard.max_payable("BRL", by_provider=True)
        assert ({"p1": Decimal("0.00"), "p2": Decimal("0.00"), "p3": Decimal("0.00")}, 1) == (
            by_provider, store.asked
        )

    def test_reserve_asks_the_store_once(self) -> None:
        guard, store = self.guard_over_three()
        with pytest.raises(PayoutDenied) as denied:
            guard.reserve("10", "BRL", payout_id="po_1")
        assert (("balance_unavailable",), 1) == (denied.value.decision.codes, store.asked)


class Raising:
    """A rule of one's own with a bug: it raises for payouts of *above* or more."""

    name = "raising"

    def __init__(self, above: str = "0") -> None:
        self.above = Decimal(above)

    def evaluate(self, facts: Facts) -> Verdict:
        if facts.amount >= self.above:
            raise RuntimeError(SECRET)
        return Verdict(rule=self.name, passed=True)


class TestARuleThatRaises:
    def test_it_denies_with_rule_error_naming_only_the_exception_class(self) -> None:
        """Not retryable (a bug does not fix itself); the rule's own text is kept out."""
        decision = PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising()]).check("1", "BRL")
        assert (False, ("rule_error",), False) == (
            decision.allowed, decision.codes, decision.retryable)
        assert "a rule raised RuntimeError instead of judging" in decision.reasons[0].message
        assert SECRET not in decision.model_dump_json()

    def test_the_denial_says_what_was_spendable_with_the_holds_it_was_judged_on(self) -> None:
        """100.00 available, 60.00 held: held 60.00, spendable 40.00 (not 100.00)."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising(above="70")])
        guard.reserve("60", "BRL", payout_id="po_held")
        decision = guard.check("75", "BRL")
        assert (("rule_error",), Decimal("60.00"), Decimal("40.00")) == (
            decision.codes, decision.reserved, decision.spendable)

    def test_it_denies_when_it_raises_while_explaining_a_denial(self) -> None:
        """SufficientFunds already denies 500.00; the rule raises as the denial is explained."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising(above="200")])
        assert guard.check("50", "BRL").allowed
        assert ("rule_error",) == guard.check("500", "BRL").codes

    def test_the_error_is_logged_with_its_traceback(self) -> None:
        with capture_logs() as logs:
            PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising()]).check("1", "BRL")
        assert {"event": "payout_guard.rule_error", "log_level": "error", "exc_info": True,
                "error": "RuntimeError", "currency": "BRL"} == logs[0]

    def test_reserve_holds_nothing_and_max_payable_is_zero(self) -> None:
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising()])
        with pytest.raises(PayoutDenied) as info:
            guard.reserve("1", "BRL", payout_id="po_1")
        assert ("rule_error",) == info.value.decision.codes
        assert None is guard.reservations.get("po_1")
        assert Decimal("0.00") == guard.max_payable("BRL")

    def test_fail_open_does_not_apply(self) -> None:
        """fail_open is about an unreadable balance; a broken rule still denies."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), [Raising()], fail_open=True)
        assert not guard.check("1", "BRL").allowed
