"""The Luxtak emulator: AppId/Authorization auth, SHA-256 signatures, timestamp window, bodies."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.testing.emulators import LuxtakEmulator
from guard.testing.emulators.luxtak import luxtak_signature

NOW = 1_642_075_810.0


def sign(params: dict[str, Any], app_key: str) -> str:
    """Sign like the Luxtak docs' Java sample: sorted non-empty params, then the key, SHA-256."""
    joined = "&".join(f"{key}={params[key]}" for key in sorted(params) if params[key] != "")
    return hashlib.sha256((joined + app_key).encode()).hexdigest()


def post(
    emu: LuxtakEmulator,
    body: bytes | str,
    *,
    app_id: str | None = None,
    authorization: str | None = None,
) -> requests.Response:
    headers = {"Content-Type": "application/json; charset=UTF-8"}
    if app_id is not None:
        headers["AppId"] = app_id
    if authorization is not None:
        headers["Authorization"] = authorization
    return requests.post(f"{emu.url}/api/balance", data=body, headers=headers, timeout=5)


def signed_post(emu: LuxtakEmulator, params: dict[str, Any]) -> requests.Response:
    body = json.dumps(params, separators=(",", ":"))
    return post(emu, body, app_id=emu.app_id, authorization=sign(params, emu.app_key))


