"""A clock for tests: wall time that can step either way, monotonic time that only advances."""

from __future__ import annotations

import threading

__all__ = ["FakeClock"]


class FakeClock:
    """Both of the guard's clocks, moved only when a test says so.

    ``advance`` moves both clocks forward, as time passing does; ``step`` moves only the wall
    clock, either way, as an NTP correction does. Pass it as ``PayoutGuard(clock=...)``; it is
    also callable (wall time), so a ``StaticFetcher(clock=...)`` can stamp balances with it.

    Args:
        start: Wall time to start at, seconds since the epoch.

    Example:
        >>> clock = FakeClock(1_700_000_000.0)
        >>> clock.step(-40)
        >>> clock.time(), clock.monotonic()
        (1699999960.0, 0.0)
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = float(start)
        self._mono = 0.0

    def __repr__(self) -> str:
        return f"FakeClock(time={self._wall!r}, monotonic={self._mono!r})"

    def __call__(self) -> float:
        return self.time()

    def time(self) -> float:
        """Return the wall time, seconds since the epoch."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """Return the monotonic time (starts at 0, never goes back)."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Let *seconds* pass: both clocks move forward.

        Raises:
            ValueError: *seconds* is negative (time passing cannot go back; use ``step``).
        """
        if seconds < 0:
            raise ValueError(f"time passing cannot go back ({seconds} s); use step()")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def step(self, seconds: float) -> None:
        """Step the wall clock by *seconds* (negative: back), leaving monotonic time alone."""
        with self._lock:
            self._wall += seconds
