"""Decision logs whose writes fail: written again later, each record once, no line torn.

The failures are real. A write past ``RLIMIT_FSIZE`` fails with EFBIG after a short write, as
on a disk that fills (SIGXFSZ ignored, the limit lifted again at the end of the block); a memfd
sealed against shrinking, or a file made append-only (``chattr +a``, where root may), refuses
to be cut; another process appends to the file meanwhile; SQLite is locked by another
connection (``BEGIN EXCLUSIVE``) past the sink's timeout.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import functools
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from structlog.testing import capture_logs

from guard import (
    Decision,
    DecisionRecord,
    JsonLinesDecisionLog,
    PayoutGuard,
    SqliteDecisionLog,
    read_decisions,
)
from guard.testing import StaticFetcher

FAILED = "payout_guard.decision_log_write_failed"
RECOVERED = "payout_guard.decision_log_recovered"
DROPPED = "payout_guard.decision_log_dropped"

Sink = JsonLinesDecisionLog | SqliteDecisionLog


@functools.cache
def _decision() -> Decision:
    with PayoutGuard(StaticFetcher({"BRL": "1000.00"}, name="luxtak")) as guard:
        return guard.check("10", "BRL")


def _records(count: int, first: int = 0) -> list[DecisionRecord]:
    """Return *count* records of distinct decisions, numbered from *first* (lines of one length)."""
    return [
        DecisionRecord(
            decision=_decision().model_copy(
                update={"decision_id": f"d-{n:04d}", "payout_id": f"po-{n:04d}"}
            ),
            operation="check", rules_fingerprint="f", version="v",
        )
        for n in range(first, first + count)
    ]


def _ids(records: list[DecisionRecord]) -> list[str]:
    return [r.decision.decision_id for r in records]


def _kept(*paths: Path) -> list[str]:
    """Return the ids of the decisions in *paths*, in order (every line must parse)."""
    return [r.decision.decision_id for path in paths for r in read_decisions(path)]


def _write(sink: Sink, records: list[DecisionRecord]) -> None:
    for record in records:
        sink.write(record)


def _written(sink: Sink, records: list[DecisionRecord]) -> None:
    """Write *records* and wait until the sink has written them."""
    _write(sink, records)
    assert sink.flush()


def _wait_for(
    logs: list[MutableMapping[str, Any]], event: str, timeout: float = 2.0
) -> MutableMapping[str, Any]:
    """Return the first *event* logged (by the writer thread), waiting for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in list(logs):
            if entry["event"] == event:
                return entry
        time.sleep(0.002)
    raise AssertionError(f"no {event} within {timeout} s")


def _events(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == event]


@contextlib.contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Fail this process's writes past *limit* bytes of any file (EFBIG) until the block ends.

    A write that crosses the limit is short; the next one fails, as on a disk that fills.
    SIGXFSZ, which would end the process, is ignored meanwhile.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the SQLite database at *path* locked by another connection until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


@contextlib.contextmanager
def _sealed_file() -> Iterator[tuple[Path, int]]:
    """Yield the path and descriptor of a memfd that can grow but never shrink (not be cut)."""
    fd = os.memfd_create("decisions", os.MFD_ALLOW_SEALING)
    try:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        yield Path(f"/proc/{os.getpid()}/fd/{fd}"), fd
    finally:
        os.close(fd)


# A process that lifts its file size limit and appends its standard input to argv[1].
_APPEND_STDIN = """
import resource, sys
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
with open(sys.argv[1], "ab") as f:
    f.write(sys.stdin.buffer.read())
"""

# Linux's inode flags (linux/fs.h): FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_APPEND_FL.
_GET_FLAGS, _SET_FLAGS, _APPEND_ONLY = 0x80086601, 0x40086602, 0x20


def _append_only(path: Path, *, on: bool) -> None:
    """Make *path* a file that can only grow (``chattr +a``), or not; skip where refused."""
    fd = os.open(path, os.O_RDONLY)
    try:
        flags = array.array("i", [0])
        fcntl.ioctl(fd, _GET_FLAGS, flags, True)  # noqa: FBT003 - ioctl's own flag
        flags[0] = flags[0] | _APPEND_ONLY if on else flags[0] & ~_APPEND_ONLY
        fcntl.ioctl(fd, _SET_FLAGS, flags, True)  # noqa: FBT003 - ioctl's own flag
    except OSError as exc:  # not root, or a file system without the flag
        pytest.skip(f"chattr +a refused: {exc}")
    finally:
        os.close(fd)


