"""Measure reserve+commit operations per second for each reservation store.

Run: ``.venv/bin/python tests/benchmarks/bench_reserve.py [--seconds 2]`` (not part of the test
suite). It starts its own ``redis-server`` on a free loopback port (skipping Redis when there is
none) and uses a fresh SQLite file in a temporary directory.

Each operation is one ``try_hold`` plus one ``commit`` on the same balance key, with the
committed window of a guard (``counted_since = now - 30``), so every operation also counts what
the earlier ones hold. 1 client, then 4 clients: threads sharing one store object for memory
(the only way to share it), processes with a store each for SQLite and Redis. Then the same
through ``PayoutGuard.reserve`` (a ``with`` block: check, hold, commit) with a fixed balance.
The table gives each figure against the in-memory single-client one.
Targets: in-memory >= 20,000/s, SQLite >= 1,000/s, Redis >= 3,000/s (loopback).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import redis
import structlog

from guard import PayoutGuard
from guard.fetchers import LuxCoreFetcher
from guard.stores import (
    Hold,
    InMemoryReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)
from guard.testing import StaticFetcher
from guard.testing.emulators import LuxCoreEmulator

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

KEY = balance_key("static", None, "BRL")
CEILING = Decimal(10) ** 12
AMOUNT = Decimal("10.00")
SPAWN = multiprocessing.get_context("spawn")
_barrier: Barrier | None = None


def quiet() -> None:
    """Keep structlog's decision lines out of the measurement (as a service would)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


def open_store(target: str) -> ReservationStore:
    """Open ``memory``, a SQLite path, or ``redis://...#namespace``."""
    if target == "memory":
        return InMemoryReservations()
    if target.startswith("redis://"):
        url, namespace = target.split("#", 1)
        return RedisReservations(url, namespace=namespace)
    return SqliteReservations(target, timeout=30.0)


def direct(store: ReservationStore, prefix: str, seconds: float) -> int:
    """Run try_hold+commit for *seconds*; return how many completed."""
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            now = time.time()
            hold = Hold(
                payout_id=f"{prefix}-{done}", key=KEY, currency="BRL", amount=AMOUNT,
                fee=Decimal("0.00"), state="pending", created_at=now, expires_at=now + 300,
                owner=f"{prefix}-owner",
            )
            outcome = store.try_hold(hold, ceiling=CEILING, counted_since=now - 30, now=now)
            if outcome.status != "held":
                raise RuntimeError(f"benchmark hold refused: {outcome}")
            store.commit(hold.payout_id, owner=hold.owner, now=now)
            done += 1
    return done


def through_guard(store: ReservationStore, prefix: str, seconds: float) -> int:
    """Run ``with guard.reserve(...)`` for *seconds*; return how many completed."""
    guard = PayoutGuard(StaticFetcher({"BRL": str(CEILING)}), cache_ttl=3600,
                        reservations=store)
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            with guard.reserve(AMOUNT, "BRL", payout_id=f"{prefix}-{done}"):
                pass
            done += 1
    return done


RUNNERS: dict[str, Callable[[ReservationStore, str, float], int]] = {
    "direct": direct, "guard": through_guard,
}


def set_barrier(barrier: Barrier) -> None:
    """Keep the start barrier in a worker process."""
    global _barrier  # noqa: PLW0603 - one per worker process
    _barrier = barrier


def process_worker(runner: str, target: str, worker: int, seconds: float) -> int:
    """Open the store, warm up, wait for the others, then run."""
    quiet()
    store = open_store(target)
    try:
        RUNNERS[runner](store, f"warm-{worker}-{uuid.uuid4().hex}", 0.05)
        if _barrier is not None:
            _barrier.wait(timeout=120)
        return RUNNERS[runner](store, f"p{worker}-{uuid.uuid4().hex}", seconds)
    finally:
        store.close()


