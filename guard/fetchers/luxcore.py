"""LuxCore balance: ``GET /api/v1/balance`` and ``/api/v1/balance/all`` with ``X-API-Key``.

Amounts come as strings of minor units and are converted with the currency's ISO 4217 exponent
(``"1200000"`` ARS is ``12000.00``). ``available = available_amount``, ``frozen =
frozen_amount``, ``total = balance_amount``; a body whose parts do not add up, or whose integer
mirrors (``new_balance``, ``available_balance``) disagree with the strings, or whose
``total_balances`` is not the number of ``/all`` entries, is refused.
``as_of`` is the local receive time: LuxCore sends no time of its own. PROVIDERS.md section 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

import requests

from guard._models import BalanceSnapshot
from guard.errors import ConfigurationError
from guard.fetchers import _parse as parse
from guard.fetchers._checks import check_secret
from guard.fetchers._http import DEFAULT_TIMEOUT, Answer, Call, HttpFetcher, Timeout
from guard.fetchers._http import safe_detail as detail_of
from guard.fetchers._retry import RetryPolicy

__all__ = ["LUXCORE_URL", "BalanceType", "LuxCoreFetcher"]

LUXCORE_URL = "https://api.lux-core.io"
"""LuxCore's API host; the key prefix (``qp_test_sk_`` / ``qp_prod_sk_``) picks the environment."""

BalanceType = Literal["main", "deposit", "withdrawal", "commission", "frozen"]
_BALANCE_TYPES = ("main", "deposit", "withdrawal", "commission", "frozen")
_ONE_PATH = "/api/v1/balance"
_ALL_PATH = "/api/v1/balance/all"
_UNSUPPORTED = "UNSUPPORTED_CURRENCY"


