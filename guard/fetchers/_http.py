"""Run one provider request and map what happens onto the ``ProviderError`` tree.

This is what every provider fetcher shares: the session, one attempt under the retry policy's
remaining time, and the mapping of transport failures and HTTP statuses onto errors.

A provider module subclasses :class:`HttpFetcher` and supplies only its specifics: how to build
(and sign) a request, and how to read its answer (``_interpret``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import requests
import urllib3

from guard._models import BalanceSnapshot
from guard._money import parse_currency
from guard.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers._checks import check_base_url, check_timeout, parse_retry_after
from guard.fetchers._parse import BodyError, loads, shown
from guard.fetchers._retry import AttemptFailed, RetryPolicy, run_with_retry

__all__ = ["DEFAULT_TIMEOUT", "Answer", "Call", "HttpFetcher", "Timeout", "safe_detail"]

Timeout = float | tuple[float, float]
DEFAULT_TIMEOUT: tuple[float, float] = (3.0, 5.0)
"""Seconds to connect and to wait for the answer, per attempt (the deadline may cut them)."""

_MAX_BODY = 1 << 20
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Call:
    """One request to make: built (and signed) immediately before each attempt."""

    method: str
    path: str
    headers: Mapping[str, str]
    params: Mapping[str, str] | None = None
    body: bytes | None = None

    def __repr__(self) -> str:
        # Headers carry credentials; a Call must never print them.
        return f"Call({self.method} {self.path})"


@dataclass(frozen=True, slots=True)
class Answer:
    """The provider's answer to one attempt, read in full (at most 1 MiB)."""

    label: str
    status: int
    content_type: str
    raw: bytes
    received_at: datetime
    retry_after: float | None

    @property
    def ok(self) -> bool:
        """Return whether the HTTP status is 2xx."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Return the decoded body (exact numbers). Raises ``BodyError`` if it is not JSON."""
        return loads(self.raw)

    def json_or_none(self) -> Any:
        """Return the decoded body, or ``None`` when it is not JSON (error pages)."""
        try:
            return loads(self.raw)
        except BodyError:
            return None

    def fail(
        self,
        kind: type[ProviderError],
        message: str,
        *,
        reason: str,
        code: str | None = None,
        retryable: bool = False,
        resign: bool = False,
    ) -> AttemptFailed:
        """Return the failure signal for this answer (status and ``Retry-After`` included)."""
        return AttemptFailed(
            kind, f"{self.label}: {message}", reason=reason, status=self.status, code=code,
            retryable=retryable, resign=resign, retry_after=self.retry_after,
        )

    def status_failure(self, *, code: str | None = None, detail: str | None = None
                       ) -> AttemptFailed | None:
        """Return the failure a non-2xx status means (``None`` for 2xx).

        Retried: 429 and 500/502/503/504. 401/403 are auth errors; other 4xx (validation,
        not found) and redirects are response errors; other 5xx are unavailability. *detail*
        is the provider's own message, when its error body had one.
        """
        if self.ok:
            return None
        status = self.status
        retryable = status in _RETRIED_STATUSES
        kind: type[ProviderError]
        if status == 429:
            kind, what = ProviderRateLimited, "rate limited by the provider"
        elif status >= 500:
            kind, what = ProviderUnavailable, "the provider failed on its side"
        elif status in {401, 403}:
            kind, what = ProviderAuthError, "the provider refused our credentials"
        elif status == 404:
            kind, what = ProviderResponseError, "not found; check base_url"
        elif 300 <= status < 400:
            kind, what = ProviderResponseError, "redirected (not followed); check base_url"
        else:
            kind, what = ProviderResponseError, "the provider refused the request"
        if detail is None and "html" in self.content_type.lower():
            detail = "an HTML page instead of the provider's JSON (a gateway or proxy error)"
        message = f"{what}: {detail}" if detail else what
        reason = "rate_limited" if status == 429 else f"http_{status}"
        return self.fail(kind, message, reason=reason, code=code, retryable=retryable)


