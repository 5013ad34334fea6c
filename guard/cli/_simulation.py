"""Dry-running a batch of payouts against one fixed balance snapshot.

One guard over every provider's ``StaticFetcher`` holding the snapshot's balances, with the
configured rules and routing, and a clock stopped at the moment the snapshot was taken. A row
naming a provider is pinned to it; any other row is routed as the live guard would (or
pinned to ``--provider``), and its outcome names the chosen provider. Payouts are
judged in file order with ``reserve`` and every allowed one is committed, so it keeps holding
its funds (``settle_lag`` is effectively infinite) and later payouts see less. Nothing is
sent anywhere; the configured ``mode`` is ignored (a simulation always consumes funds).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from guard._config_schema import GuardConfig
from guard._models import Candidate
from guard._sync import PayoutGuard
from guard.cli._batch import InvalidRow, Row
from guard.cli._snapshot import Snapshot
from guard.errors import ConfigurationError, InvalidPayoutRequest, PayoutDenied, ProviderUnavailable
from guard.fetchers import BalanceFetcher
from guard.stores import InMemoryReservations
from guard.testing import FailingFetcher, StaticFetcher

__all__ = ["Outcome", "Simulation", "Summary", "summarize", "write_report"]

Status = Literal["allowed", "denied", "duplicate", "invalid"]
# Committed payouts must keep counting for the whole run. The simulation's clock stands still,
# so the longest ttl and retention a store accepts (30 days) never pass.
_FOREVER = 30 * 86_400.0
REPORT_COLUMNS = ("line", "payout_id", "provider", "amount", "currency", "fee", "status",
                  "codes", "max_payable", "message", "candidates")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the simulation decided for one row of the batch."""

    line: int
    status: Status
    payout_id: str | None = None
    provider: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    fee: Decimal | None = None
    codes: tuple[str, ...] = ()
    max_payable: Decimal | None = None
    message: str = ""
    candidates: tuple[Candidate, ...] = ()

    def record(self) -> dict[str, Any]:
        """Return the report row (amounts as strings, codes joined by ``;``)."""
        def text(value: Decimal | None) -> str | None:
            return None if value is None else format(value, "f")

        return {
            "line": self.line, "payout_id": self.payout_id, "provider": self.provider,
            "amount": text(self.amount), "currency": self.currency, "fee": text(self.fee),
            "status": self.status, "codes": ";".join(self.codes),
            "max_payable": text(self.max_payable), "message": self.message,
            "candidates": ";".join(
                f"{c.provider}:{'allowed' if c.allowed else 'denied'}:{text(c.max_payable)}"
                for c in self.candidates
            ),
        }


@dataclass(slots=True)
class Summary:
    """Totals of a simulation: allowed count and sum per currency, denials per reason."""

    rows: int = 0
    allowed: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    denied: Counter[str] = field(default_factory=Counter)
    denied_rows: int = 0
    duplicate_rows: int = 0
    invalid: list[Outcome] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        """Return the JSON-ready summary (amounts as strings)."""
        return {
            "rows": self.rows,
            "allowed": {cur: {"count": n, "total": format(total, "f")}
                        for cur, (n, total) in sorted(self.allowed.items())},
            "allowed_rows": sum(n for n, _ in self.allowed.values()),
            "denied": dict(sorted(self.denied.items())),
            "denied_rows": self.denied_rows,
            "duplicate_rows": self.duplicate_rows,
            "invalid_rows": len(self.invalid),
            "invalid": [{"line": o.line, "field": o.codes[0] if o.codes else "",
                         "message": o.message} for o in self.invalid],
        }


def summarize(outcomes: Iterable[Outcome]) -> Summary:
    """Return the totals of *outcomes*."""
    summary = Summary()
    for outcome in outcomes:
        summary.rows += 1
        if outcome.status == "allowed" and outcome.currency and outcome.amount is not None:
            count, total = summary.allowed.get(outcome.currency, (0, Decimal(0)))
            summary.allowed[outcome.currency] = (count + 1, total + outcome.amount)
        elif outcome.status == "denied":
            summary.denied_rows += 1
            summary.denied.update(outcome.codes)
        elif outcome.status == "duplicate":
            summary.duplicate_rows += 1
        elif outcome.status == "invalid":
            summary.invalid.append(outcome)
    return summary


