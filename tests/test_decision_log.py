"""Decision logs: every decision kept, and a sink that fails or stalls never fails a decision."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from guard import (
    AsyncPayoutGuard,
    ConfigurationError,
    Decision,
    DecisionRecord,
    JsonLinesDecisionLog,
    PayoutGuard,
    SqliteDecisionLog,
    instrumentation,
    read_decisions,
)
from guard.testing import StaticFetcher
from rules import MaxPayout


def guard_with(sink: object) -> PayoutGuard:
    return PayoutGuard(StaticFetcher({"BRL": "1000.00"}, name="luxtak"),
                       [MaxPayout({"BRL": "500"})],
                       decision_log=sink)  # type: ignore[arg-type]  # a sink of the test's own


class TestJsonLines:
    def test_every_check_and_reserve_is_written_with_its_operation(self, tmp_path: Path) -> None:
        path = tmp_path / "logs" / "decisions.jsonl"
        with guard_with(JsonLinesDecisionLog(path)) as guard:
            allowed = guard.check("10", "BRL")
            denied = guard.check("600", "BRL")
            with guard.reserve("20", "BRL", payout_id="po-1") as held:
                pass
        records = list(read_decisions(path))
        assert [(allowed, "check"), (denied, "check"), (held.decision, "reserve")] == [
            (r.decision, r.operation) for r in records
        ]

    def test_it_rotates_before_a_file_would_pass_max_bytes(self, tmp_path: Path) -> None:
        path = tmp_path / "decisions.jsonl"
        sink = JsonLinesDecisionLog(path, max_bytes=4096, backups=2)
        with guard_with(sink) as guard:
            made = [guard.check("10", "BRL") for _ in range(40)]
        files = [path.with_name(f"decisions.jsonl.{n}") for n in (2, 1)] + [path]
        assert all(f.stat().st_size <= 4096 for f in files)
        assert not path.with_name("decisions.jsonl.3").exists()  # only two backups are kept
        kept = [r.decision for f in files for r in read_decisions(f)]
        assert kept == made[-len(kept):]  # the newest, in order; the oldest file was deleted
        assert len(kept) < len(made)

    def test_a_directory_it_cannot_write_keeps_records_until_closed_then_drops_them(
        self, tmp_path: Path
    ) -> None:
        """Every open fails: records wait (flush times out); close drops and counts them."""
        blocked = tmp_path / "not-a-file"
        blocked.mkdir()
        sink = JsonLinesDecisionLog(blocked)  # a directory: every open fails
        with capture_logs() as logs, guard_with(sink) as guard:
            decisions = [guard.check("10", "BRL") for _ in range(5)]
            assert not sink.flush(timeout=0.2)
            assert 0 == sink.dropped  # tried again, not dropped
            sink.close(timeout=0.2)
            assert sink.flush()  # the writer stops: nothing is tried in the background
        assert all(d.allowed for d in decisions)
        assert 5 == sink.dropped
        complaints = [e for e in logs if e["event"] == "payout_guard.decision_log_dropped"]
        assert ["IsADirectoryError"] == [e["error"] for e in complaints]
        failures = [e for e in logs if e["event"] == "payout_guard.decision_log_write_failed"]
        assert ["IsADirectoryError"] == [e["error"] for e in failures]  # once a minute

    def test_a_stalled_writer_never_holds_a_check_up(self, tmp_path: Path) -> None:
        """A FIFO nobody reads blocks the writer thread on open; checks go on, records drop."""
        fifo = tmp_path / "stalled"
        os.mkfifo(fifo)
        sink = JsonLinesDecisionLog(fifo, max_pending=10)
        guard = guard_with(sink)
        started = time.monotonic()
        decisions = [guard.check("10", "BRL") for _ in range(200)]
        elapsed = time.monotonic() - started
        assert all(d.allowed for d in decisions)
        assert elapsed < 5.0  # generous: the point is that nothing waits for the stalled file
        # Kept at most: a batch the writer took before it stalled, and a full queue.
        assert sink.dropped >= 200 - 2 * 10 - 1
        reader = threading.Thread(target=fifo.read_bytes, daemon=True)
        reader.start()  # unstall, so that the writer can finish and close
        guard.close()

    def test_options_are_checked(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="bytes >= 1024"):
            JsonLinesDecisionLog(tmp_path / "x", max_bytes=10)
        with pytest.raises(ConfigurationError, match="max_pending"):
            JsonLinesDecisionLog(tmp_path / "x", max_pending=0)
        with pytest.raises(ConfigurationError, match="timeout"):
            SqliteDecisionLog(tmp_path / "x", timeout=0)
        with pytest.raises(ConfigurationError, match="DecisionLog"):
            guard_with(tmp_path / "x")


def _mixed_decisions(guard: PayoutGuard) -> list[Decision]:
    """Allowed, denied, without a balance, on two balances in turn, with ids to escape."""
    return [
        guard.check("10", "BRL"),
        guard.check("600", "BRL", payout_id='po "quoted" \\ é'),
        guard.check("20", "USD", account="acct-1"),
        guard.check("10", "EUR"),  # no EUR balance: no balance in the record
        guard.check("30", "BRL", fee="1.50"),
        guard.check("40", "USD", account="acct-1"),
        guard.check("30", "BRL"),
    ]


# Decimals of any exponent and sign, zeros among them (they write as they were made).
_ANY_DECIMAL = st.decimals(allow_nan=False, allow_infinity=False)


class TestLines:
    def _guard(self, sink: object) -> PayoutGuard:
        fetcher = StaticFetcher({"BRL": {"available": "1000.00", "frozen": "10.00"},
                                 "USD": "250.00"}, name="luxtak")
        return PayoutGuard(fetcher, [MaxPayout({"BRL": "500"})],
                           decision_log=sink)  # type: ignore[arg-type]  # one of ours

    def test_a_line_holds_what_the_records_own_json_holds(self, tmp_path: Path) -> None:
        """Keys may come in another order; every key and value is ``to_json``'s."""
        path = tmp_path / "decisions.jsonl"
        with self._guard(JsonLinesDecisionLog(path)) as guard:
            made = _mixed_decisions(guard)
        lines = path.read_bytes().splitlines()
        records = list(read_decisions(path))
        assert made == [r.decision for r in records]
        assert [json.loads(r.to_json()) for r in records] == [json.loads(x) for x in lines]

    def test_the_fields_that_change_every_time_are_written_as_pydantic_writes_them(
        self, tmp_path: Path
    ) -> None:
        """Ids to escape, amounts with exponents, a time on the second, any balance age."""
        path = tmp_path / "decisions.jsonl"
        with self._guard(JsonLinesDecisionLog(path)) as guard:
            made = guard.check("10", "BRL")
            odd = [
                made.model_copy(update=update) for update in (
                    {"decision_id": 'id "\\ \n\u00e9\u2028', "payout_id": "po-\x00-\U0001f600"},
                    {"amount": Decimal("1E+2"), "reserved": Decimal("-0.00"),
                     "spendable": Decimal("0E-8")},
                    {"evaluated_at": made.evaluated_at.replace(microsecond=0)},
                    {"evaluated_at": made.evaluated_at.replace(microsecond=500_000)},
                    {"evaluated_at": made.evaluated_at.astimezone(timezone(timedelta(hours=-3)))},
                    {"balance_age": None},
                    {"balance_age": 1e-05},
                    {"balance_age": float("inf")},
                )
            ]
            sink = guard.decision_log
            assert isinstance(sink, JsonLinesDecisionLog)
            records = [DecisionRecord(decision=d, operation="check", rules_fingerprint="f",
                                      version="v") for d in odd]
            for record in records:
                sink.write(record)
        lines = path.read_bytes().splitlines()[1:]
        assert [json.loads(r.to_json()) for r in records] == [json.loads(x) for x in lines]
        assert records == list(read_decisions(path))[1:]

    def test_a_field_that_usually_repeats_is_written_anew_when_it_changes(
        self, tmp_path: Path
    ) -> None:
        """Each repeating field changed alone, to an equal Decimal of another exponent too.

        And a decision whose fields come in another order: each line is the record's JSON.
        """
        path = tmp_path / "decisions.jsonl"
        with self._guard(None) as guard:
            made = _mixed_decisions(guard)
        base = made[0]
        decisions: list[Decision] = []
        for name, value in base.__dict__.items():
            others = [d.__dict__[name] for d in made]
            if isinstance(value, Decimal):
                others += [value.quantize(Decimal("0.001")), -value, value + 1]
            for other in others:
                decisions += [base.model_copy(update={name: other}), base]
        reordered = base.model_copy()
        object.__setattr__(reordered, "__dict__", dict(reversed(base.__dict__.items())))
        decisions += [reordered, base]
        sink = JsonLinesDecisionLog(path)
        for decision in decisions:
            sink.write_decision(decision, "check", None, "f", "v")
        sink.close()
        records = [DecisionRecord(decision=d, operation="check", rules_fingerprint="f",
                                  version="v") for d in decisions]
        lines = path.read_bytes().splitlines()
        assert [json.loads(r.to_json()) for r in records] == [json.loads(x) for x in lines]
        assert records == list(read_decisions(path))

    def test_the_writer_reads_every_field_of_a_decision(self) -> None:
        """Else every decision would be written the slow way (by pydantic alone)."""
        from guard._records import _READ_ORDER

        assert sorted(Decision.model_fields) == sorted([*_READ_ORDER, "balance"])

    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(st.fixed_dictionaries({
        "decision_id": st.text(max_size=12),
        "amount": _ANY_DECIMAL, "reserved": _ANY_DECIMAL, "spendable": _ANY_DECIMAL,
        "payout_id": st.none() | st.text(max_size=8),
        "evaluated_at": st.datetimes(timezones=st.sampled_from(
            [UTC, UTC, timezone(timedelta(hours=-3))])),
        "balance_age": st.none() | st.floats(allow_nan=False),
        "currency": st.sampled_from(["BRL", "USD"]),
        "fee": _ANY_DECIMAL,
    }), min_size=1, max_size=12), st.lists(st.booleans(), min_size=12, max_size=12))
    def test_any_batch_reads_back_as_the_records_written(
        self, tmp_path: Path, updates: list[dict[str, object]], whole: list[bool]
    ) -> None:
        """Whatever the fields that change hold, each line is the record's own JSON."""
        path = tmp_path / f"any-{len(list(tmp_path.iterdir()))}.jsonl"
        with self._guard(None) as guard:
            made = guard.check("10", "BRL")
        sink = JsonLinesDecisionLog(path)
        records = [DecisionRecord(decision=made.model_copy(update=update), operation="check",
                                  rules_fingerprint="f", version="v") for update in updates]
        for record, as_record in zip(records, whole, strict=False):
            if as_record:
                sink.write(record)
            else:
                sink.write_decision(record.decision, "check", None, "f", "v")
        sink.close()
        lines = path.read_bytes().splitlines()
        assert [json.loads(r.to_json()) for r in records] == [json.loads(x) for x in lines]
        assert records == list(read_decisions(path))

    def test_write_decision_writes_what_write_writes(self, tmp_path: Path) -> None:
        """A decision's fields given without a record are the record ``write`` is given."""
        recorded, fields_only = tmp_path / "recorded.jsonl", tmp_path / "fields.jsonl"
        with self._guard(None) as guard:
            made = _mixed_decisions(guard)
        for path in (recorded, fields_only):
            sink = JsonLinesDecisionLog(path)
            for decision in made:
                if path == recorded:
                    sink.write(DecisionRecord(decision=decision, operation="reserve",
                                              provider_asked="luxtak", rules_fingerprint="f",
                                              version="v"))
                else:
                    sink.write_decision(decision, "reserve", "luxtak", "f", "v")
            sink.close()
        assert recorded.read_bytes() == fields_only.read_bytes()
        assert made == [r.decision for r in read_decisions(fields_only)]

    def test_a_log_of_records_own_json_still_reads(self, tmp_path: Path) -> None:
        """A log written by an earlier version (``to_json`` lines) reads as before."""
        path = tmp_path / "decisions.jsonl"
        with self._guard(JsonLinesDecisionLog(path)) as guard:
            _mixed_decisions(guard)
        records = list(read_decisions(path))
        old = tmp_path / "old.jsonl"
        old.write_text("".join(r.to_json() + "\n" for r in records), encoding="utf-8")
        assert records == list(read_decisions(old))

    def test_sqlite_columns_are_the_decisions_fields(self, tmp_path: Path) -> None:
        """SQLite fills the columns from the record as they always were filled."""
        path = tmp_path / "decisions.db"
        with self._guard(SqliteDecisionLog(path)) as guard:
            made = _mixed_decisions(guard)
            with guard.reserve("20", "BRL", payout_id="po-2") as held:
                pass
        made.append(held.decision)
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT * FROM decisions ORDER BY rowid").fetchall()
        finally:
            conn.close()
        expected = [
            (d.decision_id, d.evaluated_at.isoformat(), op, d.provider, d.currency,
             int(d.allowed), ",".join(d.codes), d.payout_id)
            for d, op in zip(made, ["check"] * (len(made) - 1) + ["reserve"], strict=True)
        ]
        assert expected == [row[:8] for row in rows]
        assert made == [r.decision for r in read_decisions(path)]


