"""The guard's side of a fleet: settle accounting, the request budget, own payouts, sharing.

Multi-process runs are in ``tests/test_fleet.py``; these pin each behaviour down in one
process, over real sockets where a provider is involved and on a real SQLite file where
balances are shared.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

import rules
from guard import BudgetSpent, ConfigurationError, PayoutGuard, ProviderUnavailable
from guard._cache import BalanceCache
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.stores import FleetStore, InMemoryReservations, RedisReservations, SqliteReservations
from guard.testing import FakeClock, StaticFetcher
from guard.testing.emulators import LuxCoreEmulator
from rules import FrozenFunds, MaxBalanceAge, MaxPayout, Rule, all_of, any_of, when
from tests._guard_strategies import BlockingFetcher, wait_until_blocked

POLICY = RetryPolicy(attempts=1, deadline=2.0, backoff=0.001, max_backoff=0.002)


@pytest.fixture
def luxcore() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={"ARS": "10000.00"}) as emu:
        yield emu


def luxcore_fetcher(emu: LuxCoreEmulator, **options: object) -> LuxCoreFetcher:
    options.setdefault("retry", POLICY)
    return LuxCoreFetcher(emu.api_key, base_url=emu.url, **options)  # type: ignore[arg-type]


class TestSettleAccounting:
    def test_a_commit_stops_counting_exactly_when_a_later_balance_can_show_it(self) -> None:
        """settle_lag 2: a balance requested 1.9 s after the commit counts the hold, at 2 s not."""
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=0, settle_lag=2, clock=clock)
        with guard.reserve("1000.00", "ARS", payout_id="p-1"):
            pass
        fetcher.set("ARS", "9000.00")  # the provider shows the payout
        clock.advance(1.9)
        assert Decimal("1000.00") == guard.check("1.00", "ARS").reserved
        clock.advance(0.1)
        decision = guard.check("1.00", "ARS")
        assert (Decimal(0), Decimal("9000.00")) == (decision.reserved, decision.max_payable)

    def test_six_payouts_leave_nothing_stranded_once_the_balance_shows_them(self) -> None:
        """The issue's example: after six 1,000 payouts, spendable is what the provider has."""
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=5, settle_lag=2, clock=clock)
        for n in range(6):
            with guard.reserve("1000.00", "ARS", payout_id=f"p-{n}"):
                pass
            fetcher.set("ARS", f"{9000 - 1000 * n}.00")
        clock.advance(3)  # the cached balance is refreshed after the commits (1 s)
        decision = guard.check("1.00", "ARS")
        assert (Decimal("4000.00"), Decimal(0)) == (decision.balance.available,  # type: ignore[union-attr]
                                                    decision.reserved)

    def test_each_fetcher_says_its_own_settle_lag(self, luxcore: LuxCoreEmulator) -> None:
        """LuxCore documents an immediate freeze (2 s); the guard takes the fetcher's default."""
        with luxcore_fetcher(luxcore) as fetcher:
            assert (2.0, 90) == (fetcher.settle_lag, fetcher.requests_per_minute)
            assert PayoutGuard(fetcher).settle_lag == 2.0
            assert PayoutGuard(fetcher, settle_lag=10).settle_lag == 10.0

    def test_snapshots_say_when_their_request_was_sent(self) -> None:
        clock = FakeClock()
        guard = PayoutGuard(StaticFetcher({"ARS": "5.00"}, clock=clock), clock=clock)
        balance = guard.check("1.00", "ARS").balance
        assert balance is not None
        assert balance.requested_at is not None
        assert clock.time() == balance.requested_at.timestamp()


