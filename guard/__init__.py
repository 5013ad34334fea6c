"""payout-guard: decide, with reasons, whether the money for a payout is really there."""

from guard._models import BalanceSnapshot, Decision, HoldSummary, Mode, Reason
from guard.errors import (
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)

__all__ = [
    "BalanceSnapshot",
    "ConfigurationError",
    "Decision",
    "GuardError",
    "HoldSummary",
    "InvalidPayoutRequest",
    "Mode",
    "PayoutDenied",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderResponseError",
    "ProviderUnavailable",
    "Reason",
]
