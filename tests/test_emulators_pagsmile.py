"""The Pagsmile emulator: Basic auth, required arguments, 6-decimal JSON numbers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from guard.testing.emulators import PagsmileEmulator

TIMESTAMP = "2024-05-01 12:00:00"
INVALID_SIGNATURE = {
    "code": "40002",
    "msg": "Business Failed",
    "sub_code": "invalid-signature",
    "sub_msg": "invalid signature",
}


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def post(emu: PagsmileEmulator, body: object, authorization: str | None = "") -> requests.Response:
    if authorization == "":
        authorization = basic(emu.app_id, emu.security_key)
    headers = {} if authorization is None else {"Authorization": authorization}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(f"{emu.url}/merchant/assets", data=raw, headers=headers, timeout=5)


def valid_body(emu: PagsmileEmulator, **extra: str) -> dict[str, str]:
    return {"app_id": emu.app_id, "timestamp": TIMESTAMP, "version": "2.0", **extra}


def parse(response: requests.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


@pytest.fixture
def emu() -> Iterator[PagsmileEmulator]:
    with PagsmileEmulator(balances={"BRL": "1234.56", "MXN": "0"}) as emulator:
        yield emulator


class TestPagsmileAuth:
    @pytest.mark.parametrize(
        "authorization",
        [None, "Bearer abc", "Basic", "Basic !!!not-base64!!!", "Basic //79"],
    )
    def test_missing_or_undecodable(self, emu: PagsmileEmulator, authorization: str | None) -> None:
        """No header, another scheme, bad base64 or non-UTF-8: HTTP 200 code 40002."""
        response = post(emu, valid_body(emu), authorization)
        assert (200, INVALID_SIGNATURE) == (response.status_code, parse(response))

    def test_wrong_security_key(self, emu: PagsmileEmulator) -> None:
        """The right app id with the wrong key: invalid signature."""
        response = post(emu, valid_body(emu), basic(emu.app_id, "Pagsmile_sk_wrong"))
        assert (200, INVALID_SIGNATURE) == (response.status_code, parse(response))

    def test_wrong_app_in_credentials(self, emu: PagsmileEmulator) -> None:
        """Another app id with the right key: invalid signature."""
        response = post(emu, valid_body(emu), basic("99999999999999999", emu.security_key))
        assert (200, INVALID_SIGNATURE) == (response.status_code, parse(response))

    def test_scheme_is_case_insensitive(self, emu: PagsmileEmulator) -> None:
        """``basic`` in lower case is the same scheme (RFC 7617)."""
        token = basic(emu.app_id, emu.security_key).removeprefix("Basic ")
        assert "10000" == parse(post(emu, valid_body(emu), f"basic {token}"))["code"]

    def test_app_not_match(self, emu: PagsmileEmulator) -> None:
        """A body ``app_id`` other than the authenticated app: 40002 app-not-match."""
        response = post(emu, valid_body(emu, app_id="21600000000000002"))
        document = parse(response)
        assert (200, "40002", "Business Failed", "app-not-match") == (
            response.status_code,
            document["code"],
            document["msg"],
            document["sub_code"],
        )


class TestPagsmileArguments:
    @pytest.mark.parametrize("missing", ["app_id", "timestamp", "version"])
    def test_missing_required_argument(self, emu: PagsmileEmulator, missing: str) -> None:
        """Each required argument, when absent: 40001 Missing Required Arguments."""
        body = valid_body(emu)
        del body[missing]
        document = parse(post(emu, body))
        assert ("40001", "Missing Required Arguments", f"missing-{missing}") == (
            document["code"],
            document["msg"],
            document["sub_code"],
        )

    @pytest.mark.parametrize(
        "timestamp",
        ["2024-05-01T12:00:00", "2024-13-01 12:00:00", "1714564800", "2024-05-01 12:00:00.000"],
    )
    def test_bad_timestamp_format(self, emu: PagsmileEmulator, timestamp: str) -> None:
        """A timestamp not in ``yyyy-MM-dd HH:mm:ss``: 40001 invalid-timestamp."""
        document = parse(post(emu, valid_body(emu, timestamp=timestamp)))
        assert ("40001", "invalid-timestamp") == (document["code"], document["sub_code"])

    def test_bad_version(self, emu: PagsmileEmulator) -> None:
        """A version other than ``2.0``: 40001 invalid-version."""
        document = parse(post(emu, valid_body(emu, version="1.0")))
        assert ("40001", "invalid-version") == (document["code"], document["sub_code"])

    def test_body_not_json(self, emu: PagsmileEmulator) -> None:
        """A body that is not a JSON object: 40001."""
        assert "40001" == parse(post(emu, b"app_id=1"))["code"]

    def test_unknown_currency(self, emu: PagsmileEmulator) -> None:
        """A currency the merchant does not hold: 40002 currency-not-supported."""
        document = parse(post(emu, valid_body(emu, currency="CLP")))
        assert ("40002", "currency-not-supported") == (document["code"], document["sub_code"])

    def test_unknown_path(self, emu: PagsmileEmulator) -> None:
        """Other paths are not served."""
        response = requests.post(f"{emu.url}/trade/query", timeout=5)
        assert (404, "40004") == (response.status_code, parse(response)["code"])


class TestPagsmileAssets:
    def test_success_body(self, emu: PagsmileEmulator) -> None:
        """Success: string code/msg, one asset row per currency, numbers with 6 decimals."""
        response = post(emu, valid_body(emu))
        row = {"total_revenue": "1234.560000", "net_income": "1234.560000"}
        brl = {"currency": "BRL", **row, "balance": "1234.560000", "payout": "0.000000"}
        mxn = {"currency": "MXN", "total_revenue": "0.000000", "net_income": "0.000000",
               "balance": "0.000000", "payout": "0.000000"}  # fmt: skip
        document = parse(response)
        rows = [{key: str(value) for key, value in asset.items()} for asset in document["assets"]]
        assert (200, "10000", "Success", [brl, mxn], []) == (
            response.status_code,
            document["code"],
            document["msg"],
            rows,
            document["history"],
        )

    def test_numbers_are_written_as_json_numbers(self, emu: PagsmileEmulator) -> None:
        """Amounts are bare JSON numbers in the text, not strings."""
        text = post(emu, valid_body(emu, currency="BRL")).text
        assert '"balance":1234.560000,' in text

    def test_currency_filter(self, emu: PagsmileEmulator) -> None:
        """``currency`` limits the assets to that currency."""
        document = parse(post(emu, valid_body(emu, currency="MXN")))
        assert ["MXN"] == [asset["currency"] for asset in document["assets"]]

    def test_payout_keeps_the_row_consistent(self, emu: PagsmileEmulator) -> None:
        """``net_income`` is ``balance + payout``; ``payout`` persists across balance changes."""
        emu.set_balance("BRL", "10", payout="6000000")
        emu.set_balance("BRL", Decimal("20.5"))
        (asset,) = parse(post(emu, valid_body(emu, currency="BRL")))["assets"]
        assert (Decimal("20.5"), Decimal("6000000"), Decimal("6000020.5")) == (
            asset["balance"],
            asset["payout"],
            asset["net_income"],
        )

    @pytest.mark.parametrize(
        ("amount", "error"), [("0.0000001", ValueError), ("-1", ValueError), (2.5, TypeError)]
    )
    def test_bad_balances_are_refused(self, amount: object, error: type[Exception]) -> None:
        """More than 6 decimals, negatives and floats are refused."""
        with pytest.raises(error):
            PagsmileEmulator().set_balance("BRL", amount)  # type: ignore[arg-type]  # on purpose

    def test_defaults(self) -> None:
        """Default credentials follow the documented shapes (17 digits, Pagsmile_sk_ + 64 hex)."""
        emu = PagsmileEmulator()
        secret = emu.security_key.removeprefix("Pagsmile_sk_")
        assert (17, True, 64, True) == (
            len(emu.app_id),
            emu.app_id.isdigit(),
            len(secret),
            all(char in "0123456789abcdef" for char in secret),
        )

    def test_six_decimal_numbers_round_trip_exactly(self) -> None:
        """Any amount with up to 6 decimals reads back exactly, even beyond float precision."""

        @settings(max_examples=40, deadline=None)
        @given(st.decimals(min_value=0, max_value=Decimal("1e18"), places=6))
        def check(amount: Decimal) -> None:
            emulator.set_balance("BRL", amount)
            (asset,) = parse(post(emulator, valid_body(emulator, currency="BRL")))["assets"]
            assert (amount, -6) == (asset["balance"], asset["balance"].as_tuple().exponent)

        with PagsmileEmulator() as emulator:
            check()