class TestRequestBudget:
    def test_with_the_budget_spent_no_request_is_sent_and_the_cached_balance_serves(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """One request a minute: the second check within the minute reuses the first balance."""
        with luxcore_fetcher(luxcore, requests_per_minute=1) as fetcher:
            guard = PayoutGuard(fetcher, cache_ttl=0)
            first = guard.check("1.00", "ARS")
            second = guard.check("1.00", "ARS")
        assert (True, True) == (first.allowed, second.allowed)
        assert 1 == luxcore.balance_requests

    def test_with_the_budget_spent_and_nothing_young_enough_it_denies_with_retry_after(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        with luxcore_fetcher(luxcore, requests_per_minute=1) as fetcher:
            guard = PayoutGuard(fetcher, cache_ttl=0, max_stale=0)
            guard.check("1.00", "ARS")
            denied = guard.check("1.00", "ARS")
        assert (False, ("balance_unavailable",), True) == (
            denied.allowed, denied.codes, denied.retryable)
        details = denied.reasons[0].details
        assert "budget" == details["cause"]
        assert Decimal(50) < Decimal(str(details["retry_after"])) <= Decimal(60)
        assert 1 == luxcore.balance_requests

    def test_max_balance_age_sets_how_old_a_balance_may_be_while_the_budget_is_spent(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """MaxBalanceAge(0) leaves nothing usable: the second check is denied, not stale."""
        with luxcore_fetcher(luxcore, requests_per_minute=1) as fetcher:
            guard = PayoutGuard(fetcher, [MaxBalanceAge(0)], cache_ttl=0, max_stale=600)
            guard.check("1.00", "ARS")
            assert ("balance_unavailable",) == guard.check("1.00", "ARS").codes

    @pytest.mark.parametrize(("rule", "max_stale", "codes"), [
        (when(MaxBalanceAge(0), currency="ARS"), 600, ("balance_unavailable",)),
        (when(MaxBalanceAge(600), currency="ARS"), 0, ()),
        (when(MaxBalanceAge(0), currency="MXN"), 600, ()),
        (all_of(MaxBalanceAge(600), when(MaxBalanceAge(0), provider="luxcore")), 600,
         ("balance_unavailable",)),
        (any_of(MaxBalanceAge(0), MaxPayout({"ARS": "10"})), 600, ()),
    ], ids=["in-scope", "in-scope-longer", "out-of-scope", "smallest-of-all_of",
            "any_of-without-a-limit"])
    def test_a_max_balance_age_anywhere_sets_the_limit_for_the_requests_it_judges(
        self, luxcore: LuxCoreEmulator, rule: Rule, max_stale: float, codes: tuple[str, ...]
    ) -> None:
        """Under ``when`` (in scope), in an ``all_of`` or in every alternative of an ``any_of``.

        Else ``max_stale``: the cached balance serves while within it, and the rules judge it.
        """
        with luxcore_fetcher(luxcore, requests_per_minute=1) as fetcher:
            guard = PayoutGuard(fetcher, [rule], cache_ttl=0, max_stale=max_stale)
            guard.check("1.00", "ARS")
            assert codes == guard.check("1.00", "ARS").codes

    @pytest.mark.parametrize("shared", [False, True], ids=["local", "sqlite"])
    def test_each_retry_takes_a_request_from_the_budget(
        self, luxcore: LuxCoreEmulator, tmp_path: Path, shared: bool
    ) -> None:
        """One request a minute and a provider answering 503: one request, never a retry."""
        luxcore.fail_next("http_503", times=20)
        retry = RetryPolicy(attempts=3, deadline=5.0, backoff=0.01, max_backoff=0.02)
        with (luxcore_fetcher(luxcore, requests_per_minute=1, retry=retry) as fetcher,
              SqliteReservations(tmp_path / "holds.db") as store):
            guard = PayoutGuard(fetcher, cache_ttl=5, reservations=store if shared else None)
            first = guard.check("1.00", "ARS")
            second = guard.check("1.00", "ARS")
        assert 1 == luxcore.balance_requests
        assert ("balance_unavailable",) == first.codes == second.codes
        assert "request budget lets the next request through" in first.reasons[0].message
        assert "BudgetSpent" in second.reasons[0].message

    def test_retries_within_the_budget_are_made(self, luxcore: LuxCoreEmulator) -> None:
        """A 503 then an answer: the retry fits the budget and the check is allowed."""
        luxcore.fail_next("http_503")
        retry = RetryPolicy(attempts=3, deadline=5.0, backoff=0.01, max_backoff=0.02)
        with luxcore_fetcher(luxcore, requests_per_minute=90, retry=retry) as fetcher:
            assert PayoutGuard(fetcher, cache_ttl=5).check("1.00", "ARS").allowed
        assert 2 == luxcore.balance_requests

    def test_the_budget_error_is_a_rate_limit_of_our_own(self) -> None:
        error = BudgetSpent("spent", provider="luxcore", retry_after=3.0)
        assert (3.0, "luxcore") == (error.retry_after, error.provider)

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True, "90"])
    def test_a_budget_must_be_a_whole_number_of_requests(
        self, luxcore: LuxCoreEmulator, bad: object
    ) -> None:
        with pytest.raises(ConfigurationError, match=r"requests_per_minute|whole number"):
            luxcore_fetcher(luxcore, requests_per_minute=bad)


class TestRefreshAfterCommit:
    def test_a_commit_asks_for_a_fresher_balance_after_refresh_after_commit(self) -> None:
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=30, refresh_after_commit=2, clock=clock)
        with guard.reserve("1.00", "ARS", payout_id="p-1"):
            pass
        clock.advance(1.5)
        guard.check("1.00", "ARS")
        clock.advance(1)
        guard.check("1.00", "ARS")
        assert 2 == fetcher.calls

    def test_none_keeps_the_balance_for_its_ttl(self) -> None:
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=30, refresh_after_commit=None, clock=clock)
        with guard.reserve("1.00", "ARS", payout_id="p-1"):
            pass
        clock.advance(10)
        guard.check("1.00", "ARS")
        assert 1 == fetcher.calls


