"""The reasons the guard gives itself, built in one place, keyed by their stable codes.

Rule reasons come from the rules' verdicts (``guard/_judge.py``); these are the guard's own:
a balance it could not read, a currency the provider does not hold, a payout id already
taken, a store that did not answer, a rule that raised, concurrent payouts that kept taking
the room, and the ``clock_skew`` warning. Each builder words the message with the numbers a
person needs and calls :func:`reason`, the one constructor.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Literal

from guard._models import Reason, built
from guard._text import printable
from guard.errors import (
    BudgetSpent,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    StoreUnavailable,
)
from guard.stores import Hold

__all__ = [
    "GuardCode",
    "concurrent_claims_reason",
    "credentials_reason",
    "duplicate_reason",
    "not_held_reason",
    "reason",
    "rule_error_reason",
    "skew_reason",
    "store_reason",
    "unavailable_reason",
]

GuardCode = Literal[
    "balance_unavailable", "currency_not_held", "duplicate_payout", "insufficient_funds",
    "rule_error", "clock_skew",
]


def reason(
    *, code: GuardCode, message: str, rule: str = "guard", retryable: bool,
    details: dict[str, Decimal | str],
) -> Reason:
    """Return one of the guard's own reasons (``rule`` is ``"guard"``)."""
    return built(Reason, {"code": code, "message": message, "rule": rule,
                          "retryable": retryable, "details": details})


def concurrent_claims_reason(currency: str, attempts: int) -> Reason:
    """Return the ``insufficient_funds`` reason for room that concurrent payouts kept taking.

    Judged allowed each time, the payout lost the race for the hold *attempts* times: a retry
    soon is likely to succeed or to be judged on the new holds.
    """
    return reason(
        code="insufficient_funds",
        message=(
            f"concurrent payouts kept claiming the {currency} funds this payout was judged "
            f"with ({attempts} attempts); retry"
        ),
        retryable=True, details={},
    )


def unavailable_reason(
    provider: str, currency: str, exc: BaseException, *, allowed: bool = False
) -> Reason:
    """Return the ``balance_unavailable`` reason for a fetch that raised *exc*.

    With *allowed* (``fail_open``) it words the reason as the warning it then is.
    """
    what = type(exc).__name__
    # Only our own errors are known to carry no secrets in their text.
    detail = f": {printable(str(exc), 400)}" if isinstance(exc, ProviderError) else ""
    if isinstance(exc, ProviderAuthError) and exc.credentials_rejected:
        return credentials_reason(provider, currency, detail, allowed=allowed)
    outcome = (
        "allowed without a balance check because fail_open=True" if allowed
        else "the payout was not sent and can be retried later"
    )
    details: dict[str, Decimal | str] = {}
    wait = getattr(exc, "retry_after", None)
    if isinstance(exc, ProviderRateLimited) and wait is not None:
        # Seconds, to the millisecond, rounded up: retrying sooner is refused again.
        details["retry_after"] = Decimal(math.ceil(wait * 1000)).scaleb(-3)
    if isinstance(exc, BudgetSpent):
        details["cause"] = "budget"
    return reason(
        code="balance_unavailable",
        message=(
            f"could not read the {currency} balance from {provider} ({what}{detail}); {outcome}"
        ),
        rule="guard",
        retryable=True,
        details=details,
    )


def credentials_reason(provider: str, currency: str, detail: str, *, allowed: bool) -> Reason:
    """Return the ``balance_unavailable`` reason for credentials the provider rejected.

    Not retryable: the same request fails the same way until someone fixes the credentials,
    so it says so, and says nothing about trying again. ``details["cause"]`` is
    ``"credentials"`` so that alerts can tell it from an outage.
    """
    outcome = (
        "allowed without a balance check because fail_open=True" if allowed
        else "the payout was not sent; fix the credentials (key, permissions, IP allow-list)"
    )
    return reason(
        code="balance_unavailable",
        message=(
            f"{provider} rejected the credentials used to read the {currency} balance"
            f"{detail}; {outcome}"
        ),
        rule="guard",
        retryable=False,
        details={"cause": "credentials"},
    )


def store_reason(currency: str, exc: StoreUnavailable) -> Reason:
    """Return the ``balance_unavailable`` reason for a reservation store that did not answer.

    Without the holds, what is spendable is unknown: the guard fails closed, never open.
    Its details name the store (``{"store": "redis"}``).
    """
    return reason(
        code="balance_unavailable",
        message=(
            f"could not read the holds on the {currency} balance ({exc}); the payout was not "
            f"sent and can be retried later"
        ),
        rule="guard",
        retryable=True,
        details={"store": exc.store},
    )


def rule_error_reason(exc: BaseException) -> Reason:
    """Return the ``rule_error`` reason for a rule that raised *exc* instead of judging.

    Only the exception's class is shown: a rule's own message may carry anything. The log
    event ``payout_guard.rule_error`` has the traceback.
    """
    return reason(
        code="rule_error",
        message=(
            f"a rule raised {type(exc).__name__} instead of judging; the payout was not sent "
            f"(see the payout_guard.rule_error log event)"
        ),
        rule="guard",
        retryable=False,
        details={},
    )


def not_held_reason(provider: str, currency: str, account: str | None) -> Reason:
    """Return the ``currency_not_held`` reason."""
    where = f"{provider} account {account}" if account else provider
    return reason(
        code="currency_not_held",
        message=f"{where} reports no {currency} balance",
        rule="guard",
        retryable=False,
        details={},
    )


def duplicate_reason(payout_id: str, held: Hold) -> Reason:
    """Return the ``duplicate_payout`` reason for a payout id that already has *held*.

    Only a live pending hold is retryable (its payout may still fail and release it); a sent
    or possibly sent payout is never sent again under the same id. The message names the
    provider the hold is at (a payout id is unique across every provider of a store).
    """
    amount = f"{held.held} {held.currency}"
    shown = payout_id[:40]
    provider = held.key.split("|", 1)[0]
    at = f" through {provider}" if provider else ""
    if held.state == "pending":
        message = (
            f"payout id {shown!r} is being sent now{at} ({amount} held by another "
            f"reservation); it is not sent twice at once, retry after that attempt ends"
        )
    elif held.state == "committed":
        message = (
            f"payout id {shown!r} was already sent ({amount}){at}; it is never sent twice"
        )
    else:
        message = (
            f"payout id {shown!r} may already have been sent{at} ({amount}, outcome "
            f"unknown); find out at the provider, then call guard.resolve({shown!r}, sent=...)"
        )
    return reason(
        code="duplicate_payout",
        message=message,
        rule="guard",
        retryable=held.state == "pending",
        details={"state": held.state, "held": held.held, "provider": provider},
    )


def skew_reason(provider: str, skew: float) -> Reason:
    """Return the ``clock_skew`` warning for a balance stamped *skew* seconds in our future.

    The balance was used as of its arrival here; the warning says which clock to check.
    """
    seconds_ahead = Decimal(round(skew)) if skew < 1e9 else Decimal(10**9)
    return reason(
        code="clock_skew",
        message=(
            f"{provider} stamped the balance {seconds_ahead} s ahead of the local clock; it was "
            f"used as of its arrival here (check NTP on this host, or tell the provider)"
        ),
        rule="guard",
        retryable=False,
        details={"skew_seconds": seconds_ahead},
    )
