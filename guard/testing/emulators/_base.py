"""Shared machinery of the provider emulators: the loopback server, the request log, faults.

Each emulator subclasses :class:`EmulatorBase` and implements ``_route`` (auth, validation and
the provider's own bodies) and ``_fault_reply`` (the provider's error bodies for the status
faults). Everything about sockets, threads, locking, the rate limit and fault bookkeeping lives
here once.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self, cast
from urllib.parse import parse_qsl, urlsplit

from guard._text import quoted

__all__ = [
    "BalanceCall",
    "EmulatorBase",
    "Fault",
    "ReceivedRequest",
    "Reply",
    "parse_json",
    "render_json",
]


class Fault(StrEnum):
    """A failure the next balance request should suffer (see ``fail_next``)."""

    HTTP_500 = "http_500"
    HTTP_502 = "http_502"
    HTTP_503 = "http_503"
    RATE_LIMIT = "rate_limit"
    RATE_LIMIT_NO_RETRY_AFTER = "rate_limit_no_retry_after"
    SLOW = "slow"
    DROP = "drop"
    MALFORMED_JSON = "malformed_json"
    HTML_ERROR = "html_error"
    WRONG_TYPES = "wrong_types"
    EXPIRED = "expired"
    PROVIDER_BUSY = "provider_busy"


# Faults answered with the provider's own error reply (see ``EmulatorBase._fault_reply``).
_STATUS_FAULTS = frozenset(Fault) - {
    Fault.SLOW,
    Fault.DROP,
    Fault.MALFORMED_JSON,
    Fault.HTML_ERROR,
    Fault.WRONG_TYPES,
}
_REDACTED_HEADERS = frozenset({"authorization", "x-api-key", "x-signature"})
_STOP_GRACE_SECONDS = 2.0
_RATE_WINDOW_SECONDS = 60.0
_HTML_502 = (
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\r\n"
)


@dataclass(frozen=True, repr=False)
class ReceivedRequest:
    """One request as the emulator received it (credentials stay out of the repr).

    Attributes:
        method: HTTP method, upper case.
        path: The path without the query string.
        query: Query parameters (the last value wins when a name repeats).
        headers: Request headers with the names as the client sent them.
        body: The raw request body.
        received_at: ``time.time()`` when the request was read.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    received_at: float

    def header(self, name: str) -> str | None:
        """Return the header *name* (case-insensitive), or ``None`` when it was not sent."""
        wanted = name.lower()
        found = [value for key, value in self.headers.items() if key.lower() == wanted]
        return found[-1] if found else None

    def json(self) -> Any:
        """Return the body parsed as JSON, numbers with fractions as ``Decimal``.

        Raises:
            ValueError: The body is not valid UTF-8 JSON.
        """
        return parse_json(self.body)

    def __repr__(self) -> str:
        shown = {
            key: ("<redacted>" if key.lower() in _REDACTED_HEADERS else value)
            for key, value in self.headers.items()
        }
        return (
            f"ReceivedRequest(method={self.method!r}, path={self.path!r}, "
            f"query={self.query!r}, headers={shown!r}, body=<{len(self.body)} bytes>, "
            f"received_at={self.received_at!r})"
        )


@dataclass(frozen=True)
class BalanceCall:
    """One balance request that passed auth and validation, as the rate limit saw it.

    Attributes:
        received_at: ``time.time()`` when the request was read (as ``ReceivedRequest``).
        rate_limited: Whether it was answered 429 because ``requests_per_minute`` was spent.
    """

    received_at: float
    rate_limited: bool