class TestFrozenFundsKnowsOurOwnPayouts:
    def test_our_own_frozen_payouts_do_not_trip_frozen_funds(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """Six 1,000 ARS payouts frozen at LuxCore (ratio 0.6 > 0.5): still allowed."""
        with luxcore_fetcher(luxcore) as fetcher:
            # The emulator freezes as the request returns: no settle window is needed here.
            guard = PayoutGuard(fetcher, [FrozenFunds(max_ratio="0.5")], cache_ttl=0,
                                settle_lag=0)
            for n in range(6):
                with guard.reserve("1000.00", "ARS", payout_id=f"p-{n}"):
                    luxcore.create_withdrawal("ARS", "1000.00")
            decision = guard.check("100.00", "ARS")
        assert decision.balance is not None
        assert (Decimal("4000.00"), Decimal("6000.00")) == (
            decision.balance.available, decision.balance.frozen)
        assert (True, ()) == (decision.allowed, decision.codes)

    def test_frozen_funds_nobody_here_sent_still_deny(self, luxcore: LuxCoreEmulator) -> None:
        """Our 2,000 is explained; 6,000 more frozen by someone else is not (ratio 0.6)."""
        with luxcore_fetcher(luxcore) as fetcher:
            guard = PayoutGuard(fetcher, [FrozenFunds(max_ratio="0.5")], cache_ttl=0,
                                settle_lag=0)
            for n in range(2):
                with guard.reserve("1000.00", "ARS", payout_id=f"p-{n}"):
                    luxcore.create_withdrawal("ARS", "1000.00")
            luxcore.create_withdrawal("ARS", "6000.00")
            decision = guard.check("100.00", "ARS")
        assert ("frozen_funds",) == decision.codes
        reason = decision.reasons[0]
        assert Decimal("2000.00") == reason.details["own_in_flight"]
        assert "2000.00 ARS of it our own recent payouts" in reason.message

    @pytest.mark.parametrize("rule", [
        when(FrozenFunds(max_ratio="0.5"), currency="ARS"),
        all_of(MaxBalanceAge(60), FrozenFunds(max_ratio="0.5")),
        any_of(FrozenFunds(max_ratio="0.5"), MaxPayout({"ARS": "1.00"})),
        rules.load([{"type": "frozen_funds", "max_ratio": "0.5", "provider": "static"}]),
    ], ids=["when", "all_of", "any_of", "loaded with a scope"])
    def test_a_scoped_or_nested_rule_knows_them_too(self, rule: Rule) -> None:
        """Our own 6,000 frozen of 10,000 explain the ratio wherever the rule sits."""
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, [rule], cache_ttl=0, settle_lag=0, clock=clock)
        with guard.reserve("6000.00", "ARS", payout_id="p-1"):
            pass
        fetcher.set("ARS", "4000.00", frozen="6000.00")
        decision = guard.check("100.00", "ARS")
        assert (True, (), Decimal("6000.00")) == (
            decision.allowed, decision.codes, decision.own_in_flight)

    def test_payouts_older_than_the_window_explain_nothing(self) -> None:
        clock = FakeClock()
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, [FrozenFunds(max_ratio="0.5")], cache_ttl=0,
                            own_payouts_window=600, clock=clock)
        with guard.reserve("1.00", "ARS", payout_id="p-1"):
            pass
        fetcher.set("ARS", "4000.00", frozen="6000.00")
        assert ("frozen_funds",) == guard.check("1.00", "ARS").codes  # 1.00 explains little
        clock.advance(601)
        assert Decimal(0) == guard.check("1.00", "ARS").reasons[0].details["own_in_flight"]