def record_of(decision: Decision) -> DecisionRecord:
    return DecisionRecord(decision=decision, operation="check", rules_fingerprint="r",
                          version="0")


class TestBothSinks:
    @pytest.mark.parametrize("sink_type", [JsonLinesDecisionLog, SqliteDecisionLog])
    def test_a_record_that_cannot_be_written_is_dropped_alone(
        self, tmp_path: Path, sink_type: type[JsonLinesDecisionLog | SqliteDecisionLog]
    ) -> None:
        """A lone surrogate is no UTF-8: that record is dropped and counted, not its batch."""
        path = tmp_path / "decisions"
        sink = sink_type(path)
        with guard_with(None) as guard:
            made = [guard.check("10", "BRL", payout_id=f"po-{n}") for n in range(6)]
        unwritable = made[0].model_copy(update={"payout_id": "po-\ud800", "decision_id": "x"})
        with capture_logs() as logs:
            for n, decision in enumerate(made):  # queued together: one batch, usually
                sink.write(record_of(decision))
                if n == 2:
                    sink.write(record_of(unwritable))
            sink.close()
        assert 1 == sink.dropped
        assert made == [r.decision for r in read_decisions(path)]
        assert ["UnicodeEncodeError"] == [
            e["error"] for e in logs if e["event"] == "payout_guard.decision_log_dropped"
        ]


