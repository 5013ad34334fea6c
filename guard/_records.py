"""Decision records and the sinks that keep them: every decision, with the facts it was made on.

A ``DecisionRecord`` is a ``Decision`` (the request, the balance, the held total, the balance's
age and source, our own payouts in flight, reasons with messages, warnings, ``max_payable`` and
the routing candidates, each with its own facts) plus what it was decided by: the rules'
fingerprint and the library's version. ``payout-guard replay`` judges records again with other
rules (``guard/_replay.py``).

A sink (``decision_log=`` on a guard) takes records on the decision's path and must never block
or fail it: ``JsonLinesDecisionLog`` and ``SqliteDecisionLog`` queue each record (a few hundred
nanoseconds) and write from a thread of their own. A write that fails (a full disk, a locked
database) is tried again, with backoff, until it succeeds: each record is written exactly once
(``_QueuedLog._written``). A full queue drops records, counts them (``dropped``) and says so in
the log at most once a minute; so does a log closed while its writes still fail. The writer
thread shares the interpreter lock with the checks, so what it does per record is kept small:
what repeats (a cached balance, the steady fields) is serialized once for all the decisions
that share it and the rest is written by hand (``_Encoder``), and SQLite fills its columns in
one statement per batch. What waits in the queue is a record's plain values, not the record:
the garbage collector walks a waiting record's objects at each collection (see ``_Prepared``).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import hashlib
import json
import os
import queue
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
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

from guard._models import BalanceSnapshot, Decision, built
from guard._seconds import seconds
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
# Seconds the writer waits before it writes a failed batch again, doubled after each failure
# up to the longest wait (a full disk or a locked database is seldom cleared at once).
_RETRY_FIRST = 0.1
_RETRY_LONGEST = 5.0


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


def _serializer_of(model: type[BaseModel], make: Any) -> SchemaSerializer | None:
    """Return a serializer of what ``make(fields' schemas)`` describes, in *model*'s terms.

    It is pydantic's own schema of each of *model*'s fields (the same JSON for each) with
    *model*'s config and definitions; ``None`` when *model*'s schema is not of the shape
    expected.
    """
    schema: Any = copy.deepcopy(model.__pydantic_core_schema__)
    inner = schema["schema"] if schema["type"] == "definitions" else schema
    fields = inner.get("schema", {}).get("fields")
    if inner["type"] != "model" or not isinstance(fields, dict):
        return None  # pragma: no cover - pydantic's schema of a model with fields has them
    try:
        made = make(fields)
    except KeyError:  # pragma: no cover - a field the model no longer has
        return None
    if schema["type"] == "definitions":
        schema["schema"] = made
    else:
        schema = made
    return SchemaSerializer(schema, inner.get("config"))


def _fields_serializer(model: type[BaseModel], names: tuple[str, ...]) -> SchemaSerializer | None:
    """Return a serializer of a dict of *names* (*model*'s fields), as a typed dict."""
    return _serializer_of(model, lambda fields: {
        "type": "typed-dict",
        "total": True,
        "fields": {
            name: {"type": "typed-dict-field", "schema": fields[name]["schema"], "required": True}
            for name in names
        },
    })


_DECISION_FIELDS = tuple(Decision.model_fields)
# A decision's fields but its balance, in the order ``_Encoder.text`` unpacks them: the writer
# is given their values as one tuple in this order (and the balance as JSON). Without the
# balance (a model), the tuple holds plain values only: the garbage collector stops walking
# it at the first collection it meets.
_READ_ORDER = (
    "decision_id", "allowed", "mode", "amount", "currency", "fee", "provider", "account",
    "payout_id", "reasons", "warnings", "reserved", "reserve", "spendable", "max_payable",
    "holds", "more_holds", "candidates", "evaluated_at", "balance_age", "balance_source",
    "own_in_flight",
)
# A decision's fields that change from one decision to the next, written by _Encoder as
# pydantic writes them; the others repeat (the steady ones, in the order ``text`` names
# them), and pydantic writes them once for all the decisions that share them.
_VOLATILE = (
    "decision_id", "amount", "payout_id", "reserved", "spendable", "evaluated_at", "balance_age",
)
_STEADY = tuple(name for name in _READ_ORDER if name not in {"balance", *_VOLATILE})
# The record's own fields after its decision (they repeat too).
_TAIL = ("operation", "provider_asked", "rules_fingerprint", "version")


class _Serializers(NamedTuple):
    """Pydantic's serializers of parts of a ``Decision``, each field as pydantic writes it."""

    sans_balance: SchemaSerializer
    steady: SchemaSerializer
    # A list of balance ages: one call for a batch's, each written as ``balance_age`` is.
    balance_ages: SchemaSerializer
    tail: SchemaSerializer


def _serializers() -> _Serializers | None:
    sans_balance = _fields_serializer(Decision, tuple(n for n in _DECISION_FIELDS
                                                      if n != "balance"))
    steady = _fields_serializer(Decision, _STEADY)
    balance_ages = _serializer_of(Decision, lambda fields: {
        "type": "list", "items_schema": fields["balance_age"]["schema"],
    })
    tail = _fields_serializer(DecisionRecord, _TAIL)
    if sans_balance is None or steady is None or balance_ages is None or tail is None:
        return None  # pragma: no cover - see _serializer_of
    return _Serializers(sans_balance, steady, balance_ages, tail)


_PARTS = _serializers()
_TAIL_OF = itemgetter(*_TAIL)
_VALUES_OF = itemgetter(*_READ_ORDER)
_FIELD_COUNT = len(_DECISION_FIELDS)
# Where the writer finds these fields in a prepared record's values (see _Prepared).
_AGE, _ID, _AT, _PAYOUT_ID = map(
    _READ_ORDER.index, ("balance_age", "decision_id", "evaluated_at", "payout_id")
)
# What the writer of a decision log is given of a record: its balance's JSON (made once
# for all the decisions on the balance), its decision's values (in ``_READ_ORDER``) and its
# tail's; or the record itself when it is of another shape (a subclass, a field missing).
# A record waiting in the queue is a few objects the garbage collector walks
# at each collection, and moves to its older generations, which then are walked more often
# (at full speed collections are rare: 7 to 12 in 20,000 checks); a tuple of plain values
# is untracked at the first collection it meets.
_Prepared = tuple[str, tuple[Any, ...], tuple[Any, ...]]
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
    decisions are made on one cached balance: the sink gives its JSON, made once), its
    steady fields (mode, currency, fee, the reserve, ``max_payable``, empty reasons, ...)
    and its own last four fields (operation, provider asked, rules fingerprint, version).
    Pydantic serializes each once, and it is remembered: steady fields by the identity of
    their values (held with the memo, so no ``id`` is reused while remembered; equal
    Decimals of other exponents are written apart; the last record's are compared one by
    one, the cheapest test), the last four, strings, by value. The
    seven fields that change every time (id, amount, payout id, reserved, spendable, time,
    balance age) are written here as pydantic writes them (the balance ages by pydantic
    itself, a batch's in one call). A batch is written as one text, its lines' pieces
    joined once. The line holds the same keys and values as ``DecisionRecord.to_json``'s, in
    another order. A record of another shape (amounts that are not Decimals, a time that is
    not a UTC datetime, an id that is not a string, a record or decision subclass) is
    written by pydantic alone. Used by one writer thread at a time.
    """

    def __init__(self) -> None:
        self._steadies: dict[tuple[int, ...], tuple[tuple[object, ...], str]] = {}
        self._tails: dict[tuple[object, ...], str] = {}
        # The last record's steady fields and their JSON (none yet: values no decision
        # holds), the second its time fell in, and its last four fields and their JSON.
        self._steady: tuple[tuple[Any, ...], str] = ((object(),) * len(_STEADY), "")
        self._second = _second_of(datetime.min.replace(tzinfo=UTC))
        self._tail: tuple[tuple[object, ...] | None, str] = (None, "")

    def text(self, batch: list[_Prepared | DecisionRecord]) -> str:
        """Return the records of *batch* as lines of JSON, each ending in a newline."""
        parts = _PARTS
        if parts is None:  # pragma: no cover - see _serializers
            return "".join(f"{_SERIALIZER.to_json(_record_of(item)).decode()}\n"
                           for item in batch)
        # One loop with its names at hand: it runs once per decision, on the GIL.
        steadies, decimal, utc, quoted = self._steadies, Decimal, UTC, encode_basestring
        (known, steady), (start, end, second) = self._steady, self._second
        tail_key, tail = self._tail
        (s_allowed, s_mode, s_currency, s_fee, s_provider, s_account, s_reasons, s_warnings,
         s_reserve, s_max_payable, s_holds, s_more_holds, s_candidates, s_source,
         s_own) = known  # in _STEADY's order
        head = '{"decision":{"balance":'
        pieces: list[str] = []
        extend = pieces.extend
        for item, age in zip(batch, self._ages(batch), strict=True):
            if type(item) is not tuple:  # a record of another shape: pydantic writes it
                extend((_SERIALIZER.to_json(item).decode(), "\n"))
                continue
            balance, values, key = item
            if key != tail_key:  # strings and None: equal, the same JSON
                tail_key, tail = key, self._tails.get(key) or self._new_tail(key)
            (decision_id, allowed, mode, amount, currency, fee, provider, account, payout_id,
             reasons, warnings, reserved, reserve, spendable, max_payable, holds, more_holds,
             candidates, at, _, source, own) = values  # in _READ_ORDER
            if not (type(amount) is type(reserved) is type(spendable) is decimal
                    and type(at) is datetime and at.tzinfo is utc and age is not None
                    and type(decision_id) is str):
                extend((self._whole(item), tail))
                continue
            if not start <= at < end:
                start, end, second = self._second = _second_of(at)
            micro = at.microsecond
            if not (allowed is s_allowed and mode is s_mode and currency is s_currency
                    and fee is s_fee and provider is s_provider and account is s_account
                    and reasons is s_reasons and warnings is s_warnings
                    and reserve is s_reserve and max_payable is s_max_payable
                    and holds is s_holds and more_holds is s_more_holds
                    and candidates is s_candidates and source is s_source and own is s_own):
                fields = (allowed, mode, currency, fee, provider, account, reasons, warnings,
                          reserve, max_payable, holds, more_holds, candidates, source, own)
                known, steady = steadies.get(tuple(map(id, fields))) or self._new_steady(fields)
                (s_allowed, s_mode, s_currency, s_fee, s_provider, s_account, s_reasons,
                 s_warnings, s_reserve, s_max_payable, s_holds, s_more_holds, s_candidates,
                 s_source, s_own) = known
            try:
                extend((head, balance, (
                    f',"decision_id":{quoted(decision_id)},"amount":"{amount!s}",'
                    f'"payout_id":{"null" if payout_id is None else quoted(payout_id)},'
                    f'"reserved":"{reserved!s}","spendable":"{spendable!s}","evaluated_at":'
                    f'"{second}{".%06d" % micro if micro else ""}Z","balance_age":{age}'  # noqa: UP031 - % is half a format spec's cost here
                ), steady, tail))
            except TypeError:  # a payout id that is not a string
                extend((self._whole(item), tail))
        self._steady, self._tail = (known, steady), (tail_key, tail)
        return "".join(pieces)

    @staticmethod
    def _ages(batch: list[_Prepared | DecisionRecord]) -> Sequence[str | None]:
        """Return the JSON of the balance age of each of *batch*'s prepared records.

        Pydantic writes them in one call, as it writes each; ``None`` for a record that is
        not prepared, or whose age pydantic could not write alone.
        """
        ages = [item[1][_AGE] if type(item) is tuple else None for item in batch]
        try:
            texts = _PARTS.balance_ages.to_json(ages).decode()[1:-1].split(",")  # type: ignore[union-attr]  # not None: text() checks
        except PydanticSerializationError:
            texts = []
        if len(texts) == len(ages):  # a number or null: no commas of its own
            return texts
        return [_age_json(age) for age in ages]

    def _whole(self, item: _Prepared) -> str:
        """Return a record's line but its tail: pydantic serializes its decision but its balance."""
        balance, values, _ = item
        fields = dict(zip(_READ_ORDER, values, strict=True))
        body = _PARTS.sans_balance.to_json(fields).decode()  # type: ignore[union-attr]  # not None: text() checks
        return f'{{"decision":{{"balance":{balance},{body[1:]}'

    def _new_steady(self, values: tuple[object, ...]) -> tuple[tuple[object, ...], str]:
        if len(self._steadies) >= _MEMO_SIZE:
            self._steadies.clear()
        # After a comma, without its opening brace; with the decision's closing one.
        text = _PARTS.steady.to_json(dict(zip(_STEADY, values, strict=True)))  # type: ignore[union-attr]  # not None: text() checks
        memo = self._steadies[tuple(map(id, values))] = (values, f",{text[1:].decode()}")
        return memo

    def _new_tail(self, key: tuple[object, ...]) -> str:
        if len(self._tails) >= _MEMO_SIZE:
            self._tails.clear()
        # The record's own fields after its decision, as pydantic writes them, and the
        # line's end.
        whole = _PARTS.tail.to_json(dict(zip(_TAIL, key, strict=True)))  # type: ignore[union-attr]  # not None: text() checks
        tail = self._tails[key] = f",{whole[1:].decode()}\n"
        return tail


def _age_json(age: object) -> str | None:
    """Return pydantic's JSON of one balance age; ``None`` when it cannot write it."""
    try:
        return _PARTS.balance_ages.to_json([age]).decode()[1:-1]  # type: ignore[union-attr]  # not None: text() checks
    except PydanticSerializationError:
        return None


def _record_of(item: _Prepared | DecisionRecord) -> DecisionRecord:
    """Return the record *item* was prepared from (see ``_prepared``), built again."""
    if not isinstance(item, tuple):
        return item
    text, values, key = item
    fields = dict(zip(_READ_ORDER, values, strict=True))
    fields["balance"] = None if text == "null" else BalanceSnapshot.model_validate_json(text)
    decision = built(Decision, {name: fields[name] for name in _DECISION_FIELDS})
    return built(DecisionRecord, {"decision": decision, **dict(zip(_TAIL, key, strict=True))})


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
# What a writer thread's queue holds: records, ``None`` (closed: write the rest and stop)
# and a flush's event (set once what was queued before it is written).
_Item = Any  # _Prepared | DecisionRecord | threading.Event | None; mypy: no recursion
# Records written at most in one batch.
_BATCH = 4096


@atexit.register
def _close_running() -> None:
    """At exit, write what the sinks still queue (a guard nobody closed loses nothing)."""
    for sink in list(_RUNNING):
        sink.close(timeout=2.0)


# The SQLite logs whose writers the forking thread holds still across its fork()
# (thread-local: two threads may fork at once, and then take turns).
_FORKING = threading.local()


def _before_fork() -> None:
    """Hold every SQLite log's writer between batches while the process forks.

    The child then inherits each one's connection idle, and can close it (``_forked``): a
    connection it opened next to an inherited one would take no file locks of its own. A
    writer holds this only while it runs SQLite, so this waits milliseconds; a writer still
    inside SQLite after the log's timeout is left, and the child drops that log's records.
    """
    _FORKING.held = [sink for sink in sorted(_RUNNING, key=id)
                     if isinstance(sink, SqliteDecisionLog)
                     and sink._writing.acquire(timeout=sink.timeout)]


def _after_fork_in_parent() -> None:
    """Let the parent's writers go on (``_before_fork``)."""
    held, _FORKING.held = getattr(_FORKING, "held", []), []
    for sink in held:
        sink._writing.release()


def _forget_writers() -> None:
    """In a forked child, forget the parent's writer threads: none of them runs here."""
    held, _FORKING.held = getattr(_FORKING, "held", []), []
    for sink in list(_RUNNING):
        sink._forked(idle=any(sink is quiet for quiet in held))


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_forget_writers)


class _QueuedLog:
    """A sink that queues records and writes them in batches from its own daemon thread.

    Subclasses open their target (``_open``), write a batch (``_write_batch``) and close it
    (``_close_target``), all in the writer thread; a batch whose write failed with one of
    ``_TRANSIENT`` is written again (see ``_written``), so a subclass's ``_write_batch``
    leaves none of it behind when it fails, or knows where to go on from. A forked child
    starts a writer of its own on its first record (and a queue of its own: records queued
    in the parent are the parent's to write).
    """

    # What a failed write raises that writing again may cure (a full disk, a lock); anything
    # else (a record the target refuses) would fail every time: its batch is dropped.
    _TRANSIENT: tuple[type[Exception], ...] = (OSError,)

    def __init__(self, *, max_pending: int) -> None:
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(
                f"must be a whole number >= 1, got {str(max_pending)[:40]}", path="max_pending"
            )
        self.max_pending = max_pending
        self.dropped = 0
        # How many records the queue takes: max_pending less the batch held while its write
        # is tried again, so that what waits stays within max_pending.
        self._room = max_pending
        self._lock = threading.Lock()
        # Held by the writer while it opens, writes or closes its target (see _before_fork).
        self._writing = threading.Lock()
        # The writer's queue: None until the writer runs, and once the log is closed.
        self._queue: queue.SimpleQueue[_Item] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._complained_at = -_COMPLAIN_EVERY
        self._failed_at = -_COMPLAIN_EVERY
        # Set by close: a writer waiting to write a failed batch again tries at once, and
        # stops trying at the close's deadline (never, until the log is closed).
        self._wake = threading.Event()
        self._deadline = float("inf")  # money-ok: seconds
        self._given_up = False  # closed, its deadline passed, a write failed: drop the rest
        # Flushes waiting: while there are none, the writer need not look for their events.
        self._flushes = 0
        # The balances of recent records, with their JSON, and the last one: any thread
        # adds to them.
        self._balances: dict[int, tuple[object, str]] = {}
        self._balance: tuple[object, str] = (object(), "")
        self._encoder = _Encoder()  # used by the writer thread only

    def write(self, record: DecisionRecord) -> None:
        """Queue *record* for the writer thread; drop (and count) it when the queue is full."""
        pending = self._queue
        if pending is None or pending.qsize() >= self._room:
            self._refuse(record)
            return
        pending.put(self._prepared(record))

    def write_decision(
        self,
        decision: Decision,
        operation: Operation,
        provider_asked: str | None,
        rules_fingerprint: str,
        version: str,
    ) -> None:
        """Queue the record of *decision* made of these fields, without building it.

        What ``write(DecisionRecord(decision=decision, operation=operation, ...))`` does,
        for less: a guard calls it when its sink has it.
        """
        pending = self._queue  # on every decision's path: no record built
        if pending is not None and pending.qsize() < self._room and (
            type(decision) is Decision
        ):
            values = self._values(decision.__dict__, (
                operation, provider_asked, rules_fingerprint, version,
            ))
            if values is not None:
                pending.put(values)
                return
        self.write(built(DecisionRecord, {
            "decision": decision, "operation": operation, "provider_asked": provider_asked,
            "rules_fingerprint": rules_fingerprint, "version": version,
        }))

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued record is written (or dropped); ``False`` on timeout.

        While writes fail (and are tried again), what is queued is not written: ``False``
        after *timeout* seconds.
        """
        with self._lock:
            pending, thread = self._queue, self._thread
            if pending is not None:
                self._flushes += 1
        if thread is None:
            return True
        if pending is None:  # closed: the writer writes the rest and stops
            thread.join(timeout)
            return not thread.is_alive()
        done = threading.Event()
        pending.put(done)
        return done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (waiting at most *timeout* seconds) and close the target.

        A write failing at the time is tried again at once, then with backoff, until
        *timeout* has passed; from then on a write that fails is not tried again: what is
        left is dropped and counted (by the time the writer stops: ``flush()`` after
        ``close()`` waits for it), and the writer stops.
        """
        with self._lock:
            if self._closed:
                return
            self._deadline = time.monotonic() + timeout
            self._closed = True
            pending, thread = self._queue, self._thread
            self._queue = None
        self._wake.set()
        if pending is not None and thread is not None:
            pending.put(None)
            thread.join(timeout)

    def _refuse(self, record: DecisionRecord) -> None:
        """Queue *record* once the writer runs; drop it if the log is closed or full."""
        with self._lock:
            if self._queue is None and not self._closed:
                self._start()
            pending = self._queue
        if pending is not None and pending.qsize() < self._room:
            pending.put(self._prepared(record))
            return
        self._drop(1, "the log is closed" if self._closed else "the queue is full")

    def _prepared(self, record: DecisionRecord) -> _Prepared | DecisionRecord:
        """Return what the writer is given of *record* (see ``_Prepared``)."""
        if type(record) is DecisionRecord and type(record.decision) is Decision:
            values = self._values(record.decision.__dict__, _TAIL_OF(record.__dict__))
            if values is not None:
                return values
        return record

    def _values(self, fields: dict[str, Any], tail: tuple[Any, ...]) -> _Prepared | None:
        """Return what the writer is given of a decision's *fields* and its record's *tail*.

        ``None`` when a field is missing or of another name: pydantic then says which.
        """
        if len(fields) != _FIELD_COUNT:
            return None
        try:
            values = _VALUES_OF(fields)
        except KeyError:
            return None
        balance = fields["balance"]
        known = self._balance
        if known[0] is not balance:
            known = self._remember(balance)
        return (known[1], values, tail)

    def _remember(self, balance: BalanceSnapshot | None) -> tuple[object, str]:
        """Return *balance* and its JSON, remembered (with it: its ``id`` is not reused).

        The last one is at hand (``_balance``: most decisions are made on the balance the
        one before was), the others by ``id``.
        """
        known = self._balances.get(id(balance))
        if known is None or known[0] is not balance:
            if len(self._balances) >= _MEMO_SIZE:
                self._balances.clear()
            text = "null" if balance is None else _BALANCE_SERIALIZER.to_json(balance).decode()
            known = self._balances[id(balance)] = (balance, text)
        self._balance = known  # one tuple: a thread never sees a balance with another's JSON
        return known

    def _start(self) -> None:
        pending: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, args=(pending,), name=f"payout-guard {type(self).__name__}",
            daemon=True,
        )
        self._thread.start()
        self._queue = pending
        _RUNNING.add(self)

    def _forked(self, *, idle: bool) -> None:  # noqa: ARG002 - SqliteDecisionLog's concern
        """Start afresh in a forked child; *idle*: no writer was inside its target at the fork."""
        self._lock, self._writing = threading.Lock(), threading.Lock()
        self._queue, self._thread, self._flushes = None, None, 0
        # The parent's writer holds its failed batch (and knows how much of it is written),
        # not this process's.
        self._room, self._wake = self.max_pending, threading.Event()
        self._abandon()

    def _run(self, pending: queue.SimpleQueue[_Item]) -> None:
        target: Any = None
        get, take, size = pending.get, pending.get_nowait, pending.qsize
        closing = False
        while not closing or size():
            first = get()
            if type(first) is not threading.Event and first is not None and not closing:
                # Linger a moment: records written in batches wake this thread (and take the
                # GIL from the checks) once per batch, not once per decision.
                time.sleep(_LINGER)
            # This thread alone takes from the queue: what it holds now is there to take.
            batch: list[Any] = [first, *[take() for _ in range(min(size(), _BATCH - 1))]]
            done: list[threading.Event] = []
            if self._flushes or self._closed:  # an event or the end may be in the batch
                records = []
                for item in batch:
                    if item is None:
                        closing = True
                    elif type(item) is threading.Event:
                        done.append(item)
                    else:
                        records.append(item)
                batch = records
            if batch:
                target = self._written(target, batch)
            for event in done:
                with self._lock:
                    self._flushes -= 1
                event.set()
        self._discard(target)

    def _written(self, target: Any, batch: list[_Prepared | DecisionRecord]) -> Any:
        """Write *batch* to *target* (opened when ``None``); return the target to write to next.

        A record that cannot be written as UTF-8 JSON (a lone surrogate in a record of one's
        own, a field pydantic cannot serialize) is dropped alone: the batch is encoded again
        one record at a time and the others are written. A write that fails with one of
        ``_TRANSIENT`` (a full disk, a file too large, a locked database) is tried again
        after 0.1 s, then after twice as long each time up to 5 s, on a target opened again,
        until it succeeds: the subclass leaves nothing of a failed attempt behind (or goes on
        where it stopped), so each record is written once. Meanwhile the writer takes no
        more from the queue, and the batch counts against ``max_pending`` (``_room``):
        records beyond it are dropped by ``write`` as from a full queue. Once the log is
        closed and its close's deadline has passed, a failed write is not tried again: the
        batch is dropped (and counted), and so is every record after it. Any other failure
        drops the batch at once (writing it again would fail again).
        """
        try:
            text = self._encoder.text(batch)
            if not text.isascii():  # O(1): only text that is not ASCII can fail to encode
                text.encode()
        except Exception:  # noqa: BLE001 - which record failed is found below
            batch, text = self._encodable(batch)
            if not batch:
                return target
        if self._given_up:
            self._drop(len(batch), "the log is closed")
            return target
        failures, wait, since, why = 0, _RETRY_FIRST, 0.0, ""
        while True:
            try:
                with self._writing:
                    if target is None:
                        target = self._open()
                    self._write_batch(target, batch, text)
            except Exception as exc:  # noqa: BLE001 - a sink never fails a decision
                self._discard(target)
                target, why = None, type(exc).__name__
                if not failures:
                    since = time.monotonic()
                    self._room = self.max_pending - len(batch)
                failures += 1
                if isinstance(exc, self._TRANSIENT):
                    self._failing(exc, len(batch), wait)
                    if self._waited(wait):
                        wait = min(wait * 2, _RETRY_LONGEST)
                        continue
                    self._given_up = True
                self._room = self.max_pending
                self._abandon()
                self._drop(len(batch), why)
                return None
            if failures:
                self._room = self.max_pending
                _logged(_LOG.info, "payout_guard.decision_log_recovered",
                        sink=type(self).__name__, written_late=len(batch),
                        failed_attempts=failures, error=why,
                        failed_for=round(time.monotonic() - since, 3))
            return target

    def _waited(self, wait: float) -> bool:
        """Wait *wait* seconds to write a failed batch again; ``False``: do not (closed, late).

        ``close`` ends the wait at once (its last chance to write); its deadline ends
        every wait, with ``False``.
        """
        left = self._deadline - time.monotonic()
        if left > 0 and self._wake.wait(min(wait, left)):
            self._wake.clear()  # close has said so: what it says stays in _deadline
        return time.monotonic() < self._deadline

    def _failing(self, exc: Exception, held: int, wait: float) -> None:
        """Say that a write failed and will be tried again (at most once a minute)."""
        now = time.monotonic()
        if now - self._failed_at >= _COMPLAIN_EVERY:
            self._failed_at = now
            _logged(_LOG.warning, "payout_guard.decision_log_write_failed",
                    sink=type(self).__name__, error=type(exc).__name__, message=str(exc)[:200],
                    held=held, retry_in=wait)

    def _encodable(
        self, batch: list[_Prepared | DecisionRecord]
    ) -> tuple[list[_Prepared | DecisionRecord], str]:
        """Return the records of *batch* that encode, and their text; drop (and count) the rest."""
        kept: list[_Prepared | DecisionRecord] = []
        lines: list[str] = []
        for item in batch:
            try:
                line = self._encoder.text([item])
                if not line.isascii():
                    line.encode()
            except Exception as exc:  # noqa: BLE001 - a sink never fails a decision
                self._drop(1, type(exc).__name__)
                continue
            kept.append(item)
            lines.append(line)
        return kept, "".join(lines)

    def _discard(self, target: Any) -> None:
        if target is not None:
            # Closing a target that may already have failed: nothing more to report.
            with self._writing, contextlib.suppress(Exception):
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
            _logged(_LOG.warning, "payout_guard.decision_log_dropped", sink=type(self).__name__,
                    error=why, dropped_total=self.dropped)

    def _open(self) -> Any:
        raise NotImplementedError

    def _write_batch(
        self, target: Any, batch: list[_Prepared | DecisionRecord], text: str
    ) -> None:
        """Write *batch*, whose JSON lines are *text* (each ending in a newline), to *target*.

        Called again with the same batch after it raised: what one call wrote before it
        failed must not be written twice.
        """
        raise NotImplementedError

    def _abandon(self) -> None:
        """Forget what is known of the batch whose write failed: it is dropped."""

    def _close_target(self, target: Any) -> None:
        raise NotImplementedError


