"""Code run in worker processes by the multi-process store tests (kept light to import)."""

from __future__ import annotations

import os
import random
import signal
import time
from decimal import Decimal
from typing import TYPE_CHECKING

from guard.stores import (
    Hold,
    PostgresReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)

if TYPE_CHECKING:
    from multiprocessing.context import SpawnProcess
    from multiprocessing.synchronize import Barrier, Event

__all__ = [
    "HOLD_KEY",
    "hammer",
    "hold_and_hang",
    "kill_while_holding",
    "open_store",
    "set_barrier",
    "wait_for_start",
]

HOLD_KEY = balance_key("luxcore", None, "BRL")
_barrier: Barrier | None = None


def set_barrier(barrier: Barrier) -> None:
    """Keep the start barrier (a pool initializer: barriers travel only at process start)."""
    global _barrier  # noqa: PLW0603 - one barrier per worker process
    _barrier = barrier


def wait_for_start() -> None:
    """Wait at the start barrier, when the pool was given one, so workers race for real."""
    if _barrier is not None:
        _barrier.wait(timeout=60)


def kill_while_holding(process: SpawnProcess, held: Event) -> None:
    """Start *process*, SIGKILL it once it sets *held*, and reap it.

    Raises:
        AssertionError: the worker never signalled, or did not die of the SIGKILL.
    """
    process.start()
    try:
        assert held.wait(timeout=60), "the worker never took its hold"
        os.kill(process.pid or 0, signal.SIGKILL)
        process.join(timeout=30)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
    assert -signal.SIGKILL == process.exitcode
    process.close()


def open_store(target: str) -> ReservationStore:
    """Open the store named by *target*.

    ``redis://...#namespace``, ``postgresql://...#schema`` (created when missing) or a SQLite
    file path.
    """
    if target.startswith("postgresql://"):
        dsn, schema = target.split("#", 1)
        return PostgresReservations(dsn, schema=schema, create_schema=True, timeout=30.0)
    if target.startswith("redis://"):
        url, namespace = target.split("#", 1)
        return RedisReservations(url, namespace=namespace)
    return SqliteReservations(target, timeout=30.0)


def _hold(payout_id: str, amount: Decimal, ttl: float) -> Hold:
    now = time.time()
    return Hold(
        payout_id=payout_id, key=HOLD_KEY, currency="BRL", amount=amount, fee=Decimal("0.00"),
        state="pending", created_at=now, expires_at=now + ttl, owner=f"owner-of-{payout_id}",
    )


def hammer(target: str, worker: int, attempts: int, ceiling: str) -> list[tuple[str, str, str]]:
    """Try *attempts* holds against *ceiling*; commit, release or keep each one held.

    Returns:
        ``(payout_id, held, fate)`` for every hold taken; fate is ``committed``, ``released``
        or ``pending``.
    """
    rng = random.Random(worker)
    store = open_store(target)
    taken: list[tuple[str, str, str]] = []
    try:
        wait_for_start()
        for i in range(attempts):
            hold = _hold(f"w{worker}-{i}", Decimal(rng.randint(100, 2000)).scaleb(-2), 300.0)
            outcome = store.try_hold(hold, ceiling=Decimal(ceiling), counted_since=0.0,
                                     now=time.time())
            if outcome.status != "held":
                continue
            roll = rng.random()
            if roll < 0.3:
                store.release(hold.payout_id, owner=hold.owner)
                fate = "released"
            elif roll < 0.6:
                store.commit(hold.payout_id, owner=hold.owner, now=time.time())
                fate = "committed"
            else:
                fate = "pending"
            taken.append((hold.payout_id, str(hold.held), fate))
    finally:
        store.close()
    return taken


def hold_and_hang(target: str, amount: str, ttl: float, held: Event) -> None:
    """Hold *amount* for *ttl* seconds, say so, then hang until killed."""
    store = open_store(target)
    outcome = store.try_hold(_hold("po_crashed", Decimal(amount), ttl), ceiling=Decimal(amount),
                             counted_since=0.0, now=time.time())
    if outcome.status == "held":
        held.set()
    time.sleep(600)