def step_back(path: Path, seconds: float) -> None:
    """Leave *path* as a host clock stepped back by *seconds* finds it: every time that later."""
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE shared SET written_at = written_at + ?", (seconds,))
        conn.execute("UPDATE budgets SET tat = tat + ?", (seconds,))
    conn.close()


class TestHostClockStepsBack:
    def test_a_balance_shared_before_the_step_is_stale_not_fresh(self, tmp_path: Path) -> None:
        """Written "600 s from now": the next reader fetches anew and sees the provider's fall."""
        fetcher = StaticFetcher({"ARS": "10000.00"})
        path = tmp_path / "holds.db"
        with SqliteReservations(path) as one, SqliteReservations(path) as two:
            PayoutGuard(fetcher, [MaxBalanceAge(10)], reservations=one).check("1.00", "ARS")
            step_back(path, 600)
            fetcher.set("ARS", "2000.00")
            decision = PayoutGuard(fetcher, [MaxBalanceAge(10)], reservations=two).check(
                "5000.00", "ARS")
        assert (False, ("insufficient_funds",), 2) == (
            decision.allowed, decision.codes, fetcher.calls)

    def test_with_the_budget_spent_a_balance_of_unknown_age_is_not_used(
        self, luxcore: LuxCoreEmulator, tmp_path: Path
    ) -> None:
        """The budget refuses the refetch: the denial says so, no balance of unknown age serves."""
        path = tmp_path / "holds.db"
        with (luxcore_fetcher(luxcore, requests_per_minute=1) as fetcher,
              SqliteReservations(path) as one, SqliteReservations(path) as two):
            PayoutGuard(fetcher, reservations=one).check("1.00", "ARS")
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE shared SET written_at = written_at + 600")
            conn.close()
            denied = PayoutGuard(fetcher, reservations=two).check("1.00", "ARS")
        assert (("balance_unavailable",), "budget") == (
            denied.codes, denied.reasons[0].details.get("cause"))
        assert 1 == luxcore.balance_requests

    def test_a_budget_stored_before_the_step_starts_afresh(self, tmp_path: Path) -> None:
        """A budget spent "600 s from now" lets the next request through, not in ten minutes."""
        with SqliteReservations(tmp_path / "holds.db") as store:
            assert 0.0 == store.spend("budget|luxcore", per_minute=90)
            step_back(tmp_path / "holds.db", 600)
            assert 0.0 == store.spend("budget|luxcore", per_minute=90)

    def test_a_budget_within_its_reach_still_waits(self, tmp_path: Path) -> None:
        """One request a minute, spent: the next waits the minute, the step-back rule aside."""
        with SqliteReservations(tmp_path / "holds.db") as store:
            assert 0.0 == store.spend("budget|one", per_minute=1)
            assert 59.0 < store.spend("budget|one", per_minute=1) <= 60.0


