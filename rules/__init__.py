"""The pure rule engine of payout-guard: facts in, verdicts out.

No I/O, no clock, no logging; this package never imports ``guard``.
"""

from rules._engine import AnyOf, Rule, RuleSet, When, all_of, any_of, when
from rules._errors import ConfigurationError
from rules._facts import Facts, Severity, Verdict
from rules.builtin import (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    SufficientFunds,
)

__all__ = [
    "AnyOf",
    "ConfigurationError",
    "CurrencyMinimums",
    "Facts",
    "FrozenFunds",
    "MaxBalanceAge",
    "MaxPayout",
    "ReserveMargin",
    "Rule",
    "RuleSet",
    "Severity",
    "SufficientFunds",
    "Verdict",
    "When",
    "all_of",
    "any_of",
    "when",
]
