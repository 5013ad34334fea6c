"""The balance cache behind check(): TTL per currency, single flight, stale-balance refresh."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from guard import AsyncPayoutGuard, BalanceSnapshot, Decision, PayoutGuard, ProviderUnavailable
from guard._cache import BalanceCache
from guard.testing import StaticFetcher
from rules import MaxBalanceAge
from tests._guard_strategies import START, BlockingFetcher, FakeClock, wait_until_blocked

THREADS = 8


class EveryCurrency:
    """A provider whose balance endpoint always answers every currency at once."""

    name = "bulk"

    def __init__(self) -> None:
        self.calls = 0

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:  # noqa: ARG002 - this provider ignores the filter, as some do
        self.calls += 1
        as_of = datetime.fromtimestamp(START, UTC)
        return [BalanceSnapshot(provider="bulk", currency=code, available=Decimal(100),
                                as_of=as_of) for code in ("BRL", "ARS", "MXN")]


class HangsFirst(StaticFetcher):
    """A provider SDK call without a timeout: the first *hangs* fetches never return.

    ``deadline`` is what it claims (so a guard waits ``deadline + 1`` s for it); it does not
    keep it. The hung calls end when ``never`` is set; ``asked`` counts every call.
    """

    deadline = 0.2

    def __init__(self, balances: dict[str, str], hangs: int = 1) -> None:
        super().__init__(balances)
        self.hangs = hangs
        self.never = threading.Event()
        self.asked = 0
        self._count = threading.Lock()

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        with self._count:
            self.asked += 1
            hang, self.hangs = self.hangs > 0, self.hangs - 1
        if hang:
            self.never.wait(30)
        return super().fetch(currency)


@pytest.fixture
def hangs_first() -> Iterator[HangsFirst]:
    fetcher = HangsFirst({"BRL": "100.00"})
    yield fetcher
    fetcher.never.set()


def cached_guard(ttl: float = 5.0) -> tuple[PayoutGuard, StaticFetcher, FakeClock]:
    clock = FakeClock()
    fetcher = StaticFetcher({"BRL": "1000.00", "ARS": "5000.00"}, clock=clock)
    return PayoutGuard(fetcher, cache_ttl=ttl, clock=clock), fetcher, clock


def check_in_threads(guard: PayoutGuard, fetcher: BlockingFetcher) -> list[Decision]:
    """Run THREADS concurrent checks; release the fetcher once every thread waits."""
    decisions: list[Decision] = []
    lock = threading.Lock()

    def work() -> None:
        decision = guard.check("10", "BRL")
        with lock:
            decisions.append(decision)

    threads = [threading.Thread(target=work, name=f"check-{i}") for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        wait_until_blocked(threads)
    finally:
        fetcher.release.set()
        for thread in threads:
            thread.join(10)
    assert [] == [t.name for t in threads if t.is_alive()]
    return decisions


class TestTtl:
    def test_checks_within_the_ttl_share_one_fetch(self) -> None:
        """Ten checks inside the TTL cost one balance call."""
        guard, fetcher, _ = cached_guard()
        for _ in range(10):
            guard.check("1", "BRL")
        assert (1, ["BRL"]) == (fetcher.calls, fetcher.requested)

    def test_each_currency_is_cached_on_its_own(self) -> None:
        """BRL and ARS are fetched once each, for their own currency."""
        guard, fetcher, _ = cached_guard()
        for _ in range(3):
            guard.check("1", "BRL")
            guard.check("1", "ARS")
        assert ["BRL", "ARS"] == fetcher.requested

    def test_an_entry_expires_after_the_ttl(self) -> None:
        """Just before the TTL the cache answers; at the TTL the provider is asked again."""
        guard, fetcher, clock = cached_guard(ttl=5.0)
        guard.check("1", "BRL")
        clock.advance(4.999)
        guard.check("1", "BRL")
        assert 1 == fetcher.calls
        clock.advance(0.001)
        guard.check("1", "BRL")
        assert 2 == fetcher.calls

    def test_a_changed_balance_shows_once_the_entry_expires(self) -> None:
        """Within the TTL the old balance is judged; after it, the new one."""
        guard, fetcher, clock = cached_guard(ttl=5.0)
        assert guard.check("1000", "BRL").allowed
        fetcher.set("BRL", "10.00")
        assert guard.check("1000", "BRL").allowed
        clock.advance(5)
        assert ("insufficient_funds",) == guard.check("1000", "BRL").codes

    def test_a_ttl_of_zero_fetches_on_every_check(self) -> None:
        """cache_ttl=0 turns the cache off."""
        guard, fetcher, _ = cached_guard(ttl=0)
        for _ in range(4):
            guard.check("1", "BRL")
        assert 4 == fetcher.calls

    def test_every_currency_in_an_answer_is_cached(self) -> None:
        """A provider answering all currencies at once fills the cache for all of them."""
        fetcher = EveryCurrency()
        guard = PayoutGuard(fetcher, clock=FakeClock())
        for code in ("BRL", "ARS", "MXN"):
            guard.check("1", code)
        assert 1 == fetcher.calls

    def test_a_commit_invalidates_its_currency_only(self) -> None:
        """A second after its fetch, a submitted payout's currency is refetched; ARS is not."""
        guard, fetcher, clock = cached_guard(ttl=60)
        guard.check("1", "ARS")
        with guard.reserve("10", "BRL", payout_id="po_1"):
            pass
        clock.advance(1.0)
        guard.check("1", "BRL")
        guard.check("1", "ARS")
        assert ["ARS", "BRL", "BRL"] == fetcher.requested

    def test_commits_refetch_a_currency_at_most_once_a_second(self) -> None:
        """A run of payouts cannot turn into a balance request per payout (rate limits)."""
        guard, fetcher, clock = cached_guard(ttl=60)
        for number in range(100):
            with guard.reserve("1", "BRL", payout_id=f"po_{number}"):
                pass
            clock.advance(0.05)  # 100 payouts over 5 seconds
        assert 5 <= fetcher.calls <= 6

    def test_the_held_funds_count_while_the_older_balance_is_used(self) -> None:
        """Right after a commit, the cached balance is still used and the payout still counts."""
        guard, _, _ = cached_guard(ttl=60)
        with guard.reserve("10", "BRL", payout_id="po_1"):
            pass
        decision = guard.check("1", "BRL")
        assert Decimal("10.00") == decision.reserved

    def test_a_release_keeps_the_cached_balance(self) -> None:
        """A payout that was not sent changed nothing at the provider: no refetch."""
        guard, fetcher, _ = cached_guard(ttl=60)
        guard.reserve("10", "BRL", payout_id="po_1").release()
        guard.check("1", "BRL")
        assert 1 == fetcher.calls


