"""``PayoutGuard``: the decision core driven with blocking calls.

Every decision line is in ``guard/_core.py``; this module only does the I/O each step asks for
(the balance cache, the reservation store) in the calling thread.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, overload

from guard._core import (
    FetchBalances,
    Flow,
    ReadHeld,
    Release,
    Reserved,
    Step,
    run,
    store_call,
)
from guard._guard import GuardBase, owner_token
from guard._health import HEALTH_PROBE_ID, Health
from guard._models import Decision
from guard._protect import AsyncAdmit, Settles, SyncAdmit
from guard._request import Request, parse_payout_id, parse_request
from guard._reservation import ExceptionTypes, Reservation
from guard.errors import ConfigurationError, InvalidPayoutRequest, PayoutDenied
from guard.instrumentation._hooks import EVENTS
from guard.stores import Hold, HoldState, ReservationStore
from rules.money import money_context

__all__ = ["PayoutGuard"]

Perform = Callable[[Step], Any]


class PayoutGuard(GuardBase):
    """Decide, with reasons, whether a payout may go out now; blocking calls.

    Takes the options of ``GuardBase`` (see there). Use ``AsyncPayoutGuard`` in an event
    loop: this guard's ``check`` would block the loop for the whole fetch.
    """

    def close(self) -> None:
        """Close the fetchers' HTTP sessions, the reservation store and the decision log."""
        self.threads.close()
        self.store_threads.close()
        self.give_backs.close()
        for part in (*self.fetchers.values(), self.reservations, self.decision_log):
            close = getattr(part, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> PayoutGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def check(
        self,
        amount: object,
        currency: object,
        *,
        account: str | None = None,
        payout_id: str | None = None,
        fee: object = None,
        provider: str | None = None,
    ) -> Decision:
        """Return whether a payout of *amount* *currency* may go out now, with reasons.

        Reads the (cached) balance and the holds, applies the rules and logs the decision;
        changes nothing. A denial is a return value: call ``raise_for_denial()`` to raise.
        A guard over several providers judges the payout at each candidate and allows it
        when one allows it: ``decision.provider`` is the one chosen, ``decision.candidates``
        lists them all.

        Args:
            amount: Major units, as ``Decimal``, ``str`` or ``int`` (never ``float``).
            currency: ISO 4217 code.
            account: Account to check, for providers that report several.
            payout_id: Your id for the payout, carried into the decision and logs. An id
                that ``reserve`` would refuse (it is being sent, was sent, or may have been
                sent) is denied as ``duplicate_payout``: this costs one store read.
            fee: What the provider charges on top (default 0).
            provider: Judge at this provider only (default: route over the candidates).

        Raises:
            InvalidPayoutRequest: the request itself is malformed. Nothing else: provider
                trouble is a ``balance_unavailable`` denial, a rule that raises a
                ``rule_error`` one.
            ConfigurationError: *provider* is not one of the guard's.
        """
        request = parse_request(amount, currency, account, payout_id, fee)
        pinned = None if provider is None else self.pinned(provider)
        if EVENTS.tracing:
            with EVENTS.span("payout_guard.check", request):
                return self._checked(request, pinned)
        return self._checked(request, pinned)

    def _checked(self, request: Request, pinned: str | None) -> Decision:
        decision, _ = run(self.core.check(request, pinned), self._perform)
        self.core.emit(decision, "check", pinned)
        return decision

    @overload
    def max_payable(
        self, currency: object, *, account: str | None = ..., provider: str | None = ...,
        by_provider: Literal[False] = ...,
    ) -> Decimal: ...

    @overload
    def max_payable(
        self, currency: object, *, account: str | None = ..., provider: str | None = ...,
        by_provider: Literal[True],
    ) -> dict[str, Decimal]: ...

    def max_payable(
        self, currency: object, *, account: str | None = None, provider: str | None = None,
        by_provider: bool = False,
    ) -> Decimal | dict[str, Decimal]:
        """Return the largest amount (fee 0) that would be allowed now; 0 when none would be.

        Over several providers: the largest one provider could pay (a payout is never split),
        or with *by_provider* a mapping of each candidate provider to its amount. *provider*
        asks one provider only.

        Raises:
            ConfigurationError: *provider* is not one of the guard's.
        """
        probe, pinned = self.probe(currency, account), self.pinned(provider)
        with money_context():
            if by_provider:
                names = self.core.candidates(probe.currency, pinned)
                return run(self.core.max_payables(probe, names), self._perform)
            return run(self.core.max_payable(probe, pinned), self._perform)

    def reserve(
        self,
        amount: object,
        currency: object,
        *,
        payout_id: str,
        account: str | None = None,
        fee: object = None,
        ttl: float | None = None,
        connection: object = None,
        provider: str | None = None,
    ) -> Reservation:
        """Check and hold the funds for one payout, atomically; see :class:`Reservation`.

        By what the store holds for *payout_id*: nothing, a released hold or a pending hold
        past its ttl: the payout is judged and held. A live pending hold (being sent now), a
        committed one (sent) or an uncertain one (may have been sent): ``duplicate_payout``
        (retryable only for the pending one), and nothing is held.

        With *connection* (an open ``psycopg.Connection``, for ``PostgresReservations``), the
        hold is written in that connection's transaction, and the reservation's ``commit()``
        and ``release()`` act in it too: the hold commits or rolls back with the caller's own
        rows (``examples/postgres_outbox.py``).

        A guard over several providers holds at the first candidate (in routing order) whose
        rules allow the payout, and at the next one when concurrent payouts took the room
        there; *provider* pins one. A payout id is unique across the providers of a store.

        Raises:
            ConfigurationError: *connection* is given but the store cannot work inside a
                caller's transaction (it has no ``bound``).
            InvalidPayoutRequest: the request is malformed (a ``payout_id`` is required).
            PayoutDenied: the payout is denied and the guard enforces.
        """
        request, hold_ttl = self.parse_reserve(amount, currency, payout_id, account, fee, ttl)
        pinned = self.pinned(provider)
        perform = self._perform if connection is None else self._performer(
            self._bound(connection)
        )
        owner = owner_token()
        with EVENTS.span("payout_guard.reserve", request):
            reserved = run(self.core.reserve(request, ttl=hold_ttl, owner=owner, provider=pinned),
                           perform)
            return self._handle(reserved, perform, pinned)

    def hold(self, payout_id: str) -> Hold | None:
        """Return what the store records for *payout_id* (without its owner token), if any.

        ``state`` is ``pending``, ``committed`` or ``uncertain``; a pending hold past its
        ``expires_at`` has expired (``hold.expired(now)``).

        Raises:
            InvalidPayoutRequest: *payout_id* cannot be a payout id.
            StoreUnavailable: the store did not answer.
        """
        found = self.reservations.get(parse_payout_id(payout_id))
        return None if found is None else found.public()

    def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
    ) -> list[Hold]:
        """Return the holds the store records across every key, newest first.

        For operators: what is pending (not past its ttl), uncertain (also past its
        ``uncertain_ttl``: it still waits for ``resolve``) and committed (while the store's
        retention keeps it). A pending hold past its ttl is not listed (its payout id is free
        again). Newest first: ``created_at`` descending, then ``payout_id``. Holds come
        without their owner tokens. The store reads every hold it keeps for this: a call for
        an operator or a dashboard, not for the payout path.

        Args:
            provider: Only holds on this provider's balances.
            currency: Only holds in this currency (ISO 4217, any case).
            state: ``"pending"``, ``"committed"`` or ``"uncertain"``; ``None``: all three.
            limit: At most this many holds (1 to 10,000).

        Raises:
            ConfigurationError: *provider* is none of this guard's providers.
            InvalidPayoutRequest: *currency*, *state* or *limit* is not one.
            StoreUnavailable: the store did not answer.
        """
        flow = self.core.list_holds(provider=self.pinned(provider), currency=currency,
                                    state=state, limit=limit)
        return run(flow, self._perform)

    def release_hold(self, payout_id: str) -> Hold:
        """Release the pending hold of *payout_id* as an operator, without its reservation.

        For a hold left by a worker that will never end it (its funds stay held until the
        ttl). Refused for a committed hold (the money left) and an uncertain one (use
        ``resolve``); atomic against the reservation ending it at the same moment. Logged as
        ``payout_guard.hold`` with ``change="released"`` and ``by="operator"``.

        Returns:
            The hold released, without its owner token.

        Raises:
            GuardError: no hold is recorded for *payout_id*, or it is not pending.
            InvalidPayoutRequest: *payout_id* cannot be a payout id.
            StoreUnavailable: the store did not answer.
        """
        return run(self.core.release_hold(parse_payout_id(payout_id)), self._perform)

    def resolve(self, payout_id: str, *, sent: bool) -> Hold | None:
        """End an uncertain hold once you know whether its payout left.

        Args:
            payout_id: The payout whose outcome was unknown.
            sent: ``True``: it left (the hold becomes committed now and counts until a
                balance can show it). ``False``: it did not (the hold is released).

        Returns:
            The committed hold, or ``None`` when it was released.

        Raises:
            GuardError: no hold is recorded for *payout_id*, or its hold is not uncertain.
            InvalidPayoutRequest: *payout_id* cannot be a payout id.
            StoreUnavailable: the store did not answer.
        """
        if not isinstance(sent, bool):
            raise InvalidPayoutRequest(f"sent must be True or False, got {str(sent)[:40]}")
        found = run(self.core.resolve(parse_payout_id(payout_id), sent=sent), self._perform)
        if found is not None:
            self.after_resolve(found)
        return found

    def health(self, *, probe: bool = False) -> Health:
        """Return whether the provider answered the last balance request and the store answers.

        The provider's part is what the guard recorded of its last balance request (its
        outcome, age and the class of the last error): no request is made unless *probe*.
        The store is asked one cheap read. Never raises for an outage: it reports it.

        Args:
            probe: Ask each provider for its balances now (nothing cached), so that a guard
                that has not fetched yet, or not lately, reports the present. Concurrent
                probes share one request; none is sent when one succeeded within
                ``cache_ttl`` seconds, or while the request budget is spent (then
                ``budget_wait_seconds`` says for how long). A probe waits for its provider
                as long as a check waits for a fetch, then reports it failing.

        Returns:
            ``Health``; ``health.healthy`` is ``True`` when the last balance request
            succeeded and the store answered.
        """
        if probe:
            # Every provider's request at once: the probes end within one wait, not one each.
            for wait in [cache.start_probe() for cache in self.caches.values()]:
                wait()
        try:
            self.reservations.get(HEALTH_PROBE_ID)
        except Exception as exc:  # noqa: BLE001 - any failure to answer is what is reported
            return self.health_report(exc)
        return self.health_report(None)

    def blocking_admission(self) -> SyncAdmit:
        """Return how ``protect`` admits a call: reserve (with a payout id) or check."""
        return self._admit

    def async_admission(self) -> AsyncAdmit:
        """Return how ``protect`` admits an ``async def`` call: in the guard's thread pool.

        A task cancelled while its hold is being taken has that hold released when the
        thread finishes, so nothing is left held without an owner.
        """
        return self._admit_in_pool

    def runner(self) -> Callable[[Flow[Any]], Any]:
        """Return how this guard runs a flow: its steps done with blocking calls."""
        return self._run

    def _run(self, flow: Flow[Any]) -> Any:
        return run(flow, self._perform)

    def _perform(self, step: Any) -> Any:
        """Do *step* (a ``Step``): read the balance cache or ask the guard's store.

        Typed ``Any`` and dispatched on the exact class, with no casts: every check passes
        here twice.
        """
        kind = type(step)
        if kind is FetchBalances:
            return self.caches[step.provider].get_fetched(step.currency, force=step.fresh)
        if EVENTS.stores:  # a hook times store calls
            with EVENTS.store_timer(self.reservations, step):
                return store_call(self.reservations, step)
        if kind is ReadHeld:  # every check: asked directly, not through store_call
            return self.reservations.reserved(step.key, counted_since=step.counted_since,
                                              now=step.now)
        return store_call(self.reservations, step)

    def _performer(self, store: ReservationStore) -> Perform:
        """Return how steps are done with *store* in place of the guard's store."""

        def perform(step: Step) -> Any:
            if isinstance(step, FetchBalances):
                return self.caches[step.provider].get_fetched(step.currency, force=step.fresh)
            with EVENTS.store_timer(store, step):
                return store_call(store, step)

        return perform

    def _bound(self, connection: object) -> ReservationStore:
        """Return the store's view working inside *connection*'s transaction."""
        bound = getattr(self.reservations, "bound", None)
        if not callable(bound):
            raise ConfigurationError(
                f"reserve(connection=...) needs a store that can work inside the caller's "
                f"transaction (PostgresReservations); this guard's is "
                f"{type(self.reservations).__name__}",
                path="connection",
            )
        store: ReservationStore = bound(connection)
        return store

    def _handle(
        self, reserved: Reserved, perform: Perform, asked: str | None = None
    ) -> Reservation:
        """Log *reserved*'s decision and return its handle, or raise its denial.

        *asked* is the provider the caller pinned, for the decision's record.
        """
        self.core.note_lapsed(reserved.lapsed)
        decision, hold = reserved.decision, reserved.hold
        if reserved.unsure is not None and perform == self._perform:
            # (In a caller's transaction, the hold stands or falls with the transaction.)
            self.give_backs.add(reserved.unsure)
        if hold is not None:
            try:
                self.core.emit(decision, "reserve", asked)
                return self._reservation(decision, hold, perform)
            except BaseException:
                # Nobody would hold the handle: give the hold back in this same call.
                run(_release(hold), perform)
                raise
        self.core.emit(decision, "reserve", asked)
        if decision.blocks:
            raise PayoutDenied(decision)
        return self._reservation(decision, None, perform)

    def _reservation(
        self, decision: Decision, hold: Hold | None, perform: Perform
    ) -> Reservation:
        if perform == self._perform:  # ==: each self._perform is a new bound method
            return Reservation(decision, hold, self._handling)
        return Reservation(decision, hold, self.handling(lambda flow: run(flow, perform),
                                                         in_callers_transaction=True))

    def _admit(self, request: dict[str, Any]) -> Reservation | None:
        if "payout_id" in request:
            return self.reserve(**request)
        decision = self.check(**request)
        if decision.blocks:
            raise PayoutDenied(decision)
        return None

    async def _admit_in_pool(self, request: dict[str, Any]) -> Settles | None:
        reservation = await self.threads.run_keeping(_give_back, self._admit, request)
        return None if reservation is None else _InPool(reservation, self)


def _release(hold: Hold) -> Flow[bool]:
    released: bool = yield Release(hold.payout_id, hold.owner)
    return released


def _give_back(reservation: Reservation | None) -> None:
    """Release a hold taken for a call whose task was cancelled before its body ran."""
    if reservation is not None:
        reservation.release()


class _InPool:
    """A blocking reservation ended from an event loop, in the guard's thread pool."""

    def __init__(self, reservation: Reservation, guard: PayoutGuard) -> None:
        self._reservation = reservation
        self._guard = guard

    async def settle(
        self, exc: BaseException | None, *, uncertain_on: ExceptionTypes | None = None
    ) -> None:
        # Shielded: a second cancellation must not stop the hold from ending.
        await self._guard.threads.run_shielded(
            self._reservation.settle, exc, uncertain_on=uncertain_on
        )
