"""Time ``PayoutGuard.check`` against an inline balance comparison, in the same run.

Run: ``.venv/bin/python tests/benchmarks/bench_check.py`` (not part of the test suite).
Every round times the baseline and each case in turn, so that a busy machine slows them alike;
it prints the fastest round's microseconds per call (the least disturbed, as ``timeit``
advises) and the ratio to the baseline. ``--check`` exits 1 unless an allowed check with the
five built-ins costs at most 100x the baseline and a denied one at most 3x an allowed one.
structlog is configured as structlog's own performance guide recommends for production: a
level-filtering bound logger at WARNING, cached on first use. One extra row shows the cost of
leaving ``cache_logger_on_first_use`` off. Pass ``--log-all`` to render every decision (to
/dev/null) instead.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal

import structlog

from guard import AsyncPayoutGuard, PayoutGuard, instrumentation
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
BATCH = 1_000
MAX_ALLOWED_RATIO = 100  # an allowed check, five built-ins, against the inline baseline
MAX_DENIED_RATIO = 3  # a denied check against an allowed one


def mean_us(func: Callable[[], object], calls: int = CALLS) -> float:
    """Return the mean microseconds per call of *calls* calls of *func*."""
    start = time.perf_counter()
    for _ in range(calls):
        func()
    return (time.perf_counter() - start) / calls * 1e6


def fastest_us(
    cases: dict[str, tuple[Callable[[], object], int, int]],
) -> dict[str, float]:
    """Return, per case, the fastest round's mean; each round times every case in turn.

    A case is ``(func, calls, batch)``: *func* makes *batch* calls each time it is called.
    """
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, (func, calls, batch) in cases.items():
            samples[name].append(mean_us(func, calls) / batch)
    return {name: min(times) for name, times in samples.items()}


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
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    # Metrics off: what a check costs itself (bench_instrumentation.py prices the hooks).
    instrumentation.set_hooks([])
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
    # The same check awaited on AsyncPayoutGuard, the balance cached (warm), in batches of
    # BATCH awaits per run of the loop so that starting the loop is not what is timed.
    aguard = AsyncPayoutGuard(fetcher, five_rules, cache_ttl=3600)
    loop = asyncio.new_event_loop()

    async def awaited(times: int) -> None:
        for _ in range(times):
            await aguard.check(amount, "ARS")

    loop.run_until_complete(awaited(1))

    timed = fastest_us({
        "baseline: inline available - reserve >= amount": (baseline, CALLS * 10, 1),
        "check, SufficientFunds only (allowed)": (lambda: bare.check(amount, "ARS"), CALLS, 1),
        "check, five rules (allowed)": (lambda: guard.check(amount, "ARS"), CALLS, 1),
        "check, five rules, str amount": (lambda: guard.check("2500.00", "ARS"), CALLS, 1),
        "check, five rules (denied)": (lambda: guard.check("600000.00", "ARS"), CALLS, 1),
        "max_payable, five rules": (lambda: guard.max_payable("ARS"), CALLS, 1),
        "await AsyncPayoutGuard.check, five rules (allowed)": (
            lambda: loop.run_until_complete(awaited(BATCH)), CALLS // BATCH, BATCH
        ),
    })
    rows = list(timed.items())
    base = rows[0][1]
    rates = [(n, per_second(lambda: guard.check(amount, "ARS"), n)) for n in (1, 4)]
    if not args.log_all:
        # Every decision then re-binds structlog's lazy proxy: what the cache saves.
        structlog.configure(cache_logger_on_first_use=False)
        uncached = PayoutGuard(fetcher, five_rules, cache_ttl=3600)
        rows.append((
            "check, five rules, logger not cached",
            min(mean_us(lambda: uncached.check(amount, "ARS")) for _ in range(ROUNDS)),
        ))
    print(f"python {sys.version.split()[0]}, {ROUNDS} rounds, fastest round's per-call mean")
    print(f"{'case':<50} {'us/call':>10} {'x baseline':>12}")
    for name, us in rows:
        print(f"{name:<50} {us:>10.2f} {us / base:>12.0f}")
    print("check, five rules, throughput (threads share one GIL): " + ", ".join(
        f"{n} thread{'s' if n > 1 else ''} {rate:,.0f}/s" for n, rate in rates))
    async_ratio = (timed["await AsyncPayoutGuard.check, five rules (allowed)"]
                   / timed["check, five rules (allowed)"])
    print(f"async check / sync check: {async_ratio:.2f}x (target <= 2)")
    allowed = timed["check, five rules (allowed)"] / base
    denied = timed["check, five rules (denied)"] / timed["check, five rules (allowed)"]
    verdict = allowed <= MAX_ALLOWED_RATIO and denied <= MAX_DENIED_RATIO
    print(f"targets: allowed {allowed:.0f}x baseline (<= {MAX_ALLOWED_RATIO}), denied "
          f"{denied:.1f}x allowed (<= {MAX_DENIED_RATIO}): {'met' if verdict else 'MISSED'}")
    if args.check and not verdict:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
