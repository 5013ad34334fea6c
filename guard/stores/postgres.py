"""Reservations in PostgreSQL: the database payout services already run, shared by every host.

Every change is one call of a PL/pgSQL function (``guard/stores/_postgres_sql.py``), so the
check and the hold are one round trip and one atomic step under READ COMMITTED, however many
workers on however many hosts: each function locks its key's ledger row first. The functions
mirror the hold state machine of ``guard/stores/_machine.py``; bounds (times, amounts) are
checked here, before anything is sent. Serialization failures and deadlocks (SQLSTATE 40001,
40P01) are retried a bounded number of times, then raise ``StoreUnavailable``; so does every
other database or connection error (refused, dropped, a server restart, ``statement_timeout``),
so the guard denies ``balance_unavailable``: faults fail closed. One exception: a kept idle
connection that the server ended meanwhile (it restarted) is replaced by a new one and the call
runs once more, within the same deadline (every call is safe to repeat: see
``_Connections.run``), so the first commit after a restart does not fail.

One clock per store. With ``clock="database"`` (the default) holds are timed by the database
server, like Redis's ``clock="server"``: the times a caller passes (on its own clock) travel as
offsets from the ``now`` it passes (``expires_at - now``, ``counted_since - now``), and each
function adds them to ``clock_timestamp()`` once it holds its key's lock (the read-only queries
to ``statement_timestamp()``). So hosts whose clocks disagree still agree on creation, expiry
and commit times, and the holds the store returns carry the database's times.
``clock="caller"`` takes the times as passed (one host, or a test that moves the clock by
hand). Committed transactions are durable: a server restart keeps every acknowledged hold.

The store is also a fleet store (``FleetStore``): shared values with fetch leases, and request
budgets (``gcra``), always on the database's clock, each one round trip.

The schema is the operator's: ``migrate()`` (or ``payout-guard store migrate --config FILE``)
creates or upgrades it, versioned; a store finding it missing or older at construction raises
``ConfigurationError`` naming that command, and creates nothing unless ``create_schema=True``.
Found only at a later first use (the server was down at construction, or after ``rearm()``),
each call raises ``StoreUnavailable`` with the same message instead, so the guard denies.

``bound(connection)`` returns a view of the store that works through the caller's open psycopg
connection and never commits: the hold and the caller's own rows commit or roll back together.

``asyncio()`` returns the same store on ``psycopg.AsyncConnection`` (its own connections from the
same DSN or pool settings, or a ``psycopg_pool.AsyncConnectionPool`` of the caller's): every
method awaited, the same statements, so ``AsyncPayoutGuard`` never waits for a thread.

Needs ``psycopg`` 3 and ``psycopg-pool``: ``pip install payout-guard[postgres]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import os
import random
import re
import socket
import threading
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import asynccontextmanager, contextmanager
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from guard._seconds import seconds
from guard.errors import ConfigurationError
from guard.stores import _machine as machine
from guard.stores import _postgres_sql as sql
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
    to_minor,
)
from guard.stores._protocol import Hold, HoldOutcome, HoldState, Shared

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["MIGRATE_COMMAND", "AsyncPostgresReservations", "PostgresReservations"]

MIGRATE_COMMAND = "payout-guard store migrate --config FILE"
_ZERO = Decimal(0)
_LIMIT = 2**62  # per hold, in minor units: amount + fee stays within bigint
_ATTEMPTS = 5  # tries of one call when the server reports 40001 or 40P01
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_STATES: dict[str, HoldState] = {
    "pending": "pending", "committed": "committed", "uncertain": "uncertain"
}
_CLOCKS = ("database", "caller")
# How long past the store's timeout a call may wait before its connection is cut: the server's
# statement_timeout fires first; this deadline is for a server that cannot answer at all.
_GRACE = 1.0
T = TypeVar("T")


class _Call(NamedTuple):
    """The one statement a store operation runs (its name in ``sql``, parameters, rows or not)."""

    name: str
    params: Sequence[Any] | Mapping[str, Any]
    rows: bool = True


# An operation written once (checks, parameters, then reading the rows), driven by the sync
# store (``_drive``) and the asyncio one (``AsyncPostgresReservations._drive``).
Flow = Generator[_Call, list[tuple[Any, ...]], T]

def _hold(row: Sequence[Any]) -> Hold:
    payout_id, key, currency, amount, fee, state, created, expires, committed, owner = row
    return Hold(
        payout_id=payout_id,
        key=key,
        currency=currency,
        amount=from_minor(int(amount), currency),
        fee=from_minor(int(fee), currency),
        state=_STATES[state],
        # JSON writes whole seconds without a fraction: times are floats all the same.
        created_at=float(created),  # money-ok: a time
        expires_at=float(expires),  # money-ok: a time
        committed_at=None if committed is None else float(committed),  # money-ok: a time
        owner=owner,
    )


def _text(what: str, value: str) -> str:
    """Return *value* if PostgreSQL can store it as text (no NUL character).

    Raises:
        ValueError: it holds a NUL.
    """
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL character")
    return value


def _pool_settings(
    pool: psycopg_pool.ConnectionPool[Any], threshold: int | None
) -> Callable[[], tuple[str, dict[str, Any]]]:
    """Return how to read *pool*'s connection settings, for connections of the store's own."""

    def settings() -> tuple[str, dict[str, Any]]:
        # Read at each connect: a pool's settings may be functions (new credentials).
        conninfo = pool.conninfo() if callable(pool.conninfo) else pool.conninfo
        kwargs = pool.kwargs() if callable(pool.kwargs) else pool.kwargs
        return conninfo, {**(kwargs or {}), "autocommit": True, "prepare_threshold": threshold}

    return settings


def _json_hold(data: Mapping[str, Any]) -> Hold:
    return _hold([data[name] for name in sql.COLUMNS.split(", ")])


def _cut(conn: Any) -> None:
    """Shut *conn*'s socket down, so whatever waits on it wakes with "connection lost".

    Only the socket is touched (through a duplicate of its descriptor): the connection object
    itself belongs to the thread waiting on it, which sees the error and drops it.
    """
    with contextlib.suppress(Exception):
        link = socket.socket(fileno=os.dup(conn.fileno()))
        try:
            link.shutdown(socket.SHUT_RDWR)
        finally:
            link.close()


class _Deadlines:
    """One thread per process that cuts the connection of a call past its deadline.

    ``statement_timeout`` ends a slow statement, but a server that cannot answer at all (a
    stopped process, a paused host; the kernel still acknowledges every packet) would keep a
    call waiting forever. Arming costs a lock and a dict entry; the thread sleeps until the
    earliest deadline. A connection is cut only while its call is armed, under the lock, so a
    call that has disarmed never loses its connection; one that finds it was cut drops it.
    """

    def __init__(self) -> None:
        # Arming and disarming take the plain lock (C-level, the hot path); the condition
        # shares it, for waking the thread.
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self._armed: dict[int, tuple[float, Any]] = {}
        self._next = 0
        self._pid = 0
        self._wakes_at = math.inf  # when the thread wakes next (inf: when notified)

    def arm(self, conn: Any, seconds: float) -> int:
        """Cut *conn* unless :meth:`disarm` is called within *seconds*; return the ticket."""
        with self._mutex:
            if self._pid != os.getpid():  # first use, or a forked child: no thread yet
                self._pid, self._armed = os.getpid(), {}
                threading.Thread(target=self._watch, name="payout-guard-pg-deadlines",
                                 daemon=True).start()
            self._next += 1
            deadline = time.monotonic() + seconds
            if deadline < self._wakes_at:  # the thread would sleep past it
                self._lock.notify()
            self._armed[self._next] = (deadline, conn)
            return self._next

    def disarm(self, ticket: int) -> bool:
        """End the watch of *ticket*; return ``False`` if its connection was cut meanwhile."""
        with self._mutex:
            return self._armed.pop(ticket, None) is not None

    def _watch(self) -> None:
        pid = os.getpid()
        with self._lock:
            while self._pid == pid:
                now = time.monotonic()
                due = min((deadline for deadline, _ in self._armed.values()), default=math.inf)
                if due > now:
                    self._wakes_at = due
                    self._lock.wait(None if due == math.inf else due - now)
                    self._wakes_at = -math.inf  # awake: nobody needs to notify
                    continue
                for ticket, (deadline, conn) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[ticket]
                        _cut(conn)


_DEADLINES = _Deadlines()


class _Source:
    """Where a store gets a connection for one call, and what it does with it afterwards."""

    bound = False

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:  # pragma: no cover - abstract
        raise NotImplementedError
        yield

    def run(self, call: Callable[[Any, Any], T]) -> T:
        """Return ``call(connection, cursor)`` on a connection of this source's."""
        with self.connection() as conn:
            return call(conn, conn.cursor())

    def close(self) -> None:
        """Give back what the source holds."""