@pytest.mark.skipif(not hasattr(SqliteReservations, "read_shared"),
                    reason="SqliteReservations shares no balances yet")
class TestSharedBalances:
    def test_guards_on_one_store_share_one_fetch(self, tmp_path: Path) -> None:
        """Two guards (two processes' worth of caches) on one SQLite file: one request."""
        fetcher = StaticFetcher({"ARS": "10000.00"})
        path = tmp_path / "holds.db"
        with SqliteReservations(path) as one, SqliteReservations(path) as two:
            assert isinstance(one, FleetStore)
            first = PayoutGuard(fetcher, reservations=one).check("1.00", "ARS")
            second = PayoutGuard(fetcher, reservations=two).check("1.00", "ARS")
        assert (True, True, 1) == (first.allowed, second.allowed, fetcher.calls)
        assert first.balance is not None
        assert second.balance is not None
        assert first.balance.model_dump(exclude={"requested_at"}) == second.balance.model_dump(
            exclude={"requested_at"})

    def test_share_balances_false_fetches_for_itself(self, tmp_path: Path) -> None:
        fetcher = StaticFetcher({"ARS": "10000.00"})
        path = tmp_path / "holds.db"
        with SqliteReservations(path) as one, SqliteReservations(path) as two:
            PayoutGuard(fetcher, reservations=one, share_balances=False).check("1", "ARS")
            PayoutGuard(fetcher, reservations=two, share_balances=False).check("1", "ARS")
        assert 2 == fetcher.calls

    def test_a_shared_balance_is_dated_on_the_readers_clock(self, tmp_path: Path) -> None:
        """Hosts 60 s apart: each sees the request time on its own clock, a duration apart."""
        ahead, behind = FakeClock(1_700_000_060.0), FakeClock(1_700_000_000.0)
        fetcher = StaticFetcher({"ARS": "10000.00"}, clock=behind)
        path = tmp_path / "holds.db"
        with SqliteReservations(path) as one, SqliteReservations(path) as two:
            PayoutGuard(fetcher, reservations=one, clock=behind).check("1", "ARS")
            seen = PayoutGuard(fetcher, reservations=two, clock=ahead).check("1", "ARS")
        assert seen.balance is not None
        assert seen.balance.requested_at is not None
        assert 1_700_000_060.0 == pytest.approx(seen.balance.requested_at.timestamp(), abs=1)

    def test_a_process_that_takes_the_balance_it_waited_for_leaves_no_lease(
        self, tmp_path: Path
    ) -> None:
        """A waiter takes the fetch it waited for; once that is stale, the next process leads."""
        fetcher = BlockingFetcher({"BRL": "1.00"})
        path = tmp_path / "holds.db"
        with (SqliteReservations(path) as one, SqliteReservations(path) as two,
              SqliteReservations(path) as three):
            leader = BalanceCache(fetcher, ttl=0.3, share=one, name="b", wait_timeout=10)
            waiter = BalanceCache(fetcher, ttl=0.3, share=two, name="b", wait_timeout=10)
            later = BalanceCache(fetcher, ttl=0.3, share=three, name="b", wait_timeout=1)
            threads = [threading.Thread(target=leader.get, args=("BRL",)),
                       threading.Thread(target=waiter.get, args=("BRL",), kwargs={"force": True})]
            threads[0].start()
            wait_until_blocked(threads[:1])
            threads[1].start()
            time.sleep(0.2)  # the waiter polls the store
            fetcher.release.set()
            for thread in threads:
                thread.join(10)
            time.sleep(0.35)  # the shared balance is stale now
            started = time.monotonic()
            try:
                later.get("BRL")
            except ProviderUnavailable:
                pytest.fail("a lease nobody used kept the next process waiting")
        assert 2 == fetcher.calls
        assert time.monotonic() - started < 0.5

    def test_a_waiter_left_with_less_than_a_fetch_does_not_lead_one(
        self, luxcore: LuxCoreEmulator, tmp_path: Path
    ) -> None:
        """A hanging provider: the leader fails at its 2 s deadline; the waiter gives up then."""
        luxcore.slow_seconds = 5
        luxcore.fail_next("slow", times=3)
        retry = RetryPolicy(attempts=1, deadline=2.0)
        path = tmp_path / "holds.db"
        with (luxcore_fetcher(luxcore, retry=retry) as fetcher,
              SqliteReservations(path) as one, SqliteReservations(path) as two):
            leader, waiter = PayoutGuard(fetcher, reservations=one), PayoutGuard(
                fetcher, reservations=two)
            leading = threading.Thread(target=leader.check, args=("1.00", "ARS"))
            leading.start()
            time.sleep(0.1)
            started = time.monotonic()
            decision = waiter.check("1.00", "ARS")
            took = time.monotonic() - started
            leading.join(10)
            luxcore.clear_faults()
        assert (("balance_unavailable",), 1) == (decision.codes, luxcore.balance_requests)
        assert took < 2.5  # when the leader failed, not after a fetch of its own

    def test_a_store_that_cannot_share_is_refused_when_sharing_is_asked_for(self) -> None:
        with pytest.raises(ConfigurationError, match="share_balances"):
            PayoutGuard(StaticFetcher({"ARS": "1"}), share_balances=True)


