"""One wall-clock deadline per request: a watchdog that cuts the connection when time is up.

``requests`` applies its read timeout to each socket read, so a server that sends one byte
every 0.25 s (in its headers or its body) keeps a request alive for as long as it likes. Here
every request runs under a :class:`Watch`: the connections it uses register with it, and when
its deadline passes a timer shuts their sockets down, which wakes the blocked read at once.
The fetcher then reports a timeout.

:class:`DeadlineAdapter` is the ``requests`` transport adapter whose connections register
themselves (new and reused ones alike, as they send a request). It is mounted on the sessions
the fetchers create; a session passed in by the caller keeps its own adapters, and only the
answer's connection is watched (the body, not the wait for headers).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Any, Protocol

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

__all__ = ["DeadlineAdapter", "Watch"]

_current = threading.local()


class _HasSocket(Protocol):
    sock: socket.socket | None


class Watch:
    """Shut down every connection used within the block once *seconds* have passed.

    Args:
        seconds: Time allowed, from entering the block.

    Attributes:
        fired: Whether the deadline passed while the block ran (its connections were cut).
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = max(seconds, 0.0)
        self._lock = threading.Lock()
        self._connections: list[_HasSocket] = []
        self._done = False
        self.fired = False
        self._timer = threading.Timer(self._seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watch:
        self._previous = getattr(_current, "watch", None)
        _current.watch = self
        self._timer.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()
        _current.watch = self._previous

    def track(self, connection: object) -> None:
        """Cut *connection* too when the deadline passes (now, if it already has)."""
        if connection is None or not hasattr(connection, "sock"):
            return
        with self._lock:
            if self._done:
                return
            self._connections.append(connection)
            late = self.fired
        if late:
            _cut(connection)

    def finish(self) -> None:
        """Stop watching: the request is over, its connection may go back to the pool."""
        with self._lock:
            self._done = True
            self._connections.clear()
        self._timer.cancel()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            connections = list(self._connections)
        for connection in connections:
            _cut(connection)


def _cut(connection: object) -> None:
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        # The plain socket's shutdown, even for TLS: it wakes a read blocked in another thread
        # without touching the TLS state that thread is using. Already closed: nothing to cut.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _watched() -> Watch | None:
    watch = getattr(_current, "watch", None)
    return watch if isinstance(watch, Watch) else None


class _WatchedHTTPConnection(HTTPConnection):
    """A connection the current attempt's watch can cut; the HTTPS one inherits it."""

    def connect(self) -> None:
        if (watch := _watched()) is not None:
            watch.track(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        if (watch := _watched()) is not None:
            watch.track(self)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    """The same for HTTPS: the watching comes first in the method order, TLS after it."""


class _WatchedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class DeadlineAdapter(HTTPAdapter):
    """A ``requests`` adapter whose connections register with the current :class:`Watch`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Create the pool manager, with connection pools that use watched connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _WatchedHTTPConnectionPool,
            "https": _WatchedHTTPSConnectionPool,
        }