def parse(response: requests.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


@pytest.fixture
def emu() -> Iterator[LuxtakEmulator]:
    with LuxtakEmulator(clock=lambda: NOW) as emulator:
        yield emulator


class TestLuxtakSignature:
    @pytest.mark.parametrize(
        ("timestamp", "app_key", "expected"),
        [
            (
                1642075807,
                "ABCDE",
                "12d71e4a295418a902e8d460bbe33f2c29842d132a05f8701422d9d305e38b98",
            ),
            (
                1628512575,
                "ABCDE",
                "0dc074b879e443c3da50f692b3e61263317f863d991aee2dda5639c577ec3f68",
            ),
            (
                1700000000,
                "test_app_key",
                "01a9d5e147ab3bda2b8d487190fde9323e74d2059af3069c13b887ef79c8f2f5",
            ),
        ],
    )
    def test_documented_vectors_are_accepted(
        self, timestamp: int, app_key: str, expected: str
    ) -> None:
        """The PROVIDERS.md vectors sign ``{"timestamp": N}`` and the emulator accepts them."""
        with LuxtakEmulator(app_key=app_key, clock=lambda: float(timestamp)) as emu:
            response = post(
                emu, f'{{"timestamp":{timestamp}}}', app_id=emu.app_id, authorization=expected
            )
        assert (expected, 200) == (
            luxtak_signature({"timestamp": timestamp}, app_key),
            response.status_code,
        )

    def test_sort_order_is_python_sorted(self) -> None:
        """Keys sort in code-unit order: uppercase before lowercase, ``a_b`` before ``ab``."""
        params = {"b": "1", "B": "2", "a_b": "3", "ab": "4"}
        expected = hashlib.sha256(b"B=2&a_b=3&ab=4&b=1KEY").hexdigest()
        assert expected == luxtak_signature(params, "KEY")

    def test_empty_values_are_left_out(self) -> None:
        """Empty strings and nulls do not take part in the signature."""
        expected = hashlib.sha256(b"a=1KEY").hexdigest()
        assert expected == luxtak_signature({"a": "1", "b": "", "c": None}, "KEY")

    def test_hmac_signature_is_refused(self, emu: LuxtakEmulator) -> None:
        """An HMAC-SHA256 of the same pre-image is not the Luxtak signature."""
        params = {"timestamp": int(NOW)}
        wrong = hmac.new(emu.app_key.encode(), b"timestamp=1642075810", "sha256").hexdigest()
        response = post(emu, json.dumps(params), app_id=emu.app_id, authorization=wrong)
        assert 401 == response.status_code

    def test_uppercase_hex_is_refused(self, emu: LuxtakEmulator) -> None:
        """The signature is compared as lowercase hex."""
        params = {"timestamp": int(NOW)}
        upper = sign(params, emu.app_key).upper()
        response = post(emu, json.dumps(params), app_id=emu.app_id, authorization=upper)
        assert 401 == response.status_code

    def test_extra_params_are_signed_too(self, emu: LuxtakEmulator) -> None:
        """Every non-empty top-level parameter is part of the signature, in sorted order."""
        params = {"timestamp": int(NOW), "Currency": "BRL", "note": ""}
        assert 200 == signed_post(emu, params).status_code

    @settings(max_examples=40, deadline=None)
    @given(
        st.dictionaries(
            st.text(st.characters(codec="ascii", exclude_characters='"\\'), min_size=1),
            st.text(st.characters(codec="ascii", exclude_characters='"\\')),
            max_size=5,
        )
    )
    def test_signature_matches_an_independent_implementation(self, params: dict[str, str]) -> None:
        """For string params, the emulator's signature equals the docs' algorithm."""
        assert sign(params, "K3Y") == luxtak_signature(params, "K3Y")


class TestLuxtakAuth:
    def test_missing_app_id(self, emu: LuxtakEmulator) -> None:
        """No ``AppId`` header: 401 code 4004100."""
        response = post(emu, '{"timestamp":1642075810}', authorization="x")
        assert (401, {"code": 4004100, "msg": "MerchantId or AppId is required"}) == (
            response.status_code,
            {key: parse(response)[key] for key in ("code", "msg")},
        )

    def test_missing_authorization(self, emu: LuxtakEmulator) -> None:
        """No ``Authorization`` header: 401 code 4004101."""
        response = post(emu, '{"timestamp":1642075810}', app_id=emu.app_id)
        expected = {"code": 4004101, "msg": "Authorization is required", "time": 1642075810}
        assert (401, {**expected, "data": {}}) == (response.status_code, parse(response))

    def test_unknown_app_id(self, emu: LuxtakEmulator) -> None:
        """A correctly signed request under another AppId: 401 permission denied."""
        params = {"timestamp": int(NOW)}
        response = post(
            emu, json.dumps(params), app_id="OTHER", authorization=sign(params, emu.app_key)
        )
        expected = {"code": 4004003, "msg": "permission denied", "time": 1642075810, "data": {}}
        assert (401, expected) == (response.status_code, parse(response))

    def test_wrong_signature(self, emu: LuxtakEmulator) -> None:
        """A signature made with another key: 401 permission denied."""
        params = {"timestamp": int(NOW)}
        response = post(emu, json.dumps(params), app_id=emu.app_id, authorization=sign(params, "k"))
        expected = {"code": 4004003, "msg": "permission denied", "time": 1642075810, "data": {}}
        assert (401, expected) == (response.status_code, parse(response))

    def test_body_is_verified_as_sent(self, emu: LuxtakEmulator) -> None:
        """Signing one timestamp and sending another fails the signature check."""
        response = post(
            emu,
            '{"timestamp":1642075811}',
            app_id=emu.app_id,
            authorization=sign({"timestamp": 1642075810}, emu.app_key),
        )
        assert (401, 4004003) == (response.status_code, parse(response)["code"])

    def test_body_not_json(self, emu: LuxtakEmulator) -> None:
        """A body that is not a JSON object: 400 invalid parameter explaining why."""
        response = post(emu, "timestamp=1", app_id=emu.app_id, authorization="x")
        assert (400, 4001000, {"err": "request body must be a JSON object"}) == (
            response.status_code,
            parse(response)["code"],
            parse(response)["data"],
        )

    def test_missing_timestamp(self, emu: LuxtakEmulator) -> None:
        """A signed body without ``timestamp``: 400 code 4001000, ``data.err`` says so."""
        response = signed_post(emu, {"nonce": "abc"})
        expected = {"code": 4001000, "msg": "invalid parameter", "time": 1642075810}
        assert (400, {**expected, "data": {"err": "timestamp is required"}}) == (
            response.status_code,
            parse(response),
        )

    @pytest.mark.parametrize("timestamp", ['"1642075810"', "1642075810.0", "true"])
    def test_non_integer_timestamp(self, emu: LuxtakEmulator, timestamp: str) -> None:
        """A string, fractional or boolean ``timestamp``: 400 code 4001000."""
        body = f'{{"timestamp":{timestamp}}}'
        params = json.loads(body, parse_float=Decimal)
        value = params["timestamp"]
        rendered = "true" if value is True else value  # JSON true is signed as ``true``
        response = post(
            emu, body, app_id=emu.app_id, authorization=sign({"timestamp": rendered}, emu.app_key)
        )
        err = "timestamp must be an integer number of Unix seconds"
        assert (400, 4001000, {"err": err}) == (
            response.status_code,
            parse(response)["code"],
            parse(response)["data"],
        )

    def test_unknown_path(self, emu: LuxtakEmulator) -> None:
        """Other paths and methods get Luxtak's 404 body."""
        response = requests.get(f"{emu.url}/api/balance", timeout=5)
        assert (404, 4004004) == (response.status_code, parse(response)["code"])


class TestLuxtakTimestampWindow:
    @pytest.mark.parametrize("skew", [-300, 0, 300])
    def test_inside_the_window(self, emu: LuxtakEmulator, skew: int) -> None:
        """Timestamps up to ``timestamp_window`` seconds away are accepted."""
        assert 200 == signed_post(emu, {"timestamp": int(NOW) + skew}).status_code

    @pytest.mark.parametrize("skew", [-301, 301])
    def test_outside_the_window(self, emu: LuxtakEmulator, skew: int) -> None:
        """Past or future timestamps beyond the window get the 'request has expired' body."""
        response = signed_post(emu, {"timestamp": int(NOW) + skew})
        expected = {"code": 4001000, "msg": "invalid parameter", "time": int(NOW)}
        assert (400, {**expected, "data": {"err": "request has expired"}}) == (
            response.status_code,
            parse(response),
        )

    def test_server_time_offset_skews_the_server_clock(self, emu: LuxtakEmulator) -> None:
        """``server_time_offset`` moves the server clock; ``time`` reports it."""
        emu.server_time_offset = 1000.0
        response = signed_post(emu, {"timestamp": int(NOW)})
        assert (400, int(NOW) + 1000, "request has expired") == (
            response.status_code,
            parse(response)["time"],
            parse(response)["data"]["err"],
        )

    def test_custom_window(self) -> None:
        """``timestamp_window`` sets the tolerance."""
        with LuxtakEmulator(clock=lambda: NOW, timestamp_window=10.0) as emu:
            statuses = [signed_post(emu, {"timestamp": int(NOW) - s}).status_code for s in (10, 11)]
        assert [200, 400] == statuses

    def test_clock_is_read_per_request(self) -> None:
        """The injected clock is consulted on every request, not once."""
        now = [NOW]
        with LuxtakEmulator(clock=lambda: now[0]) as emu:
            first = signed_post(emu, {"timestamp": int(NOW)}).status_code
            now[0] += 1000
            second = signed_post(emu, {"timestamp": int(NOW)}).status_code
        assert (200, 400) == (first, second)


class TestLuxtakBalances:
    def test_default_body_is_the_docs_example(self, emu: LuxtakEmulator) -> None:
        """The default balances reproduce the documented example exactly."""
        response = signed_post(emu, {"timestamp": int(NOW)})
        data = [
            {"currency": "USD", "amount": "551.38"},
            {"currency": "GBP", "amount": "0"},
            {"currency": "EUR", "amount": "0"},
            {"currency": "BRL", "amount": "99002.23"},
            {"currency": "MXN", "amount": "0"},
        ]
        expected = {"code": 200, "msg": "success", "time": int(NOW), "data": data}
        assert (200, expected) == (response.status_code, parse(response))

    def test_amount_strings_are_sent_as_given(self) -> None:
        """Strings keep their scale; Decimal and int become plain digits."""
        balances: dict[str, Decimal | str | int] = {
            "BRL": "1000.000",
            "USD": Decimal("1E+2"),
            "CLP": 1500,
        }
        with LuxtakEmulator(balances=balances, clock=lambda: NOW) as emu:
            data = parse(signed_post(emu, {"timestamp": int(NOW)}))["data"]
        assert [("BRL", "1000.000"), ("USD", "100"), ("CLP", "1500")] == [
            (row["currency"], row["amount"]) for row in data
        ]

    def test_set_balance_while_running(self, emu: LuxtakEmulator) -> None:
        """``set_balance`` changes the next answer and appends new currencies."""
        emu.set_balance("BRL", available="1000.00")
        emu.set_balance("ARS", Decimal("12.5"))
        data = parse(signed_post(emu, {"timestamp": int(NOW)}))["data"]
        amounts = {row["currency"]: row["amount"] for row in data}
        assert ("1000.00", "12.5", "ARS") == (amounts["BRL"], amounts["ARS"], data[-1]["currency"])

    @pytest.mark.parametrize(("amount", "error"), [(1.5, TypeError), ("lots", ValueError)])
    def test_bad_amounts_are_refused(self, amount: object, error: type[Exception]) -> None:
        """Floats and non-numbers are refused when the balance is set."""
        with pytest.raises(error):
            LuxtakEmulator().set_balance("BRL", amount)  # type: ignore[arg-type]  # on purpose

    def test_defaults(self) -> None:
        """The default credentials are fixed test values and the window is 300 s."""
        emu = LuxtakEmulator()
        assert ("LT_TEST_APP_0001", 300.0, 0.0) == (
            emu.app_id,
            emu.timestamp_window,
            emu.server_time_offset,
        )
