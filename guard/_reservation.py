"""The handle of one payout's hold: ``Reservation`` and ``AsyncReservation``, and how they end.

A reservation knows the secret owner token of the hold it took; the store acts on that hold
only when the token matches, so a stale or duplicated handle can never commit or release a
hold another reservation took. How the payout ends decides what happens to the hold:

- it returned normally: **committed** (the money left);
- it raised ``PayoutNotSent``, or an ``Exception`` not in ``uncertain_on``: **released**;
- it raised ``PayoutOutcomeUnknown``, an exception in ``uncertain_on`` (default ``OSError``,
  which covers timeouts, connection errors and every ``requests`` exception), or a
  ``BaseException`` that is not an ``Exception`` (cancellation, ``KeyboardInterrupt``):
  **uncertain**, so it keeps counting and its id is not sent again until resolved.

What each ending asks of the store is written once, as flows of core steps (``Commit``,
``Release``, ``MarkUncertain``) in ``_Handle``; ``Reservation`` runs them with blocking calls
and ``AsyncReservation`` awaits them, each with the driver of the guard that made it.

An ending the store could not record (``StoreUnavailable``: locked, restarting, unreachable)
is not left to the hold's ttl, after which its payout id could be reserved and sent again:
the reservation keeps trying in the background (a thread, or a task of the event loop), with
backoff, for up to ``KEEP_TRYING_FOR`` seconds, and logs ``payout_guard.hold_not_settled`` at
error level when it starts and if it gives up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import structlog

from guard._core import Commit, Flow, MarkUncertain, Release
from guard._models import Decision
from guard.errors import (
    ConfigurationError,
    GuardError,
    PayoutNotSent,
    PayoutOutcomeUnknown,
    StoreUnavailable,
)
from guard.stores import Hold

__all__ = [
    "DEFAULT_UNCERTAIN_ON",
    "GIVE_BACKS_KEPT",
    "KEEP_TRYING_FOR",
    "AsyncReservation",
    "Ending",
    "GiveBacks",
    "Handling",
    "Reservation",
    "ending",
    "keep_running",
    "uncertain_on_option",
]

T = TypeVar("T")

# Tasks that outlive the task that started them (keep_running): asyncio keeps only weak
# references.
_finishing: set[asyncio.Future[Any]] = set()

# How long an ending the store did not record is tried again, in seconds of real time, and
# the longest pause between two tries.
KEEP_TRYING_FOR = 3600.0
_MOST_BETWEEN_TRIES = 5.0


def _pauses() -> Generator[float, None, None]:
    """Yield the pauses before each try of an unrecorded ending: 0.1 s doubling to 5 s."""
    pause, until = 0.1, time.monotonic() + KEEP_TRYING_FOR
    while time.monotonic() + pause < until:
        yield pause
        pause = min(pause * 2, _MOST_BETWEEN_TRIES)


State = Literal["pending", "committed", "released", "uncertain", "none"]
Ending = Literal["commit", "release", "uncertain"]
ExceptionTypes = tuple[type[BaseException], ...]

DEFAULT_UNCERTAIN_ON: ExceptionTypes = (OSError, PayoutOutcomeUnknown)

_log = structlog.get_logger("payout_guard")


def _hold_event(level: int, change: str, hold: Hold, **extra: object) -> None:
    """Log ``payout_guard.hold`` with *change*, building its fields only if *level* is on."""
    logger = _log.bind()  # resolved once: each attribute of the lazy proxy binds again
    enabled = getattr(logger, "is_enabled_for", None)
    if enabled is not None and not enabled(level):
        return  # every reserve and commit passes here: no fields for a dropped event
    method = getattr(logger, logging.getLevelName(level).lower())
    method("payout_guard.hold", change=change, payout_id=hold.payout_id,
           amount=str(hold.held), currency=hold.currency, **extra)


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
    """Return what leaving a guarded payout with *exc* (``None``: normally) does to its hold.

    An exception group (``asyncio.TaskGroup``'s) releases the hold only when each exception
    in it would; one that would keep it uncertain keeps it uncertain.
    """
    if exc is None:
        return "commit"
    if isinstance(exc, BaseExceptionGroup) and not isinstance(exc, uncertain_on):
        # A task group (asyncio.TaskGroup, ``except*``) raised several: each is judged alone,
        # and one that leaves the outcome unknown keeps the hold.
        endings = {ending(inner, uncertain_on) for inner in exc.exceptions}
        return "uncertain" if "uncertain" in endings else "release"
    if isinstance(exc, PayoutNotSent):
        return "release"
    if isinstance(exc, (PayoutOutcomeUnknown, *uncertain_on)) or not isinstance(exc, Exception):
        return "uncertain"
    return "release"


@dataclass(frozen=True, slots=True)
class Handling:
    """What every reservation of one guard shares: made once per guard, not per payout.

    Attributes:
        run: Runs a flow of store steps (blocking, or awaitable for ``AsyncReservation``).
        clock: Wall time, for commit and uncertain times.
        uncertain_ttl: Seconds an uncertain hold keeps counting.
        uncertain_on: Exceptions that mark a hold uncertain.
        on_commit: Called with the provider and the currency after a commit (that balance is
            refreshed soon).
        in_callers_transaction: The holds are written in the caller's own database
            transaction (``reserve(connection=...)``): an ending the store did not record is
            not tried again (the transaction is the caller's), and one marked uncertain is
            said to roll back with it.
    """

    run: Callable[[Flow[Any]], Any]
    clock: Callable[[], float]
    uncertain_ttl: float
    uncertain_on: ExceptionTypes
    on_commit: Callable[[str, str], None]
    in_callers_transaction: bool = False


class _Handle:
    """What both reservations share: their state, and a flow for each way a hold ends.

    Attributes:
        decision: The decision that allowed (or, in dry-run mode, would have denied) the payout.
        payout_id: The idempotency key.
    """

    def __init__(self, decision: Decision, hold: Hold | None, handling: Handling) -> None:
        self.decision = decision
        self.payout_id = decision.payout_id or ""
        self._hold = hold
        self._owner = "" if hold is None else hold.owner
        self._handling = handling
        self._state: State = "none" if hold is None else hold.state
        self._expiry_noted = False
        if hold is not None:
            _hold_event(logging.DEBUG, "reserved", hold, expires_at=hold.expires_at)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(payout_id={self.payout_id[:40]!r}, "
            f"amount={self.decision.amount}, currency={self.decision.currency!r}, "
            f"state={self._state!r})"
        )

    @property
    def state(self) -> State:
        """Return ``pending``, ``committed``, ``released``, ``uncertain`` or ``none``."""
        return self._state

    @property
    def hold(self) -> Hold | None:
        """Return the hold as this reservation last saw it, without its owner token.

        ``None`` when nothing is held (dry-run mode).
        """
        return None if self._hold is None else self._hold.public()

    def _note_expiry(self, now: float) -> None:
        """Log once (``change="expired"``) that the pending hold passed its ttl before it ended.

        From then on it no longer held the funds, and its payout id could be reserved again:
        the payout took longer than the hold's ttl. Noticed here, when the reservation ends,
        at no cost to the store.
        """
        hold = self._hold
        if (self._state == "pending" and hold is not None and not self._expiry_noted
                and now >= hold.expires_at):
            self._expiry_noted = True
            _hold_event(logging.WARNING, "expired", hold, expires_at=hold.expires_at,
                        late_by=round(now - hold.expires_at, 3), noticed_by="reservation")

    def _commit(self) -> Flow[None]:
        if self._state in ("none", "committed"):
            return
        if self._state == "released":
            raise GuardError(
                f"payout {self.payout_id[:40]!r} was released; it cannot be committed"
            )
        now = self._handling.clock()
        self._note_expiry(now)
        hold = yield Commit(self.payout_id, self._owner, now)
        if hold is None:
            raise self._lost("the commit was not recorded")
        self._hold = hold
        self._state = "committed"
        _hold_event(logging.DEBUG, "committed", hold)
        self._handling.on_commit(self.decision.provider, self.decision.currency)

    def _release(self) -> Flow[bool]:
        if self._state != "pending":
            return False
        self._note_expiry(self._handling.clock())
        released: bool = yield Release(self.payout_id, self._owner)
        self._state = "released"
        if released and self._hold is not None:
            _hold_event(logging.DEBUG, "released", self._hold)
        return released

    def _mark_uncertain(self) -> Flow[Hold | None]:
        if self._state in ("none", "committed", "uncertain"):
            return self.hold
        if self._state == "released":
            raise GuardError(
                f"payout {self.payout_id[:40]!r} was released; it cannot be marked uncertain"
            )
        now = self._handling.clock()
        self._note_expiry(now)
        hold = yield MarkUncertain(self.payout_id, self._owner, now,
                                   now + self._handling.uncertain_ttl)
        if hold is None:
            raise self._lost("it could not be marked uncertain")
        self._hold = hold
        self._state = hold.state
        _hold_event(logging.WARNING, "uncertain", hold)
        if self._handling.in_callers_transaction:
            _log.error(
                "payout_guard.uncertain_in_transaction", payout_id=self.payout_id,
                detail="the uncertain hold is written in your transaction: if it rolls back, "
                "the hold goes with it; check the provider before sending this payout id "
                "again (send from an outbox after your commit instead)",
            )
        return self.hold

    def _ending_of(
        self, exc: BaseException | None, uncertain_on: ExceptionTypes | None
    ) -> tuple[Ending, Callable[[], Flow[Any]]]:
        """Return how leaving the payout with *exc* ends the hold, and the flow that does it."""
        how = ending(exc, self._handling.uncertain_on if uncertain_on is None else uncertain_on)
        return how, {
            "commit": self._commit, "release": self._release, "uncertain": self._mark_uncertain,
        }[how]

    def _not_settled(self, how: str, trouble: GuardError, *, retrying: bool) -> None:
        """Log that the hold could not be ended *how* (``payout_guard.hold_not_settled``)."""
        _log.error(
            "payout_guard.hold_not_settled", payout_id=self.payout_id, wanted=how,
            error=type(trouble).__name__, message=str(trouble), retrying=retrying,
        )

    def _settled_late(self, how: str) -> None:
        if self._hold is not None:
            _hold_event(logging.WARNING, "settled_late", self._hold, wanted=how)

    def _gave_up(self, how: str, trouble: BaseException | None) -> None:
        _log.error(
            "payout_guard.hold_not_settled", payout_id=self.payout_id, wanted=how,
            error=type(trouble).__name__, message=str(trouble or ""), retrying=False,
            detail="gave up trying: check the provider for this payout and resolve its hold",
        )

    def _lost(self, what: str) -> GuardError:
        return GuardError(
            f"the hold for payout {self.payout_id[:40]!r} is gone from the store or now belongs "
            f"to another reservation (its ttl passed and the id was reserved again); {what}. "
            f"Check the provider for this payout"
        )


_SETTLE_DOC = """End the hold the way leaving the payout with *exc* (``None``: normally) says.

        Used when a ``with`` block or a ``protect``-ed call ends. When the payout failed,
        trouble ending the hold is logged (``payout_guard.hold_not_settled``) rather than
        raised, so the payout's own exception is the one the caller sees. An ending the
        store did not record is tried again in the background (see the module docstring).

        Raises:
            GuardError: *exc* is ``None`` and the commit failed (see ``commit``).
        """


class Reservation(_Handle):
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

    def __init__(self, decision: Decision, hold: Hold | None, handling: Handling) -> None:
        super().__init__(decision, hold, handling)
        self._run = handling.run
        self._lock = threading.Lock()

    def commit(self) -> None:
        """Record that the payout was sent. Does nothing when nothing is held.

        An uncertain hold becomes committed (you learned that the money left).

        Raises:
            GuardError: the hold was released earlier, or it is gone from the store or now
                belongs to another reservation (its ttl passed and the id was reserved
                again): the commit was not recorded.
            StoreUnavailable: the store did not answer; the reservation keeps trying to
                record the commit in the background (see the module docstring).
        """
        with self._lock:
            self._ending("commit", self._commit)

    def release(self) -> bool:
        """Give the held funds back (the payout was not sent); return whether it did.

        Only a pending hold of this reservation's is released: a committed or uncertain
        payout may have left, and a hold another reservation took is not this one's.
        """
        with self._lock:
            released: bool = self._ending("release", self._release)
            return released

    def mark_uncertain(self) -> Hold | None:
        """Keep the funds held because the payout may or may not have left; return the hold.

        The hold counts like a committed one, and its payout id is not sent again, until
        ``guard.resolve(payout_id, sent=...)`` or until ``uncertain_ttl`` passes. Does nothing
        (returns the hold as it is) when nothing is held or it is committed already.

        Raises:
            GuardError: the hold was released, or it is gone or belongs to another reservation.
            StoreUnavailable: the store did not answer; the reservation keeps trying in the
                background (see the module docstring).
        """
        with self._lock:
            hold: Hold | None = self._ending("uncertain", self._mark_uncertain)
            return hold

    def settle(
        self, exc: BaseException | None, *, uncertain_on: ExceptionTypes | None = None
    ) -> None:
        how, make = self._ending_of(exc, uncertain_on)
        with self._lock:
            if how == "commit":
                self._ending(how, make)
                return
            try:
                self._ending(how, make)
            except StoreUnavailable:
                pass  # logged, and tried again
            except GuardError as trouble:
                self._not_settled(how, trouble, retrying=False)

    def _ending(self, how: Ending, make: Callable[[], Flow[T]]) -> T:
        """Run the ending *make* builds; one the store did not record is tried again.

        Raises what the ending raises; after ``StoreUnavailable``, a thread goes on trying
        (not in the caller's own transaction: that is the caller's to end).
        """
        try:
            result: T = self._run(make())
        except StoreUnavailable as exc:
            retrying = not self._handling.in_callers_transaction
            self._not_settled(how, exc, retrying=retrying)
            if not retrying:
                raise
            threading.Thread(target=self._keep_trying, args=(how, make), daemon=True,
                             name=f"payout-guard {how} {self.payout_id[:40]}").start()
            raise
        return result

    def _keep_trying(self, how: Ending, make: Callable[[], Flow[Any]]) -> None:
        trouble: BaseException | None = None
        for pause in _pauses():
            time.sleep(pause)
            with self._lock:
                try:
                    self._run(make())
                except StoreUnavailable as exc:
                    trouble = exc
                    continue
                except GuardError as exc:  # ended otherwise meanwhile, or not this one's
                    self._gave_up(how, exc)
                    return
            self._settled_late(how)
            return
        self._gave_up(how, trouble)

    settle.__doc__ = _SETTLE_DOC

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.settle(exc)


class AsyncReservation(_Handle):
    """``Reservation`` for ``AsyncPayoutGuard``: the same rules, every ending awaited.

    Use it as ``async with``: on normal exit the hold is committed; on an exception it is
    released or marked uncertain, and a cancellation inside the block marks it uncertain.
    Ending a hold is shielded from a second cancellation: it finishes in the background.

    Attributes:
        decision: The decision that allowed (or, in dry-run mode, would have denied) the payout.
        payout_id: The idempotency key.
        hold: The hold in the store, or ``None`` when nothing is held (dry-run mode).
    """

    def __init__(self, decision: Decision, hold: Hold | None, handling: Handling) -> None:
        super().__init__(decision, hold, handling)
        self._run = handling.run
        self._lock = asyncio.Lock()

    async def commit(self) -> None:
        """Record that the payout was sent (see ``Reservation.commit``)."""
        await self._shielded("commit", self._commit)

    async def release(self) -> bool:
        """Give the held funds back; return whether it did (see ``Reservation.release``)."""
        released: bool = await self._shielded("release", self._release)
        return released

    async def mark_uncertain(self) -> Hold | None:
        """Keep the funds held, outcome unknown (see ``Reservation.mark_uncertain``)."""
        hold: Hold | None = await self._shielded("uncertain", self._mark_uncertain)
        return hold

    async def settle(
        self, exc: BaseException | None, *, uncertain_on: ExceptionTypes | None = None
    ) -> None:
        how, make = self._ending_of(exc, uncertain_on)
        if how == "commit":
            await self._shielded(how, make)
            return
        try:
            await self._shielded(how, make)
        except StoreUnavailable:
            pass  # logged, and tried again
        except GuardError as trouble:
            self._not_settled(how, trouble, retrying=False)

    settle.__doc__ = _SETTLE_DOC

    async def __aenter__(self) -> AsyncReservation:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.settle(exc)

    async def _shielded(self, how: Ending, make: Callable[[], Flow[T]]) -> T:
        """Run the ending *make* builds under the lock, even if the awaiting task is cancelled.

        One the store did not record is tried again by a task of its own.
        """

        async def locked() -> T:
            async with self._lock:
                try:
                    result: T = await self._run(make())
                except StoreUnavailable as exc:
                    retrying = not self._handling.in_callers_transaction
                    self._not_settled(how, exc, retrying=retrying)
                    if retrying:
                        keep_running(self._keep_trying(how, make))
                    raise
                return result

        return await asyncio.shield(keep_running(locked()))

    async def _keep_trying(self, how: Ending, make: Callable[[], Flow[Any]]) -> None:
        trouble: BaseException | None = None
        try:
            for pause in _pauses():
                await asyncio.sleep(pause)
                async with self._lock:
                    try:
                        await self._run(make())
                    except StoreUnavailable as exc:
                        trouble = exc
                        continue
                    except GuardError as exc:  # ended otherwise meanwhile, or not this one's
                        self._gave_up(how, exc)
                        return
                self._settled_late(how)
                return
        except asyncio.CancelledError as exc:  # the event loop is closing
            self._gave_up(how, exc)
            raise
        self._gave_up(how, trouble)


def keep_running(work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Run *work* as a task kept until it is done (asyncio keeps only weak references).

    For work that must finish whatever happens to the task that started it: ending a hold,
    giving one back.
    """
    task = asyncio.ensure_future(work)
    _finishing.add(task)
    task.add_done_callback(_finishing.discard)
    return task


# After the store said it holds no such hold, it is asked again after each of these pauses
# (seconds): a write the store took after its caller gave up on it can land late.
_ASKED_AGAIN_AFTER = (1.0, 10.0)
GIVE_BACKS_KEPT = 10_000
"""The most holds a guard keeps to give back; past it, one more ends at its ttl (logged)."""


@dataclass(slots=True)
class _GiveBack:
    hold: Hold
    due: float  # on the monotonic clock
    pause: float = 0.1
    answers: int = 0  # how many times the store said it holds no such hold


class GiveBacks:
    """Holds nobody will end, released in the background by a thread of the guard's.

    A hold is given back when its payout was denied or abandoned before a reservation could
    hold it: a ``try_hold`` the store did not answer (a timeout, a dropped connection: it may
    have written the hold all the same), or one whose task was cancelled. Until its ttl, such
    a hold would keep its funds from every other payout, and refuse a retry of its payout id
    as a duplicate. Each is released by its owner token, so a hold that was never written,
    or that passed its ttl and was taken again, is left alone; a released one is logged as
    ``payout_guard.hold`` with ``change="given_back"``.

    A store that does not answer is asked again with backoff, from 0.1 s doubling to 5 s,
    until the hold's ttl (then the store counts it no more). A store that says it holds no
    such hold is asked again after 1 s and 10 s, for a write that lands late. At most
    ``GIVE_BACKS_KEPT`` holds wait; the thread runs while there are any. A forked child starts
    with none (its parent's are its parent's to give back).

    Args:
        release: Releases a hold by its owner token; returns whether it did (the store's
            ``release``). Called in the thread.
        now: The clock of the holds' times (the guard's wall clock).
    """

    def __init__(self, release: Callable[[Hold], bool], now: Callable[[], float]) -> None:
        self._release = release
        self._now = now
        self._forget_parent()

    def _forget_parent(self) -> None:
        self._changed = threading.Condition()
        self._waiting: dict[tuple[str, str], _GiveBack] = {}
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False

    def _in_this_process(self) -> None:
        if os.getpid() != self._pid:
            self._forget_parent()

    def __len__(self) -> int:
        """Return how many holds wait to be given back."""
        return len(self._waiting)

    def add(self, hold: Hold, *, taken: bool = False) -> None:
        """Give *hold* back in the background: at once if *taken* (the store took it), else soon.

        Does nothing once ``close`` was called.
        """
        self._in_this_process()
        with self._changed:
            if self._closed or (hold.payout_id, hold.owner) in self._waiting:
                return
            if len(self._waiting) >= GIVE_BACKS_KEPT:
                _log.warning(
                    "payout_guard.hold_not_settled", payout_id=hold.payout_id,
                    wanted="give_back", retrying=False,
                    detail=f"{GIVE_BACKS_KEPT} holds wait to be given back already: this one "
                    "ends at its ttl",
                )
                return
            due = time.monotonic() + (0.0 if taken else 0.1)
            self._waiting[hold.payout_id, hold.owner] = _GiveBack(hold, due)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, daemon=True,
                                                name="payout-guard give-backs")
                self._thread.start()
            self._changed.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Stop giving back; the holds still waiting are asked for once more (within *timeout*).

        What the store does not release then ends at its ttl.
        """
        self._in_this_process()
        with self._changed:
            self._closed = True
            thread = self._thread
            self._changed.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._changed:
            left = list(self._waiting.values())
        if left:
            self._ask(left, until=time.monotonic() + timeout, last=True)
        with self._changed:
            if self._waiting:
                _log.warning(
                    "payout_guard.hold_not_settled", wanted="give_back", retrying=False,
                    holds=len(self._waiting),
                    detail="the guard closed before the store released them: they end at "
                    "their ttl",
                )
                self._waiting.clear()

    def _work(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._closed or not self._waiting:
                        self._thread = None
                        return
                    now = time.monotonic()
                    due = [one for one in self._waiting.values() if one.due <= now]
                    if due:
                        break
                    self._changed.wait(min(one.due for one in self._waiting.values()) - now)
            self._ask(due)

    def _ask(
        self, due: list[_GiveBack], *, until: float = float("inf"),  # money-ok: seconds
        last: bool = False,
    ) -> None:
        """Ask the store to release each of *due*; plan the next try of those it did not answer.

        *last*: ask each once (until the store does not answer), plan nothing.
        """
        for index, one in enumerate(due):
            hold = one.hold
            if self._now() >= hold.expires_at or time.monotonic() >= until:
                self._forget(one)  # past its ttl, the store counts it no more
                continue
            try:
                released = self._release(hold)
            except StoreUnavailable:
                if last:
                    break
                # The store does not answer: every hold due now waits, each its own pause.
                now = time.monotonic()
                for waiting in due[index:]:
                    waiting.due = now + waiting.pause
                    waiting.pause = min(waiting.pause * 2, _MOST_BETWEEN_TRIES)
                return
            except Exception as exc:  # noqa: BLE001 - a store's own refusal: nothing to retry
                _log.warning("payout_guard.hold_not_settled", payout_id=hold.payout_id,
                             wanted="give_back", error=type(exc).__name__, retrying=False)
                self._forget(one)
                continue
            if released:
                _hold_event(logging.WARNING, "given_back", hold)
            elif one.answers < len(_ASKED_AGAIN_AFTER) and not last:
                one.due = time.monotonic() + _ASKED_AGAIN_AFTER[one.answers]
                one.answers += 1
                continue
            self._forget(one)

    def _forget(self, one: _GiveBack) -> None:
        with self._changed:
            self._waiting.pop((one.hold.payout_id, one.hold.owner), None)
