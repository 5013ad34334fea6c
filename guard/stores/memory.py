"""Reservations held in this process's memory: the default store."""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass, field, replace
from decimal import Decimal

from guard._seconds import seconds
from guard.stores import _machine as machine
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

    live: tuple[Hold, ...] = ()
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    count: int = 0

    # Sums use MONEY_CONTEXT's methods: the caller's decimal context must not round them.
    def counted(self, now: float, since: float) -> Decimal:
        """Return what the live holds at *now* and the commits after *since* hold."""
        total = total_held(hold for hold in self.live if now < hold.expires_at)
        if self.count:
            cut = bisect_right(self.times, since, 0, self.count)
            before = self.running[cut - 1] if cut else _ZERO
            total = ADD(total, SUBTRACT(self.running[self.count - 1], before))
        return total


@dataclass
class _Ledger:
    """The holds on one balance key: pending and uncertain ones by id, commits in order."""

    currency: str
    # Pending and uncertain holds: both count while now < expires_at.
    live: dict[str, Hold] = field(default_factory=dict)
    # Commit times (non-decreasing) and running totals, so "committed after t" is a bisect.
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    # Uncertain holds already reported as lapsed (their uncertain_ttl ended).
    reported: set[str] = field(default_factory=set)
    tally: _Tally = field(default_factory=_Tally)

    def publish(self) -> None:
        """Make the current holds what readers count (call it, under the lock, after a change)."""
        self.tally = _Tally(tuple(self.live.values()), self.times, self.running, len(self.times))

    def add_commit(self, hold: Hold) -> Hold:
        """Append a commit of *hold* (its time made non-decreasing) and return it as recorded."""
        at = hold.committed_at if hold.committed_at is not None else hold.created_at
        at = machine.commit_time(at, self.times[-1] if self.times else None)
        if at != hold.committed_at:
            hold = replace(hold, committed_at=at)
        self.live.pop(hold.payout_id, None)
        self.times.append(at)
        self.running.append(ADD(self.running[-1] if self.running else _ZERO, hold.held))
        self.ids.append(hold.payout_id)
        return hold

    def lapse(self, now: float) -> tuple[Hold, ...]:
        """Return the uncertain holds whose uncertain_ttl ended, each only once."""
        lapsed = tuple(
            hold for hold in self.live.values()
            if hold.state == "uncertain" and hold.expires_at <= now
            and hold.payout_id not in self.reported
        )
        self.reported.update(hold.payout_id for hold in lapsed)
        return lapsed


class InMemoryReservations:
    """A thread-safe reservation store for one process.

    Holds vanish with the process; use ``SqliteReservations`` or ``RedisReservations`` when
    several processes pay out from the same balance.

    Args:
        retention: Seconds a finished hold is remembered for idempotency (default one day; at
            most 30 days).

    Raises:
        ConfigurationError: *retention* is not a positive number of seconds up to 30 days.
    """

    def __init__(self, *, retention: float = 86_400.0) -> None:
        self._lock = threading.Lock()
        self._by_id: dict[str, Hold] = {}
        self._ledgers: dict[str, _Ledger] = {}
        self._retention = seconds(retention, "retention", positive=True)

    def __repr__(self) -> str:
        return f"InMemoryReservations(holds={len(self._by_id)})"

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* atomically if it fits under *ceiling* (see ``ReservationStore``).

        Raises:
            ValueError: a time is not finite or the hold would live more than 30 days.
            InvalidPayoutRequest: *hold* is in another currency than its key's holds.
        """
        machine.check_hold(hold, now)
        with self._lock:
            ledger = self._ledgers.get(hold.key)
            existing = self._by_id.get(hold.payout_id)
            counted = _ZERO if ledger is None else ledger.tally.counted(now, counted_since)
            admission = machine.admit(
                existing, hold, key_currency=None if ledger is None else ledger.currency,
                counted=counted, ceiling=ceiling, now=now,
            )
            lapsed = () if ledger is None else ledger.lapse(now)
            if admission != "held":
                found = existing if admission == "duplicate" else None
                return HoldOutcome(status=admission, hold=found, counted=counted, lapsed=lapsed)
            if existing is not None:  # an expired pending hold under the same id
                other = self._ledgers[existing.key]
                other.live.pop(existing.payout_id, None)
                other.publish()
            if ledger is None:
                ledger = self._ledgers[hold.key] = _Ledger(hold.currency)
            self._purge(ledger, now)
            ledger.live[hold.payout_id] = hold
            ledger.publish()
            self._by_id[hold.payout_id] = hold
            return HoldOutcome(status="held", hold=hold, counted=counted, lapsed=lapsed)

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (see ``ReservationStore.commit``)."""
        with self._lock:
            existing = self._by_id.get(payout_id)
            done = machine.to_commit(existing, owner, now)
            if done is None or done is existing:
                return done
            ledger = self._ledgers[done.key]
            done = ledger.add_commit(done)
            ledger.publish()
            self._by_id[payout_id] = done
            return done

    def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold (see ``ReservationStore.release``)."""
        with self._lock:
            existing = self._by_id.get(payout_id)
            if existing is None or existing.state != "pending" or not machine.owned(
                existing, owner
            ):
                return False
            self._forget(existing)
            return True

    def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold uncertain (see ``ReservationStore.mark_uncertain``)."""
        machine.check_life(now, until)
        with self._lock:
            existing = self._by_id.get(payout_id)
            marked = machine.to_uncertain(existing, owner, until)
            if marked is None or marked is existing:
                return marked
            ledger = self._ledgers[marked.key]
            ledger.live[payout_id] = marked
            ledger.publish()
            self._by_id[payout_id] = marked
            return marked

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (see ``ReservationStore.resolve``)."""
        with self._lock:
            existing = self._by_id.get(payout_id)
            if existing is None or existing.state != "uncertain":
                return existing
            if not sent:
                self._forget(existing)
                return existing
            ledger = self._ledgers[existing.key]
            ledger.reported.discard(payout_id)
            self._by_id[payout_id] = ledger.add_commit(existing.committed(now))
            ledger.publish()
            return existing

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
            found += [h for h in ledger.live.values() if now < h.expires_at]
            found.sort(key=lambda h: h.created_at)
            return found if limit is None else found[:limit]

    def rearm(self) -> None:
        """Do nothing: holds in this process's memory are lost only with the process."""

    def close(self) -> None:
        """Forget every hold."""
        with self._lock:
            self._by_id.clear()
            self._ledgers.clear()

    def _forget(self, hold: Hold) -> None:
        """Drop a pending or uncertain *hold* (under the lock)."""
        del self._by_id[hold.payout_id]
        ledger = self._ledgers[hold.key]
        ledger.live.pop(hold.payout_id, None)
        ledger.reported.discard(hold.payout_id)
        ledger.publish()

    def _purge(self, ledger: _Ledger, now: float) -> None:
        """Forget pending and uncertain holds, and commits, past the retention window."""
        for payout_id, hold in list(ledger.live.items()):
            if hold.expires_at + self._retention <= now:
                del ledger.live[payout_id]
                ledger.reported.discard(payout_id)
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

