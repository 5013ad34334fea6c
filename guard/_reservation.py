"""Atomic check-and-hold: ``PayoutGuard.reserve`` and the ``Reservation`` it returns."""

from __future__ import annotations

import threading
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Literal

from guard import _judge
from guard._models import BalanceSnapshot, Decision, Reason
from guard._request import Request
from guard.errors import GuardError, PayoutDenied, StoreUnavailable
from guard.stores import Hold, balance_key
from rules.money import ADD

if TYPE_CHECKING:
    from guard._guard import PayoutGuard

__all__ = ["Reservation", "reserve", "without_own_hold"]

# How often a payout is re-judged after concurrent payouts took the room it was judged with.
_ATTEMPTS = 5
# The room given to a hold taken without a balance (fail_open): counted, never capped.
_NO_CEILING = Decimal(10) ** 12

State = Literal["pending", "committed", "released", "none"]


class Reservation:
    """Funds held for one payout between the check and the provider's answer.

    Use it as a context manager: on normal exit the hold is committed (the payout was
    submitted; it keeps counting until the provider's balance can show it), on an exception it
    is released. ``commit()`` and ``release()`` may also be called directly; each acts once.

    Attributes:
        decision: The decision that allowed (or, in dry-run mode, would have denied) the payout.
        payout_id: The idempotency key.
        hold: The hold in the store, or ``None`` when nothing is held (dry-run mode).
    """

    def __init__(self, guard: PayoutGuard, decision: Decision, hold: Hold | None) -> None:
        self.decision = decision
        self.payout_id = decision.payout_id or ""
        self.hold = hold
        self._guard = guard
        self._lock = threading.Lock()
        self._state: State = "none" if hold is None else hold.state

    def __repr__(self) -> str:
        return (
            f"Reservation(payout_id={self.payout_id!r}, amount={self.decision.amount}, "
            f"currency={self.decision.currency!r}, state={self._state!r})"
        )

    @property
    def state(self) -> State:
        """Return ``pending``, ``committed``, ``released`` or ``none`` (nothing held)."""
        return self._state

    def commit(self) -> None:
        """Record that the payout was submitted. Does nothing when nothing is held.

        Raises:
            GuardError: the hold was released earlier, so there is nothing to commit.
        """
        with self._lock:
            if self._state in ("none", "committed"):
                return
            if self._state == "released":
                raise GuardError(f"payout {self.payout_id!r} was released; it cannot be committed")
            hold = self._guard.reservations.commit(self.payout_id, now=self._guard._now())
            if hold is None:
                raise GuardError(
                    f"the hold for payout {self.payout_id!r} is gone from the store "
                    f"(released elsewhere or purged); the commit was not recorded"
                )
            self.hold = hold
            self._state = "committed"
        self._guard._invalidate(self.decision.currency)

    def release(self) -> bool:
        """Give the held funds back (the payout was not submitted); return whether it did.

        A committed payout cannot be released: the money has left.
        """
        with self._lock:
            if self._state != "pending":
                return False
            released = self._guard.reservations.release(self.payout_id)
            self._state = "released"
            return released

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.release()


def _already_held(hold: Hold, outcome: str) -> Reason:
    """Return the ``duplicate_payout`` warning for a payout id that already holds *hold*."""
    return Reason.model_construct(
        code="duplicate_payout",
        message=(
            f"payout id {hold.payout_id!r} already holds {hold.held} {hold.currency} "
            f"({hold.state}); {outcome}"
        ),
        rule="guard", retryable=False, details={},
    )


def _warning(decision: Decision, reason: Reason) -> Decision:
    return decision.model_copy(update={"warnings": (*decision.warnings, reason)})


def _existing(guard: PayoutGuard, hold: Hold, decision: Decision) -> Reservation:
    note = _already_held(hold, "returning that reservation, nothing more is held")
    decision = _warning(decision, note).model_copy(update={"allowed": True, "reasons": ()})
    guard._emit(decision)
    return Reservation(guard, decision, hold)


def _refuse(guard: PayoutGuard, decision: Decision) -> Reservation:
    guard._emit(decision)
    if guard.mode == "dry_run":
        return Reservation(guard, decision, None)
    raise PayoutDenied(decision)


