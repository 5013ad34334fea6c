"""A fleet of worker processes on one LuxCore key shares balances and the request budget.

Eight real worker processes pay out for 10 s through one store (SQLite, Redis) against a
``LuxCoreEmulator`` that answers 429 beyond 100 balance requests a minute, as LuxCore does. The
fleet asks for 4 payouts of 1,000.00 ARS a second against 30,000.00 ARS, so it runs out of funds
before the end. The long form, with figures, is ``tests/benchmarks/bench_fleet.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from tests._fleet import FleetPlan, FleetRun, run_fleet
from tests._redis_server import shared_redis

pytestmark = pytest.mark.slow

WORKERS = 8
SECONDS = 10.0
CACHE_TTL = 5.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """Yield the URL of the session's redis-server."""
    with shared_redis() as server:
        yield server.url


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FleetRun:
    """Run the fleet once per store; every test reads the same run."""
    if request.param == "redis":
        store = f"{request.getfixturevalue('redis_url')}#fleet-{uuid.uuid4().hex[:8]}"
    else:
        store = str(tmp_path_factory.mktemp("fleet") / "holds.db")
    # No refresh after commit: the requests counted are then the cache's alone, which a fleet
    # sharing its balances pays once per cache_ttl, however many processes it has.
    plan = FleetPlan(store=store, workers=WORKERS, seconds=SECONDS, cache_ttl=CACHE_TTL,
                     refresh_after_commit=None, funds="30000.00")
    return run_fleet(plan)


class TestEightWorkersForTenSeconds:
    def test_the_guard_has_the_fleet_options(self, run: FleetRun) -> None:
        """The guard takes share_balances and refresh_after_commit, the fetcher a budget."""
        assert () == run.missing_options

    def test_they_cost_the_balance_requests_of_one_process(self, run: FleetRun) -> None:
        """Eight processes send at most ceil(seconds / cache_ttl) + 2 balance requests."""
        sent_at = [round(at, 1) for at in run.balance_calls]
        assert len(sent_at) <= run.request_target, f"balance requests sent at {sent_at} s"

    def test_they_never_receive_a_429(self, run: FleetRun) -> None:
        """The fleet stays under the provider's 100 requests a minute: no 429 is ever sent."""
        assert 0 == run.rate_limited

    def test_they_never_overspend(self, run: FleetRun) -> None:
        """The fleet pays out, never beyond the funds: the provider refuses no withdrawal."""
        assert (Decimal(0), ()) == (run.overspend, run.refused)
        assert run.paid_at

    def test_nothing_but_denials_goes_wrong(self, run: FleetRun) -> None:
        """No worker meets an exception other than a denial."""
        assert () == run.errors
