"""What the shared stores have in common: exact minor units, time checks, the store error.

SQLite and Redis keep amounts as integers in the currency's ISO 4217 minor unit (``10.50``
BRL is ``1050``, ``1500`` CLP is ``1500``, ``1.250`` KWD is ``1250``), never as floats.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import NamedTuple

from guard._seconds import MAX_SECONDS
from guard.errors import InvalidPayoutRequest, StoreUnavailable
from guard.stores._protocol import Hold, HoldState
from rules.money import MONEY_CONTEXT, currency_exponent, quantize_exact

__all__ = [
    "LIST_MOST",
    "MAX_SECONDS",
    "Listing",
    "StoreUnavailable",
    "ceiling_to_minor",
    "check_time",
    "fleet_name",
    "fleet_rate",
    "fleet_seconds",
    "from_minor",
    "listing",
    "mixed_currencies",
    "newest_first",
    "provider_of",
    "to_minor",
]



def to_minor(value: Decimal, currency: str, *, limit: int, store: str) -> int:
    """Return *value* (major units) as a whole number of *currency*'s minor units.

    Args:
        value: A finite, non-negative amount with no more decimals than the currency has.
        currency: ISO 4217 code giving the exponent.
        limit: The store's exclusive upper bound, in minor units.
        store: The store's name, for the message.

    Raises:
        InvalidPayoutRequest: *value* is negative, not exact at the currency's exponent, or
            not below *limit* minor units.
    """
    try:
        exact = quantize_exact(value, currency)
    except ValueError as exc:
        raise InvalidPayoutRequest(f"cannot hold {value} {currency}: {exc}") from None
    if exact < 0:
        raise InvalidPayoutRequest(f"cannot hold a negative amount ({value} {currency})")
    minor = int(exact.scaleb(currency_exponent(currency), MONEY_CONTEXT))
    if minor >= limit:
        most = from_minor(limit - 1, currency)
        raise InvalidPayoutRequest(
            f"{value} {currency} is too large for the {store} reservation store, which holds "
            f"at most {most} {currency} ({limit - 1} minor units) exactly"
        )
    return minor


def ceiling_to_minor(ceiling: Decimal, currency: str) -> int:
    """Return the largest whole number of minor units that is <= *ceiling*.

    Holds are whole minor units, so ``held <= ceiling`` exactly when
    ``held <= floor(ceiling)``: rounding the ceiling down changes no answer.

    Raises:
        ValueError: *ceiling* is not finite.
    """
    if not ceiling.is_finite():
        raise ValueError(f"ceiling must be a finite amount, got {ceiling}")
    return _floor_minor(ceiling, currency)


# A guard passes the same ceiling on every hold until its balance changes: each is worked out
# once (the answer depends only on the value: Decimal("10.0") and Decimal("10.00") share it).
@functools.lru_cache(maxsize=256)
def _floor_minor(ceiling: Decimal, currency: str) -> int:
    with localcontext(MONEY_CONTEXT) as ctx:
        # Enough digits that scaling never rounds (a rounded-up ceiling would allow too much).
        ctx.prec = len(ceiling.as_tuple().digits) + 8
        scaled = ceiling.scaleb(currency_exponent(currency))
        return int(scaled.to_integral_value(ROUND_FLOOR))


def from_minor(minor: int, currency: str) -> Decimal:
    """Return *minor* units of *currency* as a ``Decimal`` at the currency's exponent."""
    # Exact: a whole number below 2**63 has at most 19 digits, well within MONEY_CONTEXT's 34.
    return Decimal(minor).scaleb(-currency_exponent(currency), MONEY_CONTEXT)


def check_time(name: str, value: float) -> float:
    """Return *value* if it is a finite number of seconds.

    Raises:
        ValueError: *value* is NaN or infinite (it would make every comparison lie).
    """
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite time in seconds, got {value!r}")
    return value


LIST_MOST = 10_000  # holds one list_holds call returns at most
_STATE_NAMES: dict[object, HoldState] = {
    "pending": "pending", "committed": "committed", "uncertain": "uncertain"
}


class Listing(NamedTuple):
    """What ``list_holds`` was asked for, checked (see ``listing``).

    Attributes:
        provider: Only holds on this provider's balances (``None``: every provider).
        currency: Only holds in this currency (``None``: every currency).
        state: Only holds in this state (``None``: every state).
        limit: At most this many holds.
    """

    provider: str | None
    currency: str | None
    state: HoldState | None
    limit: int

    def wants(self, hold: Hold, now: float) -> bool:
        """Return whether *hold* is listed at *now* (an expired pending hold never is)."""
        return (
            not hold.expired(now)
            and (self.state is None or hold.state == self.state)
            and (self.currency is None or hold.currency == self.currency)
            and (self.provider is None or provider_of(hold.key) == self.provider)
        )