class TestOwnSinks:
    def test_a_sink_whose_write_raises_never_fails_a_decision(self) -> None:
        class Broken:
            def write(self, record: DecisionRecord) -> None:
                raise RuntimeError(f"disk on fire, {record.operation} lost")

            def close(self) -> None:
                pass

        with capture_logs() as logs, guard_with(Broken()) as guard:
            decisions = [guard.check("10", "BRL") for _ in range(3)]
        assert all(d.allowed for d in decisions)
        assert [("Broken", "RuntimeError")] == [
            (e["sink"], e["error"]) for e in logs
            if e["event"] == "payout_guard.decision_log_dropped"
        ]


class TestSqlite:
    def test_rows_can_be_queried_with_sqlite(self, tmp_path: Path) -> None:
        path = tmp_path / "decisions.db"
        with guard_with(SqliteDecisionLog(path)) as guard:
            guard.check("10", "BRL", payout_id="po-9")
            guard.check("600", "BRL")
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT operation, allowed, codes, payout_id FROM decisions ORDER BY rowid"
            ).fetchall()
        finally:
            conn.close()
        assert [("check", 1, "", "po-9"), ("check", 0, "above_maximum_payout", None)] == rows


class TestAsync:
    def test_the_async_guard_logs_its_decisions_too(self, tmp_path: Path) -> None:
        path = tmp_path / "decisions.jsonl"

        async def main() -> list[str]:
            async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}),
                                        decision_log=JsonLinesDecisionLog(path)) as guard:
                await guard.check("1", "BRL")
                async with await guard.reserve("2", "BRL", payout_id="po-a"):
                    pass
            return [r.operation for r in read_decisions(path)]

        assert ["check", "reserve"] == asyncio.run(main())


