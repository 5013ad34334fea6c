"""What a reservation store offers ``AsyncPayoutGuard`` when it can be awaited natively.

A store with an ``asyncio()`` method returning an ``AsyncReservationStore`` (as
``RedisReservations`` does, on ``redis.asyncio``, and ``PostgresReservations`` on
``psycopg.AsyncConnection``) is awaited natively; ``InMemoryReservations``
is called directly on the loop (no I/O, a lock held for microseconds); any other store runs in
the guard's own thread pool, never in the event loop's default executor.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol, runtime_checkable

from guard.stores._protocol import Hold, HoldOutcome, HoldState

__all__ = ["AsyncReservationStore"]


@runtime_checkable
class AsyncReservationStore(Protocol):
    """``ReservationStore``, awaitable (see that protocol for what each method does)."""

    async def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* if the counting holds on its key plus ``hold.held`` stay <= *ceiling*."""
        ...

    async def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent at *now* and return it."""
        ...

    async def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold; return whether it did."""
        ...

    async def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold as of unknown outcome, counting until *until*."""
        ...

    async def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold: committed at *now* if *sent*, else dropped."""
        ...

    async def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        ...

    async def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the sum of ``held`` over the holds on *key* that count at *now*."""
        ...

    async def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count at *now*, oldest first."""
        ...

    async def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
        now: float,
    ) -> list[Hold]:
        """Return the holds the store records across every key, newest first."""
        ...
