"""Reservations held in this process's memory: the default store."""

from __future__ import annotations

import math
import threading
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field, replace
from decimal import Decimal
from heapq import heappop, heappush

from guard._seconds import seconds
from guard.errors import StoreUnavailable
from guard.stores import _machine as machine
from guard.stores._common import listing, newest_first
from guard.stores._protocol import Hold, HoldOutcome, HoldState
from rules.money import ADD, SUBTRACT

__all__ = ["InMemoryReservations"]

_ZERO = Decimal(0)


def _closed() -> StoreUnavailable:
    return StoreUnavailable("the store was closed; rearm() opens it again", store="memory")


@dataclass(frozen=True, slots=True)
class _Tally:
    """What counts on one key as of its ledger's last change: replaced whole, never changed.

    ``times`` and ``running`` are the ledger's own lists, read only below ``count``: the
    ledger only appends to them, and compacting builds new ones. So a reader needs no lock,
    and reads a sum, never a list of holds: counting costs the same with 5,000 holds as
    with none.
    """

    live: Decimal = _ZERO  # what the live holds take, while none has expired
    next_expiry: float = math.inf  # when the earliest of them stops counting
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    start: int = 0
    count: int = 0
    base: Decimal = _ZERO  # the running total before times[start]

    # Sums use MONEY_CONTEXT's methods: the caller's decimal context must not round them.
    def counted(self, since: float) -> Decimal:
        """Return what the live holds and the commits after *since* hold.

        Valid while ``now < next_expiry`` (the ledger lets expired holds go first).
        """
        if self.count == self.start:
            return self.live
        cut = bisect_right(self.times, since, self.start, self.count)
        before = self.running[cut - 1] if cut > self.start else self.base
        return ADD(self.live, SUBTRACT(self.running[self.count - 1], before))


@dataclass
class _Ledger:
    """The holds on one balance key: live ones summed and ordered by expiry, commits in order.

    Pending and uncertain holds ("live") count while ``now < expires_at``. Their sum is kept
    as they come and go; a heap by expiry says which to take out of it as time passes, each
    once (so the work is a constant per hold, not per check). Commits are appended with
    non-decreasing times and running totals, so "committed after t" is one bisect.
    """

    currency: str
    live: dict[str, Hold] = field(default_factory=dict)
    # The live holds still in `total`, by id: their expiry (a heap entry is current only while
    # it matches) and what they take.
    counting: dict[str, float] = field(default_factory=dict)
    total: Decimal = _ZERO
    heap: list[tuple[float, str]] = field(default_factory=list)
    # Live holds whose expiry passed, in that order: forgotten once the retention has passed.
    expired: deque[tuple[float, str]] = field(default_factory=deque)
    # Uncertain holds whose uncertain_ttl ended, not yet reported; and every one reported.
    lapsed: list[Hold] = field(default_factory=list)
    reported: set[str] = field(default_factory=set)
    # The latest time holds were let expire at: a call at an earlier time (the wall clock
    # stepped back) counts the holds expired since then again.
    settled: float = -math.inf
    times: list[float] = field(default_factory=list)
    running: list[Decimal] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    start: int = 0
    base: Decimal = _ZERO
    tally: _Tally = field(default_factory=_Tally)

    def publish(self) -> None:
        """Make the current sums what readers count (call it, under the lock, after a change)."""
        self.tally = _Tally(
            self.total, self.heap[0][0] if self.heap else math.inf,
            self.times, self.running, self.start, len(self.times), self.base,
        )

    def add_live(self, hold: Hold) -> None:
        """Count the pending or uncertain *hold* until its ``expires_at``."""
        self.drop_live(hold.payout_id)
        self.live[hold.payout_id] = hold
        self.counting[hold.payout_id] = hold.expires_at
        self.total = ADD(self.total, hold.held)
        heappush(self.heap, (hold.expires_at, hold.payout_id))

    def drop_live(self, payout_id: str) -> None:
        """Stop counting the live hold under *payout_id*, if there is one, and forget it."""
        self.reported.discard(payout_id)
        hold = self.live.pop(payout_id, None)
        if hold is not None and self.counting.pop(payout_id, None) is not None:
            self.total = SUBTRACT(self.total, hold.held)
        while self.heap and self.heap[0][1] not in self.counting:
            heappop(self.heap)  # stale entries leave as soon as they reach the top

    def let_expire(self, now: float) -> None:
        """Take the live holds whose ``expires_at`` has come out of the total, each once.

        When *now* is before the last such call (the wall clock stepped back), the holds that
        expired after *now* count again, as ``Hold.counts`` says: counted too long rather
        than dropped.
        """
        if now < self.settled:
            self.recount(now)
        self.settled = now
        heap = self.heap
        while heap and heap[0][0] <= now:
            expires_at, payout_id = heappop(heap)
            if self.counting.get(payout_id) != expires_at:
                continue  # released, committed or re-timed since: not current
            del self.counting[payout_id]
            hold = self.live[payout_id]
            self.total = SUBTRACT(self.total, hold.held)
            self.expired.append((expires_at, payout_id))
            if hold.state == "uncertain" and payout_id not in self.reported:
                self.reported.add(payout_id)
                self.lapsed.append(hold)

    def recount(self, now: float) -> None:
        """Count again the live holds that expired after *now* (latest first, in order)."""
        expired = self.expired
        while expired and expired[-1][0] > now:
            expires_at, payout_id = expired.pop()
            hold = self.live.get(payout_id)
            if hold is None or payout_id in self.counting or hold.expires_at != expires_at:
                continue
            self.counting[payout_id] = expires_at
            self.total = ADD(self.total, hold.held)
            heappush(self.heap, (expires_at, payout_id))
        # A lapse not reported yet has not happened after all.
        unlapsed = {h.payout_id for h in self.lapsed if h.payout_id in self.counting}
        if unlapsed:
            self.lapsed = [h for h in self.lapsed if h.payout_id not in unlapsed]
            self.reported -= unlapsed

    def add_commit(self, hold: Hold) -> Hold:
        """Append a commit of *hold* (its time made non-decreasing) and return it as recorded."""
        at = hold.committed_at if hold.committed_at is not None else hold.created_at
        at = machine.commit_time(at, self.times[-1] if self.times else None)
        if at != hold.committed_at:
            hold = replace(hold, committed_at=at)
        self.drop_live(hold.payout_id)
        last = self.running[-1] if len(self.running) > self.start else self.base
        self.times.append(at)
        self.running.append(ADD(last, hold.held))
        self.ids.append(hold.payout_id)
        return hold

    def tally_now(self) -> _Tally:
        """Publish and return the current sums (after ``let_expire``, under the lock)."""
        self.publish()
        return self.tally

    def take_lapsed(self) -> tuple[Hold, ...]:
        """Return the uncertain holds whose uncertain_ttl ended since the last call."""
        # Only those still uncertain: one resolved since has nothing left to report.
        lapsed = tuple(h for h in self.lapsed if self.live.get(h.payout_id) is h)
        self.lapsed = []
        return lapsed


