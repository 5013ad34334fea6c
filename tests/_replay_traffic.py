"""Payout traffic through a real guard that logs its decisions: what replay tests read back."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from guard import (
    Decision,
    DecisionLog,
    JsonLinesDecisionLog,
    PayoutDenied,
    PayoutGuard,
    SqliteDecisionLog,
)
from guard.testing import FakeClock, StaticFetcher
from rules import CurrencyMinimums, FrozenFunds, MaxBalanceAge, MaxPayout, Rule

# The rules of the traffic; RULES_TOML says the same in a configuration file.
RULES: list[Rule] = [
    MaxPayout({"BRL": "900", "ARS": "50000"}),
    CurrencyMinimums({"BRL": "5"}),
    MaxBalanceAge(45),
    FrozenFunds(max_ratio="0.5"),
]


def traffic(
    log_path: Path, decisions: int, *, seed: int = 7, sqlite: bool = False
) -> list[Decision]:
    """Run *decisions* checks and reserves through a real guard logging to *log_path*.

    The log is a JSON-lines file, or with *sqlite* a SQLite database. It is closed (every
    record written) on return.
    """
    rng = random.Random(seed)
    clock = FakeClock()
    luxtak = StaticFetcher({"BRL": "3000.00", "ARS": "90000.00"}, name="luxtak", clock=clock)
    pagsmile = StaticFetcher({"BRL": "1500.00"}, name="pagsmile", clock=clock)
    made: list[Decision] = []
    sink: DecisionLog = (
        SqliteDecisionLog(log_path) if sqlite else JsonLinesDecisionLog(log_path, max_bytes=None)
    )
    with PayoutGuard([luxtak, pagsmile], RULES, clock=clock, cache_ttl=20,
                     decision_log=sink) as guard:
        open_holds = []
        while len(made) < decisions:
            roll = rng.random()
            currency = "ARS" if rng.random() < 0.15 else "BRL"
            amount = Decimal(rng.randrange(100, 6_000_000 if currency == "ARS" else 120_000)) / 100
            if roll < 0.05:
                fetcher = rng.choice([luxtak, pagsmile])
                available = Decimal(rng.randrange(0, 400_000)) / 100
                frozen = Decimal(rng.randrange(0, 5_000_000)) / 100 if rng.random() < 0.3 else None
                # Now and then a balance the provider stamped long ago: stale_balance.
                as_of = (datetime.fromtimestamp(clock.time() - 100, UTC)
                         if rng.random() < 0.15 else None)
                fetcher.set("BRL", available, frozen=frozen, as_of=as_of)
                continue
            clock.advance(rng.choice([0, 0, 1, 3, 30, 50]))
            provider = rng.choice([None, None, None, "luxtak", "pagsmile"])
            if currency == "ARS":
                provider = rng.choice([None, "luxtak"])
            if roll < 0.45:
                try:
                    reservation = guard.reserve(amount, currency, payout_id=f"po-{len(made)}",
                                                provider=provider)
                except PayoutDenied as denied:
                    made.append(denied.decision)
                    continue
                made.append(reservation.decision)
                open_holds.append(reservation)
                if len(open_holds) > 6:
                    ending = open_holds.pop(rng.randrange(len(open_holds)))
                    ending.commit() if rng.random() < 0.5 else ending.release()
            else:
                payout_id = f"po-{rng.randrange(len(made) + 1)}" if rng.random() < 0.2 else None
                made.append(guard.check(amount, currency, payout_id=payout_id,
                                        provider=provider))
    return made


RULES_TOML = """
[[rules]]
type = "max_payout"
limits = { BRL = "900", ARS = "50000" }

[[rules]]
type = "currency_minimums"
min_payout = { BRL = "5" }

[[rules]]
type = "max_balance_age"
seconds = 45

[[rules]]
type = "frozen_funds"
max_ratio = "0.5"
"""
