"""The LuxCore emulator: X-API-Key auth, minor-unit balances, withdrawals that freeze funds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from guard._money import minor_to_major
from guard.testing import FakeClock
from guard.testing.emulators import Fault, LuxCoreEmulator


def get(emu: LuxCoreEmulator, path: str, key: str | None = "", **params: str) -> requests.Response:
    headers = {} if key is None else {"X-API-Key": key or emu.api_key}
    return requests.get(f"{emu.url}{path}", params=params, headers=headers, timeout=5)


def balance(emu: LuxCoreEmulator, currency: str) -> dict[str, Any]:
    document: dict[str, Any] = parse(get(emu, "/api/v1/balance", currency=currency))
    return document


def withdraw(
    emu: LuxCoreEmulator, body: object, session: requests.Session | None = None
) -> requests.Response:
    sender = session or requests
    return sender.post(
        f"{emu.url}/api/v1/withdrawals",
        data=json.dumps(body),
        headers={"X-API-Key": emu.api_key, "Content-Type": "application/json"},
        timeout=5,
    )


def parse(response: requests.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def amounts(document: dict[str, Any]) -> tuple[str, str, str]:
    return (
        document["available_amount"],
        document["frozen_amount"],
        document["balance_amount"],
    )


@pytest.fixture
def emu() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator(balances={"ARS": "1000.00"}) as emulator:
        yield emulator


class TestLuxCoreAuth:
    @pytest.mark.parametrize("path", ["/api/v1/balance", "/api/v1/balance/all"])
    @pytest.mark.parametrize("key", [None, "qp_test_sk_wrong"])
    def test_missing_or_unknown_key(self, emu: LuxCoreEmulator, path: str, key: str | None) -> None:
        """No key or the wrong key: 401 INVALID_API_KEY."""
        response = get(emu, path, key=key)
        expected = {"statusCode": 401, "message": "Invalid API key", "error": "INVALID_API_KEY"}
        assert (401, expected) == (response.status_code, parse(response))

    def test_bearer_token_is_not_an_api_key(self, emu: LuxCoreEmulator) -> None:
        """The key in ``Authorization: Bearer`` instead of ``X-API-Key`` is refused."""
        response = requests.get(
            f"{emu.url}/api/v1/balance",
            headers={"Authorization": f"Bearer {emu.api_key}"},
            timeout=5,
        )
        assert 401 == response.status_code

    def test_withdrawals_need_the_key(self, emu: LuxCoreEmulator) -> None:
        """Creating a withdrawal without the key is refused and moves nothing."""
        response = requests.post(f"{emu.url}/api/v1/withdrawals", json={}, timeout=5)
        assert (401, "1000.00") == (
            response.status_code,
            str(minor_to_major(balance(emu, "ARS")["available_amount"], "ARS")),
        )

    def test_unknown_path(self, emu: LuxCoreEmulator) -> None:
        """Unknown routes get a 404 in LuxCore's error shape."""
        response = get(emu, "/api/v1/merchants/123/balance")
        assert (404, "NOT_FOUND") == (response.status_code, parse(response)["error"])


