"""reserve() and Reservation: atomic check-and-hold, idempotency, expiry and settle lag."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_UP, Decimal, localcontext

import pytest

from guard import (
    BalanceSnapshot,
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    PayoutGuard,
    Reservation,
)
from guard.stores import Hold, HoldOutcome, InMemoryReservations
from guard.testing import StaticFetcher
from rules import CurrencyMinimums, Facts, ReserveMargin, Rule, Verdict, any_of
from tests._guard_strategies import FakeClock


class Accounts:
    """A provider that labels its BRL balances with sub-account names, in the given order."""

    name = "luxcore"

    def __init__(self, clock: FakeClock, balances: dict[str, str]) -> None:
        self.clock = clock
        self.balances = balances

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        as_of = datetime.fromtimestamp(self.clock(), UTC)
        return [BalanceSnapshot(provider="luxcore", currency="BRL", available=Decimal(amount),
                                as_of=as_of, account=account)
                for account, amount in self.balances.items() if currency in (None, "BRL")]


def make_guard(balance: str = "1000.00", rules: tuple[Rule, ...] = (),
               **options: object) -> tuple[PayoutGuard, StaticFetcher, FakeClock]:
    clock = FakeClock()
    fetcher = StaticFetcher({"BRL": balance}, clock=clock)
    guard = PayoutGuard(fetcher, rules, clock=clock, **options)  # type: ignore[arg-type]  # the guard's keyword options
    return guard, fetcher, clock


class TestReserve:
    def test_holds_the_funds_for_the_next_check(self) -> None:
        """A pending hold of 600 leaves 400 spendable: a 500 payout is then denied."""
        guard, _, _ = make_guard()
        reservation = guard.reserve("600", "BRL", payout_id="po_1")
        assert ("pending", True) == (reservation.state, reservation.decision.allowed)
        decision = guard.check("500", "BRL")
        assert (("insufficient_funds",), Decimal("600.00"), Decimal("400.00")) == (
            decision.codes, decision.reserved, decision.spendable
        )

    def test_the_fee_is_held_too(self) -> None:
        """The hold is amount + fee."""
        guard, _, _ = make_guard()
        guard.reserve("600", "BRL", payout_id="po_1", fee="2.50")
        assert Decimal("602.50") == guard.check("1", "BRL").reserved

    def test_a_denial_shows_the_holds_in_explain(self) -> None:
        """The in-flight payouts that ate the balance are named in the explanation."""
        guard, _, _ = make_guard()
        guard.reserve("600", "BRL", payout_id="po_1")
        guard.reserve("300", "BRL", payout_id="po_2")
        text = guard.check("500", "BRL").explain()
        held = "  held         900.00 BRL  (2 in-flight: po_1 600.00 pending, po_2 300.00 pending)"
        assert held in text.splitlines()

    def test_a_denial_raises_payout_denied_and_holds_nothing(self) -> None:
        """Not enough: PayoutDenied with the decision; the store has no hold."""
        guard, _, _ = make_guard(rules=(ReserveMargin(percent="10"),))
        with pytest.raises(PayoutDenied) as info:
            guard.reserve("950", "BRL", payout_id="po_1")
        assert (("reserve_margin",), "po_1") == (info.value.decision.codes,
                                                 info.value.decision.payout_id)
        assert None is guard.reservations.get("po_1")

    def test_a_payout_id_is_required(self) -> None:
        """The payout id is the idempotency key: None is refused."""
        guard, _, _ = make_guard()
        with pytest.raises(InvalidPayoutRequest, match="needs a payout_id"):
            guard.reserve("1", "BRL", payout_id=None)  # type: ignore[arg-type]  # None on purpose

    def test_a_bad_ttl_is_a_configuration_error(self) -> None:
        """A ttl must be a positive number of seconds."""
        guard, _, _ = make_guard()
        with pytest.raises(ConfigurationError):
            guard.reserve("1", "BRL", payout_id="po_1", ttl=0)

    def test_twenty_workers_never_overspend(self) -> None:
        """Concurrent reserves of 100 from 1000: at most ten hold, the rest are denied."""
        guard, _, _ = make_guard()
        outcomes: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(20)

        def work(n: int) -> None:
            start.wait()
            try:
                guard.reserve("100", "BRL", payout_id=f"po_{n}")
                outcome = "held"
            except PayoutDenied as exc:
                outcome = exc.decision.codes[0]
            with lock:
                outcomes.append(outcome)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        held = guard.check("1", "BRL").reserved
        assert 20 == len(outcomes)
        assert {"held", "insufficient_funds"} >= set(outcomes)
        assert Decimal(100) * outcomes.count("held") == held
        assert held <= Decimal("1000.00")


class AnotherPayoutLandsFirst(InMemoryReservations):
    """A real store shared by two workers: the other one's hold lands just before this one's.

    The interleaving two workers can always produce: this worker judged the payout on the
    holds it read, then the other worker's reserve completed, then this worker's hold
    reaches the store.
    """

    def __init__(self) -> None:
        super().__init__()
        self.other: Callable[[], object] | None = None
        self.ceilings: list[Decimal] = []  # every ceiling a hold was asked under, in order

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        self.ceilings.append(ceiling)
        other, self.other = self.other, None
        if other is not None:
            other()
        return super().try_hold(hold, ceiling=ceiling, counted_since=counted_since, now=now)


def two_workers(
    balance: str, rules: tuple[Rule, ...] = ()
) -> tuple[PayoutGuard, PayoutGuard, AnotherPayoutLandsFirst, FakeClock]:
    """Return two guards (workers) over one balance and one store, and the store and clock."""
    clock = FakeClock()
    store = AnotherPayoutLandsFirst()
    fetcher = StaticFetcher({"BRL": balance}, clock=clock)
    return (PayoutGuard(fetcher, rules, clock=clock, reservations=store),
            PayoutGuard(fetcher, rules, clock=clock, reservations=store), store, clock)


class AvailableLessTwiceHeld:
    """A rule of one's own whose cap falls twice as fast as holds grow."""

    name = "available_less_twice_held"

    def evaluate(self, facts: Facts) -> Verdict:
        cap = facts.available - 2 * facts.reserved
        if facts.amount <= cap:
            return Verdict(rule=self.name, passed=True, cap=cap)
        return Verdict(rule=self.name, passed=False, code="insufficient_funds",
                       message=f"at most {cap}", cap=max(cap, Decimal(0)))


