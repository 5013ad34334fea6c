"""Pagsmile payin assets: ``POST /merchant/assets`` with ``Authorization: Basic``.

Amounts are JSON numbers with six decimals, decoded as ``Decimal`` (never ``float``) and
quantized exactly to the currency (``6000000.000000`` BRL is ``6000000.00``). ``available`` is
``assets[].balance`` by default; the docs do not define the fields, so which one is read is
configurable. Pagsmile reports no frozen amount and no time: ``as_of`` is the local receive time.
Errors come with HTTP 200 and a string ``code``; the client keys off the code. PROVIDERS.md
section 3.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

import requests

from guard._models import BalanceSnapshot
from guard.errors import (
    ConfigurationError,
    ProviderAuthError,
    ProviderError,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers import _parse as parse
from guard.fetchers._checks import check_secret
from guard.fetchers._http import DEFAULT_TIMEOUT, Answer, Call, HttpFetcher, Timeout
from guard.fetchers._http import safe_detail as detail_of
from guard.fetchers._retry import AttemptFailed, RetryPolicy
from guard.fetchers._signing import basic_authorization

__all__ = ["PAGSMILE_PRODUCTION_URL", "PAGSMILE_SANDBOX_URL", "AssetField", "PagsmileFetcher"]

PAGSMILE_SANDBOX_URL = "https://gateway-test.pagsmile.com"
"""Pagsmile's payin sandbox host (docs.pagsmile.com/payin/account-balance)."""
PAGSMILE_PRODUCTION_URL = "https://gateway.pagsmile.com"
"""Pagsmile's payin production host (docs.pagsmile.com/payin/submit-a-payin)."""

AssetField = Literal["balance", "net_income", "total_revenue", "payout"]
_ASSET_FIELDS = ("balance", "net_income", "total_revenue", "payout")
_PATH = "/merchant/assets"
_SUCCESS = "10000"
_UNAVAILABLE = "20000"
_BUSINESS_FAILED = "40002"
_AUTH_SUB_CODES = frozenset({
    "missing-signature-config", "invalid-signature", "app-not-match",
    "merchant-status-abnormal", "app-status-abnormal",
})
_UNSUPPORTED = "currency-not-supported"
# The code table's codes that are never retried (PROVIDERS.md 3.5): "key off code, not the
# HTTP status", so one of them with a 5xx status is not an outage.
_NOT_RETRIED = frozenset({
    "40001", "40002", "40004", "40005", "30000", "30001", "30002", "30003", "30004", "70001",
    "90001",
})
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_APP_ID_MAX = 32  # "Max. 32 chars" (docs.pagsmile.com/payin/account-balance)


