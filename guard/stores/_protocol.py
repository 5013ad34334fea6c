"""What a reservation store is: the one place where in-flight payouts hold funds.

A *hold* is a payout that has been allowed but that the provider's balance may not show yet.
It counts against spendable funds while it is

- ``pending`` (allowed, being sent) and not past ``expires_at`` (its ttl),
- ``uncertain`` (the payout may or may not have left) and not past ``expires_at`` (set to
  ``uncertain_ttl`` after it became uncertain; ``settle_lag`` never drops it), or
- ``committed`` (sent) after ``counted_since`` = ``snapshot.as_of - settle_lag``: a balance
  fetched before that moment cannot reflect it yet.

Each hold carries the secret ``owner`` token of the reservation that took it: ``commit``,
``release`` and ``mark_uncertain`` act only when the caller presents that token, checked inside
the same atomic step as the change. What every operation does to a hold is written once, in
``guard.stores._machine``; the memory and SQLite stores call it, the Redis scripts mirror it.

``try_hold`` is the atomic check-and-hold that stops twenty workers spending the same funds:
the store adds the hold only if the holds that count, plus this one, stay within ``ceiling``.
All times are seconds since the epoch on the guard's clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from rules.money import ADD

__all__ = [
    "CommittedTotals",
    "FleetStore",
    "Hold",
    "HoldOutcome",
    "HoldState",
    "ReservationStore",
    "Shared",
    "balance_key",
    "gcra",
    "total_held",
]

HoldState = Literal["pending", "committed", "uncertain"]


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
        state: ``"pending"`` until committed, ``"uncertain"`` when the outcome is unknown.
        created_at: When the hold was taken.
        expires_at: When a pending hold stops counting (a crashed worker frees its funds), or,
            for an uncertain hold, when its ``uncertain_ttl`` ends.
        committed_at: When the payout was sent, for committed holds.
        owner: The secret token of the reservation that took the hold (never shown in
            ``repr``; ``PayoutGuard.hold`` returns holds without it).
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
    owner: str = field(default="", repr=False)

    def __init__(  # noqa: PLR0917 - the fields, in their order, as the dataclass's
        self,
        payout_id: str,
        key: str,
        currency: str,
        amount: Decimal,
        fee: Decimal,
        state: HoldState,
        created_at: float,
        expires_at: float,
        committed_at: float | None = None,
        owner: str = "",
    ) -> None:
        # What the dataclass would write, at a third of its cost (every reserve and commit
        # builds several): stored as its writable twin, then made a Hold again. A subclass
        # (its own layout) is written field by field.
        if type(self) is not Hold:
            for name, value in zip(_HOLD_FIELDS, (
                payout_id, key, currency, amount, fee, state, created_at, expires_at,
                committed_at, owner,
            ), strict=True):
                _unseal(self, name, value)
            return
        _unseal(self, "__class__", _OpenHold)
        opened: Any = self  # Any: mypy would hold the twin to the frozen fields
        opened.payout_id = payout_id
        opened.key = key
        opened.currency = currency
        opened.amount = amount
        opened.fee = fee
        opened.state = state
        opened.created_at = created_at
        opened.expires_at = expires_at
        opened.committed_at = committed_at
        opened.owner = owner
        opened.__class__ = Hold

    @property
    def held(self) -> Decimal:
        """Return what the hold takes from spendable: ``amount + fee``."""
        return ADD(self.amount, self.fee)

    def counts(self, *, now: float, counted_since: float) -> bool:
        """Return whether this hold still reduces spendable (see the module docstring)."""
        if self.state == "committed":
            return self.committed_at is not None and self.committed_at > counted_since
        return now < self.expires_at

    def expired(self, now: float) -> bool:
        """Return whether this is a pending hold past its ttl (its payout id is free again)."""
        return self.state == "pending" and self.expires_at <= now

    def same_request(self, other: Hold) -> bool:
        """Return whether *other* asks for exactly what this hold holds."""
        return (self.key, self.currency, self.amount, self.fee) == (
            other.key, other.currency, other.amount, other.fee,
        )

    # Built field by field, not with dataclasses.replace: these run on every reserve and
    # commit, and replace costs several times a plain construction.
    def committed(self, now: float) -> Hold:
        """Return this hold marked as sent at *now*."""
        return Hold(self.payout_id, self.key, self.currency, self.amount, self.fee,
                    "committed", self.created_at, self.expires_at, now, self.owner)

    def uncertain(self, until: float) -> Hold:
        """Return this hold marked as of unknown outcome, counting until *until*."""
        return Hold(self.payout_id, self.key, self.currency, self.amount, self.fee,
                    "uncertain", self.created_at, until, self.committed_at, self.owner)

    def public(self) -> Hold:
        """Return this hold without its owner token, for showing outside its reservation."""
        return Hold(self.payout_id, self.key, self.currency, self.amount, self.fee,
                    self.state, self.created_at, self.expires_at, self.committed_at)


class _OpenHold(Hold):
    """A ``Hold`` while its ``__init__`` fills it in: the same slots, without the frozen guard.

    Both ``__setattr__`` and ``__delattr__`` are object's own, so CPython stores straight into
    the slots.
    """

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


# object's own attribute store, past the frozen guard: how a Hold becomes its twin.
_unseal = object.__setattr__
_HOLD_FIELDS = tuple(f.name for f in fields(Hold))


@dataclass(frozen=True, slots=True)
class HoldOutcome:
    """What ``try_hold`` did.

    Attributes:
        status: ``"held"`` (new hold written), ``"duplicate"`` (the payout id already has a
            live pending, a committed or an uncertain hold; nothing written),
            ``"over_ceiling"`` (not enough room; nothing written).
        hold: The new hold, or the existing one for ``duplicate``.
        counted: The total of counting holds on the key when the store decided (before adding).
        lapsed: Uncertain holds on the key whose ``uncertain_ttl`` this call found ended (each
            reported once, so the guard can log it).
        replaced: For ``held``, the pending hold past its ttl that had the same payout id and
            that the new hold replaced (so the guard can log that it expired), else ``None``.
    """

    status: Literal["held", "duplicate", "over_ceiling"]
    hold: Hold | None
    counted: Decimal
    lapsed: tuple[Hold, ...] = ()
    replaced: Hold | None = None


@runtime_checkable
class ReservationStore(Protocol):
    """Where holds live: in memory, in SQLite, in Redis. Every method is atomic.

    A store that finds it has lost its holds (Redis restarted empty, a database file replaced)
    raises ``StoreUnavailable`` from every method until ``rearm()`` is called.
    """

    def try_hold(
        self, hold: Hold, *, ceiling: Decimal, counted_since: float, now: float
    ) -> HoldOutcome:
        """Add *hold* if the counting holds on its key plus ``hold.held`` stay <= *ceiling*.

        A pending hold with the same payout id that has expired is replaced; any other hold
        with the same payout id (live pending, committed, uncertain) makes it ``duplicate``.
        """
        ...

    def commit(self, payout_id: str, *, owner: str, now: float) -> Hold | None:
        """Mark *owner*'s hold as sent at *now* and return it.

        Returns ``None`` (changing nothing) when the id has no hold or its hold belongs to
        another owner. Committing an expired pending hold still records it (the money left);
        committing an uncertain one makes it committed; committing twice keeps the first time.
        """
        ...

    def release(self, payout_id: str, *, owner: str) -> bool:
        """Drop *owner*'s pending hold; return whether it did. Other holds stay."""
        ...

    def mark_uncertain(
        self, payout_id: str, *, owner: str, now: float, until: float
    ) -> Hold | None:
        """Mark *owner*'s pending hold as of unknown outcome, counting until *until*.

        Returns the hold, or ``None`` (changing nothing) when the id has no hold of *owner*'s.
        A hold already committed or uncertain is returned unchanged.
        """
        ...

    def resolve(self, payout_id: str, *, sent: bool, now: float) -> Hold | None:
        """End an uncertain hold: committed at *now* if *sent*, else dropped.

        Returns the hold as it was found (``None`` if there was none); only an uncertain hold
        is changed.
        """
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

    def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
        now: float,
    ) -> list[Hold]:
        """Return the holds the store records across every key, newest first.

        For operators (``payout-guard holds list``): pending holds not past ``expires_at``,
        uncertain holds (also those whose ``uncertain_ttl`` ended: they still wait for
        ``resolve``) and committed holds still remembered (the retention). A pending hold past
        its ttl is never listed: its payout id is free again. Newest first is ``created_at``
        descending, then ``payout_id``. Holds come without their owner tokens
        (``Hold.public``). Not one atomic snapshot across keys, and it reads every hold the
        store keeps: an operator's call, not one for the payout path.

        Args:
            provider: Only holds on this provider's balances (the first part of the key).
            currency: Only holds in this currency.
            state: Only holds in this state.
            limit: At most this many (1 to 10,000).
            now: The time on the store's clock (a store on its server's clock uses its own).

        Raises:
            InvalidPayoutRequest: a filter or *limit* is not one (see ``_common.listing``).
        """
        ...

    def rearm(self) -> None:
        """Accept the store as it is now, after it lost its holds (an operator's decision)."""
        ...

    def close(self) -> None:
        """Release connections or files; the store is not used afterwards."""
        ...


