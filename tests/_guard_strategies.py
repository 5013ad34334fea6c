"""Test doubles and strategies for the guard's tests, on top of ``tests.strategies``.

A fake clock, a fetcher that blocks until released (for single-flight tests), a helper that
waits for threads to block, and strategies for balances. Currencies, amounts and rules come
from the shared ``tests.strategies``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path

from hypothesis import strategies as st

import guard
from guard import BalanceSnapshot
from guard._money import currency_exponent, smallest_unit
from guard.testing import StaticFetcher
from tests.strategies import amounts

__all__ = [
    "START",
    "BlockingFetcher",
    "FakeClock",
    "balances",
    "major",
    "unit",
    "wait_until_blocked",
]

#: The fake clock starts here (2023-11-14), far from the epoch so ``as_of`` looks real.
START = 1_700_000_000.0

_GUARD_DIR = str(Path(guard.__file__).parent)


class FakeClock:
    """A clock that only moves when told to: seconds since the epoch, as ``time.time``."""

    def __init__(self, start: float = START) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by *seconds*."""
        with self._lock:
            self.now += seconds


class BlockingFetcher:
    """A fetcher that blocks every fetch until ``release`` is set, then answers or raises.

    Args:
        balances: What a ``StaticFetcher`` would serve once released.
        error: Raised (instead of answering) once released, when given.
        clock: Clock for the snapshots' ``as_of``.
    """

    def __init__(
        self,
        balances: dict[str, str],
        *,
        error: BaseException | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._static = StaticFetcher(balances, name="blocking", clock=clock)
        self.release = threading.Event()
        self.error = error
        self._lock = threading.Lock()
        self.calls = 0

    @property
    def name(self) -> str:
        """Return ``"blocking"``."""
        return "blocking"

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        """Wait for ``release`` (10 s at most), then answer or raise."""
        with self._lock:
            self.calls += 1
        if not self.release.wait(10):
            raise RuntimeError("BlockingFetcher was never released")
        if self.error is not None:
            raise self.error
        return self._static.fetch(currency)


def _blocked_in_guard(thread: threading.Thread) -> bool:
    """Return whether *thread* is waiting on a lock or event somewhere below guard code."""
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None or frame.f_code.co_name != "wait":
        return False
    if not frame.f_code.co_filename.endswith("threading.py"):
        return False
    while frame is not None:
        if frame.f_code.co_filename.startswith(_GUARD_DIR):
            return True
        frame = frame.f_back
    return False


def wait_until_blocked(threads: Iterable[threading.Thread], *, timeout: float = 10.0) -> None:
    """Return once every thread waits inside the guard (a deadline, not a speed claim).

    Raises:
        AssertionError: some thread was still running guard code after *timeout* seconds.
    """
    pending = list(threads)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [t for t in pending if not _blocked_in_guard(t)]
        if pending:
            time.sleep(0.005)
    assert [] == [t.name for t in pending], "threads never blocked inside the guard"


def unit(currency: str) -> Decimal:
    """Return the smallest amount of *currency*."""
    return smallest_unit(currency)


def major(minor: int, currency: str) -> Decimal:
    """Return *minor* units of *currency* as a Decimal at the currency's exponent."""
    return Decimal(minor).scaleb(-currency_exponent(currency))


def balances(currency: str) -> st.SearchStrategy[dict[str, object]]:
    """Return ``StaticFetcher`` balance specs: available, sometimes frozen and total."""
    money = amounts(currency, min_value=0, max_value=100_000)
    return st.fixed_dictionaries(
        {"available": money}, optional={"frozen": money, "total": money}
    )
