"""The exception tree of payout-guard. Every error raised on purpose is a ``GuardError``.

::

    GuardError
     +-- InvalidPayoutRequest (also ValueError)   bad amount, currency, fee or payout id
     +-- ConfigurationError (also ValueError)     bad rule, guard or provider configuration
     +-- PayoutDenied                             .decision: raised only when asked to
     +-- PayoutNotSent                            you raise it: the provider refused, no money left
     +-- PayoutOutcomeUnknown                     you raise it: the money may or may not have left
     +-- StoreUnavailable                         .store: the reservation store did not answer
     +-- ProviderError                            .provider .status .code .attempts
          +-- ProviderAuthError                   credentials, signature, permission, IP list
          +-- ProviderRateLimited                 HTTP 429 / provider "too many requests"
          |    +-- BudgetSpent                    our own requests_per_minute: nothing sent
          +-- ProviderUnavailable                 network failure, timeout, 5xx, maintenance
          +-- ProviderResponseError               a body we cannot trust: malformed, wrong types

``requests`` and ``tenacity`` exceptions never reach a caller; fetchers raise these ``from``
the original. Messages never contain credentials.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rules import ConfigurationError, GuardError

if TYPE_CHECKING:
    from guard._models import Decision

__all__ = [
    "BudgetSpent",
    "ConfigurationError",
    "GuardError",
    "InvalidPayoutRequest",
    "PayoutDenied",
    "PayoutNotSent",
    "PayoutOutcomeUnknown",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderResponseError",
    "ProviderUnavailable",
    "StoreUnavailable",
]


class InvalidPayoutRequest(GuardError, ValueError):
    """The payout request itself is malformed (amount, currency, fee, payout id)."""


class PayoutDenied(GuardError):
    """The guard denied a payout; raised by ``protect``, ``reserve`` and ``raise_for_denial``.

    Attributes:
        decision: The denial, with its reasons.
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        codes = ", ".join(r.code for r in decision.reasons) or "denied"
        super().__init__(
            f"payout of {decision.amount} {decision.currency} denied ({codes}); "
            f"max payable now {decision.max_payable} {decision.currency}"
        )


    def __reduce__(self) -> tuple[object, ...]:
        # The default pickling would call PayoutDenied(message): a worker's denial must reach
        # the parent process with its decision.
        return (type(self), (self.decision,))


class PayoutNotSent(GuardError):
    """Raise it in a guarded payout when the provider refused: the money did not leave.

    Leaving ``with guard.reserve(...)`` (or a ``protect``-ed function) with it releases the
    hold, whatever ``uncertain_on`` says, so the funds are free for other payouts.
    """


class PayoutOutcomeUnknown(GuardError):
    """Raise it in a guarded payout when you cannot tell whether the money left.

    Leaving ``with guard.reserve(...)`` (or a ``protect``-ed function) with it marks the hold
    ``uncertain``: it keeps counting and its payout id is not sent again until
    ``guard.resolve(payout_id, sent=...)`` says what happened (or ``uncertain_ttl`` passes).
    """


class StoreUnavailable(GuardError):
    """A reservation store could not answer: locked past its timeout, unreachable, closed.

    Nothing was decided, so no payout may rely on it: the guard denies with
    ``balance_unavailable`` (retryable), as for a provider outage.

    Attributes:
        store: Which store failed (``"sqlite"``, ``"redis"``).
    """

    def __init__(self, message: str, *, store: str) -> None:
        self.store = store
        self.message = message
        super().__init__(f"{store} reservation store: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        # The keyword-only field would be lost by default pickling (multiprocessing).
        return (_rebuild_store_error, (type(self), self.message, self.store))


def _rebuild_store_error(
    cls: type[StoreUnavailable], message: str, store: str
) -> StoreUnavailable:
    return cls(message, store=store)


class ProviderError(GuardError):
    """A provider could not give a balance we can trust.

    Attributes:
        provider: Provider name (``"luxtak"``, ``"luxcore"``, ``"pagsmile"``, ...).
        status: HTTP status of the last response, or ``None`` when none arrived.
        code: The provider's own error code (``"4004003"``, ``"INVALID_API_KEY"``), or ``None``.
        attempts: How many requests were made before giving up.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.provider = provider
        self.status = status
        self.code = code
        self.attempts = attempts
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"{self.provider}: {self.message}"]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        parts.append(f"after {self.attempts} attempt{'s' if self.attempts != 1 else ''}")
        return ", ".join(parts) if len(parts) > 1 else parts[0]

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only fields would be lost by the default pickling (multiprocessing); the
        # instance dict carries them, and subclass fields such as retry_after, across.
        return (_rebuild, (type(self), self.message, self.provider), dict(self.__dict__))


def _rebuild(cls: type[ProviderError], message: str, provider: str) -> ProviderError:
    return cls(message, provider=provider)


class ProviderAuthError(ProviderError):
    """The provider refused our credentials, signature, permissions or IP address.

    Attributes:
        expired: The provider refused the request as expired (its timestamp too old for the
            provider's clock), not the credentials themselves: a clock or a slow network,
            which may pass, rather than a key someone must fix.
    """

    expired: bool = False

    @property
    def credentials_rejected(self) -> bool:
        """Return whether the credentials themselves were refused (not an expired request)."""
        return not self.expired


class ProviderRateLimited(ProviderError):
    """The provider said we are sending too many requests.

    Attributes:
        retry_after: Seconds the provider asked us to wait, when it said.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        code: str | None = None,
        attempts: int = 1,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, code=code, attempts=attempts)
        self.retry_after = retry_after


class BudgetSpent(ProviderRateLimited):
    """The guard's own request budget for the provider key is spent: no request was sent.

    Raised by the balance cache (never by the provider) when ``requests_per_minute`` allows no
    request now and no balance young enough to use is at hand. ``retry_after`` says when the
    budget lets one through.
    """


class ProviderUnavailable(ProviderError):
    """The provider could not be reached or failed on its side (timeouts, 5xx)."""


class ProviderResponseError(ProviderError):
    """The provider answered with a body we cannot trust (malformed, wrong types, sums off)."""
