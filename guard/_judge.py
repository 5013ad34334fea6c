"""Turning a verdict into a ``Decision``: reasons, max payable, and the guard's own denials."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from pydantic import BaseModel

from guard._models import BalanceSnapshot, Decision, HoldSummary, Mode, Reason
from guard._request import Request
from guard._text import printable
from guard.errors import ProviderAuthError, ProviderError, StoreUnavailable
from guard.stores import Hold
from rules import Clearance, Verdict
from rules.money import MONEY_CONTEXT, SUBTRACT, smallest_unit, zero

__all__ = [
    "denial",
    "from_clearance",
    "from_verdict",
    "log_decision",
    "max_payable_of",
    "new_decision_id",
]

_ZERO = Decimal(0)


def new_decision_id() -> str:
    """Return a random 128-bit id as 32 hex digits.

    Not a secret, so no system call per decision: ``random`` is reseeded in every forked
    child, so ids stay unique across worker processes.
    """
    # The bytes' hex, not a 032x format: the same 32 digits in half the time.
    return random.getrandbits(128).to_bytes(16, "big").hex()


def _reason(verdict: Verdict) -> Reason:
    return _trusted(Reason, _REASON_FIELDS, {
        "code": verdict.code,
        "message": verdict.message,
        "rule": verdict.rule,
        "retryable": verdict.retryable,
        "details": dict(verdict.details),
    })


def max_payable_of(floor: Decimal | None, cap: Decimal | None, currency: str) -> Decimal:
    """Return the largest amount rules bounded by *floor* and *cap* allow; 0 when none is.

    *floor* and *cap* are on the currency's grid, as a ``RuleSet`` reports them.
    """
    if cap is not None and cap > 0 and (floor is None or cap >= floor):
        return cap
    return zero(currency)


def _scan(verdict: Verdict) -> tuple[list[Verdict], Decimal]:
    """Return the warning leaves of *verdict* (in order) and the largest reserve reported."""
    warnings: list[Verdict] = []
    largest = _ZERO
    pending = [verdict]
    while pending:
        current = pending.pop()
        if current.children:
            pending.extend(reversed(current.children))
            continue
        if not current.passed and current.severity == "warn":
            warnings.append(current)
        reserve = current.details.get("reserve")
        if reserve is not None and reserve > largest:
            largest = reserve
    return warnings, largest


# The slots every pydantic model has, set directly: what model_construct sets, minus its loop.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
_DECISION_FIELDS = frozenset(Decision.model_fields)
_REASON_FIELDS = frozenset(Reason.model_fields)
ModelT = TypeVar("ModelT", bound=BaseModel)


def _trusted(cls: type[ModelT], fields: frozenset[str], values: dict[str, Any]) -> ModelT:
    """Return a *cls* from trusted, complete *values*, skipping validation.

    What ``model_construct`` does for a model without extras or private attributes, without
    its generic per-field loop: a tenth of its cost, on the hot path of every check. Every
    field must be given; the decision tests round-trip these decisions through JSON.
    """
    model = object.__new__(cls)
    _SET_DICT(model, values)
    _SET_FIELDS_SET(model, set(fields))
    _SET_EXTRA(model, None)
    _SET_PRIVATE(model, None)
    return model


def _decision(values: dict[str, Any]) -> Decision:
    """Return a decision from trusted, complete *values* (see :func:`_trusted`)."""
    return _trusted(Decision, _DECISION_FIELDS, values)


def _allowed_values(  # noqa: PLR0917 - positional: the hot path of every check
    request: Request,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
    reserve: Decimal,
    max_payable: Decimal,
) -> dict[str, Any]:
    """Return the fields of an allowed decision without reasons, warnings or holds."""
    amount, currency, fee, account, payout_id = request
    reserved = reserved.quantize(smallest_unit(currency), None, MONEY_CONTEXT)
    return {
        "decision_id": random.getrandbits(128).to_bytes(16, "big").hex(),  # new_decision_id()
        "allowed": True,
        "mode": mode,
        "amount": amount,
        "currency": currency,
        "fee": fee,
        "provider": provider,
        "account": account,
        "payout_id": payout_id,
        "reasons": (),
        "warnings": (),
        "balance": balance,
        "reserved": reserved,
        "reserve": reserve,
        "spendable": SUBTRACT(balance.available, reserved),
        "max_payable": max_payable,
        "holds": (),
        "more_holds": False,
        "evaluated_at": datetime.fromtimestamp(now, UTC),
    }


def from_clearance(
    request: Request,
    clearance: Clearance,
    *,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
) -> Decision:
    """Return the decision for *request*, which every rule passed without a warning."""
    floor, cap, reserve = clearance
    max_payable = max_payable_of(floor, cap, request.currency)
    return _trusted(Decision, _DECISION_FIELDS, _allowed_values(
        request, mode, provider, balance, reserved, now, reserve, max_payable
    ))


def from_verdict(
    request: Request,
    verdict: Verdict,
    *,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
    holds: tuple[HoldSummary, ...] = (),
    more_holds: bool = False,
) -> Decision:
    """Return the decision for *request* judged by *verdict*."""
    warned, reserve = _scan(verdict)
    max_payable = max_payable_of(verdict.floor, verdict.cap, request.currency)
    values = _allowed_values(
        request, mode, provider, balance, reserved, now, reserve, max_payable
    )
    if verdict.denies:
        values["allowed"] = False
        values["reasons"] = tuple(_reason(v) for v in verdict.denials())
    values["warnings"] = tuple(_reason(v) for v in warned)
    values["holds"] = holds
    values["more_holds"] = more_holds
    return _decision(values)


def _every_level(level: int) -> bool:  # noqa: ARG001 - is_enabled_for's signature
    """Say yes: a logger that cannot tell its level gets every event."""
    return True


def log_decision(log: Any, decision: Decision) -> None:
    """Log ``payout_guard.decision`` (and ``would_deny`` for a dry-run denial).

    The fields are built only for an event the logger's level lets through
    (``is_enabled_for``): a production logger filtering at WARNING costs an allowed check no
    field building. A logger that cannot tell its level gets every event.
    """
    enabled = getattr(log, "is_enabled_for", _every_level)
    would_deny = not decision.allowed and decision.mode == "dry_run"
    info = enabled(logging.INFO)
    if not info and not (would_deny and enabled(logging.WARNING)):
        return
    fields = decision.log_fields()
    if info:
        log.info("payout_guard.decision", **fields)
    if would_deny:
        log.warning("payout_guard.would_deny", **fields)


def denial(
    request: Request,
    reason: Reason,
    *,
    mode: Mode,
    provider: str,
    now: float,
    allowed: bool = False,
    balance: BalanceSnapshot | None = None,
) -> Decision:
    """Return a decision for a denial the guard itself makes (no rule was judged).

    With ``allowed=True`` (``fail_open``), *reason* becomes a warning instead.
    """
    none = zero(request.currency)
    return Decision.model_construct(
        decision_id=new_decision_id(),
        allowed=allowed,
        mode=mode,
        amount=request.amount,
        currency=request.currency,
        fee=request.fee,
        provider=provider,
        account=request.account,
        payout_id=request.payout_id,
        reasons=() if allowed else (reason,),
        warnings=(reason,) if allowed else (),
        balance=balance,
        reserved=none,
        reserve=_ZERO,
        spendable=none if balance is None else balance.available,
        max_payable=none,
        holds=(),
        more_holds=False,
        evaluated_at=datetime.fromtimestamp(now, UTC),
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
    return Reason.model_construct(
        code="balance_unavailable",
        message=(
            f"could not read the {currency} balance from {provider} ({what}{detail}); {outcome}"
        ),
        rule="guard",
        retryable=True,
        details={},
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
    return Reason.model_construct(
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
    """
    return Reason.model_construct(
        code="balance_unavailable",
        message=(
            f"could not read the holds on the {currency} balance ({exc}); the payout was not "
            f"sent and can be retried later"
        ),
        rule="guard",
        retryable=True,
        details={},
    )


