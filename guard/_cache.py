"""A short-lived balance cache in which concurrent misses share one provider request.

A payout run of thousands must cost a handful of balance calls (LuxCore allows about 100 a
minute per key). Entries live ``ttl`` seconds on the guard's clock; while one thread fetches a
currency, the others asking for it wait for that same fetch (single flight), bounded by
``wait_timeout`` so nothing blocks forever. Errors are shared with the waiters, never cached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from guard._models import BalanceSnapshot
from guard.errors import ProviderUnavailable
from guard.fetchers._protocol import BalanceFetcher
from rules.money import money_context

__all__ = ["BalanceCache"]

# currency -> account -> snapshot; an empty inner dict records "currency not held".
_Found = dict[str, dict[str | None, BalanceSnapshot]]


@dataclass(frozen=True, slots=True)
class _Entry:
    fetched: float
    expires: float
    by_account: dict[str | None, BalanceSnapshot]


class BalanceCache:
    """Cache balances per currency for *ttl* seconds; ``ttl=0`` fetches every time."""

    def __init__(
        self,
        fetcher: BalanceFetcher,
        *,
        ttl: float,
        clock: Callable[[], float],
        wait_timeout: float = 60.0,
    ) -> None:
        self._fetcher = fetcher
        self._ttl = ttl
        self._clock = clock
        self._wait_timeout = wait_timeout
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._inflight: dict[str, Future[_Found]] = {}

    def get(
        self, currency: str, *, force: bool = False
    ) -> dict[str | None, BalanceSnapshot]:
        """Return *currency*'s snapshots by account (empty if the provider does not hold it).

        Args:
            currency: ISO 4217 code.
            force: Ignore a cached entry (a fetch already in flight is still shared).

        Raises:
            Exception: whatever the fetcher raised (the guard turns it into a denial).
        """
        if self._ttl <= 0:
            return self._fetch(currency)[currency]
        if not force:
            # A fresh entry is read without the lock: entries are replaced whole, never changed,
            # and a lock taken on every check costs threads more than the check itself.
            entry = self._entries.get(currency)
            if entry is not None and self._clock() < entry.expires:
                return entry.by_account
        with self._lock:
            entry = self._entries.get(currency)
            if entry is not None and not force and self._clock() < entry.expires:
                return entry.by_account
            future = self._inflight.get(currency)
            leader = future is None
            if future is None:
                future = self._inflight[currency] = Future()
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
                    entry.fetched, entry.fetched + within, entry.by_account
                )

    def _lead(self, currency: str, future: Future[_Found]) -> _Found:
        try:
            found = self._fetch(currency)
        except BaseException as exc:
            with self._lock:
                del self._inflight[currency]
            future.set_exception(exc)
            raise
        fetched = self._clock()
        with self._lock:
            for code, by_account in found.items():
                self._entries[code] = _Entry(fetched, fetched + self._ttl, by_account)
            del self._inflight[currency]
        future.set_result(found)
        return found

    def _fetch(self, currency: str) -> _Found:
        # Fetchers parse amounts: in the money context, never in whatever the caller set.
        with money_context():
            snapshots = self._fetcher.fetch(currency)
        found: _Found = {currency: {}}
        for snap in snapshots:
            found.setdefault(snap.currency, {})[snap.account] = snap
        return found
