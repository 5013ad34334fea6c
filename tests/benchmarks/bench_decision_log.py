"""What a decision log adds to an allowed check, and how fast ``replay`` judges a log again.

Run: ``.venv/bin/python tests/benchmarks/bench_decision_log.py`` (not part of the test suite).
Each round times an allowed check without a sink (the baseline), with a
``JsonLinesDecisionLog`` and with a ``SqliteDecisionLog``, in turn, so that a busy machine
slows them alike; the fastest round counts. The sinks' writer threads run during the timing
(their work is what a busy service pays too: the GIL is shared). Then it replays the JSON-lines
log it wrote and prints decisions per second. ``--check`` exits 1 when the JSON-lines sink
adds more than 30% to an allowed check.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

from guard import (
    JsonLinesDecisionLog,
    PayoutGuard,
    SqliteDecisionLog,
    instrumentation,
    read_decisions,
)
from guard._replay import Replayer, ReplaySummary
from guard.testing import StaticFetcher
from rules import CurrencyMinimums, FrozenFunds, MaxBalanceAge, MaxPayout, ReserveMargin, Rule

ROUNDS = 7
CALLS = 10_000
MAX_ADDED = 0.30

RULES: list[Rule] = [
    MaxPayout({"BRL": "5000"}), CurrencyMinimums({"BRL": "1"}), MaxBalanceAge(300),
    FrozenFunds(max_ratio="0.9"), ReserveMargin(percent="5"),
]


def guard(sink: object = None) -> PayoutGuard:
    fetcher = StaticFetcher({"BRL": {"available": "1000000.00", "frozen": "10.00"}})
    return PayoutGuard(fetcher, RULES, cache_ttl=3600,
                       decision_log=sink)  # type: ignore[arg-type]  # one of the sinks, or None


def per_call_us(g: PayoutGuard) -> float:
    check = g.check
    start = time.perf_counter()
    for _ in range(CALLS):
        check("10.00", "BRL")
    return (time.perf_counter() - start) / CALLS * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 above +30%")
    args = parser.parse_args()
    # Metrics off: what a check costs itself (bench_instrumentation.py prices the hooks).
    instrumentation.set_hooks([])
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        jsonl = Path(tmp) / "decisions.jsonl"
        guards = {
            "no sink (baseline)": guard(),
            "JsonLinesDecisionLog": guard(JsonLinesDecisionLog(jsonl, max_bytes=None,
                                                               max_pending=1_000_000)),
            "SqliteDecisionLog": guard(SqliteDecisionLog(Path(tmp) / "decisions.db",
                                                         max_pending=1_000_000)),
        }
        best = dict.fromkeys(guards, float("inf"))
        for _ in range(ROUNDS):
            for name, g in guards.items():
                best[name] = min(best[name], per_call_us(g))
        for g in guards.values():
            g.close()
        base = best["no sink (baseline)"]
        print(f"allowed check, five built-ins, {CALLS} calls x {ROUNDS} rounds (fastest round)")
        for name, us in best.items():
            print(f"  {name:<22} {us:7.2f} us   {us / base:5.2f}x baseline")
        records = list(read_decisions(jsonl))
        replayer = Replayer(RULES)
        summary = ReplaySummary()
        start = time.perf_counter()
        for replayed in replayer.replay_all(records):
            summary.add(replayed)
        elapsed = time.perf_counter() - start
        start = time.perf_counter()
        count = sum(1 for _ in read_decisions(jsonl))
        reading = time.perf_counter() - start
        print(f"replay: {len(records)} decisions judged again in {elapsed:.2f} s = "
              f"{len(records) / elapsed:,.0f}/s ({summary.unchanged} unchanged); reading the "
              f"log: {count / reading:,.0f}/s")
        added = best["JsonLinesDecisionLog"] / base - 1
        if args.check and added > MAX_ADDED:
            print(f"FAIL: the JSON-lines sink adds {added:.0%} (limit {MAX_ADDED:.0%})")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
