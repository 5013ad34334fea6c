"""RetryPolicy validation and the retry loop every fetcher runs its attempts in."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator

import pytest
import structlog
import tenacity
from hypothesis import given
from hypothesis import strategies as st

from guard.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers import RetryPolicy
from guard.fetchers._retry import AttemptFailed, budgeted, run_with_retry

FAST = RetryPolicy(attempts=3, deadline=5.0, backoff=0.001, max_backoff=0.002)


def busy(**extra: object) -> AttemptFailed:
    fields: dict[str, object] = {"reason": "http_503", "status": 503, "retryable": True}
    fields.update(extra)
    return AttemptFailed(ProviderUnavailable, "provider busy", **fields)  # type: ignore[arg-type]  # test helper forwards keyword fields


class Script:
    """An attempt function that fails with the given signals, then returns 'ok'."""

    def __init__(self, *failures: AttemptFailed) -> None:
        self.failures: Iterator[AttemptFailed] = iter(failures)
        self.calls = 0
        self.remaining: list[float] = []

    def __call__(self, remaining: float) -> str:
        self.calls += 1
        self.remaining.append(remaining)
        failure = next(self.failures, None)
        if failure is not None:
            raise failure
        return "ok"


def run(script: Callable[[float], str], policy: RetryPolicy = FAST) -> str:
    return run_with_retry(policy, "luxtak", script)


class TestRetryPolicy:
    def test_defaults(self) -> None:
        """The defaults are 3 attempts within 10 seconds, with jitter."""
        policy = RetryPolicy()
        assert (3, 10.0, True) == (policy.attempts, policy.deadline, policy.jitter)

    def test_frozen(self) -> None:
        """A policy is an immutable value."""
        with pytest.raises(dataclasses.FrozenInstanceError):
            FAST.attempts = 5  # type: ignore[misc]  # assigning to a frozen field is the point

    def test_equal_by_value(self) -> None:
        """Two policies with the same fields are equal and hash alike."""
        assert {RetryPolicy(attempts=2)} == {RetryPolicy(attempts=2)}

    def test_keyword_only(self) -> None:
        """Options are keyword-only."""
        with pytest.raises(TypeError):
            RetryPolicy(3)  # type: ignore[call-arg]  # positional use is what is refused

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("attempts", 0), ("attempts", 101), ("attempts", 2.0), ("attempts", True),
            ("deadline", 0), ("deadline", -1), ("deadline", math.inf), ("deadline", math.nan),
            ("deadline", "10"), ("backoff", -0.1), ("max_backoff", math.inf),
            ("jitter", "yes"),
        ],
    )
    def test_bad_values_refused(self, field: str, value: object) -> None:
        """A bad value is a ConfigurationError naming the field, at construction."""
        with pytest.raises(ConfigurationError) as info:
            RetryPolicy(**{field: value})  # type: ignore[arg-type]  # bad types on purpose
        assert field == info.value.path

    def test_max_backoff_below_backoff(self) -> None:
        """max_backoff may not be smaller than backoff."""
        with pytest.raises(ConfigurationError, match="max_backoff"):
            RetryPolicy(backoff=2.0, max_backoff=1.0)

    def test_backoff_doubles_to_the_cap(self) -> None:
        """Without jitter the waits double from backoff and stop at max_backoff."""
        policy = RetryPolicy(backoff=0.5, max_backoff=3.0, jitter=False)
        assert [0.5, 1.0, 2.0, 3.0, 3.0] == [policy.backoff_for(n) for n in range(1, 6)]

    @given(st.integers(1, 200), st.floats(0, 10), st.floats(0, 10))
    def test_jitter_stays_in_range(self, retry: int, backoff: float, extra: float) -> None:
        """A jittered wait lies within [wait / 2, wait] of the un-jittered wait."""
        policy = RetryPolicy(backoff=backoff, max_backoff=backoff + extra)
        base = RetryPolicy(backoff=backoff, max_backoff=backoff + extra, jitter=False)
        full = base.backoff_for(retry)
        assert full / 2 <= policy.backoff_for(retry) <= full


class TestRunWithRetry:
    def test_success_first_time(self) -> None:
        """A first attempt that succeeds is returned, with no retry."""
        script = Script()
        assert ("ok", 1) == (run(script), script.calls)

    def test_retryable_failure_recovers(self) -> None:
        """Retryable failures are retried until an attempt succeeds."""
        script = Script(busy(), busy())
        assert ("ok", 3) == (run(script), script.calls)

    def test_attempts_exhausted(self) -> None:
        """After `attempts` retryable failures the last one is raised, counting the attempts."""
        script = Script(busy(), busy(), busy(), busy())
        with pytest.raises(ProviderUnavailable) as info:
            run(script)
        assert (3, 3, 503, "luxtak") == (
            script.calls, info.value.attempts, info.value.status, info.value.provider
        )

    def test_not_retryable_raised_at_once(self) -> None:
        """A failure not marked retryable is raised after one attempt."""
        script = Script(AttemptFailed(ProviderAuthError, "denied", reason="code_4004003",
                                      status=401, code="4004003"))
        with pytest.raises(ProviderAuthError) as info:
            run(script)
        assert (1, 1, "4004003") == (script.calls, info.value.attempts, info.value.code)

    def test_one_attempt_policy(self) -> None:
        """attempts=1 never retries."""
        script = Script(busy())
        with pytest.raises(ProviderUnavailable):
            run(script, RetryPolicy(attempts=1))
        assert 1 == script.calls

    def test_resign_is_an_extra_attempt(self) -> None:
        """An expired answer is retried once at once, on top of the normal attempts."""
        expired = AttemptFailed(ProviderAuthError, "expired", reason="expired", resign=True)
        script = Script(expired, busy(), busy())
        assert ("ok", 4) == (run(script), script.calls)

    def test_resign_only_once(self) -> None:
        """A second expired answer is raised: re-signing did not help."""
        script = Script(*(AttemptFailed(ProviderAuthError, "expired", reason="expired",
                                        resign=True, status=400) for _ in range(3)))
        with pytest.raises(ProviderAuthError) as info:
            run(script)
        assert (2, 2) == (script.calls, info.value.attempts)

    def test_retry_after_past_deadline_stops(self) -> None:
        """A Retry-After that would pass the deadline stops at once and says so."""
        script = Script(AttemptFailed(ProviderRateLimited, "slow down", reason="rate_limited",
                                      status=429, retryable=True, retry_after=30.0))
        started = time.monotonic()
        with pytest.raises(ProviderRateLimited) as info:
            run(script, RetryPolicy(deadline=1.0))
        assert (1, 30.0) == (script.calls, info.value.retry_after)
        assert "deadline" in str(info.value)
        assert time.monotonic() - started < 1.0

    def test_retry_after_honoured(self) -> None:
        """A short Retry-After is waited before the next attempt."""
        script = Script(AttemptFailed(ProviderRateLimited, "slow down", reason="rate_limited",
                                      status=429, retryable=True, retry_after=0.2))
        started = time.monotonic()
        assert "ok" == run(script)
        assert time.monotonic() - started >= 0.2

    def test_backoff_past_deadline_stops(self) -> None:
        """A backoff wait that would pass the deadline stops the loop early."""
        script = Script(busy(), busy(), busy())
        with pytest.raises(ProviderUnavailable) as info:
            run(script, RetryPolicy(attempts=3, deadline=0.5, backoff=1.0, max_backoff=1.0))
        assert 1 == info.value.attempts

    def test_remaining_time_given_to_attempts(self) -> None:
        """Each attempt learns how much of the deadline is left, and it shrinks."""
        script = Script(busy(), busy())
        run(script)
        assert script.remaining == sorted(script.remaining, reverse=True)
        assert script.remaining[0] <= FAST.deadline

    def test_cause_chained_and_no_tenacity(self) -> None:
        """The final error is chained from the original cause; no tenacity type escapes."""
        cause = ConnectionResetError("reset")
        script = Script(*(busy(cause=cause) for _ in range(3)))
        with pytest.raises(ProviderError) as info:
            run(script)
        assert cause is info.value.__cause__
        assert not isinstance(info.value, tenacity.RetryError)
        assert info.value.__suppress_context__

    def test_response_error_kind_kept(self) -> None:
        """The error type named by the failure is the type raised."""
        script = Script(AttemptFailed(ProviderResponseError, "bad body", reason="bad_body"))
        with pytest.raises(ProviderResponseError):
            run(script)

    def test_retries_logged(self) -> None:
        """Each retry logs payout_guard.fetch_retry with provider, attempt, wait and cause."""
        script = Script(busy(code="5001000"), busy(code="5001000"))
        with structlog.testing.capture_logs() as logs:
            run(script)
        retries = [e for e in logs if e["event"] == "payout_guard.fetch_retry"]
        assert [1, 2] == [e["attempt"] for e in retries]
        assert {("luxtak", "http_503", 503, "5001000")} == {
            (e["provider"], e["reason"], e["status"], e["code"]) for e in retries
        }
        assert all(isinstance(e["wait"], float) for e in retries)


class Budget:
    """A request budget that lets *allowed* requests through, then refuses (wait 42 s)."""

    def __init__(self, allowed: int) -> None:
        self.allowed = allowed
        self.asked = 0

    def __call__(self) -> float:
        self.asked += 1
        if self.allowed:
            self.allowed -= 1
            return 0.0
        return 42.0


class TestBudgetedRetries:
    def test_each_retry_takes_one_request_from_the_budget(self) -> None:
        """Two retries ask the budget twice; the first request is its caller's to pay."""
        budget, script = Budget(5), Script(busy(), busy())
        with budgeted(budget):
            assert "ok" == run(script)
        assert (3, 2) == (script.calls, budget.asked)

    def test_a_refused_retry_is_not_made_and_the_last_error_is_raised(self) -> None:
        """The budget refuses the second retry: two requests, then the 503, at once."""
        budget, script = Budget(1), Script(busy(), busy(), busy())
        started = time.monotonic()
        with budgeted(budget), pytest.raises(ProviderUnavailable) as info:
            run(script)
        assert (2, 2, 503) == (script.calls, info.value.attempts, info.value.status)
        assert "request budget lets the next request through in 42 s" in str(info.value)
        assert time.monotonic() - started < 1.0

    def test_a_refused_resign_is_not_made(self) -> None:
        """The extra re-signed request is a request too: refused, the expiry is raised."""
        expired = AttemptFailed(ProviderAuthError, "expired", reason="expired", resign=True)
        budget, script = Budget(0), Script(expired)
        with budgeted(budget), pytest.raises(ProviderAuthError) as info:
            run(script)
        assert (1, 1, True) == (script.calls, budget.asked, info.value.expired)

    def test_without_a_budget_retries_are_not_counted(self) -> None:
        """Outside budgeted() the loop retries as its policy says."""
        budget, script = Budget(0), Script(busy(), busy())
        with budgeted(budget):
            pass
        assert ("ok", 0) == (run(script), budget.asked)
