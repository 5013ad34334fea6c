"""A PayoutGuard on each real fetcher and its emulator: faults deny, a healthy provider allows."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from guard import PayoutGuard
from guard.fetchers import RetryPolicy
from guard.stores import SqliteReservations
from guard.testing.emulators import Fault, LuxCoreEmulator, PagsmileEmulator
from tests.test_fetchers_emulated import PROVIDERS, Emulator, Provider, _luxcore, _pagsmile

POLICY = RetryPolicy(attempts=2, deadline=0.8, backoff=0.001, max_backoff=0.002)
CASES = [
    (name, fault)
    for name in sorted(PROVIDERS)
    for fault in Fault
    if fault is not Fault.EXPIRED or name == "luxtak"
]


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[tuple[Provider, Emulator]]:
    provider = PROVIDERS[request.param]
    with provider.emulator() as emu:
        emu.slow_seconds = 1.0
        yield provider, emu


class TestGuardOnFetchers:
    @pytest.mark.parametrize("running", sorted(PROVIDERS), indirect=True)
    def test_healthy_provider_allows(self, running: tuple[Provider, Emulator]) -> None:
        """With the provider up and funds there, the payout is allowed on the fetched balance."""
        provider, emu = running
        with provider.fetcher(emu, retry=POLICY) as fetcher:
            decision = PayoutGuard(fetcher, cache_ttl=0).check("1.00", provider.currency)
        assert (True, provider.name) == (decision.allowed, decision.provider)
        assert decision.balance is not None
        assert provider.expected[provider.currency] == decision.balance.available

    @pytest.mark.parametrize(("running", "fault"), CASES, indirect=["running"],
                             ids=[f"{n}-{f.value}" for n, f in CASES])
    def test_fault_denies_retryably(self, running: tuple[Provider, Emulator],
                                    fault: Fault) -> None:
        """Under every fault the guard denies with balance_unavailable, retryable, no raise."""
        provider, emu = running
        emu.fail_next(fault, times=3)
        with provider.fetcher(emu, retry=POLICY, timeout=(1.0, 0.2)) as fetcher:
            decision = PayoutGuard(fetcher, cache_ttl=0).check("1.00", provider.currency)
        assert (False, ("balance_unavailable",), True) == (
            decision.allowed, decision.codes, decision.retryable)

    @pytest.mark.parametrize("running", sorted(PROVIDERS), indirect=True)
    def test_wrong_key_denies(self, running: tuple[Provider, Emulator]) -> None:
        """Refused credentials deny with balance_unavailable, and the key is not in the reason."""
        provider, emu = running
        with provider.fetcher(emu, retry=POLICY, secret="wrong_key_4242") as fetcher:
            decision = PayoutGuard(fetcher, cache_ttl=0).check("1.00", provider.currency)
        assert ("balance_unavailable",) == decision.codes
        assert "wrong_key_4242" not in decision.model_dump_json()

    @pytest.mark.parametrize("running", sorted(PROVIDERS), indirect=True)
    def test_recovers_after_transient_fault(self, running: tuple[Provider, Emulator]) -> None:
        """A single 503 is retried inside the fetch: the guard never notices and allows."""
        provider, emu = running
        emu.fail_next(Fault.HTTP_503)
        with provider.fetcher(emu, retry=POLICY) as fetcher:
            decision = PayoutGuard(fetcher, cache_ttl=0).check("1.00", provider.currency)
        assert (True, 2) == (decision.allowed, emu.balance_requests)


class TestSharedBalancesFollowWhatIsRead:
    """Guards on one store share balances only with fetchers that read the same numbers."""

    def test_pagsmile_fields_are_not_shared(self, tmp_path: Path) -> None:
        """One key, two available_field settings, one store: each guard judges on its field."""
        with PagsmileEmulator(balances={"BRL": "100.00"}) as emu:
            emu.set_balance("BRL", "100.00", payout="10000.00")  # net_income 10100.00
            path = tmp_path / "holds.db"
            with (SqliteReservations(path) as one, SqliteReservations(path) as two,
                  _pagsmile(emu, retry=POLICY, available_field="net_income") as income,
                  _pagsmile(emu, retry=POLICY, available_field="balance") as balance):
                PayoutGuard(income, reservations=one).check("1.00", "BRL")
                decision = PayoutGuard(balance, reservations=two).check("5000.00", "BRL")
        assert decision.balance is not None
        assert (False, ("insufficient_funds",), Decimal("100.00"), 2) == (
            decision.allowed, decision.codes, decision.balance.available, emu.balance_requests)

    def test_luxcore_balance_types_are_not_shared(self, tmp_path: Path) -> None:
        """One key, balance types main and withdrawal, one store: two requests, one each."""
        with LuxCoreEmulator(balances={"ARS": "10000.00"}) as emu:
            path = tmp_path / "holds.db"
            with (SqliteReservations(path) as one, SqliteReservations(path) as two,
                  _luxcore(emu, retry=POLICY) as main,
                  _luxcore(emu, retry=POLICY, balance_type="withdrawal") as withdrawal):
                PayoutGuard(main, reservations=one).check("1.00", "ARS")
                PayoutGuard(withdrawal, reservations=two).check("1.00", "ARS")
            asked = [request.query["balance_type"] for request in emu.requests]
        assert ["main", "withdrawal"] == asked

    def test_other_hosts_are_not_shared(self, tmp_path: Path) -> None:
        """One key on two hosts (sandbox and production), one store: each host's own balance."""
        with (PagsmileEmulator(balances={"BRL": "10000.00"}) as sandbox,
              PagsmileEmulator(balances={"BRL": "100.00"}) as production):
            path = tmp_path / "holds.db"
            with (SqliteReservations(path) as one, SqliteReservations(path) as two,
                  _pagsmile(sandbox, retry=POLICY) as first,
                  _pagsmile(production, retry=POLICY) as second):
                PayoutGuard(first, reservations=one).check("1.00", "BRL")
                decision = PayoutGuard(second, reservations=two).check("5000.00", "BRL")
        assert (False, ("insufficient_funds",)) == (decision.allowed, decision.codes)

    def test_one_key_still_shares_one_fetch(self, tmp_path: Path) -> None:
        """Fetchers configured alike on one store still share the balance: one request."""
        with LuxCoreEmulator(balances={"ARS": "10000.00"}) as emu:
            path = tmp_path / "holds.db"
            with (SqliteReservations(path) as one, SqliteReservations(path) as two,
                  _luxcore(emu, retry=POLICY) as first, _luxcore(emu, retry=POLICY) as second):
                PayoutGuard(first, reservations=one).check("1.00", "ARS")
                PayoutGuard(second, reservations=two).check("1.00", "ARS")
            assert 1 == emu.balance_requests
