"""Time ``PayoutGuard.check`` against an inline balance comparison, in the same run.

Run: ``.venv/bin/python tests/benchmarks/bench_check.py`` (not part of the test suite).
Prints the median microseconds per call over several rounds and the ratio to the baseline.
structlog is configured as structlog's own performance guide recommends for production: a
level-filtering bound logger at WARNING, cached on first use. One extra row shows the cost of
leaving ``cache_logger_on_first_use`` off. Pass ``--log-all`` to render every decision (to
/dev/null) instead.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from guard import PayoutGuard
from guard.testing import StaticFetcher
from rules import (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
)

ROUNDS = 7
CALLS = 20_000


def median_us(func: Callable[[], object], calls: int = CALLS) -> float:
    """Return the median over ROUNDS of the mean microseconds per call."""
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            func()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def per_second(func: Callable[[], object], threads: int, seconds: float = 2.0) -> float:
    """Return the calls per second of *func* made by *threads* threads together."""
    stop = time.perf_counter() + seconds
    done = [0] * threads

    def work(slot: int) -> None:
        calls = 0
        while time.perf_counter() < stop:
            func()
            calls += 1
        done[slot] = calls

    workers = [threading.Thread(target=work, args=(slot,)) for slot in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--log-all", action="store_true")
    args = parser.parse_args()
    if args.log_all:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(open("/dev/null", "w")))  # noqa: SIM115, PTH123 - lives for the run
    else:
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            cache_logger_on_first_use=True,
        )

    fetcher = StaticFetcher({"ARS": {"available": "1000000.00", "frozen": "30000.00"}})
    five_rules: list[Rule] = [
        ReserveMargin(percent="5", minimum={"ARS": "1000.00"}),
        FrozenFunds(max_ratio="0.5"),
        CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"}),
        MaxPayout({"ARS": "500000"}),
        MaxBalanceAge(60),
    ]
    guard = PayoutGuard(fetcher, five_rules, cache_ttl=3600)
    bare = PayoutGuard(fetcher, cache_ttl=3600)
    amount = Decimal("2500.00")
    available, reserve = Decimal("1000000.00"), Decimal("50000.00")

    def baseline() -> bool:
        return available - reserve >= amount

    assert guard.check(amount, "ARS").allowed
    assert not guard.check("600000.00", "ARS").allowed

    base = median_us(baseline, CALLS * 10)
    rows = [
        ("baseline: inline available - reserve >= amount", base),
        ("check, SufficientFunds only (allowed)", median_us(lambda: bare.check(amount, "ARS"))),
        ("check, five rules (allowed)", median_us(lambda: guard.check(amount, "ARS"))),
        ("check, five rules, str amount", median_us(lambda: guard.check("2500.00", "ARS"))),
        ("check, five rules (denied)", median_us(lambda: guard.check("600000.00", "ARS"))),
        ("max_payable, five rules", median_us(lambda: guard.max_payable("ARS"))),
    ]
    rates = [(n, per_second(lambda: guard.check(amount, "ARS"), n)) for n in (1, 4)]
    if not args.log_all:
        # Every decision then re-binds structlog's lazy proxy: what the cache saves.
        structlog.configure(cache_logger_on_first_use=False)
        uncached = PayoutGuard(fetcher, five_rules, cache_ttl=3600)
        rows.append((
            "check, five rules, logger not cached",
            median_us(lambda: uncached.check(amount, "ARS")),
        ))
    print(f"python {sys.version.split()[0]}, {ROUNDS} rounds, median of per-call means")
    print(f"{'case':<50} {'us/call':>10} {'x baseline':>12}")
    for name, us in rows:
        print(f"{name:<50} {us:>10.2f} {us / base:>12.0f}")
    print("check, five rules, throughput (threads share one GIL): " + ", ".join(
        f"{n} thread{'s' if n > 1 else ''} {rate:,.0f}/s" for n, rate in rates))


if __name__ == "__main__":
    main()