class TestLuxCoreBalance:
    def test_single_currency_body(self) -> None:
        """One currency: minor-unit strings plus the integer mirrors, as documented."""
        with LuxCoreEmulator() as emu:
            response = get(emu, "/api/v1/balance", currency="ARS", balance_type="main")
        expected = {
            "success": True,
            "merchant_id": 123,
            "currency": "ARS",
            "balance_type": "main",
            "balance_amount": "1500000",
            "available_amount": "1200000",
            "frozen_amount": "300000",
            "new_balance": 1500000,
            "available_balance": 1200000,
        }
        assert (200, expected) == (response.status_code, parse(response))

    def test_currency_defaults_to_mxn(self) -> None:
        """Without ``currency`` the answer is MXN, as the docs say."""
        with LuxCoreEmulator() as emu:
            document = parse(get(emu, "/api/v1/balance"))
        assert ("MXN", "850000") == (document["currency"], document["available_amount"])

    def test_all_currencies_body(self) -> None:
        """``/balance/all`` lists every currency without the integer mirrors."""
        with LuxCoreEmulator(merchant_id=7) as emu:
            response = get(emu, "/api/v1/balance/all")
        ars = ("1500000", "1200000", "300000")
        mxn = ("850000", "850000", "0")
        fields = ("balance_amount", "available_amount", "frozen_amount")
        expected = {
            "success": True,
            "merchant_id": 7,
            "balances": [
                {"currency": code, "balance_type": "main", **dict(zip(fields, row, strict=True))}
                for code, row in (("ARS", ars), ("MXN", mxn))
            ],
            "total_balances": 2,
        }
        assert (200, expected) == (response.status_code, parse(response))

    def test_unsupported_currency(self, emu: LuxCoreEmulator) -> None:
        """A currency the merchant is not set up for: 400 UNSUPPORTED_CURRENCY."""
        response = get(emu, "/api/v1/balance", currency="BRL")
        assert (400, 400, "UNSUPPORTED_CURRENCY") == (
            response.status_code,
            parse(response)["statusCode"],
            parse(response)["error"],
        )

    def test_bad_balance_type(self, emu: LuxCoreEmulator) -> None:
        """An unknown ``balance_type``: 400 VALIDATION_ERROR."""
        response = get(emu, "/api/v1/balance", currency="ARS", balance_type="pending")
        assert (400, "VALIDATION_ERROR") == (response.status_code, parse(response)["error"])

    @pytest.mark.parametrize("balance_type", ["deposit", "withdrawal", "commission", "frozen"])
    def test_other_balance_types_are_echoed(self, emu: LuxCoreEmulator, balance_type: str) -> None:
        """The other documented balance types are accepted and echoed."""
        document = parse(get(emu, "/api/v1/balance", currency="ARS", balance_type=balance_type))
        assert balance_type == document["balance_type"]

    @pytest.mark.parametrize(
        ("currency", "major", "minor"),
        [("CLP", "1500", "1500"), ("KWD", "1.500", "1500"), ("JPY", "70", "70"),
         ("ARS", "0.01", "1"), ("BHD", "0.001", "1")],
    )  # fmt: skip
    def test_minor_units_follow_iso_4217(self, currency: str, major: str, minor: str) -> None:
        """Minor units use each currency's ISO 4217 exponent (0, 2 or 3), never a fixed 100."""
        with LuxCoreEmulator(balances={currency: major}) as emu:
            document = balance(emu, currency)
        assert (minor, int(minor)) == (document["available_amount"], document["available_balance"])

    def test_set_balance_with_frozen(self, emu: LuxCoreEmulator) -> None:
        """``set_balance`` takes major units; total is available + frozen."""
        emu.set_balance("ARS", available=Decimal("12.34"), frozen="0.66")
        document = balance(emu, "ARS")
        assert (("1234", "66", "1300"), 1300, 1234) == (
            amounts(document),
            document["new_balance"],
            document["available_balance"],
        )

    @pytest.mark.parametrize(
        ("currency", "amount", "error"),
        [("ARS", "1.001", ValueError), ("ARS", "-1", ValueError), ("XYZ", "1", ValueError),
         ("ARS", 1.5, TypeError)],
    )  # fmt: skip
    def test_bad_balances_are_refused(self, currency: str, amount: object, error: type) -> None:
        """Too many decimals, negatives, unknown currencies and floats are refused."""
        with pytest.raises(error):
            LuxCoreEmulator().set_balance(currency, amount)  # type: ignore[arg-type]  # on purpose

    def test_large_amounts_round_trip_exactly(self) -> None:
        """Any whole number of minor units, up to 28 digits, comes back exactly."""

        @settings(max_examples=30, deadline=None)
        @given(st.integers(0, 10**28 - 1), st.sampled_from(["ARS", "CLP", "KWD"]))
        def check(minor: int, currency: str) -> None:
            exponent = {"ARS": -2, "CLP": 0, "KWD": -3}[currency]
            major = Decimal((0, tuple(int(digit) for digit in str(minor)), exponent))
            emulator.set_balance(currency, major)
            assert str(minor) == balance(emulator, currency)["available_amount"]

        with LuxCoreEmulator() as emulator:
            check()


