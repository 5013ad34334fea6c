"""Fetchers and stores in forked workers: each child opens its own connections.

A guard built before ``fork()`` (as a Celery tasks module does) holds a keep-alive connection
in its fetcher's pool. Children that kept using it would read each other's answers. Here eight
forked workers check 200 times each against one LuxCore emulator on 127.0.0.1, asking for
ARS and MXN in turn, and every answer must be the currency asked for.

A SQLite store forked while another thread is inside one of its calls must work in the child
(which inherits the store's lock as that thread held it, and none of its threads), even when
that call is inside its write transaction; and the child's connection must hold file locks of
its own, or another process could delete the WAL under it.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from guard import PayoutGuard, SqliteDecisionLog, read_decisions
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.stores import SqliteReservations, StoreUnavailable
from guard.testing import StaticFetcher
from guard.testing.emulators import LuxCoreEmulator
from tests._holds import T0, hold

WORKERS = 8
CHECKS = 200
EXPECTED = {"ARS": Decimal("12000.00"), "MXN": Decimal("8500.00")}

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


@pytest.fixture
def emulator() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={code: str(amount) for code, amount in EXPECTED.items()}) as emu:
        yield emu


def _work(guard: PayoutGuard, worker: int, checks: int) -> dict[str, object]:
    """Check *checks* times, alternating currencies; return what went wrong, if anything."""
    crossed, broken = 0, []
    for number in range(checks):
        currency = "ARS" if (number + worker) % 2 else "MXN"
        decision = guard.check("1.00", currency)
        if not decision.allowed or decision.balance is None:
            broken.append([r.message[:120] for r in decision.reasons])
        elif (decision.balance.currency, decision.balance.available) != (
            currency, EXPECTED[currency]
        ):
            crossed += 1
    return {"crossed": crossed, "broken": broken[:3], "broken_count": len(broken)}


def _fork_workers(guard: PayoutGuard, workers: int, checks: int) -> list[dict[str, object]]:
    """Fork *workers* children running _work; return each one's report."""
    children = []
    for worker in range(workers):
        read, write = os.pipe()
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() with threads (the emulator serves from one);
            # forking a process that holds a guard is exactly what is under test.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns to pytest
            os.close(read)
            try:
                report = _work(guard, worker, checks)
            except BaseException as exc:  # noqa: BLE001 - reported to the parent
                report = {"crossed": -1, "broken": [repr(exc)], "broken_count": -1}
            os.write(write, json.dumps(report).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    reports = []
    for pid, read in children:
        with os.fdopen(read, "rb") as pipe:
            data = pipe.read()
        os.waitpid(pid, 0)
        reports.append(json.loads(data or b'{"crossed": -1, "broken": ["no report"]}'))
    return reports


class TestForkedWorkers:
    def test_eight_forked_workers_never_read_each_others_answers(
        self, emulator: LuxCoreEmulator
    ) -> None:
        """8 workers x 200 checks, cache_ttl=0: every answer is the currency asked for."""
        fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url,
                                 retry=RetryPolicy(attempts=1, deadline=10.0))
        guard = PayoutGuard(fetcher, cache_ttl=0)
        assert guard.check("1.00", "ARS").allowed  # the parent's pool now holds a connection
        reports = _fork_workers(guard, WORKERS, CHECKS)
        assert [{"crossed": 0, "broken": [], "broken_count": 0}] * WORKERS == reports
        assert guard.check("1.00", "MXN").allowed  # and the parent's connection still works
        guard.close()

    def test_a_passed_in_session_is_repooled_in_the_child(
        self, emulator: LuxCoreEmulator
    ) -> None:
        """With the caller's session, children drop its pooled connections and still agree."""
        session = requests.Session()
        fetcher = LuxCoreFetcher(emulator.api_key, base_url=emulator.url, session=session,
                                 retry=RetryPolicy(attempts=1, deadline=10.0))
        guard = PayoutGuard(fetcher, cache_ttl=0)
        assert guard.check("1.00", "ARS").allowed
        reports = _fork_workers(guard, 4, 25)
        assert [{"crossed": 0, "broken": [], "broken_count": 0}] * 4 == reports
        session.close()


# Another process's writer: takes the file's write lock, says so, keeps it until a line comes.
_BLOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def _fork_one(work: Callable[[], dict[str, object]]) -> tuple[int, int]:
    """Fork a child that runs *work* and writes its report; return its pid and the pipe."""
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads: under test
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns to pytest
        os.close(read)
        try:
            report = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            report = {"error": repr(exc)[:200]}
        os.write(write, json.dumps(report).encode())
        os._exit(0)
    os.close(write)
    return pid, read


def _report(pid: int, read: int, within: float) -> dict[str, object]:
    """Return the child's report, or ``{"hung": ...}`` (the child killed) after *within* s."""
    with os.fdopen(read, "rb") as pipe:
        ready, _, _ = select.select([pipe], [], [], within)
        data = pipe.read() if ready else b""
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return json.loads(data) if data else {"hung": f"no report within {within:g} s"}


