"""Metrics and spans (guard.instrumentation), read back from real backends.

Prometheus metrics are read from a fresh ``CollectorRegistry`` per test; OpenTelemetry metrics
from the SDK's ``InMemoryMetricReader`` and spans from its ``InMemorySpanExporter``, both on
providers built here and handed to the hook (the global providers are never touched).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from guard import AsyncPayoutGuard, ConfigurationError, PayoutDenied, PayoutGuard
from guard import instrumentation as instr
from guard.errors import ProviderUnavailable
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.stores import (
    InMemoryReservations,
    PostgresReservations,
    RedisReservations,
    SqliteReservations,
)
from guard.testing import FailingFetcher, StaticFetcher
from guard.testing.emulators import LuxCoreEmulator
from tests._guard_strategies import BlockingFetcher, wait_until_blocked
from tests._postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
POLICY = RetryPolicy(attempts=3, deadline=5.0, backoff=0.001, max_backoff=0.002)
PAYOUT_ID = "po_secretive_7d1e"
ACCOUNT = "acct_merchant_42"


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    """A fresh registry, the only hook in use while the test runs."""
    fresh = CollectorRegistry()
    with instr.set_hooks([instr.PrometheusHook(registry=fresh)]):
        yield fresh


class Otel:
    """An SDK meter provider and tracer provider that keep what they get in memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """Return (attributes, data point) of metric *name*."""
        found: list[tuple[dict[str, Any], Any]] = []
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found.extend((dict(p.attributes or {}), p) for p in metric.data.data_points)
        return found

    def value(self, name: str, **attributes: str) -> Any:
        """Return the value (sum, or gauge value) of *name* with exactly *attributes*."""
        for found, point in self.points(name):
            if found == attributes:
                return point.value
        return None

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()

    def shutdown(self) -> None:
        self.meters.shutdown()
        self.tracers.shutdown()


@pytest.fixture
def otel() -> Iterator[Otel]:
    """SDK providers in memory; an OpenTelemetryHook on them is the only hook in use."""
    backend = Otel()
    hook = instr.OpenTelemetryHook(meter_provider=backend.meters,
                                   tracer_provider=backend.tracers)
    with instr.set_hooks([hook]):
        yield backend
    backend.shutdown()


@pytest.fixture
def luxcore() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={"ARS": "10000.00"}) as emu:
        yield emu


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """Return a sample's value, 0 when it was never recorded."""
    return registry.get_sample_value(name, labels) or 0.0


def label_values(registry: CollectorRegistry) -> set[str]:
    """Return every label value of every payout_guard sample in *registry*."""
    return {
        value for metric in registry.collect() if metric.name.startswith("payout_guard")
        for one in metric.samples for value in one.labels.values()
    }


def static_guard(**options: Any) -> PayoutGuard:
    return PayoutGuard(StaticFetcher({"BRL": "100.00"}), **options)


# -- the switch ---------------------------------------------------------------------------------