class Simulation:
    """A guard over a fixed snapshot of every configured provider, routing as configured.

    Args:
        config: The configuration whose rules and routing are tried.
        snapshot: The balances to start from.
        provider: The provider for rows without one (default: routed).
    """

    def __init__(self, config: GuardConfig, snapshot: Snapshot, *,
                 provider: str | None = None) -> None:
        self._provider = provider
        self._store = InMemoryReservations(retention=_FOREVER)
        now = snapshot.taken_at.timestamp()
        names = config.pick_providers()
        self.guard = PayoutGuard(
            [_fetcher(name, snapshot, lambda: now) for name in names], config.ruleset,
            mode="enforce", cache_ttl=60.0, reservations=self._store,
            fail_open=config.fail_open, settle_lag=_FOREVER, hold_ttl=_FOREVER,
            clock=lambda: now, routing=config.routing.policy, routes=config.routing.routes,
        )

    def run(self, rows: Iterable[Row | InvalidRow],
            progress: Callable[[], None] | None = None) -> list[Outcome]:
        """Judge *rows* in order, consuming funds as payouts are allowed."""
        outcomes: list[Outcome] = []
        for row in rows:
            outcomes.append(self._one(row))
            if progress is not None:
                progress()
        return outcomes

    def _one(self, row: Row | InvalidRow) -> Outcome:
        if isinstance(row, InvalidRow):
            return _invalid(row)
        return self._judge(row, row.provider or self._provider)

    def _judge(self, row: Row, pinned: str | None) -> Outcome:
        try:
            reservation = self.guard.reserve(row.amount, row.currency, payout_id=row.payout_id,
                                             fee=row.fee, provider=pinned)
        except PayoutDenied as denied:
            decision = denied.decision
            if "duplicate_payout" in decision.codes:
                return Outcome(row.line, "duplicate", row.payout_id, decision.provider,
                               row.amount, row.currency, row.fee, ("duplicate_payout",),
                               decision.max_payable, decision.reasons[0].message,
                               decision.candidates)
            return Outcome(
                row.line, "denied", row.payout_id, decision.provider, row.amount, row.currency,
                row.fee, decision.codes, decision.max_payable,
                "; ".join(f"{r.code}: {r.message}" for r in decision.reasons),
                decision.candidates,
            )
        except InvalidPayoutRequest as exc:  # pragma: no cover - rows are checked when read
            return _invalid(InvalidRow(row.line, "(row)", str(exc), row.payout_id))
        decision = reservation.decision
        reservation.commit()
        return Outcome(row.line, "allowed", row.payout_id, decision.provider, row.amount,
                       row.currency, row.fee, (), decision.max_payable, "",
                       decision.candidates)


def _fetcher(name: str, snapshot: Snapshot, clock: Callable[[], float]) -> BalanceFetcher:
    entry = snapshot.providers.get(name)
    if entry is None or entry.error is not None:
        why = "absent from the balance snapshot" if entry is None else (
            f"unavailable when the snapshot was taken ({entry.error})"
        )
        return FailingFetcher(ProviderUnavailable(why, provider=name), name=name)
    return StaticFetcher(
        {s.currency: {"available": s.available, "frozen": s.frozen, "total": s.total,
                      "as_of": s.as_of} for s in entry.balances},
        name=name, clock=clock,
    )


def _invalid(row: InvalidRow) -> Outcome:
    return Outcome(row.line, "invalid", row.payout_id, codes=(row.field,),
                   message=f"{row.field}: {row.message}")


def write_report(path: str | Path, outcomes: Iterable[Outcome], summary: Summary) -> None:
    """Write the per-payout report: ``.csv`` (one row per payout) or ``.json`` (with summary).

    Raises:
        ConfigurationError: the extension is neither, or the file cannot be written.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in {".csv", ".json"}:
        raise ConfigurationError(f"unknown report type {suffix or '(none)'!r}; accepted: "
                                 ".csv, .json", source=str(path))
    try:
        with path.open("w", encoding="utf-8", newline="") as out:
            if suffix == ".csv":
                writer = csv.DictWriter(out, fieldnames=REPORT_COLUMNS)
                writer.writeheader()
                writer.writerows(outcome.record() for outcome in outcomes)
            else:
                document = {"summary": summary.document(),
                            "payouts": [outcome.record() for outcome in outcomes]}
                json.dump(document, out, indent=2)
                out.write("\n")
    except OSError as exc:
        raise ConfigurationError(f"cannot write the report: {exc.strerror or exc}",
                                 source=str(path)) from None