class TestForkedSqliteStore:
    def test_a_child_forked_during_a_call_uses_and_closes_the_store(
        self, tmp_path: Path
    ) -> None:
        """Forked while another thread is inside a call, the child's store holds and closes."""
        path = tmp_path / "holds.db"
        store = SqliteReservations(path, timeout=2.0)
        # In another process, as in production: a child would inherit this one's file locks.
        blocker = subprocess.Popen(
            [sys.executable, "-c", _BLOCKER, str(path)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        assert blocker.stdout is not None
        assert blocker.stdin is not None
        assert "locked\n" == blocker.stdout.readline()
        failed: list[StoreUnavailable] = []

        def call() -> None:
            try:
                store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(10), counted_since=0,
                               now=T0)
            except StoreUnavailable as exc:  # reported by the assertion below
                failed.append(exc)

        def work() -> dict[str, object]:
            outcome = store.try_hold(hold("po_2", "2.00"), ceiling=Decimal(10),
                                     counted_since=0, now=T0)
            store.close()
            return {"status": outcome.status, "closed": True}

        inside = threading.Thread(target=call)
        inside.start()
        time.sleep(0.3)  # the thread waits for the blocker's lock on the file, in the store
        pid, read = _fork_one(work)
        blocker.stdin.write("go\n")
        blocker.stdin.close()
        blocker.wait()
        blocker.stdout.close()
        report = _report(pid, read, within=10.0)
        inside.join()
        assert {"status": "held", "closed": True} == report
        assert [] == failed
        assert Decimal("3.00") == store.reserved(hold("x", "1").key, counted_since=0, now=T0)
        store.close()

    def test_a_child_forked_while_a_thread_is_inside_a_write_transaction_can_write(
        self, tmp_path: Path
    ) -> None:
        """The fork waits for the parent's transaction to end; the child then writes.

        The parent's transaction is the parent's: the child never commits or rolls it back,
        and it does not start life with SQLite believing that its process holds the write lock.
        """
        store = SqliteReservations(tmp_path / "holds.db", timeout=1.0)

        def work() -> dict[str, object]:
            outcome = store.try_hold(hold("po_2", "2.00"), ceiling=Decimal(10),
                                     counted_since=0, now=T0)
            return {"status": outcome.status}

        parent = _inside_a_transaction(store, for_seconds=0.3)
        pid, read = _fork_one(work)
        report = _report(pid, read, within=10.0)
        parent.join()
        assert {"status": "held"} == report
        assert Decimal("3.00") == store.reserved(hold("x", "1").key, counted_since=0, now=T0)
        store.close()

    def test_a_child_forked_while_a_call_outlasts_the_timeout_refuses_the_store(
        self, tmp_path: Path
    ) -> None:
        """The fork waits the store's timeout at most; the child then refuses the store.

        The parent's transaction is left alone in the child (it commits in the parent), and
        the child says why it cannot use the file instead of waiting for a lock nobody holds.
        """
        store = SqliteReservations(tmp_path / "holds.db", timeout=0.2)

        def attempt() -> dict[str, object]:
            try:
                store.try_hold(hold("po_2", "2.00"), ceiling=Decimal(10), counted_since=0,
                               now=T0)
            except StoreUnavailable as exc:
                return {"refused": str(exc).partition(" on ")[0]}
            return {"refused": None}

        def work() -> dict[str, object]:
            # And in a child of the child, which inherits the same connection.
            return {**attempt(), "grandchild": _report(*_fork_one(attempt), within=5.0)}

        parent = _inside_a_transaction(store, for_seconds=1.0)
        pid, read = _fork_one(work)
        report = _report(pid, read, within=10.0)
        parent.join()
        refused = {"refused": "sqlite reservation store: this process was forked while a thread "
                              "of its parent was inside a call of the store"}
        assert {**refused, "grandchild": refused} == report
        assert ["po_1"] == [h.payout_id for h in store.holds(hold("x", "1").key,
                                                              counted_since=0, now=T0)]
        store.close()

    def test_a_childs_holds_outlive_its_parent_closing_the_file(self, tmp_path: Path) -> None:
        """The child's connection takes its own file locks, so its commits are never lost.

        A connection opened next to an inherited one takes no lock of its own: once the parent
        closed the file, another process closing it last would checkpoint and delete the WAL
        under the child, and the child's next hold would go to a deleted file.
        """
        path = tmp_path / "holds.db"
        store = SqliteReservations(path, timeout=1.0)

        def take(payout_id: str) -> str:
            return store.try_hold(hold(payout_id, "1.00"), ceiling=Decimal(100),
                                  counted_since=0, now=T0).status

        take("po_parent")

        def work(visited: Callable[[], None]) -> dict[str, object]:
            first = take("po_child_1")
            visited()
            return {"statuses": [first, take("po_child_2")]}

        counted, report = _child_across_a_visit(work, store.close, _VISITOR % "holds", path)
        with SqliteReservations(path) as fresh:
            found = sorted(h.payout_id for h in fresh.holds(hold("x", "1").key,
                                                            counted_since=0, now=T0))
        assert ("2\n", {"statuses": ["held", "held"]}) == (counted, report)
        assert ["po_child_1", "po_child_2", "po_parent"] == found


class TestForkedSqliteDecisionLog:
    def test_a_childs_records_outlive_its_parent_closing_the_file(self, tmp_path: Path) -> None:
        """A child's decision log writes through a connection with file locks of its own.

        The parent's writer had the file open when it forked. A connection the child opened
        next to that inherited one took no lock of its own: once the parent closed the file,
        another process closing it last checkpointed and deleted the WAL under the child,
        and the child's later records went to a deleted file.
        """
        path = tmp_path / "decisions.db"
        sink = SqliteDecisionLog(path, timeout=1.0)
        guard = PayoutGuard(StaticFetcher({"BRL": "1000.00"}), decision_log=sink)
        guard.check("1.00", "BRL", payout_id="po_parent")
        assert sink.flush()  # the parent's writer holds the file open

        def work(visited: Callable[[], None]) -> dict[str, object]:
            guard.check("1.00", "BRL", payout_id="po_child_1")
            flushed = [sink.flush()]
            visited()
            guard.check("1.00", "BRL", payout_id="po_child_2")
            flushed.append(sink.flush())
            sink.close()
            return {"flushed": flushed, "dropped": sink.dropped}

        counted, report = _child_across_a_visit(work, guard.close, _VISITOR % "decisions",
                                                path)
        found = sorted(str(r.decision.payout_id) for r in read_decisions(path))
        assert ("2\n", {"flushed": [True, True], "dropped": 0}) == (counted, report)
        assert ["po_child_1", "po_child_2", "po_parent"] == found


    def test_a_child_forked_while_the_writer_is_inside_sqlite_drops_its_own_records(
        self, tmp_path: Path
    ) -> None:
        """A connection inherited in use cannot be closed safely: the child never opens the file.

        Its records are dropped and counted; the parent's log goes on.
        """
        path = tmp_path / "decisions.db"
        sink = SqliteDecisionLog(path, timeout=0.2)
        guard = PayoutGuard(StaticFetcher({"BRL": "1000.00"}), decision_log=sink)
        guard.check("1.00", "BRL", payout_id="po_parent_1")
        assert sink.flush()

        def work() -> dict[str, object]:
            guard.check("1.00", "BRL", payout_id="po_child")
            sink.close()
            return {"dropped": sink.dropped}

        # The writer's hold on its connection, kept past the log's timeout by this thread:
        # the fork cannot wait for the writer to leave SQLite.
        with sink._writing:
            pid, read = _fork_one(work)
        report = _report(pid, read, within=10.0)
        guard.check("1.00", "BRL", payout_id="po_parent_2")
        guard.close()
        found = sorted(str(r.decision.payout_id) for r in read_decisions(path))
        assert {"dropped": 1} == report
        assert ["po_parent_1", "po_parent_2"] == found


def _child_across_a_visit(
    work: Callable[[Callable[[], None]], dict[str, object]],
    close: Callable[[], None],
    visitor: str,
    path: Path,
) -> tuple[str, dict[str, object]]:
    """Fork a child running ``work(visited)``; return what the visitor printed, and its report.

    When the child calls ``visited()``, the parent runs *close* (it lets go of the file), then
    another process (*visitor*, a script given *path*) opens the file and closes it, the last
    one to do so; then ``visited()`` returns in the child.
    """
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()

    def visited() -> None:
        os.write(ready_write, b"1")
        os.read(go_read, 1)

    pid, read = _fork_one(lambda: work(visited))
    try:
        assert b"1" == os.read(ready_read, 1)
        close()
        seen = subprocess.run([sys.executable, "-c", visitor, str(path)],
                              capture_output=True, text=True, check=True, timeout=30)
    finally:
        os.write(go_write, b"1")
        report = _report(pid, read, within=10.0)
        for end in (ready_read, ready_write, go_read, go_write):
            os.close(end)
    return seen.stdout, report


def _inside_a_transaction(store: SqliteReservations, *, for_seconds: float) -> threading.Thread:
    """Return a thread holding po_1 whose try_hold is now inside its write transaction.

    It stays there *for_seconds*: the ceiling it passes takes that long to compare, and
    try_hold compares it with the key's holds inside the transaction.
    """
    inside = threading.Event()

    class SlowCeiling(Decimal):
        def __lt__(self, other: object) -> bool:
            inside.set()
            time.sleep(for_seconds)
            return Decimal(self) < other  # type: ignore[operator]  # Decimal compares

    thread = threading.Thread(target=store.try_hold, args=(hold("po_1", "1.00"),),
                              kwargs={"ceiling": SlowCeiling(10), "counted_since": 0, "now": T0})
    thread.start()
    assert inside.wait(5), "try_hold never compared the ceiling inside its transaction"
    return thread


# Another process: opens the file, counts the rows of a table (%s), and closes it, the last
# one to do so.
_VISITOR = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
print(conn.execute("SELECT count(*) FROM %s").fetchone()[0])
conn.close()
"""
