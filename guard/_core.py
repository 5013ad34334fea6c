"""The decision core: what ``check``, ``max_payable`` and ``reserve`` do, step by step, no I/O.

Each operation is a *flow*: a generator that yields the I/O it needs as a *step* (a small
named tuple: ``FetchBalances``, ``ReadHeld``, ``TryHold``, ...) and receives the answer, or
has the error thrown in where the I/O failed. It never performs a step itself. ``PayoutGuard``
(``guard/_sync.py``) runs flows with blocking calls and ``AsyncPayoutGuard``
(``guard/_async.py``) awaits them, so the two front doors share every decision line, the way
httpx's ``Auth.auth_flow`` serves its sync and async clients. ::

    check      FetchBalances -> ReadHeld -> rules -> [ListHolds: a denial names the holds]
               -> [GetHold: with a payout id, is it taken?]                  -> Decision
    max_payable  FetchBalances -> ReadHeld -> every rule's bounds           -> Decimal
    reserve    judge (as check) -> GetHold if denied | TryHold if allowed
               -> over the ceiling (others took the room): judge again, at most 5 times
                                                                            -> Reserved
    a reservation ending: Commit | Release | MarkUncertain (guard/_reservation.py)
    operators  ListAll (list_holds) | GetHold -> Release (release_hold) | Resolve (resolve)

A guard over several providers *routes*: each candidate provider (the currency's route, or
every provider) is judged in turn (each ``FetchBalances`` names its provider), the first one
whose rules allow the payout in routing order is chosen, and the decision lists every candidate
(``Decision.candidates``). ``reserve`` holds at the chosen one and, when concurrent payouts took
the room there, moves on to the next candidate that allowed it. A guard of one provider, or a
payout pinned to one, takes none of these steps: it is judged exactly as before.

A stale balance is judged once more on a fresh one (``FetchBalances(fresh=True)``). Provider
trouble, a store that cannot answer and a rule that raises all end as denials with their own
reasons: a flow never lets them out, so ``check`` never raises for them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, TypeVar

import structlog

from guard import _judge, _reasons
from guard._cache import SKEW_WARNING, Fetched
from guard._capture import record
from guard._clock import Clocks, counted_since
from guard._models import BalanceSnapshot, Candidate, Decision, HoldSummary, Mode, Reason, built
from guard._money import parse_currency
from guard._records import (
    VERSION,
    DecisionLog,
    DecisionRecord,
    Operation,
    rules_fingerprint,
    write_failed,
)
from guard._request import Request, pick_account
from guard.errors import GuardError, InvalidPayoutRequest, ProviderAuthError, StoreUnavailable
from guard.instrumentation._hooks import EVENTS
from guard.stores import Hold, HoldOutcome, HoldState, InMemoryReservations, balance_key
from rules import Clearance, Facts, Failures, RuleSet
from rules.money import ADD, SUBTRACT, money_context

__all__ = [
    "Commit",
    "Core",
    "FetchBalances",
    "Flow",
    "GetHold",
    "ListAll",
    "ListHolds",
    "MarkUncertain",
    "Policy",
    "ReadCommitted",
    "ReadHeld",
    "Release",
    "Reserved",
    "Resolve",
    "Step",
    "TryHold",
    "arun",
    "list_flow",
    "release_flow",
    "resolve_flow",
    "run",
    "store_call",
]

T = TypeVar("T")

Policy = Literal["priority", "most_headroom"]

_SHOWN_HOLDS = 20
_STATES: dict[object, HoldState] = {
    "pending": "pending", "committed": "committed", "uncertain": "uncertain"
}
_LIST_MOST = 10_000  # the most holds one list_holds returns (the stores' bound)
_log = structlog.get_logger("payout_guard")
# How often a payout is judged again after concurrent payouts took the room it was judged with.
_ATTEMPTS = 5
# The room given to a hold taken without a balance (fail_open): counted, never capped.
_NO_CEILING = Decimal(10) ** 12
# Seconds the wall clock must move ahead of the monotonic one between two looks to count as a
# step forward (NTP slews far less).
_STEP = 1.0
_ZERO = Decimal(0)


# -- the steps a flow asks for -------------------------------------------------------------


class FetchBalances(NamedTuple):
    """Read *provider*'s *currency* balances by account (cached); *fresh* skips the cache.

    Answer: a ``Fetched``.
    """

    provider: str
    currency: str
    fresh: bool


class ReadHeld(NamedTuple):
    """Read what the holds counting on *key* take (``ReservationStore.reserved``)."""

    key: str
    counted_since: float
    now: float


class ReadCommitted(NamedTuple):
    """Read what the holds on *key* committed after *since* take (``store.committed``)."""

    key: str
    since: float
    now: float


class ListHolds(NamedTuple):
    """List up to *limit* holds counting on *key* (``ReservationStore.holds``)."""

    key: str
    counted_since: float
    now: float
    limit: int


class ListAll(NamedTuple):
    """List the holds across every key, newest first (``ReservationStore.list_holds``)."""

    provider: str | None
    currency: str | None
    state: HoldState | None
    limit: int
    now: float


class GetHold(NamedTuple):
    """Read the hold recorded under *payout_id* (``ReservationStore.get``)."""

    payout_id: str


class TryHold(NamedTuple):
    """Add *hold* if it fits under *ceiling* (``ReservationStore.try_hold``)."""

    hold: Hold
    ceiling: Decimal
    counted_since: float
    now: float


class Commit(NamedTuple):
    """Mark *owner*'s hold as sent (``ReservationStore.commit``)."""

    payout_id: str
    owner: str
    now: float


class Release(NamedTuple):
    """Drop *owner*'s pending hold (``ReservationStore.release``)."""

    payout_id: str
    owner: str


