"""What an instrumentation hook is: a ``Hook`` (override what you record) or a ``HookFactory``.

A hook is told about each event the guard instruments by a method of the same name. The base
class :class:`Hook` does nothing for any of them, so a hook overrides only the events it
records; the guard never calls a method a hook left as the base's no-op, so an event nobody
records costs a check nothing but one call of an empty function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guard._models import Decision

__all__ = ["EVENT_NAMES", "Hook", "HookFactory", "judged_held", "outcome_of"]

EVENT_NAMES = (
    "decision",
    "held",
    "balance_fetch",
    "provider_request",
    "balance_cache",
    "store_call",
    "decision_log_dropped",
    "span",
)
"""The methods of :class:`Hook` the guard calls, one per instrumented event."""


def outcome_of(decision: Decision) -> str:
    """Return *decision*'s outcome label: ``allowed``, ``denied`` or ``would_deny`` (dry run)."""
    if decision.allowed:
        return "allowed"
    return "would_deny" if decision.mode == "dry_run" else "denied"


class Hook:
    """Receive what the guard instruments; every method is a no-op here: override some.

    Hooks are called in the thread (or event loop) doing the work, so a hook must be quick
    and must not block. An exception from a hook is logged once (``payout_guard.hook_failed``)
    and never reaches the guard's caller. Labels passed to hooks are bounded: never a payout
    id or an account.
    """

    def decision(self, decision: Decision) -> None:
        """Record a decision (of ``check`` or ``reserve``) as it is logged."""

    def held(self, provider: str, currency: str, state: str, amount: Decimal) -> None:
        """Record the held total the guard just judged a balance with.

        *state* is ``"counting"``: every hold that still counts against the balance
        (pending, uncertain, and committed ones no balance shows yet). *amount* is in major
        units.
        """

    def balance_fetch(self, provider: str, outcome: str, seconds: float) -> None:
        """Record one balance fetch: *outcome* is ``"ok"`` or the error's class name."""

    def provider_request(self, provider: str, status: str) -> None:
        """Record one HTTP request to a provider: *status* is its code, or ``"error"``."""

    def balance_cache(self, result: str) -> None:
        """Record one balance lookup: ``hit``, ``miss``, ``shared`` or ``stale``.

        ``hit``: a fresh balance cached in this process. ``shared``: the balance another
        caller's fetch brought (one in flight here, or one another process shared through the
        fleet store). ``stale``: the request budget is spent and an older balance was used.
        ``miss``: nothing usable was cached, so this lookup made the provider request (or,
        with the budget spent, found no balance young enough).
        """

    def store_call(self, store: str, operation: str, seconds: float) -> None:
        """Record one call of the reservation store (*store* is its class name)."""

    def decision_log_dropped(self) -> None:
        """Record one decision a decision log could not write."""

    def span(self, name: str, attributes: Mapping[str, str]) -> AbstractContextManager[None]:
        """Return a context manager around one ``check`` or ``reserve`` (a tracing span).

        *name* is ``payout_guard.check`` or ``payout_guard.reserve``; *attributes* hold the
        request's currency, amount and payout id (when it has one).
        """
        raise NotImplementedError  # pragma: no cover - never called unless overridden


@dataclass(frozen=True, slots=True)
class HookFactory:
    """Make a :class:`Hook` on first use (what the default hooks are).

    The factory is called when the guard first records something after the hooks were set,
    so an unused backend costs nothing, not even its import. Pass arguments with
    ``functools.partial``.

    Attributes:
        hook_factory: Called with no arguments; returns the hook.
    """

    hook_factory: Callable[[], Hook]


# Denials the guard makes itself after reading a balance: their held total is not one it read.
_OWN_DENIALS = frozenset({"balance_unavailable", "rule_error"})


def judged_held(decision: Decision) -> Decimal | None:
    """Return the held total *decision* was judged with, or ``None`` when it read none.

    A decision made without a balance, or a denial the guard made itself (the store or a rule
    failed), carries no held total it read.
    """
    if decision.balance is None:
        return None
    reasons = decision.reasons
    if reasons and reasons[0].code in _OWN_DENIALS:
        return None
    return decision.reserved
