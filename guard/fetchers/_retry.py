"""How a fetcher retries: the ``RetryPolicy`` value and the loop that applies it (on tenacity).

A fetch is a series of attempts. Each attempt either returns balances or raises
:class:`AttemptFailed`, a private signal that says what went wrong (the ``ProviderError`` type,
message, HTTP status, provider code) and whether it may be retried. The loop

- retries only failures marked retryable, up to ``attempts`` requests;
- waits exponential backoff (``backoff`` doubling up to ``max_backoff``, with jitter), or exactly
  what the provider asked for with ``Retry-After``;
- never sleeps past ``deadline`` (seconds since the first attempt started): if the next wait would
  end at or after the deadline it stops and raises the last error at once;
- allows one immediate *re-sign* retry for an "expired" answer (a fresh timestamp fixes a request
  that was slow to arrive). That retry is extra: it does not use up one of ``attempts``, so at
  most ``attempts + 1`` requests are made, and ``ProviderError.attempts`` counts them all;
- asks the request budget (set with :func:`budgeted`, the guard's ``requests_per_minute``)
  before each request after the first, the first being paid for by whoever started the fetch:
  when the budget refuses, it stops and raises the last error at once, never waiting for it;
- logs ``payout_guard.fetch_retry`` before each retry and raises the final ``ProviderError``
  ``from`` the original cause. tenacity's own exceptions never leave this module.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import structlog
import tenacity

from guard._seconds import seconds
from guard._text import printable
from guard.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
)

__all__ = ["AttemptFailed", "RetryPolicy", "budgeted", "run_with_retry"]

T = TypeVar("T")

_log = structlog.get_logger("payout_guard")

# The budget the retries of a fetch in this context are paid from. A context variable, not an
# argument: fetchers keep the one-method ``BalanceFetcher`` protocol, and the cache that holds
# the budget calls them through it.
_BUDGET: ContextVar[Callable[[], float] | None] = ContextVar("payout_guard_budget", default=None)


@contextmanager
def budgeted(budget: Callable[[], float]) -> Iterator[None]:
    """Pay every retry :func:`run_with_retry` makes inside the block from *budget*.

    Args:
        budget: Takes one request: returns 0.0, or the seconds until one is free (then
            nothing is taken).
    """
    token = _BUDGET.set(budget)
    try:
        yield
    finally:
        _BUDGET.reset(token)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many times, and for how long, a fetcher retries a failed balance request.

    Only failures that can pass on their own are retried: connection errors, timeouts,
    HTTP 429/500/502/503/504 and the providers' "busy" codes. The defaults make at most 3
    requests within 10 seconds.

    Args:
        attempts: Most requests made for one fetch (1 means never retry), 1 to 100.
        deadline: Seconds the whole fetch may take, sleeps and request timeouts included.
        backoff: Seconds to wait before the first retry; doubles for each further retry.
        max_backoff: Upper bound of one backoff wait, in seconds.
        jitter: Randomise each backoff wait within [wait / 2, wait] so that many workers
            that failed together do not retry together.

    Raises:
        ConfigurationError: a value is of the wrong type, not finite, or out of range.
    """

    attempts: int = 3
    deadline: float = 10.0
    backoff: float = 0.2
    max_backoff: float = 2.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise ConfigurationError(
                f"must be a whole number of requests, got {self.attempts!r}", path="attempts"
            )
        if not 1 <= self.attempts <= 100:
            raise ConfigurationError(
                f"must be between 1 and 100, got {self.attempts}", path="attempts"
            )
        # An hour at most: a balance fetch that needs longer is an outage.
        seconds(self.deadline, "deadline", positive=True, most=3600)
        seconds(self.backoff, "backoff", most=3600)
        seconds(self.max_backoff, "max_backoff", most=3600)
        if self.max_backoff < self.backoff:
            raise ConfigurationError(
                f"must be >= backoff ({self.backoff}), got {self.max_backoff}", path="max_backoff"
            )
        if not isinstance(self.jitter, bool):
            raise ConfigurationError(f"must be True or False, got {self.jitter!r}", path="jitter")

    def backoff_for(self, retry_number: int) -> float:
        """Return the seconds to wait before retry number *retry_number* (1 for the first).

        Args:
            retry_number: Which retry this wait precedes, counting from 1.

        Returns:
            ``min(max_backoff, backoff * 2 ** (retry_number - 1))``, jittered when ``jitter``.
        """
        base = min(self.max_backoff, self.backoff * 2.0 ** min(retry_number - 1, 60))
        if self.jitter and base > 0:
            return random.uniform(base / 2, base)  # noqa: S311 - jitter needs no secure random
        return base


class AttemptFailed(Exception):
    """One failed attempt, classified for the retry loop. Never reaches a caller.

    Args:
        kind: The ``ProviderError`` subclass to raise if this is the last attempt.
        message: What went wrong (no credentials).
        reason: Short machine-readable cause for logs (``"http_503"``, ``"timeout"``).
        status: HTTP status of the answer, ``None`` when none arrived.
        code: The provider's own error code, if any.
        retryable: Whether another attempt may succeed.
        resign: Whether this is an "expired" answer that a freshly signed request may fix.
        retry_after: Seconds the provider asked us to wait, when it said.
        cause: The exception behind it, chained with ``from`` on the final error.
    """

    def __init__(
        self,
        kind: type[ProviderError],
        message: str,
        *,
        reason: str,
        status: int | None = None,
        code: str | None = None,
        retryable: bool = False,
        resign: bool = False,
        retry_after: float | None = None,
        cause: BaseException | None = None,
    ) -> None:
        # Only the reason goes into args: the message is redacted later and must not linger.
        super().__init__(reason)
        self.kind = kind
        self.message = message
        self.reason = reason
        self.status = status
        self.code = code
        self.retryable = retryable
        self.resign = resign
        self.retry_after = retry_after
        self.cause = cause


