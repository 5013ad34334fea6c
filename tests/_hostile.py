"""Hostile HTTP servers on 127.0.0.1: the misbehaviour the provider emulators cannot produce.

A :class:`HostileServer` accepts connections on a raw socket, reads each request in full and
hands the socket to a *behaviour*: drip the headers, drip the body, answer with whatever
status, headers and body a test wants (huge numbers, a bad ``Retry-After``, a redirect), over
plain TCP or TLS with a self-signed certificate.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "Behaviour",
    "HostileServer",
    "Received",
    "answer",
    "drip_body",
    "drip_headers",
    "self_signed",
]


class Received:
    """One request as the server read it: request line, headers (lower-case names), body."""

    def __init__(self, line: str, headers: dict[str, str], body: bytes) -> None:
        self.line = line
        self.headers = headers
        self.body = body

    @property
    def path(self) -> str:
        """Return the request target (path and query)."""
        return self.line.split(" ")[1]


Behaviour = Callable[[socket.socket, Received, threading.Event], None]
"""Answers one request on the socket; must return soon after the event is set."""


class HostileServer:
    """Serve every request with *behaviour*, each connection on its own daemon thread.

    Args:
        behaviour: What to do with each request (see :func:`answer`, :func:`drip_body`, ...).
        tls: A server-side TLS context, for an ``https://`` URL.
    """

    def __init__(self, behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> None:
        self.behaviour = behaviour
        self.received: list[Received] = []
        self.connections = 0
        self._tls = tls
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        port = self._listener.getsockname()[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting, end every behaviour and close the listener."""
        self._stop.set()
        self._thread.join()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5.0)
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            while not self._stop.is_set():
                request = _read_request(conn)
                if request is None:
                    return
                with self._lock:
                    self.received.append(request)
                self.behaviour(conn, request, self._stop)
        except (OSError, ssl.SSLError):
            return  # the client went away, or refused our certificate
        finally:
            conn.close()


def _read_request(conn: socket.socket) -> Received | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for item in fields:
        name, _, value = item.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return Received(line, headers, body)


def _head(status: int, headers: Sequence[tuple[str, str]], length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} Hostile"]
    lines += [f"{name}: {value}" for name, value in headers]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer(status: int, body: bytes | str, *headers: tuple[str, str]) -> Behaviour:
    """Return a behaviour that answers at once (``Content-Type: application/json`` added)."""
    raw = body.encode() if isinstance(body, str) else body
    head = _head(status, [("Content-Type", "application/json"), *headers], len(raw))

    def serve(conn: socket.socket, request: Received, stop: threading.Event) -> None:  # noqa: ARG001 - the behaviour's signature
        conn.sendall(head + raw)

    return serve


def drip_body(body: bytes | str, *, interval: float = 0.25) -> Behaviour:
    """Return a behaviour that sends the headers, then the body one byte per *interval*."""
    raw = body.encode() if isinstance(body, str) else body
    head = _head(200, [("Content-Type", "application/json")], len(raw))

    def serve(conn: socket.socket, request: Received, stop: threading.Event) -> None:  # noqa: ARG001 - the behaviour's signature
        conn.sendall(head)
        for index in range(len(raw)):
            if stop.wait(interval):
                return
            conn.sendall(raw[index:index + 1])

    return serve


def drip_headers(*, interval: float = 0.25) -> Behaviour:
    """Return a behaviour that sends a status line, then header bytes one per *interval*."""
    endless = b"X-Slow: " + b"a" * 100_000

    def serve(conn: socket.socket, request: Received, stop: threading.Event) -> None:  # noqa: ARG001 - the behaviour's signature
        conn.sendall(b"HTTP/1.1 200 OK\r\n")
        for index in range(len(endless)):
            if stop.wait(interval):
                return
            conn.sendall(endless[index:index + 1])

    return serve


def self_signed(directory: Path) -> tuple[Path, Path]:
    """Return (cert, key) of a fresh self-signed certificate for 127.0.0.1 (``openssl``)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def elapsed(action: Callable[[], object]) -> float:
    """Return the seconds *action* took (it may raise; the time is measured anyway)."""
    started = time.monotonic()
    with contextlib.suppress(Exception):  # only the time is wanted here
        action()
    return time.monotonic() - started
