"""Construction-time checks shared by the fetchers: URL, timeouts, credentials; Retry-After.

Each check raises :class:`~guard.errors.ConfigurationError` naming the argument, and never
shows a credential's value.
"""

from __future__ import annotations

import os
import re
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from guard._seconds import seconds
from guard._text import quoted
from guard.errors import ConfigurationError

__all__ = [
    "check_base_url",
    "check_requests_per_minute",
    "check_secret",
    "check_timeout",
    "check_verify",
    "parse_retry_after",
    "shown_url",
]

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
# Delay-seconds is ASCII digits only (RFC 9110); str.isdigit() would also take "²" or "٣".
_SECONDS = re.compile(r"[0-9]{1,10}", re.ASCII)


def check_base_url(url: object, *, allow_insecure: bool) -> str:
    """Return *url* without a trailing slash, refusing what would leak or mislead.

    A ``base_url`` is sent with every request and written into configuration files, so a
    credential has no place in it: user:password@ (sent as a Basic header to whoever answers)
    and a query or fragment (kept in proxy and provider access logs) are refused outright. A
    message quotes at most the scheme and host (:func:`shown_url`), never the value as given:
    a mistyped URL may still hold a key (``merchant:KEY@host`` without ``https://``).

    Raises:
        ConfigurationError: not an ``https://`` URL (``http://`` is allowed for loopback hosts,
            or anywhere with *allow_insecure*), has credentials, a query or a fragment.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"must be a URL string, got {type(url).__name__}",
                                 path="base_url")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed [IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in {"https", "http"}:
        raise ConfigurationError(
            "must be an https:// URL such as 'https://api.example.com' (the value is not "
            "shown: it may hold a credential)", path="base_url",
        )
    if "@" in parts.netloc:
        raise ConfigurationError(
            "must not contain credentials (user:password@); the credentials come from the "
            "environment (the value is not shown)", path="base_url",
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            "must not have a query or fragment (?... or #...): a key put there would be "
            "written in every access log; the value is not shown", path="base_url",
        )
    if not parts.hostname:
        raise ConfigurationError(
            f"must name a host, such as 'https://api.example.com'; got {quoted(shown_url(url))}",
            path="base_url",
        )
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK and not allow_insecure:
        raise ConfigurationError(
            f"plain http:// sends credentials unencrypted; use https://, a loopback host "
            f"(127.0.0.1, localhost, ::1), or allow_insecure=True; got {quoted(shown_url(url))}",
            path="base_url",
        )
    return url.rstrip("/")


def shown_url(url: str) -> str:
    """Return *url* as a message may quote it: scheme and host (with port) only.

    The user:password@, the path, the query and the fragment are dropped: any of them may hold
    a credential. A value that is not a URL is shown as ``'<not a URL>'``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a URL>"
    if parts.scheme not in {"https", "http"}:
        return "<not a URL>"
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def check_timeout(timeout: object) -> tuple[float, float]:
    """Return *timeout* as ``(connect, read)`` seconds.

    Raises:
        ConfigurationError: not a positive finite number or a pair of them.
    """
    pair = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    if len(pair) != 2:
        raise ConfigurationError(
            f"must be seconds or a (connect, read) pair of them, got {str(timeout)[:60]}",
            path="timeout",
        )
    return (seconds(pair[0], "timeout", positive=True, most=3600),
            seconds(pair[1], "timeout", positive=True, most=3600))


def check_secret(name: str, value: object) -> str:
    """Return *value* if it is a non-empty string; the message never shows the value.

    Raises:
        ConfigurationError: *value* is not a non-empty string without surrounding spaces.
    """
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigurationError(
            f"must be a non-empty string without surrounding whitespace "
            f"(got {type(value).__name__})", path=name,
        )
    return value


def check_requests_per_minute(value: object) -> int | None:
    """Return *value* if it is ``None`` (no limit) or a whole number of requests from 1 up.

    Raises:
        ConfigurationError: anything else, naming what is accepted.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
        raise ConfigurationError(
            f"must be a whole number of requests from 1 to 1000000, or None for no limit; "
            f"got {str(value)[:40]}", path="requests_per_minute",
        )
    return value


def check_verify(value: object, *, path: str = "session.verify") -> bool | str:
    """Return *value* if TLS verification stays on: ``True``, or an existing CA file or directory.

    ``requests`` skips verification for any false value (``False``, ``""``, ``0``, ``None``), and
    a CA path that does not exist fails only at the first request; both are refused here.

    Raises:
        ConfigurationError: *value* would turn verification off, or names no file or directory.
    """
    if value is True:
        return True
    if isinstance(value, str) and value and os.path.exists(value):  # noqa: PTH110 - str paths
        return value
    if isinstance(value, str) and value:
        problem = f"names no CA file or directory: {value[:60]!r}"
    else:
        problem = f"is {value!r}, which turns TLS verification off"
    raise ConfigurationError(
        f"{problem}; payout-guard never disables TLS verification (leave it True, or give the "
        f"path of a CA bundle for a private CA)", path=path,
    )


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` header asks for (seconds or HTTP-date form).

    ``None`` when there is no header or it cannot be read (``"²"``, ``"soon"``, a date without
    a zone): an unreadable header is ignored, never raised.
    """
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        return float(int(text))  # money-ok: seconds
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            return None
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
