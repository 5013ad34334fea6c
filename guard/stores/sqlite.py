"""Reservations in a SQLite file: shared by the processes of one host, kept across restarts.

Every write (``try_hold``, ``commit``, ``release``) is one ``BEGIN IMMEDIATE`` transaction, so
the check and the hold cannot interleave with another process's. The file is in WAL mode
(readers never wait for the writer) with ``synchronous=NORMAL``: a committed transaction
survives a crash of the process, though not necessarily a power cut of the host.

Amounts are integers in the currency's minor unit; sums are exact and converted back to
``Decimal`` at the currency's exponent. Counting the holds on a key is O(1) in the holds it
has: each key's ledger keeps running totals, and expired holds leave them lazily
(``guard/stores/_sqlite_sql.py`` says how). SQLite's integers are exact below 2**63 (past that,
a sum silently becomes a float), so a hold that would take a key's live holds plus every
commit ever recorded on it to 2**62 minor units is refused.

The store is also a ``FleetStore``: the processes of the host share balances, fetch leases and
request budgets through the same file, timed by the host clock (``time.time()``). When that
clock steps back, a balance written "later" is stale (never fresh) and a budget stored "later"
starts afresh: neither waits for the clock to catch up.

A store survives ``fork()``: a fork waits until no thread of the process is inside a call of
an open store (calls are short: a wait for another process's writer happens outside, with the
store's lock let go), and the child closes the idle connection it inherited before it opens its
own. SQLite keeps the locks of all the connections of a process to one file together, so a
connection the child opened next to an inherited one would share that one's state: refused
writes forever if the parent was inside a transaction, and no file lock of its own otherwise
(once the parent closed, another process could checkpoint and delete the WAL under it).
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from guard._seconds import seconds
from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import _machine as machine
from guard.stores import _sqlite_sql as sql
from guard.stores._common import (
    StoreUnavailable,
    check_time,
    fleet_name,
    fleet_rate,
    fleet_seconds,
    from_minor,
    listing,
    newest_first,
    to_minor,
)
from guard.stores._protocol import Hold, HoldOutcome, HoldState, Shared, gcra

__all__ = ["SqliteReservations"]

_ZERO = Decimal(0)
# Per hold (amount, fee and their sum), in minor units, as in the Redis store.
_LIMIT = 2**53
# A key's live total plus its committed running total, in minor units, stays below this: their
# sum, and every sum the queries make of them, then stays below 2**63, where SQLite's integers
# turn into floats. The committed running total never shrinks: it is every commit on the key.
_TOTAL_LIMIT = 2**62
# Holds past the retention deleted per call at most; a key's purges run at most this often.
_PURGE_BATCH = 500
_PURGE_EVERY = 60.0
# A read finding more expired holds than this still in a key's live total settles them.
_SETTLE_BACKLOG = 64
# The longest name of a shared value or budget (the guard's are short: "bal|luxcore|ARS").


_STATES: dict[str, HoldState] = {
    "pending": "pending", "committed": "committed", "uncertain": "uncertain"
}


# How long a write waits between two tries to begin while another process writes: SQLite's
# own busy handler's steps, then its longest one.
_BUSY_PAUSES = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)

# The stores open in this process, quiesced around fork() (see _before_fork); added to under
# _OPENING, which a fork holds throughout: no store joins (or is half made) meanwhile.
_OPEN: weakref.WeakSet[SqliteReservations] = weakref.WeakSet()
_OPENING = threading.Lock()
# In a forked child: connections a thread of the parent was inside at the fork. Never used
# nor closed here (closing would roll back the parent's transaction), so never collected.
_ABANDONED: list[sqlite3.Connection] = []


def _hold(row: tuple[Any, ...]) -> Hold:
    payout_id, key, currency, amount, fee, state, created, expires, committed, owner = row
    return Hold(
        payout_id=payout_id,
        key=key,
        currency=currency,
        amount=from_minor(amount, currency),
        fee=from_minor(fee, currency),
        state=_STATES[state],
        created_at=created,
        expires_at=expires,
        committed_at=committed,
        owner=owner,
    )


def _get(conn: sqlite3.Connection, payout_id: str) -> Hold | None:
    row = conn.execute(sql.GET, (payout_id,)).fetchone()
    return None if row is None else _hold(row)


def _ledger(
    conn: sqlite3.Connection, key: str, counted_since: float, now: float
) -> tuple[Any, ...] | None:
    """Return the key's ``sql.COUNTED`` row; ``None``: the key has no ledger.

    Raises:
        InvalidPayoutRequest: a total is not an exact integer (it passed 2**63 minor units).
    """
    row: tuple[Any, ...] | None = conn.execute(sql.COUNTED, (key, now, counted_since)).fetchone()
    if row is not None:
        _exact(key, row[1], row[6], row[7])
    return row


def _exact(key: str, *totals: object) -> None:
    """Refuse *totals* that SQLite turned into floats (they passed 2**63 minor units).

    Raises:
        InvalidPayoutRequest: a total is not an ``int``.
    """
    if any(type(total) is not int for total in totals):
        raise _too_large(key)


def _too_large(key: str) -> InvalidPayoutRequest:
    return InvalidPayoutRequest(
        f"the holds on balance {key!r} with every commit recorded on it reach, or would "
        f"reach, 2**62 minor units: more than the sqlite reservation store counts exactly; "
        f"nothing was written"
    )


def _adjust_live(conn: sqlite3.Connection, key: str, *change: float | None) -> None:
    """Run ``sql.ADJUST_LIVE`` on *key* with *change* (old part, new part).

    Raises:
        InvalidPayoutRequest: the live total would not be an exact integer (rolled back).
    """
    for (live,) in conn.execute(sql.ADJUST_LIVE, (key, *change)):
        _exact(key, live)


def _minor(hold: Hold) -> int:
    return to_minor(hold.held, hold.currency, limit=_LIMIT, store="sqlite")


def _take_out(conn: sqlite3.Connection, hold: Hold) -> None:
    """Take the live *hold*, dropped or ended, out of its key's live total."""
    _adjust_live(conn, hold.key, hold.expires_at, _minor(hold), None, None)


