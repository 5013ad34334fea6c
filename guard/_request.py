"""Validating what callers hand the guard: payout requests, account picks, durations."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import NamedTuple

from guard._models import BalanceSnapshot
from guard._money import parse_amount, parse_currency, smallest_unit, zero
from guard._text import quoted
from guard.errors import InvalidPayoutRequest
from rules.money import AMOUNT_GRAMMAR, MONEY_CONTEXT

__all__ = [
    "Request",
    "optional_text",
    "parse_payout_id",
    "parse_request",
    "parsed_in_full",
    "pick_account",
]

_MAX_ID = 200
# Currency codes as callers wrote them, once accepted -> (code, smallest unit, zero).
_SEEN: dict[str, tuple[str, Decimal, Decimal]] = {}
_SEEN_MOST = 256  # ISO 4217 has fewer codes; spellings beyond this take the full path
# Amounts whose integer part has this many digits or more take the full path (its message).
_MOST_DIGITS = 20
_SHOWN = 40
# C0 and C1 control characters and DEL: they corrupt logs, keys and terminals.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Request(NamedTuple):
    """A validated payout request (amounts exact at the currency's exponent).

    A ``NamedTuple``: every check builds one, and a tuple is built in a third of the time of
    a frozen dataclass.
    """

    amount: Decimal
    currency: str
    fee: Decimal
    account: str | None
    payout_id: str | None


_new_tuple = tuple.__new__


def parse_request(
    amount: object, currency: object, account: object, payout_id: object, fee: object
) -> Request:
    """Return the request, validated once at the edge.

    Raises:
        InvalidPayoutRequest: any part is malformed; the message says what is accepted.
    """
    # Most payouts: a Decimal (or a short amount string) in a currency spelling seen before.
    # Anything else, or anything this cannot accept as it is, takes the full path.
    seen = _SEEN.get(currency) if type(currency) is str else None
    if seen is not None:
        number: Decimal | None = None
        if type(amount) is Decimal:
            number = amount
        elif type(amount) is str and len(amount) < _MOST_DIGITS and AMOUNT_GRAMMAR.fullmatch(
            amount
        ):
            number = Decimal(amount)
        if number is not None and number.is_finite() and number > 0 and (
            number.adjusted() < _MOST_DIGITS
        ):
            code, unit, none = seen
            exact = number.quantize(unit, None, MONEY_CONTEXT)
            if exact == number:
                return _new_tuple(Request, (  # Request(...) without its Python constructor
                    exact, code,
                    none if fee is None else parse_amount(fee, code, field="fee", allow_zero=True),
                    None if account is None else optional_text(account, "account"),
                    None if payout_id is None else parse_payout_id(payout_id),
                ))
    return parsed_in_full(amount, currency, account, payout_id, fee)


def parsed_in_full(
    amount: object, currency: object, account: object, payout_id: object, fee: object
) -> Request:
    """Return the request, every part parsed by its own parser (see :func:`parse_request`).

    Raises:
        InvalidPayoutRequest: any part is malformed; the message says what is accepted.
    """
    code = parse_currency(currency)
    if type(currency) is str and len(_SEEN) < _SEEN_MOST:
        _SEEN[currency] = (code, smallest_unit(code), zero(code))
    return Request(
        parse_amount(amount, code),
        code,
        zero(code) if fee is None else parse_amount(fee, code, field="fee", allow_zero=True),
        optional_text(account, "account"),
        None if payout_id is None else parse_payout_id(payout_id),
    )


def parse_payout_id(value: object) -> str:
    """Return *value* if it can be a payout id: a ``str`` of 1 to 200 characters.

    No control characters, and it must encode as UTF-8 (no lone surrogates): ids become store
    keys and log fields.

    Raises:
        InvalidPayoutRequest: it cannot; the message quotes at most its first 40 characters.
    """
    if not isinstance(value, str):
        raise InvalidPayoutRequest(
            f"payout_id must be a string of 1 to {_MAX_ID} characters, got "
            f"{type(value).__name__}"
        )
    problem = ""
    if not value:
        problem = "is empty"
    elif len(value) > _MAX_ID:
        problem = f"has {len(value)} characters"
    elif _CONTROL.search(value):
        problem = "contains a control character"
    else:
        try:
            value.encode()
        except UnicodeEncodeError:
            problem = "contains a lone surrogate (it does not encode as UTF-8)"
    if problem:
        shown = value[:_SHOWN].encode("utf-8", "backslashreplace").decode()
        more = "..." if len(value) > _SHOWN else ""
        raise InvalidPayoutRequest(
            f"payout_id {problem}; expected 1 to {_MAX_ID} characters, no control characters "
            f"(got {shown!r}{more})"
        )
    return value


def optional_text(value: object, name: str) -> str | None:
    """Return *value*, a short non-empty string, or ``None``; raise naming *name* otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_ID:
        shown = quoted(value) if isinstance(value, str) else type(value).__name__
        raise InvalidPayoutRequest(
            f"{name} must be a non-empty string of at most {_MAX_ID} characters, got {shown}"
            + (f" ({len(value)} characters)" if isinstance(value, str) else "")
        )
    return value


def pick_account(
    by_account: dict[str | None, BalanceSnapshot],
    account: str | None,
    provider: str,
    currency: str,
) -> BalanceSnapshot | None:
    """Return the snapshot of *account*; without one, the only account the provider reported.

    Raises:
        InvalidPayoutRequest: no account was named and the provider reports several.
    """
    if account is not None:
        return by_account.get(account)
    if None in by_account or len(by_account) <= 1:
        return by_account.get(None) or next(iter(by_account.values()), None)
    names = ", ".join(sorted(str(a) for a in by_account))
    raise InvalidPayoutRequest(
        f"{provider} reports {currency} in several accounts ({names}); pass account= to say "
        f"which one pays"
    )
