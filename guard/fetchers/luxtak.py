"""Luxtak payout balance: ``POST /api/balance`` signed with SHA-256 of the sorted body + app key.

Luxtak's payout API is a re-skin of Pagsmile's Transfersmile payout API (PROVIDERS.md section 1).
``data[].amount`` is read as the spendable payout balance (``available``); Luxtak reports no frozen
or total amount. ``as_of`` is the provider's own ``time``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

import requests

from guard._models import BalanceSnapshot
from guard.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers import _parse as parse
from guard.fetchers._checks import check_secret
from guard.fetchers._http import DEFAULT_TIMEOUT, Answer, Call, HttpFetcher, Timeout
from guard.fetchers._http import safe_detail as detail_of
from guard.fetchers._retry import AttemptFailed, RetryPolicy
from guard.fetchers._signing import luxtak_signature

__all__ = ["LUXTAK_PRODUCTION_URL", "LUXTAK_SANDBOX_URL", "LuxtakFetcher"]

LUXTAK_SANDBOX_URL = "https://sandbox.luxtak.com"
"""Luxtak's sandbox host (docs-luxtak-com.pages.dev/payout/account-balance.html)."""
LUXTAK_PRODUCTION_URL = "https://api.luxtak.com"
"""Luxtak's production host (docs.luxtak.com/payout/submit-a-payout)."""

_PATH = "/api/balance"
_SUCCESS_CODES = frozenset({200, 0})
_RATE_LIMITED = 4004029
_SYSTEM_ERROR = 5001000
_AUTH_PREFIX = 4004  # 4004001..4004103: token, permission, AppId, Authorization, IP list
# merchant not existed / merchant inactive / app inactive / app not existed: the AppId (and
# key) name no usable account; as Pagsmile's merchant- and app-status-abnormal, a credential
# problem someone must fix, not an outage to retry later.
_ACCOUNT_CODES = frozenset({4001200, 4001201, 4001202, 4001203})
_NOT_FOUND = 4004004
_EXPIRY_CODES = frozenset({4001000, 4001009, 4001011})
# account is not available / account balance error: "limited retry, then alert".
_ACCOUNT_UNAVAILABLE = frozenset({5001100, 5001101})
# Fee and channel configuration, negative arrival amount, balance insufficient, checkout token:
# documented with HTTP 500 and never retried (PROVIDERS.md 1.6).
_NOT_RETRIED_5XX = frozenset({5001001, 5001002, 5001003, 5001004, 5001005, 5001102, 5001103})