class MarkUncertain(NamedTuple):
    """Mark *owner*'s pending hold uncertain until *until* (``ReservationStore.mark_uncertain``)."""

    payout_id: str
    owner: str
    now: float
    until: float


class Resolve(NamedTuple):
    """End an uncertain hold (``ReservationStore.resolve``)."""

    payout_id: str
    sent: bool
    now: float


StoreStep = (
    ReadHeld | ReadCommitted | ListHolds | ListAll | GetHold | TryHold | Commit | Release
    | MarkUncertain | Resolve
)
Step = FetchBalances | StoreStep
Flow = Generator[Step, Any, T]

# How each store step is asked of a store: the same call for a blocking store (an answer) and
# for one on asyncio (an awaitable answer).
_STORE_CALLS: dict[type[Any], Callable[[Any, Any], Any]] = {
    ReadHeld: lambda store, s: store.reserved(s.key, counted_since=s.counted_since, now=s.now),
    ReadCommitted: lambda store, s: store.committed(s.key, since=s.since, now=s.now),
    ListHolds: lambda store, s: store.holds(
        s.key, counted_since=s.counted_since, now=s.now, limit=s.limit
    ),
    ListAll: lambda store, s: store.list_holds(
        provider=s.provider, currency=s.currency, state=s.state, limit=s.limit, now=s.now
    ),
    GetHold: lambda store, s: store.get(s.payout_id),
    TryHold: lambda store, s: store.try_hold(
        s.hold, ceiling=s.ceiling, counted_since=s.counted_since, now=s.now
    ),
    Commit: lambda store, s: store.commit(s.payout_id, owner=s.owner, now=s.now),
    Release: lambda store, s: store.release(s.payout_id, owner=s.owner),
    MarkUncertain: lambda store, s: store.mark_uncertain(
        s.payout_id, owner=s.owner, now=s.now, until=s.until
    ),
    Resolve: lambda store, s: store.resolve(s.payout_id, sent=s.sent, now=s.now),
}


# The steps and records every check builds, built as the tuples they are: a NamedTuple's own
# constructor is a Python function, which costs a check a call each.
_new_tuple = tuple.__new__
_FETCH_STEPS: dict[tuple[str, str, bool], FetchBalances] = {}


def _fetch_step(provider: str, currency: str, fresh: bool) -> FetchBalances:
    """Return the (immutable, so shared) step that fetches *currency*: one less tuple a check."""
    step = _FETCH_STEPS.get((provider, currency, fresh))
    if step is None:
        step = _FETCH_STEPS[provider, currency, fresh] = FetchBalances(provider, currency, fresh)
    return step


def store_call(store: Any, step: StoreStep) -> Any:
    """Ask *store* for *step*: its answer, or an awaitable of it from an asyncio store."""
    return _STORE_CALLS[type(step)](store, step)


# -- the two drivers -----------------------------------------------------------------------


def run(flow: Flow[T], perform: Callable[[Step], Any]) -> T:
    """Run *flow* to its end, doing each step with *perform*; return what the flow returns.

    An ``Exception`` from *perform* is thrown into the flow, which decides what it means.
    """
    try:
        step = next(flow)
        send = flow.send  # after the first step: most checks have none (no bound method)
        while True:
            try:
                answer = perform(step)
            except Exception as exc:  # noqa: BLE001 - the flow decides what each failure means
                step = flow.throw(exc)
            else:
                step = send(answer)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return] # the flow's declared return type


async def arun(flow: Flow[T], perform: Callable[[Step], Awaitable[Any]]) -> T:
    """Run *flow* to its end, awaiting each step with *perform* (see :func:`run`)."""
    try:
        step = next(flow)
        while True:
            try:
                answer = await perform(step)
            except Exception as exc:  # noqa: BLE001 - the flow decides what each failure means
                step = flow.throw(exc)
            else:
                step = flow.send(answer)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return] # the flow's declared return type


# -- the decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserved:
    """What a reserve flow ends with.

    Attributes:
        decision: The decision to log and return (or raise, when it denies and enforcing).
        hold: The hold taken, or ``None`` when nothing was held (denied, or dry-run).
        lapsed: Uncertain holds the store reported as past their ``uncertain_ttl``.
        unsure: The hold asked for when the store did not answer the ``try_hold``: it may
            have been written all the same, so it is to be given back (``GiveBacks``).
    """

    decision: Decision
    hold: Hold | None
    lapsed: tuple[Hold, ...] = ()
    unsure: Hold | None = None


Judged = tuple[Decision, BalanceSnapshot | None]