class TestAHoldLandingBetweenJudgingAndHolding:
    """Another worker's hold reaches the store after this payout was judged, before its hold."""

    def held(self, store: InMemoryReservations, clock: FakeClock) -> Decimal:
        return sum((h.held for h in store.list_holds(now=clock())), Decimal(0))

    def test_the_callers_decimal_context_never_widens_the_room_admitted(self) -> None:
        """Precision 3, rounding up: 600.00 + 634.57 of 1234.56 is still refused."""
        mine, other, store, clock = two_workers("1234.56")
        store.other = lambda: other.reserve("600.00", "BRL", payout_id="other")
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.rounding = ROUND_UP
            with pytest.raises(PayoutDenied) as denied:
                mine.reserve("634.57", "BRL", payout_id="mine")
        assert ("insufficient_funds",) == denied.value.decision.codes
        assert Decimal("600.00") == self.held(store, clock)

    def test_the_ceiling_asked_of_the_store_ignores_the_callers_decimal_context(self) -> None:
        """Held 0 + max payable 1234.56 + fee 0: the store is asked for 1234.56, not 1240."""
        mine, _, store, _ = two_workers("1234.56")
        with localcontext() as ctx:
            ctx.prec = 3
            ctx.rounding = ROUND_UP
            mine.reserve("100.00", "BRL", payout_id="mine", fee="0.01")
        assert [Decimal("1234.56")] == store.ceilings

    def test_a_reserve_kept_by_one_alternative_of_any_of_is_not_eaten(self) -> None:
        """Keep 500, or pay at least 900: after another 300 held, 500 would eat the reserve."""
        rules = (any_of(ReserveMargin(minimum={"BRL": "500.00"}),
                        CurrencyMinimums(min_payout={"BRL": "900.00"})),)
        mine, other, store, clock = two_workers("1000.00", rules)
        store.other = lambda: other.reserve("300.00", "BRL", payout_id="other")
        with pytest.raises(PayoutDenied) as denied:
            mine.reserve("500.00", "BRL", payout_id="mine")
        decision = denied.value.decision
        assert (("reserve_margin", "below_minimum_payout"), Decimal("300.00")) == (
            decision.codes, decision.reserved)
        assert Decimal("300.00") == self.held(store, clock)
        assert None is store.get("mine")

    def test_a_rule_of_ones_own_whose_cap_falls_faster_is_asked_again(self) -> None:
        """Cap available - 2 x held: 700 allowed on nothing held, denied once 200 more is held."""
        mine, other, store, clock = two_workers("1000.00", (AvailableLessTwiceHeld(),))
        store.other = lambda: other.reserve("200.00", "BRL", payout_id="other")
        with pytest.raises(PayoutDenied) as denied:
            mine.reserve("700.00", "BRL", payout_id="mine")
        assert ("insufficient_funds",) == denied.value.decision.codes
        assert Decimal("200.00") == self.held(store, clock)

    def test_a_hold_that_still_fits_is_kept_and_says_what_was_held(self) -> None:
        """100 more held leaves room for 500 of 1000: held, judged on the 100 the store held."""
        mine, other, store, clock = two_workers("1000.00", (ReserveMargin(percent="10"),))
        store.other = lambda: other.reserve("100.00", "BRL", payout_id="other")
        reservation = mine.reserve("500.00", "BRL", payout_id="mine")
        assert (True, Decimal("100.00"), Decimal("800.00")) == (
            reservation.decision.allowed, reservation.decision.reserved,
            reservation.decision.max_payable)
        assert Decimal("600.00") == self.held(store, clock)


