"""The balance cache: concurrent misses share one provider request, in a process and in a fleet.

A payout run of thousands must cost a handful of balance calls (LuxCore allows 100 a minute
per key). Three layers stand between a check and the provider:

1. **This process's entries.** A balance lives ``ttl`` seconds on the guard's monotonic clock
   (a wall clock stepping neither keeps a balance forever nor drops it early). While one
   thread fetches a currency, the others wait for that same fetch (single flight). The fetch
   runs in a thread of its own, and every check (the one that started it too) waits for it
   ``wait_timeout`` at most, so nothing blocks forever: a fetch still running then is
   abandoned (the next check starts another; while a few abandoned ones still run, checks are
   denied at once). Errors are shared with the waiters, never cached.
2. **The fleet's entries** (with a ``FleetStore``: SQLite, Redis, PostgreSQL). A miss reads
   the balance another process wrote; when it is missing or old, one process takes a short
   lease and fetches, the others wait for what it writes (bounded by the fetch deadline) and
   read it.
3. **The request budget.** No request is sent beyond ``requests_per_minute`` for the provider
   key, counted in the fleet store when there is one (else in this process): a fetch takes one
   request, and each of its retries one more (a retry the budget refuses is not made; the
   fetch fails with the error before it). With the budget
   spent, the newest balance still within ``stale_limit`` seconds is used; without one, the
   fetch fails with ``BudgetSpent`` (the guard denies ``balance_unavailable``, retryable, with
   ``retry_after``).

Each fetch records ``requested_at``, the local time its request was sent: the provider computed
that balance after that instant, which is what settle accounting needs. A snapshot stamped later
than its arrival (a provider clock ahead of ours) is kept at the arrival time, and the skew is
remembered for the decision's ``clock_skew`` warning.

After a commit, ``refresh_soon`` asks for a balance requested after it (so the committed hold
stops counting sooner), once the current one is ``within`` seconds old. A balance another
process fetched after the commit serves as well: a fleet refreshes once, not once per process.

The outcome of the last fetch (and of the last failed one) is kept for ``guard.health()``; a
fetch given up on counts as failed. ``probe`` asks the provider for ``health(probe=True)``
through the same single flight, budget and wait as a fetch: concurrent probes share one
request, and none is sent while the budget is spent or a request succeeded within ``ttl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import json
import math
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import structlog

from guard._clock import Clock, clocks_of
from guard._models import BalanceSnapshot
from guard.errors import BudgetSpent, ProviderUnavailable
from guard.fetchers._protocol import BalanceFetcher
from guard.fetchers._retry import budgeted
from guard.instrumentation._hooks import EVENTS
from guard.stores._protocol import FleetStore, Shared, gcra
from rules.money import money_context

__all__ = [
    "SKEW_WARNING",
    "BalanceCache",
    "Budget",
    "BudgetOutcome",
    "FetchOutcome",
    "Fetched",
    "LocalBudget",
]

# currency -> account -> snapshot; an empty inner dict records "currency not held".
_ByAccount = dict[str | None, BalanceSnapshot]
_Found = dict[str, _ByAccount]

SKEW_WARNING = 30.0
"""Seconds a provider's clock may run ahead of ours before decisions warn ``clock_skew``."""

_log = structlog.get_logger("payout_guard")
# What _join hands back beside a fresh entry: no fetch to wait for.
_DONE: Future[dict[str, Fetched]] = Future()
# How often a process waiting on another's fetch reads the fleet store again.
_POLL = 0.05
# Abandoned fetches (still running past wait_timeout) a cache lets run before it starts no more.
_MAX_ABANDONED = 4
# What a probe's flight is keyed by among the currencies' (never a currency code).
_PROBE = "(probe)"


def _nothing() -> None:
    """Wait for nothing: the probe that was not started (see ``BalanceCache.start_probe``)."""


def _same(value: float, currency: str) -> float:  # noqa: ARG001 - one limit for every currency
    """Return *value*, the stale limit of every currency."""
    return value

Budget = Callable[[], float]
"""Take one request from the provider key's budget: 0.0, or the seconds until one is free."""