class Core:
    """The guard's decisions, for its providers, written once for both front doors.

    Args:
        providers: The provider names, in priority order (decisions carry one, holds are
            keyed by it); a guard of one provider has one.
        rules: The rules (``SufficientFunds`` among them).
        mode: ``"enforce"`` or ``"dry_run"``.
        fail_open: Allow, with a warning, when no balance can be read.
        settle_lags: Provider -> seconds a sent payout keeps counting against a balance
            requested after it.
        clocks: Wall time for timestamps, monotonic time for ages.
        own_window: Seconds our own committed payouts are taken to explain frozen funds
            (``Facts.own_in_flight``); ``None`` when no rule looks at frozen funds (the store
            is then not asked).
        routing: ``"priority"`` (the providers' order) or ``"most_headroom"`` (the largest
            ``max_payable`` first): the order candidates are tried in.
        routes: Currency -> the providers that may pay it, in order (default: every one).
        decision_log: Where a record of every decision goes (``DecisionLog``), if anywhere.
    """

    def __init__(
        self,
        *,
        providers: tuple[str, ...],
        rules: RuleSet,
        mode: Mode,
        fail_open: bool,
        settle_lags: Mapping[str, float],
        clocks: Clocks,
        own_window: float | None = None,
        routing: Policy = "priority",
        routes: Mapping[str, tuple[str, ...]] | None = None,
        decision_log: DecisionLog | None = None,
    ) -> None:
        self.providers = providers
        self.provider = providers[0]
        self.single = len(providers) == 1
        self.own_window = own_window
        self.rules = rules
        self.mode: Mode = mode
        self.fail_open = fail_open
        self.settle_lags = dict(settle_lags)
        self.clocks = clocks
        # The wall clock minus the monotonic one as last seen, and how far back the settle
        # window reaches for a while after the wall clock stepped forward (see _widening).
        self.wall_offset = clocks.time() - clocks.monotonic()
        self.widened, self.widened_until = 0.0, float("-inf")  # money-ok: seconds
        self.routing: Policy = routing
        self.routes = dict(routes or {})
        self.log = structlog.get_logger("payout_guard")
        # The logger the proxy stands for and its level test, once structlog caches it
        # (cache_logger_on_first_use): decisions are then logged to it directly.
        self.logging_to: tuple[Any, Callable[[int], bool]] | None = None
        self.log_probed = False
        self.decision_log = decision_log
        # A sink that takes a decision's fields without a record built (the library's own).
        self.write_decision = getattr(decision_log, "write_decision", None)
        self.fingerprint = rules_fingerprint(rules)
        # What every decision event says decided it, beside the decision's own fields.
        self.stamp = {"rules_fingerprint": self.fingerprint, "version": VERSION}
        # Balance key -> the held total the store last reported: what a reserve judges with
        # first, so that taking the hold is its one round trip (see reserve).
        self.held_seen: dict[str, Decimal] = {}
        # Provider -> how to read its fresh cached balance in place (BalanceCache.fresh), set
        # by the guard: a cached check then takes no step for its balance. Without one, the
        # balance is always a step (FetchBalances).
        self.cached: dict[str, Callable[[str], Fetched | None]] = {}
        # A store read in place, set by the guard when its store does no I/O
        # (``InMemoryReservations``): a check then takes no step for the held totals either.
        # Without one, or while a hook times store calls, each read is a step.
        self.inline: InMemoryReservations | None = None

    def candidates(self, currency: str, provider: str | None = None) -> tuple[str, ...]:
        """Return the providers a *currency* payout is judged at, in priority order.

        *provider* pins one; otherwise the currency's route, or every provider.
        """
        if provider is not None:
            return (provider,)
        return self.routes.get(currency, self.providers)

    def check(
        self, request: Request, provider: str | None = None
    ) -> Flow[tuple[Decision, BalanceSnapshot | None]]:
        """Decide *request*; with a payout id, a taken id is a ``duplicate_payout``.

        Routed over the candidates unless there is one (or *provider* pins one). Ends with
        the decision and the balance it was judged on (as :meth:`judge`).
        """
        if provider is None and self.single:
            if request.payout_id is None:
                return self.judge(request)  # the flow itself: no generator around it per check
            return self._check_id(request, request.payout_id, self.provider)
        names = self.candidates(request.currency, provider)
        if len(names) == 1:
            if request.payout_id is None:
                return self.judge(request, names[0])
            return self._check_id(request, request.payout_id, names[0])
        return self._check_routed(request, names)

    def _check_id(
        self, request: Request, payout_id: str, provider: str
    ) -> Flow[tuple[Decision, BalanceSnapshot | None]]:
        decision, snapshot = yield from self.judge(request, provider)
        decision = yield from self._unless_taken(payout_id, decision)
        return decision, snapshot

    def _check_routed(
        self, request: Request, names: tuple[str, ...]
    ) -> Flow[tuple[Decision, BalanceSnapshot | None]]:
        judged = yield from self._judge_all(request, names)
        order = _allowing(judged)
        chosen = order[0] if order else None
        decision = _routed(judged, chosen)
        if request.payout_id is not None:
            decision = yield from self._unless_taken(request.payout_id, decision)
        return decision, None if chosen is None else judged[chosen][1]

    def max_payable(self, request: Request, provider: str | None = None) -> Flow[Decimal]:
        """Return the largest amount the rules allow now (*request* is a probe, fee 0).

        Over several candidates: the largest any one of them allows.
        """
        names = (
            (self.provider,) if provider is None and self.single
            else self.candidates(request.currency, provider)
        )
        if len(names) == 1:
            # Its bounds are the answer, not this probe amount's clearance (which a minimum
            # payout would refuse anyway): have every rule explain itself.
            decision, _ = yield from self.judge(request, names[0], clear=False)
            return decision.max_payable
        by_provider = yield from self.max_payables(request, names)
        return max(by_provider.values())

    def max_payables(self, request: Request, names: tuple[str, ...]) -> Flow[dict[str, Decimal]]:
        """Return what each provider of *names* could pay now (*request* is a probe)."""
        found: dict[str, Decimal] = {}
        down: Reason | None = None
        for name in names:
            if down is not None:  # one store for every provider: not waited for again
                found[name] = self._store_denial(request, name, down).max_payable
                continue
            decision, _ = yield from self.judge(request, name, clear=False)  # as max_payable
            found[name] = decision.max_payable
            down = _store_trouble(decision)
        return found

    def reserve(
        self, request: Request, *, ttl: float, owner: str, provider: str | None = None
    ) -> Flow[Reserved]:
        """Judge *request* and hold its funds atomically, for the reservation owning *owner*.

        By what the store holds for the payout id: nothing, a released or an expired pending
        hold: judged and held. A live pending, a committed or an uncertain hold (at any
        provider): refused as ``duplicate_payout``. Routed, the hold is tried at each
        candidate that allowed the payout, in routing order. When concurrent payouts took
        the room between the judging and the hold everywhere, the payout is judged again
        with their holds counted.
        """
        payout_id = request.payout_id or ""
        names = (
            (self.provider,) if provider is None and self.single
            else self.candidates(request.currency, provider)
        )
        routed = len(names) > 1
        decision: Decision | None = None
        lapsed: tuple[Hold, ...] = ()
        # Judged first with the held totals the store last reported, not read again: the
        # hold's ceiling is computed from the total judged with, and the store admits the
        # hold only within it, so a total that has grown since only makes the store refuse
        # (then the payout is judged again on the total it reports). A denial, or a total
        # that differed, is judged again on the store's own figures.
        known: Mapping[str, Decimal] | None = self.held_seen
        for _ in range(_ATTEMPTS):
            used: dict[str, Fetched] = {}
            # Every balance judged, by balance key: a hold is judged again on its own balance.
            judged_on: dict[str, Fetched] = {}
            judged = yield from self._judge_all(request, names, known=known, used=used,
                                                balances=judged_on)
            order = _allowing(judged)
            if used and not order:  # denied on remembered totals: read them
                judged = yield from self._judge_all(request, names, balances=judged_on)
                order = _allowing(judged)
            decision = _routed(judged, order[0] if order else None) if routed else judged[0][0]
            if not order or self.mode == "dry_run":
                decision = yield from self._unless_taken(payout_id, decision)
                return Reserved(decision, None, lapsed)
            lost: set[int] = set()
            for index in order:
                outcome, wanted = yield from self._try_hold(request, judged[index], ttl, owner)
                if isinstance(outcome, Reason):  # the store did not answer: it may have held
                    return Reserved(_denied(decision, outcome), None, lapsed,
                                    self._unsure(wanted))
                lapsed += outcome.lapsed
                self.held_seen[wanted.key] = (
                    ADD(outcome.counted, wanted.held) if outcome.status == "held"
                    else outcome.counted
                )
                balance = judged_on.get(wanted.key)
                if (outcome.status == "held" and balance is not None
                        and outcome.counted != judged[index][0].reserved):
                    # The store held other payouts than the payout was judged with (a total
                    # remembered, or holds that landed since it was read): judged again on
                    # the same balance with what the store held, so that the decision says
                    # it. The ceiling keeps a payout allowed only while every rule's cap
                    # falls one for one as holds grow: not so for an any_of whose largest
                    # amount another alternative allows, or a rule of one's own.
                    judged[index] = yield from self.judge(
                        request, judged[index][0].provider,
                        known={wanted.key: outcome.counted}, fetched=balance,
                    )
                    if not judged[index][0].allowed:
                        return (yield from self._given_back(judged[index][0], wanted, lapsed))
                decision = _routed(judged, index, lost) if routed else judged[index][0]
                if outcome.status == "held":
                    return Reserved(decision, wanted, lapsed)
                if outcome.status == "duplicate" and outcome.hold is not None:
                    return Reserved(_duplicate(decision, outcome.hold), None, lapsed)
                lost.add(index)  # over_ceiling: concurrent payouts took the room there
            if routed:  # taken everywhere it was allowed, as the candidates now say
                decision = _routed(judged, None, lost)
            # Judge again, with their holds counted (as the store just reported them).
            known = self.held_seen
        assert decision is not None  # noqa: S101 - the loop runs at least once
        reason = _reasons.concurrent_claims_reason(request.currency, _ATTEMPTS)
        return Reserved(_denied(decision, reason), None, lapsed)

    def _unsure(self, wanted: Hold) -> Hold | None:
        """Return *wanted*, which the store may have written without answering, to give back.

        ``None`` for the memory store: it does no I/O, so what it did not answer it did not do.
        """
        return None if self.inline is not None else wanted

    def _given_back(
        self, decision: Decision, wanted: Hold, lapsed: tuple[Hold, ...]
    ) -> Flow[Reserved]:
        """Release *wanted*, held for a payout judged again and denied (*decision*).

        A store that does not answer the release leaves the hold to be given back later
        (``Reserved.unsure``), as for a ``try_hold`` it did not answer.
        """
        try:
            yield Release(wanted.payout_id, wanted.owner)
        except StoreUnavailable:
            return Reserved(decision, None, lapsed, self._unsure(wanted))
        return Reserved(decision, None, lapsed)

    def _try_hold(
        self, request: Request, judged: Judged, ttl: float, owner: str
    ) -> Flow[tuple[HoldOutcome | Reason, Hold]]:
        """Try the hold of *request* at the provider of *judged*, where it was allowed.

        Ends with the store's ``HoldOutcome`` (or the ``Reason`` to deny with when the store
        did not answer) and the hold asked for.
        """
        decision, snapshot = judged
        provider = decision.provider
        # Hold on the account that was judged, however the caller named it.
        account = request.account if snapshot is None else snapshot.account
        now = self.clocks.time()
        if snapshot is None:  # allowed without a balance: fail_open was chosen
            ceiling, since = _NO_CEILING, now - self.settle_lags[provider]
        else:
            # Caps fall at most one for one as holds grow, so judged with `reserved` held,
            # the payout stays allowed while the counting holds stay within this (reserve
            # judges a hold again where they may not: see there). In the money context: the
            # caller's, rounding up, would admit holds beyond the room judged.
            ceiling = ADD(ADD(decision.reserved, decision.max_payable), request.fee)
            since = counted_since(_requested(snapshot), now, self.settle_lags[provider])
        mono = self.clocks.monotonic()
        since -= self._widening(now - mono, mono)
        wanted = Hold(
            payout_id=request.payout_id or "",
            key=balance_key(provider, account, request.currency),
            currency=request.currency, amount=request.amount, fee=request.fee,
            state="pending", created_at=now, expires_at=now + ttl, owner=owner,
        )
        try:
            outcome: HoldOutcome = yield TryHold(wanted, ceiling, since, now)
        except StoreUnavailable as exc:
            return _reasons.store_reason(request.currency, exc), wanted
        mine = outcome.hold
        if (outcome.status == "duplicate" and mine is not None and mine.state == "pending"
                and mine.owner == owner):
            # This very hold: the store took it, its answer was lost and the request was sent
            # again (a client retrying on a dropped connection). It is held, for this
            # reservation, and was counted before it was added.
            outcome = HoldOutcome(status="held", hold=mine,
                                  counted=SUBTRACT(outcome.counted, mine.held),
                                  lapsed=outcome.lapsed)
        if outcome.replaced is not None:
            # Its reservation never ended it (a crash, a lost worker): say so once, here.
            old = outcome.replaced
            self.log.warning(
                "payout_guard.hold", change="expired", payout_id=old.payout_id,
                amount=str(old.held), currency=old.currency, expires_at=old.expires_at,
                noticed_by="reserve",
            )
        return outcome, wanted

    def _judge_all(
        self,
        request: Request,
        names: tuple[str, ...],
        *,
        known: Mapping[str, Decimal] | None = None,
        used: dict[str, Fetched] | None = None,
        balances: dict[str, Fetched] | None = None,
    ) -> Flow[list[Judged]]:
        """Judge *request* at each of *names*; return the judgements in routing order.

        A provider that reports no balance in the currency is no candidate (unless none
        does). By ``most_headroom``, the largest ``max_payable`` comes first (ties keep
        the priority order). *known*, *used* and *balances* are :meth:`judge`'s.
        """
        judged: list[Judged] = []
        down: Reason | None = None
        for name in names:
            if down is not None:  # one store for every provider: not waited for again
                judged.append((self._store_denial(request, name, down), None))
                continue
            judgement = yield from self.judge(request, name, known=known, used=used,
                                              balances=balances)
            judged.append(judgement)
            down = _store_trouble(judgement[0])
        if len(judged) == 1:
            return judged
        held = [j for j in judged if "currency_not_held" not in j[0].codes]
        judged = held or judged
        if self.routing == "most_headroom":
            judged.sort(key=lambda j: j[0].max_payable, reverse=True)
        return judged

    def resolve(self, payout_id: str, *, sent: bool) -> Flow[Hold | None]:
        """End an uncertain hold: committed now when *sent*, released otherwise.

        Returns the committed hold (without its owner token), or ``None`` once released.

        Raises:
            GuardError: no hold is recorded for *payout_id*, or it is not uncertain.
            StoreUnavailable: the store did not answer.
        """
        return resolve_flow(payout_id, sent=sent, now=self.clocks.time())

    def list_holds(
        self, *, provider: str | None, currency: object, state: object, limit: object
    ) -> Flow[list[Hold]]:
        """Return the holds across every key, newest first (see :func:`list_flow`)."""
        return list_flow(provider=provider, currency=currency, state=state, limit=limit,
                         now=self.clocks.time())

    def release_hold(self, payout_id: str) -> Flow[Hold]:
        """Drop the pending hold of *payout_id* as an operator (see :func:`release_flow`)."""
        return release_flow(payout_id)

    def emit(
        self, decision: Decision, operation: Operation = "check", asked: str | None = None
    ) -> None:
        """Log *decision* (``payout_guard.decision``), hand it to any capture and the sink.

        *operation* and *asked* (the provider the caller pinned) go into its record. The
        decision log's ``write`` never fails a decision: what it raises is counted as dropped.
        """
        record(decision)
        logging_to = self.logging_to
        if logging_to is not None:
            _judge.log_resolved(logging_to[0], logging_to[1], decision, self.stamp)
        else:
            _judge.log_decision(self.log, decision, self.stamp)
            if not self.log_probed:  # once: does structlog keep the logger it assembled?
                self.log_probed = True
                self.logging_to = _judge.cached_logger(self.log)
        sink = self.decision_log
        if sink is not None:
            try:
                if self.write_decision is not None:
                    self.write_decision(decision, operation, asked, self.fingerprint, VERSION)
                else:
                    sink.write(built(DecisionRecord, {
                        "decision": decision, "operation": operation, "provider_asked": asked,
                        "rules_fingerprint": self.fingerprint, "version": VERSION,
                    }))
            except Exception as exc:  # noqa: BLE001 - a sink never fails a decision
                write_failed(sink, exc)
        EVENTS.decision(decision)  # metrics and the span's outcome (guard.instrumentation)

    def note_lapsed(self, lapsed: tuple[Hold, ...]) -> None:
        """Log each uncertain hold whose ``uncertain_ttl`` ended (warning level)."""
        for hold in lapsed:
            self.log.warning(
                "payout_guard.hold", change="uncertain_expired", payout_id=hold.payout_id,
                amount=str(hold.held), currency=hold.currency,
            )

    def judge(  # noqa: PLR0912, PLR0915 - one generator on purpose: every check runs it
        self,
        request: Request,
        provider: str | None = None,
        *,
        clear: bool = True,
        known: Mapping[str, Decimal] | None = None,
        used: dict[str, Fetched] | None = None,
        fetched: Fetched | None = None,
        balances: dict[str, Fetched] | None = None,
    ) -> Flow[tuple[Decision, BalanceSnapshot | None]]:
        """Judge *request*; return the decision and the balance it was judged on.

        With *clear* (the default), a payout every rule allows is decided without verdicts
        (see ``RuleSet.clearance``); otherwise every rule explains itself. A stale balance is
        judged once more, on a fresh one. One generator, no flow inside it: every step of
        every check passes through here. *provider* (default: the guard's first) is the one
        judged at. With *known* (balance key -> held total), a key found there is judged
        with that total instead of reading the store, and put in *used* with the balance it
        was judged on; *fetched* is a balance to judge instead of fetching one. With
        *balances*, the balance judged is put there under its key whatever the holds.
        """
        provider = provider or self.provider
        settle_lag = self.settle_lags[provider]
        inline = self.inline
        fresh = False
        while True:
            asked_at = self.clocks.monotonic()
            if fetched is None and not fresh:
                cached = self.cached.get(provider)
                if cached is not None:
                    fetched = cached(request.currency)
            try:
                if fetched is None:
                    fetched = yield (
                        _FETCH_STEPS.get((provider, request.currency, fresh))
                        or _fetch_step(provider, request.currency, fresh)
                    )
            except StoreUnavailable as exc:  # the fleet store sharing the balances
                self.log.warning("payout_guard.store_unavailable", store=exc.store,
                                 currency=request.currency)
                return _judge.denial(
                    request, _reasons.store_reason(request.currency, exc), mode=self.mode,
                    provider=provider, now=self.clocks.time(),
                ), None
            except Exception as exc:  # noqa: BLE001 - fail closed on anything a fetcher raises
                return self._unavailable(request, provider, exc), None
            now = self.clocks.time()
            picked = fetched.picked.get(request.account)
            if picked is None:  # the first check of this balance for this account
                snapshot = pick_account(fetched.by_account, request.account, provider,
                                        request.currency)
                if snapshot is None:
                    reason = _reasons.not_held_reason(provider, request.currency,
                                                      request.account)
                    return _judge.denial(
                        request, reason, mode=self.mode, provider=provider, now=now
                    ), None
                picked = fetched.picked[request.account] = _picked(
                    snapshot, provider, request.currency, fetched.received_at
                )
            snapshot, key, on_arrival, available, frozen, total = picked
            # A payout committed settle_lag before the request can show in this balance
            # (and earlier still for a while after the wall clock stepped forward).
            since = counted_since(fetched.requested_at, now, settle_lag)
            mono = self.clocks.monotonic()
            offset = now - mono
            if offset > self.wall_offset + _STEP or mono < self.widened_until:
                since -= self._widening(offset, mono)
            self.wall_offset = offset
            # Its age on the monotonic clock: how old it was on arrival, plus the time since.
            # (A conditional, not max(): this runs in every check.)
            since_arrival = mono - fetched.received_mono
            age = on_arrival + (
                since_arrival if since_arrival > 0.0 else 0.0  # money-ok: seconds
            )
            held = None if known is None else known.get(key)
            if held is not None:
                reserved = held
                if used is not None:
                    used[key] = fetched
            else:
                try:
                    if inline is not None and not EVENTS.stores:
                        reserved = inline.reserved(key, counted_since=since, now=now)
                    else:
                        reserved = yield _new_tuple(ReadHeld, (key, since, now))
                except StoreUnavailable as exc:
                    self.log.warning("payout_guard.store_unavailable", store=exc.store,
                                     currency=request.currency)
                    return _judge.denial(
                        request, _reasons.store_reason(request.currency, exc),
                        mode=self.mode, provider=provider, now=now, balance=snapshot,
                    ), None
                self.held_seen[key] = reserved
            if balances is not None:
                balances[key] = fetched
            own = _ZERO
            if self.own_window is not None and frozen:
                try:
                    if inline is not None and not EVENTS.stores:
                        own = inline.committed(key, since=now - self.own_window, now=now)
                    else:
                        own = yield _new_tuple(ReadCommitted, (key, now - self.own_window, now))
                except StoreUnavailable as exc:
                    return _judge.denial(
                        request, _reasons.store_reason(request.currency, exc), mode=self.mode,
                        provider=provider, now=now, balance=snapshot,
                    ), None
            facts = Facts.trusted(
                request.amount, request.currency, available, request.fee, frozen, total,
                reserved, age, provider, request.account, own,
            )
            judged = _new_tuple(_judge.JudgedOn, (
                age, "fetched" if fetched.received_mono >= asked_at else "cached", own
            ))
            try:
                verdict = self._ruling(facts, clear=clear)
            except Exception as exc:
                self.log.exception("payout_guard.rule_error", error=type(exc).__name__,
                                   currency=request.currency)
                return _judge.denial(
                    request, _reasons.rule_error_reason(exc), mode=self.mode, provider=provider,
                    now=now, balance=snapshot, reserved=reserved, judged=judged,
                ), snapshot
            if isinstance(verdict, Clearance):
                allowed = _judge.from_clearance(
                    request, verdict, mode=self.mode, provider=provider, balance=snapshot,
                    reserved=reserved, now=now, judged=judged,
                )
                if fetched.skew > SKEW_WARNING:
                    allowed = _skewed(allowed, provider, fetched.skew)
                return allowed, snapshot
            holds: tuple[HoldSummary, ...] = ()
            more_holds = False
            if reserved and any(v.denies for v in verdict.verdicts):
                # Only a denial explains itself with the holds; listing them costs a store read,
                # so ask for one more than is shown, just to know whether there are more.
                try:
                    listed: list[Hold] = yield ListHolds(key, since, now, _SHOWN_HOLDS + 1)
                except StoreUnavailable:
                    listed = []  # the denial stands; only its list of holds is missing
                more_holds = len(listed) > _SHOWN_HOLDS
                holds = tuple(
                    HoldSummary(payout_id=h.payout_id, amount=h.held, state=h.state)
                    for h in listed[:_SHOWN_HOLDS]
                )
            decision = _skewed(_judge.from_failures(
                request, verdict, mode=self.mode, provider=provider, balance=snapshot,
                reserved=reserved, now=now, judged=judged, holds=holds, more_holds=more_holds,
            ), provider, fetched.skew)
            if fresh or decision.allowed or "stale_balance" not in decision.codes:
                return decision, snapshot
            fresh = True  # the cache may hold an old answer: judge a stale balance, fresh
            fetched = None

    def _ruling(self, facts: Facts, *, clear: bool) -> Clearance | Failures:
        """Return the clearance of *facts*, or what the rules that deny or warn say.

        There is a clearance when *clear* asks for one and every rule allows *facts* without
        a warning. Otherwise only the members that deny or warn explain themselves
        (``RuleSet.failures``), or every rule does when the set cannot tell which (a rule of
        your own). Raises whatever a rule raises.
        """
        clearance = self.rules.clearance(facts) if clear else None
        if clearance is not None:
            return clearance  # nothing to explain: no verdicts built
        # Built-ins compute in the money context themselves (a caller's decimal context
        # changes none of their failures: tested), so only a set that holds a rule of your
        # own (failures is None) is evaluated inside a money block.
        failures = self.rules.failures(facts)
        if failures is not None:
            return failures
        with money_context():  # rules of your own compute in the money context too
            return _judge.failures_of(self.rules.evaluate(facts))

    def _unavailable(self, request: Request, provider: str, exc: Exception) -> Decision:
        """Return the denial (or, with ``fail_open``, the warning) for a failed fetch."""
        if isinstance(exc, ProviderAuthError) and exc.credentials_rejected:
            # Not an outage: nothing gets better by waiting, so someone must be told.
            self.log.error(
                "payout_guard.credentials_rejected", provider=provider,
                currency=request.currency, status=exc.status, code=exc.code,
            )
        else:
            self.log.warning(
                "payout_guard.balance_unavailable", provider=provider,
                currency=request.currency, error=type(exc).__name__,
            )
        reason = _reasons.unavailable_reason(provider, request.currency, exc,
                                           allowed=self.fail_open)
        return _judge.denial(
            request, reason, mode=self.mode, provider=provider, now=self.clocks.time(),
            allowed=self.fail_open,
        )

    def _widening(self, offset: float, mono: float) -> float:
        """Return how much earlier than ``settle_lag`` commits count now (0.0 mostly).

        *offset* is the wall clock minus the monotonic one, *mono* the monotonic clock now.
        A wall clock that stepped forward since the last look (*offset* grew) makes payouts
        committed before the step look older than they are: for the longest ``settle_lag``
        after the step is seen, the window reaches back by the step as well, so they keep
        counting until a balance requested after them can show them. (A step back needs
        nothing: ``counted_since`` takes the earlier time.)
        """
        if offset > self.wall_offset + _STEP:
            kept = self.widened if mono < self.widened_until else 0.0
            self.widened = kept + (offset - self.wall_offset)
            self.widened_until = mono + max(self.settle_lags.values(), default=0.0)
            self.wall_offset = offset
        return self.widened if mono < self.widened_until else 0.0

    def _store_denial(self, request: Request, provider: str, reason: Reason) -> Decision:
        """Return the denial at *provider* for the store that did not answer (*reason*)."""
        return _judge.denial(request, reason, mode=self.mode, provider=provider,
                             now=self.clocks.time())

    def _unless_taken(self, payout_id: str, decision: Decision) -> Flow[Decision]:
        """Return *decision*, or a ``duplicate_payout`` denial when *payout_id* is taken.

        A decision the store's silence denied is returned as it is: asking the store again
        would wait out its timeout once more.
        """
        if _store_trouble(decision) is not None:
            return decision
        try:
            existing: Hold | None = yield GetHold(payout_id)
        except StoreUnavailable as exc:
            return _denied(decision, _reasons.store_reason(decision.currency, exc))
        if existing is None or existing.expired(self.clocks.time()):
            return decision
        return _duplicate(decision, existing)


