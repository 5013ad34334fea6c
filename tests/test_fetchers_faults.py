"""The fault matrix: every emulator fault, per fetcher: retried or not, attempts, final outcome.

Policies here use tiny backoffs; timing assertions are generous bounds ("the deadline was
respected"), never performance claims.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from guard.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers import RetryPolicy
from guard.testing.emulators import Fault, LuxtakEmulator
from tests.test_fetchers_emulated import FAST, PROVIDERS, Emulator, Provider

SLACK = 1.5  # seconds of grace on every deadline bound (loaded CI machines are slow)
QUICK_TIMEOUT = (1.0, 0.2)  # the slow fault (1 s) outlasts the 0.2 s read timeout

# fault -> (retried?, error when every attempt suffers it, requests the emulator then sees)
MATRIX: dict[Fault, tuple[bool, type[ProviderError], int]] = {
    Fault.HTTP_500: (True, ProviderUnavailable, 3),
    Fault.HTTP_502: (True, ProviderUnavailable, 3),
    Fault.HTTP_503: (True, ProviderUnavailable, 3),
    Fault.RATE_LIMIT_NO_RETRY_AFTER: (True, ProviderRateLimited, 3),
    Fault.SLOW: (True, ProviderUnavailable, 3),
    Fault.DROP: (True, ProviderUnavailable, 3),
    Fault.MALFORMED_JSON: (False, ProviderResponseError, 1),
    Fault.HTML_ERROR: (True, ProviderUnavailable, 3),
    Fault.WRONG_TYPES: (False, ProviderResponseError, 1),
    Fault.PROVIDER_BUSY: (True, ProviderUnavailable, 3),
}
CASES = [(name, fault) for name in sorted(PROVIDERS) for fault in MATRIX]


@pytest.fixture
def running(request: pytest.FixtureRequest) -> Iterator[tuple[Provider, Emulator]]:
    provider = PROVIDERS[request.param]
    with provider.emulator() as emu:
        emu.slow_seconds = 1.0
        yield provider, emu


def ids(case: tuple[str, Fault]) -> str:
    return f"{case[0]}-{case[1].value}"


@pytest.mark.parametrize(("running", "fault"), CASES, indirect=["running"],
                         ids=[ids(c) for c in CASES])
class TestFaultMatrix:
    def test_persistent(self, running: tuple[Provider, Emulator], fault: Fault) -> None:
        """A fault on every attempt ends in the expected error after the expected requests."""
        provider, emu = running
        _, kind, seen = MATRIX[fault]
        emu.fail_next(fault, times=3)
        with provider.fetcher(emu, timeout=QUICK_TIMEOUT) as fetcher, pytest.raises(
            ProviderError
        ) as info:
            fetcher.fetch(provider.currency)
        assert (kind, seen, seen) == (type(info.value), info.value.attempts, emu.balance_requests)
        assert provider.name == info.value.provider

    def test_transient(self, running: tuple[Provider, Emulator], fault: Fault) -> None:
        """A fault on one attempt: retried faults recover on the second, others fail at once."""
        provider, emu = running
        retried, kind, _ = MATRIX[fault]
        emu.fail_next(fault, times=1)
        with provider.fetcher(emu, timeout=QUICK_TIMEOUT) as fetcher:
            if retried:
                [snapshot] = fetcher.fetch(provider.currency)
                assert (provider.expected[provider.currency], 2) == (
                    snapshot.available, emu.balance_requests)
            else:
                with pytest.raises(kind):
                    fetcher.fetch(provider.currency)
                assert 1 == emu.balance_requests


@pytest.mark.parametrize("running", sorted(PROVIDERS), indirect=True)
class TestRateLimit:
    def test_retry_after_waited_then_recovers(self, running: tuple[Provider, Emulator]) -> None:
        """429 with Retry-After: 1 is waited out (about a second), then the retry succeeds."""
        provider, emu = running
        emu.fail_next(Fault.RATE_LIMIT)
        started = time.monotonic()
        with provider.fetcher(emu) as fetcher:
            [snapshot] = fetcher.fetch(provider.currency)
        elapsed = time.monotonic() - started
        assert (provider.currency, 2) == (snapshot.currency, emu.balance_requests)
        assert elapsed >= 1.0

    def test_retry_after_past_deadline(self, running: tuple[Provider, Emulator]) -> None:
        """When Retry-After would pass the deadline: stop at once, rate limited, retry_after set."""
        provider, emu = running
        emu.fail_next(Fault.RATE_LIMIT, times=3)
        policy = RetryPolicy(attempts=3, deadline=0.5, backoff=0.001, max_backoff=0.002)
        started = time.monotonic()
        with provider.fetcher(emu, retry=policy) as fetcher, pytest.raises(
            ProviderRateLimited
        ) as info:
            fetcher.fetch(provider.currency)
        assert (1, 1.0, 429, 1) == (info.value.attempts, info.value.retry_after,
                                    info.value.status, emu.balance_requests)
        assert time.monotonic() - started < policy.deadline + SLACK


@pytest.mark.parametrize("running", sorted(PROVIDERS), indirect=True)
class TestDeadline:
    def test_slow_answer_cut_by_deadline(self, running: tuple[Provider, Emulator]) -> None:
        """A read timeout longer than the deadline is cut to the deadline; no retry fits."""
        provider, emu = running
        emu.slow_seconds = 3.0
        emu.fail_next(Fault.SLOW, times=3)
        policy = RetryPolicy(attempts=3, deadline=0.5, backoff=0.001, max_backoff=0.002)
        started = time.monotonic()
        with provider.fetcher(emu, retry=policy, timeout=(1.0, 5.0)) as fetcher, pytest.raises(
            ProviderUnavailable
        ):
            fetcher.fetch(provider.currency)
        assert time.monotonic() - started < policy.deadline + SLACK

    def test_backoff_bounded_by_deadline(self, running: tuple[Provider, Emulator]) -> None:
        """Backoff waits that would pass the deadline are not slept: the error comes early."""
        provider, emu = running
        emu.fail_next(Fault.HTTP_503, times=5)
        policy = RetryPolicy(attempts=5, deadline=1.0, backoff=0.4, max_backoff=5.0,
                             jitter=False)
        started = time.monotonic()
        with provider.fetcher(emu, retry=policy) as fetcher, pytest.raises(
            ProviderUnavailable
        ) as info:
            fetcher.fetch(provider.currency)
        assert time.monotonic() - started < policy.deadline + SLACK
        assert info.value.attempts < 5
        assert "deadline" in str(info.value)


class TestLuxtakExpired:
    def test_expired_once_recovers(self) -> None:
        """An 'expired' answer is re-signed and retried once: success on the second request."""
        with LuxtakEmulator() as emu, PROVIDERS["luxtak"].fetcher(emu) as fetcher:
            emu.fail_next(Fault.EXPIRED)
            assert fetcher.fetch("BRL")
            assert 2 == emu.balance_requests

    def test_expired_twice_is_auth_error(self) -> None:
        """A second 'expired' is not retried again: ProviderAuthError after two requests."""
        with LuxtakEmulator() as emu, PROVIDERS["luxtak"].fetcher(emu) as fetcher:
            emu.fail_next(Fault.EXPIRED, times=3)
            with pytest.raises(ProviderAuthError) as info:
                fetcher.fetch("BRL")
        assert (2, 2, "4001000") == (info.value.attempts, emu.balance_requests, info.value.code)

    def test_resign_does_not_use_up_attempts(self) -> None:
        """An expiry plus two 503s with attempts=3: the third normal attempt still runs and wins."""
        with LuxtakEmulator() as emu, PROVIDERS["luxtak"].fetcher(emu, retry=FAST) as fetcher:
            emu.fail_next(Fault.EXPIRED)
            emu.fail_next(Fault.HTTP_503, times=2)
            assert fetcher.fetch("BRL")
            assert 4 == emu.balance_requests