class InMemoryReservations:
    """A thread-safe reservation store for one process.

    Holds vanish with the process; use ``SqliteReservations`` or ``RedisReservations`` when
    several processes pay out from the same balance. Counting the holds on a key costs the
    same however many there are (see ``_Ledger``).

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
        self._closed = False

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
        if self._closed:
            raise _closed()
        machine.check_hold(hold, now)
        with self._lock:
            ledger = self._ledgers.get(hold.key)
            existing = self._by_id.get(hold.payout_id)
            if ledger is not None:
                ledger.let_expire(now)
            counted = _ZERO if ledger is None else ledger.tally_now().counted(counted_since)
            admission = machine.admit(
                existing, hold, key_currency=None if ledger is None else ledger.currency,
                counted=counted, ceiling=ceiling, now=now,
            )
            lapsed = () if ledger is None else ledger.take_lapsed()
            if admission != "held":
                if ledger is not None:
                    ledger.publish()
                found = existing if admission == "duplicate" else None
                return HoldOutcome(status=admission, hold=found, counted=counted, lapsed=lapsed)
            if existing is not None:  # an expired pending hold under the same id
                other = self._ledgers[existing.key]
                other.drop_live(existing.payout_id)
                other.publish()
            if ledger is None:
                ledger = self._ledgers[hold.key] = _Ledger(hold.currency)
            self._purge(ledger, now)
            ledger.add_live(hold)
            ledger.publish()
            self._by_id[hold.payout_id] = hold
            return HoldOutcome(status="held", hold=hold, counted=counted, lapsed=lapsed,
                               replaced=existing)

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent (see ``ReservationStore.commit``)."""
        if self._closed:
            raise _closed()
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
        if self._closed:
            raise _closed()
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
        if self._closed:
            raise _closed()
        machine.check_life(now, until)
        with self._lock:
            existing = self._by_id.get(payout_id)
            marked = machine.to_uncertain(existing, owner, until)
            if marked is None or marked is existing:
                return marked
            ledger = self._ledgers[marked.key]
            ledger.add_live(marked)
            ledger.publish()
            self._by_id[payout_id] = marked
            return marked

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold (see ``ReservationStore.resolve``)."""
        if self._closed:
            raise _closed()
        with self._lock:
            existing = self._by_id.get(payout_id)
            if existing is None or existing.state != "uncertain":
                return existing
            if not sent:
                self._forget(existing)
                return existing
            ledger = self._ledgers[existing.key]
            self._by_id[payout_id] = ledger.add_commit(existing.committed(now))
            ledger.publish()
            return existing

    def get(self, payout_id: str) -> Hold | None:
        """Return the hold recorded under *payout_id*, if any."""
        if self._closed:
            raise _closed()
        with self._lock:
            return self._by_id.get(payout_id)

    def reserved(self, key: str, *, counted_since: float, now: float) -> Decimal:
        """Return the total held on *key* by holds that count.

        Read without the lock, from the sums the last change published, unless a live hold
        has expired since (then the lock is taken once to take it out): every check calls
        this, and threads taking a lock for it queue behind one another (measured: four
        threads made a third of the checks one thread makes alone).
        """
        if self._closed:
            raise _closed()
        ledger = self._ledgers.get(key)
        if ledger is None:
            return _ZERO
        tally = ledger.tally
        if now >= tally.next_expiry or now < ledger.settled:
            with self._lock:
                ledger.let_expire(now)
                ledger.publish()
                tally = ledger.tally
        return tally.counted(counted_since)

    def committed(self, key: str, *, since: float, now: float) -> Decimal:  # noqa: ARG002
        """Return what the holds on *key* committed after *since* hold (one bisect)."""
        if self._closed:
            raise _closed()
        ledger = self._ledgers.get(key)
        if ledger is None:
            return _ZERO
        tally = ledger.tally
        if tally.count == tally.start:
            return _ZERO
        cut = bisect_right(tally.times, since, tally.start, tally.count)
        before = tally.running[cut - 1] if cut > tally.start else tally.base
        return SUBTRACT(tally.running[tally.count - 1], before)

    def holds(
        self, key: str, *, counted_since: float, now: float, limit: int | None = None
    ) -> list[Hold]:
        """Return the holds on *key* that count, oldest first (at most *limit* of them)."""
        if self._closed:
            raise _closed()
        with self._lock:
            ledger = self._ledgers.get(key)
            if ledger is None:
                return []
            ledger.let_expire(now)
            ledger.publish()
            cut = bisect_right(ledger.times, counted_since, ledger.start)
            # Commits are kept in commit order: the earliest `limit` of them are enough.
            ids = ledger.ids[cut:] if limit is None else ledger.ids[cut:cut + limit]
            found = [self._by_id[i] for i in ids if i in self._by_id]
            found += [h for i, h in ledger.live.items() if i in ledger.counting]
            found.sort(key=lambda h: h.created_at)
            return found if limit is None else found[:limit]

    def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
        now: float,
    ) -> list[Hold]:
        """Return the holds recorded across every key, newest first (``ReservationStore``).

        Raises:
            InvalidPayoutRequest: a filter or *limit* is not one.
        """
        if self._closed:
            raise _closed()
        wanted = listing(provider, currency, state, limit)
        with self._lock:
            found = [h for h in self._by_id.values() if wanted.wants(h, now)]
        return newest_first(found, wanted.limit)

    def rearm(self) -> None:
        """Serve again after ``close``, with every hold it had (lost only with the process)."""
        self._closed = False

    def close(self) -> None:
        """Stop serving: every call raises ``StoreUnavailable`` until ``rearm()``.

        The holds are kept: a store that forgot them would let a payout id that was sent be
        sent again.
        """
        self._closed = True

    def _forget(self, hold: Hold) -> None:
        """Drop a pending or uncertain *hold* (under the lock)."""
        del self._by_id[hold.payout_id]
        ledger = self._ledgers[hold.key]
        ledger.drop_live(hold.payout_id)
        ledger.publish()

    def _purge(self, ledger: _Ledger, now: float) -> None:
        """Forget live holds, and commits, past the retention window (a few at a time).

        Live holds leave in the order they expired; commits are compacted only once half of
        the list is past the window, so the work stays a constant per hold.
        """
        horizon = now - self._retention
        expired = ledger.expired
        while expired and expired[0][0] <= horizon:
            _, payout_id = expired.popleft()
            hold = ledger.live.get(payout_id)
            if hold is not None and payout_id not in ledger.counting:
                del ledger.live[payout_id]
                if self._by_id.get(payout_id) is hold:
                    del self._by_id[payout_id]
        if len(ledger.times) > ledger.start and ledger.times[ledger.start] < horizon:
            cut = bisect_right(ledger.times, horizon, ledger.start)
            for payout_id in ledger.ids[ledger.start:cut]:
                self._by_id.pop(payout_id, None)
            ledger.base = ledger.running[cut - 1]
            ledger.start = cut
            if cut * 2 >= len(ledger.times):
                # New lists, not trimmed ones: readers may hold the old ones (see _Tally).
                ledger.times, ledger.running = ledger.times[cut:], ledger.running[cut:]
                ledger.ids = ledger.ids[cut:]
                ledger.start = 0
