"""Health: whether each provider answered the last balance request, and whether the store answers.

``guard.health()`` reads what the balance cache recorded of the last requests (no provider
request, unless ``probe=True``) and asks the reservation store one cheap question (does it
hold the payout id ``HEALTH_PROBE_ID``?). What it returns is a frozen value, like a decision.

A probe is a request like a fetch: concurrent probes share one, it is paid from the request
budget (none is sent while the budget is spent), it is waited for no longer than a check
waits for a fetch, and a request that succeeded within the cache's TTL answers it instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, computed_field

from guard._cache import BalanceCache, BudgetOutcome, FetchOutcome
from guard._models import UtcDatetime

__all__ = ["HEALTH_PROBE_ID", "Health", "ProviderHealth", "StoreHealth", "health_of"]

HEALTH_PROBE_ID = "payout-guard-health-probe"
"""The payout id ``health()`` asks the store about: a read that never finds a hold."""

# Unknown keys are ignored (not forbidden): the JSON form carries the computed ``healthy``.
_FROZEN = ConfigDict(frozen=True)


class ProviderHealth(BaseModel):
    """One provider's balance requests, as this guard last saw them.

    Attributes:
        provider: The provider name.
        ok: Whether the last balance request succeeded (one the guard gave up waiting for
            did not); ``None`` before the first.
        age_seconds: Seconds since the last balance request ended; ``None`` before the first.
        last_error: The error class of the last failed request (``ProviderUnavailable``,
            ``ProviderAuthError``, ...), even if a later one succeeded; ``None`` if none failed.
        last_error_age_seconds: Seconds since that failure.
        requests_per_minute: The provider key's request budget (``None``: unlimited).
        budget_wait_seconds: With a budget: 0.0 when the last request asked of it was let
            through, else the seconds still to wait from now until it lets one through, as it
            said then (a fleet's budget is shared: other processes may spend it meanwhile);
            ``None`` before the first ask. A spent budget alone is not unhealthy: the guard
            then judges with a cached balance while it can. A probe the budget refused sent
            no request: ``ok`` is still the last request's.
    """

    model_config = _FROZEN

    provider: str
    ok: bool | None
    age_seconds: float | None = None
    last_error: str | None = None
    last_error_age_seconds: float | None = None
    requests_per_minute: int | None = None
    budget_wait_seconds: float | None = None

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented way to serialize a property
    @property
    def healthy(self) -> bool:
        """Return whether the last balance request succeeded (unknown is not healthy)."""
        return self.ok is True


class StoreHealth(BaseModel):
    """Whether the reservation store answered a read.

    Attributes:
        store: The store's class name (``SqliteReservations``, ...).
        ok: Whether it answered.
        error: The error class when it did not (``StoreUnavailable``, ...).
    """

    model_config = _FROZEN

    store: str
    ok: bool
    error: str | None = None


class Health(BaseModel):
    """What ``guard.health()`` returns: every provider, the store, and when it was checked."""

    model_config = _FROZEN

    providers: dict[str, ProviderHealth]
    store: StoreHealth
    checked_at: UtcDatetime

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented way to serialize a property
    @property
    def healthy(self) -> bool:
        """Return whether every provider's last request succeeded and the store answered."""
        return self.store.ok and all(p.healthy for p in self.providers.values())


def _age(outcome: FetchOutcome | None, now: float) -> float | None:
    return None if outcome is None else round(max(now - outcome.at, 0.0), 3)


def _wait(outcome: BudgetOutcome | None, now: float) -> float | None:
    if outcome is None:
        return None
    return round(max(outcome.wait - max(now - outcome.at, 0.0), 0.0), 3)


def health_of(
    caches: Mapping[str, BalanceCache], store: object, store_error: BaseException | None, *,
    monotonic: float, wall: float,
) -> Health:
    """Return the health of each provider (from its balance cache's record) and of *store*.

    Args:
        caches: Provider name -> the balance cache that made its requests.
        store: The reservation store.
        store_error: What the store raised when read (``None``: it answered).
        monotonic: The monotonic time now (ages are measured on it).
        wall: Seconds since the epoch now.
    """
    providers: dict[str, ProviderHealth] = {}
    for provider, cache in caches.items():
        last, failed = cache.last_fetch, cache.last_failure
        providers[provider] = ProviderHealth(
            provider=provider, ok=None if last is None else last.ok,
            age_seconds=_age(last, monotonic),
            last_error=None if failed is None else failed.error,
            last_error_age_seconds=_age(failed, monotonic),
            requests_per_minute=cache.requests_per_minute,
            budget_wait_seconds=_wait(cache.last_budget, monotonic),
        )
    return Health(
        providers=providers,
        store=StoreHealth(
            store=type(store).__name__, ok=store_error is None,
            error=None if store_error is None else type(store_error).__name__,
        ),
        checked_at=datetime.fromtimestamp(wall, UTC),
    )