def listing(
    provider: object, currency: object, state: object, limit: object
) -> Listing:
    """Return the filters of a ``list_holds`` call, checked.

    Raises:
        InvalidPayoutRequest: *provider* or *currency* is not ``None`` or a non-empty short
            ``str``; *state* is not ``None``, ``"pending"``, ``"committed"`` or
            ``"uncertain"``; *limit* is not an ``int`` from 1 to ``LIST_MOST``.
    """
    for name, value in (("provider", provider), ("currency", currency)):
        if value is not None and (not isinstance(value, str) or not value
                                  or len(value) > _NAME_MOST or "|" in value):
            raise InvalidPayoutRequest(
                f"{name} must be None or a non-empty name without '|', got {str(value)[:40]!r}"
            )
    if state is not None and state not in _STATE_NAMES:
        raise InvalidPayoutRequest(
            f"state must be None, 'pending', 'committed' or 'uncertain', got {str(state)[:40]!r}"
        )
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= LIST_MOST:
        raise InvalidPayoutRequest(
            f"limit must be an int from 1 to {LIST_MOST}, got {str(limit)[:40]!r}"
        )
    return Listing(
        provider if isinstance(provider, str) else None,
        currency if isinstance(currency, str) else None,
        None if state is None else _STATE_NAMES[state],
        limit,
    )


def provider_of(key: str) -> str:
    """Return the provider of the balance *key* (``balance_key``'s first part)."""
    return key.split("|", 1)[0]


def newest_first(holds: Iterable[Hold], limit: int) -> list[Hold]:
    """Return at most *limit* of *holds*, newest first, without their owner tokens.

    Newest first is ``created_at`` descending, then ``payout_id`` ascending: the order every
    store lists holds in.
    """
    ordered = sorted(holds, key=lambda h: h.payout_id)
    ordered.sort(key=lambda h: h.created_at, reverse=True)
    return [h.public() for h in ordered[:limit]]


def mixed_currencies(hold: Hold, held_currency: str) -> InvalidPayoutRequest:
    """Return the error for a hold whose currency differs from its key's holds."""
    return InvalidPayoutRequest(
        f"balance key {hold.key[:60]!r} holds {held_currency}, so payout "
        f"{hold.payout_id[:40]!r} in "
        f"{hold.currency} cannot hold on it; build keys with balance_key(), which ends in the "
        f"currency"
    )


_NAME_MOST = 200  # characters of a fleet name or owner: the guard's are far shorter
_PER_MINUTE_MOST = 10**9


def fleet_name(what: str, value: object) -> str:
    """Return *value* if it can name a shared value, a lease, a budget or a lease's owner.

    Raises:
        ValueError: it is not a non-empty ``str`` of at most 200 characters (the message
            names *what*, and shows only the length of a long one).
    """
    if not isinstance(value, str) or not value or len(value) > _NAME_MOST:
        shown = repr(value) if not isinstance(value, str) else f"{len(value)} characters"
        raise ValueError(
            f"{what} must be a non-empty str of at most {_NAME_MOST} characters, got {shown}"
        )
    return value


def fleet_seconds(what: str, value: object) -> float:
    """Return *value* if it is a finite number of seconds above 0, at most 30 days.

    Raises:
        ValueError: anything else, naming *what* and the bounds.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds, got {type(value).__name__}")
    number = float(value)  # money-ok: seconds
    if not math.isfinite(number) or number <= 0 or number > MAX_SECONDS:
        raise ValueError(
            f"{what} must be a finite number of seconds > 0 and <= {MAX_SECONDS:g}, "
            f"got {value!r}"
        )
    return number


def fleet_rate(per_minute: object) -> int:
    """Return *per_minute* if it is a whole number of requests from 1 to 10**9.

    Raises:
        ValueError: anything else (a ``bool`` too).
    """
    if (isinstance(per_minute, bool) or not isinstance(per_minute, int)
            or not 1 <= per_minute <= _PER_MINUTE_MOST):
        raise ValueError(
            f"per_minute must be an int from 1 to {_PER_MINUTE_MOST}, got {str(per_minute)[:40]!r}"
        )
    return per_minute