def in_processes(runner: str, target: str, clients: int, seconds: float) -> float:
    """Return operations per second of *clients* processes with a store each."""
    barrier = SPAWN.Barrier(clients)
    with ProcessPoolExecutor(clients, mp_context=SPAWN, initializer=set_barrier,
                             initargs=(barrier,)) as pool:
        futures = [pool.submit(process_worker, runner, target, n, seconds)
                   for n in range(clients)]
        return sum(f.result() for f in futures) / seconds


def in_threads(runner: str, store: ReservationStore, clients: int, seconds: float) -> float:
    """Return operations per second of *clients* threads sharing one store."""
    RUNNERS[runner](store, f"warm-{uuid.uuid4().hex}", 0.05)
    counts = [0] * clients
    start = threading.Barrier(clients)

    def work(n: int) -> None:
        start.wait()
        counts[n] = RUNNERS[runner](store, f"t{n}-{uuid.uuid4().hex}", seconds)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


@contextmanager
def redis_server() -> Iterator[str | None]:
    """Yield the URL of a fresh redis-server on a free loopback port, or None without one."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(  # fixed arguments, binary from PATH
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(500):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.01)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def provider_requests(checks: int, cache_ttl: float, workers: int = 16) -> int:
    """Return how many balance requests *checks* concurrent checks cost a LuxCore emulator."""
    with LuxCoreEmulator() as emulator:
        emulator.set_balance("ARS", available="1000000.00")
        fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url)
        guard = PayoutGuard(fetcher, cache_ttl=cache_ttl)
        with ThreadPoolExecutor(workers) as pool:
            decisions = list(pool.map(lambda _: guard.check("10.00", "ARS"), range(checks)))
        fetcher.close()
        assert all(d.allowed for d in decisions)
        return emulator.balance_requests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    seconds: float = args.seconds
    quiet()
    folder = Path(tempfile.mkdtemp(prefix="bench-reserve-"))
    rows: list[tuple[str, str, str, float]] = []
    try:
        with redis_server() as url:
            for runner in ("direct", "guard"):
                memory = InMemoryReservations()
                rows.append(("memory", runner, "1", in_threads(runner, memory, 1, seconds)))
                rows.append(("memory", runner, "4 threads",
                             in_threads(runner, memory, 4, seconds)))
                targets: dict[str, Callable[[str], str]] = {
                    "sqlite": lambda n: str(folder / f"{n}.db"),
                }
                if url is not None:
                    targets["redis"] = lambda n: f"{url}#bench-{n}"
                for name, make in targets.items():
                    store = open_store(make(f"{runner}-1"))
                    rows.append((name, runner, "1", in_threads(runner, store, 1, seconds)))
                    store.close()
                    target = make(f"{runner}-4")
                    open_store(target).close()
                    rows.append((name, runner, "4 processes",
                                 in_processes(runner, target, 4, seconds)))
                store = open_store(str(folder / f"{runner}-threads.db"))
                rows.append(("sqlite", runner, "4 threads, 1 store",
                             in_threads(runner, store, 4, seconds)))
                store.close()
    finally:
        shutil.rmtree(folder)
    base = rows[0][3]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {seconds:g} s per figure; "
          f"an operation is try_hold + commit (direct) or a reserve() with block (guard)")
    print(f"{'store':<8} {'path':<7} {'clients':<20} {'ops/s':>10} {'x memory(1)':>12}")
    for store_name, runner, clients, rate in rows:
        print(f"{store_name:<8} {runner:<7} {clients:<20} {rate:>10,.0f} {rate / base:>12.2f}")
    if not any(name == "redis" for name, *_ in rows):
        print("redis-server not found: Redis was not measured")
    print()
    print("provider (LuxCore emulator) requests per 1,000 concurrent checks, 16 threads:")
    for ttl in (5.0, 0.0):
        label = f"cache_ttl={ttl:g}" + (" (cache off)" if ttl == 0 else "")
        print(f"  {label:<22} {provider_requests(1000, ttl):>6}")


if __name__ == "__main__":
    main()