def _store_trouble(decision: Decision) -> Reason | None:
    """Return the reason *decision* gives for a store that did not answer, if it gives one."""
    for reason in decision.reasons:
        if reason.code == "balance_unavailable" and "store" in reason.details:
            return reason
    return None


def _allowing(judged: list[Judged]) -> list[int]:
    """Return the indexes of the judgements that allow, in the order they are tried.

    One judged on a balance comes before one allowed without (``fail_open``).
    """
    allowed = [i for i, (decision, _) in enumerate(judged) if decision.allowed]
    return sorted(allowed, key=lambda i: judged[i][1] is None)


def _routed(judged: list[Judged], chosen: int | None, lost: set[int] | None = None) -> Decision:
    """Return the decision of a routed payout: *chosen*'s, or a denial by every candidate.

    It lists every candidate (in *judged*'s order) and the best ``max_payable`` of them. A
    denial is the first candidate's decision with the reasons of every candidate (each
    once). Candidates in *lost* were allowed, but concurrent payouts took the room there.
    """
    lost = lost or set()
    candidates = tuple(
        built(Candidate, {
            "provider": decision.provider,
            "allowed": decision.allowed and i not in lost,
            "max_payable": decision.max_payable,
            "codes": ("insufficient_funds",) if i in lost else decision.codes,
            "lost": i in lost,
            "balance": decision.balance,
            "reserved": None if decision.balance_age is None else decision.reserved,
            "balance_age": decision.balance_age,
            "own_in_flight": decision.own_in_flight,
        })
        for i, (decision, _) in enumerate(judged)
    )
    best = max(decision.max_payable for decision, _ in judged)
    update: dict[str, Any] = {"candidates": candidates, "max_payable": best}
    if chosen is not None:
        return judged[chosen][0].model_copy(update=update)
    seen: dict[tuple[str, str], Reason] = {}
    for decision, _ in judged:
        for reason in decision.reasons:
            seen.setdefault((reason.code, reason.message), reason)
    update["reasons"] = tuple(seen.values())
    return judged[0][0].model_copy(update=update)


