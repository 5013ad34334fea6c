"""The guard's own thread pool for blocking work started from an event loop.

``protect`` on an ``async def`` runs the guard's blocking calls (a provider fetch, a SQLite
write) here rather than in the loop's default executor, so guarded payouts never queue the
application's own ``asyncio.to_thread`` calls behind them. Two helpers keep holds safe when the
awaiting task is cancelled: ``run_keeping`` hands a result nobody awaits any more to a clean-up
function, and ``run_shielded`` finishes its work whatever happens to the task.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["BlockingPool"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingPool:
    """A bounded thread pool, started on first use and again in a forked child.

    Args:
        max_workers: The most threads it runs at once.
    """

    def __init__(self, max_workers: int) -> None:
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._pid = os.getpid()

    def submit(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        """Start ``fn(*args, **kwargs)`` in the pool; return its future."""
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                self._pool = ThreadPoolExecutor(self._max_workers, "payout_guard")
                self._pid = os.getpid()
            return self._pool.submit(fn, *args, **kwargs)

    async def run_keeping(
        self, on_abandon: Callable[[T], object], fn: Callable[P, T], *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(...)`` in the pool; if the awaiting task is cancelled, clean up after it.

        A call that has not started is dropped; one that is running finishes in its thread,
        and its result goes to *on_abandon* (for a reservation: release the hold), so nothing
        it took is left without an owner.
        """
        future = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: _abandon(done, on_abandon))
            raise

    async def run_shielded(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(...)`` in the pool; a cancellation of the task does not stop it."""
        return await asyncio.shield(asyncio.wrap_future(self.submit(fn, *args, **kwargs)))

    def close(self) -> None:
        """Stop accepting work; running calls finish in their threads."""
        with self._lock:
            if self._pool is not None and self._pid == os.getpid():
                self._pool.shutdown(wait=False)
            self._pool = None


def _abandon(done: Future[T], on_abandon: Callable[[T], object]) -> None:
    if not done.cancelled() and done.exception() is None:
        on_abandon(done.result())
