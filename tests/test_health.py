"""guard.health(): whether each provider answered its last balance request, and the store answers.

Providers are real loopback emulators with injected faults; stores are the real ones.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard import (
    AsyncPayoutGuard,
    BalanceSnapshot,
    Health,
    PayoutGuard,
    ProviderHealth,
    StoreHealth,
)
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.stores import SqliteReservations
from guard.testing import FakeClock, StaticFetcher
from guard.testing.emulators import Fault, LuxCoreEmulator

START = 1_700_000_000.0
PROBES = 16


@pytest.fixture
def luxcore() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={"ARS": "1000.00"}) as emulator:
        yield emulator


def fetcher(emulator: LuxCoreEmulator) -> LuxCoreFetcher:
    return LuxCoreFetcher(emulator.api_key, base_url=emulator.url,
                          retry=RetryPolicy(attempts=1, deadline=5))


def provider(health: Health) -> ProviderHealth:
    (only,) = health.providers.values()
    return only


def outcome(health: Health) -> tuple[bool | None, str | None]:
    """Return what a health says of its provider's last request: ok, and the last error."""
    part = provider(health)
    return part.ok, part.last_error


class KeepsNoDeadline:
    """A LuxCore fetcher that claims a 0.2 s deadline and keeps its own 5 s one.

    Like a provider SDK call without a timeout: the guard waits ``deadline + 1`` s for it, the
    request runs on (over a real socket) until the emulator answers or stops.
    """

    name = "luxcore"
    deadline = 0.2

    def __init__(self, emulator: LuxCoreEmulator) -> None:
        self._fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url,
                                       retry=RetryPolicy(attempts=1, deadline=5))

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        return self._fetcher.fetch(currency)