class Picked(NamedTuple):
    """What every check of one account's cached snapshot needs, worked out once.

    Attributes:
        snapshot: The snapshot judged.
        key: The balance key its holds live under (the account actually judged, however
            the caller named it).
        on_arrival: Seconds old it was when it arrived (its ``as_of`` is never later).
        available: Its available amount.
        frozen: Its frozen amount, if reported.
        total: Its total, if reported.
    """

    snapshot: BalanceSnapshot
    key: str
    on_arrival: float
    available: Decimal
    frozen: Decimal | None
    total: Decimal | None


def _picked(snapshot: BalanceSnapshot, provider: str, currency: str, received_at: float) -> Picked:
    on_arrival = received_at - snapshot.as_of.timestamp()
    return Picked(
        snapshot, balance_key(provider, snapshot.account, currency),
        on_arrival if on_arrival > 0.0 else 0.0,  # money-ok: seconds
        snapshot.available, snapshot.frozen, snapshot.total,
    )


def _requested(snapshot: BalanceSnapshot) -> float:
    """Return when *snapshot*'s request was sent (its ``as_of`` when it was built by hand)."""
    at = snapshot.requested_at if snapshot.requested_at is not None else snapshot.as_of
    return at.timestamp()


def _skewed(decision: Decision, provider: str, skew: float) -> Decision:
    """Return *decision* with a ``clock_skew`` warning when the provider's clock ran ahead."""
    if skew <= SKEW_WARNING:
        return decision
    warning = _reasons.skew_reason(provider, skew)
    return decision.model_copy(update={"warnings": (*decision.warnings, warning)})


