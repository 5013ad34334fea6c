"""A PayoutGuard on each real fetcher and its emulator: faults deny, a healthy provider allows."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from guard import PayoutGuard
from guard.fetchers import RetryPolicy
from guard.testing.emulators import Fault
from tests.test_fetchers_emulated import PROVIDERS, Emulator, Provider

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