class TestSingleFlight:
    def test_concurrent_misses_share_one_fetch(self) -> None:
        """Every thread waits for the one fetch in flight; all are judged on its answer."""
        clock = FakeClock()
        fetcher = BlockingFetcher({"BRL": "1000.00"}, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=5, clock=clock)
        decisions = check_in_threads(guard, fetcher)
        assert 1 == fetcher.calls
        assert [True] * THREADS == [d.allowed for d in decisions]

    def test_an_error_is_shared_by_the_waiters_and_not_cached(self) -> None:
        """One failed fetch denies every waiting check; the next check asks again."""
        clock = FakeClock()
        error = ProviderUnavailable("gateway timeout", provider="blocking", status=504)
        fetcher = BlockingFetcher({"BRL": "1000.00"}, error=error, clock=clock)
        guard = PayoutGuard(fetcher, cache_ttl=5, clock=clock)
        decisions = check_in_threads(guard, fetcher)
        assert 1 == fetcher.calls
        assert [("balance_unavailable",)] * THREADS == [d.codes for d in decisions]
        assert all("ProviderUnavailable" in d.reasons[0].message for d in decisions)
        fetcher.error = None
        assert guard.check("10", "BRL").allowed
        assert 2 == fetcher.calls


    def test_a_waiter_gives_up_after_its_wait_timeout(self) -> None:
        """A fetch that never ends does not block the others forever: they get an outage."""
        fetcher = BlockingFetcher({"BRL": "1.00"})
        cache = BalanceCache(fetcher, ttl=5, clock=FakeClock(), wait_timeout=0.5)
        outcomes: list[str] = []

        def lead() -> None:
            try:
                cache.get("BRL")
            except ProviderUnavailable as exc:
                outcomes.append(str(exc))

        leader = threading.Thread(target=lead)
        leader.start()
        try:
            wait_until_blocked([leader])
            with pytest.raises(ProviderUnavailable, match=r"gave up waiting 0\.5s"):
                cache.get("BRL")
            leader.join(10)  # the leading check gives up by itself, the fetch still blocked
        finally:
            fetcher.release.set()
            leader.join(10)
        assert (1, 1) == (fetcher.calls, len(outcomes))  # the leading check gave up too


REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                      default=None)


class SeesTheContext(StaticFetcher):
    """A fetcher that notes the request id of the context it fetches in."""

    def __init__(self) -> None:
        super().__init__({"BRL": "100.00"})
        self.seen: list[str | None] = []

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        self.seen.append(REQUEST_ID.get())
        return super().fetch(currency)


