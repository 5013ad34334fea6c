"""Clocks: durations on the monotonic clock, holds counted against ``min(as_of, now)``.

Each test runs a guard against a real Luxtak emulator on 127.0.0.1 (its ``time`` is the
balance's ``as_of``) with a ``FakeClock`` as the guard's clock, and steps one clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from guard import PayoutDenied, PayoutGuard
from guard._clock import SYSTEM_CLOCKS, Clocks, clocks_of, counted_since
from guard.fetchers import LuxtakFetcher, RetryPolicy
from guard.stores import (
    InMemoryReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
)
from guard.testing import FakeClock, StaticFetcher
from guard.testing.emulators import LuxtakEmulator
from rules import MaxBalanceAge, Rule
from tests._redis_server import shared_redis

FAST = RetryPolicy(attempts=1, deadline=5.0)


@pytest.fixture
def emulator() -> Iterator[LuxtakEmulator]:
    with LuxtakEmulator(balances={"USD": "100.00"}) as emu:
        yield emu


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReservationStore]:
    """Yield each kind of store: the issue saw holds dropped "in every store"."""
    if request.param == "memory":
        yield InMemoryReservations()
    elif request.param == "sqlite":
        with SqliteReservations(tmp_path / "holds.db") as sqlite:
            yield sqlite
    else:
        url = request.getfixturevalue("redis_url")
        with RedisReservations(url, namespace=f"clocks-{uuid.uuid4().hex}") as made:
            yield made


def _guard(emu: LuxtakEmulator, clock: FakeClock, store: ReservationStore | None = None, *,
           cache_ttl: float = 5.0, rules: Sequence[Rule] = ()) -> PayoutGuard:
    fetcher = LuxtakFetcher(emu.app_id, emu.app_key, base_url=emu.url, retry=FAST)
    return PayoutGuard(fetcher, rules, reservations=store, clock=clock, cache_ttl=cache_ttl)


def _pay_80_three_times(guard: PayoutGuard) -> int:
    """Reserve and commit 80.00 USD three times; return how many went out."""
    sent = 0
    for number in range(3):
        try:
            with guard.reserve("80.00", "USD", payout_id=f"po-{number}"):
                sent += 1
        except PayoutDenied:
            pass
    return sent


class TestCountedSince:
    def test_is_the_earlier_of_as_of_and_now_minus_the_lag(self) -> None:
        """Holds count from min(as_of, now) - settle_lag."""
        assert 70.0 == counted_since(100.0, 200.0, 30.0)
        assert 30.0 == counted_since(100.0, 60.0, 30.0)


class TestFakeClock:
    def test_step_moves_only_the_wall_clock(self) -> None:
        """step() changes the wall time either way; monotonic time stays put."""
        clock = FakeClock(1000.0)
        clock.step(-40)
        clock.step(3600)
        assert (4560.0, 0.0) == (clock.time(), clock.monotonic())

    def test_advance_moves_both_clocks_forward_only(self) -> None:
        """advance() is time passing: both clocks move; it refuses to go back."""
        clock = FakeClock(1000.0)
        clock.advance(5)
        assert (1005.0, 5.0) == (clock.time(), clock.monotonic())
        with pytest.raises(ValueError, match="step"):
            clock.advance(-1)

    def test_is_a_clocks_and_a_wall_clock_callable(self) -> None:
        """A FakeClock is accepted as Clocks and is callable for fetchers' clock=."""
        clock = FakeClock(1000.0)
        assert isinstance(clock, Clocks)
        assert clocks_of(clock) is clock
        assert 1000.0 == clock()

    def test_no_clock_means_the_system_clocks(self) -> None:
        """clocks_of(None) is time.time and time.monotonic."""
        assert clocks_of(None) is SYSTEM_CLOCKS
        assert abs(time.time() - SYSTEM_CLOCKS.time()) < 60


