"""The guard's two clocks: wall time for timestamps, monotonic time for durations.

A wall clock can step (NTP corrections, a VM resumed, an operator's ``date -s``); a monotonic
clock only moves forward. So every *duration* the guard measures (how long a cached balance
lives, how long a fetch may take, how old a balance has become since it arrived) is measured on
the monotonic clock, and the wall clock is read only for *timestamps* (``as_of``,
``evaluated_at``, when a hold was taken or committed), which must mean the same thing to
other processes and hosts.

Holds are counted against ``min(as_of, now) - settle_lag`` (:func:`counted_since`): a wall
clock stepping back then moves the window back with it, so a hold committed "earlier" than
the balance it was judged on keeps counting instead of silently dropping out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["SYSTEM_CLOCKS", "Clock", "Clocks", "WallClock", "clocks_of", "counted_since"]

WallClock = Callable[[], float]
"""A callable returning seconds since the epoch, like ``time.time``."""


@runtime_checkable
class Clocks(Protocol):
    """A wall clock and a monotonic clock read together (``guard.testing.FakeClock`` is one)."""

    def time(self) -> float:
        """Return seconds since the epoch (may step back or forward)."""
        ...

    def monotonic(self) -> float:
        """Return seconds on a clock that never goes back (its origin means nothing)."""
        ...


Clock = Clocks | WallClock
"""What ``PayoutGuard(clock=...)`` accepts: :class:`Clocks`, or a wall-clock callable.

A plain callable is used for both timestamps and durations, as before there were two clocks:
pass a :class:`Clocks` (such as ``guard.testing.FakeClock``) to step one without the other.
"""


class _SystemClocks:
    """``time.time`` and ``time.monotonic``."""

    __slots__ = ()

    # The functions themselves, not methods calling them: read several times in every check.
    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)  # last: the name is the module's until here

    def __repr__(self) -> str:
        return "SYSTEM_CLOCKS"


class _OneClock:
    """A single wall-clock callable standing in for both clocks (the old ``clock=`` form)."""

    __slots__ = ("_read",)

    def __init__(self, read: WallClock) -> None:
        self._read = read

    def time(self) -> float:
        return self._read()

    def monotonic(self) -> float:
        return self._read()

    def __repr__(self) -> str:
        return f"_OneClock({self._read!r})"


SYSTEM_CLOCKS: Clocks = _SystemClocks()
"""The real clocks: ``time.time`` for timestamps, ``time.monotonic`` for durations."""


def clocks_of(clock: Clock | None) -> Clocks:
    """Return *clock* as :class:`Clocks`; ``None`` is the system's.

    Raises:
        TypeError: *clock* is neither :class:`Clocks` nor a callable.
    """
    if clock is None:
        return SYSTEM_CLOCKS
    if isinstance(clock, Clocks):
        return clock
    if callable(clock):
        return _OneClock(clock)
    raise TypeError(f"clock must be Clocks or a callable, got {type(clock).__name__}")


def counted_since(as_of: float, now: float, settle_lag: float) -> float:
    """Return the time after which committed holds still count against a balance.

    ``min(as_of, now) - settle_lag``: a payout committed within *settle_lag* seconds before
    the balance was taken may not show in it yet. Taking the earlier of the balance's time and
    now means a wall clock stepping back (or a provider clock ahead) widens the window, never
    narrows it: a hold is counted too long rather than dropped.

    Args:
        as_of: When the balance was taken, seconds since the epoch.
        now: The wall clock now.
        settle_lag: Seconds a submitted payout may take to show in the balance.
    """
    return (as_of if as_of < now else now) - settle_lag  # min(), without its call