def _logged(log: Callable[..., object], event: str, **fields: object) -> None:
    """Log *event*; a logger that fails (its own file on the disk that filled) stops no writer."""
    with contextlib.suppress(Exception):
        log(event, **fields)


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
        max_pending: Records queued at most while the writer catches up (or waits to
            write again a batch whose write failed: the batch counts too); beyond it they
            are dropped and counted, never waited for.

    A write that fails (a full disk, a file too large) leaves no torn line: the line it
    was writing is cut off the file, and the batch is written again, from that line, once
    the file takes it; the lines before it stay, written once. When the cut itself fails
    (a file that can only grow: ``chattr +a``, a sealed memfd), the next attempt writes the
    rest of that line first, completing it. When the file was changed meanwhile (another
    process appended to it, it was replaced), or the log was closed before the line could be
    completed, the next write starts on a fresh line (and writes the line whole): the torn
    start is then a line of its own, the one case where a line does not parse.

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
        # Of a batch whose write failed: how many bytes of its text the log holds (whole
        # lines, and the start of a torn line while _torn is set), and the torn line that
        # could not be cut: the file it ends (device, inode), where it ends, its length.
        self._done = 0
        self._torn: tuple[int, int, int, int] | None = None

    def __repr__(self) -> str:
        return f"JsonLinesDecisionLog({str(self.path)!r}, max_bytes={self.max_bytes})"

    def _open(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Unbuffered, one write() per batch: processes appending to one file (O_APPEND) never
        # interleave inside a line.
        self._file = self.path.open("ab", buffering=0)
        status = os.fstat(self._file.fileno())
        self._size = status.st_size  # counted, not tell(): a pipe works
        if self._torn is None and self._size and stat.S_ISREG(status.st_mode):
            # A file we may not read is written as it ends.
            with contextlib.suppress(OSError), self.path.open("rb") as file:
                file.seek(self._size - 1)
                if file.read(1) != b"\n":
                    # A line without its end (a write that failed and could not be cut, in
                    # a log closed since): the first record goes on a fresh line, not on it.
                    self._torn = (-1, -1, -1, 0)
        return self._file

    def _write_batch(
        self,
        target: Any,  # noqa: ARG002 - self._file: replaced as the file rotates
        batch: list[_Prepared | DecisionRecord],  # noqa: ARG002 - text holds it
        text: str,
    ) -> None:
        data = text.encode()
        try:
            if self._torn is not None:
                self._mend(self._torn)
            self._write_from(data)
        except Exception:
            self._cut(data)
            raise
        self._done = 0

    def _write_from(self, data: bytes) -> None:
        """Write *data* from ``_done`` on, rotating the file before it would pass max_bytes."""
        done = self._done
        if done and data[done - 1] != ord("\n"):
            # A torn line's start is in the file (it could not be cut): its rest goes after it.
            done = data.index(b"\n", done) + 1
            self._append(data[self._done:done])
        if self.max_bytes is None or self._size + len(data) - done <= self.max_bytes:
            self._append(data[done:] if done else data)  # the common case: one write
            return
        chunk: list[bytes] = []
        size = self._size
        for piece in data[done:].split(b"\n")[:-1]:  # JSON holds no "\n" of its own
            line = piece + b"\n"
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
            # Counted as it goes: what a failing write leaves in the file is known.
            self._done += written
            self._size += written

    def _torn_length(self, data: bytes) -> int:
        """Return how many bytes of a line of *data* the log holds without its end."""
        return self._done - (data.rfind(b"\n", 0, self._done) + 1)

    def _cut(self, data: bytes) -> None:
        """After a write of *data* failed: cut the line it tore off the file, or say where it is.

        A write on a file opened to append leaves the file's offset where the bytes it wrote
        end: when the file still ends there, the torn line is cut (truncated) off it, and
        the batch is written again from that line. Otherwise (the cut fails, a pipe) the
        torn line is remembered (``_torn``) for the next attempt to mend (``_mend``).
        """
        torn = self._torn_length(data)
        if self._torn is not None or not torn:
            return  # nothing torn, or a torn line not mended yet: _torn says where it is
        try:
            fd = self._file.fileno()
            status = os.fstat(fd)
            end = os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(status.st_mode) else -1
        except Exception:  # noqa: BLE001  # pragma: no cover - fstat/lseek of an open file do not fail; if they do, the next attempt starts a fresh line
            self._torn = (-1, -1, -1, torn)
            return
        if end == status.st_size:
            try:
                os.ftruncate(fd, end - torn)
            except OSError:
                pass  # remembered below: the next attempt tries again
            else:
                self._done -= torn
                self._size -= torn
                return
        self._torn = (status.st_dev, status.st_ino, end, torn)

    def _mend(self, torn_line: tuple[int, int, int, int]) -> None:
        """Deal with the torn line an earlier attempt left (*torn_line*) before writing on.

        Where the file still ends with it, it is cut off, or (when cutting fails again)
        left for its rest to be written after it (``_write_from``). Where the file has
        changed since (another process appended to it, it was rotated or replaced: its
        end is not known to be the torn line's), a newline ends whatever line the file ends
        with, and the torn line is written again after it, whole.
        """
        device, inode, end, torn = torn_line
        fd = self._file.fileno()
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino, status.st_size) == (device, inode, end):
            with contextlib.suppress(OSError):  # left in place: its rest is written next
                os.ftruncate(fd, end - torn)
                self._done -= torn
                self._size -= torn
        else:
            self._file.write(b"\n")  # one byte: written, or it raises
            self._size += 1
            self._done -= torn
        self._torn = None

    def _abandon(self) -> None:
        # A torn line left in the file stays (the file would not take a newline either): the
        # next writer to open it starts on a fresh line (_open).
        self._torn, self._done = None, 0

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

    A batch is written in one transaction: a write that fails (the database locked by
    another connection past *timeout*, a full disk, an I/O error) is rolled back, and the
    batch is written again later, whole.

    Args:
        path: The database file (created when missing).
        max_pending: As for :class:`JsonLinesDecisionLog`.
        timeout: Seconds a write waits for a lock another connection holds before it fails
            (and is tried again later).

    Raises:
        ConfigurationError: an option is invalid.
    """

    # A locked or failing database (OperationalError) may take the batch later; one that
    # refuses a row (IntegrityError, InterfaceError) never will.
    _TRANSIENT = (OSError, sqlite3.OperationalError)

    def __init__(
        self, path: str | os.PathLike[str], *, max_pending: int = 10_000, timeout: float = 5.0
    ) -> None:
        super().__init__(max_pending=max_pending)
        self.path = Path(path)
        self.timeout = seconds(timeout, "timeout", positive=True)
        # The writer's connection, while open: a forked child closes the one it inherits.
        self._conn: sqlite3.Connection | None = None
        # Forked while the parent's writer was inside SQLite: this process never opens the file.
        self._forked_busy = False

    def __repr__(self) -> str:
        return f"SqliteDecisionLog({str(self.path)!r})"

    def _forked(self, *, idle: bool) -> None:
        """Close the connection inherited idle; if it was in use, never open the file here.

        SQLite keeps a process's file locks by file, not by connection: a connection opened
        next to an inherited one believes the process holds the parent's locks and takes none,
        so another process could checkpoint and delete the WAL under it. Closing the idle one
        first (its locks are the parent's, not this process's) leaves no such belief; one
        inherited inside a transaction cannot be closed safely, so its records are dropped.
        """
        inherited, self._conn = self._conn, None
        super()._forked(idle=idle)
        if inherited is None:
            return
        if idle:
            with contextlib.suppress(Exception):
                inherited.close()
        else:
            self._forked_busy = True

    def _open(self) -> Any:
        if self._forked_busy:
            raise RuntimeError(
                "forked while the parent's decision log was writing: this process does not "
                "open the file (its SQLite would take no file locks of its own)"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Used by the writer thread only; closed from another thread only in a forked child.
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS decisions (decision_id TEXT PRIMARY KEY, "
                "evaluated_at TEXT NOT NULL, operation TEXT NOT NULL, provider TEXT NOT NULL, "
                "currency TEXT NOT NULL, allowed INTEGER NOT NULL, codes TEXT NOT NULL, "
                "payout_id TEXT, record TEXT NOT NULL)"
            )
        except BaseException:
            conn.close()  # opened again for the next attempt
            raise
        self._conn = conn
        return conn

    def _write_batch(
        self, target: Any, batch: list[_Prepared | DecisionRecord], text: str
    ) -> None:
        lines = text.split("\n")[:-1]  # JSON holds no "\n" of its own
        target.execute("BEGIN IMMEDIATE")
        try:
            target.executemany(_INSERT_ROW, [
                (*_columns(item), line) for item, line in zip(batch, lines, strict=True)
            ])
            target.execute("COMMIT")
        except BaseException:
            # SQLite may have rolled back already (a full disk, an I/O error): the error to
            # report is the write's, not that no transaction is left to roll back.
            with contextlib.suppress(sqlite3.Error):
                target.execute("ROLLBACK")
            raise

    def _close_target(self, target: Any) -> None:
        self._conn = None
        target.close()


_PROVIDER, _CURRENCY, _ALLOWED, _REASONS = map(
    _READ_ORDER.index, ("provider", "currency", "allowed", "reasons")
)


def _columns(item: _Prepared | DecisionRecord) -> tuple[object, ...]:
    """Return the columns of a SQLite row but its record, from what the writer was given."""
    if isinstance(item, tuple):
        _, values, (operation, *_) = item
        return (values[_ID], values[_AT].isoformat(), operation, values[_PROVIDER],
                values[_CURRENCY], int(values[_ALLOWED]),
                ",".join(r.code for r in values[_REASONS]), values[_PAYOUT_ID])
    d = item.decision
    return (d.decision_id, d.evaluated_at.isoformat(), item.operation, d.provider, d.currency,
            int(d.allowed), ",".join(d.codes), d.payout_id)


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