class SqliteReservations:
    """A reservation store in a SQLite file, safe across the threads and processes of a host.

    One connection per store object, used under a lock: threads of a process take turns in
    Python, processes take turns on SQLite's file lock. (Measured against a connection per
    thread: the same throughput within noise for 1 to 8 threads, without connections left
    open by threads that finished.)

    Args:
        path: The database file; created with its tables when missing.
        timeout: Seconds to wait for the store's lock, and then again for another process's
            writer, before giving up with ``StoreUnavailable`` (default 5): never forever.
        retention: Seconds a finished hold is remembered for idempotency (default one day;
            at most 30 days).

    The store remembers which file it opened: when that file is deleted or replaced while the
    store is open, every call raises ``StoreUnavailable`` (its holds are gone from the file
    other processes see) until ``rearm()`` opens the file at *path* again.

    A store may be shared with children made by ``fork()`` (a pre-fork server, a Celery worker
    pool): the fork waits for the calls under way in other threads (milliseconds), and the
    child opens its own connection at its first call. Only in a child forked while a call kept
    the store for more than *timeout* does every call raise ``StoreUnavailable``.

    Raises:
        ConfigurationError: *path* cannot be a SQLite database (missing directory, a directory,
            not a database, a newer schema), or *timeout*/*retention* is not a positive number
            of seconds up to 30 days.
        StoreUnavailable: the file stayed locked by another process for *timeout* seconds.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 5.0, retention: float = 86_400.0
    ) -> None:
        self._path = _check_path(path)
        self._path_text = os.fspath(self._path)  # stat on every call: no Path on that path
        self._timeout = seconds(timeout, "timeout", positive=True)
        self._retention = seconds(retention, "retention", positive=True)
        # Holds are forgotten within a sixteenth of the retention after it ends.
        self._purge_every = min(_PURGE_EVERY, self._retention / 16)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._identity: tuple[int, int] | None = None
        self._refused: str | None = None  # why this forked child cannot use the file
        self._conn: sqlite3.Connection | None = None
        with _OPENING:
            _OPEN.add(self)  # before opening, under the lock: a fork meanwhile waits for it
        with self._lock:
            self._conn = self._open()

    def __repr__(self) -> str:
        return f"SqliteReservations(path={str(self._path)!r})"

    def __enter__(self) -> SqliteReservations:
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
            InvalidPayoutRequest: an amount is negative, not exact at its currency's exponent,
                or 2**53 minor units or more; the key's live holds plus every commit recorded
                on it would reach 2**62 minor units with *hold* (within *ceiling*: a hold over
                it is just ``over_ceiling``); or *hold* is in another currency than the holds
                already on its key. Nothing is written then.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        machine.check_hold(hold, now)
        check_time("counted_since", counted_since)
        values = (
            hold.payout_id, hold.key, hold.currency,
            to_minor(hold.amount, hold.currency, limit=_LIMIT, store="sqlite"),
            to_minor(hold.fee, hold.currency, limit=_LIMIT, store="sqlite"),
            hold.created_at, hold.expires_at, hold.owner,
        )
        minor = _minor(hold)
        with self._write() as conn:
            ledger = _ledger(conn, hold.key, counted_since, now)
            counted = _ZERO if ledger is None else from_minor(ledger[1], ledger[0])
            existing = _get(conn, hold.payout_id)
            admission = machine.admit(
                existing, hold, key_currency=None if ledger is None else ledger[0],
                counted=counted, ceiling=ceiling, now=now,
            )
            if admission == "held" and ledger is not None and (
                ledger[6] + ledger[7] + minor >= _TOTAL_LIMIT
            ):
                raise _too_large(hold.key)  # before any write (a new key starts below 2**53)
            lapsed: tuple[Hold, ...] = ()
            if ledger is not None and ledger[2] is not None and ledger[2] <= now:
                lapsed = tuple(_hold(row) for row in conn.execute(sql.LAPSED, (hold.key, now)))
                conn.execute(sql.LAPSE_AT_NEXT, (hold.key,))
            if ledger is not None and ledger[3] and now > ledger[4]:
                conn.execute(sql.SETTLE, (hold.key, now))
            if admission != "held":
                found = existing if admission == "duplicate" else None
                return HoldOutcome(status=admission, hold=found, counted=counted, lapsed=lapsed)
            if ledger is None:
                conn.execute(sql.LEDGER_INSERT, (hold.key, hold.currency))
            old: tuple[float | None, int] = (None, 0)
            if existing is not None:  # an expired pending hold, replaced
                if existing.key == hold.key:
                    old = (existing.expires_at, _minor(existing))
                else:
                    _take_out(conn, existing)
            conn.execute(sql.INSERT, values)
            _adjust_live(conn, hold.key, *old, hold.expires_at, minor)
            if ledger is None or self._purge_due(ledger[5], now):
                self._purge(conn, hold.key, now)
            return HoldOutcome(status="held", hold=hold, counted=counted, lapsed=lapsed,
                               replaced=existing)

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (see ``ReservationStore.commit``).

        A commit time earlier than the key's last one (a clock stepping back) is recorded as
        that last time: the hold then counts a little longer, which is the safe side.

        Raises:
            InvalidPayoutRequest: a running total of the key would pass 2**63 minor units (only
                after holds that had stopped counting are committed or marked uncertain in
                bulk); nothing is written.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        check_time("now", now)
        with self._write() as conn:
            existing = _get(conn, payout_id)
            done = machine.to_commit(existing, owner, now)
            if done is None or done is existing:
                return done
            return _record_commit(conn, done, now)

    def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (see ``ReservationStore.release``).

        Raises:
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        with self._write() as conn:
            existing = _get(conn, payout_id)
            if existing is None or existing.state != "pending" or not machine.owned(
                existing, owner
            ):
                return False
            conn.execute(sql.DROP, (payout_id,))
            _take_out(conn, existing)
            return True

    def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (see ``ReservationStore.mark_uncertain``).

        Raises:
            ValueError: *until* is not finite or more than 30 days after *now*.
            InvalidPayoutRequest: a running total of the key would pass 2**63 minor units (only
                after holds that had stopped counting are committed or marked uncertain in
                bulk); nothing is written.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        machine.check_life(now, until)
        with self._write() as conn:
            existing = _get(conn, payout_id)
            marked = machine.to_uncertain(existing, owner, until)
            if existing is not None and marked is not None and marked is not existing:
                conn.execute(sql.MARK_UNCERTAIN, (until, payout_id))
                minor = _minor(existing)
                _adjust_live(conn, existing.key, existing.expires_at, minor, until, minor)
                conn.execute(sql.LAPSE_AT_SOONER, (until, marked.key))
            return marked

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (see ``ReservationStore.resolve``).

        Raises:
            InvalidPayoutRequest: a running total of the key would pass 2**63 minor units (only
                after holds that had stopped counting are committed or marked uncertain in
                bulk); nothing is written.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        check_time("now", now)
        with self._write() as conn:
            existing = _get(conn, payout_id)
            if existing is None or existing.state != "uncertain":
                return existing
            if sent:
                _record_commit(conn, existing.committed(now), now)
            else:
                conn.execute(sql.DROP, (payout_id,))
                _take_out(conn, existing)
            return existing

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any.

        Raises:
            StoreUnavailable: the database failed.
        """
        with self._read() as conn:
            return _get(conn, payout_id)

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

        One query that scans the holds table (every hold the retention keeps).

        Raises:
            InvalidPayoutRequest: a filter or *limit* is not one.
            ValueError: *now* is not finite.
            StoreUnavailable: the database failed.
        """
        wanted = listing(provider, currency, state, limit)
        check_time("now", now)
        with self._read() as conn:
            rows = conn.execute(sql.LIST, {
                "now": now, "state": wanted.state, "currency": wanted.currency,
                "provider": wanted.provider, "limit": wanted.limit,
            }).fetchall()
        return newest_first((_hold(row) for row in rows), wanted.limit)

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Raises:
            InvalidPayoutRequest: the key's totals passed 2**63 minor units (in a file an
                earlier version wrote: this one refuses holds before that).
            StoreUnavailable: the database failed.
        """
        check_time("counted_since", counted_since)
        check_time("now", now)
        with self._read() as conn:
            ledger = _ledger(conn, key, counted_since, now)
        if ledger is None:
            return _ZERO
        if ledger[3] > _SETTLE_BACKLOG and now > ledger[4]:
            self._settle(key, now)
        return from_minor(ledger[1], ledger[0])

    def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return the total held by the holds on *key* committed after *since*.

        One index seek (see ``CommittedTotals``); commits older than the retention are
        forgotten, so *since* should be within it.

        Raises:
            ValueError: a time is not finite.
            InvalidPayoutRequest: the key's totals passed 2**63 minor units (in a file an
                earlier version wrote: this one refuses holds before that).
            StoreUnavailable: the database failed.
        """
        check_time("since", since)
        check_time("now", now)
        with self._read() as conn:
            row = conn.execute(sql.COMMITTED, (key, since)).fetchone()
        if row is None:
            return _ZERO
        _exact(key, row[1])
        return from_minor(row[1], row[0])

    def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value under *name* and whether *owner* now leads (see ``FleetStore``).

        A fresh value is returned without taking the file's write lock; nobody leads then.
        A stale or missing one is read again in an immediate transaction, where *owner* takes
        the lease unless another owner holds an unexpired one (its own lease is renewed).

        Raises:
            ValueError: *name* or *owner* is not a non-empty short string, or a duration is
                not a finite positive number of seconds.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        fleet_name("name", name)
        fleet_name("owner", owner)
        lease_ttl = fleet_seconds("lease_ttl", lease_ttl)
        fresh_for = fleet_seconds("fresh_for", fresh_for)
        with self._read() as conn:
            row = conn.execute(sql.SHARED_READ, (name,)).fetchone()
        value = _shared(row, time.time())
        if value is not None and value.age < fresh_for:
            return value, False
        with self._write() as conn:
            now = time.time()
            row = conn.execute(sql.SHARED_READ, (name,)).fetchone()
            value = _shared(row, now)
            if value is not None and value.age < fresh_for:
                return value, False  # another process wrote it meanwhile
            if row is not None and row[3] not in {None, owner} and row[4] > now:
                return value, False  # someone else is fetching it
            conn.execute(sql.SHARED_LEASE, (name, owner, now + lease_ttl))
            return value, True

    def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Store *payload* under *name* for *keep* seconds; drop *owner*'s lease on it.

        Raises:
            ValueError: *name* or *owner* is not a non-empty short string, *payload* is not a
                string, or *keep* is not a finite positive number of seconds.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        fleet_name("name", name)
        fleet_name("owner", owner)
        if not isinstance(payload, str):
            raise ValueError(f"payload must be a str, got {type(payload).__name__}")
        keep = fleet_seconds("keep", keep)
        with self._write() as conn:
            now = time.time()
            conn.execute(sql.SHARED_WRITE, (name, payload, now, now + keep, owner))

    def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name*, if it holds it (a failed fetch).

        Raises:
            ValueError: *name* or *owner* is not a non-empty short string.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        fleet_name("name", name)
        fleet_name("owner", owner)
        with self._write() as conn:
            conn.execute(sql.SHARED_DROP_LEASE, (name, owner))

    def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name*; return 0.0 or the seconds to wait.

        One row per budget, read and written in one immediate transaction (``gcra``). A
        stored state further ahead of the host clock than a budget can ever run (``burst``
        intervals) was stored before the clock stepped back: the budget starts afresh rather
        than wait for the clock to catch up.

        Raises:
            ValueError: *name* is not a non-empty short string, or *per_minute* is not an
                ``int`` >= 1.
            StoreUnavailable: the database stayed locked for ``timeout`` seconds, or failed.
        """
        fleet_name("name", name)
        fleet_rate(per_minute)
        with self._write() as conn:
            now = time.time()
            row = conn.execute(sql.BUDGET_READ, (name,)).fetchone()
            stored = None if row is None or row[0] > now + _reach(per_minute) else row[0]
            tat, wait = gcra(stored, now, per_minute)
            if wait == 0.0:
                conn.execute(sql.BUDGET_WRITE, (name, tat))
            return wait

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (at most *limit* of them).

        Raises:
            StoreUnavailable: the database failed.
        """
        with self._read() as conn:
            # SQLite reads LIMIT -1 as no limit.
            rows = conn.execute(
                sql.HOLDS, (key, now, counted_since, -1 if limit is None else limit)
            ).fetchall()
        return [_hold(row) for row in rows]

    def rearm(self) -> None:
        """Open the file at the store's path again, after it was deleted or replaced.

        Raises:
            ConfigurationError: the path cannot be a SQLite database any more.
            StoreUnavailable: another thread's call kept the store for ``timeout`` seconds, or
                the file stayed locked by another process for ``timeout``.
        """
        with self._held():
            if self._refused is not None:
                raise StoreUnavailable(self._refused, store="sqlite")
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._pid = os.getpid()
            self._conn = self._open()

    def close(self) -> None:
        """Close the database connection; the file and its holds stay.

        Waits for a call in progress in another thread, ``timeout`` seconds at most.

        Raises:
            StoreUnavailable: another thread's call kept the store for ``timeout`` seconds;
                the store is still open.
        """
        with self._held():
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _forked(self, *, idle: bool) -> None:
        """Start afresh in a forked child, before any of its threads uses the store.

        The parent's lock was held across the fork (by ``_before_fork``, or by a thread that
        does not run here): the child gets a new one. With *idle* (no thread of the parent was
        inside a call) the inherited connection is closed, so that the child's own, opened at
        its first use (``_connection``), takes file locks of its own: closing an idle
        connection touches only this process's descriptors and locks. Otherwise the inherited
        connection is left alone for ever, and the store refuses every call here: SQLite would
        share its state (a write lock, perhaps) with any connection this process opens.
        """
        self._lock = threading.Lock()
        if self._conn is None or self._refused is not None:  # refused here: in a grandchild too
            return
        if idle:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            return
        _ABANDONED.append(self._conn)
        self._refused = (
            f"this process was forked while a thread of its parent was inside a call of the "
            f"store on {str(self._path)!r} for more than {self._timeout:g} s (the timeout): "
            f"SQLite would share that call's locks with any connection opened here, so the "
            f"file cannot be used in this process; nothing was held"
        )

    def _settle(self, key: str, now: float) -> None:
        """Settle *key*'s expired holds for a read that found many, if the file is free now.

        The read's answer is right either way; this only keeps the next reads O(1), so it
        never waits for another writer (busy: the next write settles instead).
        """
        with self._read() as conn:
            if not self._begin(conn):
                return
            try:
                conn.execute(sql.SETTLE, (key, now))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _purge_due(self, purge_at: float | None, now: float) -> bool:
        # A purge_at far ahead means the clock stepped back: purge now rather than wait.
        return purge_at is None or purge_at <= now or purge_at > now + self._purge_every

    def _purge(self, conn: sqlite3.Connection, key: str, now: float) -> None:
        """Forget a bounded batch of *key*'s holds past the retention; say when to go on."""
        horizon = now - self._retention
        live = conn.execute(sql.LIVE_DELETE, (key, horizon, _PURGE_BATCH)).rowcount
        done = conn.execute(sql.COMMITTED_DELETE, (key, horizon, _PURGE_BATCH)).rowcount
        more = max(live, done) >= _PURGE_BATCH
        conn.execute(sql.PURGE_AT, (now if more else now + self._purge_every, key))

    def _open(self) -> sqlite3.Connection:
        """Connect, switch to WAL and create the tables, retrying while another opener works."""
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn = sql.connect(self._path, self._timeout)
                self._identity = _identity(self._path_text)
                return conn
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise _bad_path(self._path, exc) from None
                if time.monotonic() >= deadline:
                    raise self._locked() from None
                time.sleep(0.01)
            except sqlite3.DatabaseError as exc:
                raise _bad_path(self._path, exc) from None

    def _connection(self) -> sqlite3.Connection:
        if self._refused is not None:
            raise StoreUnavailable(self._refused, store="sqlite")
        if self._conn is None:
            raise StoreUnavailable("the store was closed", store="sqlite")
        if _identity(self._path_text) != self._identity:
            raise StoreUnavailable(
                f"the reservation store lost its holds: {str(self._path)!r} was deleted or "
                f"replaced while open; checks and reserves deny until an operator calls rearm()",
                store="sqlite",
            )
        if self._pid != os.getpid():
            # A connection inherited through fork is never used in the child (``_forked`` has
            # closed it): the child's own takes file locks of its own.
            self._pid = os.getpid()
            self._conn = self._open()
        return self._conn

    @contextmanager
    def _held(self) -> Iterator[None]:
        """Hold the store's lock for ``close`` or ``rearm``, waiting ``timeout`` at most."""
        if not self._lock.acquire(timeout=self._timeout):
            raise StoreUnavailable(
                f"another thread's call kept the store on {str(self._path)!r} for "
                f"{self._timeout:g} s (the timeout); it was neither closed nor reopened",
                store="sqlite",
            )
        try:
            yield
        finally:
            self._lock.release()

    @contextmanager
    def _read(self, *, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """Yield the connection under the store's lock, waited for ``timeout`` (or *wait*) s."""
        if not self._lock.acquire(timeout=self._timeout if wait is None else wait):
            raise self._locked()
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"database error: {exc}", store="sqlite") from exc
        finally:
            self._lock.release()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Yield the connection in a ``BEGIN IMMEDIATE`` transaction, committed after the block.

        While another process writes, the store's lock is let go between tries (``timeout``
        seconds of them at most): the lock is held only while this process runs SQLite, so a
        fork, which waits for it (``_before_fork``), never waits for another process.
        """
        pauses = iter(_BUSY_PAUSES)
        wait: float | None = None  # the first time: the lock's own timeout
        deadline = math.inf  # set when another writer is first found
        while True:
            with self._read(wait=wait) as conn:
                if self._begin(conn):
                    try:
                        yield conn
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
                    conn.execute("COMMIT")
                    return
            now = time.monotonic()
            if deadline == math.inf:
                deadline = now + self._timeout
            if now >= deadline:
                raise self._locked()
            time.sleep(min(next(pauses, _BUSY_PAUSES[-1]), deadline - now))
            wait = max(0.0, deadline - time.monotonic())

    def _begin(self, conn: sqlite3.Connection) -> bool:
        """Begin an immediate transaction on *conn* if no other writer has the file now.

        Returns:
            Whether the transaction began (``False``: another process is writing).
        """
        conn.execute("PRAGMA busy_timeout = 0")  # a try, not SQLite's wait under our lock
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            return False
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
        return True

    def _locked(self) -> StoreUnavailable:
        return StoreUnavailable(
            f"{str(self._path)!r} stayed locked by another writer for {self._timeout:g} s "
            f"(the timeout); nothing was held",
            store="sqlite",
        )


# The stores whose locks the forking thread holds across its fork() (thread-local: two
# threads may fork at once, and then take turns).
_FORKING = threading.local()


def _before_fork() -> None:
    """Take every open store's lock, so that no thread is inside SQLite when the process forks.

    A call holds its store's lock only while it runs SQLite (``_write`` waits for another
    process's writer without it), so this waits milliseconds; a lock still held after the
    store's timeout (a call stuck, or the forking thread's own) is left, and the child refuses
    that store (``_forked``). The locks are taken in one order, whichever thread forks.
    """
    _OPENING.acquire()
    _FORKING.held = [store for store in sorted(_OPEN, key=id)
                     if store._lock.acquire(timeout=store._timeout)]


def _after_fork_in_parent() -> None:
    """Let the parent's calls go on (``_before_fork``'s locks)."""
    held, _FORKING.held = getattr(_FORKING, "held", []), []
    for store in held:
        store._lock.release()
    _OPENING.release()


def _after_fork_in_child() -> None:
    """Give every store of the child a lock of its own and a fresh start (``_forked``)."""
    held, _FORKING.held = getattr(_FORKING, "held", []), []
    for store in list(_OPEN):
        store._forked(idle=any(store is quiet for quiet in held))
    _OPENING.release()  # taken by this thread, which goes on here


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def _record_commit(conn: sqlite3.Connection, hold: Hold, now: float) -> Hold:
    """Move the live *hold*'s commit into its key's running totals; return it as recorded."""
    minor = _minor(hold)
    values = (minor, now, hold.key, hold.expires_at)
    row = conn.execute(sql.LEDGER_COMMIT, values).fetchone()
    if row is None:  # a hold always creates its ledger; be safe with old files
        conn.execute(sql.LEDGER_INSERT, (hold.key, hold.currency))
        row = conn.execute(sql.LEDGER_COMMIT, values).fetchone()
    running, at, live = row
    _exact(hold.key, running, live)
    conn.execute(sql.MARK_COMMITTED, (at, running, hold.payout_id))
    if hold.state == "committed" and hold.committed_at == at:
        return hold  # machine.to_commit made it already, at this time
    return hold.committed(at)


def _shared(row: tuple[Any, ...] | None, now: float) -> Shared | None:
    """Return the value in a ``sql.SHARED_READ`` *row* if it is kept at *now*.

    A value written "later" than *now* was written before the host clock stepped back: how
    old it is cannot be known, so it is stale (infinite age) and the next reader fetches anew.
    """
    if row is None or row[0] is None or row[2] <= now:
        return None
    age = now - row[1]
    return Shared(row[0], age if age >= 0 else math.inf)


def _reach(per_minute: int) -> float:
    """Return the furthest ahead of now a budget's ``tat`` can be: ``burst`` intervals (gcra)."""
    burst = max(1, per_minute // 10)
    return burst * 60.0 / (per_minute - burst + 1) + 0.001


def _identity(path: str) -> tuple[int, int] | None:
    """Return what identifies the file at *path* (device, inode), or ``None`` if it is gone."""
    try:
        stat = os.stat(path)  # noqa: PTH116 - not Path.stat: this runs on every store call
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _check_path(path: str | os.PathLike[str]) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ConfigurationError(f"path must be a file path, not {type(path).__name__}")
    text = os.fspath(path)
    if text in {"", ":memory:"} or text.startswith("file:"):
        raise ConfigurationError(
            f"path must be a database file shared by the processes, got {text!r}; "
            f"use InMemoryReservations for holds that live in one process"
        )
    resolved = Path(text).expanduser()
    if resolved.is_dir():
        raise ConfigurationError(f"path {text!r} is a directory, expected a database file")
    if not resolved.parent.is_dir():
        raise ConfigurationError(f"cannot create {text!r}: directory {str(resolved.parent)!r} "
                                 f"does not exist")
    return resolved


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _bad_path(path: Path, exc: sqlite3.Error) -> ConfigurationError:
    return ConfigurationError(f"cannot use {str(path)!r} as a reservation database: {exc}")
