"""LuxCore balance API emulator: ``X-API-Key`` auth, minor-unit strings, withdrawals that freeze.

Serves ``GET /api/v1/balance``, ``GET /api/v1/balance/all`` and ``POST /api/v1/withdrawals``.
Amounts are kept as integers in minor units; the exponent comes from ISO 4217. As the balance
page documents, creating a withdrawal moves its amount from available to frozen at once, and
completing it takes it out of frozen. See PROVIDERS.md section 2.
"""

from __future__ import annotations

import heapq
import hmac
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Self

from guard._money import minor_to_major
from guard.testing.emulators._base import (
    EmulatorBase,
    Fault,
    ReceivedRequest,
    Reply,
    parse_json,
)
from rules.money import normalize_currency, quantize_exact, to_decimal

__all__ = ["LuxCoreEmulator"]

BALANCE_PATH = "/api/v1/balance"
BALANCE_ALL_PATH = "/api/v1/balance/all"
WITHDRAWALS_PATH = "/api/v1/withdrawals"
BALANCE_TYPES = ("main", "deposit", "withdrawal", "commission", "frozen")
_FAULT_ERRORS = {
    Fault.HTTP_500: (500, "Internal server error", "INTERNAL_SERVER_ERROR"),
    Fault.HTTP_502: (502, "Bad gateway", "BAD_GATEWAY"),
    Fault.HTTP_503: (503, "Service temporarily unavailable", "SERVICE_UNAVAILABLE"),
    Fault.RATE_LIMIT: (429, "Too many requests", "RATE_LIMIT_EXCEEDED"),
    Fault.RATE_LIMIT_NO_RETRY_AFTER: (429, "Too many requests", "RATE_LIMIT_EXCEEDED"),
    Fault.PROVIDER_BUSY: (500, "Internal server error", "INTERNAL_SERVER_ERROR"),
}


@dataclass
class _Account:
    available: int
    frozen: int


@dataclass
class _Withdrawal:
    id: str
    currency: str
    amount: int
    merchant_reference: str | None
    status: str = "pending"

    def document(self) -> dict[str, object]:
        return {
            "success": True,
            "id": self.id,
            "status": self.status,
            "amount": str(self.amount),
            "currency": self.currency,
            "merchant_reference": self.merchant_reference,
        }


