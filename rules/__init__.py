"""The pure rule engine of payout-guard: facts in, verdicts out.

No clock, no logging, and this package never imports ``guard``. Its only I/O is
:func:`load` reading a rules file at a path it is given. :func:`register` makes a rule class of
your own loadable from data like a built-in.
"""

from rules._bounds import Clearance, Failures
from rules._describe import describe
from rules._engine import AnyOf, Rule, RuleSet, When, all_of, any_of, when
from rules._errors import ConfigurationError, GuardError
from rules._facts import Facts, Severity, Verdict
from rules._registry import DataRule, register, registered, unregister
from rules.builtin import (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    SufficientFunds,
)
from rules.config import dump, load

__all__ = [
    "AnyOf",
    "Clearance",
    "ConfigurationError",
    "CurrencyMinimums",
    "DataRule",
    "Facts",
    "Failures",
    "FrozenFunds",
    "GuardError",
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
    "describe",
    "dump",
    "load",
    "register",
    "registered",
    "unregister",
    "when",
]