class TestGuardClockSteps:
    def test_a_step_back_of_40_s_never_uncounts_a_commit(
        self, emulator: LuxtakEmulator, store: ReservationStore
    ) -> None:
        """After an NTP step back, three 80.00 payouts on 100.00: only the first goes out."""
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, store, cache_ttl=60)
        assert guard.check("1.00", "USD").allowed  # the balance is now cached
        clock.step(-40)
        assert 1 == _pay_80_three_times(guard)
        guard.close()

    def test_a_step_forward_of_1_h_neither_ages_nor_drops_anything(
        self, emulator: LuxtakEmulator, store: ReservationStore
    ) -> None:
        """After a step forward of 1 h the cached balance is still fresh and commits count."""
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, store, cache_ttl=60, rules=[MaxBalanceAge(60)])
        assert guard.check("1.00", "USD").allowed
        clock.step(3600)
        decision = guard.check("1.00", "USD")
        assert (True, 1) == (decision.allowed, emulator.balance_requests)
        assert 1 == _pay_80_three_times(guard)
        guard.close()

    @pytest.mark.parametrize("step", [40, 3600])
    @pytest.mark.parametrize("cache_ttl", [0, 5])
    def test_a_step_forward_after_a_commit_never_uncounts_it(
        self, emulator: LuxtakEmulator, store: ReservationStore, step: float, cache_ttl: float
    ) -> None:
        """The step makes the commit look older than settle_lag; 0.1 s later it still counts."""
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, store, cache_ttl=cache_ttl)
        with guard.reserve("80.00", "USD", payout_id="po-0"):
            pass
        clock.step(step)
        clock.advance(cache_ttl + 0.1)  # a new balance: it cannot show the payout yet
        decision = guard.check("80.00", "USD")
        assert (False, Decimal("80.00")) == (decision.allowed, decision.reserved)
        guard.close()

    def test_after_a_step_forward_a_settled_commit_stops_counting(
        self, emulator: LuxtakEmulator
    ) -> None:
        """Once settle_lag has passed on the monotonic clock, the provider's balance tells."""
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, cache_ttl=0)
        with guard.reserve("80.00", "USD", payout_id="po-0"):
            pass
        clock.step(3600)
        assert Decimal("80.00") == guard.check("1.00", "USD").reserved
        emulator.set_balance("USD", "20.00")  # the payout went out
        clock.advance(guard.settle_lag + 0.1)
        assert Decimal("0.00") == guard.check("1.00", "USD").reserved
        guard.close()

    def test_the_cache_expires_on_monotonic_time(self, emulator: LuxtakEmulator) -> None:
        """A wall-clock step back does not keep a balance cached past its ttl."""
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, cache_ttl=5)
        guard.check("1.00", "USD")
        clock.step(-600)
        clock.advance(6)
        guard.check("1.00", "USD")
        assert 2 == emulator.balance_requests
        guard.close()


class TestProviderClockSkew:
    def test_a_provider_45_s_ahead_does_not_drop_holds(
        self, emulator: LuxtakEmulator, store: ReservationStore
    ) -> None:
        """With Luxtak's time 45 s ahead, three 80.00 payouts on 100.00: only one goes out."""
        emulator.server_time_offset = 45
        guard = _guard(emulator, FakeClock(time.time()), store, cache_ttl=60)
        assert 1 == _pay_80_three_times(guard)
        guard.close()

    def test_a_provider_45_s_behind_does_not_drop_holds(
        self, emulator: LuxtakEmulator, store: ReservationStore
    ) -> None:
        """With Luxtak's time 45 s behind, holds count too: only one 80.00 of three goes out."""
        emulator.server_time_offset = -45
        guard = _guard(emulator, FakeClock(time.time()), store, cache_ttl=60)
        assert 1 == _pay_80_three_times(guard)
        guard.close()

    def test_a_skew_beyond_30_s_is_a_warning_and_a_log_event(
        self, emulator: LuxtakEmulator
    ) -> None:
        """A balance stamped 45 s ahead warns clock_skew (seconds in details) and logs it."""
        emulator.server_time_offset = 45
        guard = _guard(emulator, FakeClock(time.time()))
        with capture_logs() as logs:
            decision = guard.check("1.00", "USD")
        warnings = {w.code: w for w in decision.warnings}
        assert decision.allowed
        skew = warnings["clock_skew"].details["skew_seconds"]
        assert isinstance(skew, Decimal)
        assert Decimal(40) <= skew <= Decimal(50)
        skews = [e for e in logs if e["event"] == "payout_guard.clock_skew"]
        assert ["luxtak"] == [e["provider"] for e in skews]
        assert decision.balance is not None
        assert abs(decision.balance.as_of.timestamp() - time.time()) < 10  # as of arrival
        guard.close()

    def test_a_small_skew_is_not_a_warning(self, emulator: LuxtakEmulator) -> None:
        """A provider clock 10 s ahead is used as of arrival, without a warning."""
        emulator.server_time_offset = 10
        guard = _guard(emulator, FakeClock(time.time()))
        assert () == guard.check("1.00", "USD").warnings
        guard.close()

    def test_a_balance_from_the_future_still_grows_old(self, emulator: LuxtakEmulator) -> None:
        """Stamped 120 s ahead, a balance held 61 s fails MaxBalanceAge(60) and is refetched."""
        emulator.server_time_offset = 120
        clock = FakeClock(time.time())
        guard = _guard(emulator, clock, cache_ttl=300, rules=[MaxBalanceAge(60)])
        guard.check("1.00", "USD")
        clock.advance(61)
        guard.check("1.00", "USD")
        assert 2 == emulator.balance_requests
        guard.close()

    def test_a_static_balance_stamped_120_s_ahead_does_not_drop_holds(
        self, store: ReservationStore
    ) -> None:
        """A StaticFetcher balance stamped 120 s in the future: one 80.00 of three goes out."""
        clock = FakeClock(time.time())
        ahead = datetime.fromtimestamp(clock.time() + 120, UTC)
        fetcher = StaticFetcher({"USD": {"available": "100.00", "as_of": ahead}}, clock=clock)
        guard = PayoutGuard(fetcher, reservations=store, clock=clock, cache_ttl=60)
        assert 1 == _pay_80_three_times(guard)
        assert "clock_skew" in {w.code for w in guard.check("1.00", "USD").warnings}