def _lines(data: bytes) -> tuple[list[str], list[bytes]]:
    """Return the ids of the records in *data*'s lines, and the lines that are no record."""
    kept, bad = [], []
    for text in data.splitlines():
        if not text:
            continue
        try:
            kept.append(DecisionRecord.from_json(text).decision.decision_id)
        except ValidationError:
            bad.append(text)
    return kept, bad


@pytest.fixture(params=["jsonl", "sqlite"])
def make_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Sink]:
    """Return a maker of the sink of the kind under test (SQLite waits 50 ms for a lock)."""
    if request.param == "jsonl":
        return functools.partial(JsonLinesDecisionLog, tmp_path / "decisions.jsonl")
    return functools.partial(SqliteDecisionLog, tmp_path / "decisions.db", timeout=0.05)


def _failing(sink: Sink) -> contextlib.AbstractContextManager[None]:
    """Make every write to *sink*'s existing target fail until the block ends."""
    if isinstance(sink, SqliteDecisionLog):
        return _locked(sink.path)
    return _file_size_limit(sink.path.stat().st_size)


class TestBothSinks:
    def test_a_batch_whose_write_failed_is_written_once_when_the_target_recovers(
        self, make_sink: Callable[..., Sink]
    ) -> None:
        """Nothing is dropped; the failure and the recovery are logged once each."""
        sink = make_sink()
        before, during = _records(2), _records(10, 2)
        _written(sink, before)
        with capture_logs() as logs:
            with _failing(sink):
                _write(sink, during)
                failed = _wait_for(logs, FAILED)
                assert not sink.flush(timeout=0.05)
            assert sink.flush(timeout=2.0)
            sink.close()
        assert _ids(before + during) == _kept(sink.path)
        assert 0 == sink.dropped
        assert 10 == failed["held"]
        assert failed["message"] in {"[Errno 27] File too large", "database is locked"}
        (recovered,) = _events(logs, RECOVERED)
        assert 10 == recovered["written_late"]
        assert recovered["failed_attempts"] >= 1
        assert [] == _events(logs, DROPPED)

    def test_records_wait_behind_a_failed_batch_up_to_max_pending_the_rest_are_dropped(
        self, make_sink: Callable[..., Sink]
    ) -> None:
        """The batch held counts against max_pending; what is beyond is dropped and counted."""
        sink = make_sink(max_pending=30)
        first, held, queued = _records(1), _records(10, 1), _records(30, 11)
        _write(sink, first)
        assert sink.flush()
        with capture_logs() as logs:
            with _failing(sink):
                _write(sink, held)
                _wait_for(logs, FAILED)  # the writer holds them: 20 more fit
                _write(sink, queued)
                assert 10 == sink.dropped
            assert sink.flush(timeout=2.0)
            sink.close()
        assert _ids(first + held + queued[:20]) == _kept(sink.path)
        assert 10 == sink.dropped
        assert ["the queue is full"] == [e["error"] for e in _events(logs, DROPPED)]
        assert [10] == [e["written_late"] for e in _events(logs, RECOVERED)]

    def test_close_while_writes_fail_waits_its_timeout_then_drops_and_counts_the_rest(
        self, make_sink: Callable[..., Sink]
    ) -> None:
        """The writer stops at close's deadline: nothing is tried again in the background."""
        sink = make_sink()
        first = _records(1)
        _write(sink, first)
        assert sink.flush()
        with capture_logs() as logs, _failing(sink):
            _write(sink, _records(5, 1))
            _wait_for(logs, FAILED)
            _write(sink, _records(3, 6))  # queued behind the failed batch
            started = time.monotonic()
            sink.close(timeout=0.3)
            waited = time.monotonic() - started
            assert sink.flush(timeout=2.0)  # the writer has stopped
        assert 0.25 <= waited < 0.6
        assert 8 == sink.dropped
        assert _ids(first) == _kept(sink.path)
        assert 1 == len(_events(logs, DROPPED))
        assert [] == _events(logs, RECOVERED)

    def test_a_record_that_cannot_be_encoded_is_dropped_alone_the_others_wait(
        self, make_sink: Callable[..., Sink]
    ) -> None:
        """Only failed writes are tried again: a lone surrogate is dropped at once."""
        sink = make_sink()
        first, records = _records(1), _records(4, 1)
        unwritable = records[0].model_copy(update={"decision": records[0].decision.model_copy(
            update={"decision_id": "x", "payout_id": "po-\ud800"})})
        _write(sink, first)
        assert sink.flush()
        with capture_logs() as logs:
            with _failing(sink):
                _write(sink, [*records[:2], unwritable, *records[2:]])
                _wait_for(logs, FAILED)
                assert 1 == sink.dropped
            assert sink.flush(timeout=2.0)
            sink.close()
        assert _ids(first + records) == _kept(sink.path)
        assert 1 == sink.dropped
        assert ["UnicodeEncodeError"] == [e["error"] for e in _events(logs, DROPPED)]