class TestLuxCoreWithdrawalsInProcess:
    def test_create_moves_available_to_frozen(self, emu: LuxCoreEmulator) -> None:
        """Creating a withdrawal freezes its amount; the total is unchanged."""
        withdrawal_id = emu.create_withdrawal("ARS", "250.50")
        assert (("74950", "25050", "100000"), "pending") == (
            amounts(balance(emu, "ARS")),
            emu.withdrawal_status(withdrawal_id),
        )

    def test_funds_are_read_without_a_request(self, emu: LuxCoreEmulator) -> None:
        """``funds`` gives available and frozen in major units and sends no balance request."""
        emu.create_withdrawal("ARS", "250.50")
        assert ((Decimal("749.50"), Decimal("250.50")), 0) == (
            emu.funds("ars"),
            emu.balance_requests,
        )

    def test_complete_releases_frozen(self, emu: LuxCoreEmulator) -> None:
        """Completing a withdrawal takes its amount out of frozen (the money left)."""
        emu.complete_withdrawal(emu.create_withdrawal("ARS", "250.50"))
        assert ("74950", "0", "74950") == amounts(balance(emu, "ARS"))

    def test_fail_restores_available(self, emu: LuxCoreEmulator) -> None:
        """Failing a withdrawal moves its amount back from frozen to available."""
        withdrawal_id = emu.create_withdrawal("ARS", 100)
        emu.fail_withdrawal(withdrawal_id)
        assert (("100000", "0", "100000"), "failed") == (
            amounts(balance(emu, "ARS")),
            emu.withdrawal_status(withdrawal_id),
        )

    def test_insufficient_available_raises(self, emu: LuxCoreEmulator) -> None:
        """A withdrawal above available raises ValueError and moves nothing."""
        emu.set_balance("ARS", "10.00", frozen="990.00")
        with pytest.raises(ValueError, match="Insufficient balance"):
            emu.create_withdrawal("ARS", "10.01")
        assert ("1000", "99000", "100000") == amounts(balance(emu, "ARS"))

    def test_unknown_and_finished_withdrawals(self, emu: LuxCoreEmulator) -> None:
        """Unknown ids raise KeyError; finishing a withdrawal twice raises ValueError."""
        withdrawal_id = emu.create_withdrawal("ARS", "1")
        emu.complete_withdrawal(withdrawal_id)
        with pytest.raises(KeyError):
            emu.complete_withdrawal("wd_nope")
        with pytest.raises(ValueError, match="already completed"):
            emu.fail_withdrawal(withdrawal_id)

    @pytest.mark.parametrize("amount", ["0", "-1", "0.001"])
    def test_bad_amounts(self, emu: LuxCoreEmulator, amount: str) -> None:
        """Zero, negative and over-precise amounts are refused."""
        with pytest.raises(ValueError, match="amount"):
            emu.create_withdrawal("ARS", amount)

    def test_unserved_currency(self, emu: LuxCoreEmulator) -> None:
        """A withdrawal in a currency the merchant does not hold is refused."""
        with pytest.raises(ValueError, match="not enabled"):
            emu.create_withdrawal("MXN", "1")


