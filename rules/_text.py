"""Input quoted back in an error message: a bounded piece of it, never the whole.

A configuration value, a key or a payout amount may be five thousand characters long; an
error says which one it was with at most :data:`QUOTE_LIMIT` characters of it.
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["QUOTE_LIMIT", "quoted"]

QUOTE_LIMIT = 60
"""Most characters of an input quoted back in an error message."""


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """Return ``repr(value)`` for a message, at most *limit* characters of it (``...`` after).

    Only a bounded head of a string is ever repr'd, so a ten-megabyte input costs nothing; a
    ``Decimal`` is shown as its number (``-5``, not ``Decimal('-5')``).
    """
    if isinstance(value, str):
        head = repr(value[: limit + 1])
        text = head if len(value) <= limit else head[:-1]
    elif isinstance(value, Decimal):
        text = str(value) if len(value.as_tuple().digits) <= limit else "a Decimal"
    else:
        text = repr(value)
    if len(text) > limit:
        return text[: max(limit - 3, 0)] + "..."
    return text
