"""pytest fixtures for testing payout code with payout-guard (installed as a pytest11 plugin).

Override ``payout_guard_balances`` and ``payout_guard_rules`` in your own ``conftest.py`` or
test module; use ``payout_guard_dry_run`` for a shadow-mode guard over those balances and
``payout_guard_decisions`` to see every decision a test made.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import pytest

from guard._capture import capture_decisions
from guard._models import Decision
from guard._sync import PayoutGuard
from guard.testing._fakes import BalanceSpec, StaticFetcher
from rules import Rule


@pytest.fixture
def payout_guard_balances() -> Mapping[str, BalanceSpec]:
    """Return the balances the fake provider reports (override it)."""
    return {"BRL": "10000.00", "ARS": "250000.00", "MXN": "50000.00"}


@pytest.fixture
def payout_guard_rules() -> Sequence[Rule]:
    """Return the rules the guard applies on top of sufficient funds (override it)."""
    return ()


@pytest.fixture
def payout_guard_fetcher(payout_guard_balances: Mapping[str, BalanceSpec]) -> StaticFetcher:
    """Return a ``StaticFetcher`` over ``payout_guard_balances``."""
    return StaticFetcher(payout_guard_balances)


@pytest.fixture
def payout_guard_dry_run(
    payout_guard_fetcher: StaticFetcher, payout_guard_rules: Sequence[Rule]
) -> PayoutGuard:
    """Return a dry-run guard: it judges every payout and never blocks one."""
    return PayoutGuard(payout_guard_fetcher, payout_guard_rules, mode="dry_run", cache_ttl=0)


@pytest.fixture
def payout_guard_decisions() -> Iterator[list[Decision]]:
    """Yield the list of decisions made during the test."""
    with capture_decisions() as decisions:
        yield decisions
