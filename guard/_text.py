"""Text from outside (providers, callers) made safe to show: one line, bounded length.

A provider's ``msg`` may hold newlines or terminal escapes that would forge log lines or
garble ``explain()``; a caller's payout id may be ten megabytes. Whatever of it enters a
reason message, an exception message or a log field goes through :func:`printable` first.
"""

from __future__ import annotations

import unicodedata

__all__ = ["PROVIDER_TEXT_LIMIT", "QUOTE_LIMIT", "printable", "quoted"]

PROVIDER_TEXT_LIMIT = 200
"""Most characters of a provider's own text shown anywhere."""

QUOTE_LIMIT = 60
"""Most characters of a caller's input quoted back in an error message."""


def printable(text: str, limit: int = PROVIDER_TEXT_LIMIT) -> str:
    r"""Return *text* without control characters (each becomes a space), cut to *limit*.

    Line and paragraph separators and format characters (``\\u2028``, bidi overrides) count
    as control characters. A cut text ends with ``...`` within *limit*.
    """
    head = text[: limit + 1]
    cleaned = "".join(
        " " if unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} else c for c in head
    )
    if len(text) > limit:
        return cleaned[: max(limit - 3, 0)] + "..."
    return cleaned


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """Return ``repr(value)`` for a message, at most *limit* characters of it (``...`` after).

    Only a bounded head of a string is ever repr'd, so a ten-megabyte input costs nothing.
    """
    if isinstance(value, str):
        head = repr(value[: limit + 1])
        text = head if len(value) <= limit else head[:-1]
    else:
        text = repr(value)
    if len(text) > limit:
        return text[: max(limit - 3, 0)] + "..."
    return text