class _Connections(_Source):
    """Connections the store makes itself (from a DSN or a factory), kept idle between calls.

    Each is set up once: autocommit, the prepare threshold and ``statement_timeout``; each
    keeps one cursor, reused by every call (a call costs no cursor set-up). One inherited
    through ``fork`` is never used (nor closed) in the child.
    """

    def __init__(
        self, factory: Callable[[], psycopg.Connection[Any]], *, setup: Callable[..., None],
        keep: int,
    ) -> None:
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        self._factory = factory
        self._setup = setup
        self._keep = keep
        self._idle: list[tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle_status = psycopg.pq.TransactionStatus.IDLE
        self._error = psycopg.Error
        self._lost = psycopg.OperationalError  # the class of a connection that failed

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        conn, cursor, _ = self._take()
        try:
            yield conn
        except BaseException:
            self._give_back(conn, cursor, failed=True)
            raise
        self._give_back(conn, cursor, failed=False)

    def run(self, call: Callable[[Any, Any], T]) -> T:
        """Return ``call(connection, cursor)`` on an idle connection (or a new one).

        An idle connection the server has ended meanwhile (a restart, an administrator's
        ``pg_terminate_backend``) fails at the connection level, most often before its
        statement reaches a server at all: *call* then runs once more, on a new connection.
        That is safe even when the statement did take effect (the server ended mid-call),
        because no store call does anything twice: ``try_hold`` finds its own pending hold
        (payout id and owner token), which the guard takes as held; ``commit`` returns the
        owner's committed hold and ``mark_uncertain`` its uncertain one; ``release`` and
        ``resolve`` find nothing left to change (they then answer as for a hold already
        ended); reads and the fleet calls repeat harmlessly (``spend`` may take a second
        request from the budget: the safe side).
        """
        # The hot path of every store call: no context manager, the connection's own cursor.
        conn, cursor, idle = self._take()
        try:
            found = call(conn, cursor)
        except self._lost:
            dead = idle and (conn.closed or conn.broken)  # before _give_back closes it
            self._give_back(conn, cursor, failed=True)
            if not dead:
                raise  # a new connection failing, or an error of the statement's own
            return self._once_more(call)
        except BaseException:
            self._give_back(conn, cursor, failed=True)
            raise
        self._give_back(conn, cursor, failed=False)
        return found

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            if self._pid != os.getpid():
                return
        for conn, _ in idle:
            conn.close()

    def _once_more(self, call: Callable[[Any, Any], T]) -> T:
        """Return ``call(connection, cursor)`` on a new connection (an idle one was dead)."""
        conn, cursor = self._new()
        try:
            found = call(conn, cursor)
        except BaseException:
            self._give_back(conn, cursor, failed=True)
            raise
        self._give_back(conn, cursor, failed=False)
        return found

    def _take(self) -> tuple[psycopg.Connection[Any], psycopg.Cursor[Any], bool]:
        """Return an idle connection, or a new one, its cursor, and whether it was idle."""
        with self._lock:
            if self._pid != os.getpid():
                self._pid, self._idle = os.getpid(), []
            if self._idle:
                return (*self._idle.pop(), True)
        return (*self._new(), False)

    def _new(self) -> tuple[psycopg.Connection[Any], psycopg.Cursor[Any]]:
        """Return a new connection, set up, and its cursor."""
        conn = self._factory()
        try:
            if not conn.autocommit:
                conn.autocommit = True
            self._setup(conn)
        except BaseException:
            conn.close()
            raise
        return conn, conn.cursor()

    def _give_back(
        self, conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any], *, failed: bool
    ) -> None:
        pgconn = conn.pgconn
        healthy = not conn.closed and not conn.broken
        if healthy and failed and pgconn.transaction_status != self._idle_status:
            try:
                conn.rollback()
            except self._error:
                healthy = False
        with self._lock:
            if (healthy and pgconn.transaction_status == self._idle_status
                    and self._pid == os.getpid() and len(self._idle) < self._keep):
                self._idle.append((conn, cursor))
                return
        if self._pid == os.getpid():
            conn.close()