def _last_line_printed(script: str) -> str:
    """Run *script* in a fresh interpreter; return the last line it printed (after any log)."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True, cwd=ROOT)
    return done.stdout.strip().splitlines()[-1]


class TestSwitch:
    def test_without_an_otel_provider_the_default_is_prometheus_alone(self) -> None:
        """Both packages import here, but no global OpenTelemetry provider was set."""
        made = [factory.hook_factory for factory in instr.default_hooks()]
        assert [instr.PrometheusHook] == made

    def test_with_a_global_otel_provider_set_both_are_defaults(self) -> None:
        """In a process that set a global tracer provider (once: it cannot be unset)."""
        script = (
            "from opentelemetry import trace\n"
            "from opentelemetry.sdk.trace import TracerProvider\n"
            "from guard import instrumentation as instr\n"
            "trace.set_tracer_provider(TracerProvider())\n"
            "print(sorted(type(h).__name__ for h in instr.get_hooks()))\n"
        )
        assert "['OpenTelemetryHook', 'PrometheusHook']" == _last_line_printed(script)

    def test_a_guard_imports_the_backends_when_built_not_on_its_event_loop(self) -> None:
        """Imported by the constructor; the hooks are still chosen at the first check.

        In a fresh process, so an OpenTelemetry provider set after the guard was built, before
        its first check, still counts.
        """
        script = (
            "import asyncio, sys\n"
            "from guard import AsyncPayoutGuard\n"
            "from guard.testing import StaticFetcher\n"
            "before = 'prometheus_client' in sys.modules\n"
            "guard = AsyncPayoutGuard(StaticFetcher({'ARS': '10.00'}))\n"
            "built = 'prometheus_client' in sys.modules, 'opentelemetry.trace' in sys.modules\n"
            "from opentelemetry import trace\n"
            "from opentelemetry.sdk.trace import TracerProvider\n"
            "trace.set_tracer_provider(TracerProvider())\n"
            "asyncio.run(guard.check('1.00', 'ARS'))\n"
            "from guard import instrumentation as instr\n"
            "print(before, built, sorted(type(h).__name__ for h in instr.get_hooks()))\n"
        )
        assert ("False (True, True) ['OpenTelemetryHook', 'PrometheusHook']"
                == _last_line_printed(script))

    def test_restoring_the_defaults_makes_them_on_the_next_use(self) -> None:
        with instr.set_hooks([]):
            instr.restore_default_hooks()
            kinds = [type(hook) for hook in instr.get_hooks()]
        assert [instr.PrometheusHook] == kinds

    def test_default_hooks_on_the_global_registry_can_be_made_twice(self) -> None:
        """Restoring the defaults again reuses the metrics already on the registry."""
        with instr.set_hooks(None):
            first = instr.get_hooks()
            instr.restore_default_hooks()
            second = instr.get_hooks()
        assert first is not second
        assert isinstance(second[0], instr.PrometheusHook)

    def test_an_empty_list_turns_every_metric_off(self, registry: CollectorRegistry) -> None:
        guard = static_guard()
        with instr.set_hooks([]):
            assert () == instr.get_hooks()
            guard.check("10.00", "BRL")
            instr.decision_log_dropped()
        assert 0 == sample(registry, "payout_guard_decisions_total", provider="static",
                           currency="BRL", outcome="allowed", code="")
        assert 0 == sample(registry, "payout_guard_decision_log_dropped_total")

    def test_leaving_the_with_block_restores_the_hooks_before_it(
        self, registry: CollectorRegistry
    ) -> None:
        guard = static_guard()
        with instr.set_hooks([]):
            guard.check("10.00", "BRL")
        guard.check("10.00", "BRL")
        assert 1 == sample(registry, "payout_guard_decisions_total", provider="static",
                           currency="BRL", outcome="allowed", code="")

    def test_structlog_events_are_logged_with_instrumentation_off(self) -> None:
        with instr.set_hooks([]), capture_logs() as logs:
            static_guard().check("10.00", "BRL")
        assert ["payout_guard.decision"] == [entry["event"] for entry in logs]

    def test_a_factory_is_called_on_first_use_not_when_set(self) -> None:
        made: list[instr.Hook] = []

        def factory() -> instr.Hook:
            made.append(instr.Hook())
            return made[-1]

        with instr.set_hooks([instr.HookFactory(factory)]):
            assert [] == made
            static_guard().check("10.00", "BRL")
            static_guard().check("10.00", "BRL")
            assert 1 == len(made)
            assert tuple(made) == instr.get_hooks()

    def test_something_that_is_not_a_hook_is_refused_naming_its_place(self) -> None:
        with pytest.raises(ConfigurationError, match=r"hooks\[1\].*Hook.*str"):
            instr.set_hooks([instr.Hook(), "prometheus"])  # type: ignore[list-item] # on purpose

    def test_a_failing_hook_never_fails_a_check_and_is_logged_once(self) -> None:
        class Broken(instr.Hook):
            def decision(self, decision: Any) -> None:  # noqa: ARG002 - it fails whatever it gets
                raise RuntimeError("boom")

        guard = static_guard()
        with instr.set_hooks([Broken()]), capture_logs() as logs:
            decisions = [guard.check("10.00", "BRL") for _ in range(3)]
        assert [True] * 3 == [d.allowed for d in decisions]
        failed = [e for e in logs if e["event"] == "payout_guard.hook_failed"]
        assert [("Broken", "decision", "RuntimeError")] == [
            (e["hook"], e["call"], e["error"]) for e in failed]

    def test_a_failing_factory_is_left_out_and_the_others_still_record(
        self, registry: CollectorRegistry
    ) -> None:
        def broken() -> instr.Hook:
            raise ImportError("no backend")

        hooks: list[instr.Hook | instr.HookFactory] = [
            instr.HookFactory(broken), instr.PrometheusHook(registry=registry)]
        with instr.set_hooks(hooks), capture_logs() as logs:
            assert static_guard().check("10.00", "BRL").allowed
            assert 1 == len(instr.get_hooks())
        assert 1 == sample(registry, "payout_guard_decisions_total", provider="static",
                           currency="BRL", outcome="allowed", code="")
        assert ["payout_guard.hook_failed"] == [
            e["event"] for e in logs if e["event"] != "payout_guard.decision"]

    def test_a_failing_span_never_fails_a_reserve(self) -> None:
        class BrokenSpan(instr.Hook):
            def span(self, name: str, attributes: Any) -> Any:  # noqa: ARG002 - it fails
                raise RuntimeError("no tracer")

        with instr.set_hooks([BrokenSpan()]), static_guard().reserve(
            "10.00", "BRL", payout_id="p-1"
        ) as reservation:
            pass
        assert reservation.decision.allowed

    def test_a_hook_records_only_the_events_it_overrides(self) -> None:
        """A hook of one method is told about that event only."""
        seen: list[str] = []

        class Results(instr.Hook):
            def balance_cache(self, result: str) -> None:
                seen.append(result)

        with instr.set_hooks([Results()]):
            guard = static_guard()
            guard.check("10.00", "BRL")
            guard.check("10.00", "BRL")
        assert ["miss", "hit"] == seen


# -- Prometheus ---------------------------------------------------------------------------


class TestDecisions:
    def test_each_decision_counts_once_by_outcome_and_first_code(
        self, registry: CollectorRegistry
    ) -> None:
        guard = static_guard()
        guard.check("10.00", "BRL")
        guard.check("20.00", "BRL")
        guard.check("500.00", "BRL")
        labels = {"provider": "static", "currency": "BRL"}
        assert 2 == sample(registry, "payout_guard_decisions_total", **labels,
                           outcome="allowed", code="")
        assert 1 == sample(registry, "payout_guard_decisions_total", **labels,
                           outcome="denied", code="insufficient_funds")

    def test_a_dry_run_denial_counts_as_would_deny(self, registry: CollectorRegistry) -> None:
        static_guard(mode="dry_run").check("500.00", "BRL")
        assert 1 == sample(registry, "payout_guard_decisions_total", provider="static",
                           currency="BRL", outcome="would_deny", code="insufficient_funds")

    def test_a_provider_outage_counts_as_a_balance_unavailable_denial(
        self, registry: CollectorRegistry
    ) -> None:
        fetcher = FailingFetcher(ProviderUnavailable("down", provider="failing"))
        PayoutGuard(fetcher).check("10.00", "BRL")
        assert 1 == sample(registry, "payout_guard_decisions_total", provider="failing",
                           currency="BRL", outcome="denied", code="balance_unavailable")

    def test_reserve_counts_its_decision_and_a_denied_reserve_too(
        self, registry: CollectorRegistry
    ) -> None:
        guard = static_guard()
        with guard.reserve("60.00", "BRL", payout_id="p-1"):
            pass
        with pytest.raises(PayoutDenied):
            guard.reserve("60.00", "BRL", payout_id="p-1")
        labels = {"provider": "static", "currency": "BRL"}
        assert 1 == sample(registry, "payout_guard_decisions_total", **labels,
                           outcome="allowed", code="")
        assert 1 == sample(registry, "payout_guard_decisions_total", **labels,
                           outcome="denied", code="duplicate_payout")

    def test_no_label_carries_a_payout_id_or_an_account(self, registry: CollectorRegistry
                                                        ) -> None:
        fetcher = StaticFetcher({"BRL": {"available": "100.00"}})
        guard = PayoutGuard(fetcher)
        guard.check("10.00", "BRL", payout_id=PAYOUT_ID)
        with guard.reserve("10.00", "BRL", payout_id=PAYOUT_ID + "-2"):
            pass
        guard.check("10.00", "BRL", account=ACCOUNT)
        values = label_values(registry)
        assert values  # something was recorded
        assert [] == [v for v in values if PAYOUT_ID in v or ACCOUNT in v]

    def test_the_dropped_records_counter_counts_each_call(self, registry: CollectorRegistry
                                                          ) -> None:
        instr.decision_log_dropped()
        instr.decision_log_dropped()
        assert 2 == sample(registry, "payout_guard_decision_log_dropped_total")


class TestHeld:
    def test_the_held_total_a_decision_read_is_the_gauge(self, registry: CollectorRegistry
                                                         ) -> None:
        guard = static_guard()
        reservation = guard.reserve("30.00", "BRL", payout_id="p-1")
        guard.check("1.00", "BRL")
        assert 30 == sample(registry, "payout_guard_held", provider="static", currency="BRL",
                            state="counting")
        reservation.release()
        guard.check("1.00", "BRL")
        assert 0 == sample(registry, "payout_guard_held", provider="static", currency="BRL",
                           state="counting")

    def test_a_decision_without_a_balance_samples_nothing(self, registry: CollectorRegistry
                                                          ) -> None:
        PayoutGuard(FailingFetcher()).check("1.00", "BRL")
        assert registry.get_sample_value(
            "payout_guard_held", {"provider": "failing", "currency": "BRL",
                                  "state": "counting"}) is None


class TestBalanceCache:
    def test_the_first_lookup_misses_and_the_next_hit(self, registry: CollectorRegistry
                                                      ) -> None:
        guard = static_guard()
        for _ in range(3):
            guard.check("1.00", "BRL")
        assert (1, 2) == (sample(registry, "payout_guard_balance_cache_total", result="miss"),
                          sample(registry, "payout_guard_balance_cache_total", result="hit"))

    def test_threads_waiting_on_one_fetch_count_as_shared(self, registry: CollectorRegistry
                                                          ) -> None:
        fetcher = BlockingFetcher({"BRL": "1000.00"})
        guard = PayoutGuard(fetcher)
        threads = [threading.Thread(target=guard.check, args=("1.00", "BRL"))
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_until_blocked(threads)
        finally:
            fetcher.release.set()
            for thread in threads:
                thread.join(10)
        assert (1, 3) == (sample(registry, "payout_guard_balance_cache_total", result="miss"),
                          sample(registry, "payout_guard_balance_cache_total", result="shared"))

    def test_a_balance_read_from_the_fleet_store_counts_as_shared(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """Two guards on one SQLite file: the second reads the balance the first fetched."""
        path = tmp_path / "holds.db"
        fetcher = StaticFetcher({"BRL": "100.00"})
        with SqliteReservations(path) as first_store, SqliteReservations(path) as second_store:
            PayoutGuard(fetcher, reservations=first_store).check("1.00", "BRL")
            PayoutGuard(fetcher, reservations=second_store).check("1.00", "BRL")
        assert 1 == fetcher.calls
        assert (1, 1) == (sample(registry, "payout_guard_balance_cache_total", result="miss"),
                          sample(registry, "payout_guard_balance_cache_total", result="shared"))

    def test_a_spent_budget_serving_an_older_balance_counts_as_stale(
        self, registry: CollectorRegistry, luxcore: LuxCoreEmulator
    ) -> None:
        with LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, retry=POLICY,
                            requests_per_minute=1) as fetcher:
            guard = PayoutGuard(fetcher, cache_ttl=0)
            guard.check("1.00", "ARS")
            guard.check("1.00", "ARS")
        assert (1, 1) == (sample(registry, "payout_guard_balance_cache_total", result="miss"),
                          sample(registry, "payout_guard_balance_cache_total", result="stale"))


class TestFetches:
    def test_a_fetch_is_timed_with_its_outcome(self, registry: CollectorRegistry) -> None:
        static_guard().check("1.00", "BRL")
        PayoutGuard(FailingFetcher(ProviderUnavailable("down", provider="failing"))).check(
            "1.00", "BRL")
        assert 1 == sample(registry, "payout_guard_balance_fetch_seconds_count",
                           provider="static", outcome="ok")
        assert 1 == sample(registry, "payout_guard_balance_fetch_seconds_count",
                           provider="failing", outcome="ProviderUnavailable")
        assert 0 < sample(registry, "payout_guard_balance_fetch_seconds_sum",
                          provider="static", outcome="ok")

    def test_each_http_request_counts_by_its_status(
        self, registry: CollectorRegistry, luxcore: LuxCoreEmulator
    ) -> None:
        """A 503 then a 200 (one fetch, retried) against the real emulator."""
        luxcore.fail_next("http_503")
        with LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, retry=POLICY) as fetcher:
            assert PayoutGuard(fetcher).check("1.00", "ARS").allowed
        assert (1, 1) == (
            sample(registry, "payout_guard_provider_requests_total", provider="luxcore",
                   status="503"),
            sample(registry, "payout_guard_provider_requests_total", provider="luxcore",
                   status="200"),
        )
        assert 1 == sample(registry, "payout_guard_balance_fetch_seconds_count",
                           provider="luxcore", outcome="ok")

    def test_refused_credentials_count_as_their_status(
        self, registry: CollectorRegistry, luxcore: LuxCoreEmulator
    ) -> None:
        with LuxCoreFetcher("qp_test_sk_wrong", base_url=luxcore.url, retry=POLICY) as fetcher:
            decision = PayoutGuard(fetcher).check("1.00", "ARS")
        assert ("balance_unavailable",) == decision.codes
        assert 1 == sample(registry, "payout_guard_provider_requests_total", provider="luxcore",
                           status="401")
        assert 1 == sample(registry, "payout_guard_balance_fetch_seconds_count",
                           provider="luxcore", outcome="ProviderAuthError")

    def test_a_request_no_answer_came_back_for_counts_as_error(
        self, registry: CollectorRegistry
    ) -> None:
        """The emulator stopped: nothing listens, so no status came back."""
        emu = LuxCoreEmulator(balances={"ARS": "10.00"}).start()
        url, key = emu.url, emu.api_key
        emu.stop()
        once = RetryPolicy(attempts=1, deadline=2.0, backoff=0.001, max_backoff=0.002)
        with LuxCoreFetcher(key, base_url=url, retry=once) as fetcher:
            PayoutGuard(fetcher).check("1.00", "ARS")
        assert 1 == sample(registry, "payout_guard_provider_requests_total", provider="luxcore",
                           status="error")


class TestStores:
    def test_the_store_calls_of_a_reserve_are_timed_by_operation(
        self, registry: CollectorRegistry
    ) -> None:
        """The first reserve reads the held total, then holds and commits; the check reads."""
        guard = static_guard()
        with guard.reserve("10.00", "BRL", payout_id="p-1"):
            pass
        guard.check("1.00", "BRL")
        count = "payout_guard_store_seconds_count"
        store = "InMemoryReservations"
        assert {"read_held": 2, "try_hold": 1, "commit": 1} == {
            op: sample(registry, count, store=store, operation=op)
            for op in ("read_held", "try_hold", "commit")
        }

    def test_the_store_label_is_the_store_class(self, registry: CollectorRegistry,
                                                tmp_path: Path) -> None:
        with SqliteReservations(tmp_path / "holds.db") as store:
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store,
                                share_balances=False)
            guard.reserve("10.00", "BRL", payout_id="p-1").release()
        assert 1 == sample(registry, "payout_guard_store_seconds_count",
                           store="SqliteReservations", operation="release")

    def test_the_fleet_calls_of_a_shared_balance_are_timed_too(
        self, registry: CollectorRegistry, tmp_path: Path, luxcore: LuxCoreEmulator
    ) -> None:
        """Sharing balances reads and writes them in the store and spends the budget there."""
        fetcher = LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url,
                                 retry=RetryPolicy(attempts=1, deadline=5))
        with SqliteReservations(tmp_path / "holds.db") as store, PayoutGuard(
            fetcher, reservations=store
        ) as guard:
            assert guard.check("1.00", "ARS").allowed
        count = "payout_guard_store_seconds_count"
        assert {"read_shared": 1, "spend": 1, "write_shared": 1} == {
            op: sample(registry, count, store="SqliteReservations", operation=op)
            for op in ("read_shared", "spend", "write_shared")
        }

    def test_a_redis_store_is_timed_asyncio_and_blocking(
        self, registry: CollectorRegistry, redis_url: str
    ) -> None:
        """AsyncPayoutGuard awaits the store's asyncio form: that class names the label."""
        with RedisReservations(redis_url, namespace=f"instr-{uuid.uuid4().hex}") as store:
            static_guard(reservations=store, share_balances=False).check("1.00", "BRL")

            async def main() -> None:
                async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}),
                                            reservations=store, share_balances=False) as guard:
                    await guard.check("1.00", "BRL")

            asyncio.run(main())
        names = {
            s.labels["store"] for m in registry.collect() if m.name == "payout_guard_store_seconds"
            for s in m.samples
        }
        assert {"RedisReservations", "AsyncRedisReservations"} == names


    def test_a_reserve_in_the_callers_transaction_is_timed_sync_and_asyncio(
        self, registry: CollectorRegistry, postgres_server: PostgresServer
    ) -> None:
        """reserve(connection=...) on PostgreSQL: the bound store's calls are timed too."""
        with PostgresReservations(postgres_server.dsn(), schema=postgres_server.fresh_schema(),
                                  create_schema=True) as store:
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store,
                                share_balances=False)
            with postgres_server.connect() as conn, conn.transaction():
                guard.reserve("10.00", "BRL", payout_id="p-1", connection=conn).commit()

            async def main() -> None:
                aconn = await psycopg.AsyncConnection.connect(postgres_server.dsn())
                aguard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store,
                                          share_balances=False)
                async with aguard, aconn, aconn.transaction():
                    reservation = await aguard.reserve("10.00", "BRL", payout_id="p-2",
                                                       connection=aconn)
                    await reservation.commit()

            asyncio.run(main())
        stores = {
            s.labels["store"] for m in registry.collect() if m.name == "payout_guard_store_seconds"
            for s in m.samples if s.labels.get("operation") == "commit"
        }
        assert {"PostgresReservations", "AsyncPostgresReservations"} == stores