def _withdrawal_request(request: ReceivedRequest) -> tuple[int, str, str | None] | Reply:
    """Return ``(minor amount, currency, merchant_reference)`` from a withdrawal body."""
    try:
        body = parse_json(request.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return _error(400, "Request body must be a JSON object", "VALIDATION_ERROR")
    amount, currency, reference = (
        body.get("amount"),
        body.get("currency"),
        body.get("merchant_reference"),
    )
    if isinstance(amount, int) and not isinstance(amount, bool):
        amount = str(amount)
    if not isinstance(amount, str) or not (amount.isascii() and amount.isdigit()):
        return _error(
            400, "amount must be a positive whole number of minor units", "VALIDATION_ERROR"
        )
    if int(amount) <= 0:
        return _error(400, "amount must be positive", "VALIDATION_ERROR")
    if not isinstance(currency, str):
        return _error(400, "currency must be an ISO 4217 code string", "VALIDATION_ERROR")
    if reference is not None and (not isinstance(reference, str) or not reference):
        return _error(400, "merchant_reference must be a non-empty string", "VALIDATION_ERROR")
    return int(amount), currency, reference


def _error(status: int, message: str, error: str) -> Reply:
    return Reply.json(status, {"statusCode": status, "message": message, "error": error})


class LuxCoreEmulator(EmulatorBase):
    """A loopback LuxCore v1 API: balances in minor units and withdrawals that move funds.

    Args:
        balances: Currency -> available funds in major units (frozen starts at 0). Defaults to
            the docs' example: ARS 12000.00 available + 3000.00 frozen, and MXN 8500.00. Only
            these currencies (and ones added with ``set_balance``) are served; any other
            ``currency`` query gets ``400 UNSUPPORTED_CURRENCY``.
        api_key: The ``X-API-Key`` the client must send (never shown in the repr).
        merchant_id: The ``merchant_id`` written in every body.
        port: Port to bind on 127.0.0.1; 0 picks a free one.
        requests_per_minute: Balance requests answered per sliding 60 s window (LuxCore
            documents 100 a minute per key for its standard endpoints); beyond it, status 429
            with its ``RATE_LIMIT_EXCEEDED`` body and ``Retry-After``. ``None`` for no limit.
        complete_after: Seconds after which each withdrawal still pending completes by itself
            (its amount leaves frozen funds), as the real provider's do; ``None`` (the default)
            leaves them pending until ``complete_withdrawal``. Timed on the real monotonic clock
            by a background thread that runs while the emulator serves.
        monotonic: The clock the rate window is measured on.

    Attributes:
        slow_seconds: How long the ``slow`` fault waits before answering.
    """

    _balance_paths: ClassVar[frozenset[str]] = frozenset({BALANCE_PATH, BALANCE_ALL_PATH})

    def __init__(
        self,
        *,
        balances: Mapping[str, Decimal | str | int] | None = None,
        api_key: str = "qp_test_sk_emulator_8d3f0b6a2c7e4f19",
        merchant_id: int = 123,
        port: int = 0,
        requests_per_minute: int | None = None,
        complete_after: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(port=port, requests_per_minute=requests_per_minute, monotonic=monotonic)
        if complete_after is not None and (
            isinstance(complete_after, bool)
            or not isinstance(complete_after, int | float)
            or not complete_after >= 0
        ):
            raise ValueError(f"complete_after must be seconds >= 0 or None, got {complete_after!r}")
        self.api_key = api_key
        self.merchant_id = merchant_id
        self.complete_after = complete_after
        self._accounts: dict[str, _Account] = {}
        self._withdrawals: dict[str, _Withdrawal] = {}
        self._by_reference: dict[str, str] = {}
        self._refused = 0
        self._due: list[tuple[float, str]] = []  # (monotonic due time, withdrawal id), a heap
        self._scheduled = threading.Condition(self._lock)
        self._completer: threading.Thread | None = None
        if balances is None:  # the docs' example: ARS 1500000 total, 300000 of it frozen
            self.set_balance("ARS", "12000.00", frozen="3000.00")
            self.set_balance("MXN", "8500.00")
        for currency, amount in (balances or {}).items():
            self.set_balance(currency, amount)

    def __repr__(self) -> str:
        where = self.url if self._bound_port is not None else "not started"
        return f"<LuxCoreEmulator {where} merchant_id={self.merchant_id} running={self.running}>"

    def start(self) -> Self:
        """Serve (see ``EmulatorBase.start``), and complete withdrawals when ``complete_after``."""
        super().start()
        if self.complete_after is not None and self._completer is None:
            self._completer = threading.Thread(
                target=self._complete_when_due,
                name=f"LuxCoreEmulator:{self._bound_port}:completer",
                daemon=True,
            )
            self._completer.start()
        return self

    def stop(self) -> None:
        """Stop serving and completing withdrawals (pending ones stay pending)."""
        super().stop()
        completer, self._completer = self._completer, None
        if completer is not None:
            with self._lock:
                self._scheduled.notify_all()
            completer.join()

    # -- in-process control ------------------------------------------------------------------

    def set_balance(
        self, currency: str, available: Decimal | str | int, frozen: Decimal | str | int = "0"
    ) -> None:
        """Set *currency*'s available and frozen funds, in major units.

        Raises:
            TypeError: An amount is a float or another type that is not an amount.
            ValueError: Unknown currency, a negative amount, or more decimals than it has.
        """
        code = normalize_currency(currency)
        account = _Account(self._to_minor(available, code), self._to_minor(frozen, code))
        with self._lock:
            self._accounts[code] = account

    def create_withdrawal(self, currency: str, amount: Decimal | str | int) -> str:
        """Create a pending withdrawal: available falls and frozen rises by *amount* (major units).

        Returns:
            The withdrawal id.

        Raises:
            TypeError: *amount* is a float or another type that is not an amount.
            ValueError: Unknown or unserved currency, a bad amount, or insufficient available funds.
        """
        code = normalize_currency(currency)
        minor = self._to_minor(amount, code)
        if minor <= 0:
            raise ValueError(f"withdrawal amount must be positive, got {amount!r}")
        with self._lock:
            withdrawal, problem = self._create_locked(code, minor, None)
        if withdrawal is None:
            raise ValueError(problem)
        return withdrawal.id

    def complete_withdrawal(self, withdrawal_id: str) -> None:
        """Complete a pending withdrawal: its amount leaves frozen funds.

        Raises:
            KeyError: No withdrawal has this id.
            ValueError: The withdrawal is no longer pending.
        """
        with self._lock:
            self._complete_locked(self._pending_locked(withdrawal_id))

    def fail_withdrawal(self, withdrawal_id: str) -> None:
        """Fail a pending withdrawal: its amount moves from frozen back to available.

        Raises:
            KeyError: No withdrawal has this id.
            ValueError: The withdrawal is no longer pending.
        """
        with self._lock:
            withdrawal = self._pending_locked(withdrawal_id)
            account = self._accounts[withdrawal.currency]
            account.frozen -= withdrawal.amount
            account.available += withdrawal.amount
            withdrawal.status = "failed"

    def funds(self, currency: str) -> tuple[Decimal, Decimal]:
        """Return *currency*'s ``(available, frozen)`` in major units, without a request.

        Raises:
            KeyError: The currency is not served.
        """
        code = normalize_currency(currency)
        with self._lock:
            account = self._accounts[code]
            minor = (account.available, account.frozen)
        return minor_to_major(minor[0], code), minor_to_major(minor[1], code)

    @property
    def refused_withdrawals(self) -> int:
        """Return how many withdrawals were refused over HTTP for insufficient available funds."""
        with self._lock:
            return self._refused

    def withdrawal_status(self, withdrawal_id: str) -> str:
        """Return ``"pending"``, ``"completed"`` or ``"failed"``.

        Raises:
            KeyError: No withdrawal has this id.
        """
        with self._lock:
            return self._withdrawals[withdrawal_id].status

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    def _to_minor(amount: object, currency: str) -> int:
        value = quantize_exact(to_decimal(amount), currency)
        if value < 0:
            raise ValueError(f"LuxCore {currency} amount must not be negative, got {amount!r}")
        # quantize_exact left the exponent at -currency_exponent, so the coefficient digits are
        # the minor units; reading them is exact whatever the thread's decimal context.
        return int("".join(map(str, value.as_tuple().digits)))

    def _pending_locked(self, withdrawal_id: str) -> _Withdrawal:
        withdrawal = self._withdrawals.get(withdrawal_id)
        if withdrawal is None:
            raise KeyError(f"no LuxCore withdrawal {withdrawal_id!r}")
        if withdrawal.status != "pending":
            raise ValueError(f"withdrawal {withdrawal_id} is already {withdrawal.status}")
        return withdrawal

    def _complete_locked(self, withdrawal: _Withdrawal) -> None:
        self._accounts[withdrawal.currency].frozen -= withdrawal.amount
        withdrawal.status = "completed"

    def _complete_when_due(self) -> None:
        """Complete each withdrawal ``complete_after`` seconds after its creation (a thread)."""
        with self._lock:
            while not self.stopping.is_set():
                now = time.monotonic()
                while self._due and self._due[0][0] <= now:
                    withdrawal = self._withdrawals[heapq.heappop(self._due)[1]]
                    if withdrawal.status == "pending":  # a test may have finished it already
                        self._complete_locked(withdrawal)
                wait = self._due[0][0] - now if self._due else None
                self._scheduled.wait(wait)

    def _create_locked(
        self, currency: str, minor: int, reference: str | None
    ) -> tuple[_Withdrawal | None, str]:
        account = self._accounts.get(currency)
        if account is None:
            return None, f"currency {currency} is not enabled for this merchant"
        if account.available < minor:
            return None, (
                f"Insufficient balance: available {account.available}, requested {minor} "
                f"({currency} minor units)"
            )
        account.available -= minor
        account.frozen += minor
        withdrawal = _Withdrawal(f"wd_{len(self._withdrawals) + 1:06d}", currency, minor, reference)
        self._withdrawals[withdrawal.id] = withdrawal
        if reference is not None:
            self._by_reference[reference] = withdrawal.id
        if self.complete_after is not None:
            heapq.heappush(self._due, (time.monotonic() + self.complete_after, withdrawal.id))
            self._scheduled.notify_all()
        return withdrawal, ""

    def _route(self, request: ReceivedRequest) -> Reply:
        route = (request.method, request.path)
        if route not in {
            ("GET", BALANCE_PATH),
            ("GET", BALANCE_ALL_PATH),
            ("POST", WITHDRAWALS_PATH),
        }:
            return _error(404, f"Cannot {request.method} {request.path}", "NOT_FOUND")
        key = request.header("X-API-Key") or ""
        if not key or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return _error(401, "Invalid API key", "INVALID_API_KEY")
        if request.path == WITHDRAWALS_PATH:
            return self._withdraw(request)
        if request.path == BALANCE_ALL_PATH:
            return self._answer_balance(request, self._all_balances)
        return self._single(request)

    def _single(self, request: ReceivedRequest) -> Reply:
        currency = request.query.get("currency", "MXN")
        balance_type = request.query.get("balance_type", "main")
        with self._lock:
            served = currency in self._accounts
        if not served:
            return _error(400, f"Currency {currency!r} is not supported", "UNSUPPORTED_CURRENCY")
        if balance_type not in BALANCE_TYPES:
            return _error(
                400,
                f"balance_type must be one of: {', '.join(BALANCE_TYPES)}",
                "VALIDATION_ERROR",
            )
        return self._answer_balance(
            request, lambda wrong: self._one_balance(currency, balance_type, wrong)
        )

    def _item(self, currency: str, balance_type: str, wrong_types: bool) -> dict[str, object]:
        account = self._accounts[currency]
        return {
            "currency": currency,
            "balance_type": balance_type,
            "balance_amount": str(account.available + account.frozen),
            "available_amount": True if wrong_types else str(account.available),
            "frozen_amount": str(account.frozen),
        }

    def _one_balance(self, currency: str, balance_type: str, wrong_types: bool) -> Reply:
        with self._lock:
            item = self._item(currency, balance_type, wrong_types)
            account = self._accounts[currency]
            mirrors = {
                "new_balance": account.available + account.frozen,
                "available_balance": account.available,
            }
        return Reply.json(
            200, {"success": True, "merchant_id": self.merchant_id, **item, **mirrors}
        )

    def _all_balances(self, wrong_types: bool) -> Reply:
        with self._lock:
            items = [self._item(code, "main", wrong_types) for code in self._accounts]
        document = {
            "success": True,
            "merchant_id": self.merchant_id,
            "balances": items,
            "total_balances": len(items),
        }
        return Reply.json(200, document)

    def _withdraw(self, request: ReceivedRequest) -> Reply:
        parsed = _withdrawal_request(request)
        if isinstance(parsed, Reply):
            return parsed
        minor, currency, reference = parsed
        with self._lock:
            if reference is not None and reference in self._by_reference:
                return Reply.json(200, self._withdrawals[self._by_reference[reference]].document())
            if currency not in self._accounts:
                return _error(
                    400, f"Currency {currency!r} is not supported", "UNSUPPORTED_CURRENCY"
                )
            withdrawal, problem = self._create_locked(currency, minor, reference)
        if withdrawal is None:
            with self._lock:
                self._refused += 1
            return _error(400, problem, "INSUFFICIENT_BALANCE")
        return Reply.json(201, withdrawal.document())

    def _fault_reply(self, fault: Fault) -> Reply:
        status, message, error = _FAULT_ERRORS[fault]
        return _error(status, message, error)