class _Pool(_Source):
    """A ``psycopg_pool.ConnectionPool`` of the caller's, used as the caller set it up.

    The store changes no session setting on the caller's connections: their statement timeout
    is the pool's (its ``configure`` callback) or the database role's.
    """

    def __init__(self, pool: psycopg_pool.ConnectionPool[Any], *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        # On a connection not in autocommit mode the pool commits at the end of the block (or
        # rolls back on error), after any deadline: so each store call commits or rolls back
        # itself, under its deadline, and leaves the pool nothing to do. A connection cut at
        # its deadline is closed, and the pool replaces it.
        with self._pool.connection(timeout=self._timeout) as conn:
            yield conn


class _Bound(_Source):
    """The caller's open connection: every call runs inside the caller's transaction."""

    bound = True

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        yield self._conn


class PostgresReservations:
    """A reservation store in PostgreSQL, safe across threads, processes and hosts.

    Args:
        target: Where the database is: a DSN (``postgresql://user:pw@host/db`` or
            ``host=... dbname=...``), a ``psycopg_pool.ConnectionPool`` (the caller's: not
            closed by ``close``), or a function returning a new ``psycopg.Connection`` (the
            store keeps up to *keep* of them idle and closes them on ``close``).
        schema: The PostgreSQL schema holding the store's tables and functions (default
            ``payout_guard``; lower-case letters, digits and ``_``).
        retention: Seconds a finished hold is remembered for idempotency (default one day;
            at most 30 days).
        timeout: Seconds any call may take: the ``statement_timeout`` the store sets on the
            connections it makes (from a DSN or a factory; a caller's pool and a caller's
            bound connection keep their own), the wait for a pooled connection and (rounded
            up) the connect timeout of a DSN (default 5; at most 30 days). A call with no
            answer a second after it (a hung server, where ``statement_timeout`` cannot fire)
            has its connection closed and raises ``StoreUnavailable``.
        prepare_threshold: After how many runs a statement is prepared on a connection (psycopg's
            ``prepare_threshold``, default 5); ``None`` never prepares, as PgBouncer in
            transaction mode requires.
        create_schema: Create or upgrade the schema at first contact (tests, demos). Without it
            nothing is created: a missing or older schema raises ``ConfigurationError`` (at
            construction; ``StoreUnavailable`` at a later first use).
        check_schema: Check the schema version at first contact (default). ``False`` skips
            the check, for a store made only to call ``migrate()``.
        keep: Idle connections kept between calls for a DSN or a factory (default 4).
        clock: ``"database"`` (default): holds are timed by the database server's clock, so
            hosts whose clocks differ agree (see the module docstring); ``"caller"``: by the
            times passed in (one host, or tests that move the clock by hand).

    The first contact with the server (at construction, or at first use when the server cannot
    be reached then) checks the schema version. A mismatch found at a first use (or at the
    first call after ``rearm()``) is a store that cannot answer: that call and the next ones
    raise ``StoreUnavailable`` naming the migrate command (the guard denies
    ``balance_unavailable``), and the check runs again at each call until it passes.

    Raises:
        ConfigurationError: psycopg is missing; *target* is not a DSN, pool or factory; the
            schema name, a number or *clock* is out of range; or the schema is missing or at another
            version (the message names ``payout-guard store migrate --config FILE``).
    """

    def __init__(
        self,
        target: str | psycopg_pool.ConnectionPool[Any] | Callable[[], psycopg.Connection[Any]],
        *,
        schema: str = "payout_guard",
        retention: float = 86_400.0,
        timeout: float = 5.0,
        prepare_threshold: int | None = 5,
        create_schema: bool = False,
        check_schema: bool = True,
        keep: int = 4,
        clock: str = "database",
    ) -> None:
        try:
            import psycopg  # noqa: PLC0415 - optional dependency, imported only when used
            import psycopg_pool  # noqa: PLC0415 - same
        except ImportError:
            raise ConfigurationError(
                "PostgresReservations needs psycopg and psycopg-pool: "
                "pip install payout-guard[postgres]"
            ) from None
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(
                f"must be a lower-case identifier (letters, digits, _), got {str(schema)[:70]!r}",
                path="schema",
            )
        if prepare_threshold is not None and (
            isinstance(prepare_threshold, bool) or not isinstance(prepare_threshold, int)
            or prepare_threshold < 0
        ):
            raise ConfigurationError(
                f"must be a non-negative integer or None, got {prepare_threshold!r}",
                path="prepare_threshold",
            )
        if clock not in _CLOCKS:
            raise ConfigurationError(
                f"must be 'database' (holds timed by the database server) or 'caller' (by the "
                f"times passed in), got {str(clock)[:40]!r}",
                path="clock",
            )
        self._db_clock = clock == "database"
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 0:
            raise ConfigurationError(f"must be a non-negative integer, got {keep!r}",
                                     path="keep")
        self._retention = seconds(retention, "retention", positive=True)
        self._timeout = seconds(timeout, "timeout", positive=True)
        self._schema = schema
        self._quoted = f'"{schema}"'
        self._prepare: bool | None = False if prepare_threshold is None else None
        self._threshold = prepare_threshold
        self._create = bool(create_schema)
        self._secret = ""
        self._where = "a connection factory"
        self._errors = psycopg.Error
        self._retryable = (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected)
        database_now = sql.DATABASE_NOW if self._db_clock else ""
        self._statements = {
            name: getattr(sql, name).format(s=self._quoted, t=database_now)
            for name in ("TRY_HOLD", "COMMIT", "MARK_UNCERTAIN", "RESOLVE", "RELEASE", "GET",
                         "COUNTED", "COMMITTED", "HOLDS", "LIST", "READ_SHARED", "WRITE_SHARED",
                         "DROP_LEASE", "SPEND")
        }
        self._keep = keep
        # How asyncio() opens connections of its own: the DSN and its options, or the pool's
        # (never shown anywhere: a DSN may carry a password).
        self._connect_with: Callable[[], tuple[str, dict[str, Any]]] | None = None
        self._source: _Source
        if isinstance(target, str):
            self._source = self._from_dsn(target, keep)
        elif isinstance(target, psycopg_pool.ConnectionPool):
            self._where = "a connection pool"
            self._source = _Pool(target, timeout=self._timeout)
            self._connect_with = _pool_settings(target, self._threshold)
        elif callable(target):
            self._source = _Connections(target, setup=self._setup, keep=keep)
        else:
            raise ConfigurationError(
                f"must be a PostgreSQL DSN, a psycopg_pool.ConnectionPool or a function "
                f"returning a psycopg.Connection, not {type(target).__name__}",
                path="target",
            )
        self._home = self._source
        self._ready_lock = threading.Lock()
        self._ready = not check_schema and not self._create
        try:
            # The server cannot be reached now: the first use tries again.
            with contextlib.suppress(StoreUnavailable):
                self._contact()
        except BaseException:
            self._source.close()  # a store that raised is never used: leave no connection
            raise

    def __repr__(self) -> str:
        view = ", bound" if self._source.bound else ""
        clock = "" if self._db_clock else ", clock='caller'"
        return f"PostgresReservations({self._where}, schema={self._schema!r}{clock}{view})"

    def __enter__(self) -> PostgresReservations:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def schema(self) -> str:
        """Return the name of the schema holding the store's tables."""
        return self._schema

    # -- the protocol -------------------------------------------------------------------------

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (see ``ReservationStore``).

        Raises:
            ValueError: a time is not finite, or the hold would live more than 30 days.
            InvalidPayoutRequest: an amount is negative, not exact at its currency's exponent,
                or 2**62 minor units or more; or *hold* is in another currency than the holds
                already on its key.
            StoreUnavailable: the server could not be reached or failed, the call outlasted
                ``timeout``, or 40001/40P01 persisted; or this first use found the schema
                missing or at another version (the message names the migrate command).
        """
        return self._drive(self._try_hold_flow(hold, ceiling, counted_since, now))

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (see ``ReservationStore.commit``).

        A commit time earlier than the key's last one (a clock stepping back) is recorded as
        that last time: the hold then counts a little longer, which is the safe side.

        Raises:
            ValueError: *now* is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._commit_flow(payout_id, owner, now))

    def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (see ``ReservationStore.release``).

        Raises:
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._release_flow(payout_id, owner))

    def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (see ``ReservationStore.mark_uncertain``).

        Raises:
            ValueError: a time is not finite, or *until* is more than 30 days after *now*.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._mark_uncertain_flow(payout_id, owner, now, until))

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (see ``ReservationStore.resolve``).

        Raises:
            ValueError: *now* is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._resolve_flow(payout_id, sent, now))

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any.

        Raises:
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._get_flow(payout_id))

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Raises:
            ValueError: a time is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._reserved_flow(key, counted_since, now))

    def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return the total held by the holds on *key* committed after *since*.

        One index seek on the ledger's running total (see ``CommittedTotals``); commits older
        than the retention are forgotten, so *since* should be within it.

        Raises:
            ValueError: a time is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._committed_flow(key, since, now))

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (at most *limit* of them).

        Raises:
            ValueError: a time is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._holds_flow(key, counted_since, now, limit))

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

        One query that scans the holds table (every hold the retention keeps); on the
        database's clock, expiry is judged on it.

        Raises:
            InvalidPayoutRequest: a filter or *limit* is not one.
            ValueError: *now* is not finite.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._list_holds_flow(provider, currency, state, limit, now))

    def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value shared under *name* and whether *owner* leads its fetch.

        See ``FleetStore.read_shared``: one function call, ages and leases on the database's
        clock. A fresh value is read without a lock; a stale or missing one is read again
        under its row lock, where *owner* takes the lease unless another owner holds an
        unexpired one (its own is renewed).

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200
                characters (or holds a NUL), or a duration is not positive, finite and at
                most 30 days.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._read_shared_flow(name, owner, lease_ttl, fresh_for))

    def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Share *payload* under *name* for *keep* seconds and drop *owner*'s lease.

        One statement; the value's age starts at the database's clock.

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200
                characters, *payload* is not a string (or any of them holds a NUL), or *keep*
                is not positive, finite and at most 30 days.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._write_shared_flow(name, payload, keep, owner))

    def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name* (a failed fetch: the next reader leads).

        Raises:
            ValueError: *name* or *owner* is not a non-empty string of at most 200 characters
                (or holds a NUL).
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._drop_lease_flow(name, owner))

    def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name*; return 0.0, or the seconds to wait.

        ``gcra`` run in one function call under the budget's row lock, on the database's
        clock, so every host spends from the same budget.

        Raises:
            ValueError: *name* is not a non-empty string of at most 200 characters (or holds
                a NUL), or *per_minute* is not an ``int`` from 1 to 10**9.
            StoreUnavailable: as for ``try_hold``.
        """
        return self._drive(self._spend_flow(name, per_minute))

    def rearm(self) -> None:
        """Check the schema again at the next call (PostgreSQL keeps its holds on restarts).

        A mismatch found then raises ``StoreUnavailable`` (naming the migrate command) from
        that call, and from each later one until the schema is migrated.
        """
        with self._ready_lock:
            self._ready = False

    def close(self) -> None:
        """Close the connections this store made; a caller's pool or connection stays open."""
        if not self._source.bound:
            self._source.close()

    # -- PostgreSQL's own -----------------------------------------------------------------

    def bound(self, connection: psycopg.Connection[Any]) -> PostgresReservations:
        """Return a view of this store that works inside *connection*'s transaction.

        Every call of the view runs through *connection* and never commits or rolls back: the
        caller's ``COMMIT`` keeps the holds written with its own rows, a ``ROLLBACK`` drops
        both. A hold taken this way keeps its key's ledger row locked until the caller's
        transaction ends, so other payouts on the same balance wait for it: keep it short.
        A database error in the view aborts the caller's transaction (raised as
        ``StoreUnavailable``, never retried): roll it back. ``close()`` of the view does nothing.

        Raises:
            ConfigurationError: *connection* is not a ``psycopg.Connection``.
        """
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        if not isinstance(connection, psycopg.Connection):
            raise ConfigurationError(
                f"must be a psycopg.Connection, not {type(connection).__name__}",
                path="connection",
            )
        view = copy.copy(self)
        view._source = _Bound(connection)
        return view

    def asyncio(
        self, target: psycopg_pool.AsyncConnectionPool[Any] | None = None
    ) -> AsyncPostgresReservations | None:
        """Return this store on ``psycopg.AsyncConnection``: the same schema, clock and calls.

        ``AsyncPayoutGuard`` uses it, so its holds never wait for a thread.

        Args:
            target: A ``psycopg_pool.AsyncConnectionPool`` of the caller's (opened by the
                caller, not closed by ``aclose``). Without it the asyncio store opens
                connections of its own (up to *keep* kept idle; ``aclose`` closes them) with
                this store's DSN, or its pool's connection settings.

        Returns:
            The asyncio store, or ``None`` for a store built from a connection factory and
            given no *target* (``AsyncPayoutGuard`` then runs this store in its thread pool).

        Raises:
            ConfigurationError: *target* is not an ``AsyncConnectionPool``.
        """
        import psycopg_pool  # noqa: PLC0415 - optional dependency, loaded with the store

        source: _AsyncSource
        if target is not None:
            if not isinstance(target, psycopg_pool.AsyncConnectionPool):
                raise ConfigurationError(
                    f"must be a psycopg_pool.AsyncConnectionPool, not {type(target).__name__}",
                    path="target",
                )
            source = _AsyncPool(target, timeout=self._timeout)
        elif self._connect_with is not None:
            source = _AsyncConnections(self._aconnect, keep=self._keep)
        else:
            return None
        return AsyncPostgresReservations(self, source)

    def migrate(self) -> tuple[int, int]:
        """Create or upgrade the store's schema, tables and functions; safe to run again.

        Concurrent migrations (several hosts starting at once) take turns on an advisory lock.
        The migration is one transaction, bounded like every call: each statement (the wait
        for the lock among them: ``lock_timeout``), and the COMMIT, ends within the store's
        timeout (and a second, for a server that does not answer at all); a migration that
        raised left the schema as it was, or wholly migrated when only the COMMIT's answer was
        lost, and running it again finishes the job.

        Returns:
            The schema version found (0: none) and the version now.

        Raises:
            ConfigurationError: the schema is newer than this version of payout-guard reads.
            StoreUnavailable: the server could not be reached, refused (for instance for lack
                of the ``CREATE`` privilege on the database), or did not answer in time (the
                lock stayed taken by another migration, or the COMMIT went unanswered).
        """
        try:
            with self._home.connection() as conn:

                def run(
                    statement: str, params: tuple[Any, ...] | None = None
                ) -> psycopg.Cursor[Any]:
                    # Each statement bounded like every call (a migration as a whole may
                    # take longer: it waits its turn, then runs many statements).
                    with self._watched(conn, bound=False):
                        return conn.execute(statement, params)

                # The transaction is begun and ended here, not by ``conn.transaction()``:
                # its COMMIT (which a server may never answer: synchronous replication with
                # its standby gone, a hung host) must be under a deadline too. A connection in
                # autocommit mode needs the BEGIN; any other begins by itself.
                if conn.autocommit:
                    run("BEGIN")
                try:
                    found = self._upgrade(run)
                except BaseException:
                    if not conn.closed:  # a cut connection is closed: nothing to roll back
                        with contextlib.suppress(self._errors, StoreUnavailable), \
                                self._watched(conn, bound=False):
                            conn.rollback()
                    raise
                with self._watched(conn, bound=False):
                    conn.commit()
        except self._errors as exc:
            raise self._unavailable(exc) from exc
        with self._ready_lock:
            self._ready = True
        return found, sql.VERSION

    def _upgrade(self, run: Callable[..., psycopg.Cursor[Any]]) -> int:
        """Take the migration lock, bring the schema to ``sql.VERSION``; return the version found.

        Runs every statement through *run*, inside the migration's open transaction.

        Raises:
            ConfigurationError: the schema is newer than this version of payout-guard reads.
        """
        # Server-side, so a wait ends without a cut connection left queued for the lock (a
        # caller's pool may set no statement timeout); for this transaction only.
        run(f"SET LOCAL lock_timeout = {max(1, math.ceil(self._timeout * 1000))}")
        run(sql.MIGRATION_LOCK)
        run(f"CREATE SCHEMA IF NOT EXISTS {self._quoted}")
        run(sql.version_table(self._quoted))
        row = run(sql.VERSION_READ.format(s=self._quoted)).fetchone()
        found = int(row[0]) if row and row[0] is not None else 0
        if found > sql.VERSION:
            raise self._newer(found)
        for step in sql.STEPS[found:]:
            for statement in step:
                run(statement.format(s=self._quoted))
        if found < sql.VERSION:
            for statement in sql.functions(self._quoted):
                run(statement)
            run(
                f"INSERT INTO {self._quoted}.schema_version (version) VALUES (%s)",  # noqa: S608 - a checked identifier
                (sql.VERSION,),
            )
        return found

    def schema_version(self) -> int:
        """Return the version of the store's schema in the database (0: there is none).

        Bounded like every call: a server that does not answer within the store's timeout
        (and a second) has its connection closed.

        Raises:
            StoreUnavailable: the server could not be reached or did not answer in time.
        """
        try:
            with self._home.connection() as conn, self._watched(conn, bound=False):
                row = conn.execute("SELECT to_regclass(%s)",
                                   (f"{self._quoted}.schema_version",)).fetchone()
                if row is not None and row[0] is not None:
                    row = conn.execute(sql.VERSION_READ.format(s=self._quoted)).fetchone()
                if not conn.autocommit:
                    # A caller's pool without autocommit: the transaction ends here, within
                    # the deadline (the pool would commit after it, unbounded).
                    conn.commit()
                return int(row[0]) if row and row[0] is not None else 0
        except self._errors as exc:
            raise self._unavailable(exc) from exc

    # -- each operation, written once as one call of SQL (see _Call) -------------------

    def _try_hold_flow(
        self, hold: Hold, ceiling: Decimal, counted_since: float, now: float
    ) -> Flow[HoldOutcome]:
        machine.check_hold(hold, now)
        check_time("counted_since", counted_since)
        cur = hold.currency
        amount = to_minor(hold.amount, cur, limit=_LIMIT, store="postgres")
        fee = to_minor(hold.fee, cur, limit=_LIMIT, store="postgres")
        if amount + fee >= _LIMIT:  # the sum in minor units is exact: no second rounding
            to_minor(hold.held, cur, limit=_LIMIT, store="postgres")  # raises, saying why
        limit = ceiling_to_minor(ceiling, cur)
        base = now if self._db_clock else 0.0  # self._at, inlined: six times a call
        rows = yield _Call("TRY_HOLD", (
            hold.payout_id, hold.key, cur, amount, fee, hold.created_at - base,
            hold.expires_at - base, hold.owner, limit, counted_since - base, now - base,
            now - self._retention - base, self._db_clock,
        ))
        status, counted_minor, key_currency, existing, lapsed_rows, created, expires = rows[0]
        if status == "mixed":
            raise mixed_currencies(hold, key_currency)
        counted = from_minor(int(counted_minor), cur)
        lapsed = () if lapsed_rows is None else tuple(_json_hold(row) for row in lapsed_rows)
        if status == "held":
            if self._db_clock:  # as stored: on the database's clock
                hold = Hold(hold.payout_id, hold.key, cur, hold.amount, hold.fee, "pending",
                            float(created), float(expires), None, hold.owner)  # money-ok: times
            return HoldOutcome(status="held", hold=hold, counted=counted, lapsed=lapsed,
                               replaced=None if existing is None else _json_hold(existing))
        if status == "over_ceiling":
            return HoldOutcome(status="over_ceiling", hold=None, counted=counted, lapsed=lapsed)
        return HoldOutcome(status="duplicate", hold=_json_hold(existing), counted=counted,
                           lapsed=lapsed)

    def _commit_flow(self, payout_id: str, owner: str, now: float) -> Flow[Hold | None]:
        check_time("now", now)
        rows = yield _Call("COMMIT", (payout_id, owner, self._at(now, now), self._db_clock))
        return _hold(rows[0]) if rows else None

    def _release_flow(self, payout_id: str, owner: str) -> Flow[bool]:
        rows = yield _Call("RELEASE", (payout_id, owner))
        return bool(rows)

    def _mark_uncertain_flow(
        self, payout_id: str, owner: str, now: float, until: float
    ) -> Flow[Hold | None]:
        machine.check_life(now, until)
        rows = yield _Call("MARK_UNCERTAIN",
                           (payout_id, owner, self._at(until, now), self._db_clock))
        return _hold(rows[0]) if rows else None

    def _resolve_flow(self, payout_id: str, sent: bool, now: float) -> Flow[Hold | None]:
        check_time("now", now)
        rows = yield _Call("RESOLVE",
                           (payout_id, bool(sent), self._at(now, now), self._db_clock))
        return _hold(rows[0]) if rows else None

    def _get_flow(self, payout_id: str) -> Flow[Hold | None]:
        rows = yield _Call("GET", (payout_id,))
        return _hold(rows[0]) if rows else None

    def _reserved_flow(self, key: str, counted_since: float, now: float) -> Flow[Decimal]:
        check_time("now", now)
        rows = yield _Call("COUNTED", {
            "key": key, "now": self._at(now, now),
            "since": self._at(check_time("counted_since", counted_since), now),
        })
        return from_minor(int(rows[0][1]), rows[0][0]) if rows else _ZERO

    def _committed_flow(self, key: str, since: float, now: float) -> Flow[Decimal]:
        check_time("now", now)
        rows = yield _Call("COMMITTED",
                           {"key": key, "since": self._at(check_time("since", since), now)})
        return from_minor(int(rows[0][1]), rows[0][0]) if rows else _ZERO

    def _holds_flow(
        self, key: str, counted_since: float, now: float, limit: int | None = None
    ) -> Flow[list[Hold]]:
        check_time("now", now)
        rows = yield _Call("HOLDS", {
            "key": key, "now": self._at(now, now),
            "since": self._at(check_time("counted_since", counted_since), now), "limit": limit,
        })
        return [_hold(row) for row in rows]

    def _list_holds_flow(
        self, provider: object, currency: object, state: object, limit: object, now: float
    ) -> Flow[list[Hold]]:
        wanted = listing(provider, currency, state, limit)
        check_time("now", now)
        rows = yield _Call("LIST", {
            "now": self._at(now, now), "state": wanted.state, "currency": wanted.currency,
            "provider": wanted.provider, "limit": wanted.limit,
        })
        return newest_first((_hold(row) for row in rows), wanted.limit)

    def _read_shared_flow(
        self, name: str, owner: str, lease_ttl: float, fresh_for: float
    ) -> Flow[tuple[Shared | None, bool]]:
        _text("name", fleet_name("name", name))
        _text("owner", fleet_name("owner", owner))
        lease = fleet_seconds("lease_ttl", lease_ttl)
        fresh = fleet_seconds("fresh_for", fresh_for)
        rows = yield _Call("READ_SHARED", (name, owner, lease, fresh))
        payload, age, leads = rows[0]
        value = None if payload is None else Shared(payload, float(age))  # money-ok: an age
        return value, bool(leads)

    def _write_shared_flow(self, name: str, payload: str, keep: float, owner: str) -> Flow[None]:
        _text("name", fleet_name("name", name))
        _text("owner", fleet_name("owner", owner))
        if not isinstance(payload, str):
            raise ValueError(f"a shared payload must be a str, got {type(payload).__name__}")
        _text("payload", payload)
        seconds_kept = fleet_seconds("keep", keep)
        yield _Call("WRITE_SHARED",
                    {"name": name, "payload": payload, "keep": seconds_kept, "owner": owner},
                    rows=False)

    def _drop_lease_flow(self, name: str, owner: str) -> Flow[None]:
        _text("name", fleet_name("name", name))
        _text("owner", fleet_name("owner", owner))
        yield _Call("DROP_LEASE", (name, owner), rows=False)

    def _spend_flow(self, name: str, per_minute: int) -> Flow[float]:
        _text("name", fleet_name("name", name))
        fleet_rate(per_minute)
        rows = yield _Call("SPEND", (name, per_minute))
        return float(rows[0][0])  # money-ok: seconds

    # -- internals ------------------------------------------------------------------------

    def _from_dsn(self, dsn: str, keep: int) -> _Source:
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - same

        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error:
            # The DSN is not repeated: it may carry a password.
            raise ConfigurationError(
                "is not a PostgreSQL connection string (postgresql://user@host/db or "
                "'host=... dbname=...')", path="dsn",
            ) from None
        self._secret = str(params.get("password") or "")
        shown = " ".join(
            f"{name}={params[name]}" for name in ("host", "port", "dbname", "user")
            if params.get(name)
        )
        self._where = f"dsn '{shown}'" if shown else "dsn"
        options: dict[str, Any] = {"autocommit": True, "prepare_threshold": self._threshold}
        if "connect_timeout" not in params:
            options["connect_timeout"] = max(2, math.ceil(self._timeout))
        if "application_name" not in params:
            options["application_name"] = "payout-guard"

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(dsn, **options)

        self._connect_with = lambda: (dsn, options)
        return _Connections(connect, setup=self._setup, keep=keep)

    def _setup(self, conn: psycopg.Connection[Any]) -> None:
        """Set the store's statement timeout (and prepare threshold) on a new connection.

        Raises:
            StoreUnavailable: the server did not answer within the store's timeout.
        """
        conn.prepare_threshold = self._threshold
        millis = max(1, math.ceil(self._timeout * 1000))
        with self._watched(conn, bound=False):
            conn.execute(f"SET statement_timeout = {millis}")

    @contextmanager
    def _watched(self, conn: Any, *, bound: bool) -> Iterator[None]:
        """Cut *conn* if the block outlasts the store's timeout (and a second).

        For the calls outside ``_run`` (the schema check, a new connection's set-up), so the
        first contact is bounded like every statement.

        Raises:
            StoreUnavailable: the connection was cut: the server did not answer in time.
        """
        ticket = _DEADLINES.arm(conn, self._timeout + _GRACE)
        try:
            yield
        finally:
            if not _DEADLINES.disarm(ticket):
                conn.close()  # cut: whatever it answered, it is not reused
                raise self._silent(bound=bound)

    def _contact(self) -> None:
        """Check (or, with ``create_schema``, make) the schema at the first contact.

        Raises:
            ConfigurationError: the schema is missing, older or newer.
            StoreUnavailable: the server could not be reached.
        """
        with self._ready_lock:
            if self._ready:
                return
        if self._create:
            self.migrate()
            return
        self._judge(self.schema_version())

    def _judge(self, found: int) -> None:
        """Accept schema version *found* for every later call, or say what to do.

        Raises:
            ConfigurationError: the schema is missing, older or newer.
        """
        if found > sql.VERSION:
            raise self._newer(found)
        if found < sql.VERSION:
            state = "does not exist" if found == 0 else f"is at version {found}"
            raise ConfigurationError(
                f"the reservation schema {self._schema!r} {state}; this payout-guard needs "
                f"version {sql.VERSION}: run `{MIGRATE_COMMAND}` (or call store.migrate())",
                path="schema",
            )
        with self._ready_lock:
            self._ready = True

    def _mismatch(self, exc: ConfigurationError) -> StoreUnavailable:
        """Return the error of a schema mismatch found at a call, not at construction.

        Raised from the constructor the mismatch is a configuration to fix before starting;
        found later, the store cannot answer, and the guard must deny, not raise.
        """
        return StoreUnavailable(exc.message, store="postgres")

    def _newer(self, found: int) -> ConfigurationError:
        return ConfigurationError(
            f"the reservation schema {self._schema!r} is at version {found}, newer than this "
            f"payout-guard reads ({sql.VERSION}); upgrade payout-guard",
            path="schema",
        )

    def _drive(self, flow: Flow[T]) -> T:
        """Run *flow*'s one statement and return what the flow makes of its rows."""
        call = next(flow)
        try:
            flow.send(self._run(call.name, call.params, rows=call.rows))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]  # the flow's declared result
        raise AssertionError("a store operation runs one statement")  # pragma: no cover

    def _at(self, value: float, now: float) -> float:
        """Return the time *value* as the SQL takes it (offset from *now*, or as passed)."""
        return value - now if self._db_clock else value

    def _run(
        self, name: str, params: Sequence[Any] | Mapping[str, Any], *, rows: bool = True
    ) -> list[tuple[Any, ...]]:
        """Run statement *name*, retrying 40001/40P01 a few times; return its rows."""
        if not self._ready:
            try:
                self._contact()
            except ConfigurationError as exc:
                raise self._mismatch(exc) from exc
        statement = self._statements[name]
        timeout = self._timeout + _GRACE
        prepare = self._prepare
        ends = not self._source.bound  # a bound view leaves the transaction to the caller
        deadline = 0.0  # of the attempt under way: its run on a new connection shares it

        def call(conn: psycopg.Connection[Any], cursor: psycopg.Cursor[Any]) -> list[Any]:
            ticket = _DEADLINES.arm(conn, deadline - time.monotonic())
            try:
                cursor.execute(statement, params, prepare=prepare)
                found = cursor.fetchall() if rows else []
                if ends and not conn.autocommit:
                    # A caller's pool without autocommit: COMMIT here, within the deadline (a
                    # server may never answer it: synchronous replication, its standby gone).
                    conn.commit()
            except BaseException:
                if ends and not conn.autocommit:
                    with contextlib.suppress(self._errors):
                        conn.rollback()  # within the deadline too, not at the pool's exit
                raise
            finally:
                if not _DEADLINES.disarm(ticket):
                    conn.close()  # cut: whatever it answered, it is not reused (a pool drops it)
                    raise self._silent()
            return found

        for attempt in range(1, _ATTEMPTS + 1):
            deadline = time.monotonic() + timeout
            try:
                return self._source.run(call)
            except self._retryable as exc:
                if self._source.bound or attempt == _ATTEMPTS:
                    raise self._unavailable(exc) from exc
                time.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 - jitter
            except self._errors as exc:
                raise self._unavailable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _aconnect(self) -> psycopg.AsyncConnection[Any]:
        """Open an asyncio connection like the ones this store opens, set up the same way."""
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        assert self._connect_with is not None  # noqa: S101 - asyncio() checked it
        conninfo, options = self._connect_with()
        conn = await psycopg.AsyncConnection.connect(conninfo, **options)
        try:
            if not conn.autocommit:
                await conn.set_autocommit(True)
            millis = max(1, math.ceil(self._timeout * 1000))
            ticket = _DEADLINES.arm(conn, self._timeout + _GRACE)
            try:
                await conn.execute(f"SET statement_timeout = {millis}")
            finally:
                if not _DEADLINES.disarm(ticket):
                    raise self._silent(bound=False)  # the connection is closed below
        except BaseException:
            await conn.close()
            raise
        return conn

    def _silent(self, *, bound: bool | None = None) -> StoreUnavailable:
        """Return the error of a call whose connection was cut: the server did not answer."""
        text = (f"the PostgreSQL server did not answer within {self._timeout + _GRACE:g} s "
                f"(the store's timeout plus {_GRACE:g} s); the connection was closed")
        if self._source.bound if bound is None else bound:
            text += " (the caller's transaction is aborted: roll it back)"
        return StoreUnavailable(text, store="postgres")

    def _unavailable(self, exc: Exception, *, bound: bool | None = None) -> StoreUnavailable:
        text = f"{type(exc).__name__}: {str(exc).strip()}"
        if self._secret:
            text = text.replace(self._secret, "***")
        if self._source.bound if bound is None else bound:
            text += " (the caller's transaction is aborted: roll it back)"
        return StoreUnavailable(text[:500], store="postgres")


