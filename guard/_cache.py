"""A short-lived balance cache in which concurrent misses share one provider request.

A payout run of thousands must cost a handful of balance calls (LuxCore allows about 100 a
minute per key). Entries live ``ttl`` seconds on the guard's monotonic clock (a wall clock
stepping neither keeps a balance forever nor drops it early); while one thread fetches a
currency, the others asking for it wait for that same fetch (single flight), bounded by
``wait_timeout`` so nothing blocks forever. Errors are shared with the waiters, never cached.

The outcome of the last fetch (and of the last failed one) is kept for ``guard.health()``.

Each fetch is stamped with its local receive time. A snapshot stamped later than that (a
provider clock ahead of ours) is kept at the receive time, and the skew is remembered for the
decision's ``clock_skew`` warning: a balance from the future would otherwise stop holds
counting and never grow old.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import structlog

from guard._clock import Clock, clocks_of
from guard._models import BalanceSnapshot
from guard.errors import ProviderUnavailable
from guard.fetchers._protocol import BalanceFetcher
from rules.money import money_context

__all__ = ["SKEW_WARNING", "BalanceCache", "FetchOutcome", "Fetched"]

# currency -> account -> snapshot; an empty inner dict records "currency not held".
_ByAccount = dict[str | None, BalanceSnapshot]
_Found = dict[str, _ByAccount]

SKEW_WARNING = 30.0
"""Seconds a provider's clock may run ahead of ours before decisions warn ``clock_skew``."""

_log = structlog.get_logger("payout_guard")
# What _join hands back beside a fresh entry: no fetch to wait for.
_DONE: Future[dict[str, Fetched]] = Future()


class Fetched(NamedTuple):
    """One currency's snapshots and when they arrived here.

    Attributes:
        by_account: Account -> snapshot (``as_of`` never later than ``received_at``).
        received_at: Wall time of arrival, seconds since the epoch.
        received_mono: Monotonic time of arrival (for the balance's age).
        skew: Seconds the provider's stamp was ahead of ``received_at`` (0 when not ahead).
    """

    by_account: _ByAccount
    received_at: float
    received_mono: float
    skew: float


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


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched: float
    expires: float
    found: Fetched


