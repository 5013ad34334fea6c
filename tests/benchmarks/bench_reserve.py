"""Measure reserve+commit operations per second for each reservation store.

Run: ``.venv/bin/python tests/benchmarks/bench_reserve.py [--seconds 2] [--pg-durable]`` (not
part of the test suite). It starts its own ``redis-server`` on a free loopback port (skipping
Redis when there is none), its own PostgreSQL server (``initdb`` in a temporary directory, as
the tests do: ``fsync=off`` unless ``--pg-durable``; skipped without the binaries) and uses a
fresh SQLite file in a temporary directory.

Each operation is one ``try_hold`` plus one ``commit`` on the same balance key, with the
committed window of a guard (``counted_since = now - 30``), so every operation also counts what
the earlier ones hold. 1 client, then 4 clients: threads sharing one store object for memory
(the only way to share it), processes with a store each for SQLite and Redis. Then the same
through ``PayoutGuard.reserve`` (a ``with`` block: check, hold, commit) with a fixed balance.
The table gives each figure against the in-memory single-client one.
Targets: in-memory >= 20,000/s, SQLite >= 1,000/s, Redis >= 3,000/s (loopback).

For PostgreSQL it also measures, in the same run, two raw ``SELECT 1`` round trips on one
connection (target: reserve+commit with 1 client at >= 40% of that rate), and ``guard.check``
on a key with 5,000 live holds against one with none. ``--part postgres`` measures the ratio
a second time with the raw pairs and the reserve+commits in alternating 0.2 s slices, so a
load that changes during the run (a shared machine) weighs on both alike.

Holds at O(1), per store (memory, SQLite, Redis, PostgreSQL when found): a check
(``reserved``) and a reserve+commit (``try_hold`` + ``commit``) on a key already holding 0,
1,000 and 5,000 counting (live pending) holds, each as a ratio to the 0-holds figure (target:
5,000 at most 1.5x); and filling one key with 100,000 holds, timed per 10,000 (linear: the
last slice costs about what the first does; a slice slower than 30 s stops the fill).

Redis round trips: ``guard.reserve`` + commit per second against redis-py calling
``EVALSHA "return 1"`` twice, in the same process and run (target: at least 60%). The raw
calls, ``try_hold`` + ``commit`` and ``guard.reserve`` + commit take turns in five rounds, so
a machine that gets busier or quieter during the run moves all three alike; each line also
gives the Redis server's CPU time per operation (``INFO cpu``, its main thread: the Lua
scripts' share). The parser named is redis-py's (hiredis only when it is installed).

``--part holds`` or ``--part redis`` runs only those figures (``--stores redis,sqlite``: only
those stores); ``--part postgres`` only the PostgreSQL ones (reserve+commit with 1 client, direct
and through the guard, against the raw round trips, and the checks with 0 and 5,000 holds).
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

import psycopg
import redis
import structlog

from guard import PayoutGuard, instrumentation
from guard.fetchers import LuxCoreFetcher
from guard.stores import (
    Hold,
    InMemoryReservations,
    PostgresReservations,
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
    """Keep structlog's decision lines out of the measurement (as a service would).

    And the metrics hooks off, as in ``bench_check.py``: what the store path costs itself
    (``bench_instrumentation.py`` prices the hooks, on by default when ``prometheus_client``
    is installed).
    """
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
                        cache_logger_on_first_use=True)
    instrumentation.set_hooks([])


def open_store(target: str) -> ReservationStore:
    """Open ``memory``, a SQLite path, or ``redis://...#namespace``."""
    if target == "memory":
        return InMemoryReservations()
    if target.startswith("redis://"):
        url, namespace = target.split("#", 1)
        return RedisReservations(url, namespace=namespace)
    if target.startswith("postgresql://"):
        dsn, schema = target.split("#", 1)
        return PostgresReservations(dsn, schema=schema, create_schema=True, timeout=30.0)
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


@contextmanager
def postgres_server(*, durable: bool) -> Iterator[str | None]:
    """Yield the DSN of a fresh PostgreSQL server (the tests' helper), or None without one."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)  # run as a script: make the test kit importable
    from tests._postgres_server import start_postgres

    try:
        server = start_postgres(durable=durable)
    except BaseException:  # noqa: BLE001 - pytest's skip too: PostgreSQL is not installed
        yield None
        return
    try:
        yield server.dsn()
    finally:
        server.remove()


def raw_round_trips(dsn: str, seconds: float) -> float:
    """Return how many times per second one connection runs two ``SELECT 1`` round trips."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for _ in range(20):
                conn.execute("SELECT 1").fetchone()
                conn.execute("SELECT 1").fetchone()
                done += 1
    return done / seconds