class LuxCoreFetcher(HttpFetcher):
    """Fetch merchant balances from LuxCore (API v1, ``X-API-Key``).

    Example::

        with LuxCoreFetcher(api_key) as fetcher:
            fetcher.fetch("ARS")  # [BalanceSnapshot(currency="ARS", available=Decimal("12000.00"),
                                  #                  frozen=Decimal("3000.00"), ...)]

    ``fetch("ARS")`` asks ``/api/v1/balance?currency=ARS&balance_type=<balance_type>``; a
    currency LuxCore answers ``UNSUPPORTED_CURRENCY`` for is not held, so the result is empty.
    ``fetch()`` asks ``/api/v1/balance/all`` and keeps the entries of ``balance_type``.

    Args:
        api_key: The API key (``qp_test_sk_...`` / ``qp_prod_sk_...``); never logged or shown.
        base_url: Default ``LUXCORE_URL``.
        balance_type: Which balance to read: ``main`` (default), ``deposit``, ``withdrawal``,
            ``commission`` or ``frozen``.
        session: A ``requests.Session`` to use (left open by ``close``); by default the fetcher
            creates and reuses its own.
        timeout: Seconds to connect and to read, per attempt: ``(connect, read)`` or one number.
        retry: The retry policy (default ``RetryPolicy()``).
        allow_insecure: Allow plain ``http://`` to a non-loopback host.
        clock: Unix seconds, for ``as_of`` (default ``time.time``).
        requests_per_minute: Balance requests a minute the guard lets through for this key
            (default 90: LuxCore documents 100 a minute on its standard endpoints, and the
            margin keeps a fleet clear of its 429s). ``None``: unlimited.
        settle_lag: Seconds a sent payout may take to show in a balance requested after it
            (default 2: LuxCore documents that creating a withdrawal moves its amount from
            available to frozen at once).

    Raises:
        ConfigurationError: an empty key, an unknown balance type, a bad URL, timeout or policy.
    """

    provider: ClassVar[str] = "luxcore"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = LUXCORE_URL,
        balance_type: BalanceType = "main",
        session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        allow_insecure: bool = False,
        clock: Callable[[], float] = time.time,
        requests_per_minute: int | None = 90,
        settle_lag: float = 2.0,
    ) -> None:
        self._api_key = check_secret("api_key", api_key)
        if balance_type not in _BALANCE_TYPES:
            raise ConfigurationError(
                f"must be one of {', '.join(_BALANCE_TYPES)}; got {balance_type!r}",
                path="balance_type",
            )
        self._balance_type: str = balance_type
        super().__init__(base_url, session=session, timeout=timeout, retry=retry,
                         allow_insecure=allow_insecure, clock=clock,
                         requests_per_minute=requests_per_minute, settle_lag=settle_lag)

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def _repr_fields(self) -> dict[str, object]:
        return {"balance_type": self._balance_type}

    def _call(self, currency: str | None) -> Call:
        headers = {"X-API-Key": self._api_key, "Accept": "application/json"}
        if currency is None:
            return Call(method="GET", path=_ALL_PATH, headers=headers)
        params = {"currency": currency, "balance_type": self._balance_type}
        return Call(method="GET", path=_ONE_PATH, headers=headers, params=params)

    def _interpret(self, answer: Answer, currency: str | None) -> list[BalanceSnapshot]:
        error = answer.json_or_none()
        code = None
        if isinstance(error, dict) and not answer.ok:
            code = error.get("error") if isinstance(error.get("error"), str) else None
            if currency is not None and answer.status == 400 and code == _UNSUPPORTED:
                return []
        failure = answer.status_failure(
            code=code, detail=detail_of(error.get("message")) if isinstance(error, dict) else None
        )
        if failure is not None:
            raise failure
        body = parse.obj(answer.json(), "<body>")
        if parse.field(body, "success") is not True:
            raise parse.BodyError("success", f"expected true, got {parse.shown(body['success'])}")
        if currency is not None:
            snapshot = self._snapshot(body, "", answer.received_at, single=True)
            if snapshot.currency != currency:
                raise parse.BodyError("currency", f"asked for {currency}, got {snapshot.currency}")
            return [snapshot]
        rows = parse.seq(parse.field(body, "balances"), "balances")
        if "total_balances" in body:
            # A count beyond the list is a partial answer (a page): the missing currencies
            # would read as not held.
            count = parse.integer(body["total_balances"], "total_balances")
            if count != len(rows):
                raise parse.BodyError(
                    "total_balances", f"says {count} balances, the body lists {len(rows)}"
                )
        snapshots = []
        for index, row in enumerate(rows):
            where = f"balances[{index}]"
            item = parse.obj(row, where)
            kind = parse.field(item, "balance_type", where)
            if kind == self._balance_type:
                snapshots.append(self._snapshot(item, where, answer.received_at, single=False))
        return parse.unique(snapshots, "balances")

    def _snapshot(self, item: dict[str, Any], where: str, as_of: datetime, *,
                  single: bool) -> BalanceSnapshot:
        cur = parse.currency(parse.field(item, "currency", where), _at(where, "currency"))
        if single and (kind := parse.field(item, "balance_type")) != self._balance_type:
            raise parse.BodyError(
                "balance_type", f"asked for {self._balance_type!r}, got {parse.shown(kind)}"
            )

        def minor(name: str) -> Decimal:
            value = parse.field(item, name, where)
            return parse.amount(value, cur, _at(where, name), minor=True)

        total = minor("balance_amount")
        available = minor("available_amount")
        frozen = minor("frozen_amount")
        if total != available + frozen:
            raise parse.BodyError(
                _at(where, "balance_amount"),
                f"total {total} {cur} is not available {available} + frozen {frozen}",
            )
        # The /all entries are documented without the mirrors; one that carries them anyway
        # is held to them all the same.
        for mirror, expected in (("new_balance", total), ("available_balance", available)):
            if mirror in item:
                value = parse.integer(item[mirror], _at(where, mirror))
                if parse.amount(value, cur, _at(where, mirror), minor=True) != expected:
                    raise parse.BodyError(
                        _at(where, mirror),
                        f"{value} disagrees with the string amount ({expected} {cur})",
                    )
        return parse.snapshot(self.provider, cur, available, frozen=frozen, total=total,
                              as_of=as_of, path=where or "<body>")


def _at(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name