def rule_error_reason(exc: BaseException) -> Reason:
    """Return the ``rule_error`` reason for a rule that raised *exc* instead of judging.

    Only the exception's class is shown: a rule's own message may carry anything. The log
    event ``payout_guard.rule_error`` has the traceback.
    """
    return Reason.model_construct(
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
    return Reason.model_construct(
        code="currency_not_held",
        message=f"{where} reports no {currency} balance",
        rule="guard",
        retryable=False,
        details={},
    )


def duplicate_reason(payout_id: str, held: Hold) -> Reason:
    """Return the ``duplicate_payout`` reason for a payout id that already has *held*.

    Only a live pending hold is retryable (its payout may still fail and release it); a sent
    or possibly sent payout is never sent again under the same id.
    """
    amount = f"{held.held} {held.currency}"
    shown = payout_id[:40]
    if held.state == "pending":
        message = (
            f"payout id {shown!r} is being sent now ({amount} held by another reservation); "
            f"it is not sent twice at once, retry after that attempt ends"
        )
    elif held.state == "committed":
        message = f"payout id {shown!r} was already sent ({amount}); it is never sent twice"
    else:
        message = (
            f"payout id {shown!r} may already have been sent ({amount}, outcome unknown); "
            f"find out at the provider, then call guard.resolve({shown!r}, sent=...)"
        )
    return Reason.model_construct(
        code="duplicate_payout",
        message=message,
        rule="guard",
        retryable=held.state == "pending",
        details={"state": held.state, "held": held.held},
    )


def skew_reason(provider: str, skew: float) -> Reason:
    """Return the ``clock_skew`` warning for a balance stamped *skew* seconds in our future.

    The balance was used as of its arrival here; the warning says which clock to check.
    """
    seconds_ahead = Decimal(round(skew)) if skew < 1e9 else Decimal(10**9)
    return Reason.model_construct(
        code="clock_skew",
        message=(
            f"{provider} stamped the balance {seconds_ahead} s ahead of the local clock; it was "
            f"used as of its arrival here (check NTP on this host, or tell the provider)"
        ),
        rule="guard",
        retryable=False,
        details={"skew_seconds": seconds_ahead},
    )
