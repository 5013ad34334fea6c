"""OpenTelemetry metrics and spans of the guard (``opentelemetry-api``, imported when made).

The instruments carry the Prometheus metrics' names and labels (as attributes; see
``guard/instrumentation/_prometheus.py``). Each ``check`` and ``reserve`` is one span,
``payout_guard.check`` or ``payout_guard.reserve``, with the request's currency, amount and
payout id, and, once decided, the outcome, first reason code, provider and decision id.
A denial is not a span error; an exception other than ``PayoutDenied`` is (its class name
only: messages stay out of traces).
"""

from __future__ import annotations

import contextvars
import importlib.metadata
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from guard.errors import PayoutDenied
from guard.instrumentation._data import Hook, outcome_of

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from guard._models import Decision

__all__ = ["OpenTelemetryHook", "global_providers_set"]

# The span of the check or reserve running in this context, when an OpenTelemetryHook opened
# it: where the decision's attributes go.
_OPEN: contextvars.ContextVar[Span | None] = contextvars.ContextVar(
    "payout_guard_span", default=None
)


def global_providers_set() -> bool:
    """Return whether the process set a global meter or tracer provider.

    The API's own stand-ins (its proxy and no-op providers, defined in
    ``opentelemetry.metrics`` and ``opentelemetry.trace``) are no provider: what is recorded
    through them goes nowhere until one is set.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """
    from opentelemetry import metrics, trace  # noqa: PLC0415 - optional: imported when used

    return not (_api_own(trace.get_tracer_provider(), "opentelemetry.trace")
                and _api_own(metrics.get_meter_provider(), "opentelemetry.metrics"))


def _api_own(provider: object, package: str) -> bool:
    module = type(provider).__module__
    return module == package or module.startswith(package + ".")


def _version() -> str:
    try:
        return importlib.metadata.version("payout-guard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return ""


class OpenTelemetryHook(Hook):
    """Record the guard's metrics and spans through the OpenTelemetry API.

    Args:
        meter_provider: Where metrics go (default: the global one,
            ``opentelemetry.metrics.get_meter_provider()``, which may be set later).
        tracer_provider: Where spans go (default: the global one).
        spans: Open a span per ``check`` and ``reserve`` (``False``: metrics only). With
            the global tracer provider, only once one is set (``trace.set_tracer_provider``):
            before that, no span is opened at all.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed (``payout-guard[otel]``).
    """

    def __init__(
        self,
        *,
        meter_provider: MeterProvider | None = None,
        tracer_provider: TracerProvider | None = None,
        spans: bool = True,
    ) -> None:
        from opentelemetry import metrics, trace  # noqa: PLC0415 - optional: imported when used

        version = _version()
        meter = metrics.get_meter("payout_guard", version, meter_provider=meter_provider)
        self._tracer = trace.get_tracer("payout_guard", version, tracer_provider=tracer_provider)
        # With the global tracer provider, spans are opened only once one is set: the API's
        # stand-in would cost every check a no-op span (about 7 us, half an allowed check).
        self._global_tracers = tracer_provider is None
        self._tracer_provider = trace.get_tracer_provider
        self._status_error = trace.StatusCode.ERROR
        self._status = trace.Status
        self._spans = spans
        self._decisions = meter.create_counter(
            "payout_guard_decisions_total", unit="1",
            description="Decisions made by check and reserve.",
        )
        self._fetch = meter.create_histogram(
            "payout_guard_balance_fetch_seconds", unit="s",
            description="Seconds a balance fetch took (retries included), by outcome.",
        )
        self._requests = meter.create_counter(
            "payout_guard_provider_requests_total", unit="1",
            description="HTTP requests to providers, by status.",
        )
        self._cache = meter.create_counter(
            "payout_guard_balance_cache_total", unit="1",
            description="Balance lookups, by how the cache served them.",
        )
        create_gauge = getattr(meter, "create_gauge", None)  # opentelemetry-api >= 1.23
        self._held = None if create_gauge is None else create_gauge(
            "payout_guard_held", description="Held total (major units) a decision was last "
            "judged with.",
        )
        self._store = meter.create_histogram(
            "payout_guard_store_seconds", unit="s",
            description="Seconds a reservation store call took.",
        )
        self._dropped = meter.create_counter(
            "payout_guard_decision_log_dropped_total", unit="1",
            description="Decision records a decision log could not write.",
        )

    def __repr__(self) -> str:
        return f"OpenTelemetryHook(spans={self._spans})"

    def decision(self, decision: Decision) -> None:
        """Count *decision*; name its outcome on the span of its check or reserve."""
        reasons = decision.reasons
        outcome, code = outcome_of(decision), reasons[0].code if reasons else ""
        self._decisions.add(1, {"provider": decision.provider, "currency": decision.currency,
                                "outcome": outcome, "code": code})
        span = _OPEN.get()
        if span is not None:
            span.set_attributes({
                "payout_guard.outcome": outcome, "payout_guard.code": code,
                "payout_guard.provider": decision.provider,
                "payout_guard.decision_id": decision.decision_id,
            })

    def held(self, provider: str, currency: str, state: str, amount: Decimal) -> None:
        """Record the held total of *provider* and *currency*."""
        if self._held is not None:
            # A gauge sample for a dashboard, never judged.
            self._held.set(float(amount),  # money-ok: a gauge sample
                           {"provider": provider, "currency": currency, "state": state})

    def balance_fetch(self, provider: str, outcome: str, seconds: float) -> None:
        """Record one balance fetch's duration."""
        self._fetch.record(seconds, {"provider": provider, "outcome": outcome})

    def provider_request(self, provider: str, status: str) -> None:
        """Count one provider request by its status."""
        self._requests.add(1, {"provider": provider, "status": status})

    def balance_cache(self, result: str) -> None:
        """Count one balance lookup by its result."""
        self._cache.add(1, {"result": result})

    def store_call(self, store: str, operation: str, seconds: float) -> None:
        """Record one store call's duration."""
        self._store.record(seconds, {"store": store, "operation": operation})

    def decision_log_dropped(self) -> None:
        """Count one dropped decision record."""
        self._dropped.add(1)

    def span(self, name: str, attributes: Mapping[str, str]) -> AbstractContextManager[None]:
        """Return the span of one ``check`` or ``reserve`` (nothing when ``spans=False``)."""
        if not self._spans or (self._global_tracers
                               and _api_own(self._tracer_provider(), "opentelemetry.trace")):
            return nullcontext()
        return self._span(name, attributes)

    @contextmanager
    def _span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[None]:
        with self._tracer.start_as_current_span(
            name, attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:
            token = _OPEN.set(span)
            try:
                yield
            except PayoutDenied:
                raise  # a denial is an answer, not an error: the outcome says it
            except BaseException as exc:
                span.set_status(self._status(self._status_error, type(exc).__name__))
                raise
            finally:
                _OPEN.reset(token)
