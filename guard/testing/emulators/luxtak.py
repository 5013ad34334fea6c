"""Luxtak payout balance API emulator: ``POST /api/balance`` signed with SHA-256.

The signature is lowercase hex ``sha256(sorted non-empty top-level params as k=v joined by '&'
+ app_key)`` (plain SHA-256, not HMAC), checked against the JSON body exactly as the client sent
it. See PROVIDERS.md section 1.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import ClassVar

from guard.testing.emulators._base import (
    EmulatorBase,
    Fault,
    ReceivedRequest,
    Reply,
    parse_json,
    render_json,
)
from rules.money import to_decimal

__all__ = ["LuxtakEmulator", "luxtak_signature"]

BALANCE_PATH = "/api/balance"
_DEFAULT_BALANCES: Mapping[str, str] = {
    "USD": "551.38",
    "GBP": "0",
    "EUR": "0",
    "BRL": "99002.23",
    "MXN": "0",
}
_STATUS_FAULTS = {Fault.HTTP_500: 500, Fault.HTTP_502: 502, Fault.HTTP_503: 503}


def luxtak_signature(params: Mapping[str, object], app_key: str) -> str:
    """Return the Luxtak ``Authorization`` value for the top-level body *params*.

    Empty values (``None``, ``""``, ``[]``, ``{}``) are dropped, keys are sorted in Python
    ``sorted()`` order, pairs are joined as ``key=value`` with ``&`` and *app_key* is appended.
    Values are written raw: ints as digits, ``Decimal`` as parsed, booleans as ``true``/``false``,
    nested values as compact JSON. ``{"timestamp": 1642075807}`` with ``"ABCDE"`` gives
    ``12d71e4a...8b98``.

    Returns:
        The lowercase hex SHA-256 digest.
    """
    pairs = [
        f"{key}={_sign_value(value)}"
        for key, value in sorted(params.items())
        if value is not None and value not in ("", [], {})
    ]
    return hashlib.sha256(("&".join(pairs) + app_key).encode("utf-8")).hexdigest()


def _sign_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    return render_json(value)


class LuxtakEmulator(EmulatorBase):
    """A loopback Luxtak balance API that checks ``AppId`` + ``Authorization`` like Luxtak.

    Args:
        balances: Currency -> amount (major units; ``str``/``Decimal``/``int``). Strings are
            sent exactly as given. Defaults to the docs' example (USD 551.38, BRL 99002.23, ...).
        app_id: The ``AppId`` the client must send.
        app_key: The key the client signs with (never shown in the repr).
        timestamp_window: Seconds a body ``timestamp`` may differ from the server clock.
        clock: The server clock (Unix seconds); ``server_time_offset`` is added to it.
        port: Port to bind on 127.0.0.1; 0 picks a free one.
        requests_per_minute: Balance requests answered per sliding 60 s window, beyond which
            the provider's 429 is sent (see ``EmulatorBase``); ``None`` for no limit.

    Attributes:
        server_time_offset: Seconds added to *clock*, to skew the server against the client.
        slow_seconds: How long the ``slow`` fault waits before answering.
    """

    _balance_paths: ClassVar[frozenset[str]] = frozenset({BALANCE_PATH})
    _supported_faults: ClassVar[frozenset[Fault]] = frozenset(Fault)

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal | str | int] | None = None,
        app_id: str = "LT_TEST_APP_0001",
        app_key: str = "lt_test_key_5f2b7c9e0d4a4e1b8c3f6a7d9e0b1c2d",
        timestamp_window: float = 300.0,
        clock: Callable[[], float] = time.time,
        port: int = 0,
        requests_per_minute: int | None = None,
    ) -> None:
        super().__init__(port=port, requests_per_minute=requests_per_minute)
        self.app_id = app_id
        self.app_key = app_key
        self.timestamp_window = timestamp_window
        self.server_time_offset = 0.0
        self._clock = clock
        self._balances: dict[str, str] = {}
        for currency, amount in (_DEFAULT_BALANCES if balances is None else balances).items():
            self.set_balance(currency, amount)

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not started"
        return f"<LuxtakEmulator {where} app_id={self.app_id!r} running={self.running}>"

    def set_balance(self, currency: str, available: Decimal | str | int) -> None:
        """Set the ``amount`` sent for *currency* (added at the end when new).

        Args:
            currency: The code as it should appear in ``data[].currency``.
            available: Major units; a ``str`` is sent exactly as given (``"0"``, ``"551.38"``).

        Raises:
            TypeError: *available* is a float or another type that is not an amount.
            ValueError: *currency* is empty, or *available* is not a finite decimal number.
        """
        if not isinstance(currency, str) or not currency.strip():
            raise ValueError(f"currency must be a non-empty string, got {currency!r}")
        number = to_decimal(available)
        text = available.strip() if isinstance(available, str) else format(number, "f")
        with self._lock:
            self._balances[currency.strip()] = text

    def server_time(self) -> float:
        """Return the server clock: ``clock() + server_time_offset``."""
        return self._clock() + self.server_time_offset

    def _body(self, status: int, code: int, msg: str, data: object) -> Reply:
        return Reply.json(
            status, {"code": code, "msg": msg, "time": int(self.server_time()), "data": data}
        )

    def _invalid(self, err: str) -> Reply:
        return self._body(400, 4001000, "invalid parameter", {"err": err})

    def _route(self, request: ReceivedRequest) -> Reply:
        rejection = self._check_headers(request) or self._check_body(request)
        return rejection or self._answer_balance(request, self._success)

    def _check_headers(self, request: ReceivedRequest) -> Reply | None:
        if request.path != BALANCE_PATH or request.method != "POST":
            return self._body(404, 4004004, "not found", {})
        app_id = request.header("AppId")
        if not app_id:
            return self._body(401, 4004100, "MerchantId or AppId is required", {})
        if not request.header("Authorization"):
            return self._body(401, 4004101, "Authorization is required", {})
        if not hmac.compare_digest(app_id.encode(), self.app_id.encode()):
            return self._body(401, 4004003, "permission denied", {})
        return None

    def _check_body(self, request: ReceivedRequest) -> Reply | None:
        try:
            params = parse_json(request.body)
        except ValueError:
            params = None
        if not isinstance(params, dict):
            return self._invalid("request body must be a JSON object")
        signature = (request.header("Authorization") or "").encode()
        if not hmac.compare_digest(signature, luxtak_signature(params, self.app_key).encode()):
            return self._body(401, 4004003, "permission denied", {})
        return self._check_timestamp(params.get("timestamp"))

    def _check_timestamp(self, timestamp: object) -> Reply | None:
        if timestamp is None:
            return self._invalid("timestamp is required")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            return self._invalid("timestamp must be an integer number of Unix seconds")
        if abs(timestamp - self.server_time()) > self.timestamp_window:
            return self._invalid("request has expired")
        return None

    def _success(self, wrong_types: bool) -> Reply:
        with self._lock:
            rows = list(self._balances.items())
        data = [
            {"currency": currency, "amount": {"value": amount} if wrong_types else amount}
            for currency, amount in rows
        ]
        return self._body(200, 200, "success", data)

    def _fault_reply(self, fault: Fault) -> Reply:
        if fault in _STATUS_FAULTS:
            return self._body(_STATUS_FAULTS[fault], 5001000, "system error", {})
        if fault in (Fault.RATE_LIMIT, Fault.RATE_LIMIT_NO_RETRY_AFTER):
            return self._body(429, 4004029, "too many requests", {})
        if fault is Fault.EXPIRED:
            return self._invalid("request has expired")
        return self._body(200, 5001000, "system error", {})  # Fault.PROVIDER_BUSY