class TestReservationContext:
    def test_normal_exit_commits(self) -> None:
        """Leaving the block normally marks the payout submitted."""
        guard, _, _ = make_guard()
        with guard.reserve("10", "BRL", payout_id="po_1") as hold:
            assert "pending" == hold.state
        stored = guard.reservations.get("po_1")
        assert ("committed", "committed") == (hold.state, stored.state if stored else None)

    def test_an_exception_outside_uncertain_on_releases_and_propagates(self) -> None:
        """A plain error (not OSError): the payout was not sent, its funds come back."""
        guard, _, _ = make_guard()
        with pytest.raises(LookupError), guard.reserve("600", "BRL", payout_id="po_1") as h:
            raise LookupError
        assert ("released", None) == (h.state, guard.reservations.get("po_1"))
        assert guard.check("1000", "BRL").allowed

    def test_a_connection_error_keeps_the_funds_held_as_uncertain(self) -> None:
        """An OSError may have come after the provider took the payout: the hold stays."""
        guard, _, _ = make_guard()
        with pytest.raises(ConnectionError), guard.reserve("600", "BRL", payout_id="po_1") as h:
            raise ConnectionError
        stored = guard.hold("po_1")
        assert ("uncertain", "uncertain") == (h.state, stored.state if stored else None)
        assert Decimal("600.00") == guard.check("1", "BRL").reserved

    def test_commit_and_release_act_once(self) -> None:
        """A committed payout cannot be released; a released one cannot be committed."""
        guard, _, _ = make_guard()
        sent = guard.reserve("10", "BRL", payout_id="po_1")
        sent.commit()
        sent.commit()
        assert (False, "committed") == (sent.release(), sent.state)
        dropped = guard.reserve("10", "BRL", payout_id="po_2")
        assert (True, False) == (dropped.release(), dropped.release())
        with pytest.raises(GuardError, match="was released; it cannot be committed"):
            dropped.commit()

    def test_repr_shows_id_amount_and_state(self) -> None:
        """The repr is what a person debugging needs."""
        guard, _, _ = make_guard()
        reservation = guard.reserve("10", "BRL", payout_id="po_1")
        assert "Reservation(payout_id='po_1', amount=10.00, currency='BRL', state='pending')" == (
            repr(reservation)
        )
        assert isinstance(reservation, Reservation)