def interleaved_share(dsn: str, seconds: float, piece: float = 0.2) -> tuple[float, float]:
    """Return (raw pairs/s, reserve+commits/s), measured in alternating *piece*-second slices.

    On a shared machine the load changes between two measurements taken one after the other;
    alternating short slices exposes both rates to the same load, so their ratio holds.
    """
    store = open_store(f"{dsn}#bench_interleaved")
    direct(store, f"warm-{uuid.uuid4().hex}", 0.05)
    prefix = uuid.uuid4().hex
    raw_done = direct_done = 0
    raw_spent = direct_spent = 0.0  # the time each side took, overshoot of a slice included
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(max(1, round(seconds / piece))):
            began = time.perf_counter()
            while time.perf_counter() < began + piece:
                conn.execute("SELECT 1").fetchone()
                conn.execute("SELECT 1").fetchone()
                raw_done += 1
            middle = time.perf_counter()
            direct_done += direct(store, f"{prefix}-{n}", piece)
            raw_spent += middle - began
            direct_spent += time.perf_counter() - middle
    store.close()
    return raw_done / raw_spent, direct_done / direct_spent


def checks_with_holds(dsn: str, holds: int, seconds: float) -> float:
    """Return ``guard.check`` calls per second on a key holding *holds* live pending holds."""
    store = open_store(f"{dsn}#checks_{holds}")
    guard = PayoutGuard(StaticFetcher({"BRL": str(CEILING)}), cache_ttl=3600,
                        reservations=store)
    now = time.time()
    for n in range(holds):
        taken = Hold(payout_id=f"live-{n}", key=KEY, currency="BRL", amount=AMOUNT,
                     fee=Decimal("0.00"), state="pending", created_at=now,
                     expires_at=now + 3600, owner="bench")
        store.try_hold(taken, ceiling=CEILING, counted_since=now - 30, now=now)
    guard.check(AMOUNT, "BRL")
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            guard.check(AMOUNT, "BRL")
            done += 1
    store.close()
    return done / seconds


def postgres_figures(dsn: str, seconds: float) -> list[tuple[str, float]]:
    """Return the raw round-trip rate and the check rates with 0 and 5,000 live holds."""
    figures = [("2 x SELECT 1, 1 connection", raw_round_trips(dsn, seconds))]
    figures += [(f"guard.check, {holds:,} live holds on the key",
                 checks_with_holds(dsn, holds, seconds)) for holds in (0, 5000)]
    return figures


def print_postgres(
    rows: list[tuple[str, str, str, float]], figures: list[tuple[str, float]], *, durable: bool,
    interleaved: tuple[float, float] | None = None,
) -> None:
    """Print the PostgreSQL figures against their targets."""
    if not figures:
        print("PostgreSQL not found: it was not measured")
        return
    print()
    print(f"postgres ({'fsync=on' if durable else 'fsync=off'}), same run:")
    raw = figures[0][1]
    one = next(r for n, p, c, r in rows if (n, p, c) == ("postgres", "direct", "1"))
    for label, rate in figures:
        print(f"  {label:<38} {rate:>10,.0f}/s")
    print(f"  reserve+commit (1 client) / raw round trips: {one / raw:.0%} (target >= 40%)")
    if interleaved is not None:
        raw_i, one_i = interleaved
        print(f"  interleaved 0.2 s slices: raw {raw_i:,.0f}/s, reserve+commit {one_i:,.0f}/s: "
              f"{one_i / raw_i:.0%} (the same ratio, both under the same load)")
    print(f"  check with 5,000 holds / with none: {figures[1][1] / figures[2][1]:.2f}x slower "
          f"(target <= 1.5x)")


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


def live_hold(n: int, now: float, prefix: str = "live") -> Hold:
    """Return the *n*-th counting hold of a fill: pending for an hour."""
    return Hold(payout_id=f"{prefix}-{n}", key=KEY, currency="BRL", amount=AMOUNT,
                fee=Decimal("0.00"), state="pending", created_at=now, expires_at=now + 3600,
                owner="bench")


def fill(store: ReservationStore, count: int, start: int = 0) -> None:
    """Add *count* counting holds to KEY."""
    now = time.time()
    for n in range(start, start + count):
        outcome = store.try_hold(live_hold(n, now), ceiling=CEILING, counted_since=now - 30,
                                 now=now)
        if outcome.status != "held":
            raise RuntimeError(f"benchmark hold refused: {outcome}")


def checks(store: ReservationStore, seconds: float) -> float:
    """Return ``reserved`` calls per second on KEY."""
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            now = time.time()
            store.reserved(KEY, counted_since=now - 30, now=now)
            done += 1
    return done / seconds


