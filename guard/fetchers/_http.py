"""Run one provider request and map what happens onto the ``ProviderError`` tree.

This is what every provider fetcher shares: the session, one attempt under the retry policy's
remaining time, and the mapping of transport failures and HTTP statuses onto errors.

A provider module subclasses :class:`HttpFetcher` and supplies only its specifics: how to build
(and sign) a request, and how to read its answer (``_interpret``).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Self

import requests
import structlog
import urllib3

from guard._models import BalanceSnapshot
from guard._money import parse_currency
from guard._seconds import seconds
from guard._text import printable
from guard.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers._checks import (
    check_base_url,
    check_requests_per_minute,
    check_timeout,
    check_verify,
    parse_retry_after,
)
from guard.fetchers._parse import BodyError, loads, shown
from guard.fetchers._retry import AttemptFailed, RetryPolicy, run_with_retry
from guard.fetchers._transport import DeadlineAdapter, Watch
from guard.instrumentation._hooks import EVENTS
from rules.money import money_context

__all__ = [
    "DEFAULT_TIMEOUT",
    "Answer",
    "Call",
    "HttpFetcher",
    "Timeout",
    "TransportFailure",
    "safe_detail",
]

Timeout = float | tuple[float, float]
DEFAULT_TIMEOUT: tuple[float, float] = (3.0, 5.0)
"""Seconds to connect and to wait for the answer, per attempt (the deadline may cut them)."""

_MAX_BODY = 1 << 20
_CHUNK = 16384
_log = structlog.get_logger("payout_guard")
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
_REDACTED = "[redacted]"


class TransportFailure(Exception):
    """What the transport raised, as text: the ``__cause__`` of a ``ProviderError``.

    The transport's own exception (``requests``, ``urllib3``) holds the request, its headers
    (credentials) and the session. This stand-in keeps only its class name and its message,
    with the fetcher's secrets redacted, so a traceback rendered with locals, a pickled error
    or an error reporter walking ``__cause__`` finds nothing to leak.

    Args:
        kind: The original exception's class name (``"ConnectionError"``).
        message: Its message, secrets redacted.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(kind, message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}" if self.message else self.kind


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
    """The provider's answer to one attempt, read in full (at most 1 MiB).

    ``json()`` and ``json_or_none()`` return the body with *redact* applied to every string in
    it, keys included: a provider echoing our key (in ``msg``, an error code, a value) hands
    the parser text that no longer holds it, so no later cut (a message shortened to 200
    characters, a value quoted to 40) can leave part of the key behind.
    """

    label: str
    status: int
    content_type: str
    raw: bytes
    received_at: datetime
    retry_after: float | None
    redact: Callable[[str], str] = field(default=str, repr=False)

    @property
    def ok(self) -> bool:
        """Return whether the HTTP status is 2xx."""
        return 200 <= self.status < 300

    def json(self) -> Any:
        """Return the decoded body (exact numbers), redacted. Raises ``BodyError`` if not JSON."""
        body = loads(self.raw)
        # Without a backslash every decoded string is a slice of the text, so a text the
        # redaction leaves alone holds no secret anywhere in the body: nothing to walk.
        text = self.raw.decode("utf-8")
        if b"\\" not in self.raw and self.redact(text) == text:
            return body
        return _redacted(body, self.redact)

    def json_or_none(self) -> Any:
        """Return the decoded body, redacted, or ``None`` when it is not JSON (error pages)."""
        try:
            return self.json()
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
        requests_per_minute: int | None = None,
        settle_lag: float = 30.0,
    ) -> None:
        self._base_url = check_base_url(base_url, allow_insecure=allow_insecure)
        self.requests_per_minute = check_requests_per_minute(requests_per_minute)
        """Balance requests a minute the guard lets through for this key (``None``: no limit)."""
        self.settle_lag = seconds(settle_lag, "settle_lag")
        """Seconds a sent payout may take to show in a balance requested after it."""
        self._timeout = check_timeout(timeout)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(f"must be a RetryPolicy, got {type(retry).__name__}",
                                     path="retry")
        self._retry = retry if retry is not None else RetryPolicy()
        if not callable(clock):
            raise ConfigurationError("must be a callable returning Unix seconds", path="clock")
        self._clock = clock
        if session is not None:
            check_verify(session.verify)
        self._owns_session = session is None
        self._session = session if session is not None else _new_session()
        self._pid = os.getpid()

    @property
    def name(self) -> str:
        """Return the provider name used in decisions, logs and errors."""
        return self.provider

    @property
    def deadline(self) -> float:
        """Return the seconds one ``fetch`` may take in all (the retry policy's deadline)."""
        return self._retry.deadline

    @property
    def budget_name(self) -> str:
        """Return what the key's request budget and shared balances are named by.

        The provider and a short fingerprint of the credential (never the credential): two
        keys of one provider have budgets of their own, one key has one however many
        processes use it.
        """
        digest = hashlib.sha256("\0".join(self._secrets()).encode()).hexdigest()
        return f"{self.provider}:{digest[:16]}"

    @property
    def balance_name(self) -> str:
        """Return what the balances this fetcher reads are shared under (never a credential).

        The budget name, plus a short fingerprint of the base URL and the options that decide
        which numbers are read (the repr's fields: LuxCore's ``balance_type``, Pagsmile's
        ``available_field``, the app id). Guards on one store share a balance only with
        fetchers that would have read the same one: one key read as Pagsmile ``net_income``
        by one guard and as ``balance`` by another is two balances, however many processes
        (a rolling configuration change) read each.
        """
        reads = json.dumps([self._base_url, sorted(self._repr_fields().items())], default=str)
        return f"{self.budget_name}:{hashlib.sha256(reads.encode()).hexdigest()[:16]}"

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
        # Amounts are read in the money context, whatever the caller's decimal context says.
        with money_context():
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
            except AttemptFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - only ProviderError may leave fetch()
                # Reading the answer failed in a way no BodyError names: still the answer's
                # fault, never an exception of another kind for the caller.
                raise answer.fail(
                    ProviderResponseError,
                    f"could not read the answer ({type(exc).__name__})", reason="bad_body",
                ) from None
        except AttemptFailed as failure:
            # Redacted whole, before any later cut (an error's code is cut to 60 characters).
            failure.message = self._redact(failure.message)
            if failure.code is not None:
                failure.code = self._redact(failure.code)
            if isinstance(failure.cause, TransportFailure):
                failure.cause = TransportFailure(failure.cause.kind,
                                                 self._redact(failure.cause.message)[:300])
            # Nothing that held the request (its headers, the session) may stay reachable.
            failure.__context__ = None
            failure.__cause__ = None
            raise

    def _send(self, call: Call, remaining: float) -> Answer:
        left = max(remaining, 0.001)
        timeout = (min(self._timeout[0], left), min(self._timeout[1], left))
        label = f"{call.method} {call.path}"
        # Checked before every request, not only at construction: a session changed later
        # must not send credentials to a server nobody verified. A CA bundle path is passed
        # explicitly, or requests lets REQUESTS_CA_BUNDLE win.
        verify = check_verify(self._session.verify)
        session = self._own_session()
        ends = time.monotonic() + left
        # The read timeout bounds each socket read; the watch bounds the whole request, headers
        # and body, by cutting the connection when the attempt's time is up.
        with Watch(left) as watch:
            try:
                with session.request(
                    call.method, self._base_url + call.path, params=call.params, data=call.body,
                    headers=dict(call.headers), timeout=timeout, stream=True,
                    allow_redirects=False, verify=verify,
                ) as response:
                    watch.track(getattr(response.raw, "connection", None))
                    raw = _read_body(response, label, ends)
                    watch.finish()
                    if watch.fired:  # what was read ended where the cut did
                        raise _transport(label, f"timed out: no complete answer within "
                                         f"{left:.3g} s", "timeout", TimeoutError())
                    EVENTS.provider_request(self.provider, response.status_code)
                    return Answer(
                        label=label,
                        status=response.status_code,
                        content_type=response.headers.get("Content-Type", ""),
                        raw=raw,
                        received_at=datetime.fromtimestamp(self._clock(), UTC),
                        retry_after=self._retry_after(response, label),
                        redact=self._redact,
                    )
            except AttemptFailed as failure:
                EVENTS.provider_request(self.provider, failure.status)  # None: no answer
                raise
            except Exception as exc:  # noqa: BLE001 - whatever the transport raised, mapped
                EVENTS.provider_request(self.provider, None)
                if watch.fired:
                    raise _transport(label, f"timed out: no complete answer within {left:.3g} s",
                                     "timeout", exc) from None
                raise _transport_failure(label, exc) from None

    def _retry_after(self, response: requests.Response, label: str) -> float | None:
        header = response.headers.get("Retry-After")
        seconds = parse_retry_after(header, self._clock())
        if header is not None and seconds is None:
            _log.warning("payout_guard.retry_after_ignored", provider=self.provider,
                         request=label, header=printable(self._redact(header), 60))
        return seconds

    def _own_session(self) -> requests.Session:
        """Return the session, renewed in a forked child: a parent's sockets are not ours."""
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            if self._owns_session:
                # Not closed: closing could disturb the parent's TLS state on shared sockets.
                self._session = _new_session()
            else:
                # The caller's session keeps its settings; only the pooled connections go
                # (closing them in the child leaves the parent's sockets open).
                self._session.close()
        return self._session

    def _redact(self, text: str) -> str:
        for secret in self._secrets():
            if secret:
                text = text.replace(secret, _REDACTED)
        return text

    def _repr_fields(self) -> dict[str, object]:
        """Return the options the repr shows: every non-secret one that decides what is read.

        ``balance_name`` fingerprints them, so an option that changes the numbers read must be
        here.
        """
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


