"""The shared stores across real processes: no overspend, and a crashed worker's funds return."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from tests._postgres_server import PostgresServer
from tests._redis_server import shared_redis
from tests._store_workers import (
    HOLD_KEY,
    hammer,
    hold_and_hang,
    kill_while_holding,
    open_store,
    set_barrier,
)

WORKERS = 4
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return where the workers meet: a SQLite file, a fresh Redis namespace or Postgres schema."""
    if request.param == "sqlite":
        return str(tmp_path / "holds.db")
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return f"{server.dsn()}#{server.fresh_schema()}"
    url = request.getfixturevalue("redis_url")
    return f"{url}#procs-{uuid.uuid4().hex}"


@pytest.mark.slow
class TestProcesses:
    def test_four_processes_never_overspend(self, target: str) -> None:
        """Four processes racing 200 try_holds each on one store never exceed the ceiling."""
        ceiling = Decimal("500.00")
        open_store(target).close()  # create the file first, as a deployment would
        barrier = SPAWN.Barrier(WORKERS)
        with ProcessPoolExecutor(
            WORKERS, mp_context=SPAWN, initializer=set_barrier, initargs=(barrier,)
        ) as pool:
            futures = [pool.submit(hammer, target, n, 200, str(ceiling)) for n in range(WORKERS)]
            taken = [row for future in futures for row in future.result(timeout=120)]
        kept = [Decimal(held) for _, held, fate in taken if fate != "released"]
        store = open_store(target)
        try:
            counted = store.reserved(HOLD_KEY, counted_since=0.0, now=time.time())
            states = {pid: store.get(pid) for pid, _, _ in taken}
        finally:
            store.close()
        assert sum(kept, Decimal(0)) <= ceiling
        assert sum(kept, Decimal(0)) == counted
        assert len(taken) > len(kept) > 10  # the race really ran: holds taken and released
        for pid, _, fate in taken:
            got = states[pid]
            assert (None if fate == "released" else fate) == (got.state if got else None)

    def test_killed_worker_frees_its_hold_after_its_ttl(self, target: str) -> None:
        """A process killed while holding blocks the funds only until its hold expires."""
        ttl = 1.5
        held = SPAWN.Event()
        process = SPAWN.Process(target=hold_and_hang, args=(target, "100.00", ttl, held))
        kill_while_holding(process, held)
        store = open_store(target)
        try:
            crashed = store.get("po_crashed")
            assert crashed is not None
            before_expiry = min(time.time(), crashed.expires_at - 0.01)
            assert Decimal("100.00") == store.reserved(HOLD_KEY, counted_since=0.0,
                                                      now=before_expiry)
            time.sleep(max(0.0, crashed.expires_at - time.time()))
            now = time.time()
            assert Decimal(0) == store.reserved(HOLD_KEY, counted_since=0.0, now=now)
            again = replace(crashed, payout_id="po_after", created_at=now, expires_at=now + 60)
            outcome = store.try_hold(again, ceiling=Decimal("100.00"), counted_since=0.0, now=now)
            assert "held" == outcome.status
        finally:
            store.close()