class TestIdempotency:
    @pytest.mark.parametrize(
        ("settle", "state", "retryable"),
        [("keep", "pending", True), ("commit", "committed", False),
         ("mark_uncertain", "uncertain", False)],
    )
    def test_a_payout_id_with_a_hold_is_a_duplicate(
        self, settle: str, state: str, retryable: bool
    ) -> None:
        """Pending, committed or uncertain: a second reserve is refused and holds nothing."""
        guard, _, _ = make_guard()
        first = guard.reserve("600", "BRL", payout_id="po_1")
        if settle != "keep":
            getattr(first, settle)()
        with pytest.raises(PayoutDenied) as info:
            guard.reserve("600.00", "BRL", payout_id="po_1")
        decision = info.value.decision
        assert (("duplicate_payout",), retryable, state) == (
            decision.codes, decision.retryable, decision.reasons[0].details["state"])
        assert Decimal("600.00") == guard.check("1", "BRL").reserved

    @pytest.mark.parametrize(
        ("amount", "currency", "fee"),
        [("601", "BRL", None), ("600", "ARS", None), ("600", "BRL", "1.00")],
    )
    def test_a_different_request_under_the_same_id_is_a_duplicate_too(
        self, amount: str, currency: str, fee: str | None
    ) -> None:
        """Another amount, currency or fee under a used id: duplicate_payout as well."""
        guard, fetcher, _ = make_guard()
        fetcher.set("ARS", "9000.00")
        guard.reserve("600", "BRL", payout_id="po_1").commit()
        with pytest.raises(PayoutDenied) as info:
            guard.reserve(amount, currency, payout_id="po_1", fee=fee)
        decision = info.value.decision
        assert (("duplicate_payout",), False) == (decision.codes, decision.retryable)
        assert "payout id 'po_1' was already sent (600.00 BRL)" in decision.reasons[0].message
        assert Decimal("600.00") == guard.check("1", "BRL").reserved

    def test_a_released_id_can_be_used_again(self) -> None:
        """After a release nothing holds the id, so any request may take it."""
        guard, _, _ = make_guard()
        guard.reserve("600", "BRL", payout_id="po_1").release()
        assert "pending" == guard.reserve("700", "BRL", payout_id="po_1").state


class TestCheckingAPayoutIdThatHolds:
    """check(payout_id=...) answers what reserve would: a taken id is a duplicate."""

    @pytest.mark.parametrize(("settle", "retryable"), [("keep", True), ("commit", False)])
    def test_a_taken_id_is_denied_as_a_duplicate(self, settle: str, retryable: bool) -> None:
        guard, _, _ = make_guard("1000.00")
        reservation = guard.reserve("100", "BRL", payout_id="po_1")
        if settle == "commit":
            reservation.commit()
        decision = guard.check("100", "BRL", payout_id="po_1")
        assert (("duplicate_payout",), retryable) == (decision.codes, decision.retryable)

    def test_without_the_payout_id_the_hold_counts(self) -> None:
        guard, _, _ = make_guard("1000.00")
        guard.reserve("850", "BRL", payout_id="po_1")
        assert ("insufficient_funds",) == guard.check("850", "BRL").codes

    def test_an_expired_hold_frees_the_id(self) -> None:
        """Once the pending hold is past its ttl, the payout is judged like any other."""
        guard, _, clock = make_guard("1000.00", hold_ttl=60)
        guard.reserve("850", "BRL", payout_id="po_1")
        clock.advance(61)
        decision = guard.check("850", "BRL", payout_id="po_1")
        assert (True, Decimal("0.00"), ()) == (
            decision.allowed, decision.reserved, decision.warnings)

    def test_checking_changes_nothing_held(self) -> None:
        guard, _, _ = make_guard("1000.00")
        held = guard.reserve("850", "BRL", payout_id="po_1").hold
        guard.check("850", "BRL", payout_id="po_1")
        assert held == guard.hold("po_1")
        assert Decimal("850.00") == guard.check("1", "BRL").reserved


class TestExpiry:
    def test_a_pending_hold_stops_counting_after_its_ttl(self) -> None:
        """A crashed worker's hold frees its funds once the ttl has passed."""
        guard, _, clock = make_guard(cache_ttl=0)
        guard.reserve("600", "BRL", payout_id="po_1", ttl=10)
        clock.advance(9.999)
        assert Decimal("600.00") == guard.check("1", "BRL").reserved
        clock.advance(0.001)
        assert Decimal("0.00") == guard.check("1", "BRL").reserved

    def test_the_guard_hold_ttl_is_the_default(self) -> None:
        """Without ttl=..., hold_ttl applies."""
        guard, _, clock = make_guard(cache_ttl=0, hold_ttl=60)
        guard.reserve("600", "BRL", payout_id="po_1")
        clock.advance(60)
        assert guard.check("1000", "BRL").allowed

    def test_an_expired_id_can_hold_a_new_request(self) -> None:
        """An expired pending hold is replaced, even by a different amount."""
        guard, _, clock = make_guard(cache_ttl=0)
        guard.reserve("600", "BRL", payout_id="po_1", ttl=10)
        clock.advance(10)
        assert Decimal("700.00") == guard.reserve("700", "BRL", payout_id="po_1").decision.amount
        assert Decimal("700.00") == guard.check("1", "BRL").reserved

    def test_committing_after_expiry_still_records_the_payout(self) -> None:
        """The money has left: a late commit counts again."""
        guard, _, clock = make_guard(cache_ttl=0)
        reservation = guard.reserve("600", "BRL", payout_id="po_1", ttl=10)
        clock.advance(11)
        reservation.commit()
        assert Decimal("600.00") == guard.check("1", "BRL").reserved


