"""Time an allowed ``PayoutGuard.check`` with instrumentation off and with each hook on.

Run: ``.venv/bin/python tests/benchmarks/bench_instrumentation.py`` (not part of the test
suite). The guard is ``bench_check.py``'s: five built-in rules, a warm balance cache, structlog
filtering at WARNING with its logger cached. Every round times each case in turn (switching
the hooks with ``guard.instrumentation.set_hooks``), so that a busy machine slows them alike;
it prints the fastest round's microseconds per check and the ratio to instrumentation off.
``--check`` exits 1 when the Prometheus hook costs an allowed check more than 1.75 times the
check with instrumentation off (about 1.5 measured on our 2-core CI machine).

Cases: ``off`` (``set_hooks([])``); ``prometheus`` (``PrometheusHook`` on a registry of its
own); ``opentelemetry sdk`` (``OpenTelemetryHook`` on SDK providers that keep everything in
memory: a span and the metrics of every check); ``defaults, no otel sdk`` (what a process gets
when both packages import and nobody configured OpenTelemetry: Prometheus plus the API's no-op
providers).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from decimal import Decimal

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from guard import PayoutGuard, instrumentation
from guard.testing import StaticFetcher
from rules import CurrencyMinimums, FrozenFunds, MaxBalanceAge, MaxPayout, ReserveMargin

ROUNDS = 7
CALLS = 20_000
MAX_PROMETHEUS_RATIO = 1.75


def mean_us(func: Callable[[], object], calls: int = CALLS) -> float:
    """Return the mean microseconds per call of *calls* calls of *func*."""
    start = time.perf_counter()
    for _ in range(calls):
        func()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        cache_logger_on_first_use=True,
    )
    fetcher = StaticFetcher({"ARS": {"available": "1000000.00", "frozen": "30000.00"}})
    guard = PayoutGuard(fetcher, [
        ReserveMargin(percent="5", minimum={"ARS": "1000.00"}),
        FrozenFunds(max_ratio="0.5"),
        CurrencyMinimums(min_payout={"ARS": "100"}, min_remaining={"ARS": "500"}),
        MaxPayout({"ARS": "500000"}),
        MaxBalanceAge(60),
    ], cache_ttl=3600)
    amount = Decimal("2500.00")

    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    meters = MeterProvider(metric_readers=[InMemoryMetricReader()])
    cases: dict[str, list[instrumentation.Hook | instrumentation.HookFactory] | None] = {
        "off": [],
        "prometheus": [instrumentation.PrometheusHook(registry=CollectorRegistry())],
        "opentelemetry sdk (spans + metrics)": [instrumentation.OpenTelemetryHook(
            meter_provider=meters, tracer_provider=tracers)],
        "defaults, no otel sdk (prometheus + no-op otel)": None,
    }

    def check() -> None:
        guard.check(amount, "ARS")

    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, hooks in cases.items():
            with instrumentation.set_hooks(hooks):
                check()  # resolve the hooks before timing
                samples[name].append(mean_us(check))
            spans.clear()
    fastest = {name: min(times) for name, times in samples.items()}
    off = fastest["off"]
    print(f"python {sys.version.split()[0]}, {ROUNDS} rounds of {CALLS} allowed checks, "
          "fastest round's per-check mean")
    print(f"{'hooks':<50} {'us/check':>10} {'x off':>8}")
    for name, us in fastest.items():
        print(f"{name:<50} {us:>10.2f} {us / off:>8.2f}")
    ratio = fastest["prometheus"] / off
    met = ratio <= MAX_PROMETHEUS_RATIO
    print(f"target: prometheus {ratio:.2f}x off (<= {MAX_PROMETHEUS_RATIO}): "
          f"{'met' if met else 'MISSED'}")
    meters.shutdown()
    tracers.shutdown()
    if args.check and not met:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