class TestLuxCoreWithdrawalsOverHttp:
    def test_create(self, emu: LuxCoreEmulator) -> None:
        """POST /withdrawals answers 201 pending and freezes the amount."""
        body = {"amount": "15000", "currency": "ARS", "merchant_reference": "po-1"}
        response = withdraw(emu, body)
        document = parse(response)
        assert (201, True, "pending", "15000", "po-1") == (
            response.status_code,
            document["success"],
            document["status"],
            document["amount"],
            document["merchant_reference"],
        )
        assert ("85000", "15000", "100000") == amounts(balance(emu, "ARS"))
        assert "pending" == emu.withdrawal_status(document["id"])

    def test_insufficient_balance(self, emu: LuxCoreEmulator) -> None:
        """More than available: 400 INSUFFICIENT_BALANCE; nothing moves."""
        response = withdraw(emu, {"amount": "100001", "currency": "ARS"})
        document = parse(response)
        assert (400, 400, "INSUFFICIENT_BALANCE", True) == (
            response.status_code,
            document["statusCode"],
            document["error"],
            isinstance(document["message"], str),
        )
        assert ("100000", "0", "100000") == amounts(balance(emu, "ARS"))

    def test_duplicate_merchant_reference_returns_the_existing_one(
        self, emu: LuxCoreEmulator
    ) -> None:
        """A repeated merchant_reference answers 200 with the first withdrawal; funds move once."""
        body = {"amount": "30000", "currency": "ARS", "merchant_reference": "po-7"}
        first, second = withdraw(emu, body), withdraw(emu, body)
        assert (201, 200, parse(first)) == (
            first.status_code,
            second.status_code,
            parse(second),
        )
        assert ("70000", "30000", "100000") == amounts(balance(emu, "ARS"))

    def test_completion_is_seen_over_http(self, emu: LuxCoreEmulator) -> None:
        """Completing an HTTP-created withdrawal in-process shows in the next balance."""
        withdrawal_id = parse(withdraw(emu, {"amount": 1000, "currency": "ARS"}))["id"]
        emu.complete_withdrawal(withdrawal_id)
        assert ("99000", "0", "99000") == amounts(balance(emu, "ARS"))

    @pytest.mark.parametrize(
        "body",
        [{"amount": "1.5", "currency": "ARS"}, {"amount": "0", "currency": "ARS"},
         {"amount": True, "currency": "ARS"}, {"currency": "ARS"}, {"amount": "1"},
         {"amount": "1", "currency": "ARS", "merchant_reference": 5}, ["not", "an", "object"]],
    )  # fmt: skip
    def test_invalid_bodies(self, emu: LuxCoreEmulator, body: object) -> None:
        """Malformed withdrawal bodies: 400 VALIDATION_ERROR."""
        response = withdraw(emu, body)
        assert (400, "VALIDATION_ERROR") == (response.status_code, parse(response)["error"])

    def test_unsupported_currency(self, emu: LuxCoreEmulator) -> None:
        """A withdrawal in a currency not held: 400 UNSUPPORTED_CURRENCY."""
        response = withdraw(emu, {"amount": "1", "currency": "MXN"})
        assert (400, "UNSUPPORTED_CURRENCY") == (response.status_code, parse(response)["error"])

    def test_withdrawals_are_not_balance_requests(self, emu: LuxCoreEmulator) -> None:
        """Withdrawals neither count as balance requests nor consume faults."""
        emu.fail_next(Fault.HTTP_503)
        response = withdraw(emu, {"amount": "1", "currency": "ARS"})
        assert (201, 0, (Fault.HTTP_503,)) == (
            response.status_code,
            emu.balance_requests,
            emu.pending_faults,
        )

    def test_concurrent_withdrawals_never_overspend(self, emu: LuxCoreEmulator) -> None:
        """Twenty concurrent 100.00 withdrawals against 1000.00: exactly ten succeed."""
        statuses: list[int] = []
        lock = threading.Lock()

        def worker(n: int) -> None:
            with requests.Session() as session:
                response = withdraw(
                    emu, {"amount": "10000", "currency": "ARS", "merchant_reference": f"c{n}"},
                    session,
                )  # fmt: skip
            with lock:
                statuses.append(response.status_code)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert ([201] * 10 + [400] * 10, ("0", "100000", "100000")) == (
            sorted(statuses),
            amounts(balance(emu, "ARS")),
        )


def wait_for_status(emu: LuxCoreEmulator, withdrawal_id: str, status: str) -> float:
    """Return the seconds until *withdrawal_id* reached *status* (fail after 5 s)."""
    start = time.monotonic()
    while emu.withdrawal_status(withdrawal_id) != status:
        assert time.monotonic() - start < 5.0, f"{withdrawal_id} never became {status}"
        time.sleep(0.01)
    return time.monotonic() - start


class TestLuxCoreRateLimit:
    def test_the_window_slides(self) -> None:
        """At most ``requests_per_minute`` answers in any 60 s; Retry-After: when a slot frees."""
        clock = FakeClock()
        limited = LuxCoreEmulator(
            balances={"ARS": "1000.00"}, requests_per_minute=3, monotonic=clock.monotonic
        )
        seen: list[tuple[int, str | None]] = []

        def ask() -> None:
            response = get(limited, "/api/v1/balance", currency="ARS")
            seen.append((response.status_code, response.headers.get("Retry-After")))

        with limited:
            ask()  # t=0
            clock.advance(20)
            ask()
            ask()  # t=20: the window now holds 0, 20, 20
            clock.advance(20)
            ask()  # t=40: full until the t=0 answer is 60 s old
            clock.advance(20)
            ask()  # t=60: the t=0 answer left the window
            clock.advance(1)
            ask()  # t=61: full again (20, 20, 60) until t=80
        assert [
            (200, None), (200, None), (200, None), (429, "20"), (200, None), (429, "19")
        ] == seen  # fmt: skip

    def test_the_429_is_luxcores(self) -> None:
        """A limited request gets status 429 with LuxCore's RATE_LIMIT_EXCEEDED body."""
        with LuxCoreEmulator(requests_per_minute=1) as limited:
            get(limited, "/api/v1/balance/all")
            response = get(limited, "/api/v1/balance", currency="ARS")
        body = {"statusCode": 429, "message": "Too many requests", "error": "RATE_LIMIT_EXCEEDED"}
        assert (429, body) == (response.status_code, parse(response))

    def test_withdrawals_are_not_limited(self) -> None:
        """Withdrawals go through when balance requests are limited, and use no allowance."""
        with LuxCoreEmulator(balances={"ARS": "1000.00"}, requests_per_minute=1) as limited:
            first = withdraw(limited, {"amount": "100", "currency": "ARS"})
            answered = get(limited, "/api/v1/balance", currency="ARS")
            second = withdraw(limited, {"amount": "100", "currency": "ARS"})
            refused = get(limited, "/api/v1/balance", currency="ARS")
        assert (201, 200, 201, 429) == (
            first.status_code, answered.status_code, second.status_code, refused.status_code
        )  # fmt: skip


