r"""The hold state machine: what each store operation does to the hold under one payout id.

Written once, without I/O. ``InMemoryReservations`` and ``SqliteReservations`` read the hold,
ask these functions what to do and write the answer inside one atomic step (a lock, an
immediate transaction); the Lua scripts of ``RedisReservations`` mirror them line for line
(``guard/stores/_redis_lua.py`` says where).

::

    (nothing) --try_hold--> pending --commit(owner)--------> committed
                              |  \--release(owner)--> (nothing)
                              |   \--ttl passes--> expired (a new try_hold replaces it)
                              \--mark_uncertain(owner)--> uncertain
    uncertain --resolve(sent=True)--> committed;  --resolve(sent=False)--> (nothing)
    uncertain --uncertain_ttl passes--> stops counting; its id stays taken until retention
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from guard.stores._common import MAX_SECONDS, mixed_currencies
from guard.stores._protocol import Hold
from rules.money import ADD

__all__ = [
    "MAX_SECONDS",
    "Admission",
    "admit",
    "check_hold",
    "check_life",
    "commit_time",
    "owned",
    "to_commit",
    "to_uncertain",
]

Admission = Literal["held", "duplicate", "over_ceiling"]


def check_hold(hold: Hold, now: float) -> None:
    """Refuse a hold whose times no store can keep, before anything is written.

    Raises:
        ValueError: a time is not finite, or the hold lives past ``MAX_SECONDS`` from *now*.
    """
    if not math.isfinite(hold.created_at):
        raise ValueError(f"created_at must be a finite time in seconds, got {hold.created_at!r}")
    check_life(now, hold.expires_at)


def check_life(now: float, until: float) -> None:
    """Refuse a hold that would count from *now* until *until*, unless both are sane.

    Raises:
        ValueError: a time is not finite, or *until* is more than ``MAX_SECONDS`` after *now*.
    """
    for name, value in (("now", now), ("expires_at", until)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite time in seconds, got {value!r}")
    if until - now > MAX_SECONDS:
        raise ValueError(
            f"a hold would count for {until - now:g} s; at most {MAX_SECONDS:g} s (30 days) "
            f"is accepted"
        )


def admit(
    existing: Hold | None,
    hold: Hold,
    *,
    key_currency: str | None,
    counted: Decimal,
    ceiling: Decimal,
    now: float,
) -> Admission:
    """Return what ``try_hold`` does with *hold*, given what the store holds.

    Args:
        existing: The hold recorded under ``hold.payout_id``, if any.
        hold: The new pending hold.
        key_currency: The currency of the holds already on ``hold.key`` (``None``: none yet).
        counted: What the holds counting on the key take now.
        ceiling: The most the counting holds may take with *hold* added.
        now: The store's time.

    Raises:
        InvalidPayoutRequest: *hold* is in another currency than the key's holds.
    """
    if key_currency is not None and key_currency != hold.currency:
        raise mixed_currencies(hold, key_currency)
    if existing is not None and not existing.expired(now):
        return "duplicate"  # someone is sending it, it was sent, or it may have been sent
    if ADD(counted, hold.held) > ceiling:
        return "over_ceiling"
    return "held"


def owned(existing: Hold | None, owner: str) -> bool:
    """Return whether *existing* is the hold of the reservation holding *owner*."""
    # Plain equality: the token guards against stale and duplicated handles in the caller's
    # own code, not against an attacker timing comparisons in the same process.
    return existing is not None and bool(owner) and existing.owner == owner


def commit_time(now: float, last: float | None) -> float:
    """Return when a commit at *now* is recorded, given the key's latest commit *last*.

    Commit times never go backwards on a key: after a clock step back, the commit is recorded
    at the latest one, so it counts a little longer, which is the safe side.
    """
    return now if last is None or now >= last else last


def to_commit(existing: Hold | None, owner: str, at: float) -> Hold | None:
    """Return the hold *owner*'s commit leaves, or ``None`` when it is not *owner*'s.

    A committed hold stays as it is (the first commit time is kept).
    """
    if existing is None or not owned(existing, owner):
        return None
    return existing if existing.state == "committed" else existing.committed(at)


def to_uncertain(existing: Hold | None, owner: str, until: float) -> Hold | None:
    """Return the hold *owner*'s ``mark_uncertain`` leaves, or ``None`` when not *owner*'s.

    Only a pending hold becomes uncertain; a committed or uncertain one stays as it is.
    """
    if existing is None or not owned(existing, owner):
        return None
    return existing.uncertain(until) if existing.state == "pending" else existing