class TestAsyncGuard:
    def test_checks_and_reserves_on_asyncio_are_counted_and_timed(
        self, registry: CollectorRegistry
    ) -> None:
        async def main() -> None:
            async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"})) as guard:
                await guard.check("10.00", "BRL")
                async with guard.reserve("10.00", "BRL", payout_id="p-1"):
                    pass
                await guard.check("500.00", "BRL")

        asyncio.run(main())
        labels = {"provider": "static", "currency": "BRL"}
        assert (2, 1) == (
            sample(registry, "payout_guard_decisions_total", **labels, outcome="allowed",
                   code=""),
            sample(registry, "payout_guard_decisions_total", **labels, outcome="denied",
                   code="insufficient_funds"),
        )
        assert 1 == sample(registry, "payout_guard_store_seconds_count",
                           store="InMemoryReservations", operation="commit")


# -- OpenTelemetry --------------------------------------------------------------------------


class TestOpenTelemetryMetrics:
    def test_decisions_and_fetches_reach_the_meter_provider(self, otel: Otel) -> None:
        guard = static_guard()
        guard.check("10.00", "BRL")
        guard.check("500.00", "BRL")
        instr.decision_log_dropped()
        assert 1 == otel.value("payout_guard_decisions_total", provider="static",
                               currency="BRL", outcome="allowed", code="")
        assert 1 == otel.value("payout_guard_decisions_total", provider="static",
                               currency="BRL", outcome="denied", code="insufficient_funds")
        assert 1 == otel.value("payout_guard_balance_cache_total", result="hit")
        assert 1 == otel.value("payout_guard_decision_log_dropped_total")
        [(attributes, fetch)] = otel.points("payout_guard_balance_fetch_seconds")
        assert ({"provider": "static", "outcome": "ok"}, 1) == (attributes, fetch.count)

    def test_the_held_gauge_and_store_timings_reach_the_meter_provider(self, otel: Otel
                                                                       ) -> None:
        guard = static_guard()
        with guard.reserve("40.00", "BRL", payout_id="p-1"):
            guard.check("1.00", "BRL")
        assert Decimal(40) == Decimal(str(otel.value(
            "payout_guard_held", provider="static", currency="BRL", state="counting")))
        operations = {a["operation"] for a, _ in otel.points("payout_guard_store_seconds")}
        assert {"read_held", "try_hold", "commit"} <= operations

    def test_provider_requests_reach_the_meter_provider(self, otel: Otel,
                                                        luxcore: LuxCoreEmulator) -> None:
        with LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, retry=POLICY) as fetcher:
            PayoutGuard(fetcher).check("1.00", "ARS")
        assert 1 == otel.value("payout_guard_provider_requests_total", provider="luxcore",
                               status="200")

    def test_no_attribute_carries_a_payout_id_or_an_account(self, otel: Otel) -> None:
        guard = static_guard()
        guard.check("10.00", "BRL", payout_id=PAYOUT_ID)
        guard.check("10.00", "BRL", account=ACCOUNT)
        data = otel.reader.get_metrics_data()
        assert data is not None
        values = {
            str(value) for resource in data.resource_metrics for scope in resource.scope_metrics
            for metric in scope.metrics for point in metric.data.data_points
            for value in (point.attributes or {}).values()
        }
        assert values
        assert [] == [v for v in values if PAYOUT_ID in v or ACCOUNT in v]