def probe_in_threads(guard: PayoutGuard) -> list[Health]:
    """Return what PROBES threads, started together, get from ``health(probe=True)``."""
    start = threading.Barrier(PROBES)
    healths: list[Health] = []
    lock = threading.Lock()

    def work() -> None:
        start.wait(5)
        health = guard.health(probe=True)
        with lock:
            healths.append(health)

    threads = [threading.Thread(target=work, name=f"probe-{i}") for i in range(PROBES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [] == [t.name for t in threads if t.is_alive()]
    return healths


class TestHealth:
    def test_before_any_request_the_provider_is_unknown_and_not_healthy(self) -> None:
        """No balance request yet: ok and ages are None, and that is not healthy."""
        health = PayoutGuard(StaticFetcher({"BRL": "1.00"})).health()
        assert ProviderHealth(provider="static", ok=None) == provider(health)
        assert (False, True) == (health.healthy, health.store.ok)

    def test_after_a_check_the_last_request_succeeded_and_has_an_age(self) -> None:
        """Ages are measured on the guard's monotonic clock, from the end of the request."""
        clock = FakeClock(START)
        guard = PayoutGuard(StaticFetcher({"BRL": "1.00"}, clock=clock), clock=clock)
        guard.check("1", "BRL")
        clock.advance(7)
        health = guard.health()
        assert ProviderHealth(provider="static", ok=True, age_seconds=7.0) == provider(health)
        assert StoreHealth(store="InMemoryReservations", ok=True) == health.store
        assert health.healthy

    def test_a_down_provider_is_not_healthy_and_names_the_error_class(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """A check against a failing emulator leaves ok False and the error's class."""
        luxcore.fail_next(Fault.HTTP_503)
        with PayoutGuard(fetcher(luxcore), cache_ttl=0) as guard:
            assert ("balance_unavailable",) == guard.check("1", "ARS").codes
            health = guard.health()
        assert (False, "ProviderUnavailable", False) == (
            provider(health).ok, provider(health).last_error, health.healthy
        )

    def test_a_recovered_provider_is_healthy_and_keeps_its_last_error(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """After a failure then a success: healthy, and the failure is still reported."""
        luxcore.fail_next(Fault.RATE_LIMIT)
        with PayoutGuard(fetcher(luxcore), cache_ttl=0) as guard:
            guard.check("1", "ARS")
            guard.check("1", "ARS")
            health = guard.health()
        assert (True, "ProviderRateLimited", True) == (
            provider(health).ok, provider(health).last_error, health.healthy
        )

    def test_a_check_that_gave_up_on_a_hung_provider_leaves_it_failing(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """After a success, a check whose fetch hangs past its wait: health says failing."""
        with PayoutGuard(KeepsNoDeadline(luxcore), cache_ttl=0) as guard:
            assert guard.check("1", "ARS").allowed
            luxcore.fail_next(Fault.SLOW)
            assert ("balance_unavailable",) == guard.check("1", "ARS").codes
            health = guard.health()
        assert (False, "ProviderUnavailable", False) == (*outcome(health), health.healthy)

    def test_health_alone_sends_no_request(self, luxcore: LuxCoreEmulator) -> None:
        """Without probe, health reads what was recorded: the provider is not asked."""
        with PayoutGuard(fetcher(luxcore)) as guard:
            guard.health()
        assert 0 == luxcore.balance_requests

    def test_probe_asks_the_provider_once_and_caches_nothing(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """probe=True makes one request; the next check still fetches its own balance."""
        with PayoutGuard(fetcher(luxcore)) as guard:
            probed = guard.health(probe=True)
            after_probe = luxcore.balance_requests
            guard.check("1", "ARS")
        assert (True, 1, 2) == (probed.healthy, after_probe, luxcore.balance_requests)

    def test_probe_of_a_down_provider_reports_it_without_raising(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """probe=True against an emulator answering 503 reports the failure."""
        luxcore.fail_next(Fault.HTTP_503)
        with PayoutGuard(fetcher(luxcore)) as guard:
            health = guard.health(probe=True)
        assert (False, "ProviderUnavailable") == (provider(health).ok,
                                                  provider(health).last_error)

    def test_a_store_that_lost_its_file_does_not_answer(self, tmp_path: Path) -> None:
        """A SQLite file deleted while open: the store part fails with StoreUnavailable."""
        path = tmp_path / "holds.db"
        store = SqliteReservations(path)
        guard = PayoutGuard(StaticFetcher({"BRL": "1.00"}), reservations=store)
        guard.check("1", "BRL")
        path.unlink()
        health = guard.health()
        store.close()
        assert (StoreHealth(store="SqliteReservations", ok=False, error="StoreUnavailable"),
                True, False) == (health.store, provider(health).healthy, health.healthy)

    def test_the_json_form_says_whether_it_is_healthy(self) -> None:
        """The JSON form carries healthy, at the top and per provider."""
        guard = PayoutGuard(StaticFetcher({"BRL": "1.00"}))
        guard.check("1", "BRL")
        document = guard.health().model_dump(mode="json")
        assert (True, True) == (document["healthy"], document["providers"]["static"]["healthy"])


class TestProbeSharesOneRequest:
    def test_sixteen_threads_probing_at_once_send_one_request(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The first probe's request takes 0.5 s; the other 15 wait for it and report it."""
        luxcore.slow_seconds = 0.5
        luxcore.fail_next(Fault.SLOW)
        with PayoutGuard(fetcher(luxcore)) as guard:
            healths = probe_in_threads(guard)
        assert (1, PROBES, {(True, None)}) == (
            luxcore.balance_requests, len(healths), {outcome(h) for h in healths})

    def test_sixteen_threads_share_one_failed_request_too(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The request times out after 1 s (no success to reuse): all 16 report that one."""
        luxcore.fail_next(Fault.SLOW)
        hurried = LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url,
                                 retry=RetryPolicy(attempts=1, deadline=1))
        with PayoutGuard(hurried) as guard:
            healths = probe_in_threads(guard)
        assert (1, PROBES, {(False, "ProviderUnavailable")}) == (
            luxcore.balance_requests, len(healths), {outcome(h) for h in healths})

    def test_sixteen_tasks_probing_at_once_send_one_request(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """On an event loop, concurrent awaited probes share one request as threads do."""
        luxcore.slow_seconds = 0.5
        luxcore.fail_next(Fault.SLOW)

        async def main() -> list[Health]:
            async with AsyncPayoutGuard(fetcher(luxcore)) as guard:
                return list(await asyncio.gather(
                    *(guard.health(probe=True) for _ in range(PROBES))))

        healths = asyncio.run(main())
        assert (1, PROBES, {(True, None)}) == (
            luxcore.balance_requests, len(healths), {outcome(h) for h in healths})

    def test_a_probe_within_the_cache_ttl_of_a_successful_request_sends_none(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """A check's request 4.9 s ago answers a probe (cache_ttl 5); at 5 s one is sent."""
        clock = FakeClock(START)
        with PayoutGuard(fetcher(luxcore), cache_ttl=5, clock=clock) as guard:
            guard.check("1", "ARS")
            clock.advance(4.9)
            recent = provider(guard.health(probe=True))
            after_recent = luxcore.balance_requests
            clock.advance(0.1)
            fresh = provider(guard.health(probe=True))
        assert ((True, 4.9), 1) == ((recent.ok, recent.age_seconds), after_recent)
        assert ((True, 0.0), 2) == ((fresh.ok, fresh.age_seconds), luxcore.balance_requests)

    def test_a_probe_after_a_failed_request_asks_again(self, luxcore: LuxCoreEmulator) -> None:
        """Failures are not kept: within the cache_ttl of a 503, a probe sees the recovery."""
        luxcore.fail_next(Fault.HTTP_503)
        with PayoutGuard(fetcher(luxcore), cache_ttl=5) as guard:
            guard.check("1", "ARS")
            health = guard.health(probe=True)
        assert ((True, "ProviderUnavailable"), 2) == (outcome(health),
                                                     luxcore.balance_requests)


class TestProbeWithinTheBudget:
    def test_with_the_budget_spent_a_probe_sends_nothing_and_says_so(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """One request a minute, spent by a check 10 s ago: no request; the wait is 50 s."""
        clock = FakeClock(START)
        with (LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, requests_per_minute=1,
                             retry=RetryPolicy(attempts=1, deadline=5)) as budgeted,
              PayoutGuard(budgeted, cache_ttl=5, clock=clock) as guard):
            guard.check("1", "ARS")
            clock.advance(10)
            probed = provider(guard.health(probe=True))
        assert 1 == luxcore.balance_requests
        assert (True, 10.0, 50.0) == (probed.ok, probed.age_seconds, probed.budget_wait_seconds)

    def test_a_probe_takes_its_first_request_and_each_retry_from_the_budget(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """A budget that lets two requests through at once, three attempts against 503s.

        Two requests are sent: the probe's first takes one, its first retry the other, and
        the second retry is refused.
        """
        luxcore.fail_next(Fault.HTTP_503, times=3)
        retrying = RetryPolicy(attempts=3, deadline=5, backoff=0.001, max_backoff=0.002)
        with (LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, requests_per_minute=20,
                             retry=retrying) as budgeted,
              PayoutGuard(budgeted) as guard):
            probed = provider(guard.health(probe=True))
        assert 2 == luxcore.balance_requests
        assert (False, "ProviderUnavailable") == (probed.ok, probed.last_error)
        assert probed.budget_wait_seconds is not None
        assert probed.budget_wait_seconds > 0

    def test_a_probe_spends_from_the_budget_the_fleet_shares(
        self, luxcore: LuxCoreEmulator, tmp_path: Path
    ) -> None:
        """Two guards on one SQLite file, one request a minute: the first's check spends it.

        The second guard has sent no request; its probe is refused by the shared budget, so
        it still knows nothing of the provider and says how long the budget is spent for.
        """
        path = tmp_path / "holds.db"
        with (LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, requests_per_minute=1,
                             retry=RetryPolicy(attempts=1, deadline=5)) as budgeted,
              SqliteReservations(path) as one, SqliteReservations(path) as two,
              PayoutGuard(budgeted, reservations=one) as first,
              PayoutGuard(budgeted, reservations=two) as second):
            assert first.check("1", "ARS").allowed
            probed = provider(second.health(probe=True))
        assert 1 == luxcore.balance_requests
        assert (None, False) == (probed.ok, probed.healthy)
        assert probed.budget_wait_seconds is not None
        assert 55.0 < probed.budget_wait_seconds <= 60.0


class TestProbeIsBounded:
    def test_a_hung_provider_is_reported_failing_by_the_fetchers_deadline(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The emulator holds its answer 5 s; with a 0.5 s deadline the probe ends by then."""
        luxcore.fail_next(Fault.SLOW)
        hurried = LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url,
                                 retry=RetryPolicy(attempts=1, deadline=0.5))
        with PayoutGuard(hurried) as guard:
            started = time.monotonic()
            health = guard.health(probe=True)
            took = time.monotonic() - started
        assert (False, "ProviderUnavailable") == outcome(health)
        assert took < 1.5  # the fetch's deadline and the guard's second beyond it

    def test_a_fetcher_that_keeps_no_deadline_is_given_up_on_as_a_check_would(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """Its request hangs 5 s; the probe waits deadline + 1 = 1.2 s and reports a failure."""
        luxcore.fail_next(Fault.SLOW)
        with PayoutGuard(KeepsNoDeadline(luxcore)) as guard:
            started = time.monotonic()
            health = guard.health(probe=True)
            took = time.monotonic() - started
        assert (False, "ProviderUnavailable") == outcome(health)
        assert 1.2 <= took < 2.5

    def test_hung_providers_are_probed_together_not_one_after_another(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """Two providers that hang: the probe ends within one wait, not one wait each."""
        luxcore.fail_next(Fault.SLOW, times=2)
        fetchers = [KeepsNoDeadline(luxcore), KeepsNoDeadline(luxcore)]
        fetchers[0].name, fetchers[1].name = "luxcore_a", "luxcore_b"
        with PayoutGuard(fetchers) as guard:
            started = time.monotonic()
            health = guard.health(probe=True)
            took = time.monotonic() - started
        assert {"luxcore_a": (False, "ProviderUnavailable"),
                "luxcore_b": (False, "ProviderUnavailable")} == {
            name: (part.ok, part.last_error) for name, part in health.providers.items()}
        assert 1.2 <= took < 2.3  # one wait of deadline + 1 s; one after the other: 2.4 s

    def test_an_awaited_probe_of_a_hung_provider_is_given_up_on_in_time(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """The async guard bounds a probe as the sync one does, without blocking the loop."""
        luxcore.fail_next(Fault.SLOW)

        async def main() -> tuple[Health, float]:
            async with AsyncPayoutGuard(KeepsNoDeadline(luxcore)) as guard:
                started = time.monotonic()
                health = await guard.health(probe=True)
                return health, time.monotonic() - started

        health, took = asyncio.run(main())
        assert (False, "ProviderUnavailable") == outcome(health)
        assert 1.2 <= took < 2.5

class TestAsyncHealth:
    def test_a_down_then_up_provider_awaited(self, luxcore: LuxCoreEmulator) -> None:
        """AsyncPayoutGuard.health reports a 503 as the sync guard does, then the recovery."""
        luxcore.fail_next(Fault.HTTP_503)

        async def main() -> tuple[Health, Health]:
            async with AsyncPayoutGuard(fetcher(luxcore), cache_ttl=0) as guard:
                await guard.check("1", "ARS")
                down = await guard.health()
                up = await guard.health(probe=True)
                return down, up

        down, up = asyncio.run(main())
        assert [(False, "ProviderUnavailable"), (True, "ProviderUnavailable")] == [
            (h.healthy, provider(h).last_error) for h in (down, up)
        ]

    def test_the_store_is_read_through_the_guard(self, tmp_path: Path) -> None:
        """An async guard over a SQLite store that lost its file reports the store failing."""
        path = tmp_path / "holds.db"
        store = SqliteReservations(path)

        async def main() -> Health:
            async with AsyncPayoutGuard(StaticFetcher({"BRL": "1.00"}),
                                        reservations=store) as guard:
                await guard.check("1", "BRL")
                path.unlink()
                return await guard.health()

        health = asyncio.run(main())
        assert (False, "StoreUnavailable") == (health.store.ok, health.store.error)


class TestBudget:
    def test_health_reports_the_budget_and_how_long_it_is_spent_for(
        self, luxcore: LuxCoreEmulator
    ) -> None:
        """One request a minute: the second balance request waits 60 s; health counts down."""
        clock = FakeClock(START)
        budgeted = LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, requests_per_minute=1,
                                  retry=RetryPolicy(attempts=1, deadline=5))
        with PayoutGuard(budgeted, cache_ttl=0, clock=clock) as guard:
            assert guard.check("1", "ARS").allowed
            first = provider(guard.health())
            assert (1, 0.0) == (first.requests_per_minute, first.budget_wait_seconds)
            # The budget is spent: judged on the balance at hand, no request sent.
            assert guard.check("1", "ARS").allowed
            clock.advance(10)
            spent = provider(guard.health())
        assert 1 == len(luxcore.balance_calls)
        assert 50.0 == spent.budget_wait_seconds

    def test_without_a_budget_there_is_nothing_to_report(self) -> None:
        guard = PayoutGuard(StaticFetcher({"BRL": "1.00"}))
        guard.check("1", "BRL")
        assert (None, None) == (provider(guard.health()).requests_per_minute,
                                provider(guard.health()).budget_wait_seconds)