def reserve(guard: PayoutGuard, request: Request, ttl: float) -> Reservation:
    """Judge *request* and hold its funds atomically (``PayoutGuard.reserve``)."""
    payout_id = request.payout_id or ""
    asked = f"{request.amount + request.fee} {request.currency}"
    decision: Decision | None = None
    for _ in range(_ATTEMPTS):
        decision, snapshot = guard._decide(request)
        # Hold on the account that was judged, however the caller named it.
        account = request.account if snapshot is None else snapshot.account
        key = balance_key(guard.provider, account, request.currency)
        try:
            if not decision.allowed or guard.mode == "dry_run":
                # A payout that already holds may be judged short only because its own hold
                # counts: answer with that hold rather than a denial.
                previous = guard.reservations.get(payout_id)
                if previous is not None and (
                    previous.state == "committed" or previous.expires_at > guard._now()
                ):
                    if previous.same_request(_as_hold(request, key, 0.0, 0.0)):
                        return _existing(guard, previous, decision)
                    return _refuse(guard, _duplicate(decision, previous, payout_id, asked))
                return _refuse(guard, decision)
            now = guard._now()
            if snapshot is None:  # allowed without a balance: fail_open was chosen
                ceiling, since = _NO_CEILING, now - guard.settle_lag
            else:
                # Caps fall at most one for one as holds grow, so judged with `reserved` held,
                # the payout stays allowed while the holds that count stay within this ceiling.
                ceiling = decision.reserved + decision.max_payable + request.fee
                since = snapshot.as_of.timestamp() - guard.settle_lag
            outcome = guard.reservations.try_hold(
                _as_hold(request, key, now, now + ttl), ceiling=ceiling, counted_since=since,
                now=now,
            )
        except StoreUnavailable as exc:
            reason = _judge.store_reason(request.currency, exc)
            return _refuse(guard, decision.model_copy(
                update={"allowed": False, "reasons": (reason,), "warnings": ()}
            ))
        if outcome.status == "held":
            guard._emit(decision)
            return Reservation(guard, decision, outcome.hold)
        if outcome.status == "existing" and outcome.hold is not None:
            return _existing(guard, outcome.hold, decision)
        if outcome.status == "conflict" and outcome.hold is not None:
            return _refuse(guard, _duplicate(decision, outcome.hold, payout_id, asked))
        # over_ceiling: concurrent payouts took the room; judge again with their holds counted.
    assert decision is not None  # noqa: S101 - the loop runs at least once
    reason = Reason.model_construct(
        code="insufficient_funds",
        message=(
            f"concurrent payouts kept claiming the {request.currency} funds this payout was "
            f"judged with ({_ATTEMPTS} attempts); retry"
        ),
        rule="guard", retryable=True, details={},
    )
    return _refuse(guard, decision.model_copy(update={"allowed": False, "reasons": (reason,)}))


def without_own_hold(
    guard: PayoutGuard, request: Request, decision: Decision, snapshot: BalanceSnapshot
) -> Decision:
    """Judge a denied ``check`` again without the payout's own hold, if it has one.

    What ``reserve`` answers for the same payout id, read-only: a payout whose funds are
    already held is judged against the other holds only, and says so in a warning; another
    request under the same id is a ``duplicate_payout``. The holds are read once, together.
    """
    payout_id = request.payout_id or ""
    key = balance_key(guard.provider, snapshot.account, request.currency)
    since = snapshot.as_of.timestamp() - guard.settle_lag
    try:
        counted = guard.reservations.holds(key, counted_since=since, now=guard._now())
    except StoreUnavailable:
        return decision  # the denial stands
    own = next((hold for hold in counted if hold.payout_id == payout_id), None)
    if own is None:
        return decision
    if not own.same_request(_as_hold(request, key, 0.0, 0.0)):
        asked = f"{ADD(request.amount, request.fee)} {request.currency}"
        return _duplicate(decision, own, payout_id, asked)
    others = [hold for hold in counted if hold is not own]
    again, _ = guard._judge_once(request, force=False, clear=True, counted=others)
    return _warning(again, _already_held(own, "judged against the other holds only"))


def _duplicate(decision: Decision, held: Hold, payout_id: str, asked: str) -> Decision:
    reason = _judge.duplicate_reason(payout_id, f"{held.held} {held.currency}", asked)
    return decision.model_copy(update={"allowed": False, "reasons": (reason,)})


def _as_hold(request: Request, key: str, now: float, expires: float) -> Hold:
    return Hold(
        payout_id=request.payout_id or "",
        key=key,
        currency=request.currency,
        amount=request.amount,
        fee=request.fee,
        state="pending",
        created_at=now,
        expires_at=expires,
    )
