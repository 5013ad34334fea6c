"""payout-guard: decide, with reasons, whether the money for a payout is really there."""

from guard._async import AsyncPayoutGuard, Reserving
from guard._clock import Clock, Clocks
from guard._config import load_config
from guard._config_schema import GuardConfig
from guard._health import Health, ProviderHealth, StoreHealth
from guard._models import BalanceSnapshot, Candidate, Decision, HoldSummary, Mode, Reason
from guard._protect import Decorator
from guard._records import VERSION as _VERSION
from guard._records import (
    DecisionLog,
    DecisionRecord,
    JsonLinesDecisionLog,
    SqliteDecisionLog,
    read_decisions,
    rules_fingerprint,
)
from guard._reservation import AsyncReservation, Reservation
from guard._sync import PayoutGuard
from guard.errors import (
    BudgetSpent,
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
    "AsyncPayoutGuard",
    "AsyncReservation",
    "BalanceSnapshot",
    "BudgetSpent",
    "Candidate",
    "Clock",
    "Clocks",
    "ConfigurationError",
    "Decision",
    "DecisionLog",
    "DecisionRecord",
    "Decorator",
    "GuardConfig",
    "GuardError",
    "Health",
    "HoldSummary",
    "InvalidPayoutRequest",
    "JsonLinesDecisionLog",
    "Mode",
    "PayoutDenied",
    "PayoutGuard",
    "PayoutNotSent",
    "PayoutOutcomeUnknown",
    "ProviderAuthError",
    "ProviderError",
    "ProviderHealth",
    "ProviderRateLimited",
    "ProviderResponseError",
    "ProviderUnavailable",
    "Reason",
    "Reservation",
    "Reserving",
    "SqliteDecisionLog",
    "StoreHealth",
    "StoreUnavailable",
    "load_config",
    "read_decisions",
    "rules_fingerprint",
]

__version__: str = _VERSION
"""The installed payout-guard version (what decision records carry)."""