class _Run:
    """The state of one fetch's retry loop, read by the tenacity callbacks."""

    def __init__(self, policy: RetryPolicy, provider: str) -> None:
        self.policy = policy
        self.provider = provider
        self.started = time.monotonic()
        self.requests = 0
        self.resigns = 0
        self.stop_note = ""
        self.last: AttemptFailed | None = None
        self.refused = False

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def remaining(self) -> float:
        return self.policy.deadline - self.elapsed()

    @staticmethod
    def failure(state: tenacity.RetryCallState) -> AttemptFailed | None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        return exc if isinstance(exc, AttemptFailed) else None

    def should_retry(self, state: tenacity.RetryCallState) -> bool:
        failure = self.last = self.failure(state)
        if failure is None:
            return False
        if failure.resign:
            if self.resigns:
                return False
            self.resigns += 1
            return True
        return failure.retryable

    def wait(self, state: tenacity.RetryCallState) -> float:
        failure = self.failure(state)
        if failure is None or failure.resign:
            return 0.0
        if failure.retry_after is not None:
            return failure.retry_after
        return self.policy.backoff_for(state.attempt_number - self.resigns)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        failure = self.failure(state)
        counted = state.attempt_number - self.resigns
        if failure is not None and not failure.resign and counted >= self.policy.attempts:
            self.stop_note = ""
            return True
        if self.elapsed() + state.upcoming_sleep >= self.policy.deadline:
            asked = failure is not None and failure.retry_after is not None
            wait = f"waiting {state.upcoming_sleep:g} s {'as asked' if asked else 'to retry'}"
            self.stop_note = (
                f"; gave up: {wait} would pass the {self.policy.deadline:g} s retry deadline"
            )
            return True
        return False

    def refuse(self, wait: float) -> AttemptFailed:
        """Return the last failure again, final: the budget refused the retry it allowed."""
        last = self.last
        if last is None:  # pragma: no cover - only a retry (after a failure) asks the budget
            raise RuntimeError("the budget is asked before retries only")
        self.last, self.refused = None, True
        self.stop_note = (
            f"; gave up: the request budget lets the next request through in {wait:.3g} s"
        )
        final = AttemptFailed(
            last.kind, last.message, reason=last.reason, status=last.status, code=last.code,
            retry_after=last.retry_after, cause=last.cause,
        )
        # Its traceback holds the attempt's frames (the request, its headers): let it go.
        last.__traceback__ = None
        return final

    def log_retry(self, state: tenacity.RetryCallState) -> None:
        failure = self.failure(state)
        if failure is None:  # pragma: no cover - should_retry only retries AttemptFailed
            return
        _log.warning(
            "payout_guard.fetch_retry",
            provider=self.provider,
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
            reason=failure.reason,
            status=failure.status,
            code=None if failure.code is None else printable(failure.code, 60),
        )

    def final_error(self, failure: AttemptFailed) -> ProviderError:
        message = failure.message
        if failure.retryable or failure.resign or self.refused:
            message += self.stop_note
        error = failure.kind(
            message,
            provider=self.provider,
            status=failure.status,
            code=None if failure.code is None else printable(failure.code, 60),
            attempts=self.requests,
        )
        if isinstance(error, ProviderRateLimited):
            error.retry_after = failure.retry_after
        if isinstance(error, ProviderAuthError) and failure.reason == "expired":
            error.expired = True
        return error


def run_with_retry(
    policy: RetryPolicy, provider: str, attempt: Callable[[float], T]
) -> T:
    """Call *attempt* until it returns, retrying as *policy* says; raise ``ProviderError``.

    Inside :func:`budgeted`, each retry first takes a request from the budget; a refusal
    ends the loop with the last failure.

    Args:
        policy: The retry policy.
        provider: Provider name for logs and errors.
        attempt: Makes one request. Gets the seconds left before the deadline (to bound its
            timeouts) and returns the result or raises :class:`AttemptFailed`.

    Returns:
        What the first successful attempt returned.

    Raises:
        ProviderError: the subclass named by the last failure, with ``attempts`` set to the
            number of requests made, chained ``from`` the original cause.
    """
    run = _Run(policy, provider)
    budget = _BUDGET.get()

    def one_attempt() -> T:
        if run.requests and budget is not None:
            wait = budget()
            if wait:
                raise run.refuse(wait)
        run.requests += 1
        return attempt(run.remaining())

    retrying = tenacity.Retrying(
        retry=run.should_retry,
        wait=run.wait,
        stop=run.stop,
        before_sleep=run.log_retry,
        sleep=time.sleep,
        reraise=True,
    )
    try:
        return retrying(one_attempt)
    except AttemptFailed as failure:
        error, cause = run.final_error(failure), failure.cause
        # Its traceback holds the attempt's frames (the request, its headers): let it go.
        failure.__traceback__ = None
        del failure
    # Raised outside the except block so that the private signal is not left as __context__.
    raise error from cause