class TestSettleLag:
    def test_a_committed_hold_counts_until_a_balance_can_show_it(self) -> None:
        """Counted while the balance is older than commit + settle_lag, dropped after."""
        guard, _, clock = make_guard(cache_ttl=0, settle_lag=30)
        with guard.reserve("600", "BRL", payout_id="po_1"):
            pass
        clock.advance(29.9)
        assert Decimal("600.00") == guard.check("1", "BRL").reserved
        clock.advance(0.2)
        assert Decimal("0.00") == guard.check("1", "BRL").reserved

    def test_a_pending_hold_counts_whatever_the_balance_age(self) -> None:
        """Until committed or expired, a hold counts against fresh balances too."""
        guard, _, clock = make_guard(cache_ttl=0, settle_lag=30)
        guard.reserve("600", "BRL", payout_id="po_1", ttl=600)
        clock.advance(120)
        assert Decimal("600.00") == guard.check("1", "BRL").reserved

    def test_a_balance_fetched_soon_after_the_commit_still_counts_it(self) -> None:
        """The commit refetches; a balance 5 s after it, within the lag, still counts it."""
        guard, _, clock = make_guard(cache_ttl=60, settle_lag=30)
        with guard.reserve("600", "BRL", payout_id="po_1"):
            pass
        clock.advance(5)
        assert ("insufficient_funds",) == guard.check("500", "BRL").codes

    def test_with_no_lag_a_balance_after_the_commit_drops_it(self) -> None:
        """settle_lag=0: any balance newer than the commit is trusted to show the payout."""
        guard, _, clock = make_guard(cache_ttl=0, settle_lag=0)
        with guard.reserve("600", "BRL", payout_id="po_1"):
            pass
        clock.advance(0.001)
        assert Decimal("0.00") == guard.check("1", "BRL").reserved


class TestAccounts:
    def test_holds_on_one_account_leave_another_alone(self) -> None:
        """Each account's balance carries only its own holds."""
        clock = FakeClock()
        guard = PayoutGuard(Accounts(clock, {"shop-a": "100.00", "shop-b": "900.00"}),
                            clock=clock)
        guard.reserve("800", "BRL", payout_id="po_1", account="shop-b")
        assert (Decimal("100.00"), Decimal("100.00")) == (
            guard.max_payable("BRL", account="shop-a"), guard.max_payable("BRL", account="shop-b")
        )

    def test_asking_with_and_without_the_only_account_shares_one_balance(self) -> None:
        """account=None judged on 'shop-b' must hold on 'shop-b': 800 + 800 of 900 is refused."""
        clock = FakeClock()
        guard = PayoutGuard(Accounts(clock, {"shop-b": "900.00"}), clock=clock)
        guard.reserve("800", "BRL", payout_id="po_1")
        with pytest.raises(PayoutDenied):
            guard.reserve("800", "BRL", payout_id="po_2", account="shop-b")

    def test_several_accounts_and_none_asked_for_is_not_a_guess(self) -> None:
        """Which balance pays is ambiguous: the caller is told to name the account."""
        clock = FakeClock()
        guard = PayoutGuard(Accounts(clock, {"shop-b": "900.00", "shop-a": "100.00"}),
                            clock=clock)
        with pytest.raises(InvalidPayoutRequest, match=r"several accounts \(shop-a, shop-b\)"):
            guard.check("500", "BRL")


class TestDenialListsTheHolds:
    def test_a_denial_lists_up_to_twenty_holds_and_says_when_there_are_more(self) -> None:
        """explain() of a denial names the payouts holding funds, without listing thousands."""
        guard, _, _ = make_guard("100.00")
        for number in range(25):
            guard.reserve("3", "BRL", payout_id=f"po_{number:02d}")
        decision = guard.check("50", "BRL")
        assert (20, True) == (len(decision.holds), decision.more_holds)
        assert "held         75.00 BRL  (more than 20 in-flight: po_00 3.00 pending" in (
            decision.explain()
        )

    def test_an_allowed_decision_lists_no_holds(self) -> None:
        """Listing holds costs a store read: only denials pay for it."""
        guard, _, _ = make_guard("100.00")
        guard.reserve("3", "BRL", payout_id="po_1")
        decision = guard.check("5", "BRL")
        assert ((), Decimal("3.00")) == (decision.holds, decision.reserved)
