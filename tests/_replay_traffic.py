"""Payout traffic through a real guard that logs its decisions: what replay tests read back."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from guard import (
    BalanceSnapshot,
    Decision,
    DecisionLog,
    JsonLinesDecisionLog,
    Mode,
    PayoutDenied,
    PayoutGuard,
    Reservation,
    SqliteDecisionLog,
)
from guard.testing import FailingFetcher, FakeClock, StaticFetcher
from rules import (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    any_of,
    when,
)

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
        open_holds: list[Reservation] = []
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
                _keep_open(open_holds, reservation, rng)
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


class TwoAccounts:
    """A provider reporting two accounts per currency (BRL, KWD), one with frozen funds."""

    name = "multi"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.balances = {("BRL", "a1"): ("500.00", None), ("BRL", "a2"): ("2000.00", "100.00"),
                         ("KWD", "a1"): ("10.000", None), ("KWD", "a2"): ("100.500", "3.000")}

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        as_of = datetime.fromtimestamp(self.clock(), UTC)
        return [
            BalanceSnapshot(provider="multi", currency=code, available=Decimal(available),
                            frozen=None if frozen is None else Decimal(frozen), as_of=as_of,
                            account=account)
            for (code, account), (available, frozen) in self.balances.items()
            if currency in (None, code)
        ]


# Rules of the varied traffic: reserves of a total, frozen funds watched in a scope (with our
# own payouts in flight), an any_of with a hole, minimums in three exponents, staleness.
VARIED_RULES: list[Rule] = [
    ReserveMargin(percent="2.5", minimum={"BRL": "10.00"}, basis="total"),
    when(FrozenFunds(max_ratio="0.4", when_unknown="warn"), currency=["BRL", "KWD", "CLP"]),
    CurrencyMinimums(min_payout={"BRL": "5", "KWD": "0.5"}, min_remaining={"CLP": "1000"}),
    any_of(MaxPayout({"BRL": "900"}), CurrencyMinimums(min_payout={"BRL": "1500"})),
    MaxBalanceAge(45),
]
_EXPONENT = {"BRL": 2, "CLP": 0, "KWD": 3}


def _keep_open(open_holds: list[Reservation], reservation: Reservation,
               rng: random.Random) -> None:
    """Keep *reservation* open; past six open, end one of them at random (commit or release)."""
    open_holds.append(reservation)
    if len(open_holds) > 6:
        ending = open_holds.pop(rng.randrange(len(open_holds)))
        ending.commit() if rng.random() < 0.5 else ending.release()


def varied_traffic(log_path: Path, decisions: int, *, seed: int, mode: Mode) -> list[Decision]:
    """Run *decisions* checks and reserves logging to *log_path*, with what :func:`traffic` lacks.

    Fees, accounts (a provider with two), CLP and KWD besides BRL, a provider that is always
    down among a currency's candidates, frozen funds and totals, balances gone stale, and
    *mode* (``"dry_run"`` too).
    """
    rng = random.Random(seed)
    clock = FakeClock()
    luxtak = StaticFetcher({"BRL": "3000.00", "CLP": "900000", "KWD": "50.000"}, name="luxtak",
                           clock=clock)
    made: list[Decision] = []
    sink = JsonLinesDecisionLog(log_path, max_bytes=None)
    with PayoutGuard([luxtak, FailingFetcher(name="down"), TwoAccounts(clock)], VARIED_RULES,
                     clock=clock, cache_ttl=20, mode=mode, decision_log=sink,
                     # Routed over the two without accounts; "multi" only when pinned.
                     routes={code: ["luxtak", "down"] for code in _EXPONENT}) as guard:
        open_holds: list[Reservation] = []
        while len(made) < decisions:
            currency = rng.choice(["BRL", "BRL", "CLP", "KWD"])
            exponent = _EXPONENT[currency]
            amount = Decimal(rng.randrange(1, 400_000 if currency == "CLP" else 200_000))
            amount = amount.scaleb(-exponent)
            fee = Decimal(rng.randrange(0, 500)).scaleb(-exponent) if rng.random() < 0.5 else None
            roll = rng.random()
            if roll < 0.05:
                available = Decimal(rng.randrange(0, 400_000)).scaleb(-exponent)
                frozen = (Decimal(rng.randrange(0, 400_000)).scaleb(-exponent)
                          if rng.random() < 0.4 else None)
                total = (available + (frozen or 0) + Decimal(rng.randrange(0, 1000)).scaleb(
                    -exponent) if rng.random() < 0.3 else None)
                as_of = (datetime.fromtimestamp(clock.time() - 100, UTC)
                         if rng.random() < 0.15 else None)
                luxtak.set(currency, available, frozen=frozen, total=total, as_of=as_of)
                continue
            clock.advance(rng.choice([0, 0, 1, 3, 30, 50]))
            provider, account = rng.choice([None, None, "luxtak"]), None
            if currency != "CLP" and rng.random() < 0.3:
                provider, account = "multi", rng.choice(["a1", "a2"])
            if roll < 0.45:
                try:
                    reservation = guard.reserve(amount, currency, payout_id=f"po-{len(made)}",
                                                provider=provider, account=account, fee=fee)
                except PayoutDenied as denied:
                    made.append(denied.decision)
                    continue
                made.append(reservation.decision)
                if reservation.state != "pending":
                    continue  # dry run: nothing held
                _keep_open(open_holds, reservation, rng)
            else:
                payout_id = f"po-{rng.randrange(len(made) + 1)}" if rng.random() < 0.2 else None
                made.append(guard.check(amount, currency, payout_id=payout_id,
                                        provider=provider, account=account, fee=fee))
    return made
