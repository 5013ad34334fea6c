"""The seed documents' exact bodies parse to the expected snapshots; bad bodies are refused.

A canned loopback server (real sockets) answers each request with the next queued reply and
records what the fetcher sent, so request shape and body parsing are tested without emulators.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any

import pytest

from guard import BalanceSnapshot, ProviderAuthError, ProviderResponseError
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy

CLOCK = 1700000000.0
AS_OF = datetime.fromtimestamp(CLOCK, UTC)
FAST = RetryPolicy(attempts=3, deadline=5.0, backoff=0.001, max_backoff=0.002)

# Seed 000 (Luxtak Account Balance page), byte for byte as printed.
LUXTAK_OK = """{
    "code": 200,
    "msg": "success",
    "time": 1642075813,
    "data": [
        {
            "currency": "USD",
            "amount": "551.38"
        },
        {
            "currency": "GBP",
            "amount": "0"
        },
        {
            "currency": "EUR",
            "amount": "0"
        },
        {
            "currency": "BRL",
            "amount": "99002.23"
        },
        {
            "currency": "MXN",
            "amount": "0"
        }
    ]
}"""
LUXTAK_EXPIRED = """{
    "code": 4001000,
    "msg": "invalid parameter",
    "time": 1642078510,
    "data": {
        "err": "request has expired"
    }
}"""
LUXTAK_DENIED = """{
    "code": 4004003,
    "msg": "permission denied",
    "time": 1642074682,
    "data": {}
}"""
# Seed 001 (LuxCore Balance API).
LUXCORE_ONE = """{
"success": true,
"merchant_id": 123,
"currency": "ARS",
"balance_type": "main",
"balance_amount": "1500000",
"available_amount": "1200000",
"frozen_amount": "300000",
"new_balance": 1500000,
"available_balance": 1200000
}"""
LUXCORE_ALL = """{
"success": true,
"merchant_id": 123,
"balances": [
{
"currency": "ARS",
"balance_type": "main",
"balance_amount": "1500000",
"available_amount": "1200000",
"frozen_amount": "300000"
},
{
"currency": "MXN",
"balance_type": "main",
"balance_amount": "850000",
"available_amount": "850000",
"frozen_amount": "0"
}
],
"total_balances": 2
}"""
# Seed 003 (Pagsmile Account Balance), with its trailing comma, odd spaces and tabs.
PAGSMILE_AS_PUBLISHED = """{
    "code": "10000",
    "msg": "Success",
    "assets": [
        {
            "currency": "BRL",
            "total_revenue": 6000000.000000,
            "net_income":  6000000.000000  ,
            "balance": 0.000000,
            "payout":  6000000.000000
        }
    ],
    "history": [
        {
            "date": "2023-10-19 01:00:17",
            "currency": "BRL",
            "total_revenue":  6000000.000000  ,
            "net_income":  6000000.000000  ,
            "balance":  1000000.000000\t,
            "settled": 0.000000,
            "payout":  5000000.000000  ,
            "desc": "Schedule Task"
        },
    ]
}"""
PAGSMILE_VALID = PAGSMILE_AS_PUBLISHED.replace("},\n    ]", "}\n    ]")


class Canned:
    """A loopback HTTP server answering with queued (status, headers, body) replies."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.replies: deque[tuple[int, dict[str, str], bytes]] = deque()
        self.received: list[dict[str, Any]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                """Stay quiet."""

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                canned.received.append({
                    "method": self.command, "path": self.path,
                    "headers": dict(self.headers.items()), "body": self.rfile.read(length),
                })
                status, headers, body = (
                    canned.replies.popleft() if canned.replies else (500, {}, b"no reply queued")
                )
                self.send_response(status)
                headers = {"Content-Type": "application/json", **headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve  # noqa: N815 - http.server's method names

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def reply(self, body: str | bytes, status: int = 200, **headers: str) -> None:
        raw = body.encode() if isinstance(body, str) else body
        self.replies.append((status, {k.replace("_", "-"): v for k, v in headers.items()}, raw))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def luxtak(canned: Canned, **options: Any) -> LuxtakFetcher:
    return LuxtakFetcher("LT_APP", "test_app_key", base_url=canned.url, retry=FAST,
                         clock=lambda: CLOCK, **options)


def luxcore(canned: Canned, **options: Any) -> LuxCoreFetcher:
    return LuxCoreFetcher("qp_test_sk_golden", base_url=canned.url, retry=FAST,
                          clock=lambda: CLOCK, **options)


def pagsmile(canned: Canned, **options: Any) -> PagsmileFetcher:
    return PagsmileFetcher("16258292145316638", "Pagsmile_sk_golden", base_url=canned.url,
                           retry=FAST, clock=lambda: CLOCK, **options)


def snap(provider: str, currency: str, available: str, frozen: str | None = None, *,
         total: str | None = None, as_of: datetime = AS_OF) -> BalanceSnapshot:
    return BalanceSnapshot(
        provider=provider, currency=currency, available=Decimal(available),
        frozen=None if frozen is None else Decimal(frozen),
        total=None if total is None else Decimal(total), as_of=as_of,
    )


class TestLuxtakGolden:
    def test_published_success_body(self, canned: Canned) -> None:
        """The docs' balance body gives five snapshots, exact, as of the provider's time."""
        canned.reply(LUXTAK_OK)
        provider_time = datetime.fromtimestamp(1642075813, UTC)
        expected = [snap("luxtak", c, a, as_of=provider_time) for c, a in [
            ("USD", "551.38"), ("GBP", "0.00"), ("EUR", "0.00"), ("BRL", "99002.23"),
            ("MXN", "0.00")]]
        with luxtak(canned) as fetcher:
            assert expected == fetcher.fetch()

    def test_amount_keeps_its_digits(self, canned: Canned) -> None:
        """'99002.23' stays Decimal('99002.23'), with its exponent, and one currency is kept."""
        canned.reply(LUXTAK_OK)
        with luxtak(canned) as fetcher:
            [brl] = fetcher.fetch("BRL")
        assert ("99002.23", None, None) == (str(brl.available), brl.frozen, brl.total)

    def test_request_is_signed_as_documented(self, canned: Canned) -> None:
        """POST /api/balance with AppId, the vector's signature and the UTF-8 content type."""
        canned.reply(LUXTAK_OK)
        with luxtak(canned) as fetcher:
            fetcher.fetch()
        [sent] = canned.received
        assert ("POST", "/api/balance", b'{"timestamp":1700000000}') == (
            sent["method"], sent["path"], sent["body"])
        assert "LT_APP" == sent["headers"]["AppId"]
        assert "application/json; charset=UTF-8" == sent["headers"]["Content-Type"]
        assert ("01a9d5e147ab3bda2b8d487190fde9323e74d2059af3069c13b887ef79c8f2f5"
                == sent["headers"]["Authorization"])

    def test_each_attempt_signed_afresh(self, canned: Canned) -> None:
        """A retry carries a new timestamp and the signature that goes with it."""
        ticks = count(1700000000)
        canned.reply('{"code":5001000,"msg":"system error","time":1,"data":{}}', status=500)
        canned.reply(LUXTAK_OK)
        with LuxtakFetcher("LT_APP", "k", base_url=canned.url, retry=FAST,
                           clock=lambda: float(next(ticks))) as fetcher:
            fetcher.fetch()
        first, second = (json.loads(r["body"])["timestamp"] for r in canned.received)
        signatures = {r["headers"]["Authorization"] for r in canned.received}
        assert (first < second, 2) == (True, len(signatures))

    def test_documented_expired_body_is_resigned_once(self, canned: Canned) -> None:
        """The docs' 400 'request has expired' body triggers one re-signed retry."""
        canned.reply(LUXTAK_EXPIRED, status=400)
        canned.reply(LUXTAK_OK)
        with luxtak(canned) as fetcher:
            assert 5 == len(fetcher.fetch())
        assert 2 == len(canned.received)

    def test_documented_denied_body(self, canned: Canned) -> None:
        """The docs' 401 body is an auth error carrying code 4004003, not retried."""
        canned.reply(LUXTAK_DENIED, status=401)
        with luxtak(canned) as fetcher, pytest.raises(ProviderAuthError) as info:
            fetcher.fetch()
        assert ("4004003", 401, 1) == (info.value.code, info.value.status, info.value.attempts)

    def test_json_number_amount_exact(self, canned: Canned) -> None:
        """An amount sent as a JSON number is read exactly (never through float)."""
        canned.reply('{"code":0,"msg":"success","time":1,"data":'
                     '[{"currency":"USD","amount":0.10},{"currency":"CLP","amount":1500}]}')
        with luxtak(canned) as fetcher:
            assert [Decimal("0.10"), Decimal("1500")] == [s.available for s in fetcher.fetch()]


class TestLuxCoreGolden:
    def test_single_currency_body(self, canned: Canned) -> None:
        """'1200000' ARS minor units is 12000.00 available; frozen and total follow."""
        canned.reply(LUXCORE_ONE)
        expected = [snap("luxcore", "ARS", "12000.00", "3000.00", total="15000.00")]
        with luxcore(canned) as fetcher:
            assert expected == fetcher.fetch("ARS")
        [sent] = canned.received
        assert ("GET", "/api/v1/balance?currency=ARS&balance_type=main") == (
            sent["method"], sent["path"])
        assert "qp_test_sk_golden" == sent["headers"]["X-API-Key"]

    def test_all_currencies_body(self, canned: Canned) -> None:
        """The /all body gives one snapshot per currency, as of the local receive time."""
        canned.reply(LUXCORE_ALL)
        with luxcore(canned) as fetcher:
            assert [snap("luxcore", "ARS", "12000.00", "3000.00", total="15000.00"),
                    snap("luxcore", "MXN", "8500.00", "0.00", total="8500.00")] == fetcher.fetch()
        assert "/api/v1/balance/all" == canned.received[0]["path"]

    @pytest.mark.parametrize(("currency", "minor", "major"),
                             [("CLP", "1500", "1500"), ("KWD", "1500", "1.500"),
                              ("JPY", "7", "7")])
    def test_exponent_from_iso_4217(self, canned: Canned, currency: str, minor: str,
                                    major: str) -> None:
        """Minor units are divided by 10**exponent of the currency, never a fixed 100."""
        body = json.loads(LUXCORE_ONE) | {
            "currency": currency, "balance_amount": minor, "available_amount": minor,
            "frozen_amount": "0", "new_balance": int(minor), "available_balance": int(minor)}
        canned.reply(json.dumps(body))
        with luxcore(canned) as fetcher:
            [got] = fetcher.fetch(currency)
        assert (major, major) == (str(got.available), str(got.total))

    def test_unsupported_currency_is_not_held(self, canned: Canned) -> None:
        """LuxCore's UNSUPPORTED_CURRENCY for the asked currency means none is held: []."""
        canned.reply('{"statusCode":400,"message":"Currency not supported",'
                     '"error":"UNSUPPORTED_CURRENCY"}', status=400)
        with luxcore(canned) as fetcher:
            assert [] == fetcher.fetch("BRL")

    def test_other_balance_type_filtered(self, canned: Canned) -> None:
        """fetch() keeps only the /all entries of the configured balance type."""
        canned.reply(LUXCORE_ALL)
        with luxcore(canned, balance_type="deposit") as fetcher:
            assert [] == fetcher.fetch()


class TestPagsmileGolden:
    def test_valid_form_of_published_body(self, canned: Canned) -> None:
        """The sample (trailing comma removed) gives BRL balance 0.000000 as 0.00."""
        canned.reply(PAGSMILE_VALID)
        with pagsmile(canned) as fetcher:
            assert [snap("pagsmile", "BRL", "0.00")] == fetcher.fetch()

    def test_six_decimals_quantized_exactly(self, canned: Canned) -> None:
        """6000000.000000 becomes Decimal('6000000.00') when that field is the available one."""
        canned.reply(PAGSMILE_VALID)
        with pagsmile(canned, available_field="net_income") as fetcher:
            [brl] = fetcher.fetch("BRL")
        assert "6000000.00" == str(brl.available)

    def test_published_body_as_printed_is_refused_clearly(self, canned: Canned) -> None:
        """The docs' body with its trailing comma is a ProviderResponseError saying why."""
        canned.reply(PAGSMILE_AS_PUBLISHED)
        with pagsmile(canned) as fetcher, pytest.raises(ProviderResponseError) as info:
            fetcher.fetch()
        assert ("pagsmile", 200, 1) == (info.value.provider, info.value.status,
                                        info.value.attempts)
        assert "is not valid JSON" in str(info.value)

    def test_request_shape(self, canned: Canned) -> None:
        """POST /merchant/assets with Basic auth, app_id, a UTC timestamp, version and currency."""
        canned.reply(PAGSMILE_VALID)
        canned.reply(PAGSMILE_VALID)
        with pagsmile(canned) as fetcher:
            fetcher.fetch("BRL")
            fetcher.fetch()
        one, every = canned.received
        assert {"app_id": "16258292145316638", "timestamp": "2023-11-14 22:13:20",
                "version": "2.0", "currency": "BRL"} == json.loads(one["body"])
        assert "currency" not in json.loads(every["body"])
        assert ("MTYyNTgyOTIxNDUzMTY2Mzg6UGFnc21pbGVfc2tfZ29sZGVu"
                == one["headers"]["Authorization"].removeprefix("Basic "))