class TestJsonLines:
    def test_the_line_a_failed_write_tore_is_cut_off_and_written_once_later(
        self, tmp_path: Path
    ) -> None:
        """Whole lines written before the failure stay; the torn one is cut at once."""
        path = tmp_path / "decisions.jsonl"
        sink = JsonLinesDecisionLog(path)
        before, during = _records(2), _records(6, 2)
        _written(sink, before)
        size = path.stat().st_size
        line = size // 2
        with capture_logs() as logs:
            with _file_size_limit(size + 2 * line + line // 2):
                _write(sink, during)
                _wait_for(logs, FAILED)
                # Failing still: two more whole lines, and nothing of the third.
                assert size + 2 * line == path.stat().st_size
                assert _ids(before + during[:2]) == _kept(path)
            assert sink.flush(timeout=2.0)
            sink.close()
        assert _ids(before + during) == _kept(path)
        assert 0 == sink.dropped
        assert [6] == [e["written_late"] for e in _events(logs, RECOVERED)]

    def test_a_torn_line_that_cannot_be_cut_is_completed_by_the_next_attempt(self) -> None:
        """A file that can only grow keeps the torn start: its rest is written after it."""
        with _sealed_file() as (path, _):
            sink = JsonLinesDecisionLog(path, max_bytes=None)
            before, during = _records(2), _records(4, 2)
            _written(sink, before)
            size = path.stat().st_size
            line = size // 2
            with capture_logs() as logs:
                with _file_size_limit(size + line + line // 2):
                    _write(sink, during)
                    _wait_for(logs, FAILED)
                    assert size + line + line // 2 == path.stat().st_size  # not cut
                assert sink.flush(timeout=2.0)
                sink.close()
            assert _ids(before + during) == _kept(path)
            assert 0 == sink.dropped

    def test_a_file_appended_to_past_a_torn_line_gets_the_batch_on_a_fresh_line(self) -> None:
        """The torn start and the line appended after it make one bad line; ours follow."""
        with _sealed_file() as (path, _):
            sink = JsonLinesDecisionLog(path, max_bytes=None)
            before, during = _records(1), _records(3, 1)
            _written(sink, before)
            size = path.stat().st_size
            other = _records(1, 100)[0].to_json().encode() + b"\n"
            with capture_logs() as logs:
                with _file_size_limit(size + size // 2):
                    _write(sink, during)
                    _wait_for(logs, FAILED)
                    # Another process (free of this one's limit) appends a line meanwhile.
                    subprocess.run([sys.executable, "-c", _APPEND_STDIN, str(path)],
                                   input=other, check=True, timeout=30)
                assert sink.flush(timeout=2.0)
                sink.close()
            kept, bad = _lines(path.read_bytes())
        assert _ids(before + during) == kept
        assert 1 == len(bad)
        assert bad[0].endswith(other.rstrip(b"\n"))  # the torn start, then the other line
        assert 0 == sink.dropped

    def test_a_torn_line_not_cut_at_first_is_cut_by_the_next_attempt(
        self, tmp_path: Path
    ) -> None:
        """An append-only file refuses the cut; once it is not, the next attempt cuts."""
        path = tmp_path / "decisions.jsonl"
        sink = JsonLinesDecisionLog(path, max_bytes=None)
        before, during = _records(2), _records(3, 2)
        _written(sink, before)
        size = path.stat().st_size
        _append_only(path, on=True)
        try:
            with capture_logs() as logs:
                with _file_size_limit(size + size // 4):
                    _write(sink, during)
                    _wait_for(logs, FAILED)
                    assert size + size // 4 == path.stat().st_size  # not cut
                _append_only(path, on=False)
                assert sink.flush(timeout=2.0)
                sink.close()
        finally:
            _append_only(path, on=False)
        assert _ids(before + during) == _kept(path)
        assert 0 == sink.dropped

    def test_a_log_closed_before_its_torn_line_is_mended_leaves_it_on_a_line_of_its_own(
        self,
    ) -> None:
        """The batch is dropped; the next log to open the file starts on a fresh line."""
        with _sealed_file() as (path, _):
            sink = JsonLinesDecisionLog(path, max_bytes=None)
            before, during, after = _records(1), _records(3, 1), _records(2, 4)
            _written(sink, before)
            size = path.stat().st_size
            with capture_logs() as logs, _file_size_limit(size + size // 2):
                _write(sink, during)
                _wait_for(logs, FAILED)
                sink.close(timeout=0.1)
                assert sink.flush()  # stopped: given up
            assert 3 == sink.dropped
            reopened = JsonLinesDecisionLog(path, max_bytes=None)
            _write(reopened, after)
            reopened.close()
            kept, bad = _lines(path.read_bytes())
        assert _ids(before + after) == kept
        # The torn start of the first record dropped, alone on its line.
        assert [size // 2] == [len(line) for line in bad]
        assert bad[0].startswith(b'{"decision":')
        assert 0 == reopened.dropped

    def test_a_child_forked_while_a_write_fails_writes_its_own_records_whole(self) -> None:
        """What the parent knows of its failed batch (bytes written) is not the child's."""
        with _sealed_file() as (path, _):
            sink = JsonLinesDecisionLog(path, max_bytes=None)
            before, during, child = _records(1), _records(3, 1), _records(2, 10)
            _written(sink, before)
            line = path.stat().st_size
            with capture_logs() as logs:
                with _file_size_limit(2 * line + line // 2):
                    _write(sink, during)  # one more line written, the next torn
                    _wait_for(logs, FAILED)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
                        pid = os.fork()
                    if pid == 0:  # pragma: no cover - the child, ended by os._exit
                        code = 1
                        try:
                            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
                            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
                            _write(sink, child)
                            sink.close()
                            code = 0 if sink.flush() and not sink.dropped else 2
                        finally:
                            os._exit(code)
                    _, status = os.waitpid(pid, 0)
                    assert 0 == os.waitstatus_to_exitcode(status)
                assert sink.flush(timeout=2.0)
                sink.close()
            kept, bad = _lines(path.read_bytes())
        # The child starts on a fresh line after the parent's torn start; the parent, finding
        # the file changed, writes its torn line again, whole, on a fresh line of its own.
        assert _ids(before + during[:1] + child + during[1:]) == kept
        assert [line // 2] == [len(text) for text in bad]
        assert 0 == sink.dropped

    @settings(max_examples=30, deadline=None, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(before=st.integers(0, 3), count=st.integers(1, 6), fail_at=st.integers(0, 4_600),
           kind=st.sampled_from(["file", "rotating", "sealed"]))
    @example(before=2, count=4, fail_at=1_000, kind="rotating")  # in the second line, rotated
    @example(before=1, count=3, fail_at=1_900, kind="sealed")  # a line that cannot be cut
    @example(before=0, count=2, fail_at=0, kind="file")  # not a byte written
    def test_a_write_failing_at_any_byte_leaves_each_record_once_and_every_line_whole(
        self, tmp_path: Path, before: int, count: int, fail_at: int, kind: str
    ) -> None:
        """Wherever in a file the write fails (after a rotation too), each record is kept once.

        Records written *before* the failure fill the first file (two lines of about 750
        bytes fit in 2048), so that a rotating log's batch may fail in the file after it.
        """
        records = _records(before + count)
        with contextlib.ExitStack() as stack:
            if kind == "sealed":
                path, _ = stack.enter_context(_sealed_file())
            else:
                path = tmp_path / uuid.uuid4().hex / "decisions.jsonl"
            sink = JsonLinesDecisionLog(path, max_bytes=2048 if kind == "rotating" else None,
                                        backups=len(records) + 1)
            _write(sink, records[:before])
            assert sink.flush()
            with capture_logs() as logs:
                with _file_size_limit(fail_at):
                    _write(sink, records[before:])
                    # Failed, or written in one go (the limit is past it).
                    while not (_events(logs, FAILED) or sink.flush(timeout=0.005)):
                        pass
                sink.close(timeout=2.0)  # the last attempt, at once
                assert sink.flush()
            files = [path.with_name(f"{path.name}.{n}") for n in range(len(records), 0, -1)]
            kept = _kept(*[f for f in files if f.exists()], path)
        assert _ids(records) == kept
        assert 0 == sink.dropped


class TestSqlite:
    def test_a_failed_batch_is_rolled_back_whole(self, tmp_path: Path) -> None:
        """While the database is locked, no row of the batch is in it; afterwards all are."""
        path = tmp_path / "decisions.db"
        sink = SqliteDecisionLog(path, timeout=0.05)
        before, during = _records(1), _records(5, 1)
        _written(sink, before)
        with capture_logs() as logs:
            with _locked(path):
                _write(sink, during)
                _wait_for(logs, FAILED)
                assert _ids(before) == _kept(path)  # readers still read (WAL)
            assert sink.flush(timeout=2.0)
            sink.close()
        assert _ids(before + during) == _kept(path)
        assert 0 == sink.dropped
