"""The handle of one payout's hold: ``Reservation``, and the rules for leaving it.

A reservation knows the secret owner token of the hold it took; the store acts on that hold
only when the token matches, so a stale or duplicated handle can never commit or release a
hold another reservation took. How the payout ends decides what happens to the hold:

- it returned normally: **committed** (the money left);
- it raised ``PayoutNotSent``, or an ``Exception`` not in ``uncertain_on``: **released**;
- it raised ``PayoutOutcomeUnknown``, an exception in ``uncertain_on`` (default ``OSError``,
  which covers timeouts, connection errors and every ``requests`` exception), or a
  ``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``):
  **uncertain**, so it keeps counting and its id is not sent again until resolved.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import Literal

import structlog

from guard._models import Decision
from guard.errors import (
    ConfigurationError,
    GuardError,
    PayoutNotSent,
    PayoutOutcomeUnknown,
)
from guard.stores import Hold, ReservationStore

__all__ = ["DEFAULT_UNCERTAIN_ON", "Ending", "Reservation", "ending", "uncertain_on_option"]

State = Literal["pending", "committed", "released", "uncertain", "none"]
Ending = Literal["commit", "release", "uncertain"]
ExceptionTypes = tuple[type[BaseException], ...]

DEFAULT_UNCERTAIN_ON: ExceptionTypes = (OSError, PayoutOutcomeUnknown)

_log = structlog.get_logger("payout_guard")


def uncertain_on_option(value: object, path: str = "uncertain_on") -> ExceptionTypes:
    """Return *value* as a tuple of exception classes (one class is accepted too).

    Raises:
        ConfigurationError: it is not an exception class or a tuple of them.
    """
    classes = value if isinstance(value, tuple) else (value,)
    for cls in classes:
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise ConfigurationError(
                f"must be an exception class or a tuple of them, got {str(value)[:60]}",
                path=path,
            )
    return classes


def ending(exc: BaseException | None, uncertain_on: ExceptionTypes) -> Ending:
    """Return what leaving a guarded payout with *exc* (``None``: normally) does to its hold."""
    if exc is None:
        return "commit"
    if isinstance(exc, PayoutNotSent):
        return "release"
    if isinstance(exc, (PayoutOutcomeUnknown, *uncertain_on)) or not isinstance(exc, Exception):
        return "uncertain"
    return "release"


class Reservation:
    """Funds held for one payout between the check and the provider's answer.

    Use it as a context manager: on normal exit the hold is committed; on an exception it is
    released or marked uncertain (see the module docstring). ``commit()``, ``release()`` and
    ``mark_uncertain()`` may also be called directly. A reservation acts only on the hold it
    took.

    Attributes:
        decision: The decision that allowed (or, in dry-run mode, would have denied) the payout.
        payout_id: The idempotency key.
        hold: The hold in the store, or ``None`` when nothing is held (dry-run mode).
    """

    def __init__(
        self,
        decision: Decision,
        hold: Hold | None,
        *,
        store: ReservationStore,
        clock: Callable[[], float],
        uncertain_ttl: float,
        uncertain_on: ExceptionTypes,
        on_commit: Callable[[str], None],
    ) -> None:
        self.decision = decision
        self.payout_id = decision.payout_id or ""
        self.hold = None if hold is None else hold.public()
        self._owner = "" if hold is None else hold.owner
        self._store = store
        self._clock = clock
        self._uncertain_ttl = uncertain_ttl
        self._uncertain_on = uncertain_on
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._state: State = "none" if hold is None else hold.state

    def __repr__(self) -> str:
        return (
            f"Reservation(payout_id={self.payout_id[:40]!r}, amount={self.decision.amount}, "
            f"currency={self.decision.currency!r}, state={self._state!r})"
        )

    @property
    def state(self) -> State:
        """Return ``pending``, ``committed``, ``released``, ``uncertain`` or ``none``."""
        return self._state

    def commit(self) -> None:
        """Record that the payout was sent. Does nothing when nothing is held.

        An uncertain hold becomes committed (you learned that the money left).

        Raises:
            GuardError: the hold was released earlier, or it is gone from the store or now
                belongs to another reservation (its ttl passed and the id was reserved
                again): the commit was not recorded.
            StoreUnavailable: the store did not answer; the hold stays pending until its ttl.
        """
        with self._lock:
            if self._state in ("none", "committed"):
                return
            if self._state == "released":
                raise GuardError(
                    f"payout {self.payout_id[:40]!r} was released; it cannot be committed"
                )
            hold = self._store.commit(self.payout_id, owner=self._owner, now=self._clock())
            if hold is None:
                raise self._lost("the commit was not recorded")
            self.hold = hold.public()
            self._state = "committed"
        _log.debug("payout_guard.hold", change="committed", payout_id=self.payout_id)
        self._on_commit(self.decision.currency)

    def release(self) -> bool:
        """Give the held funds back (the payout was not sent); return whether it did.

        Only a pending hold of this reservation's is released: a committed or uncertain
        payout may have left, and a hold another reservation took is not this one's.
        """
        with self._lock:
            if self._state != "pending":
                return False
            released = self._store.release(self.payout_id, owner=self._owner)
            self._state = "released"
        if released:
            _log.debug("payout_guard.hold", change="released", payout_id=self.payout_id)
        return released

    def mark_uncertain(self) -> Hold | None:
        """Keep the funds held because the payout may or may not have left; return the hold.

        The hold counts like a committed one, and its payout id is not sent again, until
        ``guard.resolve(payout_id, sent=...)`` or until ``uncertain_ttl`` passes. Does nothing
        (returns ``None``) when nothing is held; a committed hold stays committed.

        Raises:
            GuardError: the hold was released, or it is gone or belongs to another reservation.
            StoreUnavailable: the store did not answer; the hold stays pending until its ttl.
        """
        with self._lock:
            if self._state in ("none", "committed", "uncertain"):
                return self.hold
            if self._state == "released":
                raise GuardError(
                    f"payout {self.payout_id[:40]!r} was released; it cannot be marked uncertain"
                )
            now = self._clock()
            hold = self._store.mark_uncertain(
                self.payout_id, owner=self._owner, now=now, until=now + self._uncertain_ttl
            )
            if hold is None:
                raise self._lost("it could not be marked uncertain")
            self.hold = hold.public()
            self._state = hold.state
        _log.warning(
            "payout_guard.hold", change="uncertain", payout_id=self.payout_id,
            amount=str(hold.held), currency=hold.currency,
        )
        return self.hold

    def settle(
        self, exc: BaseException | None, *, uncertain_on: ExceptionTypes | None = None
    ) -> None:
        """End the hold the way leaving the payout with *exc* (``None``: normally) says.

        Used by ``__exit__`` and by ``protect``. When the payout failed, trouble ending the
        hold is logged (``payout_guard.hold_not_settled``) rather than raised, so the
        payout's own exception is the one the caller sees.

        Raises:
            GuardError: *exc* is ``None`` and the commit failed (see ``commit``).
        """
        how = ending(exc, self._uncertain_on if uncertain_on is None else uncertain_on)
        if how == "commit":
            self.commit()
            return
        try:
            if how == "release":
                self.release()
            else:
                self.mark_uncertain()
        except GuardError as trouble:
            _log.error(
                "payout_guard.hold_not_settled", payout_id=self.payout_id, wanted=how,
                error=type(trouble).__name__, message=str(trouble),
            )

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.settle(exc)

    def _lost(self, what: str) -> GuardError:
        return GuardError(
            f"the hold for payout {self.payout_id[:40]!r} is gone from the store or now belongs "
            f"to another reservation (its ttl passed and the id was reserved again); {what}. "
            f"Check the provider for this payout"
        )
