"""Where decisions go besides the log: the sinks of ``guard.testing.capture_decisions``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from guard._models import Decision

__all__ = ["capture_decisions", "record"]

_lock = threading.Lock()
_sinks: list[list[Decision]] = []


def record(decision: Decision) -> None:
    """Hand *decision* to every active capture (nothing to do when none is active)."""
    if _sinks:
        with _lock:
            for sink in _sinks:
                sink.append(decision)


@contextmanager
def capture_decisions() -> Iterator[list[Decision]]:
    """Yield a list that receives every decision made inside the block, from any thread.

    Example:
        >>> from guard.testing import StaticFetcher, capture_decisions
        >>> from guard import PayoutGuard
        >>> with capture_decisions() as decisions:
        ...     _ = PayoutGuard(StaticFetcher({"BRL": "100.00"})).check("10", "BRL")
        >>> [d.allowed for d in decisions]
        [True]
    """
    sink: list[Decision] = []
    with _lock:
        _sinks.append(sink)
    try:
        yield sink
    finally:
        with _lock:
            _sinks.remove(sink)
