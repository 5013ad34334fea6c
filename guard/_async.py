"""``AsyncPayoutGuard``: the decision core driven on an event loop.

Every decision line is in ``guard/_core.py``, shared with ``PayoutGuard``; this module only
awaits the I/O each step asks for. Nothing blocks the loop:

- balances: the shared balance cache; a miss joins the fetch in flight (1,000 concurrent
  checks cost one request) or starts one in the guard's own thread pool (``max_workers``),
  never in the loop's default executor;
- holds: natively on asyncio when the store offers it (``RedisReservations`` on
  ``redis.asyncio``), directly for ``InMemoryReservations`` (no I/O), and in the guard's
  thread pool for any other store (``SqliteReservations``).

A task cancelled while its hold is being taken has that hold released as soon as the store
answers: nothing is left held without an owner.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Generator
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal, overload

import structlog

from guard._core import (
    FetchBalances,
    Flow,
    GetHold,
    Release,
    Reserved,
    Step,
    StoreStep,
    TryHold,
    arun,
    store_call,
)
from guard._guard import GuardBase, owner_token
from guard._health import HEALTH_PROBE_ID, Health
from guard._models import Decision
from guard._protect import AsyncAdmit, Settles
from guard._request import Request, parse_payout_id, parse_request
from guard._reservation import AsyncReservation, keep_running
from guard.errors import ConfigurationError, InvalidPayoutRequest, PayoutDenied
from guard.instrumentation._hooks import EVENTS
from guard.stores import Hold, HoldOutcome, HoldState, InMemoryReservations
from guard.stores._async import AsyncReservationStore
from rules.money import money_context

__all__ = ["AsyncPayoutGuard"]

Perform = Callable[[Step], Awaitable[Any]]

_log = structlog.get_logger("payout_guard")


class AsyncPayoutGuard(GuardBase):
    """Decide, with reasons, whether a payout may go out now; every call awaitable.

    Takes the options of ``GuardBase`` (see there) and ``from_config`` like ``PayoutGuard``.
    Use it as ``async with AsyncPayoutGuard(...) as guard:`` or call ``await guard.aclose()``.

    Example:
        >>> import asyncio
        >>> from guard.testing import StaticFetcher
        >>> async def main() -> bool:
        ...     async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"})) as guard:
        ...         async with guard.reserve("80.00", "BRL", payout_id="po_1"):
        ...             pass  # await send_to_provider(...)
        ...         return (await guard.check("30.00", "BRL")).allowed
        >>> asyncio.run(main())
        False
    """

    @functools.cached_property
    def _astore(self) -> AsyncReservationStore | None:
        """Return the store's own asyncio form (``RedisReservations.asyncio()``), if it has one."""
        native = getattr(self.reservations, "asyncio", None)
        made = native() if callable(native) else None
        return made if isinstance(made, AsyncReservationStore) else None

    @functools.cached_property
    def _inline(self) -> bool:
        """Return whether the store is called directly on the loop (it does no I/O)."""
        return self._astore is None and isinstance(self.reservations, InMemoryReservations)

    async def aclose(self) -> None:
        """Close the fetchers' HTTP sessions, the store and the decision log (in its pool)."""
        await asyncio.wrap_future(self.store_threads.submit(self.give_backs.close))
        aclose = getattr(self._astore, "aclose", None)
        if callable(aclose):
            await aclose()
        for part in (*self.fetchers.values(), self.reservations, self.decision_log):
            close = getattr(part, "close", None)
            if callable(close):
                await asyncio.wrap_future(self.store_threads.submit(close))
        self.threads.close()
        self.store_threads.close()

    async def __aenter__(self) -> AsyncPayoutGuard:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def check(
        self,
        amount: object,
        currency: object,
        *,
        account: str | None = None,
        payout_id: str | None = None,
        fee: object = None,
        provider: str | None = None,
    ) -> Decision:
        """Return whether a payout may go out now, with reasons (``PayoutGuard.check``).

        Raises:
            InvalidPayoutRequest: the request itself is malformed.
            ConfigurationError: *provider* is not one of the guard's.
        """
        request = parse_request(amount, currency, account, payout_id, fee)
        pinned = None if provider is None else self.pinned(provider)
        if EVENTS.tracing:
            with EVENTS.span("payout_guard.check", request):
                return await self._checked(request, pinned)
        return await self._checked(request, pinned)

    async def _checked(self, request: Request, pinned: str | None) -> Decision:
        decision, _ = await arun(self.core.check(request, pinned), self._perform)
        self.core.emit(decision, "check", pinned)
        return decision

    @overload
    async def max_payable(
        self, currency: object, *, account: str | None = ..., provider: str | None = ...,
        by_provider: Literal[False] = ...,
    ) -> Decimal: ...

    @overload
    async def max_payable(
        self, currency: object, *, account: str | None = ..., provider: str | None = ...,
        by_provider: Literal[True],
    ) -> dict[str, Decimal]: ...

    async def max_payable(
        self, currency: object, *, account: str | None = None, provider: str | None = None,
        by_provider: bool = False,
    ) -> Decimal | dict[str, Decimal]:
        """Return the largest amount (fee 0) that would be allowed now (``PayoutGuard``)."""
        probe, pinned = self.probe(currency, account), self.pinned(provider)
        with money_context():
            if by_provider:
                names = self.core.candidates(probe.currency, pinned)
                return await arun(self.core.max_payables(probe, names), self._perform)
            return await arun(self.core.max_payable(probe, pinned), self._perform)

    def reserve(
        self,
        amount: object,
        currency: object,
        *,
        payout_id: str,
        account: str | None = None,
        fee: object = None,
        ttl: float | None = None,
        provider: str | None = None,
        connection: object = None,
    ) -> Reserving:
        """Check and hold the funds for one payout, atomically (``PayoutGuard.reserve``).

        Await it for the ``AsyncReservation``, or use it directly as ``async with
        guard.reserve(...) as reservation:``. The request is checked at once. With
        *connection* (an open ``psycopg.AsyncConnection``, for ``PostgresReservations``), the
        hold, and the reservation's ``commit()``/``release()``, are written in that
        connection's transaction, as ``PayoutGuard.reserve`` does with a blocking one.

        Raises:
            ConfigurationError: *connection* is given but the store cannot work inside a
                caller's transaction, or it is not a ``psycopg.AsyncConnection``.
            InvalidPayoutRequest: the request is malformed (a ``payout_id`` is required).
            PayoutDenied: (when awaited) the payout is denied and the guard enforces.
        """
        request, hold_ttl = self.parse_reserve(amount, currency, payout_id, account, fee, ttl)
        perform = self._perform if connection is None else self._performer(
            self._bound(connection)
        )
        return Reserving(
            functools.partial(self._reserve, provider=self.pinned(provider), perform=perform),
            request, hold_ttl,
        )

    async def hold(self, payout_id: str) -> Hold | None:
        """Return what the store records for *payout_id* (``PayoutGuard.hold``)."""
        found = await self._store(GetHold(parse_payout_id(payout_id)))
        return None if found is None else found.public()

    async def list_holds(
        self,
        *,
        provider: str | None = None,
        currency: str | None = None,
        state: HoldState | None = None,
        limit: int = 100,
    ) -> list[Hold]:
        """Return the holds the store records across every key (``PayoutGuard.list_holds``)."""
        flow = self.core.list_holds(provider=self.pinned(provider), currency=currency,
                                    state=state, limit=limit)
        found: list[Hold] = await arun(flow, self._perform)
        return found

    async def release_hold(self, payout_id: str) -> Hold:
        """Release a pending hold as an operator (``PayoutGuard.release_hold``)."""
        released: Hold = await arun(self.core.release_hold(parse_payout_id(payout_id)),
                                    self._perform)
        return released

    async def resolve(self, payout_id: str, *, sent: bool) -> Hold | None:
        """End an uncertain hold once you know whether its payout left (see ``PayoutGuard``)."""
        if not isinstance(sent, bool):
            raise InvalidPayoutRequest(f"sent must be True or False, got {str(sent)[:40]}")
        found = await arun(self.core.resolve(parse_payout_id(payout_id), sent=sent),
                           self._perform)
        if found is not None:
            self.after_resolve(found)
        return found

    async def health(self, *, probe: bool = False) -> Health:
        """Return whether the provider and the store answer (``PayoutGuard.health``).

        With *probe*, the balance requests are made in the guard's thread pool, every
        provider's at once.
        """
        if probe:
            await asyncio.gather(*(cache.aprobe(submit=self.threads.submit)
                                   for cache in self.caches.values()))
        try:
            await self._store(GetHold(HEALTH_PROBE_ID))
        except Exception as exc:  # noqa: BLE001 - any failure to answer is what is reported
            return self.health_report(exc)
        return self.health_report(None)

    def async_admission(self) -> AsyncAdmit:
        """Return how ``protect`` admits an ``async def`` call: reserve or check, awaited."""
        return self._admit

    async def _reserve(
        self, request: Request, hold_ttl: float, *, provider: str | None = None,
        perform: Perform | None = None,
    ) -> AsyncReservation:
        owner = owner_token()
        doing = perform or self._perform
        taken: list[Hold] = []

        async def tracked(step: Step) -> Any:
            answer = await doing(step)
            if type(step) is TryHold:  # held or not: its release by its owner token is safe
                taken.append(step.hold)
            return answer

        with EVENTS.span("payout_guard.reserve", request):
            try:
                reserved = await arun(
                    self.core.reserve(request, ttl=hold_ttl, owner=owner, provider=provider),
                    tracked,
                )
            except BaseException:
                # Cancelled (or failed) after a hold was taken, before its handle was made:
                # nobody could end it, so it is given back (by the guard's thread when in the
                # guard's store: the event loop may be closing).
                for hold in taken:
                    if doing == self._perform:
                        self.give_backs.add(hold, taken=True)
                    else:
                        keep_running(self._released(hold, doing))
                raise
            return await self._handle(reserved, doing, provider)

    async def _released(self, hold: Hold, perform: Perform) -> None:
        """Release *hold* (given back: nobody holds its handle); a failure is only logged."""
        try:
            await perform(Release(hold.payout_id, hold.owner))
        except Exception as exc:  # noqa: BLE001 - the hold then ends at its ttl
            _log.warning("payout_guard.hold_not_settled", payout_id=hold.payout_id,
                         wanted="release", error=type(exc).__name__, retrying=False)

    def _bound(self, connection: object) -> AsyncReservationStore:
        """Return the asyncio store's view working inside *connection*'s transaction."""
        bound = getattr(self._astore, "bound", None)
        if not callable(bound):
            raise ConfigurationError(
                f"reserve(connection=...) needs a store that can work inside the caller's "
                f"transaction on asyncio (PostgresReservations); this guard's is "
                f"{type(self.reservations).__name__}",
                path="connection",
            )
        store: AsyncReservationStore = bound(connection)
        return store

    def _performer(self, store: AsyncReservationStore) -> Perform:
        """Return how steps are awaited with *store* in place of the guard's store."""

        async def timed(step: StoreStep) -> Any:
            with EVENTS.store_timer(store, step):
                return await store_call(store, step)

        def perform(step: Step) -> Awaitable[Any]:
            if isinstance(step, FetchBalances):
                return self._perform(step)
            return timed(step)

        return perform

    def _perform(self, step: Step) -> Awaitable[Any]:
        """Return the awaitable that does *step*."""
        if isinstance(step, FetchBalances):
            return self.caches[step.provider].aget_fetched(step.currency, force=step.fresh,
                                                           submit=self.threads.submit)
        if isinstance(step, TryHold):
            return self._try_hold(step)
        return self._store(step)

    async def _store(self, step: StoreStep) -> Any:
        with EVENTS.store_timer(self.reservations if self._astore is None else self._astore, step):
            if self._astore is not None:
                return await store_call(self._astore, step)
            if self._inline:
                return store_call(self.reservations, step)
            return await asyncio.wrap_future(
                self.store_threads.submit(store_call, self.reservations, step)
            )

    async def _try_hold(self, step: TryHold) -> HoldOutcome:
        """Take a hold; if the awaiting task is cancelled meanwhile, give it back once taken.

        In the pool (a blocking store), the thread that took it gives it back: that holds
        even when the event loop itself is closing (``asyncio.run`` returning).
        """
        if self._astore is None and not self._inline:
            kept: HoldOutcome = await self.store_threads.run_keeping(
                functools.partial(self._give_back_now, step.hold), self._in_pool, step,
            )
            return kept
        taking = asyncio.ensure_future(self._store(step))
        try:
            outcome: HoldOutcome = await asyncio.shield(taking)
        except asyncio.CancelledError:
            taking.add_done_callback(lambda done: self._give_back(done, step.hold))
            raise
        return outcome

    def _in_pool(self, step: StoreStep) -> Any:
        """Do *step* with the blocking store (in a thread of the pool)."""
        with EVENTS.store_timer(self.reservations, step):
            return store_call(self.reservations, step)

    def _give_back_now(self, hold: Hold, outcome: HoldOutcome) -> None:
        """Give back *hold*, taken for a task that was cancelled meanwhile (in its thread)."""
        if _taken(outcome, hold):
            self.give_backs.add(hold, taken=True)

    def _give_back(self, done: asyncio.Future[Any], hold: Hold) -> None:
        """Give back *hold*, asked for by a task cancelled meanwhile, unless it is not held.

        Cancelled or failed itself, the ``try_hold`` may have written it all the same. The
        guard's thread gives it back: the event loop may be closing.
        """
        answered = not done.cancelled() and done.exception() is None
        if not answered or _taken(done.result(), hold):
            self.give_backs.add(hold, taken=answered)

    def runner(self) -> Callable[[Flow[Any]], Awaitable[Any]]:
        """Return how this guard runs a flow: each step awaited on the loop."""
        return self._run

    async def _run(self, flow: Flow[Any]) -> Any:
        return await arun(flow, self._perform)

    async def _handle(
        self, reserved: Reserved, perform: Perform | None = None, asked: str | None = None
    ) -> AsyncReservation:
        """Log *reserved*'s decision and return its handle, or raise its denial.

        *asked* is the provider the caller pinned, for the decision's record.
        """
        self.core.note_lapsed(reserved.lapsed)
        decision, hold = reserved.decision, reserved.hold
        if reserved.unsure is not None and (perform is None or perform == self._perform):
            # (In a caller's transaction, the hold stands or falls with the transaction.)
            self.give_backs.add(reserved.unsure)
        if hold is not None:
            try:
                self.core.emit(decision, "reserve", asked)
                return self._reservation(decision, hold, perform)
            except BaseException:
                # Nobody would hold the handle: give the hold back before the error goes on.
                step = Release(hold.payout_id, hold.owner)
                await asyncio.shield((perform or self._perform)(step))
                raise
        self.core.emit(decision, "reserve", asked)
        if decision.blocks:
            raise PayoutDenied(decision)
        return self._reservation(decision, None, perform)

    def _reservation(
        self, decision: Decision, hold: Hold | None, perform: Perform | None = None
    ) -> AsyncReservation:
        if perform is None or perform == self._perform:
            return AsyncReservation(decision, hold, self._handling)
        handling = self.handling(lambda flow: arun(flow, perform), in_callers_transaction=True)
        return AsyncReservation(decision, hold, handling)

    async def _admit(self, request: dict[str, Any]) -> Settles | None:
        if "payout_id" in request:
            return await self.reserve(**request)
        decision = await self.check(**request)
        if decision.blocks:
            raise PayoutDenied(decision)
        return None


class Reserving:
    """What ``AsyncPayoutGuard.reserve`` returns: await it, or use it as ``async with``."""

    def __init__(
        self, reserve: Callable[[Request, float], Awaitable[AsyncReservation]], request: Request,
        ttl: float,
    ) -> None:
        self._reserve = reserve
        self._args = (request, ttl)
        self._reservation: AsyncReservation | None = None

    def __await__(self) -> Generator[Any, None, AsyncReservation]:
        return self._reserve(*self._args).__await__()

    async def __aenter__(self) -> AsyncReservation:
        self._reservation = await self._reserve(*self._args)
        return self._reservation

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reservation is not None:
            await self._reservation.settle(exc)


def _taken(outcome: HoldOutcome, hold: Hold) -> bool:
    """Return whether the store took *hold* (held now, or found as this very hold again)."""
    if outcome.status == "duplicate":
        return outcome.hold is not None and outcome.hold.owner == hold.owner
    return outcome.status == "held"
