"""Reservations in Redis: shared by every host that pays out from the same balances.

Every operation is one Lua script (``guard/stores/_redis_lua.py``), so Redis runs the check and
the change as one step whatever the number of workers; the scripts mirror the hold state
machine of ``guard/stores/_machine.py``. Amounts are integers in the currency's minor unit
(exact in Lua below 2**53). Every key lives under ``{namespace}:`` (one cluster slot). Needs
the ``redis`` package: ``pip install payout-guard[redis]`` (``payout-guard[hiredis]`` adds the
C reply parser).

One clock per store. With ``clock="server"`` (the default) holds are timed by the Redis
server: the times a caller passes (on its own clock) travel as offsets from the ``now`` it
passes (``expires_at - now``, ``counted_since - now``), and each script adds them to the
server's ``TIME``. So hosts whose clocks disagree still agree on creation, expiry and commit
times, and the holds the store returns carry the server's times. ``clock="caller"`` takes the
times as passed (one host, or a test that moves the clock by hand).

Every operation is one round trip and costs O(1) amortized however many holds
its key has: live holds are a running total kept with an index by expiry, from which expired
holds leave lazily; commits a running total with a sorted set by commit time; purges of what
the retention no longer keeps run only when due, a bounded number per call. Redis TTLs (the
retention plus an hour past a hold's life) only collect what nobody touches any more. The
store loads the scripts once as a Redis Functions library (``FUNCTION LOAD``, Redis 7) and
runs each with one ``FCALL``, blocking or asyncio; without Functions (an older server, or an
ACL that refuses them) with one ``EVALSHA``, the same scripts. At ``maxmemory`` (with
``noeviction``) the functions that end a hold, count and read still run (their Functions
flags); a new hold is refused, and the guard denies. Through ``EVALSHA`` a script that needs
memory to end a hold is refused too.

The store is also a fleet store (``FleetStore``): shared values with fetch leases, and request
budgets (``gcra``), always on the server's clock.

Losing holds is detected, never ignored:

- At first contact the store refuses a server whose ``maxmemory-policy`` may evict keys (unless
  ``allow_eviction=True``) and warns (``payout_guard.store_not_durable``) when the server keeps
  no AOF: neither an AOF nor RDB snapshots, or RDB snapshots only.
- It writes an epoch marker (``{namespace}:epoch``) if there is none and remembers it; every
  script checks it. When the marker is gone or another one (Redis restarted empty, ``FLUSHALL``,
  eviction), every call raises ``StoreUnavailable`` ("lost its holds") until ``rearm()``.
- Every script that changes holds counts up a write counter (``{namespace}:writes``), and each
  store remembers the highest value it was replied. A counter lower than that (Redis restarted
  from an older RDB snapshot, or a failover to a replica behind) is a loss too, until
  ``rearm()``; the first store to notice it in a write replaces the epoch marker, so every
  store denies. A store notices by itself only writes that it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import math
import os
import secrets
import time
import weakref
from collections.abc import Generator
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

import structlog

from guard._seconds import seconds
from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import _machine as machine
from guard.stores import _redis_lua as lua
from guard.stores._common import (
    StoreUnavailable,
    ceiling_to_minor,
    check_time,
    fleet_name,
    fleet_rate,
    fleet_seconds,
    from_minor,
    listing,
    mixed_currencies,
    newest_first,
    provider_of,
    to_minor,
)
from guard.stores._protocol import Hold, HoldOutcome, HoldState, Shared

if TYPE_CHECKING:
    from redis import Redis
    from redis.asyncio import Redis as AsyncRedis
    from redis.commands.core import AsyncScript

__all__ = ["AsyncRedisReservations", "RedisReservations"]

T = TypeVar("T")

_ZERO = Decimal(0)
_LIMIT = 2**53  # Lua numbers are doubles: integers are exact below this
_GC_MARGIN = 3600  # seconds Redis keeps a record past the retention before collecting it
_STATES: dict[str, HoldState] = {
    "pending": "pending", "committed": "committed", "uncertain": "uncertain"
}
_LOST = (
    "the reservation store lost its holds ({}); checks and reserves deny until an operator "
    "calls rearm()"
)
_log = structlog.get_logger("payout_guard")
_SCRIPTS = (
    ("try_hold", lua.TRY_HOLD), ("commit", lua.COMMIT), ("release", lua.RELEASE),
    ("mark_uncertain", lua.MARK_UNCERTAIN), ("resolve", lua.RESOLVE), ("get", lua.GET),
    ("reserved", lua.RESERVED), ("holds", lua.HOLDS), ("repair", lua.REPAIR),
    ("records", lua.RECORDS),
    ("committed", lua.COMMITTED), ("read_shared", lua.READ_SHARED),
    ("write_shared", lua.WRITE_SHARED), ("drop_lease", lua.DROP_LEASE), ("spend", lua.SPEND),
)
_CLOCKS = ("server", "caller")
_PAGE = 1000  # members of an index read per ZRANGE, names per SCAN, when listing holds
_RECORDS = 200  # records read per RECORDS script, when listing holds
_SCRIPT = "script"  # a _Call of one of the _SCRIPTS: args are (name, keys, argv)
_FUNCTION_GONE = "Function not found"  # FCALL's error when the library is not loaded


class _Call(NamedTuple):
    """One Redis call an operation asks for: a client method (or a script) and its arguments.

    Each operation is written once as a generator of these (a *flow*); ``RedisReservations``
    makes the calls with its blocking client, ``AsyncRedisReservations`` awaits them with an
    asyncio client. A Redis error is thrown back into the flow, which translates it.
    """

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}  # noqa: RUF012 - never mutated: a NamedTuple default


Flow = Generator[_Call, Any, T]


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hold(payout_id: str, fields: list[Any]) -> Hold:
    """Return the hold a script replied as ``{k, cur, amt, fee, st, ca, ea, cm, o}``."""
    key, cur, amt, fee, state, created, expires, committed, owner = map(_text, fields)
    return Hold(
        payout_id=payout_id,
        key=key,
        currency=cur,
        amount=from_minor(int(amt), cur),
        fee=from_minor(int(fee), cur),
        state=_STATES[state],
        created_at=float(created),  # money-ok: a time
        expires_at=float(expires),  # money-ok: a time
        committed_at=float(committed) if committed else None,  # money-ok: a time
        owner=owner,
    )


def _line_hold(payout_id: str, owner: str, reply: object) -> Hold:
    """Return the hold a script replied as one string ``"cur amt fee st ca ea cm k"``.

    The key comes last (the one field that may hold spaces); the owner is the caller's own.
    """
    cur, amt, fee, state, created, expires, committed, key = _text(reply).split(" ", 7)
    return Hold(
        payout_id, key, cur, from_minor(int(amt), cur), from_minor(int(fee), cur),
        _STATES[state],
        float(created), float(expires),  # money-ok: times
        float(committed) if committed else None,  # money-ok: a time
        owner,
    )


def _evalsha(client: Any, sha: str, keys: list[str], args: list[Any]) -> Any:
    """Return the awaitable of ``EVALSHA`` through the asyncio *client*.

    Straight through ``execute_command``: redis-py's ``Script`` call costs a reserve as much
    client time again as its arguments do (measured). The blocking store goes further (see
    ``_Lines``).
    """
    return client.execute_command("EVALSHA", sha, len(keys), *keys, *args)


def _fcall(client: Any, function: str, keys: list[str], args: list[Any]) -> Any:
    """Return the awaitable of ``FCALL`` of *function* through the asyncio *client*."""
    return client.execute_command("FCALL", function, len(keys), *keys, *args)


class _Short(Exception):
    """The bytes read so far hold only part of a reply."""


_CRLF = b"\r\n"


def _parse(data: bytes, at: int) -> tuple[Any, int]:
    """Return the RESP2 reply that starts at *at* in *data*, and where it ends.

    As redis-py reads them without decoding: ``$`` and ``+`` as bytes (``$-1``: None), ``:``
    as int, ``*`` as a list (``*-1``: None), ``-`` as ``_Refusal``.

    Raises:
        _Short: *data* ends before the reply does.
        ValueError: *data* is not RESP2.
    """
    end = data.find(_CRLF, at)
    if end < 0:
        raise _Short
    kind, head, at = data[at], data[at + 1:end], end + 2
    if kind == 36:  # $ bulk string
        size = int(head)
        if size < 0:
            return None, at
        if len(data) < at + size + 2:
            raise _Short
        return data[at:at + size], at + size + 2
    if kind == 42:  # * array
        count = int(head)
        if count < 0:
            return None, at
        items = []
        for _ in range(count):
            item, at = _parse(data, at)
            items.append(item)
        return items, at
    if kind == 58:  # : integer
        return int(head), at
    if kind == 43:  # + status
        return head, at
    if kind == 45:  # - error
        return _Refusal(head.decode("utf-8", errors="replace")), at
    raise ValueError(f"not a RESP2 reply: {data[at - 2 - len(head) - 1:at][:40]!r}")


class _Refusal(NamedTuple):
    """An error reply, as text (turned into redis-py's exception for it when raised)."""

    text: str


def _bulk(arg: object) -> bytes:
    """Return a script argument that is not ``str`` as the bytes sent for it."""
    if type(arg) is int:
        return b"%d" % arg
    if type(arg) is bytes:
        return arg
    # What the scripts are given is text or whole numbers, nothing else.
    raise TypeError(f"a script argument must be str, int or bytes, got {type(arg).__name__}")


class _Lines:
    """The connections a blocking store sends its scripts on: borrowed from its client's pool.

    ``execute_command`` costs a script call about as much client time as the round trip
    itself (measured: the pool's checks of a connection at every borrow, the retry wrapper,
    redis-py's metrics and per-command dispatch). So a store borrows a connection from its
    client's pool once and keeps it between calls: each call takes an idle one (or borrows
    another), sends the packed ``FCALL`` or ``EVALSHA`` and reads the reply on it, then puts it
    back.
    ``list.pop`` and ``append`` are atomic, so a connection serves one thread at a time. The
    connection's own retry policy applies, as in ``execute_command`` (one retry on a dropped
    link for a client built from a URL); a connection that failed disconnected itself and
    reconnects at its next use. Connections inherited through ``fork`` are never used (nor
    closed) in the child. ``close`` gives the idle ones back to the pool.
    """

    def __init__(self, pool: Any, module: Any) -> None:
        self._pool = pool
        self._replied = module.ResponseError  # a whole reply that says no
        self._redis = module
        self._idle: list[Any] = []
        self._heads: dict[tuple[str, str, int, int], bytes] = {}
        self._pid = os.getpid()
        settings = pool.connection_kwargs
        self._encoding = settings.get("encoding", "utf-8")
        self._encoding_errors = settings.get("encoding_errors", "strict")
        # redis-py before 5.3 requires a command name here; later versions deprecate it.
        wanted = inspect.signature(pool.get_connection).parameters.get("command_name")
        self._named = wanted is not None and wanted.default is inspect.Parameter.empty

    def run(self, command: str, target: str, keys: list[str], args: list[Any]) -> Any:
        """Return the reply of ``FCALL`` or ``EVALSHA`` (*command*) on an idle connection.

        *target* is the function or the script's digest; error replies raise.
        """
        if self._pid != os.getpid():  # forked: the parent's sockets are not this process's
            self._pid, self._idle = os.getpid(), []
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._pool.get_connection(command) if self._named else (
                self._pool.get_connection())
        shape = (command, target, len(keys), len(args))
        head = self._heads.get(shape)
        if head is None:  # the same few for every call of a script: packed once
            head = self._heads[shape] = b"*%d\r\n%b" % (
                3 + len(keys) + len(args), self._items([command, target, len(keys)]))
        packed = head + self._items([*keys, *args])

        def send() -> Any:
            conn.send_packed_command((packed,))
            return self._read(conn)

        try:
            return conn.retry.call_with_retry(send, lambda _error: conn.disconnect())
        except self._replied:  # an error reply, read whole: the connection is in step
            raise
        except BaseException:
            # Anything else may leave a reply unread on the socket, which the next call would
            # take for its own (the pool checks for that at a borrow; kept connections are
            # not borrowed again): the connection is dropped and reconnects at its next use.
            conn.disconnect()
            raise
        finally:
            self._idle.append(conn)

    def _read(self, conn: Any) -> Any:
        """Return the reply to the command just sent on *conn*, as ``read_response`` would.

        Read here from the connection's socket: redis-py's reader (the pure-Python one) costs a
        script call about 26,000 instructions, this about 4,000 (measured). Only for RESP2
        connections with a socket redis-py keeps as ``_sock``; any other goes through
        ``read_response``. As there: a reply is read whole; an error reply raises the
        exception redis-py makes of it; a timeout raises ``TimeoutError`` and a broken link
        ``ConnectionError`` (the caller drops the connection).
        """
        sock = getattr(conn, "_sock", None)
        if sock is None or getattr(conn, "protocol", 2) not in (2, "2"):
            return conn.read_response()
        errors = self._redis
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:  # the socket's timeout (socket.timeout)
                raise errors.TimeoutError("Timeout reading from the Redis server") from None
            except OSError as exc:
                raise errors.ConnectionError(
                    f"Error while reading from the Redis server: {exc.args}"
                ) from None
            if not chunk:
                raise errors.ConnectionError("Connection closed by server.")
            data += chunk
            try:
                reply, end = _parse(data, 0)
            except _Short:
                continue
            except ValueError as exc:
                raise errors.InvalidResponse(str(exc)) from None
            break
        if end != len(data):  # more than one reply: the link is out of step
            raise errors.ConnectionError("Redis sent more than the reply to one command")
        if conn.health_check_interval:  # as read_response: the link is known alive now
            conn.next_health_check = time.monotonic() + conn.health_check_interval
        if isinstance(reply, _Refusal):
            raise errors.connection.BaseParser.parse_error(reply.text)
        return reply

    def _items(self, args: list[Any]) -> bytes:
        """Return *args* (``str``, ``int``, ``bytes``) as RESP bulk strings, as redis-py would.

        Written here: redis-py's packer costs about 15 us a script call, this about 4 (and the
        command, its function or digest and the number of keys are packed once: ``run``).
        """
        encoding, errors = self._encoding, self._encoding_errors
        data = [
            arg.encode(encoding, errors) if type(arg) is str else _bulk(arg) for arg in args
        ]
        return b"".join([b"$%d\r\n%b\r\n" % (len(item), item) for item in data])

    def close(self) -> None:
        """Give the idle connections back to the pool (in the process that borrowed them)."""
        idle, self._idle = self._idle, []
        if self._pid == os.getpid():
            for conn in idle:
                self._pool.release(conn)


def _seconds(value: float) -> str:
    """Return *value* as the shortest text that reads back as the same double."""
    return repr(float(value))  # money-ok: a time


def _life(now: float, until: float, gc: int) -> int:
    """Return the Redis ttl of something that counts until *until*: that, plus *gc*."""
    return math.ceil(max(until - now, 0.0)) + gc


def _milliseconds(value: float, name: str) -> int:
    """Return the positive, finite duration *value* (seconds) in whole milliseconds (>= 1)."""
    return max(1, math.ceil(fleet_seconds(name, value) * 1000))


def _one_retry(module: Any) -> Any:
    """Return the retry policy of the clients built here: one retry, at once, on a lost link.

    A pooled connection the server dropped (a restart, an idle timeout) fails at once, and one
    retry on a new connection is what it needs. Timeouts are never retried, whatever the
    redis-py version's default (3 retries with backoff since 6.0): a store call is bounded by
    its ``timeout`` (invariant 4). *module* is ``redis`` or ``redis.asyncio``.
    """
    from redis.backoff import NoBackoff  # noqa: PLC0415 - optional dependency

    return module.retry.Retry(NoBackoff(), 1, supported_errors=(module.ConnectionError,))


def _bounded(module: Any, client: Redis, timeout: float) -> Redis:
    """Return a client of the store's own on *client*'s server, every call bounded by *timeout*.

    The same connection class and settings (address, credentials, TLS, database, decoding,
    protocol), with the socket and connect timeouts at most *timeout* and ``_one_retry``: a
    client built with redis-py's defaults has no socket timeout before redis-py 8 (a server
    that stops answering blocks a call forever), and since then 5 s with ten retries. Its pool
    is the store's (closed by ``close``); *client* and its pool are left as they are.
    """
    pool = client.connection_pool
    settings = dict(pool.connection_kwargs)
    for name in ("socket_timeout", "socket_connect_timeout"):
        found = settings.get(name)
        settings[name] = timeout if found is None else min(float(found), timeout)
    # A caller's wish to retry timeouts would be added to the store's policy: left out.
    settings.pop("retry_on_timeout", None)
    settings.pop("retry_on_error", None)
    settings["retry"] = _one_retry(module)
    own = module.ConnectionPool(connection_class=pool.connection_class, **settings)
    return cast("Redis", module.Redis(connection_pool=own))


class RedisReservations:
    """A reservation store in Redis, safe across threads, processes and hosts.

    The first contact with the server (at construction, or at first use when Redis cannot be
    reached then) checks its eviction policy and persistence and takes the store's epoch
    marker (see the module docstring).

    Args:
        url_or_client: A Redis URL (``redis://host:6379/0``, ``rediss://``, ``unix://``) or a
            ``redis.Redis`` client. For a client, the store opens connections of its own with
            the client's settings (its connection class, address, credentials, TLS, database)
            but the store's *timeout* and retry policy; the client itself belongs to the
            caller and is left as it is. The store keeps the connections its scripts ran on
            (as many as threads called it at once) until ``close``, which closes them.
        namespace: Prefix of every key, so several guards can share one Redis.
        retention: Seconds a finished hold is remembered for idempotency (default one day; at
            most 30 days).
        timeout: Socket and connect timeout in seconds of every call (default 5; a client
            passed in with a shorter one keeps it); a call retries once, at once, a connection
            the server dropped, and never a timeout.
        allow_eviction: Accept a server whose ``maxmemory-policy`` is not ``noeviction``
            (evicted holds are then noticed only through the epoch marker, if at all).
        clock: ``"server"`` (default): holds are timed by the Redis server's clock, so hosts
            whose clocks differ agree (see the module docstring); ``"caller"``: by the times
            passed in (one host, or tests that move the clock by hand).

    Raises:
        ConfigurationError: the ``redis`` package is missing, the URL or client is not one,
            the namespace is empty or contains ``{``/``}``, a number is out of range, *clock*
            is not ``"server"`` or ``"caller"``, or the server may evict keys
            (``maxmemory-policy`` other than ``noeviction``) and *allow_eviction* is not set.
    """

    def __init__(
        self,
        url_or_client: str | Redis,
        *,
        namespace: str = "payout_guard",
        retention: float = 86_400.0,
        timeout: float = 5.0,
        allow_eviction: bool = False,
        clock: str = "server",
    ) -> None:
        try:
            import redis  # noqa: PLC0415 - optional dependency, imported only when used
        except ImportError:
            raise ConfigurationError(
                "RedisReservations needs the redis package: pip install payout-guard[redis]"
            ) from None
        if not isinstance(namespace, str) or not namespace or {"{", "}"} & set(namespace):
            raise ConfigurationError(
                f"must be a non-empty string without braces, got {namespace!r}", path="namespace"
            )
        if clock not in _CLOCKS:
            raise ConfigurationError(
                f"must be 'server' (holds timed by the Redis server) or 'caller' (by the times "
                f"passed in), got {str(clock)[:40]!r}",
                path="clock",
            )
        self._server_clock = clock == "server"
        self._retention = seconds(retention, "retention", positive=True)
        socket_timeout = seconds(timeout, "timeout", positive=True)
        if isinstance(url_or_client, str):
            try:
                # RESP2 (unless the URL asks otherwise): the store reads its scripts' replies
                # itself on RESP2 connections, at a seventh of redis-py's cost (_Lines._read).
                client = redis.Redis.from_url(
                    url_or_client, socket_timeout=socket_timeout,
                    socket_connect_timeout=socket_timeout, retry=_one_retry(redis), protocol=2,
                )
            except ValueError:
                # The URL is not repeated: it may carry a password.
                raise ConfigurationError(
                    "is not a Redis URL; expected redis://, rediss:// or unix://",
                    path="url_or_client",
                ) from None
        elif isinstance(url_or_client, redis.Redis):
            client = _bounded(redis, url_or_client, socket_timeout)
        else:
            raise ConfigurationError(
                f"must be a Redis URL or a redis.Redis client, not "
                f"{type(url_or_client).__name__}",
                path="url_or_client",
            )
        self._client: Redis | None = client
        self._lines = _Lines(client.connection_pool, redis)
        # Kept to open asyncio clients on the same server (asyncio()); never shown anywhere.
        self._url = url_or_client if isinstance(url_or_client, str) else None
        self._timeout = socket_timeout
        self._errors = redis.RedisError
        self._response_error = redis.ResponseError
        self._no_script = redis.exceptions.NoScriptError
        self._prefix = f"{{{namespace}}}:"
        self._namespace = namespace
        self._allow_eviction = bool(allow_eviction)
        self._gc = math.ceil(self._retention) + _GC_MARGIN
        self._retention_text = _seconds(self._retention)
        self._epoch: str | None = None
        self._seen = 0  # the highest write counter a script replied (see _redis_lua)
        self._warned = False
        self._scripts = {name: client.register_script(text) for name, text in _SCRIPTS}
        # The scripts as Redis Functions (name -> function), once loaded at first contact;
        # None: run them with EVALSHA (a server without Functions, or none loaded yet).
        self._functions: dict[str, str] | None = None
        # Redis cannot be reached now: the first use tries again.
        with contextlib.suppress(StoreUnavailable):
            self._drive(self._contacted())

    def __repr__(self) -> str:
        return f"RedisReservations(namespace={self._namespace!r})"

    def __enter__(self) -> RedisReservations:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (see ``ReservationStore``).

        Raises:
            ValueError: a time is not finite or the hold would live more than 30 days.
            InvalidPayoutRequest: an amount is negative or not exact at its currency's
                exponent; the hold or the key's counted total reaches 2**53 minor units (the
                largest exact integer in Lua); or *hold* is in another currency than the holds
                already on its key.
            StoreUnavailable: Redis could not be reached, refused the script, or lost its
                holds.
        """
        return self._drive(self._try_hold(hold, ceiling, counted_since, now))

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (see ``ReservationStore.commit``).

        A commit time earlier than the key's last one (a clock stepping back) is recorded as
        that last time: the hold then counts a little longer, which is the safe side.

        Raises:
            ValueError: *now* is not finite.
            StoreUnavailable: Redis could not be reached, refused the script, or lost its
                holds.
        """
        return self._drive(self._commit(payout_id, owner, now))

    def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (see ``ReservationStore.release``).

        Raises:
            StoreUnavailable: Redis could not be reached, refused the script, or lost its
                holds.
        """
        return self._drive(self._release(payout_id, owner))

    def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (see ``ReservationStore.mark_uncertain``).

        Raises:
            ValueError: a time is not finite, or *until* is more than 30 days after *now*.
            StoreUnavailable: Redis could not be reached, refused the script, or lost its
                holds.
        """
        return self._drive(self._mark_uncertain(payout_id, owner, now, until))

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (see ``ReservationStore.resolve``).

        Raises:
            ValueError: *now* is not finite.
            StoreUnavailable: Redis could not be reached, refused the script, or lost its
                holds.
        """
        return self._drive(self._resolve(payout_id, sent, now))

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any.

        Raises:
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._get(payout_id))

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Raises:
            ValueError: a time is not finite.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._reserved(key, counted_since, now))

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first.

        With *limit*, at most that many: the live ones first, then the earliest commits.

        Raises:
            ValueError: a time is not finite.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._holds(key, counted_since, now, limit))

    def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
        now: float,
    ) -> list[Hold]:
        """Return the holds recorded across every key, newest first (``ReservationStore``).

        Never blocks Redis for long: the keys' ledgers are found with ``SCAN``, each key's
        indexes read a page at a time (``ZRANGE``), and the holds a few hundred per script
        (which leaves out pending holds past their ttl, on the store's clock). So it is not
        one atomic snapshot; with *provider*, only that provider's keys are read.

        Raises:
            InvalidPayoutRequest: a filter or *limit* is not one.
            ValueError: *now* is not finite.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._list_holds(provider, currency, state, limit, now))

    def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return the sum of ``held`` over the holds on *key* committed after *since*.

        One sorted-set seek however many commits the key keeps (``CommittedTotals``). On the
        server's clock, *since* is taken as an offset from *now*.

        Raises:
            ValueError: a time is not finite.
            InvalidPayoutRequest: the sum reaches 2**53 minor units.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._committed(key, since, now))

    def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value shared under *name* and whether *owner* leads its fetch.

        See ``FleetStore.read_shared``; ages and leases are on the server's clock.

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200
                characters, or a duration is not positive, finite and at most 30 days.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._read_shared(name, owner, lease_ttl, fresh_for))

    def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Share *payload* under *name* for *keep* seconds and drop *owner*'s lease.

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200
                characters, *payload* is not a string, or *keep* is not positive, finite and
                at most 30 days.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        self._drive(self._write_shared(name, payload, keep, owner))

    def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name* (a failed fetch: the next reader leads).

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200 characters.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        self._drive(self._drop_lease(name, owner))

    def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name*; return 0.0, or the seconds to wait.

        ``gcra`` run atomically in Redis on the server's clock, so every host spends from
        the same budget.

        Raises:
            ValueError: *name* is not a non-empty string of at most 200 characters, or
                *per_minute* is not an ``int`` from 1 to 10**9.
            StoreUnavailable: Redis could not be reached, or lost its holds.
        """
        return self._drive(self._spend(name, per_minute))

    def asyncio(self) -> AsyncRedisReservations:
        """Return this store on ``redis.asyncio``: the same holds, scripts and epoch.

        ``AsyncPayoutGuard`` uses it, so its holds never wait for a thread. It talks to the
        server this store was built for (the URL, or the client's connection settings).
        """
        return AsyncRedisReservations(self)

    # -- each operation, written once as a flow of Redis calls (see _Call) -----------------

    def _at(self, value: float, now: float) -> str:
        """Return the time *value* as a script takes it (offset from *now*, or as passed)."""
        return _seconds(value - now if self._server_clock else value)

    def _now(self, now: float) -> str:
        """Return *now* as a script takes it: ``"T"`` (the server's ``TIME``) or as passed."""
        return "T" if self._server_clock else _seconds(now)

    def _try_hold(
        self, hold: Hold, ceiling: Decimal, counted_since: float, now: float
    ) -> Flow[HoldOutcome]:
        machine.check_hold(hold, now)
        check_time("counted_since", counted_since)
        cur = hold.currency
        amount = to_minor(hold.amount, cur, limit=_LIMIT, store="redis")
        fee = to_minor(hold.fee, cur, limit=_LIMIT, store="redis")
        held = amount + fee  # exact: both are whole minor units of one currency
        if held >= _LIMIT:  # refused with the message of an amount that large
            to_minor(hold.held, cur, limit=_LIMIT, store="redis")
        limit = min(max(ceiling_to_minor(ceiling, cur), -1), _LIMIT)
        numbers = " ".join((
            str(amount), str(fee), str(held), self._at(hold.created_at, now),
            self._at(hold.expires_at, now), str(limit), self._at(counted_since, now),
            self._now(now), self._retention_text,
            str(_life(now, hold.expires_at, self._gc)),
        ))
        reply = yield from self._script(
            "try_hold", self._record(hold.payout_id),
            [hold.payout_id, hold.key, cur, hold.owner, numbers], hold,
        )
        if isinstance(reply, (bytes, str)):  # no hold lapsed or replaced: one string
            return self._line_outcome(hold, _text(reply).split(" "))
        status = _text(reply[0])
        counted = from_minor(int(reply[1]), cur)
        lapsed = tuple(_hold(_text(row[0]), row[1:]) for row in reply[3])
        if status == "held":
            if self._server_clock:  # as stored: on the server's clock
                hold = Hold(hold.payout_id, hold.key, cur, hold.amount, hold.fee, "pending",
                            float(_text(reply[2][0])), float(_text(reply[2][1])),  # money-ok: times
                            None, hold.owner)
            old = reply[4] if len(reply) > 4 else None
            return HoldOutcome(status="held", hold=hold, counted=counted, lapsed=lapsed,
                               replaced=_hold(hold.payout_id, old) if old else None)
        if status == "over_ceiling":
            return HoldOutcome(status="over_ceiling", hold=None, counted=counted, lapsed=lapsed)
        existing = _hold(hold.payout_id, reply[2])
        return HoldOutcome(status="duplicate", hold=existing, counted=counted, lapsed=lapsed)

    def _line_outcome(self, hold: Hold, fields: list[str]) -> HoldOutcome:
        """Return what ``"held <counted> <ca> <ea>"`` or ``"over_ceiling <counted>"`` says."""
        counted = from_minor(int(fields[1]), hold.currency)
        if fields[0] == "over_ceiling":
            return HoldOutcome(status="over_ceiling", hold=None, counted=counted)
        if self._server_clock:  # as stored: on the server's clock
            hold = Hold(hold.payout_id, hold.key, hold.currency, hold.amount, hold.fee,
                        "pending", float(fields[2]), float(fields[3]),  # money-ok: times
                        None, hold.owner)
        return HoldOutcome(status="held", hold=hold, counted=counted)

    def _commit(self, payout_id: str, owner: str, now: float) -> Flow[Hold | None]:
        check_time("now", now)
        reply = yield from self._script(
            "commit", self._record(payout_id), [payout_id, owner, self._now(now), self._gc]
        )
        return None if reply is None else _line_hold(payout_id, owner, reply)

    def _release(self, payout_id: str, owner: str) -> Flow[bool]:
        reply = yield from self._script("release", self._record(payout_id), [payout_id, owner])
        return bool(reply)

    def _mark_uncertain(
        self, payout_id: str, owner: str, now: float, until: float
    ) -> Flow[Hold | None]:
        machine.check_life(now, until)
        reply = yield from self._script(
            "mark_uncertain", self._record(payout_id),
            [payout_id, owner, self._now(now), self._at(until, now),
             _life(now, until, self._gc)],
        )
        return None if reply is None else _hold(payout_id, reply)

    def _resolve(self, payout_id: str, sent: bool, now: float) -> Flow[Hold | None]:
        check_time("now", now)
        reply = yield from self._script(
            "resolve", self._record(payout_id),
            [payout_id, "1" if sent else "0", self._now(now), self._gc],
        )
        return None if reply is None else _hold(payout_id, reply)

    def _get(self, payout_id: str) -> Flow[Hold | None]:
        reply = yield from self._script("get", self._record(payout_id), [])
        return None if reply is None else _hold(payout_id, reply)

    def _reserved(self, key: str, counted_since: float, now: float) -> Flow[Decimal]:
        check_time("counted_since", counted_since)
        check_time("now", now)
        reply = yield from self._script(
            "reserved", f"{self._prefix}t:{key}",
            [key, self._at(counted_since, now), self._now(now)],
        )
        return from_minor(int(reply[1]), _text(reply[0])) if reply else _ZERO

    def _committed(self, key: str, since: float, now: float) -> Flow[Decimal]:
        check_time("since", since)
        check_time("now", now)
        reply = yield from self._script(
            "committed", f"{self._prefix}t:{key}", [key, self._at(since, now), self._now(now)],
        )
        return from_minor(int(reply[1]), _text(reply[0])) if reply else _ZERO

    def _holds(
        self, key: str, counted_since: float, now: float, limit: int | None
    ) -> Flow[list[Hold]]:
        check_time("counted_since", counted_since)
        check_time("now", now)
        reply = yield from self._script(
            "holds", f"{self._prefix}t:{key}",
            [key, self._at(counted_since, now), self._now(now),
             -1 if limit is None else limit],
        )
        found = [_hold(row[0], row[1:]) for row in json.loads(reply)]
        return sorted(found, key=lambda h: (h.created_at, h.payout_id))

    def _list_holds(
        self, provider: object, currency: object, state: object, limit: object, now: float
    ) -> Flow[list[Hold]]:
        wanted = listing(provider, currency, state, limit)
        check_time("now", now)
        try:
            epoch = yield from self._contacted()
        except ConfigurationError as exc:
            raise StoreUnavailable(str(exc), store="redis") from None
        prefix = self._prefix
        kinds = [kind for kind, states in (("x:", ("pending", "uncertain")), ("c:", ("committed",)))
                 if wanted.state is None or wanted.state in states]
        pattern = "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in prefix)
        ids: set[str] = set()
        try:
            found = yield _Call("get", (f"{prefix}epoch",))
            if found is None or _text(found) != epoch:
                raise StoreUnavailable(_LOST.format("the epoch marker is missing or changed"),
                                       store="redis")
            keys: set[str] = set()
            cursor: Any = 0
            while True:
                cursor, names = yield _Call("scan", (cursor,),
                                            {"match": f"{pattern}t:*", "count": _PAGE})
                keys.update(_text(name)[len(prefix) + 2:] for name in names)
                if int(cursor) == 0:
                    break
            for key in sorted(keys):
                if wanted.provider is not None and provider_of(key) != wanted.provider:
                    continue
                for kind in kinds:
                    start = 0
                    while True:
                        members = yield _Call("zrange", (f"{prefix}{kind}{key}", start,
                                                         start + _PAGE - 1))
                        # x: "<held> <id>", c: "<running> <held> <id>"
                        ids.update(_text(m).split(" ", 2 if kind == "c:" else 1)[-1]
                                   for m in members)
                        if len(members) < _PAGE:
                            break
                        start += _PAGE
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        holds: list[Hold] = []
        ordered = sorted(ids)
        for at in range(0, len(ordered), _RECORDS):
            names = [self._record(i) for i in ordered[at:at + _RECORDS]]
            reply = yield from self._script("records", names[0], [self._now(now)],
                                            more=tuple(names[1:]))
            holds.extend(_hold(row[0], row[1:]) for row in json.loads(reply))
        # Expiry was judged by the script, on the store's clock.
        return newest_first((h for h in holds if wanted.wants(h, -math.inf)), wanted.limit)

    def _read_shared(
        self, name: str, owner: str, lease_ttl: float, fresh_for: float
    ) -> Flow[tuple[Shared | None, bool]]:
        fleet_name("name", name)
        fleet_name("owner", owner)
        lease_ms = _milliseconds(lease_ttl, "lease_ttl")
        fresh = fleet_seconds("fresh_for", fresh_for)
        reply = yield from self._script(
            "read_shared", f"{self._prefix}s:{name}",
            [owner, lease_ms, _seconds(fresh)], more=(f"{self._prefix}l:{name}",),
        )
        found, payload, age, leads = reply
        if not int(found):
            return None, bool(int(leads))
        return Shared(_text(payload), float(_text(age))), bool(int(leads))  # money-ok: an age

    def _write_shared(self, name: str, payload: str, keep: float, owner: str) -> Flow[None]:
        fleet_name("name", name)
        fleet_name("owner", owner)
        if not isinstance(payload, str):
            raise ValueError(f"a shared payload must be a str, got {type(payload).__name__}")
        keep_ms = _milliseconds(keep, "keep")
        yield from self._script(
            "write_shared", f"{self._prefix}s:{name}", [owner, payload, keep_ms],
            more=(f"{self._prefix}l:{name}",),
        )

    def _drop_lease(self, name: str, owner: str) -> Flow[None]:
        fleet_name("name", name)
        fleet_name("owner", owner)
        yield from self._script("drop_lease", f"{self._prefix}l:{name}", [owner])

    def _spend(self, name: str, per_minute: int) -> Flow[float]:
        fleet_name("name", name)
        fleet_rate(per_minute)
        reply = yield from self._script("spend", f"{self._prefix}g:{name}", [per_minute])
        return float(_text(reply))  # money-ok: seconds to wait

    def rearm(self) -> None:
        """Accept what Redis holds now, after the store lost its holds (an operator's decision).

        Checks the server again (eviction policy, persistence), then adopts the epoch marker
        Redis has (another store's ``rearm`` or first contact may have written it) or writes a
        new one. Keys whose ledger was lost while some of their holds stayed (evicted or
        deleted keys) get it rebuilt from the holds kept, or are forgotten when no hold
        left says which currency they held; live holds kept as an older version did are moved
        to this version's layout (until then, their keys deny). Costs a ``SCAN`` of the
        namespace.

        Raises:
            ConfigurationError: the server may now evict keys and *allow_eviction* is not set.
            StoreUnavailable: Redis could not be reached.
        """
        self._epoch, self._seen = None, 0
        self._drive(self._contacted())
        client = self._live()
        pattern = "".join(f"\\{ch}" if ch in "*?[]\\" else ch for ch in self._prefix)
        keys: set[str] = set()
        try:
            for kind in ("c", "x", "p"):  # p: live holds of an older version
                for name in client.scan_iter(match=f"{pattern}{kind}:*", count=1000):
                    keys.add(_text(name)[len(self._prefix) + 2:])
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        for key in sorted(keys):
            self._drive(self._script("repair", f"{self._prefix}t:{key}", [key, self._gc]))

    def close(self) -> None:
        """Close the client if this store built it; the holds stay in Redis."""
        self._lines.close()
        if self._client is not None:  # the store's own, whether from a URL or a client
            self._client.close()
            self._client.connection_pool.disconnect()
        self._client = None

    def _record(self, payout_id: str) -> str:
        return f"{self._prefix}r:{payout_id}"

    def _live(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable("the store was closed", store="redis")
        return self._client

    def _async_client(self) -> AsyncRedis:
        """Return a new asyncio client on this store's server."""
        from redis import asyncio as aioredis  # noqa: PLC0415 - optional dependency

        if self._url is not None:
            return aioredis.Redis.from_url(
                self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout,
                retry=_one_retry(aioredis),
            )
        settings = dict(self._live().connection_pool.connection_kwargs)
        if "path" in settings:  # a unix socket
            settings["unix_socket_path"] = settings.pop("path")
        settings["retry"] = _one_retry(aioredis)  # bounded as the blocking calls are
        accepted = inspect.signature(aioredis.Redis).parameters
        return aioredis.Redis(**{k: v for k, v in settings.items() if k in accepted})

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        # redis-py messages name host and port, never the URL's password.
        return StoreUnavailable(f"{type(exc).__name__}: {exc}", store="redis")

    def _drive(self, flow: Flow[T]) -> T:
        """Run *flow*, making each call it asks for with the blocking client."""
        client = self._live()
        try:
            call = next(flow)
            while True:
                try:
                    if call.method == _SCRIPT:
                        reply = self._run_script(client, *call.args)
                    else:
                        reply = getattr(client, call.method)(*call.args, **call.kwargs)
                except self._errors as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(reply)
        except StopIteration as stop:
            return cast("T", stop.value)

    def _run_script(self, client: Redis, name: str, keys: list[str], args: list[Any]) -> Any:
        """Return the reply of script *name*, by ``FCALL`` or else ``EVALSHA``.

        ``FCALL`` when the store loaded the scripts as functions; either is loaded again when
        the server lost it (a restart, a flush).
        """
        functions = self._functions
        if functions is not None:
            try:
                return self._lines.run("FCALL", functions[name], keys, args)
            except self._response_error as exc:
                if str(exc) != _FUNCTION_GONE:
                    raise
            try:
                client.function_load(lua.LIBRARY, replace=True)
            except self._response_error:  # a server without Functions now (a failover)
                self._functions = None
            else:
                return self._lines.run("FCALL", functions[name], keys, args)
        script = self._scripts[name]
        try:
            return self._lines.run("EVALSHA", script.sha, keys, args)
        except self._no_script:  # the server lost its scripts: load, retry
            script.sha = client.script_load(script.script)
            return self._lines.run("EVALSHA", script.sha, keys, args)

    def _script(
        self, name: str, key: str, args: list[Any], hold: Hold | None = None,
        more: tuple[str, ...] = (),
    ) -> Flow[Any]:
        """Run script *name* on *key* (and *more* keys) with the prefix and marks before *args*."""
        epoch = self._epoch
        if epoch is None:
            try:
                epoch = yield from self._contacted()
            except ConfigurationError as exc:
                # Found only now (Redis was unreachable at construction): a use must deny.
                raise StoreUnavailable(str(exc), store="redis") from None
        mark = f"{epoch} {self._seen}"
        try:
            found = yield _Call(_SCRIPT, (name, [key, *more], [self._prefix, mark, *args]))
        except self._errors as exc:
            text = str(exc)
            if "PAYOUT_GUARD_LOST" in text:
                detail = text.split("PAYOUT_GUARD_LOST", 1)[1].strip()
                raise StoreUnavailable(_LOST.format(detail), store="redis") from None
            if hold is not None and "PAYOUT_GUARD_CURRENCY" in text:
                raise mixed_currencies(hold, text.rsplit(maxsplit=1)[-1]) from None
            if "PAYOUT_GUARD_TOO_LARGE" in text:
                raise InvalidPayoutRequest(
                    f"the holds on this balance would reach 2**53 minor units, more than the "
                    f"redis reservation store counts exactly; use SqliteReservations for "
                    f"balances this large ({text})"
                ) from None
            raise self._unavailable(exc) from exc
        # {write counter, reply}: remembered, so that a counter gone back is noticed. Threads
        # racing here may keep a lower value than the highest seen: a later notice, never a
        # false one.
        self._seen = max(self._seen, found[0])
        return found[1] if len(found) > 1 else None

    def _contacted(self) -> Flow[str]:
        """Return the remembered epoch, making the first contact with Redis if not yet done.

        Two first contacts at once (threads, tasks) agree: the marker is set only if missing.

        Raises:
            ConfigurationError: the server may evict keys and *allow_eviction* is not set.
            StoreUnavailable: Redis could not be reached.
        """
        if self._epoch is not None:
            return self._epoch
        try:
            yield from self._check_server()
            marker = f"{self._prefix}epoch"
            yield _Call("set", (marker, secrets.token_hex(16)), {"nx": True})
            epoch = yield _Call("get", (marker,))
            if epoch is not None:
                yield from self._load_functions()
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        if epoch is None:  # deleted between the two calls: try again at the next call
            raise StoreUnavailable(_LOST.format("the epoch marker vanished"), store="redis")
        self._epoch = _text(epoch)
        return self._epoch

    def _load_functions(self) -> Flow[None]:
        """Load the scripts as one Redis Functions library (``lua.LIBRARY``), for ``FCALL``.

        A server without Functions (before Redis 7), or whose ACL refuses ``FUNCTION LOAD``,
        leaves the store on ``EVALSHA``: the same steps, each call defining its helpers again.
        """
        try:
            yield _Call("function_load", (lua.LIBRARY,), {"replace": True})
        except self._response_error:
            self._functions = None
        else:
            self._functions = lua.FUNCTIONS

    def _check_server(self) -> Flow[None]:
        """Refuse a server that may evict keys; warn once when it keeps no AOF."""
        policy = yield from self._config("maxmemory-policy")
        if policy is None:
            policy = yield from self._info("memory", "maxmemory_policy")
        if policy != "noeviction" and not self._allow_eviction:
            found = "cannot be read" if policy is None else f"is {policy[:40]!r}"
            raise ConfigurationError(
                f"the Redis server's maxmemory-policy {found}, so it may evict holds under "
                f"memory pressure; set maxmemory-policy noeviction on the server (or pass "
                f"allow_eviction=True)",
                path="maxmemory-policy",
            )
        if self._warned:
            return
        aof = yield from self._info("persistence", "aof_enabled")
        save = yield from self._config("save")
        # Without CONFIG (managed Redis) the snapshot setting is unknown: no warning then.
        if save is None or aof != "0":
            return
        self._warned = True
        if not save.strip():
            detail = ("Redis keeps neither an AOF nor RDB snapshots: a restart loses every "
                      "hold (the store then denies until rearm())")
        else:
            detail = ("Redis keeps only RDB snapshots: a restart loses the holds written since "
                      "the last one (the store then denies until rearm()); use appendonly yes "
                      "with appendfsync always so that no hold is lost")
        _log.warning("payout_guard.store_not_durable", store="redis",
                     namespace=self._namespace, detail=detail)

    def _info(self, section: str, name: str) -> Flow[str | None]:
        """Return one INFO field as text, or None when it or INFO is unavailable."""
        try:
            found = yield _Call("info", (section,))
        except self._response_error:
            return None
        value = found.get(name)
        return None if value is None else _text(value)

    def _config(self, name: str) -> Flow[str | None]:
        """Return a CONFIG GET value, or None when CONFIG is disabled (as on managed Redis)."""
        try:
            found = yield _Call("config_get", (name,))
        except self._response_error:
            return None
        for key, value in found.items():
            if _text(key) == name:
                return _text(value)
        return None


class AsyncRedisReservations:
    """A ``RedisReservations`` store driven through ``redis.asyncio``: no thread per call.

    Built by ``RedisReservations.asyncio()``; it shares the store's scripts, epoch marker and
    settings, and runs each operation's flow of Redis calls with an asyncio client (one per
    event loop, made on first use in that loop).
    """

    def __init__(self, store: RedisReservations) -> None:
        self._store = store
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncRedis, dict[str, AsyncScript]]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"AsyncRedisReservations({self._store!r})"

    async def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (``RedisReservations.try_hold``)."""
        return await self._drive(self._store._try_hold(hold, ceiling, counted_since, now))

    async def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (``RedisReservations.commit``)."""
        return await self._drive(self._store._commit(payout_id, owner, now))

    async def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (``RedisReservations.release``)."""
        return await self._drive(self._store._release(payout_id, owner))

    async def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (``RedisReservations.mark_uncertain``)."""
        return await self._drive(self._store._mark_uncertain(payout_id, owner, now, until))

    async def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (``RedisReservations.resolve``)."""
        return await self._drive(self._store._resolve(payout_id, sent, now))

    async def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        return await self._drive(self._store._get(payout_id))

    async def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count."""
        return await self._drive(self._store._reserved(key, counted_since, now))

    async def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (``RedisReservations.holds``)."""
        return await self._drive(self._store._holds(key, counted_since, now, limit))

    async def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
        now: float,
    ) -> list[Hold]:
        """Return the holds recorded across every key, newest first (``list_holds``)."""
        return await self._drive(self._store._list_holds(provider, currency, state, limit, now))

    async def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return what the holds on *key* committed after *since* hold (``committed``)."""
        return await self._drive(self._store._committed(key, since, now))

    async def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value shared under *name* and whether *owner* leads (``read_shared``)."""
        return await self._drive(self._store._read_shared(name, owner, lease_ttl, fresh_for))

    async def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Share *payload* under *name*; drop *owner*'s lease (``write_shared``)."""
        await self._drive(self._store._write_shared(name, payload, keep, owner))

    async def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name* (``RedisReservations.drop_lease``)."""
        await self._drive(self._store._drop_lease(name, owner))

    async def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name* (``RedisReservations.spend``)."""
        return await self._drive(self._store._spend(name, per_minute))

    async def aclose(self) -> None:
        """Close the asyncio client of the running loop; the blocking store stays open."""
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[0].aclose()

    async def _drive(self, flow: Flow[T]) -> T:
        """Run *flow*, awaiting each call it asks for with this loop's asyncio client."""
        client, scripts = self._client()
        errors = self._store._errors
        try:
            call = next(flow)
            while True:
                try:
                    if call.method == _SCRIPT:
                        reply = await self._run_script(client, scripts, *call.args)
                    else:
                        reply = await getattr(client, call.method)(*call.args, **call.kwargs)
                except errors as exc:
                    call = flow.throw(exc)
                else:
                    call = flow.send(reply)
        except StopIteration as stop:
            return cast("T", stop.value)

    async def _run_script(
        self, client: AsyncRedis, scripts: dict[str, AsyncScript], name: str, keys: list[str],
        args: list[Any],
    ) -> Any:
        """Return the reply of script *name*: by ``FCALL`` as the blocking store, else ``EVALSHA``.

        The functions carry the flags that let a hold end at maxmemory (``lua._FLAGS``).
        """
        store = self._store
        if store._functions is not None:
            target = store._functions[name]
            try:
                return await _fcall(client, target, keys, args)
            except store._response_error as exc:
                if str(exc) != _FUNCTION_GONE:
                    raise
            try:
                await client.function_load(lua.LIBRARY, replace=True)
            except store._response_error:  # a server without Functions now (a failover)
                pass
            else:
                return await _fcall(client, target, keys, args)
        script = scripts[name]
        try:
            return await _evalsha(client, script.sha, keys, args)
        except store._no_script:  # the server lost its scripts: load, retry
            script.sha = await client.script_load(script.script)
            return await _evalsha(client, script.sha, keys, args)

    def _client(self) -> tuple[AsyncRedis, dict[str, AsyncScript]]:
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is None:
            client = self._store._async_client()
            scripts = {name: client.register_script(text) for name, text in _SCRIPTS}
            found = self._clients[loop] = (client, scripts)
        return found
