"""payout-guard: decide, with reasons, whether the money for a payout is really there."""

from guard._config import load_config
from guard._config_schema import GuardConfig
from guard._guard import Clock, PayoutGuard
from guard._models import BalanceSnapshot, Decision, HoldSummary, Mode, Reason
from guard._protect import Decorator
from guard._reservation import Reservation
from guard.errors import (
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    PayoutDenied,
    PayoutNotSent,
    PayoutOutcomeUnknown,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
    StoreUnavailable,
)

__all__ = [
    "BalanceSnapshot",
    "Clock",
    "ConfigurationError",
    "Decision",
    "Decorator",
    "GuardConfig",
    "GuardError",
    "HoldSummary",
    "InvalidPayoutRequest",
    "Mode",
    "PayoutDenied",
    "PayoutGuard",
    "PayoutNotSent",
    "PayoutOutcomeUnknown",
    "ProviderAuthError",
    "ProviderError",
    "ProviderRateLimited",
    "ProviderResponseError",
    "ProviderUnavailable",
    "Reason",
    "Reservation",
    "StoreUnavailable",
    "load_config",
]
