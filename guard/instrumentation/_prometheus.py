"""Prometheus metrics of the guard (``prometheus_client``, imported when a hook is made).

::

    payout_guard_decisions_total{provider,currency,outcome,code}   counter
    payout_guard_balance_fetch_seconds{provider,outcome}            histogram
    payout_guard_provider_requests_total{provider,status}           counter
    payout_guard_balance_cache_total{result}                        counter
    payout_guard_held{provider,currency,state}                      gauge (major units)
    payout_guard_store_seconds{store,operation}                     histogram
    payout_guard_decision_log_dropped_total                         counter

No label is unbounded: never a payout id or an account.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

from guard.instrumentation._data import Hook, outcome_of

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from guard._models import Decision

__all__ = ["FETCH_BUCKETS", "STORE_BUCKETS", "PrometheusHook"]

FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Bucket bounds (seconds) of ``payout_guard_balance_fetch_seconds``: a provider request."""

STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5)
"""Bucket bounds (seconds) of ``payout_guard_store_seconds``: memory, SQLite, Redis calls."""

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class _Metrics:
    decisions: Counter
    fetch_seconds: Histogram
    provider_requests: Counter
    cache: Counter
    held: Gauge
    store_seconds: Histogram
    log_dropped: Counter


# Registry -> the guard's metrics on it: a registry takes each name once, so a second hook
# on the same registry (the defaults restored, a hook made twice) shares the first's metrics.
_REGISTERED: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = (
    weakref.WeakKeyDictionary()
)


def _register(registry: CollectorRegistry) -> _Metrics:
    import prometheus_client as prom  # noqa: PLC0415 - optional: imported only when used

    return _Metrics(
        decisions=prom.Counter(
            "payout_guard_decisions", "Decisions made by check and reserve.",
            ("provider", "currency", "outcome", "code"), registry=registry,
        ),
        fetch_seconds=prom.Histogram(
            "payout_guard_balance_fetch_seconds",
            "Seconds a balance fetch took (retries included), by outcome.",
            ("provider", "outcome"), buckets=FETCH_BUCKETS, registry=registry,
        ),
        provider_requests=prom.Counter(
            "payout_guard_provider_requests", "HTTP requests to providers, by status.",
            ("provider", "status"), registry=registry,
        ),
        cache=prom.Counter(
            "payout_guard_balance_cache", "Balance lookups, by how the cache served them.",
            ("result",), registry=registry,
        ),
        held=prom.Gauge(
            "payout_guard_held",
            "Held total (major units) a decision was last judged with.",
            ("provider", "currency", "state"), registry=registry,
        ),
        store_seconds=prom.Histogram(
            "payout_guard_store_seconds", "Seconds a reservation store call took.",
            ("store", "operation"), buckets=STORE_BUCKETS, registry=registry,
        ),
        log_dropped=prom.Counter(
            "payout_guard_decision_log_dropped",
            "Decision records a decision log could not write.", registry=registry,
        ),
    )


def _children(metric: Any, method: str) -> Callable[..., Any]:
    """Return the labelled child's *method* (``inc``, ``set``, ``observe``) by label values.

    Each child's method is remembered: one dict read per event instead of ``labels()``
    (which validates the values and takes the metric's lock every time).
    """
    made: dict[Hashable, Any] = {}
    labels = metric.labels

    def child(*values: str) -> Any:
        found = made.get(values)
        if found is None:
            found = made[values] = getattr(labels(*values), method)
        return found

    return child


class PrometheusHook(Hook):
    """Record the guard's metrics in a Prometheus registry.

    Args:
        registry: Where the metrics are registered (default: ``prometheus_client.REGISTRY``).
            Hooks on one registry share its metrics.

    Attributes:
        registry: The registry the metrics are on.

    Raises:
        ImportError: ``prometheus_client`` is not installed (``payout-guard[prometheus]``).
        ValueError: another library registered one of these metric names on *registry*.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        import prometheus_client  # noqa: PLC0415 - optional: imported only when used

        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        metrics = _REGISTERED.get(self.registry)
        if metrics is None:
            metrics = _REGISTERED[self.registry] = _register(self.registry)
        self._decisions = _children(metrics.decisions, "inc")
        self._fetch = _children(metrics.fetch_seconds, "observe")
        self._requests = _children(metrics.provider_requests, "inc")
        self._cache = _children(metrics.cache, "inc")
        self._held = _children(metrics.held, "set")
        self._store = _children(metrics.store_seconds, "observe")
        self._dropped = metrics.log_dropped

    def __repr__(self) -> str:
        return f"PrometheusHook(registry={self.registry!r})"

    def decision(self, decision: Decision) -> None:
        """Count *decision* by provider, currency, outcome and its first reason code."""
        reasons = decision.reasons
        self._decisions(
            decision.provider, decision.currency, outcome_of(decision),
            reasons[0].code if reasons else "",
        )()

    def held(self, provider: str, currency: str, state: str, amount: Decimal) -> None:
        """Set the held gauge of *provider* and *currency* to *amount*."""
        # A gauge sample for a dashboard (Prometheus values are floats), never judged.
        self._held(provider, currency, state)(float(amount))  # money-ok: a gauge sample

    def balance_fetch(self, provider: str, outcome: str, seconds: float) -> None:
        """Observe one balance fetch's duration."""
        self._fetch(provider, outcome)(seconds)

    def provider_request(self, provider: str, status: str) -> None:
        """Count one provider request by its status."""
        self._requests(provider, status)()

    def balance_cache(self, result: str) -> None:
        """Count one balance lookup by its result."""
        self._cache(result)()

    def store_call(self, store: str, operation: str, seconds: float) -> None:
        """Observe one store call's duration."""
        self._store(store, operation)(seconds)

    def decision_log_dropped(self) -> None:
        """Count one dropped decision record."""
        self._dropped.inc()
