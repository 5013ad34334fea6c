"""Reservations held in this process's memory: the default store."""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from decimal import Decimal

from guard.stores._protocol import Hold, HoldOutcome, total_held
from rules.money import ADD, SUBTRACT

__all__ = ["InMemoryReservations"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class _Tally:
    """What counts on one key as of its ledger's last change: replaced whole, never changed.

    ``times`` and ``running`` are the ledger's own lists, read only below ``count``: the
    ledger only appends to them, and the purge builds new ones. So a reader needs no lock.
    """

    pending: tuple[Hold, ...] = ()
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    count: int = 0

    # Sums use MONEY_CONTEXT's methods: the caller's decimal context must not round them.
    def counted(self, now: float, since: float) -> Decimal:
        """Return what the pending holds alive at *now* and the commits after *since* hold."""
        total = total_held(hold for hold in self.pending if now < hold.expires_at)
        if self.count:
            cut = bisect_right(self.times, since, 0, self.count)
            before = self.running[cut - 1] if cut else _ZERO
            total = ADD(total, SUBTRACT(self.running[self.count - 1], before))
        return total


@dataclass
class _Ledger:
    """The holds on one balance key: pending ones by id, committed ones in commit order."""

    pending: dict[str, Hold] = field(default_factory=dict)
    # Commit times (non-decreasing) and running totals, so "committed after t" is a bisect.
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    tally: _Tally = field(default_factory=_Tally)

    def publish(self) -> None:
        """Make the current holds what readers count (call it, under the lock, after a change)."""
        self.tally = _Tally(tuple(self.pending.values()), self.times, self.running,
                            len(self.times))

    def add_commit(self, hold: Hold) -> Hold:
        at = hold.committed_at if hold.committed_at is not None else hold.created_at
        if self.times and at < self.times[-1]:
            # A clock stepping back must not reorder the log; counting it later is the safe side.
            at = self.times[-1]
            hold = replace(hold, committed_at=at)
        self.times.append(at)
        self.running.append(ADD(self.running[-1] if self.running else _ZERO, hold.held))
        self.ids.append(hold.payout_id)
        return hold


class InMemoryReservations:
    """A thread-safe reservation store for one process.

    Holds vanish with the process; use ``SqliteReservations`` or ``RedisReservations`` when
    several processes pay out from the same balance.

    Args:
        retention: Seconds a committed hold is remembered for idempotency (default one day).
    """

    def __init__(self, *, retention: float = 86_400.0) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Hold] = {}
        self._ledgers: dict[str, _Ledger] = {}
        self._retention = retention

    def __repr__(self) -> str:
        return f"InMemoryReservations(holds={len(self._by_id)})"

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (see ``ReservationStore``)."""
        with self._lock:
            ledger = self._ledgers.setdefault(hold.key, _Ledger())
            counted = ledger.tally.counted(now, counted_since)
            existing = self._by_id.get(hold.payout_id)
            if existing is not None and not (
                existing.state == "pending" and existing.expires_at <= now
            ):
                if existing.same_request(hold):
                    return HoldOutcome(status="existing", hold=existing, counted=counted)
                return HoldOutcome(status="conflict", hold=existing, counted=counted)
            if ADD(counted, hold.held) > ceiling:
                return HoldOutcome(status="over_ceiling", hold=None, counted=counted)
            if existing is not None:  # an expired pending hold under the same id
                other = self._ledgers[existing.key]
                other.pending.pop(existing.payout_id, None)
                other.publish()
            self._purge(ledger, now)
            ledger.pending[hold.payout_id] = hold
            ledger.publish()
            self._by_id[hold.payout_id] = hold
            return HoldOutcome(status="held", hold=hold, counted=counted)

    def commit(self, payout_id: str, *, now: float) -> Hold | None:
        """Mark the hold as submitted (see ``ReservationStore.commit``)."""
        with self._lock:
            hold = self._by_id.get(payout_id)
            if hold is None or hold.state == "committed":
                return hold
            ledger = self._ledgers[hold.key]
            ledger.pending.pop(payout_id, None)
            done = ledger.add_commit(hold.committed(now))
            ledger.publish()
            self._by_id[payout_id] = done
            return done

    def release(self, payout_id: str) -> bool:
        """Drop a pending hold (see ``ReservationStore.release``)."""
        with self._lock:
            hold = self._by_id.get(payout_id)
            if hold is None or hold.state != "pending":
                return False
            del self._by_id[payout_id]
            ledger = self._ledgers[hold.key]
            ledger.pending.pop(payout_id, None)
            ledger.publish()
            return True

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        with self._lock:
            return self._by_id.get(payout_id)

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Read without the lock, from the tally the last change published: every check calls
        this, and threads taking a lock for it queue behind one another (measured: four
        threads made a third of the checks one thread makes alone).
        """
        ledger = self._ledgers.get(key)
        return _ZERO if ledger is None else ledger.tally.counted(now, counted_since)

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (at most *limit* of them)."""
        with self._lock:
            ledger = self._ledgers.get(key)
            if ledger is None:
                return []
            cut = bisect_right(ledger.times, counted_since)
            # Commits are kept in commit order: the earliest `limit` of them are enough.
            ids = ledger.ids[cut:] if limit is None else ledger.ids[cut:cut + limit]
            found = [self._by_id[i] for i in ids if i in self._by_id]
            found += [h for h in ledger.pending.values() if now < h.expires_at]
            found.sort(key=lambda h: h.created_at)
            return found if limit is None else found[:limit]

    def close(self) -> None:
        """Forget every hold."""
        with self._lock:
            self._by_id.clear()
            self._ledgers.clear()

    def _purge(self, ledger: _Ledger, now: float) -> None:
        """Forget expired pending holds and committed ones past the retention window."""
        for payout_id, hold in list(ledger.pending.items()):
            if hold.expires_at + self._retention <= now:
                del ledger.pending[payout_id]
                self._by_id.pop(payout_id, None)
        horizon = now - self._retention
        if ledger.times and ledger.times[0] < horizon:
            cut = bisect_right(ledger.times, horizon)
            for payout_id in ledger.ids[:cut]:
                self._by_id.pop(payout_id, None)
            offset = ledger.running[cut - 1]
            ledger.times = ledger.times[cut:]
            ledger.ids = ledger.ids[cut:]
            ledger.running = [SUBTRACT(total, offset) for total in ledger.running[cut:]]