def with_holds(
    make: Callable[[str], str], seconds: float
) -> list[tuple[int, float, float]]:
    """Return (holds, checks/s, reserve+commits/s) with 0, 1,000 and 5,000 holds on the key."""
    figures = []
    for holds in (0, 1000, 5000):
        store = open_store(make(f"holds-{holds}-{uuid.uuid4().hex[:8]}"))
        try:
            fill(store, holds)
            checks(store, 0.05)
            figures.append((holds, checks(store, seconds),
                            direct(store, f"rc-{uuid.uuid4().hex}", seconds) / seconds))
        finally:
            store.close()
    return figures


def fill_slices(make: Callable[[str], str], total: int = 100_000,
                step: int = 10_000) -> list[float]:
    """Return the seconds each *step* holds of a fill of *total* took (fewer: it gave up)."""
    store = open_store(make(f"fill-{uuid.uuid4().hex[:8]}"))
    slices: list[float] = []
    try:
        for start in range(0, total, step):
            began = time.perf_counter()
            fill(store, step, start)
            slices.append(time.perf_counter() - began)
            if slices[-1] > 30:  # quadratic: the rest would take hours
                break
    finally:
        store.close()
    return slices


def print_holds(
    url: str | None, dsn: str | None, folder: Path, seconds: float,
    stores: frozenset[str] = frozenset({"memory", "sqlite", "redis", "postgres"}),
) -> None:
    """Print the cost of checks and reserve+commit with holds on the key, and of a fill."""
    targets: dict[str, Callable[[str], str]] = {
        "memory": lambda _: "memory",
        "sqlite": lambda n: str(folder / f"{n}.db"),
    }
    if url is not None:
        targets["redis"] = lambda n: f"{url}#bench-{n}"
    if dsn is not None:
        targets["postgres"] = lambda n: f"{dsn}#bench_{n.replace('-', '_')}"
    targets = {name: make for name, make in targets.items() if name in stores}
    print()
    print("holds on the key (counting, live pending): ops/s, and x the 0-holds cost "
          "(target: 5,000 <= 1.5x)")
    print(f"{'store':<9} {'holds':>6} {'check/s':>10} {'x cost':>7} {'reserve+commit/s':>17} "
          f"{'x cost':>7}")
    for name, make in targets.items():
        figures = with_holds(make, seconds)
        base_check, base_rc = figures[0][1], figures[0][2]
        for holds, check, rc in figures:
            print(f"{name:<9} {holds:>6,} {check:>10,.0f} {base_check / check:>7.2f} "
                  f"{rc:>17,.0f} {base_rc / rc:>7.2f}")
    print()
    print("filling one key with 100,000 holds: seconds per 10,000 (linear: flat)")
    for name, make in targets.items():
        slices = fill_slices(make)
        shown = " ".join(f"{t:.2f}" for t in slices)
        done = len(slices) * 10_000
        note = "" if done == 100_000 else f" (stopped at {done:,}: a slice took > 30 s)"
        print(f"  {name:<9} total {sum(slices):7.1f} s  last/first {slices[-1] / slices[0]:5.2f}"
              f"  [{shown}]{note}")


def raw_evalsha(client: redis.Redis, seconds: float) -> int:
    """Return how many times redis-py ran ``EVALSHA "return 1"`` twice in *seconds*."""
    script = client.register_script("return 1")
    script()
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for _ in range(20):
            script()
            script()
            done += 1
    return done


def server_cpu(client: redis.Redis) -> float:
    """Return the CPU seconds the Redis server's main thread has used."""
    found = client.info("cpu")
    return float(found["used_cpu_user_main_thread"]) + float(found["used_cpu_sys_main_thread"])


