"""The built-in rules. Each docstring says exactly when the rule denies.

All amounts are major units at the currency's ISO 4217 exponent. Every rule reports ``cap``
(the largest amount it allows with these facts), from which the guard derives ``max_payable``,
and honours the contract drawn in ``rules._engine``: with given facts it passes exactly the
amounts in ``[floor, cap]``, and reports ``cap=0`` when it denies whatever the amount.

============================  ============================================================
rule                          denies with
============================  ============================================================
:class:`SufficientFunds`      ``insufficient_funds`` (retryable)
:class:`ReserveMargin`        ``reserve_margin`` (retryable)
:class:`FrozenFunds`          ``frozen_funds`` (retryable; not when frozen is unreported)
:class:`CurrencyMinimums`     ``below_minimum_payout``, ``min_remaining_balance`` (retryable)
:class:`MaxPayout`            ``above_maximum_payout``
:class:`MaxBalanceAge`        ``stale_balance`` (retryable)
============================  ============================================================
"""

from __future__ import annotations

from rules._funds import FrozenFunds, ReserveMargin, SufficientFunds
from rules._limits import CurrencyMinimums, MaxBalanceAge, MaxPayout

__all__ = [
    "CurrencyMinimums",
    "FrozenFunds",
    "MaxBalanceAge",
    "MaxPayout",
    "ReserveMargin",
    "SufficientFunds",
]