class Fetched(NamedTuple):
    """One currency's snapshots and when they were asked for and arrived here.

    Attributes:
        by_account: Account -> snapshot (``as_of`` never later than ``received_at``).
        received_at: Wall time of arrival, seconds since the epoch.
        received_mono: Monotonic time of arrival (for the balance's age).
        skew: Seconds the provider's stamp was ahead of ``received_at`` (0 when not ahead).
        requested_at: Wall time the request was sent: the balance was computed after it.
        picked: Account asked -> what the core works out once from its snapshot (filled in
            by ``Core.judge``, which treats it as its own; one provider's, like the rest).
    """

    by_account: _ByAccount
    received_at: float
    received_mono: float
    skew: float
    requested_at: float
    picked: dict[str | None, Any]


class FetchOutcome(NamedTuple):
    """How one request to the provider ended.

    Attributes:
        ok: Whether balances came back.
        at: Monotonic time it ended (for its age).
        error: The class name of what the fetcher raised (``None`` when ``ok``).
    """

    ok: bool
    at: float
    error: str | None = None


class BudgetOutcome(NamedTuple):
    """How the request budget answered one ask.

    Attributes:
        wait: 0.0 when the request was let through, else the seconds until one would be.
        at: Monotonic time of the ask.
    """

    wait: float
    at: float


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched: float  # monotonic time the balance arrived (here, or in the process that fetched)
    expires: float  # monotonic time it stops being fresh
    found: Fetched


class LocalBudget:
    """A request budget kept by one guard in this process (for stores that share none)."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float]) -> None:
        self._per_minute = per_minute
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._tat: float | None = None

    def __call__(self) -> float:
        """Take one request: 0.0, or the seconds until one is free (nothing taken)."""
        with self._lock:
            tat, wait = gcra(self._tat, self._monotonic(), self._per_minute)
            if not wait:
                self._tat = tat
            return wait


def shared_budget(store: FleetStore, name: str, per_minute: int) -> Budget:
    """Return the budget *name* kept in *store*, shared by every process that uses it."""

    def spend() -> float:
        with EVENTS.store_timer(store, "spend"):
            return store.spend(name, per_minute=per_minute)

    return spend


def _unlimited() -> float:
    return 0.0


class _Workers:
    """Daemon threads that run fetches, kept between fetches (starting one costs ~0.4 ms).

    Daemon threads, not a ``ThreadPoolExecutor``: the interpreter waits for an executor's
    threads at exit, and a fetch that never returns must not keep the process alive. A
    thread idle for a minute ends; a forked child starts its own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
        self._idle = 0  # threads waiting for a job that no job is promised to yet
        self._pid = os.getpid()

    def run(self, job: Callable[[], object]) -> None:
        """Start *job* in an idle thread, or in a new one."""
        with self._lock:
            if self._pid != os.getpid():
                self._jobs, self._idle, self._pid = queue.SimpleQueue(), 0, os.getpid()
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, args=(self._jobs,),
                                 name="payout_guard-fetch", daemon=True).start()
            self._jobs.put(job)

    def _work(self, jobs: queue.SimpleQueue[Callable[[], object]]) -> None:
        while True:
            try:
                job = jobs.get(timeout=60.0)
            except queue.Empty:
                with self._lock:
                    if self._idle and jobs is self._jobs:
                        self._idle -= 1
                        return
                continue  # a job was promised to an idle thread: stay for it
            job()
            with self._lock:
                if jobs is not self._jobs:  # pragma: no cover - forked meanwhile
                    return
                self._idle += 1