def print_redis_share(url: str | None, seconds: float, rounds: int = 5) -> None:
    """Print Redis reserve+commit (direct and through the guard) against raw round trips.

    The three are measured in turns (*rounds* slices of ``seconds / rounds`` each), in the same
    process on the same server, so a machine getting busier or quieter during the run moves
    all three alike. Also prints the server's CPU time per operation (Lua included).
    """
    if url is None:
        print("redis-server not found: Redis was not measured")
        return
    client = redis.Redis.from_url(url)
    store = open_store(f"{url}#share-{uuid.uuid4().hex}")
    raw_evalsha(client, 0.05)
    direct(store, "warm", 0.05)
    through_guard(store, "warm-guard", 0.05)
    slice_ = seconds / rounds
    names = ("raw", "direct", "guard")
    done = dict.fromkeys(names, 0)
    spent = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    per_round: list[float] = []
    for n in range(rounds):
        for name in names:
            before, started = server_cpu(client), time.perf_counter()
            if name == "raw":
                count = raw_evalsha(client, slice_)
            elif name == "direct":
                count = direct(store, f"d{n}-{uuid.uuid4().hex}", slice_)
            else:
                count = through_guard(store, f"g{n}-{uuid.uuid4().hex}", slice_)
            spent[name] += time.perf_counter() - started
            cpu[name] += server_cpu(client) - before
            done[name] += count
            if name == "raw":
                per_round.append(count / slice_)
    store.close()
    client.close()
    rate = {name: done[name] / spent[name] for name in names}
    work = {name: cpu[name] / done[name] * 1e6 for name in names}
    raw = rate["raw"]
    parser = "hiredis" if redis.utils.HIREDIS_AVAILABLE else "pure-Python parser"
    print()
    print(f"redis round trips, 1 client, same process, {rounds} interleaved rounds ({parser}):")
    print(f"  EVALSHA 'return 1' x2            {raw:>9,.0f}/s  (rounds: "
          f"{min(per_round):,.0f} to {max(per_round):,.0f}/s)  server {work['raw']:5.0f} us/op")
    print(f"  try_hold + commit                {rate['direct']:>9,.0f}/s  "
          f"{rate['direct'] / raw:5.0%} of raw  server {work['direct']:5.0f} us/op")
    print(f"  guard.reserve + commit           {rate['guard']:>9,.0f}/s  "
          f"{rate['guard'] / raw:5.0%} of raw  server {work['guard']:5.0f} us/op "
          f"(target >= 60%)")


def run_postgres(seconds: float, *, durable: bool) -> None:
    """Print only the PostgreSQL figures: reserve+commit with 1 client against the raw rate."""
    with postgres_server(durable=durable) as dsn:
        if dsn is None:
            print_postgres([], [], durable=durable)
            return
        rows: list[tuple[str, str, str, float]] = []
        for runner in ("direct", "guard"):
            store = open_store(f"{dsn}#bench_{runner}_1")
            rows.append(("postgres", runner, "1", in_threads(runner, store, 1, seconds)))
            store.close()
        figures = postgres_figures(dsn, seconds)
        interleaved = interleaved_share(dsn, seconds)
    for store_name, runner, clients, rate in rows:
        print(f"{store_name:<8} {runner:<7} {clients:<20} {rate:>10,.0f}")
    print_postgres(rows, figures, durable=durable, interleaved=interleaved)


def run_part(part: str, seconds: float, *, durable: bool, stores: frozenset[str]) -> None:
    """Print only the holds figures, only the Redis round trips or only PostgreSQL's."""
    if part == "postgres":
        run_postgres(seconds, durable=durable)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-reserve-"))
    try:
        with redis_server() as url:
            if part == "redis":
                print_redis_share(url, seconds)
            else:
                with postgres_server(durable=durable) as dsn:
                    print_holds(url, dsn, folder, seconds, stores)
    finally:
        shutil.rmtree(folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--pg-durable", action="store_true",
                        help="PostgreSQL with fsync=on (the default is the tests' fsync=off)")
    parser.add_argument("--part", choices=("all", "holds", "redis", "postgres"), default="all",
                        help="run every figure, or only the holds, the Redis round trips or the "
                        "PostgreSQL figures")
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres",
                        help="with --part holds: the stores to measure, comma-separated")
    args = parser.parse_args()
    seconds: float = args.seconds
    quiet()
    if args.part != "all":
        run_part(args.part, seconds, durable=args.pg_durable,
                 stores=frozenset(args.stores.split(",")))
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-reserve-"))
    rows: list[tuple[str, str, str, float]] = []
    pg_figures: list[tuple[str, float]] = []
    try:
        with redis_server() as url, postgres_server(durable=args.pg_durable) as dsn:
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
                if dsn is not None:
                    targets["postgres"] = lambda n: f"{dsn}#bench_{n.replace('-', '_')}"
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
            if dsn is not None:
                pg_figures = postgres_figures(dsn, seconds)
            print_holds(url, dsn, folder, seconds)
            print_redis_share(url, seconds)
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
    print_postgres(rows, pg_figures, durable=args.pg_durable)
    print()
    print("provider (LuxCore emulator) requests per 1,000 concurrent checks, 16 threads:")
    for ttl in (5.0, 0.0):
        label = f"cache_ttl={ttl:g}" + (" (cache off)" if ttl == 0 else "")
        print(f"  {label:<22} {provider_requests(1000, ttl):>6}")


if __name__ == "__main__":
    main()