def _denied(decision: Decision, reason: Reason) -> Decision:
    """Return *decision* denied for *reason* alone."""
    return decision.model_copy(update={"allowed": False, "reasons": (reason,), "warnings": ()})


def _duplicate(decision: Decision, held: Hold) -> Decision:
    """Return *decision* denied because its payout id already has *held*."""
    reason = _reasons.duplicate_reason(decision.payout_id or held.payout_id, held)
    return decision.model_copy(update={"allowed": False, "reasons": (reason,)})


# -- what an operator does to holds (PayoutGuard and the ``payout-guard holds`` command) -----


def list_flow(
    *, provider: str | None, currency: object, state: object, limit: object, now: float
) -> Flow[list[Hold]]:
    """Return the holds across every key, newest first, without owner tokens.

    *provider* was checked by the caller (one of its providers, or ``None``).

    Raises:
        InvalidPayoutRequest: *currency* is not an ISO 4217 code, *state* is not ``pending``,
            ``committed`` or ``uncertain``, or *limit* is not an ``int`` from 1 to 10,000.
        StoreUnavailable: the store did not answer.
    """
    code = None if currency is None else parse_currency(currency)
    if state is not None and state not in _STATES:
        raise InvalidPayoutRequest(
            f"state must be 'pending', 'committed' or 'uncertain' (or None for every state), "
            f"got {str(state)[:40]!r}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= _LIST_MOST:
        raise InvalidPayoutRequest(
            f"limit must be an int from 1 to {_LIST_MOST}, got {str(limit)[:40]!r}"
        )
    found: list[Hold] = yield ListAll(
        provider, code, None if state is None else _STATES[state], limit, now
    )
    return found


def release_flow(payout_id: str) -> Flow[Hold]:
    """Drop the pending hold of *payout_id* as an operator (no owner token needed).

    The hold is read, then released with the token it records, in the store's atomic
    ``release``: if its reservation committed or marked it meanwhile, nothing is dropped.
    Logged as ``payout_guard.hold`` with ``change="released"`` and ``by="operator"``.
    Returns the hold released (without its owner token).

    Raises:
        GuardError: no hold is recorded for *payout_id*; it is committed (the money left:
            nothing to release) or uncertain (``resolve`` it); or it changed meanwhile.
        StoreUnavailable: the store did not answer.
    """
    found: Hold | None = yield GetHold(payout_id)
    if found is None:
        raise GuardError(f"no hold is recorded for payout {payout_id[:40]!r}; nothing to release")
    if found.state == "committed":
        raise GuardError(
            f"payout {payout_id[:40]!r} is committed: it was sent, so its hold is not released "
            f"(it stops counting once a balance shows it)"
        )
    if found.state == "uncertain":
        raise GuardError(
            f"payout {payout_id[:40]!r} is uncertain: it may have been sent; resolve it (sent "
            f"or not sent) once the provider says, instead of releasing it"
        )
    if not found.owner:
        raise GuardError(
            f"the hold of payout {payout_id[:40]!r} was taken by an older version, without an "
            f"owner token: it cannot be released, and stops counting at its ttl"
        )
    released = yield Release(payout_id, found.owner)
    if not released:
        raise GuardError(
            f"the hold of payout {payout_id[:40]!r} changed while it was being released "
            f"(committed, marked uncertain or released by its reservation); look again"
        )
    _log.warning(
        "payout_guard.hold", change="released", by="operator", payout_id=payout_id,
        amount=str(found.held), currency=found.currency,
    )
    return found.public()


def resolve_flow(payout_id: str, *, sent: bool, now: float) -> Flow[Hold | None]:
    """End an uncertain hold at *now*: committed when *sent*, released otherwise.

    Returns the committed hold (without its owner token), or ``None`` once released.

    Raises:
        GuardError: no hold is recorded for *payout_id*, or it is not uncertain.
        StoreUnavailable: the store did not answer.
    """
    found = yield Resolve(payout_id, sent, now)
    if found is None:
        raise GuardError(f"no hold is recorded for payout {payout_id[:40]!r}; nothing to resolve")
    if found.state != "uncertain":
        raise GuardError(
            f"payout {payout_id[:40]!r} is {found.state}, not uncertain; only a hold whose "
            f"outcome is unknown is resolved"
        )
    _log.warning(
        "payout_guard.hold", change="resolved", payout_id=payout_id, sent=sent,
        amount=str(found.held), currency=found.currency,
    )
    if not sent:
        return None
    now_held = yield GetHold(payout_id)
    return None if now_held is None else now_held.public()