class BalanceCache:
    """Cache balances per currency for *ttl* seconds; ``ttl=0`` fetches every time.

    Args:
        fetcher: Where balances come from.
        ttl: Seconds a balance is fresh.
        clock: The monotonic time entries expire on and the wall time they arrived at.
        wait_timeout: How long a check waits for another thread's (or process's) fetch.
        share: The fleet store balances are shared through (``None``: this process only).
        name: What the provider key's shared balances and budget are named by.
        budget: Takes one request from the provider key's budget (default: unlimited).
        requests_per_minute: The budget's size, for ``health()`` (``None``: unlimited).
        stale_limit: Seconds old a balance may be and still be used while the budget is
            spent, or that per currency (the rules' ``MaxBalanceAge`` limit for a request in
            it, or the guard's ``max_stale``).
    """

    def __init__(
        self,
        fetcher: BalanceFetcher,
        *,
        ttl: float,
        clock: Clock | None = None,
        wait_timeout: float = 60.0,
        share: FleetStore | None = None,
        name: str = "",
        budget: Budget | None = None,
        requests_per_minute: int | None = None,
        stale_limit: float | Callable[[str], float] = 60.0,
    ) -> None:
        self._fetcher = fetcher
        self._ttl = ttl
        self._clocks = clocks_of(clock)
        self._clock = self._clocks.monotonic
        self._wait_timeout = wait_timeout
        deadline = getattr(fetcher, "deadline", None)
        # How long one fetch may take, when the fetcher says (the provider fetchers do).
        self._deadline = (float(deadline) if isinstance(deadline, int | float)
                          and not isinstance(deadline, bool) and deadline > 0 else 0.0)
        self._share = share
        self._name = name or fetcher.name
        self._budget = budget or _unlimited
        self._stale_limit: Callable[[str], float] = (
            stale_limit if callable(stale_limit) else functools.partial(_same, stale_limit)
        )
        # Who this cache is when it leads a fetch for the fleet (never shown anywhere).
        self._owner = secrets.token_hex(8)
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, Future[dict[str, Fetched]]] = {}
        # Fetches given up on while still running: each may still hold a thread.
        self._abandoned: set[Future[dict[str, Fetched]]] = set()
        self._workers = _Workers()
        # currency -> monotonic time of the latest commit a fresher balance is wanted for
        self._committed: dict[str, float] = {}
        self.last_fetch: FetchOutcome | None = None
        """How the last request to the provider ended, or was given up on (``None``: none)."""
        self.last_failure: FetchOutcome | None = None
        """How the last failed request to the provider ended (``None`` if none failed)."""
        self.requests_per_minute = requests_per_minute
        """The request budget's size (``None``: unlimited)."""
        self.last_budget: BudgetOutcome | None = None
        """How the last request asked of the budget was answered (``None``: never asked)."""

    @property
    def shared(self) -> bool:
        """Return whether balances are shared through a fleet store."""
        return self._share is not None

    def get(self, currency: str, *, force: bool = False) -> _ByAccount:
        """Return *currency*'s snapshots by account (empty if the provider does not hold it).

        Args:
            currency: ISO 4217 code.
            force: Ignore a cached entry (a fetch already in flight is still shared).

        Raises:
            Exception: whatever the fetcher raised (the guard turns it into a denial).
        """
        return self.get_fetched(currency, force=force).by_account

    def fresh(self, currency: str) -> Fetched | None:
        """Return *currency*'s snapshots while they are fresh, else ``None``; never waits.

        Read without the lock (see ``_join``): every cached check reads its balance here,
        directly, without a step of the flow (``Core.judge``).
        """
        entry = self._entries.get(currency)
        if entry is not None and self._clock() < entry.expires:
            EVENTS.balance_cache("hit")
            return entry.found
        return None

    def get_fetched(self, currency: str, *, force: bool = False) -> Fetched:
        """Return *currency*'s snapshots with their times (see :meth:`get`)."""
        if not force:
            cached = self.fresh(currency)
            if cached is not None:
                return cached
        fresh, future, leader = self._join(currency, force=force)
        if fresh is not None:
            EVENTS.balance_cache("hit")
            return fresh
        if not leader:
            EVENTS.balance_cache("shared")
        lead = functools.partial(self._lead, currency, future, force) if leader else None
        return self._waited(currency, future, lead)[currency]

    async def aget_fetched(
        self, currency: str, *, force: bool, submit: Callable[..., Future[Any]]
    ) -> Fetched:
        """Await *currency*'s snapshots without blocking the loop (see :meth:`get_fetched`).

        A fresh entry is returned at once; otherwise the fetch already in flight (started by a
        thread or a task) is joined, or one is started with *submit* (the guard's thread
        pool). Awaiting tasks share one fetch, and give up after ``wait_timeout`` with
        ``ProviderUnavailable``; a cancelled task leaves the fetch running for the others.
        """
        fresh, future, leader = self._join(currency, force=force)
        if fresh is not None:
            EVENTS.balance_cache("hit")
            return fresh
        if leader:
            submit(self._lead, currency, future, force)
        else:
            EVENTS.balance_cache("shared")
        return (await self._awaited(currency, future))[currency]

    def _waited(
        self, key: str, future: Future[dict[str, Fetched]], lead: Callable[[], None] | None
    ) -> dict[str, Fetched]:
        """Start *lead* in a fetch thread (when the caller leads), then wait for *future*.

        The wait is ``wait_timeout`` at most; then the flight of *key* is abandoned.

        Raises:
            ProviderUnavailable: the wait ended before the flight did.
            Exception: whatever the flight raised.
        """
        if lead is not None:
            self._start_lead(lead)
        return self._result(key, future, time.monotonic() + self._wait_timeout)

    def _start_lead(self, lead: Callable[[], None]) -> None:
        """Run *lead* in a fetch thread, in the caller's context (its trace span and logs)."""
        context = contextvars.copy_context()
        self._workers.run(lambda: context.run(lead))

    def _result(
        self, key: str, future: Future[dict[str, Fetched]], ends: float
    ) -> dict[str, Fetched]:
        """Wait for *future* until *ends* (monotonic); then abandon the flight of *key*.

        Raises:
            ProviderUnavailable: the wait ended before the flight did.
            Exception: whatever the flight raised.
        """
        try:
            return future.result(timeout=max(0.0, ends - time.monotonic()))
        except FutureTimeout:
            self._abandon(key, future)
            raise self._gave_up() from None

    async def _awaited(
        self, key: str, future: Future[dict[str, Fetched]]
    ) -> dict[str, Fetched]:
        """Await *future* without blocking the loop (see :meth:`_waited`); its leader started.

        A cancelled task leaves the flight running for the others.
        """
        try:
            return await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self._wait_timeout
            )
        except TimeoutError:
            self._abandon(key, future)
            raise self._gave_up() from None

    def _abandon(self, currency: str, future: Future[dict[str, Fetched]]) -> None:
        """Give up on *future*, the fetch of *currency* still running: the next check leads.

        Only the fetch in flight is abandoned (one a later check already replaced is not);
        it stays counted until it ends. It is recorded as failed (``ProviderUnavailable``)
        until it ends and records how.
        """
        with self._lock:
            if self._inflight.get(currency) is not future:
                return
            del self._inflight[currency]
            self._abandoned.add(future)
        # For health, the request ended here: a provider that does not answer in time fails.
        self.last_fetch = self.last_failure = FetchOutcome(
            ok=False, at=self._clock(), error=ProviderUnavailable.__name__
        )
        # Outside the lock: a fetch that ended meanwhile runs the callback here, at once.
        future.add_done_callback(self._ended)

    def _ended(self, future: Future[dict[str, Fetched]]) -> None:
        with self._lock:
            self._abandoned.discard(future)

    def _gave_up(self) -> ProviderUnavailable:
        return ProviderUnavailable(
            f"gave up waiting {self._wait_timeout}s for a balance fetch in progress",
            provider=self._fetcher.name,
        )

    def _join(
        self, currency: str, *, force: bool
    ) -> tuple[Fetched | None, Future[dict[str, Fetched]], bool]:
        """Return a fresh entry, or else the fetch in flight and whether the caller leads it.

        A fresh entry is read without the lock first: entries are replaced whole, never
        changed, and a lock taken on every check costs threads more than the check itself.
        A leader must run (or start) :meth:`_lead` with the future returned.
        """
        if not force:
            entry = self._entries.get(currency)
            if entry is not None and self._clock() < entry.expires:
                return entry.found, _DONE, False
        with self._lock:
            entry = self._entries.get(currency)
            if entry is not None and not force and self._clock() < entry.expires:
                return entry.found, _DONE, False
            future = self._inflight.get(currency)
            if future is not None:
                return None, future, False
            if len(self._abandoned) >= _MAX_ABANDONED:
                raise ProviderUnavailable(
                    f"{len(self._abandoned)} balance fetches given up on after "
                    f"{self._wait_timeout}s are still running; no other is started until "
                    f"one ends",
                    provider=self._fetcher.name,
                )
            future = self._inflight[currency] = Future()
            return None, future, True

    def refresh_soon(self, currency: str, within: float) -> None:
        """Ask for a balance of *currency* requested after now, once the current is *within* old.

        A committed payout changes the provider's balance, so a fresher one is worth having
        (its hold stops counting once a balance can show it); but a run of thousands of
        payouts must not turn into thousands of requests. The committed hold keeps counting
        meanwhile, so nothing is overspent while the older balance is still used.
        """
        with self._lock:
            self._committed[currency] = self._clock()
            entry = self._entries.get(currency)
            if entry is not None and entry.expires > entry.fetched + within:
                self._entries[currency] = _Entry(
                    entry.fetched, entry.fetched + within, entry.found
                )

    def _lead(
        self, currency: str, future: Future[dict[str, Fetched]], force: bool = False
    ) -> None:
        """Fetch *currency* for *future* (in a thread of its own); its waiters get the outcome.

        A fetch that was abandoned still caches what it brings, unless a newer balance came.
        """
        try:
            found, fresh_for = self._obtain(currency, force=force)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiters, who raise it
            with self._lock:
                self._landed(currency, future)
            future.set_exception(exc)
            return
        now = self._clock()
        with self._lock:
            current = self._landed(currency, future)
            for code, one in found.items():
                life = fresh_for if code == currency else self._ttl
                old = self._entries.get(code)
                if current or old is None or old.fetched < one.received_mono:
                    self._entries[code] = _Entry(one.received_mono, now + life, one)
            wanted = self._committed.get(currency)
            if wanted is not None and found[currency].received_mono > wanted:
                del self._committed[currency]  # this balance came after the commit
        future.set_result(found)

    def _landed(self, key: str, future: Future[dict[str, Fetched]]) -> bool:
        """Take *future* off the flights in the air if it is still *key*'s; say whether it was.

        Called with the lock held, by the leader of a flight that ended (an abandoned flight
        was taken off already, and a later one may have replaced it).
        """
        if self._inflight.get(key) is not future:
            return False
        del self._inflight[key]
        return True

    def _obtain(self, currency: str, *, force: bool) -> tuple[dict[str, Fetched], float]:
        """Return *currency*'s balances (and any fetched with it), and how long they are fresh.

        From the fleet when balances are shared, else fetched within the budget.
        """
        if self._share is not None and self._ttl > 0:
            return self._from_fleet(self._share, currency, force=force)
        wait = self._take()
        if wait:
            return self._spent(currency, wait, self._entries.get(currency))
        return self._fetch(currency), self._ttl

    def _take(self) -> float:
        """Take one request from the budget (see ``Budget``), remembering the answer."""
        wait = self._budget()
        if self.requests_per_minute is not None:
            self.last_budget = BudgetOutcome(wait=wait, at=self._clock())
        return wait

    def _fresh_for(self, currency: str, *, force: bool) -> float:
        """Return how old a balance may be and still serve *currency* now."""
        if force:
            return 0.0
        committed = self._committed.get(currency)
        if committed is None:
            return self._ttl
        # A balance fetched after our latest commit, or one fresh enough anyway.
        return min(self._ttl, max(self._clock() - committed, 0.0))

    def _from_fleet(
        self, share: FleetStore, currency: str, *, force: bool
    ) -> tuple[dict[str, Fetched], float]:
        """Read *currency*'s balance from the fleet store, fetching it when this process leads.

        A balance written after this process started waiting is taken however fresh it was
        asked to be: it is the fetch that was waited for. The store is asked with that same
        limit, so it never hands this process a lease for a balance it then takes (a lease
        nobody uses would keep the others waiting until it expired). A process left with less
        of its wait than one fetch may take does not lead one: it gives up (its check would
        otherwise take its wait and a whole fetch more).
        """
        name = f"{self._name}|{currency}"
        fresh_for = self._fresh_for(currency, force=force)
        started = self._clock()
        ends = started + self._wait_timeout
        while True:
            accept = max(fresh_for, self._clock() - started, 0.001)
            with EVENTS.store_timer(share, "read_shared"):
                shared, leads = share.read_shared(
                    name, owner=self._owner, lease_ttl=self._wait_timeout, fresh_for=accept,
                )
            if shared is not None and shared.age < accept:
                if leads:  # a lease of ours from before (a store may keep it for a fresh value)
                    with EVENTS.store_timer(share, "drop_lease"):
                        share.drop_lease(name, owner=self._owner)
                EVENTS.balance_cache("shared")
                found = self._decoded(shared, currency)
                return {currency: found}, max(self._ttl - shared.age, 0.0)
            if leads:
                if ends - self._clock() < self._deadline:
                    with EVENTS.store_timer(share, "drop_lease"):
                        share.drop_lease(name, owner=self._owner)
                    raise ProviderUnavailable(
                        f"the balance fetch waited for ended without a balance, and less than "
                        f"the {self._deadline:g}s a fetch may take is left of the "
                        f"{self._wait_timeout:g}s wait",
                        provider=self._fetcher.name,
                    )
                return self._fetch_for_fleet(share, name, currency, shared)
            if self._clock() >= ends:
                raise self._gave_up()
            time.sleep(_POLL)

    def _fetch_for_fleet(
        self, share: FleetStore, name: str, currency: str, shared: Shared | None
    ) -> tuple[dict[str, Fetched], float]:
        """Fetch *currency* for the fleet (this process holds the lease) and write it."""
        try:
            wait = self._take()
            if wait:
                # A value of unknown age (the store's clock stepped back) is never used.
                usable = shared is not None and math.isfinite(shared.age)
                newest = self._decoded(shared, currency) if usable and shared else None
                local = self._entries.get(currency)
                if newest is None or (local is not None
                                      and local.found.received_mono > newest.received_mono):
                    newest = None if local is None else local.found
                with EVENTS.store_timer(share, "drop_lease"):
                    share.drop_lease(name, owner=self._owner)
                return self._spent(currency, wait, None if newest is None else _Entry(
                    newest.received_mono, newest.received_mono, newest))
            found = self._fetch(currency)
        except BaseException:
            with contextlib.suppress(Exception):
                share.drop_lease(name, owner=self._owner)
            raise
        keep = max(self._ttl, self._stale_limit(currency)) + self._wait_timeout
        with EVENTS.store_timer(share, "write_shared"):
            share.write_shared(name, self._encoded(found[currency]), keep=keep,
                               owner=self._owner)
        return found, self._ttl

    def _spent(
        self, currency: str, wait: float, newest: _Entry | None
    ) -> tuple[dict[str, Fetched], float]:
        """Return the newest balance young enough to use while the budget is spent, or raise.

        Raises:
            BudgetSpent: no balance within ``stale_limit`` seconds is at hand.
        """
        limit = self._stale_limit(currency)
        if newest is not None and self._clock() - newest.found.received_mono <= limit:
            EVENTS.balance_cache("stale")
            _log.info("payout_guard.budget_spent", provider=self._fetcher.name,
                      currency=currency, retry_after=round(wait, 3), used="cached")
            return {currency: newest.found}, min(wait, self._ttl)
        EVENTS.balance_cache("miss")
        _log.warning("payout_guard.budget_spent", provider=self._fetcher.name,
                     currency=currency, retry_after=round(wait, 3), used="none")
        raise BudgetSpent(
            f"the request budget for this provider key is spent and no {currency} balance "
            f"younger than {limit:g}s is at hand; no request was sent",
            provider=self._fetcher.name, retry_after=wait,
        )

    def _encoded(self, found: Fetched) -> str:
        """Return *found* as the text the fleet shares: amounts as strings, times relative."""
        wall = self._clocks.time()
        return json.dumps({
            "snapshots": [s.model_dump(mode="json") for s in found.by_account.values()],
            "requested_ago": wall - found.requested_at,
            "received_ago": wall - found.received_at,
            "skew": found.skew,
        })

    def _decoded(self, shared: Shared, currency: str) -> Fetched:
        """Return the balance another process shared, its times on this process's clocks.

        Times travel as durations (how long before the write it was asked for and arrived)
        and the store says how long ago it was written: hosts whose clocks disagree still
        agree on when the balance was asked for.
        """
        data = json.loads(shared.payload)
        with money_context():
            snapshots = [BalanceSnapshot.model_validate(s) for s in data["snapshots"]]
        wall, mono = self._clocks.time(), self._clock()
        written = shared.age
        received_ago = written + float(data["received_ago"])  # money-ok: seconds
        requested = wall - written - float(data["requested_ago"])  # money-ok: seconds
        stamp = {"requested_at": datetime.fromtimestamp(requested, UTC)}
        return Fetched(
            {s.account: s.model_copy(update=stamp) for s in snapshots if s.currency == currency},
            wall - received_ago, mono - received_ago, float(data["skew"]),  # money-ok: seconds
            requested, {},
        )

    def probe(self) -> None:
        """Ask the provider for every balance once, only to record whether it answers.

        Probes are single-flight like fetches: one arriving while another's request runs
        waits for that request (``wait_timeout`` at most, then gives up on it as a check
        does) instead of sending its own. A request that succeeded less than ``ttl``
        seconds ago answers a probe without another: a check would not ask again then
        either. The request takes one from the budget (and each retry one more); with the
        budget spent, none is sent and ``last_budget`` says so. Nothing is cached, and a
        failure is recorded, not raised.
        """
        self.start_probe()()

    def start_probe(self) -> Callable[[], None]:
        """Start a probe (see :meth:`probe`); return what waits for it, until its own deadline.

        The deadline (``wait_timeout`` from now) runs from here, so probes of several
        providers started together, then waited for in turn, all end within one wait.
        """
        if self._answered_lately():
            return _nothing
        try:
            _, future, leader = self._join(_PROBE, force=True)
        except Exception:  # noqa: BLE001 - recorded already (the budget, say); never raised
            return _nothing
        ends = time.monotonic() + self._wait_timeout
        if leader:
            self._start_lead(functools.partial(self._lead_probe, future))

        def wait() -> None:
            # Recorded already: how the request ended, that it was given up on.
            with contextlib.suppress(Exception):
                self._result(_PROBE, future, ends)

        return wait

    async def aprobe(self, *, submit: Callable[..., Future[Any]]) -> None:
        """Await a probe without blocking the loop (see :meth:`probe`).

        Its request is made with *submit* (the guard's thread pool), as ``aget_fetched``'s.
        """
        if self._answered_lately():
            return
        with contextlib.suppress(Exception):
            _, future, leader = self._join(_PROBE, force=True)
            if leader:
                submit(self._lead_probe, future)
            await self._awaited(_PROBE, future)

    def _answered_lately(self) -> bool:
        """Return whether the provider answered a request less than ``ttl`` seconds ago."""
        last = self.last_fetch
        return last is not None and last.ok and self._clock() - last.at < self._ttl

    def _lead_probe(self, future: Future[dict[str, Fetched]]) -> None:
        """Make the probe's request, within the budget, for the probes waiting on *future*."""
        try:
            wait = self._take()
            if wait:
                _log.info("payout_guard.budget_spent", provider=self._fetcher.name,
                          currency=None, retry_after=round(wait, 3), used="none", probe=True)
            else:
                self._recorded(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiters (recorded already)
            with self._lock:
                self._landed(_PROBE, future)
            future.set_exception(exc)
            return
        with self._lock:
            self._landed(_PROBE, future)
        future.set_result({})

    def _recorded(self, currency: str | None) -> list[BalanceSnapshot]:
        """Return the fetcher's snapshots of *currency*, recording how the request ended."""
        started = time.perf_counter()
        try:
            # Fetchers parse amounts: in the money context, never in whatever the caller set.
            # Their retries are requests too: each takes one from the budget.
            with money_context(), budgeted(self._take):
                snapshots = self._fetcher.fetch(currency)
        except Exception as exc:
            self.last_fetch = self.last_failure = FetchOutcome(
                ok=False, at=self._clocks.monotonic(), error=type(exc).__name__
            )
            EVENTS.balance_fetch(self._fetcher.name, type(exc).__name__,
                                 time.perf_counter() - started)
            raise
        self.last_fetch = FetchOutcome(ok=True, at=self._clocks.monotonic())
        EVENTS.balance_fetch(self._fetcher.name, "ok", time.perf_counter() - started)
        return snapshots

    def _fetch(self, currency: str) -> dict[str, Fetched]:
        EVENTS.balance_cache("miss")
        requested = self._clocks.time()
        snapshots = self._recorded(currency)
        wall, mono = self._clocks.time(), self._clocks.monotonic()
        received = datetime.fromtimestamp(wall, UTC)
        stamp = {"requested_at": datetime.fromtimestamp(requested, UTC)}
        grouped: _Found = {currency: {}}
        skews: dict[str, float] = {}
        for snap in snapshots:
            ahead = snap.as_of.timestamp() - wall
            if ahead > 0:
                # Stamped in our future: use it as of its arrival, and say by how much.
                skews[snap.currency] = max(skews.get(snap.currency, 0.0), ahead)
                update = {**stamp, "as_of": received}
            else:
                update = stamp
            snap = snap.model_copy(update=update)  # noqa: PLW2901 - stamped
            grouped.setdefault(snap.currency, {})[snap.account] = snap
        worst = max(skews.values(), default=0.0)
        if worst > SKEW_WARNING:
            _log.warning(
                "payout_guard.clock_skew", provider=self._fetcher.name,
                skew_seconds=round(worst, 3), currencies=sorted(skews),
            )
        return {
            code: Fetched(by_account, wall, mono, skews.get(code, 0.0), requested, {})
            for code, by_account in grouped.items()
        }
