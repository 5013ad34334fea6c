"""Decision records and the sinks that keep them: every decision, with the facts it was made on.

A ``DecisionRecord`` is a ``Decision`` (the request, the balance, the held total, the balance's
age and source, our own payouts in flight, reasons with messages, warnings, ``max_payable`` and
the routing candidates, each with its own facts) plus what it was decided by: the rules'
fingerprint and the library's version. ``payout-guard replay`` judges records again with other
rules (``guard/_replay.py``).

A sink (``decision_log=`` on a guard) takes records on the decision's path and must never block
or fail it: ``JsonLinesDecisionLog`` and ``SqliteDecisionLog`` queue each record (a few hundred
nanoseconds) and write from a thread of their own. A full queue or a failing disk drops records,
counts them (``dropped``) and says so in the log at most once a minute. The writer thread shares
the interpreter lock with the checks, so what it does per record is kept small: a cached
balance is serialized once for all the decisions made on it (``_Encoder``), and SQLite fills
its columns from the JSON in one statement per batch.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import itertools
import json
import operator
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import metadata
from json.encoder import encode_basestring
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticSerializationError, SchemaSerializer

from guard._models import BalanceSnapshot, Decision
from guard.errors import ConfigurationError, GuardError
from guard.instrumentation import decision_log_dropped
from rules import RuleSet, dump

__all__ = [
    "VERSION",
    "DecisionLog",
    "DecisionRecord",
    "JsonLinesDecisionLog",
    "Operation",
    "SqliteDecisionLog",
    "count_decisions",
    "on_dropped",
    "read_decisions",
    "rules_fingerprint",
    "write_failed",
]

Operation = Literal["check", "reserve"]

try:
    VERSION = metadata.version("payout-guard")
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    VERSION = "unknown"

_LOG = structlog.get_logger("payout_guard")
_SQLITE_MAGIC = b"SQLite format 3\x00"
# How often a failing sink says so (seconds); the count of drops is always exact.
_COMPLAIN_EVERY = 60.0
# Seconds the writer waits after a first record for others to join its batch.
_LINGER = 0.02


def rules_fingerprint(rules: RuleSet) -> str:
    """Return the sha256 (hex) of *rules*' canonical data: equal rules, equal fingerprints.

    The data is ``rules.dump(rules)`` as JSON with sorted keys and no spaces. A rule that
    cannot be dumped (a rule class of one's own that is not registered) is fingerprinted by
    its class's qualified name and ``repr``.
    """
    try:
        data: Any = dump(rules)
    except ConfigurationError:
        data = [f"{type(rule).__module__}.{type(rule).__qualname__}:{rule!r}" for rule in rules]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()


class DecisionRecord(BaseModel):
    """One decision as a decision log keeps it: enough to judge it again, exactly.

    Attributes:
        decision: The decision, with the facts it was judged on (``Decision.balance``,
            ``reserved``, ``balance_age``, ``balance_source``, ``own_in_flight``, and per
            candidate the same).
        operation: ``"check"`` or ``"reserve"``.
        provider_asked: The provider the caller pinned (``None``: routed by the guard).
        rules_fingerprint: :func:`rules_fingerprint` of the rules that decided.
        version: The payout-guard version that decided.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Decision
    operation: Operation
    provider_asked: str | None = None
    rules_fingerprint: str
    version: str

    def to_json(self) -> str:
        """Return the record as one line of JSON (amounts as strings; no float anywhere)."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> DecisionRecord:
        """Return the record written by :meth:`to_json`.

        Raises:
            pydantic.ValidationError: *text* is not a decision record.
        """
        return cls.model_validate_json(text)


_SERIALIZER = DecisionRecord.__pydantic_serializer__


def _field_schemas() -> tuple[Any, dict[str, Any], Any] | None:
    """Return ``Decision``'s core schema, its fields' schemas and its config (``None``: cannot)."""
    schema: Any = copy.deepcopy(Decision.__pydantic_core_schema__)
    model = schema["schema"] if schema["type"] == "definitions" else schema
    fields = model.get("schema", {}).get("fields")
    if model["type"] != "model" or not isinstance(fields, dict):
        return None  # pragma: no cover - pydantic's schema of a model with fields has them
    return schema, fields, model.get("config")


def _serializer_of(make: Any) -> SchemaSerializer | None:
    """Return a serializer of what ``make(fields' schemas)`` describes, in ``Decision``'s terms.

    It is pydantic's own schema of each field (the same JSON for each) with ``Decision``'s
    config and definitions; ``None`` when ``Decision``'s schema is not of the shape expected.
    """
    found = _field_schemas()
    if found is None:  # pragma: no cover - see _field_schemas
        return None
    schema, fields, config = found
    try:
        made = make(fields)
    except KeyError:  # pragma: no cover - a field Decision no longer has
        return None
    if schema["type"] == "definitions":
        schema["schema"] = made
    else:  # pragma: no cover - Decision's reasons are a definition of their own
        schema = made
    return SchemaSerializer(schema, config)


def _fields_serializer(names: tuple[str, ...]) -> SchemaSerializer | None:
    """Return a serializer of a dict of *names* (``Decision`` fields), as a typed dict."""
    return _serializer_of(lambda fields: {
        "type": "typed-dict",
        "total": True,
        "fields": {
            name: {"type": "typed-dict-field", "schema": fields[name]["schema"], "required": True}
            for name in names
        },
    })


def _field_serializer(name: str) -> SchemaSerializer | None:
    """Return a serializer of the value of ``Decision``'s field *name*."""
    return _serializer_of(lambda fields: fields[name]["schema"])


_DECISION_FIELDS = tuple(Decision.model_fields)
# A decision's fields that change from one decision to the next, written by _Encoder as
# pydantic writes them; the others repeat, and pydantic writes them once for all the
# decisions that share them.
_VOLATILE = (
    "decision_id", "amount", "payout_id", "reserved", "spendable", "evaluated_at", "balance_age",
)
_STEADY = tuple(name for name in _DECISION_FIELDS if name not in {"balance", *_VOLATILE})
# The record's own fields after its decision (they repeat too).
_TAIL = ("operation", "provider_asked", "rules_fingerprint", "version")


class _Serializers(NamedTuple):
    """Pydantic's serializers of parts of a ``Decision``, each field as pydantic writes it."""

    sans_balance: SchemaSerializer
    steady: SchemaSerializer
    balance_age: SchemaSerializer


def _serializers() -> _Serializers | None:
    sans_balance = _fields_serializer(tuple(n for n in _DECISION_FIELDS if n != "balance"))
    steady = _fields_serializer(_STEADY)
    balance_age = _field_serializer("balance_age")
    if sans_balance is None or steady is None or balance_age is None:
        return None  # pragma: no cover - see _serializer_of
    return _Serializers(sans_balance, steady, balance_age)


_PARTS = _serializers()
_BALANCE_SERIALIZER = BalanceSnapshot.__pydantic_serializer__
# Records' repeated parts are remembered, dropped whole past this many (a guard sees a
# handful of balances at a time, and one rules fingerprint).
_MEMO_SIZE = 64


def _second_of(moment: datetime) -> tuple[datetime, datetime, str]:
    """Return the second *moment* (UTC) falls in: its start, its end, and its ISO 8601 text.

    The text is pydantic's for the second's start, without its ``Z``: pydantic writes a
    time as that, ``.`` and six digits of microseconds unless they are 0, and ``Z``.
    """
    start = moment.replace(microsecond=0)
    return start, start + timedelta(seconds=1), start.isoformat()[:19]


class _Encoder:
    """Write records as JSON lines that read back as the records written, for less.

    Most of a record repeats from one decision to the next: its balance (consecutive
    decisions are made on one cached balance), its steady fields (mode, currency, fee, the
    reserve, ``max_payable``, empty reasons, ...) and its own last four fields (operation,
    provider asked, rules fingerprint, version). Pydantic serializes each once, and it is
    remembered: a balance and steady fields by the identity of their values (held with the
    memo, so no ``id`` is reused while remembered; equal Decimals may be written apart), the
    last four fields, strings, by value. The seven fields that change every time (id,
    amount, payout id, reserved, spendable, time, balance age) are written here as pydantic
    writes them (the balance age by pydantic itself). The line holds the same keys and
    values as ``DecisionRecord.to_json``'s, in another order. A record of another shape (a
    ``DecisionRecord`` or ``Decision`` subclass, amounts that are not Decimals, a time that
    is not a UTC datetime, an id that is not a string) is written by pydantic alone. Used
    by one writer thread at a time.
    """

    def __init__(self) -> None:
        self._balances: dict[int, tuple[object, bytes]] = {}
        self._steadies: dict[tuple[int, ...], tuple[tuple[object, ...], bytes]] = {}
        self._tails: dict[tuple[object, ...], bytes] = {}
        # The last record's steady fields and their JSON (none yet: values no decision
        # holds), the second its time fell in, and its last four fields and their JSON.
        self._steady: tuple[tuple[object, ...], bytes] = ((object(),) * len(_STEADY), b"")
        self._second = _second_of(datetime.min.replace(tzinfo=UTC))
        self._tail: tuple[tuple[object, ...] | None, bytes] = (None, b"")

    def lines(self, batch: list[DecisionRecord]) -> list[bytes]:
        """Return each record of *batch* as one line of JSON, without its newline."""
        if _PARTS is None:  # pragma: no cover - see _serializers
            return [_SERIALIZER.to_json(record) for record in batch]
        # One loop with its names at hand: it runs once per decision, on the GIL.
        balances, steadies, join, same = self._balances, self._steadies, b"".join, operator.is_
        steady_of, volatile_of = itemgetter(*_STEADY), itemgetter(*_VOLATILE)
        tail_of = itemgetter(*_TAIL)
        decimal, utc, quoted, age_json = Decimal, UTC, encode_basestring, _PARTS.balance_age.to_json
        steady, (start, end, second), (tail_key, tail) = self._steady, self._second, self._tail
        head = b'{"decision":{"balance":'
        lines: list[bytes] = []
        append = lines.append
        for record in batch:
            decision = record.decision
            if type(record) is not DecisionRecord or type(decision) is not Decision:
                append(_SERIALIZER.to_json(record))
                continue
            fields = decision.__dict__
            try:
                balance, values = fields["balance"], steady_of(fields)
                decision_id, amount, payout_id, reserved, spendable, at, age = volatile_of(fields)
            except KeyError:  # a field missing: pydantic says which
                append(_SERIALIZER.to_json(record))
                continue
            memo = balances.get(id(balance))
            if memo is None or memo[0] is not balance:
                memo = self._remember(balance)
            key = tail_of(record.__dict__)
            if key != tail_key:
                tail_key, tail = key, self._tails.get(key) or self._new_tail(record, key)
            if not (type(amount) is type(reserved) is type(spendable) is decimal
                    and type(at) is datetime and at.tzinfo is utc):
                append(self._whole(record, memo[1], tail))
                continue
            if not start <= at < end:
                start, end, second = self._second = _second_of(at)
            micro = at.microsecond
            try:
                if not all(map(same, values, steady[0])):
                    steady = steadies.get(tuple(map(id, values))) or self._new_steady(values)
                text = (
                    f',"decision_id":{quoted(decision_id)},"amount":"{amount!s}",'
                    f'"payout_id":{"null" if payout_id is None else quoted(payout_id)},'
                    f'"reserved":"{reserved!s}","spendable":"{spendable!s}","evaluated_at":'
                    f'"{second}{f".{micro:06d}" if micro else ""}Z","balance_age":'
                ).encode()
                line = join((head, memo[1], text, age_json(age), steady[1], tail))
            except (PydanticSerializationError, TypeError, UnicodeEncodeError):  # an odd id
                line = self._whole(record, memo[1], tail)
            append(line)
        self._steady, self._tail = steady, (tail_key, tail)
        return lines

    def _whole(self, record: DecisionRecord, balance: bytes, tail: bytes) -> bytes:
        """Return the line of a record whose decision pydantic serializes but its balance."""
        try:
            body = _PARTS.sans_balance.to_json(record.decision.__dict__)  # type: ignore[union-attr]  # not None: lines() checks
        except PydanticSerializationError:  # a field missing: pydantic says which
            return _SERIALIZER.to_json(record)
        return b"".join((b'{"decision":{"balance":', balance, b",", body[1:], tail))

    def _remember(self, balance: BalanceSnapshot | None) -> tuple[object, bytes]:
        if len(self._balances) >= _MEMO_SIZE:
            self._balances.clear()
        text = b"null" if balance is None else _BALANCE_SERIALIZER.to_json(balance)
        memo = self._balances[id(balance)] = (balance, text)
        return memo

    def _new_steady(self, values: tuple[object, ...]) -> tuple[tuple[object, ...], bytes]:
        if len(self._steadies) >= _MEMO_SIZE:
            self._steadies.clear()
        # After a comma, without its opening brace; with the decision's closing one.
        text = _PARTS.steady.to_json(dict(zip(_STEADY, values, strict=True)))  # type: ignore[union-attr]  # not None: lines() checks
        memo = self._steadies[tuple(map(id, values))] = (values, b"," + text[1:])
        return memo

    def _new_tail(self, record: DecisionRecord, key: tuple[object, ...]) -> bytes:
        if len(self._tails) >= _MEMO_SIZE:
            self._tails.clear()
        # The record's own fields after its decision, as pydantic writes them.
        whole = _SERIALIZER.to_json(record, exclude={"decision"})
        tail = self._tails[key] = b"," + whole[1:]
        return tail


@runtime_checkable
class DecisionLog(Protocol):
    """Where a guard sends a record of every decision (``decision_log=``).

    ``write`` is called on the decision's path: it must return at once and never raise (a
    guard counts and drops a record whose ``write`` raises anyway). ``close`` writes what is
    queued, within a bounded time.
    """

    def write(self, record: DecisionRecord) -> None:
        """Take *record* to be kept."""
        ...

    def close(self) -> None:
        """Write what is queued and release the sink's file."""
        ...


_RUNNING: weakref.WeakSet[_QueuedLog] = weakref.WeakSet()


@atexit.register
def _close_running() -> None:
    """At exit, write what the sinks still queue (a guard nobody closed loses nothing)."""
    for sink in list(_RUNNING):
        sink.close(timeout=2.0)


class _QueuedLog:
    """A sink that queues records and writes them in batches from its own daemon thread.

    Subclasses open their target (``_open``), write a batch (``_write_batch``) and close it
    (``_close_target``), all in the writer thread.
    """

    def __init__(self, *, max_pending: int) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(
                f"must be a whole number >= 1, got {str(max_pending)[:40]}", path="max_pending"
            )
        self.max_pending = max_pending
        self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[DecisionRecord | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._complained_at = -_COMPLAIN_EVERY
        # Records queued (numbered as they are) and records the writer is done with (written
        # or dropped): flush() waits for the second to reach the first.
        self._numbers = itertools.count(1)
        self._queued = 0
        self._done = 0
        self._encoder = _Encoder()  # used by the writer thread only

    def write(self, record: DecisionRecord) -> None:
        """Queue *record* for the writer thread; drop (and count) it when the queue is full."""
        if self._thread is None or self._pid != os.getpid():
            self._start()
        if self._closed or self._queue.qsize() >= self.max_pending:
            self._drop(1, "the queue is full" if not self._closed else "the log is closed")
            return
        self._queued = next(self._numbers)
        self._queue.put(record)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (or dropped); ``False`` on timeout."""
        if self._thread is None:
            return True
        wanted, deadline = self._queued, time.monotonic() + timeout
        while self._done < wanted:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most *timeout* seconds) and close the target."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is not None and self._pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            # A forked child has the parent's sink but not its thread: it starts its own
            # (and its own queue: records queued in the parent are the parent's to write).
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()
            self._numbers, self._queued, self._done = itertools.count(1), 0, 0
            self._thread = threading.Thread(
                target=self._run, name=f"payout-guard {type(self).__name__}", daemon=True
            )
            self._thread.start()
            _RUNNING.add(self)

    def _run(self) -> None:
        target: Any = None
        stop = False
        while not stop:
            batch: list[DecisionRecord] = []
            item = self._queue.get()
            if item is not None:
                # Linger a moment: records written in batches wake this thread (and take the
                # GIL from the checks) once per batch, not once per decision.
                time.sleep(_LINGER)
            while True:
                if item is None:
                    stop = True
                else:
                    batch.append(item)
                if len(batch) >= 4096:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    if target is None:
                        target = self._open()
                    self._write_batch(target, batch)
                except Exception as exc:  # noqa: BLE001 - a sink never fails a decision
                    self._drop(len(batch), type(exc).__name__)
                    self._discard(target)
                    target = None  # opened again for the next batch
            self._done += len(batch)
        self._discard(target)

    def _discard(self, target: Any) -> None:
        if target is not None:
            # Closing a target that may already have failed: nothing more to report.
            with contextlib.suppress(Exception):
                self._close_target(target)

    def _drop(self, count: int, why: str) -> None:
        with self._lock:
            self.dropped += count
            now = time.monotonic()
            complain = now - self._complained_at >= _COMPLAIN_EVERY
            if complain:
                self._complained_at = now
        on_dropped(count)
        if complain:
            _LOG.warning("payout_guard.decision_log_dropped", sink=type(self).__name__,
                         error=why, dropped_total=self.dropped)

    def _open(self) -> Any:
        raise NotImplementedError

    def _write_batch(self, target: Any, batch: list[DecisionRecord]) -> None:
        raise NotImplementedError

    def _close_target(self, target: Any) -> None:
        raise NotImplementedError


def on_dropped(count: int) -> None:
    """Count *count* dropped decision records (``payout_guard_decision_log_dropped_total``)."""
    for _ in range(count):
        decision_log_dropped()


_failed_at: dict[int, float] = {}


def write_failed(sink: object, exc: Exception) -> None:
    """Count a record a sink's ``write`` raised for; say so at most once a minute per sink."""
    on_dropped(1)
    now = time.monotonic()
    if now - _failed_at.get(id(sink), -_COMPLAIN_EVERY) >= _COMPLAIN_EVERY:
        _failed_at[id(sink)] = now
        _LOG.warning("payout_guard.decision_log_dropped", sink=type(sink).__name__,
                     error=type(exc).__name__)


class JsonLinesDecisionLog(_QueuedLog):
    """Keep every decision as one line of JSON in *path*, rotating it by size.

    Args:
        path: The file written (created with its directory when missing; appended to).
        max_bytes: Rotate before the file would exceed this size: *path* becomes
            ``path.1`` (``path.1`` becomes ``path.2``, ...); ``None`` never rotates.
        backups: How many rotated files are kept (the oldest is deleted).
        max_pending: Records queued at most while the writer catches up; beyond it they are
            dropped and counted, never waited for.

    Raises:
        ConfigurationError: an option is invalid.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = 100 * 1024 * 1024,
        backups: int = 5,
        max_pending: int = 10_000,
    ) -> None:
        super().__init__(max_pending=max_pending)
        if max_bytes is not None and (
            isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1024
        ):
            raise ConfigurationError(
                f"must be a whole number of bytes >= 1024, or None, got {str(max_bytes)[:40]}",
                path="max_bytes",
            )
        if isinstance(backups, bool) or not isinstance(backups, int) or backups < 1:
            raise ConfigurationError(
                f"must be a whole number >= 1, got {str(backups)[:40]}", path="backups"
            )
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: Any = None
        self._size = 0

    def __repr__(self) -> str:
        return f"JsonLinesDecisionLog({str(self.path)!r}, max_bytes={self.max_bytes})"

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered, one write() per batch: processes appending to one file (O_APPEND) never
        # interleave inside a line.
        self._file = self.path.open("ab", buffering=0)
        self._size = os.fstat(self._file.fileno()).st_size  # counted, not tell(): a pipe works
        return self._file

    def _write_batch(self, target: Any, batch: list[DecisionRecord]) -> None:  # noqa: ARG002
        lines = self._encoder.lines(batch)
        total = sum(map(len, lines)) + len(lines)
        if self.max_bytes is None or self._size + total <= self.max_bytes:
            self._append(b"\n".join(lines) + b"\n")  # the common case: no rotation, one write
            return
        chunk: list[bytes] = []
        size = self._size
        for text in lines:
            line = text + b"\n"
            if self.max_bytes is not None and size and size + len(line) > self.max_bytes:
                self._append(b"".join(chunk))
                chunk, size = [], 0
                # The file of the moment is replaced: later lines go to a new one.
                self._file.close()
                self._rotate()
                self._file = self.path.open("ab", buffering=0)
                self._size = 0
            chunk.append(line)
            size += len(line)
        self._append(b"".join(chunk))

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:  # a short write (a full pipe, a signal) goes on where it stopped
            written = self._file.write(view)
            view = view[written:]
        self._size += len(data)

    def _rotate(self) -> None:
        name = self.path.name
        self.path.with_name(f"{name}.{self.backups}").unlink(missing_ok=True)
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{name}.1"))

    def _close_target(self, target: Any) -> None:  # noqa: ARG002
        self._file.close()


# Row by row, the columns filled by the writer: SQLite reading them out of one JSON array per
# batch held the GIL less but cost more CPU in all (measured with callgrind).
_INSERT_ROW = "INSERT OR REPLACE INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"


class SqliteDecisionLog(_QueuedLog):
    """Keep every decision as a row of a SQLite database at *path* (table ``decisions``).

    Columns: ``decision_id`` (primary key), ``evaluated_at`` (ISO 8601, UTC), ``operation``,
    ``provider``, ``currency``, ``allowed`` (0/1), ``codes`` (comma-separated), ``payout_id``
    and ``record`` (the ``DecisionRecord`` as JSON): query it with any SQLite client.

    Args:
        path: The database file (created when missing).
        max_pending: As for :class:`JsonLinesDecisionLog`.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pending: int = 10_000) -> None:
        super().__init__(max_pending=max_pending)
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SqliteDecisionLog({str(self.path)!r})"

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT PRIMARY KEY, "
            "evaluated_at TEXT NOT NULL, operation TEXT NOT NULL, provider TEXT NOT NULL, "
            "currency TEXT NOT NULL, allowed INTEGER NOT NULL, codes TEXT NOT NULL, "
            "payout_id TEXT, record TEXT NOT NULL)"
        )
        return conn

    def _write_batch(self, target: Any, batch: list[DecisionRecord]) -> None:
        lines = self._encoder.lines(batch)
        target.execute("BEGIN IMMEDIATE")
        try:
            target.executemany(_INSERT_ROW, [
                (r.decision.decision_id, r.decision.evaluated_at.isoformat(), r.operation,
                 r.decision.provider, r.decision.currency, int(r.decision.allowed),
                 ",".join(r.decision.codes), r.decision.payout_id, line.decode())
                for r, line in zip(batch, lines, strict=True)
            ])
        except BaseException:
            target.execute("ROLLBACK")
            raise
        target.execute("COMMIT")

    def _close_target(self, target: Any) -> None:
        target.close()


def count_decisions(path: str | os.PathLike[str]) -> int:
    """Return how many records the decision log at *path* holds (lines, or rows)."""
    file = Path(path)
    if _is_sqlite(file):
        conn = _readonly(file)
        try:
            (count,) = conn.execute("SELECT count(*) FROM decisions").fetchone()
            return int(count)
        finally:
            conn.close()
    with file.open("rb") as f:
        return sum(1 for line in f if line.strip())


def read_decisions(path: str | os.PathLike[str]) -> Iterator[DecisionRecord]:
    """Yield the records of the decision log at *path*, oldest first.

    *path* is a file written by :class:`JsonLinesDecisionLog` (rotated files are read one
    by one: pass each) or a :class:`SqliteDecisionLog` database.

    Raises:
        GuardError: *path* cannot be read, or a line is not a decision record (naming the
            line).
    """
    file = Path(path)
    try:
        if _is_sqlite(file):
            yield from _sqlite_records(file)
            return
        with file.open("rb") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield DecisionRecord.model_validate_json(line)
                except ValidationError as exc:
                    shown = line[:60].decode(errors="replace")
                    raise GuardError(
                        f"{file}:{number} is not a decision record "
                        f"({exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}); "
                        f"the line starts {shown!r}"
                    ) from None
    except OSError as exc:
        raise GuardError(f"cannot read the decision log {file}: {exc.strerror}") from None


def _is_sqlite(file: Path) -> bool:
    with file.open("rb") as f:
        return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC


def _readonly(file: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)


def _sqlite_records(file: Path) -> Iterator[DecisionRecord]:
    conn = _readonly(file)
    try:
        rows = conn.execute("SELECT decision_id, record FROM decisions ORDER BY rowid")
        for decision_id, text in rows:
            try:
                yield DecisionRecord.model_validate_json(text)
            except ValidationError:
                raise GuardError(
                    f"{file}: the row of decision {str(decision_id)[:40]!r} is not a decision "
                    f"record"
                ) from None
    except sqlite3.Error as exc:
        raise GuardError(f"cannot read the decision log {file}: {exc}") from None
    finally:
        conn.close()