class TestRoundTrips:
    def test_through_redis_a_reserve_is_one_script_and_a_commit_another(
        self, redis_url: str
    ) -> None:
        """Once the key's held total is known, reserve + commit cost two script calls.

        Two FCALL (EVALSHA before Redis 7).
        """
        import redis

        client = redis.Redis.from_url(redis_url)
        store = RedisReservations(redis_url, namespace=f"trips-{uuid.uuid4().hex}")
        guard = PayoutGuard(StaticFetcher({"ARS": "10000.00"}), reservations=store,
                            share_balances=False)
        with guard.reserve("1.00", "ARS", payout_id="warm-up"):
            pass

        def scripts() -> int:
            stats = client.info("commandstats")
            return sum(int(stats.get(name, {}).get("calls", 0))
                       for name in ("cmdstat_evalsha", "cmdstat_eval", "cmdstat_fcall"))

        before = scripts()
        for n in range(5):
            with guard.reserve("1.00", "ARS", payout_id=f"p-{n}"):
                pass
        assert 10 == scripts() - before
        decision = guard.check("1.00", "ARS")
        assert Decimal("6.00") == decision.reserved  # the judged totals are the store's
        store.close()
        client.close()

    def test_a_reserve_judged_on_an_outgrown_total_says_what_the_store_held(self) -> None:
        """Another guard's holds since: the hold is taken, and its decision counts them."""
        store = InMemoryReservations()
        fetcher = StaticFetcher({"ARS": "10000.00"})
        one, two = (PayoutGuard(fetcher, reservations=store) for _ in range(2))
        with one.reserve("1.00", "ARS", payout_id="a"):
            pass
        with two.reserve("500.00", "ARS", payout_id="b"):
            pass
        with one.reserve("1.00", "ARS", payout_id="c") as reservation:
            pass
        assert (Decimal("501.00"), Decimal("9499.00")) == (
            reservation.decision.reserved, reservation.decision.max_payable)

    def test_a_payout_denied_on_a_remembered_total_is_judged_on_the_stores(self) -> None:
        """The remembered total counted holds since released: the store's own allows it."""
        store = InMemoryReservations()
        fetcher = StaticFetcher({"ARS": "1000.00"})
        guard = PayoutGuard(fetcher, reservations=store)
        reservation = guard.reserve("900.00", "ARS", payout_id="big")
        reservation.release()  # the guard remembers 900.00 held; the store holds nothing
        with guard.reserve("800.00", "ARS", payout_id="next") as again:
            pass
        assert (True, Decimal(0)) == (again.decision.allowed, again.decision.reserved)