class LuxtakFetcher(HttpFetcher):
    """Fetch payout balances from Luxtak.

    Example::

        with LuxtakFetcher("94FAC...", app_key) as fetcher:
            fetcher.fetch("BRL")  # [BalanceSnapshot(provider="luxtak", currency="BRL", ...)]

    Luxtak has no currency filter: every currency is fetched and checked; ``fetch("BRL")``
    returns only BRL. An "expired" answer is re-signed with a fresh timestamp and retried once,
    at once, in addition to the policy's attempts.

    Args:
        app_id: The payout platform App ID (sent as the ``AppId`` header).
        app_key: The app key that signs requests (never sent, logged or shown).
        base_url: ``LUXTAK_SANDBOX_URL`` (default) or ``LUXTAK_PRODUCTION_URL``.
        session: A ``requests.Session`` to use (left open by ``close``); by default the fetcher
            creates and reuses its own.
        timeout: Seconds to connect and to read, per attempt: ``(connect, read)`` or one number.
        retry: The retry policy (default ``RetryPolicy()``).
        allow_insecure: Allow plain ``http://`` to a non-loopback host.
        clock: Unix seconds, for the request timestamp (default ``time.time``).
        requests_per_minute: Balance requests a minute the guard lets through for this key
            (default ``None``, unlimited: Luxtak documents no limit; set one if yours has).
        settle_lag: Seconds a sent payout may take to show in a balance requested after it
            (default 30: Luxtak does not document when a payout leaves the balance).

    Raises:
        ConfigurationError: an empty credential, a bad URL, timeout or retry policy.
    """

    provider: ClassVar[str] = "luxtak"

    def __init__(
        self,
        app_id: str,
        app_key: str,
        *,
        base_url: str = LUXTAK_SANDBOX_URL,
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        allow_insecure: bool = False,
        clock: Callable[[], float] = time.time,
        requests_per_minute: int | None = None,
        settle_lag: float = 30.0,
    ) -> None:
        self._app_id = check_secret("app_id", app_id)
        self._app_key = check_secret("app_key", app_key)
        super().__init__(base_url, session=session, timeout=timeout, retry=retry,
                         allow_insecure=allow_insecure, clock=clock,
                         requests_per_minute=requests_per_minute, settle_lag=settle_lag)

    def _secrets(self) -> tuple[str, ...]:
        return (self._app_key,)

    def _repr_fields(self) -> dict[str, object]:
        return {"app_id": self._app_id}

    def _call(self, currency: str | None) -> Call:  # noqa: ARG002 - no currency filter exists
        params = {"timestamp": int(self._clock())}
        return Call(
            method="POST",
            path=_PATH,
            headers={
                "Content-Type": "application/json; charset=UTF-8",
                "AppId": self._app_id,
                "Authorization": luxtak_signature(params, self._app_key),
            },
            body=json.dumps(params, separators=(",", ":")).encode("utf-8"),
        )

    def _interpret(
        self, answer: Answer, currency: str | None  # noqa: ARG002 - the base filters by currency
    ) -> list[BalanceSnapshot]:
        body = answer.json_or_none()
        code = body.get("code") if isinstance(body, dict) else None
        if isinstance(body, dict) and not (answer.ok and code in _SUCCESS_CODES):
            failure = self._code_failure(answer, body)
            if failure is not None:
                raise failure
        failure = answer.status_failure(code=None if code is None else str(code),
                                        detail=_detail(body))
        if failure is not None:
            raise failure
        top = parse.obj(answer.json(), "<body>")
        code = parse.field(top, "code")
        if code not in _SUCCESS_CODES or isinstance(code, bool):
            raise parse.BodyError("code", f"expected 200 or 0 for success, got {parse.shown(code)}")
        as_of = _server_time(parse.field(top, "time"))
        rows = parse.seq(parse.field(top, "data"), "data")
        snapshots: list[BalanceSnapshot] = []
        for index, row in enumerate(rows):
            where = f"data[{index}]"
            item = parse.obj(row, where)
            cur = parse.currency(parse.field(item, "currency", where), f"{where}.currency")
            available = parse.amount(parse.field(item, "amount", where), cur, f"{where}.amount")
            snapshots.append(parse.snapshot(self.provider, cur, available, as_of=as_of,
                                            path=where))
        return parse.unique(snapshots, "data")

    def _code_failure(self, answer: Answer, body: dict[str, Any]) -> AttemptFailed | None:
        """Classify Luxtak's own error code (it may come with HTTP 200 or the matching status)."""
        code = body.get("code")
        if isinstance(code, bool) or not isinstance(code, int):
            return None
        text = _detail(body)
        if _is_expired(answer.status, code, text):
            skew = _skew(body.get("time"), self._clock())
            return answer.fail(
                ProviderAuthError, f"request has expired{skew}; check the local clock (NTP)",
                reason="expired", code=str(code), resign=True,
            )
        kind: type[ProviderError]
        retryable = code in {_RATE_LIMITED, _SYSTEM_ERROR} or code in _ACCOUNT_UNAVAILABLE
        if code == _RATE_LIMITED:
            kind, reason = ProviderRateLimited, "rate_limited"
        elif code == _SYSTEM_ERROR or code in _ACCOUNT_UNAVAILABLE:
            kind, reason = ProviderUnavailable, f"code_{code}"
        elif (code // 1000 == _AUTH_PREFIX and code != _NOT_FOUND) or code in _ACCOUNT_CODES:
            kind, reason = ProviderAuthError, f"code_{code}"
        elif answer.status >= 500 and not _client_error(code) and code not in _NOT_RETRIED_5XX:
            return None  # the status decides (a 5xx we do not know the code of)
        else:
            kind, reason = ProviderResponseError, f"code_{code}"
        message = f"provider error: {text}" if text else "provider error"
        return answer.fail(kind, message, reason=reason, code=str(code), retryable=retryable)


def _detail(body: object) -> str | None:
    if not isinstance(body, dict):
        return None
    data = body.get("data")
    err = data.get("err") if isinstance(data, dict) else None
    return detail_of(body.get("msg"), err)


def _client_error(code: int) -> bool:
    """Return whether *code* is one of the 400xxxx codes: the request's fault, never retried."""
    return code // 1_000_000 == 4


def _is_expired(status: int, code: int, text: str | None) -> bool:
    return "expired" in (text or "").lower() and (status == 400 or code in _EXPIRY_CODES)


def _skew(server_time: object, now: float) -> str:
    if isinstance(server_time, bool) or not isinstance(server_time, int):
        return ""
    off = int(now) - server_time
    return f" (server time {server_time}, local clock {int(now)}: off by {off} s)"


def _server_time(value: object) -> datetime:
    seconds = parse.integer(value, "time")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise parse.BodyError("time", f"{seconds} is not a usable Unix time") from None