class TestLuxCoreAutoComplete:
    def test_withdrawals_freeze_at_once_and_complete_after_the_delay(self) -> None:
        """With ``complete_after``, a created withdrawal is frozen at once, then leaves frozen."""
        with LuxCoreEmulator(balances={"ARS": "1000.00"}, complete_after=0.3) as emu:
            withdrawal_id = parse(withdraw(emu, {"amount": "25000", "currency": "ARS"}))["id"]
            frozen = amounts(balance(emu, "ARS"))
            waited = wait_for_status(emu, withdrawal_id, "completed")
            drained = amounts(balance(emu, "ARS"))
        assert ("75000", "25000", "100000") == frozen
        assert ("75000", "0", "75000") == drained
        assert 0.2 <= waited < 2.0

    def test_each_withdrawal_keeps_its_own_delay(self) -> None:
        """Withdrawals complete in creation order, each ``complete_after`` after its creation."""
        with LuxCoreEmulator(balances={"ARS": "1000.00"}, complete_after=0.4) as emu:
            first = emu.create_withdrawal("ARS", "100.00")
            time.sleep(0.2)
            second = emu.create_withdrawal("ARS", "200.00")
            wait_for_status(emu, first, "completed")
            between = (emu.withdrawal_status(second), amounts(balance(emu, "ARS")))
            wait_for_status(emu, second, "completed")
        assert ("pending", ("70000", "20000", "90000")) == between

    def test_a_withdrawal_finished_by_hand_is_left_alone(self) -> None:
        """A withdrawal failed before its delay stays failed; its funds are not taken twice."""
        with LuxCoreEmulator(balances={"ARS": "1000.00"}, complete_after=0.2) as emu:
            withdrawal_id = emu.create_withdrawal("ARS", "100.00")
            emu.fail_withdrawal(withdrawal_id)
            time.sleep(0.4)
            after = (emu.withdrawal_status(withdrawal_id), amounts(balance(emu, "ARS")))
        assert ("failed", ("100000", "0", "100000")) == after

    def test_a_stopped_emulator_completes_nothing(self) -> None:
        """Stopping the emulator stops the completions; pending withdrawals stay pending."""
        emu = LuxCoreEmulator(balances={"ARS": "1000.00"}, complete_after=0.2).start()
        withdrawal_id = emu.create_withdrawal("ARS", "100.00")
        emu.stop()
        time.sleep(0.4)
        assert "pending" == emu.withdrawal_status(withdrawal_id)

    def test_without_the_option_withdrawals_stay_pending(self, emu: LuxCoreEmulator) -> None:
        """By default a withdrawal stays pending until a test completes it."""
        withdrawal_id = emu.create_withdrawal("ARS", "100.00")
        time.sleep(0.2)
        assert "pending" == emu.withdrawal_status(withdrawal_id)

    @pytest.mark.parametrize("bad", [-1, True, "3", float("nan")])
    def test_a_bad_delay_is_refused(self, bad: object) -> None:
        """``complete_after`` must be seconds >= 0 or None."""
        with pytest.raises(ValueError, match="complete_after must be seconds"):
            LuxCoreEmulator(complete_after=bad)  # type: ignore[arg-type] # the bad input

    def test_refusals_for_insufficient_funds_are_counted(self, emu: LuxCoreEmulator) -> None:
        """``refused_withdrawals`` counts the HTTP withdrawals refused as INSUFFICIENT_BALANCE."""
        withdraw(emu, {"amount": "100001", "currency": "ARS"})
        withdraw(emu, {"amount": "100000", "currency": "ARS"})
        withdraw(emu, {"amount": "1", "currency": "ARS"})
        assert 2 == emu.refused_withdrawals
