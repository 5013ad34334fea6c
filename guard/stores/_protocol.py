"""What a reservation store is: the one place where in-flight payouts hold funds.

A *hold* is a payout that has been allowed but that the provider's balance may not show yet.
It counts against spendable funds while it is

- ``pending`` (allowed, not yet submitted) and not past ``expires_at``, or
- ``committed`` (submitted) after ``counted_since`` = ``snapshot.as_of - settle_lag``: a
  balance fetched before that moment cannot reflect it yet.

``try_hold`` is the atomic check-and-hold that stops twenty workers spending the same funds:
the store adds the hold only if the holds that count, plus this one, stay within ``ceiling``.
All times are seconds since the epoch on the guard's clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal, Protocol, runtime_checkable

from rules.money import ADD

__all__ = ["Hold", "HoldOutcome", "HoldState", "ReservationStore", "balance_key", "total_held"]

HoldState = Literal["pending", "committed"]


def balance_key(provider: str, account: str | None, currency: str) -> str:
    """Return the key under which holds on one balance are summed."""
    return f"{provider}|{account or ''}|{currency}"


def total_held(holds: Iterable[Hold]) -> Decimal:
    """Return what *holds* take from spendable together, computed in the money context."""
    total = Decimal(0)
    for hold in holds:
        total = ADD(total, hold.held)
    return total


@dataclass(frozen=True, slots=True)
class Hold:
    """One payout's claim on a balance.

    Attributes:
        payout_id: The caller's idempotency key; unique within a store.
        key: The balance it draws on (:func:`balance_key`).
        currency: ISO 4217 code.
        amount: The payout amount; fee: the provider fee (both major units).
        state: ``"pending"`` until committed.
        created_at: When the hold was taken.
        expires_at: When a pending hold stops counting (a crashed worker frees its funds).
        committed_at: When the payout was submitted, for committed holds.
    """

    payout_id: str
    key: str
    currency: str
    amount: Decimal
    fee: Decimal
    state: HoldState
    created_at: float
    expires_at: float
    committed_at: float | None = None

    @property
    def held(self) -> Decimal:
        """Return what the hold takes from spendable: ``amount + fee``."""
        return ADD(self.amount, self.fee)

    def counts(self, *, now: float, counted_since: float) -> bool:
        """Return whether this hold still reduces spendable (see the module docstring)."""
        if self.state == "pending":
            return now < self.expires_at
        return self.committed_at is not None and self.committed_at > counted_since

    def same_request(self, other: Hold) -> bool:
        """Return whether *other* asks for exactly what this hold holds."""
        return (self.key, self.currency, self.amount, self.fee) == (
            other.key, other.currency, other.amount, other.fee,
        )

    def committed(self, now: float) -> Hold:
        """Return this hold marked as submitted at *now*."""
        return replace(self, state="committed", committed_at=now)


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What ``try_hold`` did.

    Attributes:
        status: ``"held"`` (new hold written), ``"existing"`` (the same payout already holds;
            nothing written), ``"conflict"`` (the payout id holds a *different* request),
            ``"over_ceiling"`` (not enough room; nothing written).
        hold: The new hold, or the existing one for ``existing``/``conflict``.
        counted: The total of counting holds on the key when the store decided (before adding).
    """

    status: Literal["held", "existing", "conflict", "over_ceiling"]
    hold: Hold | None
    counted: Decimal


@runtime_checkable
class ReservationStore(Protocol):
    """Where holds live: in memory, in SQLite, in Redis. Every method is atomic."""

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* if the counting holds on its key plus ``hold.held`` stay <= *ceiling*.

        A pending hold with the same payout id that has expired is replaced; any other hold with
        the same payout id makes the outcome ``existing`` (same request) or ``conflict``.
        """
        ...

    def commit(self, payout_id: str, *, now: float) -> Hold | None:
        """Mark a hold as submitted at *now* and return it; ``None`` if there is no such hold.

        Committing a hold that already expired still records it: the money has left.
        Committing twice keeps the first commit time.
        """
        ...

    def release(self, payout_id: str) -> bool:
        """Drop a pending hold; return whether one was dropped. Committed holds stay."""
        ...

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        ...

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the sum of ``held`` over the holds on *key* that count at *now*."""
        ...

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count at *now*, oldest first.

        With *limit*, at most that many (which ones, when there are more, is the store's
        choice: listing must stay cheap however many holds a key has).
        """
        ...

    def close(self) -> None:
        """Release connections or files; the store is not used afterwards."""
        ...