class TestSpans:
    def test_a_check_is_one_span_with_its_request_and_outcome(self, otel: Otel) -> None:
        static_guard().check("10.00", "BRL", payout_id="po_1")
        [span] = otel.spans()
        attributes = dict(span.attributes or {})
        assert "payout_guard.check" == span.name
        assert {
            "payout_guard.currency": "BRL", "payout_guard.amount": "10.00",
            "payout_guard.payout_id": "po_1", "payout_guard.outcome": "allowed",
            "payout_guard.code": "", "payout_guard.provider": "static",
        }.items() <= attributes.items()
        assert StatusCode.UNSET == span.status.status_code

    def test_a_denied_reserve_is_a_span_with_its_code_not_an_error(self, otel: Otel) -> None:
        with pytest.raises(PayoutDenied):
            static_guard().reserve("500.00", "BRL", payout_id="po_1")
        [span] = otel.spans()
        assert ("payout_guard.reserve", "denied", "insufficient_funds", StatusCode.UNSET) == (
            span.name, span.attributes["payout_guard.outcome"],  # type: ignore[index]
            span.attributes["payout_guard.code"],  # type: ignore[index]
            span.status.status_code,
        )

    def test_an_error_inside_the_span_marks_it_by_class_name(self, otel: Otel) -> None:
        """A store failing in a way the guard does not know: the span is an error."""

        class Broken(InMemoryReservations):
            def try_hold(self, *args: Any, **kwargs: Any) -> Any:  # noqa: ARG002 - fails anyway
                raise RuntimeError("disk on fire")

        with pytest.raises(RuntimeError):
            static_guard(reservations=Broken()).reserve("10.00", "BRL", payout_id="po_1")
        [span] = otel.spans()
        assert (StatusCode.ERROR, "RuntimeError") == (span.status.status_code,
                                                      span.status.description)

    def test_async_checks_and_reserves_are_spans(self, otel: Otel) -> None:
        async def main() -> None:
            async with AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"})) as guard:
                await guard.check("10.00", "BRL")
                async with guard.reserve("10.00", "BRL", payout_id="p-1"):
                    pass

        asyncio.run(main())
        assert ["payout_guard.check", "payout_guard.reserve"] == [s.name for s in otel.spans()]
        assert all("allowed" == s.attributes["payout_guard.outcome"]  # type: ignore[index]
                   for s in otel.spans())

    def test_spans_can_be_left_off(self) -> None:
        backend = Otel()
        hook = instr.OpenTelemetryHook(meter_provider=backend.meters,
                                       tracer_provider=backend.tracers, spans=False)
        with instr.set_hooks([hook]):
            static_guard().check("10.00", "BRL")
        assert () == backend.spans()
        assert 1 == backend.value("payout_guard_decisions_total", provider="static",
                                  currency="BRL", outcome="allowed", code="")
        backend.shutdown()

    def test_a_check_whose_fetch_fails_is_a_denied_span(self, otel: Otel,
                                                        luxcore: LuxCoreEmulator) -> None:
        """An outage is an answer (a denial), not an error of the span."""
        luxcore.fail_next("http_503", times=3)
        with LuxCoreFetcher(luxcore.api_key, base_url=luxcore.url, retry=POLICY) as fetcher:
            PayoutGuard(fetcher).check("1.00", "ARS")
        [span] = otel.spans()
        assert ("denied", "balance_unavailable", StatusCode.UNSET) == (
            span.attributes["payout_guard.outcome"],  # type: ignore[index]
            span.attributes["payout_guard.code"],  # type: ignore[index]
            span.status.status_code,
        )