class BalanceCache:
    """Cache balances per currency for *ttl* seconds; ``ttl=0`` fetches every time.

    *clock* gives the monotonic time entries expire on and the wall time they arrived at;
    *wait_timeout* bounds how long a check waits for another thread's fetch.
    """

    def __init__(
        self,
        fetcher: BalanceFetcher,
        *,
        ttl: float,
        clock: Clock | None = None,
        wait_timeout: float = 60.0,
    ) -> None:
        self._fetcher = fetcher
        self._ttl = ttl
        self._clocks = clocks_of(clock)
        self._clock = self._clocks.monotonic
        self._wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, Future[dict[str, Fetched]]] = {}
        self.last_fetch: FetchOutcome | None = None
        """How the last request to the provider ended (``None`` before the first)."""
        self.last_failure: FetchOutcome | None = None
        """How the last failed request to the provider ended (``None`` if none failed)."""

    def get(self, currency: str, *, force: bool = False) -> _ByAccount:
        """Return *currency*'s snapshots by account (empty if the provider does not hold it).

        Args:
            currency: ISO 4217 code.
            force: Ignore a cached entry (a fetch already in flight is still shared).

        Raises:
            Exception: whatever the fetcher raised (the guard turns it into a denial).
        """
        return self.get_fetched(currency, force=force).by_account

    def get_fetched(self, currency: str, *, force: bool = False) -> Fetched:
        """Return *currency*'s snapshots with their arrival time (see :meth:`get`)."""
        if self._ttl <= 0:
            return self._fetch(currency)[currency]
        if not force:
            # A fresh entry is read without the lock (see _join), here without even a call:
            # this is every cached check.
            entry = self._entries.get(currency)
            if entry is not None and self._clock() < entry.expires:
                return entry.found
        fresh, future, leader = self._join(currency, force=force)
        if fresh is not None:
            return fresh
        if leader:
            return self._lead(currency, future)[currency]
        try:
            found = future.result(timeout=self._wait_timeout)
        except FutureTimeout:
            raise ProviderUnavailable(
                f"gave up waiting {self._wait_timeout}s for a balance fetch in progress",
                provider=self._fetcher.name,
            ) from None
        return found[currency]

    async def aget_fetched(
        self, currency: str, *, force: bool, submit: Callable[..., Future[Any]]
    ) -> Fetched:
        """Await *currency*'s snapshots without blocking the loop (see :meth:`get_fetched`).

        A fresh entry is returned at once; otherwise the fetch already in flight (started by a
        thread or a task) is joined, or one is started with *submit* (the guard's thread
        pool). Awaiting tasks share one fetch, and give up after ``wait_timeout`` with
        ``ProviderUnavailable``; a cancelled task leaves the fetch running for the others.
        """
        if self._ttl <= 0:
            future: Future[dict[str, Fetched]] = submit(self._fetch, currency)
        else:
            fresh, future, leader = self._join(currency, force=force)
            if fresh is not None:
                return fresh
            if leader:
                submit(self._lead, currency, future)
        try:
            found = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self._wait_timeout
            )
        except TimeoutError:
            raise ProviderUnavailable(
                f"gave up waiting {self._wait_timeout}s for a balance fetch in progress",
                provider=self._fetcher.name,
            ) from None
        return found[currency]

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
            future = self._inflight[currency] = Future()
            return None, future, True

    def refresh_soon(self, currency: str, within: float) -> None:
        """Let *currency*'s cached balance live at most *within* seconds after its fetch.

        A committed payout changes the provider's balance, so a fresher one is worth having;
        but a run of thousands of payouts must not turn into thousands of balance requests
        (LuxCore allows about 100 a minute). The committed hold keeps counting meanwhile, so
        nothing is overspent while the older balance is still used.
        """
        with self._lock:
            entry = self._entries.get(currency)
            if entry is not None and entry.expires > entry.fetched + within:
                self._entries[currency] = _Entry(
                    entry.fetched, entry.fetched + within, entry.found
                )

    def _lead(self, currency: str, future: Future[dict[str, Fetched]]) -> dict[str, Fetched]:
        try:
            found = self._fetch(currency)
        except BaseException as exc:
            with self._lock:
                del self._inflight[currency]
            future.set_exception(exc)
            raise
        fetched = self._clock()
        with self._lock:
            for code, one in found.items():
                self._entries[code] = _Entry(fetched, fetched + self._ttl, one)
            del self._inflight[currency]
        future.set_result(found)
        return found

    def probe(self) -> None:
        """Ask the provider for every balance once, only to record whether it answers.

        Nothing is cached, and a failure is recorded, not raised.
        """
        with contextlib.suppress(Exception):
            self._recorded(None)

    def _recorded(self, currency: str | None) -> list[BalanceSnapshot]:
        """Return the fetcher's snapshots of *currency*, recording how the request ended."""
        try:
            # Fetchers parse amounts: in the money context, never in whatever the caller set.
            with money_context():
                snapshots = self._fetcher.fetch(currency)
        except Exception as exc:
            self.last_fetch = self.last_failure = FetchOutcome(
                ok=False, at=self._clocks.monotonic(), error=type(exc).__name__
            )
            raise
        self.last_fetch = FetchOutcome(ok=True, at=self._clocks.monotonic())
        return snapshots

    def _fetch(self, currency: str) -> dict[str, Fetched]:
        snapshots = self._recorded(currency)
        wall, mono = self._clocks.time(), self._clocks.monotonic()
        received = datetime.fromtimestamp(wall, UTC)
        grouped: _Found = {currency: {}}
        skews: dict[str, float] = {}
        for snap in snapshots:
            ahead = snap.as_of.timestamp() - wall
            if ahead > 0:
                # Stamped in our future: use it as of its arrival, and say by how much.
                skews[snap.currency] = max(skews.get(snap.currency, 0.0), ahead)
                snap = snap.model_copy(update={"as_of": received})  # noqa: PLW2901 - clamped
            grouped.setdefault(snap.currency, {})[snap.account] = snap
        worst = max(skews.values(), default=0.0)
        if worst > SKEW_WARNING:
            _log.warning(
                "payout_guard.clock_skew", provider=self._fetcher.name,
                skew_seconds=round(worst, 3), currencies=sorted(skews),
            )
        return {
            code: Fetched(by_account, wall, mono, skews.get(code, 0.0))
            for code, by_account in grouped.items()
        }