@dataclass(frozen=True)
class Reply:
    """What the handler sends back: a status and body, or nothing at all (``drop``)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    drop: bool = False

    @classmethod
    def json(cls, status: int, document: object) -> Reply:
        """Return a JSON reply; ``Decimal`` values are written as exact JSON numbers."""
        return cls(status=status, body=render_json(document).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: EmulatorBase) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked here, in the serving thread, so stop() sees every accepted connection.
        self.emulator.track(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        try:
            super().shutdown_request(request)
        finally:
            self.emulator.untrack(request)

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet: a client hanging up mid-answer is normal in fault tests."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waited for the
    # client's delayed ACK, about 40 ms per answer on keep-alive connections.
    disable_nagle_algorithm = True

    def log_message(self, fmt: str, *args: Any) -> None:
        """Print nothing: emulators are quiet."""

    def _serve(self) -> None:
        # A non-numeric Content-Length raises here; the server then just closes the connection.
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = ReceivedRequest(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=dict(self.headers.items()),
            body=body,
            received_at=time.time(),
        )
        emulator = cast("_Server", self.server).emulator
        reply = emulator.receive(request)
        if reply.delay > 0 and emulator.stopping.wait(reply.delay):
            reply = Reply(status=0, drop=True)
        if reply.drop:
            self.close_connection = True
            return
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    # http.server dispatches on these names; every method goes through the emulator's router.
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve  # noqa: N815 - stdlib names


class EmulatorBase(ABC):
    """A provider emulator: a real HTTP server on 127.0.0.1 with a request log and faults.

    With ``requests_per_minute`` set, it limits balance requests like a provider does: a
    balance request that passed auth and validation is answered with the provider's own 429
    (its rate-limit body, and ``Retry-After``: whole seconds until the oldest answered request
    leaves the window) when that many were already answered in the last 60 seconds (a sliding
    window). Requests answered 429 do not use up the allowance; withdrawals are never limited.

    Args:
        port: Port to bind on 127.0.0.1; 0 picks a free one.
        requests_per_minute: Balance requests answered per sliding 60 s window; ``None`` (the
            default) for no limit.
        monotonic: The clock the rate window is measured on (seconds, never going back).
    """

    _balance_paths: ClassVar[frozenset[str]]
    _supported_faults: ClassVar[frozenset[Fault]] = frozenset(Fault) - {Fault.EXPIRED}

    def __init__(
        self,
        *,
        port: int = 0,
        requests_per_minute: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests_per_minute is not None and (
            isinstance(requests_per_minute, bool)
            or not isinstance(requests_per_minute, int)
            or requests_per_minute < 1
        ):
            raise ValueError(
                f"requests_per_minute must be a positive int or None, got {requests_per_minute!r}"
            )
        self.requests_per_minute = requests_per_minute
        self._monotonic = monotonic
        self._answered: deque[float] = deque()  # monotonic times inside the rate window
        self._balance_calls: list[BalanceCall] = []
        self.slow_seconds = 5.0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._port = port
        self._bound_port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._faults: deque[Fault] = deque()
        self._log: list[ReceivedRequest] = []
        self._balance_count = 0
        self._connections: set[socket.socket] = set()
        self._drained = threading.Condition(self._lock)

    def start(self) -> Self:
        """Bind 127.0.0.1 and serve from a daemon thread; a second call does nothing.

        A restarted emulator binds the port it had before, so its ``url`` stays valid.

        Returns:
            The emulator itself.
        """
        if self._server is not None:
            return self
        self.stopping.clear()
        port = self._bound_port if self._bound_port is not None else self._port
        server = _Server(("127.0.0.1", port), self)
        self._bound_port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name=f"{type(self).__name__}:{self._bound_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections and wake slow answers; a second call does nothing."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()
        with self._lock:
            for conn in self._connections:
                _hang_up(conn)
            self._drained.wait_for(lambda: not self._connections, timeout=_STOP_GRACE_SECONDS)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Return whether the server is accepting connections."""
        return self._server is not None

    @property
    def url(self) -> str:
        """Return the base URL, ``http://127.0.0.1:<port>`` (kept after ``stop``).

        Raises:
            RuntimeError: The emulator was never started.
        """
        if self._bound_port is None:
            raise RuntimeError(
                f"{type(self).__name__} has not been started; "
                "call start() or use it in a with block"
            )
        return f"http://127.0.0.1:{self._bound_port}"

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Return a copy of every request received so far, including rejected ones."""
        with self._lock:
            return list(self._log)

    @property
    def balance_requests(self) -> int:
        """Return how many requests reached a balance endpoint (any outcome)."""
        with self._lock:
            return self._balance_count

    @property
    def balance_calls(self) -> tuple[BalanceCall, ...]:
        """Return every balance request that passed auth and validation, in arrival order."""
        with self._lock:
            return tuple(self._balance_calls)

    @property
    def authenticated_balance_requests(self) -> int:
        """Return how many balance requests passed auth and validation (answered or limited)."""
        with self._lock:
            return len(self._balance_calls)

    @property
    def rate_limited_requests(self) -> int:
        """Return how many balance requests were answered 429 by ``requests_per_minute``."""
        with self._lock:
            return sum(call.rate_limited for call in self._balance_calls)

    def fail_next(self, kind: Fault | str, times: int = 1) -> None:
        """Make the next *times* balance requests that pass auth and validation suffer *kind*.

        Faults queue up in call order; each one is used up by one request.

        Raises:
            ValueError: *kind* is not a fault this emulator supports, or *times* < 1.
        """
        if kind not in self._supported_faults:  # a Fault is a str, so "http_503" matches too
            supported = ", ".join(sorted(fault.value for fault in self._supported_faults))
            raise ValueError(
                f"{type(self).__name__} does not model fault {quoted(str(kind))}; accepted: "
                f"{supported}"
            )
        if isinstance(times, bool) or not isinstance(times, int) or times < 1:
            raise ValueError(f"times must be a positive int, got {times!r}")
        with self._lock:
            self._faults.extend([Fault(kind)] * times)

    @property
    def pending_faults(self) -> tuple[Fault, ...]:
        """Return the faults still queued, next first."""
        with self._lock:
            return tuple(self._faults)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def track(self, conn: socket.socket) -> None:
        """Remember an accepted connection so ``stop`` can cut it (called by the server)."""
        with self._lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        """Forget a closed connection (called by the server)."""
        with self._lock:
            self._connections.discard(conn)
            self._drained.notify_all()

    def receive(self, request: ReceivedRequest) -> Reply:
        """Log *request* and return the reply to send (called by the handler)."""
        with self._lock:
            self._log.append(request)
            if request.path in self._balance_paths:
                self._balance_count += 1
        try:
            return self._route(request)
        except Exception as exc:  # noqa: BLE001 - an emulator bug must reach the test as a 500
            message = f"emulator error: {type(exc).__name__}: {exc}"
            return Reply(status=500, body=message.encode(), content_type="text/plain")

    def _answer_balance(
        self, request: ReceivedRequest, build: Callable[[bool], Reply]
    ) -> Reply:
        """Return the success reply built by ``build(wrong_types)``, unless limited or faulted.

        Called once a balance *request* passed auth and validation. The rate limit comes first:
        a limited request uses up no queued fault.
        """
        with self._lock:
            wait = self._rate_wait_locked()
            self._balance_calls.append(BalanceCall(request.received_at, wait is not None))
            fault = None if wait is not None or not self._faults else self._faults.popleft()
        if wait is not None:
            reply = self._fault_reply(Fault.RATE_LIMIT)
            return replace(reply, headers=(*reply.headers, ("Retry-After", str(wait))))
        if fault is Fault.DROP:
            return Reply(status=0, drop=True)
        if fault is Fault.HTML_ERROR:
            return Reply(status=502, body=_HTML_502, content_type="text/html")
        if fault in _STATUS_FAULTS:
            reply = self._fault_reply(fault)
            if fault is Fault.RATE_LIMIT:
                reply = replace(reply, headers=(*reply.headers, ("Retry-After", "1")))
            return reply
        reply = build(fault is Fault.WRONG_TYPES)
        if fault is Fault.SLOW:
            return replace(reply, delay=self.slow_seconds)
        if fault is Fault.MALFORMED_JSON:
            return replace(reply, status=200, body=reply.body[: len(reply.body) // 2])
        return reply

    def _rate_wait_locked(self) -> int | None:
        """Take a place in the rate window, or return the whole seconds until one frees."""
        if self.requests_per_minute is None:
            return None
        now = self._monotonic()
        while self._answered and self._answered[0] <= now - _RATE_WINDOW_SECONDS:
            self._answered.popleft()
        if len(self._answered) >= self.requests_per_minute:
            return max(1, math.ceil(self._answered[0] + _RATE_WINDOW_SECONDS - now))
        self._answered.append(now)
        return None

    @abstractmethod
    def _route(self, request: ReceivedRequest) -> Reply:
        """Return the provider's answer to *request*."""

    @abstractmethod
    def _fault_reply(self, fault: Fault) -> Reply:
        """Return the provider's answer for a status fault (5xx, rate limits, busy, expired)."""


def _hang_up(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the client or the handler
        conn.shutdown(socket.SHUT_RDWR)


def parse_json(raw: bytes) -> Any:
    """Return *raw* parsed as JSON, with every number that has a fraction as a ``Decimal``.

    Raises:
        ValueError: *raw* is not valid UTF-8 JSON.
    """
    return json.loads(raw.decode("utf-8"), parse_float=Decimal)


def render_json(value: object) -> str:
    """Return *value* as compact JSON text, writing a ``Decimal`` as its exact digits.

    ``json.dumps`` can only write a ``Decimal`` through ``float``; this never does:
    ``Decimal("6000000.000000")`` is written as ``6000000.000000``.

    Raises:
        TypeError: *value* holds something other than dict/list/tuple/str/int/bool/None/Decimal.
        ValueError: *value* holds a non-finite ``Decimal``.
    """
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"cannot write {value} as a JSON number")
        return format(value, "f")
    if value is None or isinstance(value, bool | int | str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(key))}:{render_json(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_json(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