class PagsmileFetcher(HttpFetcher):
    """Fetch payin account balances ("merchant assets") from Pagsmile.

    Example::

        with PagsmileFetcher("16258292145316638", security_key) as fetcher:
            fetcher.fetch("BRL")  # [BalanceSnapshot(currency="BRL", available=Decimal(...))]

    Each request carries ``app_id``, a UTC ``timestamp`` (``yyyy-MM-dd HH:mm:ss``) stamped
    immediately before it is sent, ``version`` ``"2.0"`` and, for ``fetch("BRL")``, the
    ``currency``. A currency Pagsmile answers ``currency-not-supported`` for is not held: the
    result is empty.

    Args:
        app_id: The app id (Basic auth user and body ``app_id``); may not contain ``:``.
        security_key: The app's security key (Basic auth password); never logged or shown.
        base_url: ``PAGSMILE_SANDBOX_URL`` (default) or ``PAGSMILE_PRODUCTION_URL``.
        available_field: The ``assets[]`` field read as ``available``: ``balance`` (default,
            what remains in the payin account), ``net_income``, ``total_revenue`` or ``payout``.
        session: A ``requests.Session`` to use (left open by ``close``); by default the fetcher
            creates and reuses its own.
        timeout: Seconds to connect and to read, per attempt: ``(connect, read)`` or one number.
        retry: The retry policy (default ``RetryPolicy()``).
        allow_insecure: Allow plain ``http://`` to a non-loopback host.
        clock: Unix seconds, for the timestamp and ``as_of`` (default ``time.time``).
        requests_per_minute: Balance requests a minute the guard lets through for this key
            (default ``None``, unlimited: Pagsmile documents no limit; set one if yours has).
        settle_lag: Seconds a sent payout may take to show in a balance requested after it
            (default 30: Pagsmile does not document when a payout leaves its assets).

    Raises:
        ConfigurationError: an empty credential, an ``app_id`` with ``:`` or longer than 32
            characters, an unknown ``available_field``, a bad URL, timeout or retry policy.
    """

    provider: ClassVar[str] = "pagsmile"

    def __init__(
        self,
        app_id: str,
        security_key: str,
        *,
        base_url: str = PAGSMILE_SANDBOX_URL,
        available_field: AssetField = "balance",
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        allow_insecure: bool = False,
        clock: Callable[[], float] = time.time,
        requests_per_minute: int | None = None,
        settle_lag: float = 30.0,
    ) -> None:
        self._app_id = check_secret("app_id", app_id)
        if ":" in app_id:
            raise ConfigurationError("must not contain ':' (it separates Basic credentials)",
                                     path="app_id")
        if len(app_id) > _APP_ID_MAX:
            raise ConfigurationError(
                f"must be at most {_APP_ID_MAX} characters (Pagsmile's limit), got "
                f"{len(app_id)}", path="app_id",
            )
        self._security_key = check_secret("security_key", security_key)
        if available_field not in _ASSET_FIELDS:
            raise ConfigurationError(
                f"must be one of {', '.join(_ASSET_FIELDS)}; got {available_field!r}",
                path="available_field",
            )
        self._field: str = available_field
        self._authorization = basic_authorization(app_id, security_key)
        super().__init__(base_url, session=session, timeout=timeout, retry=retry,
                         allow_insecure=allow_insecure, clock=clock,
                         requests_per_minute=requests_per_minute, settle_lag=settle_lag)

    def _secrets(self) -> tuple[str, ...]:
        # The Basic token is the key in base64: it must not show either.
        return (self._security_key, self._authorization.removeprefix("Basic "))

    def _repr_fields(self) -> dict[str, object]:
        return {"app_id": self._app_id, "available_field": self._field}

    def _call(self, currency: str | None) -> Call:
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime(_TIMESTAMP_FORMAT)
        body = {"app_id": self._app_id, "timestamp": stamp, "version": "2.0"}
        if currency is not None:
            body["currency"] = currency
        return Call(
            method="POST",
            path=_PATH,
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "Authorization": self._authorization,
            },
            body=json.dumps(body, separators=(",", ":")).encode("utf-8"),
        )

    def _interpret(self, answer: Answer, currency: str | None) -> list[BalanceSnapshot]:
        body = answer.json_or_none()
        code = _code(body)
        if isinstance(body, dict) and code is not None and code != _SUCCESS:
            if code == _BUSINESS_FAILED and body.get("sub_code") == _UNSUPPORTED and currency:
                return []
            failure = _code_failure(answer, code, body)
            if failure is not None:
                raise failure
        failure = answer.status_failure(code=code, detail=_detail(body))
        if failure is not None:
            raise failure
        top = parse.obj(answer.json(), "<body>")
        if _code(top) != _SUCCESS:
            raise parse.BodyError("code", f"expected '10000' for success, got "
                                          f"{parse.shown(top.get('code'))}")
        rows = parse.seq(parse.field(top, "assets"), "assets")
        snapshots = []
        for index, row in enumerate(rows):
            where = f"assets[{index}]"
            item = parse.obj(row, where)
            cur = parse.currency(parse.field(item, "currency", where), f"{where}.currency")
            value = parse.field(item, self._field, where)
            available = parse.amount(value, cur, f"{where}.{self._field}")
            snapshots.append(parse.snapshot(self.provider, cur, available,
                                            as_of=answer.received_at, path=where))
        return parse.unique(snapshots, "assets")


def _code(body: object) -> str | None:
    if not isinstance(body, dict):
        return None
    code = body.get("code")
    if isinstance(code, bool) or not isinstance(code, str | int):
        return None
    return str(code)


def _detail(body: object) -> str | None:
    if not isinstance(body, dict):
        return None
    return detail_of(body.get("msg"), body.get("sub_code"), body.get("sub_msg"))


def _code_failure(answer: Answer, code: str, body: dict[str, Any]) -> AttemptFailed | None:
    """Classify Pagsmile's own error code (sent with HTTP 200, or a matching status)."""
    kind: type[ProviderError]
    if answer.status == 429:
        return None  # "too many requests" is the status's to say, whatever the body's code
    if code == _UNAVAILABLE:
        kind = ProviderUnavailable
    elif code == _BUSINESS_FAILED and body.get("sub_code") in _AUTH_SUB_CODES:
        kind = ProviderAuthError
    elif not answer.ok and code not in _NOT_RETRIED:
        return None  # an unknown code with an error status: the status decides
    else:
        kind = ProviderResponseError
    text = _detail(body)
    message = f"provider error: {text}" if text else "provider error"
    return answer.fail(kind, message, reason=f"code_{code}", code=code,
                       retryable=code == _UNAVAILABLE)
