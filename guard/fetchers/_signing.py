"""Request authentication of the providers: Luxtak's body signature and Pagsmile's Basic token.

Luxtak (the Transfersmile/Pagsmile payout scheme, PROVIDERS.md 1.3) signs the top-level JSON
body parameters: drop empty values, sort by key (code-unit order, as Java's ``TreeMap`` and
Python's ``sorted``), join as ``key=value`` with ``&``, append the app key with no separator and
take the **plain** SHA-256 (not HMAC) as lowercase hex. The docs' published example
(15-field BRL sample, app key ``ABCDE``) gives ``b15f9007...6abb`` and is a unit test.

The docs' code samples disagree on how non-strings render, so only strings and integers are
accepted here (integers as plain digits, the only one sent being ``timestamp``); anything else is
a programming error, refused rather than signed in a way the server might render differently.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping

__all__ = ["basic_authorization", "luxtak_signature", "sorted_params"]


def _render(key: str, value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise TypeError(
            f"cannot sign parameter {key!r} of type {type(value).__name__}: "
            f"only strings and integers have one agreed rendering"
        )
    text = str(value)
    return text or None


def sorted_params(params: Mapping[str, object]) -> str:
    """Return the signature pre-image of *params* without the key: ``a=1&b=x``.

    Args:
        params: The top-level JSON body parameters.

    Returns:
        The non-empty parameters sorted by key, joined as ``key=value`` pairs with ``&``.

    Raises:
        TypeError: a value is neither a string, an integer nor ``None``.
    """
    pairs = []
    for key in sorted(params):
        text = _render(key, params[key])
        if text is not None:
            pairs.append(f"{key}={text}")
    return "&".join(pairs)


def luxtak_signature(params: Mapping[str, object], app_key: str) -> str:
    """Return Luxtak's ``Authorization`` value for a JSON body: ``sha256(sorted + app_key)``.

    Args:
        params: The top-level JSON body parameters, exactly as sent.
        app_key: The merchant's app key.

    Returns:
        The lowercase hex SHA-256 digest.

    Raises:
        TypeError: a value is neither a string, an integer nor ``None``.
    """
    preimage = sorted_params(params) + app_key
    return hashlib.sha256(preimage.encode("utf-8")).hexdigest()


def basic_authorization(user: str, password: str) -> str:
    """Return an HTTP Basic ``Authorization`` value: ``Basic base64(user:password)``.

    Args:
        user: The user part (Pagsmile: the app id); it may not contain ``:``.
        password: The password part (Pagsmile: the security key).

    Returns:
        The header value.
    """
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
