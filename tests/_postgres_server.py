"""A real PostgreSQL server on a free loopback port, shared by the test modules that need one.

``initdb`` makes a cluster in a temporary directory and ``postgres`` serves it on 127.0.0.1 only
(no Unix socket), with password authentication, so every DSN the tests use carries a secret.
The server refuses to run as root: when the tests do, the cluster is owned by and the server
runs as ``nobody`` (uid/gid 65534). It is stopped by its pid. Durability settings are relaxed
(``fsync=off``): an immediate shutdown (a crash of the server) still keeps every committed
transaction, which is what the restart test needs; only an OS crash would lose them.

Each module declares its own session fixture with :func:`shared_postgres`; the server starts
with the first and stops when the last one is torn down. Without the binaries the tests are
skipped loudly, unless ``CI`` is set: CI must run them, so there they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests._redis_server import free_port

__all__ = ["PASSWORD", "PostgresServer", "postgres_bin", "shared_postgres", "start_postgres"]

PASSWORD = "s3cret-pg-pass"  # a throwaway password of a throwaway test server
_NOBODY = 65534


@dataclass
class PostgresServer:
    """A running ``postgres`` process and its data directory."""

    bin_dir: Path
    folder: Path
    port: int
    durable: bool = False
    process: subprocess.Popen[bytes] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def data(self) -> Path:
        """Return the cluster's data directory."""
        return self.folder / "data"

    def dsn(self, dbname: str = "postgres") -> str:
        """Return a DSN (with the password) for *dbname*."""
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """Return a new autocommit connection to the ``postgres`` database."""
        return psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5, **kwargs)

    def fresh_schema(self) -> str:
        """Return the name of a schema nobody used yet (not created)."""
        return f"t_{uuid.uuid4().hex[:16]}"

    def start(self) -> None:
        """Start the server on its port and wait until it accepts connections.

        Raises:
            RuntimeError: it did not answer within 30 s.
        """
        relaxed = () if self.durable else ("-c", "fsync=off", "-c", "full_page_writes=off")
        self.process = _run_as_owner(
            [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
             *relaxed, "-c", "max_connections=200", "-c", "shared_buffers=32MB"],
            popen=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"postgres did not start on port {self.port}")

    def stop(self, *, crash: bool = False) -> None:
        """Stop the server: a fast shutdown, or an immediate one (a crash) with *crash*."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGQUIT if crash else signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def restart(self, *, crash: bool = True) -> None:
        """Stop the server (by default as a crash) and start it again on the same port."""
        with self._lock:
            self.stop(crash=crash)
            self.start()

    def remove(self) -> None:
        """Stop the server and delete its files."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def postgres_bin() -> Path:
    """Return the directory of ``initdb`` and ``postgres``, or skip (fail when ``CI`` is set)."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    reason = (
        "PostgreSQL is not installed (apt-get install postgresql): the PostgreSQL store tests "
        "did NOT run"
    )
    if os.environ.get("CI"):
        pytest.fail(f"CI is set, so this is a failure: {reason}", pytrace=False)
    pytest.skip(reason)


def _run_as_owner(args: list[str], *, popen: bool = False) -> subprocess.Popen[bytes]:
    """Run *args* as ``nobody`` when we are root (the server refuses root), else as we are."""
    drop: dict[str, Any] = (
        {"user": _NOBODY, "group": _NOBODY, "extra_groups": []} if os.geteuid() == 0 else {}
    )
    process = subprocess.Popen(  # fixed arguments, binaries of the installed server
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if not popen else
        subprocess.DEVNULL, **drop,
    )
    if not popen:
        _, err = process.communicate(timeout=120)
        if process.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed: {err.decode(errors='replace')}")
    return process


def start_postgres(*, durable: bool = False) -> PostgresServer:
    """Create a cluster in a temporary directory and start a server on a free port.

    With *durable*, the server keeps PostgreSQL's default ``fsync=on`` (for benchmarks).

    Raises:
        RuntimeError: initdb failed or the server did not start.
    """
    bin_dir = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="payout-guard-pg-"))
    try:
        (folder / "pw").write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(folder, _NOBODY, _NOBODY)
            os.chown(folder / "pw", _NOBODY, _NOBODY)
        _run_as_owner([
            str(bin_dir / "initdb"), "-D", str(folder / "data"), "-U", "postgres",
            "--pwfile", str(folder / "pw"), "--auth-host=scram-sha-256", "--auth-local=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        ])
        server = PostgresServer(bin_dir, folder, free_port(), durable)
        server.start()
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return server


_lock = threading.Lock()
_server: PostgresServer | None = None
_users = 0


@contextmanager
def shared_postgres() -> Iterator[PostgresServer]:
    """Yield the shared server, starting it for the first user and stopping it after the last."""
    global _server, _users  # noqa: PLW0603 - one server for the whole test session
    with _lock:
        if _server is None:
            _server = start_postgres()
        _users += 1
        server = _server
    try:
        yield server
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _server is not None:
                _server.remove()
                _server = None
