"""A real ``redis-server`` on a free loopback port, shared by the test modules that need one.

Each module declares its own session fixture with :func:`shared_redis`; the server starts with
the first and stops when the last one is torn down. Without a ``redis-server`` binary the tests
are skipped loudly, unless ``CI`` is set: CI must run them, so there they fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = ["RedisServer", "free_port", "redis_binary", "shared_redis", "start_redis"]


@dataclass
class RedisServer:
    """A running redis-server process."""

    process: subprocess.Popen[bytes]
    port: int
    binary: str = "redis-server"
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        """Return the server's URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop the server and start it again, empty, on the same port with the same options.

        Raises:
            RuntimeError: it did not come back.
        """
        self.stop()
        self.process = _launch(self.binary, self.port, self.extra)
        if not _answers(self.process, self.port):
            self.stop()
            raise RuntimeError(f"redis-server did not restart on port {self.port}")


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_binary() -> str:
    """Return the redis-server binary, or skip the test (fail it when ``CI`` is set)."""
    return _binary()


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = (
            "redis-server is not installed (apt-get install redis-server): "
            "the Redis store tests did NOT run"
        )
        if os.environ.get("CI"):
            pytest.fail(f"CI is set, so this is a failure: {reason}", pytrace=False)
        pytest.skip(reason)
    return binary


def _launch(binary: str, port: int, extra: tuple[str, ...]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # the binary comes from PATH, the arguments are fixed
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--loglevel", "warning", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _answers(process: subprocess.Popen[bytes], port: int) -> bool:
    """Return whether the server on *port* answers PING within 10 s (False if it exited)."""
    deadline = time.monotonic() + 10.0
    while process.poll() is None and time.monotonic() < deadline:
        # No retries: redis-py's default backs off for seconds on an authentication error.
        client = redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=1.0,
                             retry=Retry(NoBackoff(), 0))
        try:
            if client.ping():
                return True
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers, asking for a password (--requirepass)
        except redis.ConnectionError:
            time.sleep(0.02)
        finally:
            client.close()
    return False


def start_redis(
    binary: str, *, attempts: int = 3, extra: tuple[str, ...] = (), port: int | None = None
) -> RedisServer:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING.

    It keeps nothing on disk (no RDB snapshots, no AOF). *extra* adds options, which win over
    those defaults, such as ``("--maxmemory-policy", "allkeys-lru")``. With *port*, that port
    is tried once.

    Raises:
        RuntimeError: it did not start after *attempts* ports.
    """
    for _ in range(1 if port is not None else attempts):
        chosen = port or free_port()
        server = RedisServer(_launch(binary, chosen, extra), chosen, binary, extra)
        if _answers(server.process, chosen):
            return server
        server.stop()
    raise RuntimeError(f"redis-server did not start after {attempts} attempts")


_lock = threading.Lock()
_server: RedisServer | None = None
_users = 0


@contextmanager
def shared_redis() -> Iterator[RedisServer]:
    """Yield the shared server, starting it for the first user and stopping it after the last."""
    global _server, _users  # noqa: PLW0603 - one server for the whole test session
    binary = _binary()
    with _lock:
        if _server is None:
            _server = start_redis(binary)
        _users += 1
        server = _server
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _server is not None:
                _server.stop()
                _server = None
