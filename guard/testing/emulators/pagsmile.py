"""Pagsmile payin "merchant assets" emulator: ``POST /merchant/assets`` with Basic auth.

Errors are answered with HTTP 200 and a string ``code`` (the docs give no HTTP statuses); amounts
are JSON numbers with 6 decimals, written from ``Decimal`` text. See PROVIDERS.md section 3.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Context, Decimal, Inexact, InvalidOperation
from typing import ClassVar

from guard.testing.emulators._base import (
    EmulatorBase,
    Fault,
    ReceivedRequest,
    Reply,
    parse_json,
)
from rules.money import to_decimal

__all__ = ["PagsmileEmulator"]

ASSETS_PATH = "/merchant/assets"
_SCALE = Decimal("0.000001")
# Wide enough that quantizing and summing amounts never rounds; a value it cannot hold raises.
_EXACT = Context(prec=60, traps=[InvalidOperation, Inexact])
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
_DEFAULT_BALANCES: Mapping[str, str] = {"BRL": "6000000.00"}
_UNAVAILABLE = {"code": "20000", "msg": "Service Currently Unavailable"}
_FAULT_STATUS = {
    Fault.HTTP_500: 500,
    Fault.HTTP_502: 502,
    Fault.HTTP_503: 503,
    Fault.RATE_LIMIT: 429,
    Fault.RATE_LIMIT_NO_RETRY_AFTER: 429,
    Fault.PROVIDER_BUSY: 200,
}


@dataclass(frozen=True)
class _Asset:
    balance: Decimal
    payout: Decimal

    def document(self, currency: str, wrong_types: bool) -> dict[str, object]:
        net_income = _EXACT.add(self.balance, self.payout)
        return {
            "currency": currency,
            "total_revenue": net_income,
            "net_income": net_income,
            "balance": "lots" if wrong_types else self.balance,
            "payout": self.payout,
        }


def _failed(code: str, msg: str, sub_code: str, sub_msg: str) -> Reply:
    return Reply.json(200, {"code": code, "msg": msg, "sub_code": sub_code, "sub_msg": sub_msg})


def _business_failed(sub_code: str, sub_msg: str) -> Reply:
    return _failed("40002", "Business Failed", sub_code, sub_msg)


def _missing(sub_code: str, sub_msg: str) -> Reply:
    return _failed("40001", "Missing Required Arguments", sub_code, sub_msg)


def _six_decimals(value: object, what: str) -> Decimal:
    number = to_decimal(value)
    try:
        exact = number.quantize(_SCALE, context=_EXACT)
    except Inexact:
        raise ValueError(f"{what}: {value!r} has more than 6 decimal places") from None
    except InvalidOperation:
        raise ValueError(f"{what}: {value!r} has too many digits") from None
    if exact < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return exact


class PagsmileEmulator(EmulatorBase):
    """A loopback Pagsmile ``merchant/assets`` API checking ``Authorization: Basic`` auth.

    Args:
        balances: Currency -> ``assets[].balance`` in major units. Defaults to BRL 6000000.00.
        app_id: The app id in the Basic credentials and the body's ``app_id``.
        security_key: The secret in the Basic credentials (never shown in the repr).
        port: Port to bind on 127.0.0.1; 0 picks a free one.
        requests_per_minute: Balance requests answered per sliding 60 s window, beyond which
            the provider's 429 is sent (see ``EmulatorBase``); ``None`` for no limit.

    Attributes:
        slow_seconds: How long the ``slow`` fault waits before answering.
    """

    _balance_paths: ClassVar[frozenset[str]] = frozenset({ASSETS_PATH})

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal | str | int] | None = None,
        app_id: str = "21600000000000001",
        security_key: str = (
            "Pagsmile_sk_7ff69a413860c556bbd2ca14f009fe8d3df455b3e951ad7d0f3ce70be580689a"
        ),
        port: int = 0,
        requests_per_minute: int | None = None,
    ) -> None:
        super().__init__(port=port, requests_per_minute=requests_per_minute)
        self.app_id = app_id
        self.security_key = security_key
        self._assets: dict[str, _Asset] = {}
        for currency, amount in (_DEFAULT_BALANCES if balances is None else balances).items():
            self.set_balance(currency, amount)

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not started"
        return f"<PagsmileEmulator {where} app_id={self.app_id!r} running={self.running}>"

    def set_balance(
        self,
        currency: str,
        available: Decimal | str | int,
        *,
        payout: Decimal | str | int | None = None,
    ) -> None:
        """Set *currency*'s ``balance`` (and optionally its cumulative ``payout``).

        ``net_income`` and ``total_revenue`` follow as ``balance + payout`` (no fees, nothing
        settled), so the asset row stays consistent with the docs' history rows.

        Args:
            currency: The code as it should appear in ``assets[].currency``.
            available: Major units, at most 6 decimals.
            payout: Cumulative amount moved to the payout account; unchanged when ``None``
                (0 for a new currency).

        Raises:
            TypeError: An amount is a float or another type that is not an amount.
            ValueError: Empty currency, a negative amount or more than 6 decimals.
        """
        if not isinstance(currency, str) or not currency.strip():
            raise ValueError(f"currency must be a non-empty string, got {currency!r}")
        code = currency.strip()
        balance = _six_decimals(available, f"Pagsmile {code} balance")
        moved = None if payout is None else _six_decimals(payout, f"Pagsmile {code} payout")
        with self._lock:
            old = self._assets.get(code)
            if moved is None:
                moved = old.payout if old is not None else Decimal("0").quantize(_SCALE)
            self._assets[code] = _Asset(balance=balance, payout=moved)

    def _authenticated(self, request: ReceivedRequest) -> bool:
        scheme, _, token = (request.header("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        expected = f"{self.app_id}:{self.security_key}"
        return hmac.compare_digest(decoded.encode(), expected.encode())

    def _route(self, request: ReceivedRequest) -> Reply:
        if request.path != ASSETS_PATH or request.method != "POST":
            return Reply.json(404, {"code": "40004", "msg": "Method Not Supported"})
        if not self._authenticated(request):
            return _business_failed("invalid-signature", "invalid signature")
        try:
            body = parse_json(request.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return _missing("missing-arguments", "request body must be a JSON object")
        rejection = self._check_body(body)
        if rejection is not None:
            return rejection
        currency = body.get("currency")
        wanted = None if currency in (None, "") else str(currency)
        return self._answer_balance(request, lambda wrong: self._success(wanted, wrong))

    def _check_body(self, body: dict[str, object]) -> Reply | None:
        for name in ("app_id", "timestamp", "version"):
            if body.get(name) in (None, ""):
                return _missing(f"missing-{name}", f"{name} is required")
        if body["app_id"] != self.app_id:
            return _business_failed("app-not-match", "app_id does not match the credentials")
        timestamp = body["timestamp"]
        if not isinstance(timestamp, str) or not _is_timestamp(timestamp):
            return _missing("invalid-timestamp", "timestamp must be yyyy-MM-dd HH:mm:ss")
        if body["version"] != "2.0":
            return _missing("invalid-version", "version must be 2.0")
        return self._check_currency(body.get("currency"))

    def _check_currency(self, currency: object) -> Reply | None:
        if currency in (None, ""):
            return None
        with self._lock:
            held = isinstance(currency, str) and currency in self._assets
        if held:
            return None
        return _business_failed("currency-not-supported", f"{currency} is not supported")

    def _success(self, currency: str | None, wrong_types: bool) -> Reply:
        with self._lock:
            rows = [
                asset.document(code, wrong_types)
                for code, asset in self._assets.items()
                if currency is None or code == currency
            ]
        return Reply.json(200, {"code": "10000", "msg": "Success", "assets": rows, "history": []})

    def _fault_reply(self, fault: Fault) -> Reply:
        return Reply.json(_FAULT_STATUS[fault], _UNAVAILABLE)


def _is_timestamp(value: str) -> bool:
    if len(value) != 19:
        return False
    try:
        datetime.strptime(value, _TIMESTAMP_FORMAT)  # noqa: DTZ007 - only the format is checked
    except ValueError:
        return False
    return True