class TestConfigured:
    @pytest.mark.parametrize(("name", "kind"), [("decisions.jsonl", JsonLinesDecisionLog),
                                                ("decisions.db", SqliteDecisionLog)])
    def test_decision_log_in_the_configuration(
        self, tmp_path: Path, name: str, kind: type[object]
    ) -> None:
        """``[decision_log] path`` is relative to the file; .db/.sqlite is a SQLite database."""
        config = tmp_path / "guard.toml"
        config.write_text(
            '[providers.luxtak]\nbase_url = "http://127.0.0.1:9"\n'
            'app_id_env = "ID"\napp_key_env = "KEY"\n'
            f'[decision_log]\npath = "{name}"\n',
            encoding="utf-8",
        )
        with PayoutGuard.from_config(config, env={"ID": "i", "KEY": "k"}) as guard:
            assert isinstance(guard.decision_log, kind)
            decision = guard.check("1", "BRL")  # the provider is down: a logged denial
        assert [decision] == [r.decision for r in read_decisions(tmp_path / name)]

    def test_a_tiny_max_bytes_is_refused(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="max_bytes"):
            PayoutGuard.from_config({"providers": {"luxtak": {
                "base_url": "http://127.0.0.1:9", "app_id_env": "ID", "app_key_env": "KEY"}},
                "decision_log": {"path": str(tmp_path / "d.jsonl"), "max_bytes": 10}},
                env={"ID": "i", "KEY": "k"})