class TestTheFetchKeepsTheCallersContext:
    def test_a_fetch_runs_in_the_context_of_the_check_that_started_it(self) -> None:
        """Context variables (a trace span, structlog's contextvars) go with the fetch."""
        fetcher = SeesTheContext()
        guard = PayoutGuard(fetcher, cache_ttl=0)
        token = REQUEST_ID.set("r-1")
        try:
            guard.check("1", "BRL")
        finally:
            REQUEST_ID.reset(token)
        assert ["r-1"] == fetcher.seen


class TestHungFetch:
    def test_the_check_that_started_a_fetch_that_never_returns_is_denied_in_time(
        self, hangs_first: HangsFirst
    ) -> None:
        """The leading check waits wait_timeout (deadline + 1 s) like the others, then denies."""
        guard = PayoutGuard(hangs_first, cache_ttl=5)
        started = time.monotonic()
        decision = guard.check("1.00", "BRL")
        assert ("balance_unavailable",) == decision.codes
        assert "gave up waiting 1.2s" in decision.reasons[0].message
        assert time.monotonic() - started < 3.0

    def test_after_a_fetch_is_given_up_the_next_check_fetches_again(
        self, hangs_first: HangsFirst
    ) -> None:
        """The hung fetch no longer stands for the currency: the next check is answered."""
        guard = PayoutGuard(hangs_first, cache_ttl=5)
        leading = threading.Thread(target=guard.check, args=("1.00", "BRL"))
        leading.start()
        try:
            wait_until_blocked([leading])
            assert not guard.check("1.00", "BRL").allowed  # joined the hung fetch: gave up
            started = time.monotonic()
            decision = guard.check("1.00", "BRL")
        finally:
            hangs_first.never.set()
            leading.join(10)
        assert (True, 2) == (decision.allowed, hangs_first.asked)
        assert time.monotonic() - started < 1.0

    def test_with_a_few_fetches_still_hung_no_other_is_started(self) -> None:
        """Four abandoned fetches still running: checks deny at once, starting no fifth."""
        fetcher = HangsFirst({"BRL": "100.00"}, hangs=10)
        cache = BalanceCache(fetcher, ttl=5, wait_timeout=0.05)
        try:
            for _ in range(4):
                with pytest.raises(ProviderUnavailable, match="gave up waiting"):
                    cache.get("BRL")
            started = time.monotonic()
            with pytest.raises(ProviderUnavailable, match="4 balance fetches given up on"):
                cache.get("BRL")
            assert time.monotonic() - started < 0.05
            assert 4 == fetcher.asked
        finally:
            fetcher.never.set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the hung fetches end: fetching starts again
            try:
                assert ["BRL"] == [s.currency for s in cache.get("BRL").values()]
                break
            except ProviderUnavailable:
                time.sleep(0.01)
        else:
            pytest.fail("the cache never fetched again")

    def test_an_awaited_check_after_a_hung_fetch_fetches_again(
        self, hangs_first: HangsFirst
    ) -> None:
        """AsyncPayoutGuard: the first task gives up on the hung fetch; the next is answered."""

        async def scenario() -> tuple[tuple[str, ...], bool]:
            async with AsyncPayoutGuard(hangs_first, cache_ttl=5) as guard:
                first = await guard.check("1.00", "BRL")
                second = await asyncio.wait_for(guard.check("1.00", "BRL"), 1.0)
                return first.codes, second.allowed

        assert (("balance_unavailable",), True) == asyncio.run(scenario())


class TestStaleBalance:
    def test_a_cached_balance_gone_stale_is_refreshed_once(self) -> None:
        """The stale cached answer is replaced by one fresh fetch, which allows."""
        clock = FakeClock()
        fetcher = StaticFetcher({"BRL": "100.00"}, clock=clock)
        guard = PayoutGuard(fetcher, [MaxBalanceAge(30)], cache_ttl=300, clock=clock)
        guard.check("1", "BRL")
        clock.advance(31)
        decision = guard.check("1", "BRL")
        assert (True, 2) == (decision.allowed, fetcher.calls)

    def test_a_provider_serving_an_old_balance_costs_exactly_one_refresh(self) -> None:
        """Still stale after the refresh: the denial comes after exactly one extra fetch."""
        clock = FakeClock()
        old = datetime.fromtimestamp(START - 120, UTC)
        fetcher = StaticFetcher({"BRL": {"available": "100.00", "as_of": old}}, clock=clock)
        guard = PayoutGuard(fetcher, [MaxBalanceAge(30)], cache_ttl=300, clock=clock)
        decision = guard.check("1", "BRL")
        assert (("stale_balance",), True, 2) == (
            decision.codes, decision.retryable, fetcher.calls
        )
        assert "120.000s old, older than the 30s allowed" in decision.reasons[0].message
        guard.check("1", "BRL")
        assert 3 == fetcher.calls
