"""No overspend through ``PayoutGuard.reserve``: many threads, many processes, a crash.

The stores' own tests check the atomic check-and-hold; these check the whole path (balance,
rules, hold, commit) under contention, for each store.
"""

from __future__ import annotations

import multiprocessing
import random
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from guard import PayoutDenied, PayoutGuard
from guard.fetchers import LuxCoreFetcher
from guard.stores import (
    InMemoryReservations,
    PostgresReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)
from guard.testing import StaticFetcher
from guard.testing.emulators import LuxCoreEmulator
from rules import ReserveMargin
from tests._guard_workers import (
    ARS_MARGIN,
    CRASH_BALANCE,
    crash_holder,
    pay_through_luxcore,
    set_barrier,
)
from tests._holds import KEY, hold, owner_of
from tests._postgres_server import PostgresServer
from tests._redis_server import shared_redis
from tests._store_workers import kill_while_holding, open_store

SPAWN = multiprocessing.get_context("spawn")
THREADS = 32
PAYOUTS = 60
WORKERS = 4


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReservationStore]:
    """Yield a fresh store of each kind."""
    made: ReservationStore
    if request.param == "memory":
        made = InMemoryReservations()
    elif request.param == "sqlite":
        made = SqliteReservations(tmp_path / "holds.db")
    elif request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        made = PostgresReservations(server.dsn(), schema=server.fresh_schema(),
                                    create_schema=True)
    else:
        made = RedisReservations(request.getfixturevalue("redis_url"),
                                 namespace=f"conc-{uuid.uuid4().hex}")
    yield made
    made.close()


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def shared_target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return a store that processes can share: a SQLite file, a Redis namespace or a schema."""
    if request.param == "sqlite":
        path = str(tmp_path / "holds.db")
        open_store(path).close()
        return path
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        target = f"{server.dsn()}#{server.fresh_schema()}"
        open_store(target).close()
        return target
    return f"{request.getfixturevalue('redis_url')}#conc-{uuid.uuid4().hex}"


@pytest.mark.slow
class TestReadsDuringWrites:
    def test_what_is_held_never_dips_while_holds_are_committed(
        self, store: ReservationStore
    ) -> None:
        """A commit moves a hold from pending to committed: a reader never sees it in neither.

        Four threads each hold and commit 1.00 over and over; a reader meanwhile reads what is
        held, which may only grow. (The in-memory store reads without its lock.)
        """
        now, rounds = time.time(), 250
        seen: list[Decimal] = []
        done = threading.Event()

        def writer(n: int) -> None:
            for i in range(rounds):
                payout_id = f"w{n}-{i}"
                store.try_hold(hold(payout_id, "1.00", at=now), ceiling=Decimal(10**6),
                               counted_since=0, now=now)
                store.commit(payout_id, owner=owner_of(payout_id), now=now)

        def reader() -> None:
            while not done.is_set():
                seen.append(store.reserved(KEY, counted_since=0, now=now))

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads as often as possible: expose torn reads
        try:
            watching = threading.Thread(target=reader)
            watching.start()
            with ThreadPoolExecutor(WORKERS) as pool:
                list(pool.map(writer, range(WORKERS)))
            done.set()
            watching.join()
        finally:
            sys.setswitchinterval(interval)
        assert seen == sorted(seen)
        assert Decimal(WORKERS * rounds) == store.reserved(KEY, counted_since=0, now=now)


@pytest.mark.slow
class TestThreads:
    def test_32_threads_never_overspend(self, store: ReservationStore) -> None:
        """32 threads x 60 random payouts commit at most available - reserve margin."""
        available = Decimal("1000000.00")
        permitted = available - available * Decimal("0.05")
        guard = PayoutGuard(StaticFetcher({"BRL": str(available)}),
                            [ReserveMargin(percent="5")], reservations=store, settle_lag=3600)
        committed: list[tuple[str, Decimal]] = []
        denials: list[tuple[str, ...]] = []
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            rng = random.Random(n)
            for i in range(PAYOUTS):
                amount = Decimal(rng.randint(1_000_00, 30_000_00)).scaleb(-2)
                payout_id = f"t{n}-{i}"
                try:
                    with guard.reserve(amount, "BRL", payout_id=payout_id) as held:
                        if rng.random() < 0.1:
                            raise LookupError("the provider call failed: released")
                        committed.append((held.payout_id, amount))
                except PayoutDenied as exc:
                    denials.append(exc.decision.codes)
                except LookupError:
                    pass
                except BaseException as exc:  # a thread's failure must reach the test
                    errors.append(exc)
                    raise

        with capture_logs():
            threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert [] == errors
        total = sum((amount for _, amount in committed), Decimal(0))
        assert total <= permitted
        assert len({pid for pid, _ in committed}) == len(committed)
        counted = store.reserved(balance_key("static", None, "BRL"), counted_since=0,
                                 now=time.time())
        assert total == counted
        assert denials  # the balance ran out: the boundary was contended
        assert all(codes for codes in denials)
        assert {"reserve_margin", "insufficient_funds"} >= {c for cs in denials for c in cs}
        assert total >= permitted * Decimal("0.9")  # ...and nearly all of it was used


@pytest.mark.slow
class TestSingleFlight:
    def test_a_thousand_concurrent_checks_cost_one_provider_request(self) -> None:
        """1,000 checks within the TTL, from 64 threads at once, make one balance request."""
        with LuxCoreEmulator() as emulator:
            emulator.set_balance("ARS", available="1000000.00")
            # The first answer is slow, so the other threads arrive while it is in flight.
            emulator.slow_seconds = 0.5
            emulator.fail_next("slow")
            fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url)
            guard = PayoutGuard(fetcher, cache_ttl=60)
            start = threading.Barrier(64)

            def checks(worker: int) -> list[bool]:
                start.wait()
                return [guard.check("10.00", "ARS").allowed for _ in range(worker, 1000, 64)]

            with ThreadPoolExecutor(64) as pool:
                allowed = [ok for batch in pool.map(checks, range(64)) for ok in batch]
            fetcher.close()
            assert (1000, True, 1) == (len(allowed), all(allowed), emulator.balance_requests)


class TestProcessesWithLuxCore:
    def test_four_processes_never_overdraw_the_provider(self, shared_target: str) -> None:
        """Four processes paying out through LuxCore never exceed available - margin."""
        start = Decimal("20000.00")
        with LuxCoreEmulator(balances={"ARS": str(start)}) as emu:
            barrier = SPAWN.Barrier(WORKERS)
            with ProcessPoolExecutor(WORKERS, mp_context=SPAWN, initializer=set_barrier,
                                     initargs=(barrier,)) as pool:
                futures = [pool.submit(pay_through_luxcore, shared_target, emu.url, emu.api_key,
                                       n, 40) for n in range(WORKERS)]
                results = [future.result(timeout=120) for future in futures]
            with LuxCoreFetcher(emu.api_key, base_url=emu.url) as fetcher:
                (after,) = fetcher.fetch("ARS")
        paid = [row.split() for result in results for row in result["paid"]]
        total = sum((Decimal(amount) for _, amount, _ in paid), Decimal(0))
        denied = [codes for result in results for codes in result["denied"]]
        assert [] == [row for result in results for row in result["refused"]]
        assert total <= start - Decimal(ARS_MARGIN)
        assert (start - total, total) == (after.available, after.frozen)
        assert len({pid for pid, _, _ in paid}) == len(paid)
        assert denied  # demand was larger than the balance
        assert all(denied)

    def test_killed_process_frees_its_hold_after_its_ttl(self, shared_target: str) -> None:
        """A worker SIGKILLed inside a reservation blocks its funds only until the ttl."""
        held = SPAWN.Event()
        process = SPAWN.Process(target=crash_holder,
                                args=(shared_target, "900.00", 1.5, held))
        kill_while_holding(process, held)
        store = open_store(shared_target)
        try:
            crashed = store.get("po_crash")
            assert crashed is not None
            assert "pending" == crashed.state
            guard = PayoutGuard(StaticFetcher(CRASH_BALANCE), reservations=store)
            deadline = crashed.expires_at + 30.0
            with capture_logs():
                while True:
                    decision = guard.check("900.00", "BRL")
                    ended = time.time()
                    if ended < crashed.expires_at:
                        assert not decision.allowed  # the dead worker's hold still counts
                    if decision.allowed:
                        break
                    assert ended < deadline, "the crashed hold never stopped counting"
                    time.sleep(0.02)
            assert ended >= crashed.expires_at
        finally:
            store.close()