class HttpFetcher(ABC):
    """Base of the provider fetchers: owns the session, runs attempts under the retry policy."""

    provider: ClassVar[str]

    def __init__(
        self,
        base_url: str,
        *,
        session: requests.Session | None,
        timeout: Timeout,
        retry: RetryPolicy | None,
        allow_insecure: bool,
        clock: Callable[[], float],
    ) -> None:
        self._base_url = check_base_url(base_url, allow_insecure=allow_insecure)
        self._timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"must be a RetryPolicy, got {type(retry).__name__}",
                                     path="retry")
        self._retry = retry if retry is not None else RetryPolicy()
        if not callable(clock):
            raise ConfigurationError("must be a callable returning Unix seconds", path="clock")
        self._clock = clock
        if session is not None and session.verify is False:
            raise ConfigurationError(
                "session.verify is False; payout-guard never disables TLS verification "
                "(use a CA bundle path for private CAs)", path="session",
            )
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()

    @property
    def name(self) -> str:
        """Return the provider name used in decisions, logs and errors."""
        return self.provider

    @property
    def base_url(self) -> str:
        """Return the base URL requests go to (no trailing slash)."""
        return self._base_url

    def close(self) -> None:
        """Close the HTTP session, if this fetcher created it (a passed-in one is left open)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        extra = "".join(f", {key}={value!r}" for key, value in self._repr_fields().items())
        return f"{type(self).__name__}(base_url={self._base_url!r}{extra})"

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:
        """Return the provider's current balances (only *currency*'s when given).

        Args:
            currency: ISO 4217 code to ask for, or ``None`` for every currency.

        Returns:
            One snapshot per currency; empty when the provider holds none of *currency*.

        Raises:
            InvalidPayoutRequest: *currency* is not an ISO 4217 code.
            ProviderError: the subclass saying why no trustworthy balance could be had.
        """
        wanted = parse_currency(currency) if currency is not None else None
        snapshots = run_with_retry(
            self._retry, self.provider, lambda remaining: self._attempt(wanted, remaining)
        )
        return [s for s in snapshots if wanted is None or s.currency == wanted]

    def _attempt(self, currency: str | None, remaining: float) -> list[BalanceSnapshot]:
        try:
            answer = self._send(self._call(currency), remaining)
            try:
                return self._interpret(answer, currency)
            except BodyError as exc:
                raise answer.fail(ProviderResponseError, str(exc), reason="bad_body") from None
        except AttemptFailed as failure:
            failure.message = self._redact(failure.message)
            raise

    def _send(self, call: Call, remaining: float) -> Answer:
        left = max(remaining, 0.001)
        timeout = (min(self._timeout[0], left), min(self._timeout[1], left))
        label = f"{call.method} {call.path}"
        # Never False, even if the session was changed after construction. A CA bundle path
        # set on the session is passed explicitly, or requests lets REQUESTS_CA_BUNDLE win.
        verify = self._session.verify if isinstance(self._session.verify, str) else True
        try:
            with self._session.request(
                call.method, self._base_url + call.path, params=call.params, data=call.body,
                headers=dict(call.headers), timeout=timeout, stream=True,
                allow_redirects=False, verify=verify,
            ) as response:
                raw = _read_body(response, label)
                return Answer(
                    label=label,
                    status=response.status_code,
                    content_type=response.headers.get("Content-Type", ""),
                    raw=raw,
                    received_at=datetime.fromtimestamp(self._clock(), UTC),
                    retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                  self._clock()),
                )
        except requests.exceptions.SSLError as exc:
            raise _transport(label, "TLS verification failed", "tls", exc, retry=False) from None
        except requests.Timeout as exc:
            raise _transport(label, "timed out", "timeout", exc) from None
        except requests.ConnectionError as exc:
            timed_out = exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
            reason = "timeout" if timed_out else "connection_error"
            raise _transport(label, "connection failed", reason, exc) from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _transport(label, "request failed", "connection_error", exc) from None

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def _repr_fields(self) -> dict[str, object]:
        return {}

    @abstractmethod
    def _secrets(self) -> tuple[str, ...]:
        """Return every credential string that must never appear in a message."""

    @abstractmethod
    def _call(self, currency: str | None) -> Call:
        """Return the request for *currency*, signed and stamped now."""

    @abstractmethod
    def _interpret(self, answer: Answer, currency: str | None) -> list[BalanceSnapshot]:
        """Return the balances in *answer*, or raise ``AttemptFailed`` / ``BodyError``."""


def _read_body(response: requests.Response, label: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=65536):
        size += len(chunk)
        if size > _MAX_BODY:
            raise AttemptFailed(
                ProviderResponseError, f"{label}: answer body larger than {_MAX_BODY} bytes",
                reason="bad_body", status=response.status_code,
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _transport(label: str, what: str, reason: str, exc: BaseException, *,
               retry: bool = True) -> AttemptFailed:
    return AttemptFailed(
        ProviderUnavailable, f"{label}: {what} ({type(exc).__name__})", reason=reason,
        retryable=retry, cause=exc,
    )


def safe_detail(*parts: object) -> str | None:
    """Return the provider's own error text (``msg``, ``data.err``) joined, or ``None``."""
    texts = [p if isinstance(p, str) else shown(p) for p in parts if p not in (None, "", {})]
    return "; ".join(texts)[:300] or None