def _redacted(body: Any, redact: Callable[[str], str]) -> Any:
    """Return the decoded *body* with *redact* applied to every string and key, in place.

    Walked with a stack, not recursion: a body nested as deep as the parser allows must not
    overflow here.
    """
    if isinstance(body, str):
        return redact(body)
    stack: list[Any] = [body]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            for index, item in enumerate(node):
                if isinstance(item, str):
                    node[index] = redact(item)
                elif isinstance(item, list | dict):
                    stack.append(item)
        elif isinstance(node, dict):
            items = list(node.items())
            node.clear()
            for key, value in items:
                if isinstance(value, str):
                    value = redact(value)  # noqa: PLW2901 - the redacted value replaces it
                elif isinstance(value, list | dict):
                    stack.append(value)
                node[redact(key)] = value
    return body


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = DeadlineAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def _read_body(response: requests.Response, label: str, ends: float) -> bytes:
    """Return the body, read in chunks against the monotonic time *ends* (at most 1 MiB)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_content(chunk_size=_CHUNK):
        size += len(chunk)
        if size > _MAX_BODY:
            raise AttemptFailed(
                ProviderResponseError, f"{label}: answer body larger than {_MAX_BODY} bytes",
                reason="bad_body", status=response.status_code,
            )
        chunks.append(chunk)
        if time.monotonic() > ends:
            raise AttemptFailed(
                ProviderUnavailable, f"{label}: timed out reading the answer body",
                reason="timeout", status=response.status_code, retryable=True,
            )
    return b"".join(chunks)


def _transport_failure(label: str, exc: BaseException) -> AttemptFailed:
    if isinstance(exc, requests.exceptions.SSLError):
        return _transport(label, "TLS verification failed", "tls", exc, retry=False)
    if isinstance(exc, requests.Timeout):
        return _transport(label, "timed out", "timeout", exc)
    if isinstance(exc, requests.ConnectionError):
        timed_out = exc.args and isinstance(exc.args[0], urllib3.exceptions.ReadTimeoutError)
        return _transport(label, "connection failed", "timeout" if timed_out else
                          "connection_error", exc)
    if isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError | OSError
                  | http.client.HTTPException):
        return _transport(label, "request failed", "connection_error", exc)
    return _transport(label, "request failed", "connection_error", exc, retry=False)


def _transport(label: str, what: str, reason: str, exc: BaseException, *,
               retry: bool = True) -> AttemptFailed:
    # The transport's exception itself holds the request, its headers (credentials) and the
    # session: only its class name and text travel on, redacted by the fetcher.
    return AttemptFailed(
        ProviderUnavailable, f"{label}: {what} ({type(exc).__name__})", reason=reason,
        retryable=retry, cause=TransportFailure(type(exc).__name__, str(exc)),
    )


def safe_detail(*parts: object) -> str | None:
    """Return the provider's own error text (``msg``, ``data.err``) joined, or ``None``.

    The parts come from ``Answer.json()``, already redacted: the cut to 200 characters here
    cannot split a secret that is still in the text.
    """
    texts = [p if isinstance(p, str) else shown(p) for p in parts if p not in (None, "", {})]
    # The provider's words reach reasons, explain() and logs: one line, 200 characters.
    return printable("; ".join(texts)) or None
