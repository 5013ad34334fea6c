"""Turning a verdict into a ``Decision``: reasons, max payable, and the guard's own denials."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from guard._models import BalanceSnapshot, Decision, HoldSummary, Mode, Reason, built
from guard._request import Request
from rules import Clearance, Failures, Verdict
from rules.money import MONEY_CONTEXT, SUBTRACT, smallest_unit, zero

__all__ = [
    "JudgedOn",
    "cached_logger",
    "denial",
    "failures_of",
    "from_clearance",
    "from_failures",
    "log_decision",
    "log_resolved",
    "max_payable_of",
    "new_decision_id",
]

_ZERO = Decimal(0)


class JudgedOn(NamedTuple):
    """The facts beside the balance a decision was judged on (see ``Decision``).

    Attributes:
        age: Seconds old the balance was; ``source``: ``"fetched"`` or ``"cached"``;
        own: Our own sent payouts taken to explain frozen funds.
    """

    age: float
    source: Literal["fetched", "cached"]
    own: Decimal


_NOT_JUDGED: dict[str, Any] = {"balance_age": None, "balance_source": None, "own_in_flight": _ZERO}
# An allowed decision's fields in Decision's order; those set per decision are None here.
_ALLOWED: dict[str, Any] = dict.fromkeys(Decision.model_fields) | {
    "allowed": True, "reasons": (), "warnings": (), "holds": (), "more_holds": False,
    "candidates": (),
}


def new_decision_id() -> str:
    """Return a random 128-bit id as 32 hex digits.

    Not a secret, so no system call per decision: ``random`` is reseeded in every forked
    child, so ids stay unique across worker processes.
    """
    # The bytes' hex, not a 032x format: the same 32 digits in half the time.
    return random.getrandbits(128).to_bytes(16, "big").hex()


def _reason(verdict: Verdict) -> Reason:
    return built(Reason, {
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


def failures_of(verdict: Verdict) -> Failures:
    """Return what every rule's *verdict* reports, as ``RuleSet.failures`` would.

    Its bounds, the largest reserve any of its leaves reports, and the verdict itself (its
    denials and warnings are its leaves').
    """
    largest = _ZERO
    pending = [verdict]
    while pending:
        current = pending.pop()
        if current.children:
            pending.extend(current.children)
            continue
        reserve = current.details.get("reserve")
        if reserve is not None and reserve > largest:
            largest = reserve
    return Failures(Clearance(verdict.floor, verdict.cap, largest), (verdict,))


def _decision(values: dict[str, Any]) -> Decision:
    """Return a decision from trusted, complete *values* (see ``guard._models.built``)."""
    return built(Decision, values)


def _allowed_values(  # noqa: PLR0917 - positional: the hot path of every check
    request: Request,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
    reserve: Decimal,
    max_payable: Decimal,
    judged: JudgedOn,
) -> dict[str, Any]:
    """Return the fields of an allowed decision without reasons, warnings or holds."""
    amount, currency, fee, account, payout_id = request
    # A copy of the template, then the fields that change: a dict of 23 fields built from a
    # display costs twice as much (measured), and every check builds one.
    values = _ALLOWED.copy()
    values["decision_id"] = random.getrandbits(128).to_bytes(16, "big").hex()  # new_decision_id()
    values["mode"] = mode
    values["amount"] = amount
    values["currency"] = currency
    values["fee"] = fee
    values["provider"] = provider
    values["account"] = account
    values["payout_id"] = payout_id
    values["balance"] = balance
    values["reserved"] = reserved = reserved.quantize(smallest_unit(currency), None, MONEY_CONTEXT)
    values["reserve"] = reserve
    values["spendable"] = SUBTRACT(balance.available, reserved)
    values["max_payable"] = max_payable
    values["evaluated_at"] = datetime.fromtimestamp(now, UTC)
    values["balance_age"] = judged.age
    values["balance_source"] = judged.source
    values["own_in_flight"] = judged.own
    return values


def from_clearance(
    request: Request,
    clearance: Clearance,
    *,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
    judged: JudgedOn,
) -> Decision:
    """Return the decision for *request*, which every rule passed without a warning."""
    floor, cap, reserve = clearance
    max_payable = max_payable_of(floor, cap, request.currency)
    return built(Decision, _allowed_values(
        request, mode, provider, balance, reserved, now, reserve, max_payable, judged
    ))


def from_failures(
    request: Request,
    failures: Failures,
    *,
    mode: Mode,
    provider: str,
    balance: BalanceSnapshot,
    reserved: Decimal,
    now: float,
    judged: JudgedOn,
    holds: tuple[HoldSummary, ...] = (),
    more_holds: bool = False,
) -> Decision:
    """Return the decision for *request*, which the rules' *failures* explain."""
    floor, cap, reserve = failures.clearance
    max_payable = max_payable_of(floor, cap, request.currency)
    values = _allowed_values(
        request, mode, provider, balance, reserved, now, reserve, max_payable, judged
    )
    denials: list[Verdict] = []
    warned: list[Verdict] = []
    for verdict in failures.verdicts:
        if verdict.children:
            denials.extend(verdict.denials())
            warned.extend(verdict.warnings())
        elif not verdict.passed:  # a leaf (most often): it is its own denial or warning
            if verdict.severity == "deny":
                denials.append(verdict)
            elif verdict.severity == "warn":
                warned.append(verdict)
    if denials:
        values["allowed"] = False
        values["reasons"] = tuple([_reason(v) for v in denials])
    values["warnings"] = tuple([_reason(v) for v in warned])
    values["holds"] = holds
    values["more_holds"] = more_holds
    return _decision(values)


def _every_level(level: int) -> bool:  # noqa: ARG001 - is_enabled_for's signature
    """Say yes: a logger that cannot tell its level gets every event."""
    return True


def log_decision(log: Any, decision: Decision, stamp: dict[str, str] | None = None) -> None:
    """Log ``payout_guard.decision`` (and ``would_deny`` for a dry-run denial) to *log*.

    *log* is structlog's lazy proxy (the guard's logger) or any logger: see
    :func:`log_resolved`, which this calls with the logger the proxy stands for.
    """
    # bind() resolves structlog's lazy proxy once: reading two attributes off the proxy
    # assembles it twice.
    bind = getattr(log, "bind", None)
    if bind is not None:
        log = bind()
    log_resolved(log, getattr(log, "is_enabled_for", _every_level), decision, stamp)


def log_resolved(
    log: Any, enabled: Callable[[int], bool], decision: Decision,
    stamp: dict[str, str] | None = None,
) -> None:
    """Log *decision* to *log*, a resolved logger whose level test is *enabled*.

    The event carries the decision's fields and facts (``Decision.log_fields``) and *stamp*
    (the rules' fingerprint and the library's version). The fields are built only for an
    event the logger's level lets through (``is_enabled_for``): a production logger
    filtering at WARNING costs an allowed check no field building. A logger that cannot
    tell its level gets every event.
    """
    info = enabled(logging.INFO)
    would_deny = not decision.allowed and decision.mode == "dry_run"
    if not info and not (would_deny and enabled(logging.WARNING)):
        return
    fields = decision.log_fields()
    if stamp:
        fields.update(stamp)
    if info:
        log.info("payout_guard.decision", **fields)
    if would_deny:
        log.warning("payout_guard.would_deny", **fields)


def cached_logger(log: Any) -> tuple[Any, Callable[[int], bool]] | None:
    """Return the logger structlog's proxy *log* stands for and its level test, once cached.

    With ``cache_logger_on_first_use``, structlog assembles the logger once and the proxy
    keeps it for good (two ``bind()`` calls give the same logger): it can then be used
    directly. ``None`` when structlog assembles a new one each time (configuration changes
    then apply at once).
    """
    bind = getattr(log, "bind", None)
    if bind is None:
        return None
    first = bind()
    if log.bind() is not first:  # looked up again: caching replaces the proxy's bind
        return None
    return first, getattr(first, "is_enabled_for", _every_level)


def denial(
    request: Request,
    reason: Reason,
    *,
    mode: Mode,
    provider: str,
    now: float,
    allowed: bool = False,
    balance: BalanceSnapshot | None = None,
    reserved: Decimal | None = None,
    judged: JudgedOn | None = None,
) -> Decision:
    """Return a decision for a denial the guard itself makes (no rule decided it).

    With ``allowed=True`` (``fail_open``), *reason* becomes a warning instead. *reserved* and
    *judged* are the facts the rules were about to judge, when the guard had them (a rule
    that raised), so that the decision can be judged again.
    """
    none = zero(request.currency)
    held = none if reserved is None else reserved
    return built(Decision, dict(
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
        reserved=held,
        reserve=_ZERO,
        spendable=none if balance is None else SUBTRACT(balance.available, held),
        max_payable=none,
        holds=(),
        more_holds=False,
        candidates=(),
        evaluated_at=datetime.fromtimestamp(now, UTC),
        **(_NOT_JUDGED if judged is None else {
            "balance_age": judged.age, "balance_source": judged.source,
            "own_in_flight": judged.own,
        }),
    ))