def _log_checks(path: str, count: int) -> None:
    """A worker process: *count* checks through a guard logging to *path*."""
    with guard_with(JsonLinesDecisionLog(path)) as guard:
        for _ in range(count):
            guard.check("10", "BRL")


class TestProcesses:
    def test_processes_appending_to_one_file_never_break_a_line(self, tmp_path: Path) -> None:
        """Each batch is one write() to a file opened for appending: lines stay whole."""
        path = tmp_path / "decisions.jsonl"
        context = multiprocessing.get_context("spawn")
        workers = [context.Process(target=_log_checks, args=(str(path), 400)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert [0, 0, 0] == [worker.exitcode for worker in workers]
        records = list(read_decisions(path))  # raises on any broken line
        assert 1200 == len(records)
        assert 1200 == len({r.decision.decision_id for r in records})


class TestDropMetric:
    def test_dropped_records_are_counted_in_prometheus(self, tmp_path: Path) -> None:
        """payout_guard_decision_log_dropped_total counts what a failing sink dropped."""
        registry = CollectorRegistry()
        blocked = tmp_path / "a-directory"
        blocked.mkdir()
        sink = JsonLinesDecisionLog(blocked)
        with instrumentation.set_hooks([instrumentation.PrometheusHook(registry=registry)]):
            with guard_with(sink) as guard:
                for _ in range(4):
                    guard.check("10", "BRL")
                sink.close(timeout=0.1)  # still failing: dropped
                assert sink.flush()
            dropped = registry.get_sample_value("payout_guard_decision_log_dropped_total")
        assert 4.0 == dropped


class TestExit:
    def test_a_guard_nobody_closed_still_writes_its_records_at_exit(self, tmp_path: Path) -> None:
        """The sinks still running are closed (their queues written) when the process exits."""
        path = tmp_path / "decisions.jsonl"
        script = (
            "import sys\n"
            "from guard import JsonLinesDecisionLog, PayoutGuard\n"
            "from guard.testing import StaticFetcher\n"
            "g = PayoutGuard(StaticFetcher({'BRL': '10.00'}),\n"
            "                decision_log=JsonLinesDecisionLog(sys.argv[1]))\n"
            "for _ in range(100):\n"
            "    g.check('1', 'BRL')\n"
        )
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60,
                       capture_output=True)
        assert 100 == len(list(read_decisions(path)))
