"""Metrics and tracing, optional and discovered (the way stamina instruments retries).

The guard always logs its structlog events (``payout_guard.decision``, ...). Beside them it
records metrics and spans through *hooks*: by default ``PrometheusHook`` when
``prometheus_client`` imports and ``OpenTelemetryHook`` when ``opentelemetry-api`` does, each
set up on the first event. One switch for the whole process::

    from guard import instrumentation

    instrumentation.set_hooks([])                   # off (structlog events stay)
    instrumentation.set_hooks([instrumentation.PrometheusHook(registry=my_registry)])
    instrumentation.restore_default_hooks()         # the discovered defaults again
    with instrumentation.set_hooks([]):             # off for a block only
        ...
"""

from guard.instrumentation._data import Hook, HookFactory
from guard.instrumentation._hooks import (
    decision_log_dropped,
    default_hooks,
    get_hooks,
    restore_default_hooks,
    set_hooks,
)
from guard.instrumentation._otel import OpenTelemetryHook
from guard.instrumentation._prometheus import PrometheusHook

__all__ = [
    "Hook",
    "HookFactory",
    "OpenTelemetryHook",
    "PrometheusHook",
    "decision_log_dropped",
    "default_hooks",
    "get_hooks",
    "restore_default_hooks",
    "set_hooks",
]
