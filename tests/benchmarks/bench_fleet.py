"""Measure a fleet of payout workers on one LuxCore key: balance requests, 429s, funds paid out.

Run: ``PYTHONPATH=. .venv/bin/python tests/benchmarks/bench_fleet.py [--workers 1 4 8]
[--seconds 60] [--cache-ttl 5] [--refresh-after-commit 1] [--stores sqlite redis]`` (not part of
the test suite).

For each store and each N, N worker processes share one reservation store (a fresh
SQLite file in a temporary directory; a fresh namespace on a ``redis-server`` this script starts
on a free loopback port, skipped when there is none) and pay out against one ``LuxCoreEmulator``
in this process: 200,000.00 ARS available, 100 balance requests a minute (beyond them, LuxCore's
429), each withdrawal frozen at creation and completed 3 s later. Each worker builds
``PayoutGuard(LuxCoreFetcher(...), reservations=store, cache_ttl=...)`` and loops
``with guard.reserve("1000.00", "ARS", payout_id=...)``: ``POST /api/v1/withdrawals``, commit on
exit; a denied payout is retried 0.25 s later. The fleet asks for 4 payouts a second whatever N
is, so demand (240 in 60 s) slightly exceeds the funds (200 payouts). See ``tests/_fleet.py``.

Printed per (store, N): balance requests a minute, 429s, payouts a second in each half of the
run, share of the funds paid out, overspend, the denials' reason codes, and the ratios of
requests and payouts to the N=1 run of the same store. Targets (issue 15): 8 workers cost no more
balance requests than 1 and at most ceil(60 / cache_ttl) + 2 a minute, never a 429, the second
half at least half as fast as the first, at least 95% of the funds paid out, overspend 0.

Guard options of the fleet issue (``share_balances=True``, ``refresh_after_commit``, the
fetcher's ``requests_per_minute``) are passed when the guard has them; the script says which
are missing and measures the guard as it is.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

from tests._fleet import FleetPlan, FleetRun, guard_options, run_fleet
from tests._redis_server import start_redis


@contextmanager
def store_targets(stores: list[str], directory: Path) -> Iterator[dict[str, str]]:
    """Yield store name -> a target prefix; starts (and stops) a redis-server when asked for."""
    targets: dict[str, str] = {}
    if "sqlite" in stores:
        targets["sqlite"] = str(directory)
    server = None
    if "redis" in stores:
        binary = shutil.which("redis-server")
        if binary is None:
            print("redis-server is not installed: Redis skipped", file=sys.stderr)
        else:
            server = start_redis(binary)
            targets["redis"] = server.url
    try:
        yield targets
    finally:
        if server is not None:
            server.stop()  # terminates that process, by its pid


def fresh_target(store: str, prefix: str) -> str:
    """Return an unused store target: a new SQLite file or a new Redis namespace."""
    name = f"fleet-{uuid.uuid4().hex[:8]}"
    return f"{prefix}#{name}" if store == "redis" else str(Path(prefix) / f"{name}.db")


def ratio(value: Decimal, base: Decimal) -> str:
    return f"{value / base:.2f}x" if base else "-"


def verdicts(run: FleetRun, base: FleetRun | None) -> list[str]:
    """Return the targets this run missed."""
    missed = []
    per_minute_target = Decimal(math.ceil(60 / run.plan.cache_ttl) + 2)
    if run.requests_per_minute > per_minute_target:
        missed.append(f"requests/min {run.requests_per_minute} > {per_minute_target}")
    if base is not None and run.requests_per_minute > base.requests_per_minute:
        missed.append("more requests than N=1")
    if run.rate_limited:
        missed.append(f"{run.rate_limited} 429s")
    first, second = run.halves
    if second * 2 < first:
        missed.append("second half < half the first")
    if run.paid_share < Decimal("0.95"):
        missed.append(f"paid {run.paid_share:.1%} < 95%")
    if run.overspend:
        missed.append(f"overspend {run.overspend}")
    if run.errors:
        missed.append(f"{len(run.errors)} worker errors")
    return missed


def report(run: FleetRun, base: FleetRun | None, store: str) -> None:
    first, second = run.halves
    n1 = base if base is not None else run
    n1_paid = Decimal(len(n1.paid_at))
    print(
        f"{store:<7}{run.plan.workers:>3} {run.requests_per_minute:>9} {run.rate_limited:>6} "
        f"{first:>7} {second:>7} {run.paid_share:>7.1%} {run.overspend:>10} "
        f"{ratio(run.requests_per_minute, n1.requests_per_minute):>8} "
        f"{ratio(Decimal(len(run.paid_at)), n1_paid):>8}",
        flush=True,
    )
    denials = ", ".join(f"{code} {count}" for code, count in sorted(run.denials.items()))
    print(f"{'':10}paid {len(run.paid_at)} x {run.plan.payout}, left: available "
          f"{run.available}, frozen {run.frozen}; denials: {denials or 'none'}")
    for line in run.errors[:3]:
        print(f"{'':10}worker error: {line}")
    missed = verdicts(run, base)
    print(f"{'':10}targets: {'all met' if not missed else 'MISSED ' + '; '.join(missed)}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--cache-ttl", type=float, default=5.0)
    parser.add_argument("--refresh-after-commit", type=float, default=1.0,
                        help="seconds; a negative value passes None (no refresh after commit)")
    parser.add_argument("--stores", nargs="+", choices=["sqlite", "redis"],
                        default=["sqlite", "redis"])
    args = parser.parse_args()
    refresh = None if args.refresh_after_commit < 0 else args.refresh_after_commit
    probe = FleetPlan(store="", workers=1, seconds=args.seconds, cache_ttl=args.cache_ttl,
                      refresh_after_commit=refresh)
    _, _, missing = guard_options(probe)
    if missing:
        print("This guard lacks the fleet options " + ", ".join(missing) + ": measuring it "
              "without them (the figures show the guard before issue 15).", flush=True)
    print(f"LuxCore emulator: {probe.funds} ARS, {probe.provider_rpm} balance requests/min, "
          f"withdrawals complete after {probe.complete_after} s; fleet asks "
          f"{probe.fleet_rate}/s x {probe.payout}; {args.seconds:g} s a run, cache_ttl "
          f"{args.cache_ttl:g}, refresh_after_commit {refresh}. Target: requests/min <= "
          f"{math.ceil(60 / args.cache_ttl) + 2}.", flush=True)
    print(f"{'store':<7}{'N':>3} {'req/min':>9} {'429s':>6} {'1st/s':>7} {'2nd/s':>7} "
          f"{'paid':>7} {'overspend':>10} {'req vs1':>8} {'paid vs1':>8}", flush=True)
    with tempfile.TemporaryDirectory() as directory, \
            store_targets(args.stores, Path(directory)) as targets:
        for store, prefix in targets.items():
            base: FleetRun | None = None
            for workers in args.workers:
                plan = FleetPlan(store=fresh_target(store, prefix), workers=workers,
                                 seconds=args.seconds, cache_ttl=args.cache_ttl,
                                 refresh_after_commit=refresh)
                run = run_fleet(plan)
                report(run, base, store)
                if workers == 1:
                    base = run


if __name__ == "__main__":
    main()
