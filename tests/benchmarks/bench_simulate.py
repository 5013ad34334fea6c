"""Time ``payout-guard simulate`` on a generated 10,000-row batch, against plain CSV parsing.

Run: ``.venv/bin/python tests/benchmarks/bench_simulate.py [--rows N]`` (not part of the
test suite). Prints, for the same generated file in the same run:

- the whole command (``python -m guard simulate ... --balances snap.json --report out.csv``)
  in a subprocess, as a user runs it (interpreter start-up included);
- the simulation in this process (read the batch, judge every row, summarize);
- the baseline: ``csv.DictReader`` over the same file turning each amount into a Decimal;

each the median of several rounds, with the ratio of the simulation to the baseline.
The batch mixes two providers, three currencies and fees; funds run out part-way, so both
allowed and denied paths (with holds listed in denials) are exercised.
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import structlog

from guard import BalanceSnapshot
from guard.cli._batch import read_batch
from guard.cli._simulation import Simulation, summarize
from guard.cli._snapshot import ProviderBalances, Snapshot
from guard.config import load_config

ROUNDS = 3
CONFIG = """\
default_provider = "luxcore"
[providers.luxcore]
api_key_env = "LUXCORE_API_KEY"
[providers.luxtak]
app_id = "LT"
app_key_env = "LUXTAK_APP_KEY"
[[rules]]
type = "reserve_margin"
percent = "5"
minimum = { ARS = "1000.00", BRL = "500.00" }
[[rules]]
type = "frozen_funds"
max_ratio = "0.5"
[[rules]]
type = "currency_minimums"
min_payout = { ARS = "100.00", BRL = "10.00", MXN = "50.00" }
min_remaining = { ARS = "500.00" }
[[rules]]
type = "max_payout"
limits = { BRL = "5000.00" }
[[rules]]
type = "max_balance_age"
seconds = 60
"""


def _write_inputs(folder: Path, rows: int) -> tuple[Path, Path, Path]:
    config = folder / "guard.toml"
    config.write_text(CONFIG, encoding="utf-8")
    now = datetime.now(UTC)
    balances = {
        "luxcore": (("ARS", "2500000.00", "100000.00"), ("MXN", "300000.00", "0.00")),
        "luxtak": (("BRL", "400000.00", None),),
    }
    snapshot = Snapshot(taken_at=now, providers={
        name: ProviderBalances(kind=name, balances=tuple(
            BalanceSnapshot(provider=name, currency=cur, available=Decimal(avail),
                            frozen=None if frozen is None else Decimal(frozen), as_of=now)
            for cur, avail, frozen in table))
        for name, table in balances.items()
    })
    snap = folder / "snap.json"
    snap.write_text(snapshot.dumps(), encoding="utf-8")
    batch = folder / "batch.csv"
    with batch.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["amount", "currency", "payout_id", "provider", "fee"])
        for i in range(rows):
            kind = i % 3
            if kind == 0:
                writer.writerow([f"{400 + i % 700}.{i % 100:02d}", "ARS", f"po-{i}", "", ""])
            elif kind == 1:
                writer.writerow([f"{90 + i % 300}.50", "BRL", f"po-{i}", "luxtak", "1.20"])
            else:
                writer.writerow([f"{60 + i % 200}", "MXN", f"po-{i}", "luxcore", ""])
    return config, snap, batch


def _median(func: Callable[[], object], rounds: int = ROUNDS) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), result


def _baseline(batch: Path) -> int:
    with batch.open(encoding="utf-8", newline="") as handle:
        return sum(1 for row in csv.DictReader(handle) if Decimal(row["amount"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config_path, snap, batch = _write_inputs(folder, args.rows)
        config = load_config(config_path)
        snapshot = Snapshot.model_validate_json(snap.read_text(encoding="utf-8"))

        def in_process() -> dict[str, object]:
            rows = read_batch(batch, config.provider_names).rows
            return summarize(Simulation(config, snapshot).run(rows)).document()

        command = [sys.executable, "-m", "guard", "simulate", str(batch), "--config",
                   str(config_path), "--balances", str(snap), "--report",
                   str(folder / "report.csv"), "--json", "--no-progress"]

        def whole_command() -> int:
            return subprocess.run(command, capture_output=True, check=True, timeout=300
                                  ).returncode

        base, count = _median(lambda: _baseline(batch))
        sim, summary = _median(in_process)
        cli, _ = _median(whole_command)
    assert isinstance(summary, dict)
    print(f"rows: {count}  allowed: {summary['allowed_rows']}  denied: {summary['denied_rows']}"
          f"  denied by code: {summary['denied']}")
    print(f"baseline (csv.DictReader + Decimal):      {base * 1000:9.1f} ms")
    print(f"simulation in process (read+judge+sum):  {sim * 1000:9.1f} ms "
          f"({sim / base:.0f}x baseline, {sim / args.rows * 1e6:.0f} us/row)")
    print(f"whole command `python -m guard simulate`: {cli * 1000:9.1f} ms "
          f"(budget: 10000 ms for 10,000 rows)")


if __name__ == "__main__":
    main()