class _AsyncSource:
    """Where an asyncio store gets a connection for one call."""

    bound = False

    @asynccontextmanager
    async def connection(  # pragma: no cover - abstract
        self,
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        raise NotImplementedError
        yield

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """Return ``await call(connection)`` on a connection of this source's."""
        async with self.connection() as conn:
            return await call(conn)

    async def aclose(self) -> None:
        """Give back what the source holds."""


class _AsyncConnections(_AsyncSource):
    """Connections an asyncio store opens itself, kept idle between calls (one event loop)."""

    def __init__(
        self, connect: Callable[[], Any], *, keep: int
    ) -> None:
        self._connect = connect
        self._keep = keep
        self._idle: list[psycopg.AsyncConnection[Any]] = []

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn: psycopg.AsyncConnection[Any] = (
            self._idle.pop() if self._idle else await self._connect()
        )
        try:
            yield conn
        finally:
            await self._give_back(conn)

    async def run(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """Return ``await call(connection)`` on an idle connection (or a new one).

        An idle connection the server has ended meanwhile is replaced once by a new one,
        as the sync store does it (see ``_Connections.run``: every store call is idempotent
        for its caller).
        """
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        idle = bool(self._idle)
        conn: psycopg.AsyncConnection[Any] = self._idle.pop() if idle else await self._connect()
        try:
            return await call(conn)
        except psycopg.OperationalError:
            if not idle or not (conn.closed or conn.broken):
                raise  # a new connection failing, or an error of the statement's own
        finally:
            await self._give_back(conn)
        conn = await self._connect()
        try:
            return await call(conn)
        finally:
            await self._give_back(conn)

    async def _give_back(self, conn: psycopg.AsyncConnection[Any]) -> None:
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        # A call cancelled mid-statement leaves the connection busy: it is closed, as is
        # a broken one; one that only saw an error (a timeout, a refused hold) is kept.
        idle = psycopg.pq.TransactionStatus.IDLE
        if (not conn.closed and not conn.broken and conn.info.transaction_status == idle
                and len(self._idle) < self._keep):
            self._idle.append(conn)
        else:
            await conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()


class _AsyncPool(_AsyncSource):
    """A ``psycopg_pool.AsyncConnectionPool`` of the caller's, used as the caller set it up."""

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any], *, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        # Each call commits itself, under its deadline, as with the sync pool (see _Pool).
        async with self._pool.connection(timeout=self._timeout) as conn:
            yield conn


class _AsyncBound(_AsyncSource):
    """The caller's open asyncio connection: every call runs inside the caller's transaction."""

    bound = True

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        yield self._conn


class AsyncPostgresReservations:
    """``PostgresReservations`` on ``psycopg.AsyncConnection``: every method awaited.

    Made by ``PostgresReservations.asyncio()``. It runs the sync store's statements (the same
    schema, clock, checks and retries of 40001/40P01) and raises what it raises; ``aclose``
    closes the connections it opened (a caller's pool stays open).
    """

    def __init__(self, store: PostgresReservations, source: _AsyncSource) -> None:
        self._store = store
        self._source = source

    def __repr__(self) -> str:
        view = ", bound" if self._source.bound else ""
        return f"Async{self._store!r}"[:-1] + f"{view})"

    async def __aenter__(self) -> AsyncPostgresReservations:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    @property
    def schema(self) -> str:
        """Return the name of the schema holding the store's tables."""
        return self._store.schema

    async def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (``PostgresReservations.try_hold``)."""
        return await self._drive(self._store._try_hold_flow(hold, ceiling, counted_since, now))

    async def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (``PostgresReservations.commit``)."""
        return await self._drive(self._store._commit_flow(payout_id, owner, now))

    async def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (``PostgresReservations.release``)."""
        return await self._drive(self._store._release_flow(payout_id, owner))

    async def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (``PostgresReservations.mark_uncertain``)."""
        return await self._drive(self._store._mark_uncertain_flow(payout_id, owner, now, until))

    async def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (``PostgresReservations.resolve``)."""
        return await self._drive(self._store._resolve_flow(payout_id, sent, now))

    async def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        return await self._drive(self._store._get_flow(payout_id))

    async def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count."""
        return await self._drive(self._store._reserved_flow(key, counted_since, now))

    async def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return the total held by the holds on *key* committed after *since*."""
        return await self._drive(self._store._committed_flow(key, since, now))

    async def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (at most *limit* of them)."""
        return await self._drive(self._store._holds_flow(key, counted_since, now, limit))

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
        return await self._drive(
            self._store._list_holds_flow(provider, currency, state, limit, now)
        )

    async def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value shared under *name* and whether *owner* leads its fetch."""
        return await self._drive(
            self._store._read_shared_flow(name, owner, lease_ttl, fresh_for)
        )

    async def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Share *payload* under *name* for *keep* seconds and drop *owner*'s lease."""
        await self._drive(self._store._write_shared_flow(name, payload, keep, owner))

    async def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name* (a failed fetch: the next reader leads)."""
        await self._drive(self._store._drop_lease_flow(name, owner))

    async def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name*; return 0.0, or the seconds to wait."""
        return await self._drive(self._store._spend_flow(name, per_minute))

    def bound(self, connection: psycopg.AsyncConnection[Any]) -> AsyncPostgresReservations:
        """Return a view of this store inside *connection*'s transaction (see the sync one).

        Raises:
            ConfigurationError: *connection* is not a ``psycopg.AsyncConnection``.
        """
        import psycopg  # noqa: PLC0415 - optional dependency, loaded with the store

        if not isinstance(connection, psycopg.AsyncConnection):
            raise ConfigurationError(
                f"must be a psycopg.AsyncConnection, not {type(connection).__name__}",
                path="connection",
            )
        return AsyncPostgresReservations(self._store, _AsyncBound(connection))

    async def aclose(self) -> None:
        """Close the connections this asyncio store opened; a caller's pool stays open."""
        await self._source.aclose()

    async def _drive(self, flow: Flow[T]) -> T:
        """Run *flow*'s one statement and return what the flow makes of its rows."""
        call = next(flow)
        rows = await self._run(call)
        try:
            flow.send(rows)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]  # the flow's declared result
        raise AssertionError("a store operation runs one statement")  # pragma: no cover

    async def _run(self, call: _Call) -> list[tuple[Any, ...]]:
        """Run *call*, retrying 40001/40P01 a few times; return its rows."""
        store = self._store
        if not store._ready:
            try:
                await self._contact()
            except ConfigurationError as exc:
                raise store._mismatch(exc) from exc
        statement = store._statements[call.name]
        deadline = 0.0  # of the attempt under way: its run on a new connection shares it

        ends = not self._source.bound  # a bound view leaves the transaction to the caller

        async def execute(conn: psycopg.AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            ticket = _DEADLINES.arm(conn, deadline - time.monotonic())
            try:
                cursor = await conn.execute(statement, call.params, prepare=store._prepare)
                found = await cursor.fetchall() if call.rows else []
                if ends and not conn.autocommit:
                    await conn.commit()  # a caller's pool: within the deadline (see the sync)
            except BaseException:
                if ends and not conn.autocommit:
                    with contextlib.suppress(store._errors):
                        await conn.rollback()
                raise
            finally:
                if not _DEADLINES.disarm(ticket):
                    await conn.close()  # cut: whatever it answered, it is not reused
                    raise store._silent(bound=self._source.bound)
            return found

        for attempt in range(1, _ATTEMPTS + 1):
            deadline = time.monotonic() + store._timeout + _GRACE
            try:
                return await self._source.run(execute)
            except store._retryable as exc:
                if self._source.bound or attempt == _ATTEMPTS:
                    raise store._unavailable(exc, bound=self._source.bound) from exc
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))  # noqa: S311 - jitter
            except store._errors as exc:
                raise store._unavailable(exc, bound=self._source.bound) from exc
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    async def _contact(self) -> None:
        """Check the schema version at the first call, as the sync store does.

        Raises:
            ConfigurationError: the schema is missing, older or newer.
            StoreUnavailable: the server could not be reached.
        """
        store = self._store
        if store._create:
            # Tests and demos only: migrating is rare, so it runs as the sync store does it.
            await asyncio.to_thread(store.migrate)
            return
        try:
            async with self._source.connection() as conn:
                # Bounded like every call: a silent server has its connection cut.
                ticket = _DEADLINES.arm(conn, store._timeout + _GRACE)
                try:
                    cursor = await conn.execute("SELECT to_regclass(%s)",
                                                (f"{store._quoted}.schema_version",))
                    row = await cursor.fetchone()
                    found = 0
                    if row is not None and row[0] is not None:
                        cursor = await conn.execute(sql.VERSION_READ.format(s=store._quoted))
                        row = await cursor.fetchone()
                        found = int(row[0]) if row and row[0] is not None else 0
                    if not conn.autocommit:
                        await conn.commit()  # within the deadline, as the sync store does
                finally:
                    if not _DEADLINES.disarm(ticket):
                        await conn.close()  # cut: whatever it answered, it is not reused
                        raise store._silent(bound=self._source.bound)
        except store._errors as exc:
            raise store._unavailable(exc, bound=self._source.bound) from exc
        store._judge(found)