@runtime_checkable
class CommittedTotals(Protocol):
    """A store that can say what this merchant's own payouts recently sent (``FrozenFunds``)."""

    def committed(self, key: str, *, since: float, now: float) -> Decimal:
        """Return the sum of ``held`` over the holds on *key* committed after *since*.

        Cheap however many holds the key keeps (one index seek: commit times never go
        backwards on a key, and each commit records the key's running total).
        """
        ...


class Shared(NamedTuple):
    """A value a fleet shares through its store (a balance fetched by one of its processes).

    Attributes:
        payload: The text written (``BalanceCache`` writes JSON, amounts as strings).
        age: Seconds since it was written, on the store's own clock (so hosts whose clocks
            disagree still agree on how old it is).
    """

    payload: str
    age: float


@runtime_checkable
class FleetStore(Protocol):
    """A store through which processes and hosts share balances, fetches and a request budget.

    ``SqliteReservations`` (one host), ``RedisReservations`` and ``PostgresReservations`` (any
    number of hosts) are fleet stores. Names are short strings made by the guard
    (``"balance|luxcore:...|ARS"``); every method is one atomic step, and every time is the
    store's own clock (the Redis server's ``TIME``, PostgreSQL's ``clock_timestamp()``; the
    host clock for SQLite).
    """

    def read_shared(
        self, name: str, *, owner: str, lease_ttl: float, fresh_for: float
    ) -> tuple[Shared | None, bool]:
        """Return the value under *name* (``None``: none) and whether *owner* now leads.

        When there is no value, or it is at least *fresh_for* seconds old, *owner* takes the
        lease on *name* for *lease_ttl* seconds unless another owner holds an unexpired one;
        the second item says whether *owner* holds the lease after this call (it should then
        fetch and ``write_shared``; the others wait and read again). A value is returned
        however old it is, until its ``keep`` ends.
        """
        ...

    def write_shared(self, name: str, payload: str, *, keep: float, owner: str) -> None:
        """Store *payload* under *name* (age 0 now) for *keep* seconds; drop *owner*'s lease."""
        ...

    def drop_lease(self, name: str, *, owner: str) -> None:
        """Drop *owner*'s lease on *name* (a failed fetch: the next reader leads)."""
        ...

    def spend(self, name: str, *, per_minute: int) -> float:
        """Take one request from the budget *name*; return 0.0, or the seconds to wait.

        The budget lets through at most *per_minute* requests in any 60 seconds (``gcra``).
        When it is spent nothing is taken, and the answer is how long until a request would
        be let through.
        """
        ...


def gcra(tat: float | None, now: float, per_minute: int) -> tuple[float, float]:
    """Return the budget's new state and the wait: ``(tat, 0.0)`` taken, ``(tat, wait)`` not.

    The generic cell rate algorithm with a burst of a tenth of the minute's requests (at least
    one). *tat* is the budget's stored "theoretical arrival time" (``None``: never used). The
    interval between requests is ``60 / (per_minute - burst + 1)``, so however the requests
    fall, no 60 seconds see more than *per_minute* of them: a provider limit of 100 a minute
    with a budget of 90 is never reached. Stores keep *tat* and run this atomically (the Redis
    script mirrors it line for line).
    """
    burst = max(1, per_minute // 10)
    interval = 60.0 / (per_minute - burst + 1)
    tolerance = (burst - 1) * interval
    start = now if tat is None or tat < now else tat
    if start - now > tolerance:
        return start, start - tolerance - now
    return start + interval, 0.0
