"""Bodies we cannot trust and statuses we do not expect: every one is a clear ProviderError."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email.utils import format_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guard import (
    PayoutGuard,
    ProviderAuthError,
    ProviderError,
    ProviderRateLimited,
    ProviderResponseError,
    ProviderUnavailable,
)
from guard.fetchers import LuxCoreFetcher, RetryPolicy
from guard.fetchers._http import HttpFetcher, TransportFailure
from tests.test_fetchers_golden import (
    CLOCK,
    LUXCORE_ONE,
    LUXTAK_OK,
    PAGSMILE_VALID,
    Canned,
    luxcore,
    luxtak,
    pagsmile,
)


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


def luxtak_body(**row: object) -> str:
    item: dict[str, object] = {"currency": "BRL", "amount": "10.00"}
    item.update(row)
    return json.dumps({"code": 200, "msg": "success", "time": 1642075813, "data": [item]})


def luxcore_body(**fields: object) -> str:
    return json.dumps(json.loads(LUXCORE_ONE) | fields)


def pagsmile_body(**fields: object) -> str:
    asset: dict[str, object] = {"currency": "BRL", "balance": Decimal("1.000000")}
    asset.update(fields)
    return json.dumps({"code": "10000", "msg": "Success", "assets": [asset]}, default=str
                      ).replace('"1.000000"', "1.000000")


def refused(canned: Canned, make: Callable[[Canned], HttpFetcher], body: str,
            currency: str | None = None) -> ProviderResponseError:
    canned.reply(body)
    with make(canned) as fetcher, pytest.raises(ProviderResponseError) as info:
        fetcher.fetch(currency)
    return info.value


LUXTAK_BAD = [
    ({"amount": "-5.00"}, "data[0].amount", "negative"),
    ({"amount": "-0"}, "data[0].amount", "'-0' is negative"),
    ({"amount": "-0.00"}, "data[0].amount", "'-0.00' is negative"),
    ({"amount": "abc"}, "data[0].amount", "is not a decimal amount"),
    ({"amount": "1e3"}, "data[0].amount", "is not a decimal amount"),
    ({"amount": " 10"}, "data[0].amount", "is not a decimal amount"),
    ({"currency": "XYZ"}, "data[0].currency", "unknown currency"),
    ({"currency": 986}, "data[0].currency", "currency must be"),
    ({"amount": None}, "data[0].amount", "got null"),
    ({"amount": True}, "data[0].amount", "got a boolean"),
    ({"amount": ["1"]}, "data[0].amount", "got an array"),
]


class TestFinerThanTheCurrency:
    @pytest.mark.parametrize(("currency", "amount", "expected"), [
        ("BRL", "10.001", "10.00"), ("BRL", "10.019", "10.01"), ("JPY", "10.5", "10"),
        ("KWD", "1.0009", "1.000"), ("BRL", "0.009", "0.00"),
    ])
    def test_luxtak_rounded_down(self, canned: Canned, currency: str, amount: str,
                                 expected: str) -> None:
        """A Luxtak amount finer than its currency's unit is read rounded down, never up."""
        canned.reply(luxtak_body(currency=currency, amount=amount))
        with luxtak(canned) as fetcher:
            assert expected == str(fetcher.fetch()[0].available)

    def test_pagsmile_rounded_down(self, canned: Canned) -> None:
        """Pagsmile's 0.999999 BRL is 0.99 available."""
        canned.reply(pagsmile_body(balance=Decimal("0.999999")).replace('"0.999999"', "0.999999"))
        with pagsmile(canned) as fetcher:
            assert "0.99" == str(fetcher.fetch()[0].available)


class TestLuxtakBodies:
    @pytest.mark.parametrize(("row", "field", "why"), LUXTAK_BAD)
    def test_bad_amount_or_currency(self, canned: Canned, row: dict[str, object], field: str,
                                    why: str) -> None:
        """A bad row is a ProviderResponseError naming the provider, the field and the problem."""
        error = refused(canned, luxtak, luxtak_body(**row))
        assert ("luxtak", 200, 1) == (error.provider, error.status, error.attempts)
        assert f"field {field}:" in str(error)
        assert why in str(error)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ('{"code":200,"msg":"success","data":[]}', "field time: is missing"),
            ('{"code":200,"time":1,"data":{}}', "field data: expected an array"),
            ('{"code":200,"time":1,"data":[{"currency":"BRL"}]}', "data[0].amount: is missing"),
            ('{"code":200,"time":1,"data":[5]}', "data[0]: expected an object"),
            ('{"code":"200","time":1,"data":[]}', "field code: expected 200 or 0"),
            ('{"code":200,"time":true,"data":[]}', "field time: expected an integer"),
            ('[1]', "field <body>: expected an object"),
            (('{"code":200,"time":1,"data":[{"currency":"BRL","amount":"1"},'
              '{"currency":"BRL","amount":"2"}]}'), "lists BRL twice"),
            ('{"code":200,"code":200,"time":1,"data":[]}', "appears twice"),
            ('{"code":200,"time":1,"data":[{"currency":"BRL","amount":NaN}]}', "NaN"),
        ],
    )
    def test_bad_shape(self, canned: Canned, body: str, field: str) -> None:
        """Missing fields, wrong types and ambiguous bodies are refused by name."""
        assert field in str(refused(canned, luxtak, body))

    def test_unknown_error_code_not_retried(self, canned: Canned) -> None:
        """A Luxtak error code with HTTP 200 is a response error with that code, not retried."""
        canned.reply('{"code":4001005,"msg":"invalid currency","time":1,"data":{}}')
        with luxtak(canned) as fetcher, pytest.raises(ProviderResponseError) as info:
            fetcher.fetch()
        assert ("4001005", 1) == (info.value.code, len(canned.received))
        assert "invalid currency" in str(info.value)

    @pytest.mark.parametrize(("code", "msg"), [
        (4001200, "merchant not existed"), (4001201, "merchant inactive"),
        (4001202, "app inactive"), (4001203, "app not existed"),
    ])
    def test_merchant_and_app_codes_are_credentials(self, canned: Canned, code: int,
                                                    msg: str) -> None:
        """An unknown or inactive merchant or app is the credentials' problem, never retried."""
        canned.reply(json.dumps({"code": code, "msg": msg, "time": 1, "data": {}}), status=400)
        with luxtak(canned) as fetcher:
            decision = PayoutGuard(fetcher, cache_ttl=0).check("1.00", "BRL")
        assert (False, False, "credentials", 1) == (
            decision.allowed, decision.retryable, decision.reasons[0].details.get("cause"),
            len(canned.received))
        assert msg in decision.reasons[0].message

    @pytest.mark.parametrize("code", [4004001, 4004002, 4004100, 4004101, 4004103])
    def test_auth_codes(self, canned: Canned, code: int) -> None:
        """Every 4004xxx token/permission code is an auth error, not retried."""
        canned.reply(json.dumps({"code": code, "msg": "no", "time": 1, "data": {}}), status=401)
        with luxtak(canned) as fetcher, pytest.raises(ProviderAuthError) as info:
            fetcher.fetch()
        assert (str(code), 1) == (info.value.code, info.value.attempts)

    @pytest.mark.parametrize(("code", "msg"), [
        (5001001, "fee config error"), (5001005, "arrival amount is negative"),
        (5001102, "balance insufficient"), (5001103, "checkout token error"),
        (4001000, "invalid parameter"),
    ])
    def test_codes_never_retried_keep_their_word_on_a_500(self, canned: Canned, code: int,
                                                          msg: str) -> None:
        """A code the table says is not retried is not retried when it comes with HTTP 500."""
        for _ in range(3):
            canned.reply(json.dumps({"code": code, "msg": msg, "time": 1, "data": {}}),
                         status=500)
        with luxtak(canned) as fetcher, pytest.raises(ProviderResponseError) as info:
            fetcher.fetch()
        assert (str(code), 500, 1) == (info.value.code, info.value.status,
                                       len(canned.received))
        assert msg in str(info.value)

    @pytest.mark.parametrize("status", [200, 500])
    @pytest.mark.parametrize("code", [5001100, 5001101])
    def test_account_unavailable_codes_retried(self, canned: Canned, code: int,
                                               status: int) -> None:
        """5001100/5001101 (account not available, balance error): retried, then unavailable."""
        for _ in range(3):
            canned.reply(json.dumps({"code": code, "msg": "account is not available", "time": 1,
                                     "data": {}}), status=status)
        with luxtak(canned) as fetcher, pytest.raises(ProviderUnavailable) as info:
            fetcher.fetch()
        assert (str(code), 3) == (info.value.code, len(canned.received))

    def test_rate_limit_code_in_body(self, canned: Canned) -> None:
        """Code 4004029 is a rate limit and is retried."""
        canned.reply('{"code":4004029,"msg":"too many requests","time":1,"data":{}}')
        canned.reply(LUXTAK_OK)
        with luxtak(canned) as fetcher:
            assert 5 == len(fetcher.fetch())
        assert 2 == len(canned.received)


class TestLuxCoreBodies:
    @pytest.mark.parametrize(
        ("fields", "why"),
        [
            ({"frozen_amount": "200000"}, "field balance_amount: total 15000.00 ARS is not"),
            ({"new_balance": 1500001}, "field new_balance: 1500001 disagrees"),
            ({"available_balance": 1}, "field available_balance: 1 disagrees"),
            ({"available_balance": "1200000"}, "field available_balance: expected an integer"),
            ({"available_amount": "1200000.5"}, "available_amount: '1200000.5' is not a whole"),
            ({"available_amount": "-1"}, "field available_amount: '-1' is negative"),
            ({"available_amount": "-0"}, "field available_amount: '-0' is negative"),
            ({"available_amount": True}, "available_amount: expected a whole number"),
            ({"currency": "ABC"}, "field currency: unknown currency"),
            ({"currency": "MXN"}, "field currency: asked for ARS, got MXN"),
            ({"balance_type": "deposit"}, "field balance_type: asked for 'main'"),
            ({"success": False}, "field success: expected true"),
        ],
    )
    def test_bad_single_body(self, canned: Canned, fields: dict[str, object],
                             why: str) -> None:
        """Parts that do not add up, mirrors that disagree and wrong types are refused."""
        error = refused(canned, luxcore, luxcore_body(**fields), "ARS")
        assert "luxcore" == error.provider
        assert why in str(error)

    def test_missing_field(self, canned: Canned) -> None:
        """A missing amount is named."""
        body = json.loads(LUXCORE_ONE)
        del body["frozen_amount"]
        assert "field frozen_amount: is missing" in str(
            refused(canned, luxcore, json.dumps(body), "ARS"))

    def test_bad_item_in_all(self, canned: Canned) -> None:
        """A bad entry of /all is named by its index."""
        body = {"success": True, "balances": [{"currency": "ARS", "balance_type": "main",
                                               "balance_amount": "1", "available_amount": "x",
                                               "frozen_amount": "0"}]}
        assert "field balances[0].available_amount:" in str(
            refused(canned, luxcore, json.dumps(body)))

    def test_mirror_in_all_that_disagrees(self, canned: Canned) -> None:
        """An /all entry carrying an integer mirror is held to it, as the single answer is."""
        body = {"success": True, "merchant_id": 123, "total_balances": 1, "balances": [
            {"currency": "ARS", "balance_type": "main", "balance_amount": "1500000",
             "available_amount": "1500000", "frozen_amount": "0", "new_balance": 1500000,
             "available_balance": 15000}]}
        assert "field balances[0].available_balance: 15000 disagrees" in str(
            refused(canned, luxcore, json.dumps(body)))

    @pytest.mark.parametrize(("total", "why"), [
        (2, "field total_balances: says 2 balances, the body lists 1"),
        ("1", "field total_balances: expected an integer"),
    ])
    def test_all_with_a_count_that_disagrees(self, canned: Canned, total: object,
                                             why: str) -> None:
        """/all listing fewer balances than its total_balances is a partial answer: refused."""
        body = {"success": True, "merchant_id": 123, "total_balances": total, "balances": [
            {"currency": "ARS", "balance_type": "main", "balance_amount": "1",
             "available_amount": "1", "frozen_amount": "0"}]}
        assert why in str(refused(canned, luxcore, json.dumps(body)))

    @pytest.mark.parametrize(("status", "error", "kind"), [
        (401, "INVALID_API_KEY", ProviderAuthError),
        (403, "FORBIDDEN", ProviderAuthError),
        (400, "VALIDATION_ERROR", ProviderResponseError),
        (404, "NOT_FOUND", ProviderResponseError),
        (422, "VALIDATION_ERROR", ProviderResponseError),
    ])
    def test_error_statuses_not_retried(self, canned: Canned, status: int, error: str,
                                        kind: type[ProviderError]) -> None:
        """Auth, permission, validation and not-found fail at once, carrying LuxCore's code."""
        canned.reply(json.dumps({"statusCode": status, "message": "nope", "error": error}),
                     status=status)
        with luxcore(canned) as fetcher, pytest.raises(kind) as info:
            fetcher.fetch("ARS")
        assert (status, error, 1) == (info.value.status, info.value.code, len(canned.received))


class TestPagsmileBodies:
    @pytest.mark.parametrize(
        ("fields", "why"),
        [
            ({"balance": "lots"}, "assets[0].balance: 'lots' is not a decimal amount"),
            ({"balance": Decimal("-1.000000")}, "assets[0].balance: -1.000000 is negative"),
            ({"balance": Decimal("1E+400")}, "is not an amount a balance can have"),
            ({"currency": "BRX"}, "assets[0].currency: unknown currency"),
        ],
    )
    def test_bad_asset(self, canned: Canned, fields: dict[str, object], why: str) -> None:
        """Bad asset values are refused, naming the field."""
        body = pagsmile_body(**fields).replace('"-1.000000"', "-1.000000").replace(
            '"1E+400"', "1E+400")
        assert why in str(refused(canned, pagsmile, body))

    def test_missing_assets(self, canned: Canned) -> None:
        """A success code without assets is refused."""
        assert "field assets: is missing" in str(
            refused(canned, pagsmile, '{"code":"10000","msg":"Success"}'))

    @pytest.mark.parametrize(("sub_code", "kind"), [
        ("invalid-signature", ProviderAuthError), ("app-not-match", ProviderAuthError),
        ("merchant-status-abnormal", ProviderAuthError),
        ("no-method-supported", ProviderResponseError),
    ])
    def test_business_failed(self, canned: Canned, sub_code: str,
                             kind: type[ProviderError]) -> None:
        """Code 40002 is an auth error for signature/app problems, else a response error."""
        canned.reply(json.dumps({"code": "40002", "msg": "Business Failed", "sub_code": sub_code,
                                 "sub_msg": "x"}))
        with pagsmile(canned) as fetcher, pytest.raises(kind) as info:
            fetcher.fetch()
        assert ("40002", 1) == (info.value.code, len(canned.received))
        assert sub_code in str(info.value)

    def test_currency_not_supported_is_not_held(self, canned: Canned) -> None:
        """'currency-not-supported' for the asked currency means none is held: []."""
        canned.reply('{"code":"40002","msg":"Business Failed","sub_code":'
                     '"currency-not-supported","sub_msg":"USD is not supported"}')
        with pagsmile(canned) as fetcher:
            assert [] == fetcher.fetch("USD")

    @pytest.mark.parametrize(("code", "sub_code"), [
        ("40001", "missing-timestamp"), ("40002", "no-method-supported"), ("40004", None),
        ("30000", None), ("90001", None),
    ])
    def test_codes_decide_over_a_5xx_status(self, canned: Canned, code: str,
                                            sub_code: str | None) -> None:
        """Pagsmile's own non-retried codes are not retried when they come with a 5xx status."""
        body = {"code": code, "msg": "Business Failed", "sub_code": sub_code, "sub_msg": "x"}
        for _ in range(3):
            canned.reply(json.dumps(body), status=502)
        with pagsmile(canned) as fetcher, pytest.raises(ProviderResponseError) as info:
            fetcher.fetch()
        assert (code, 502, 1) == (info.value.code, info.value.status, len(canned.received))

    def test_busy_code_retried(self, canned: Canned) -> None:
        """Code 20000 is retried."""
        canned.reply('{"code":"20000","msg":"Service Currently Unavailable"}')
        canned.reply(PAGSMILE_VALID)
        with pagsmile(canned) as fetcher:
            assert 1 == len(fetcher.fetch())


class TestStatusMapping:
    @pytest.mark.parametrize(("status", "kind", "requests"), [
        (500, ProviderUnavailable, 3), (502, ProviderUnavailable, 3),
        (503, ProviderUnavailable, 3), (504, ProviderUnavailable, 3),
        (429, ProviderRateLimited, 3), (501, ProviderUnavailable, 1),
        (404, ProviderResponseError, 1), (418, ProviderResponseError, 1),
        (301, ProviderResponseError, 1), (401, ProviderAuthError, 1),
    ])
    def test_statuses(self, canned: Canned, status: int, kind: type[ProviderError],
                      requests: int) -> None:
        """429/500/502/503/504 are retried; other statuses fail at once; redirects not followed."""
        for _ in range(3):
            canned.reply("<html>oops</html>", status=status, Content_Type="text/html",
                         Location="https://elsewhere.example/")
        with luxcore(canned) as fetcher, pytest.raises(kind) as info:
            fetcher.fetch("ARS")
        assert (status, requests, requests) == (
            info.value.status, info.value.attempts, len(canned.received))

    def test_retry_after_http_date(self, canned: Canned) -> None:
        """A Retry-After in HTTP-date form is read against the fetcher's clock (past deadline)."""
        later = format_datetime(datetime.fromtimestamp(CLOCK, UTC) + timedelta(seconds=60),
                                usegmt=True)
        canned.reply('{"statusCode":429}', status=429, Retry_After=later)
        with luxcore(canned) as fetcher, pytest.raises(ProviderRateLimited) as info:
            fetcher.fetch("ARS")
        assert info.value.retry_after is not None
        assert 60.0 == info.value.retry_after
        assert 1 == len(canned.received)

    def test_oversized_body(self, canned: Canned) -> None:
        """A body over 1 MiB is refused without reading it all into a balance."""
        canned.reply(b"[" + b"0," * (1 << 20) + b"0]")
        with luxcore(canned) as fetcher, pytest.raises(ProviderResponseError, match="larger"):
            fetcher.fetch("ARS")

    def test_connection_refused(self) -> None:
        """Nobody listening is ProviderUnavailable after every attempt, chained to a stand-in."""
        server = Canned()
        url = server.url
        server.close()
        policy = RetryPolicy(attempts=2, deadline=5.0, backoff=0.001, max_backoff=0.001)
        fetcher = LuxCoreFetcher("qp_test_sk_x", base_url=url, retry=policy)
        with fetcher, pytest.raises(ProviderUnavailable) as info:
            fetcher.fetch("ARS")
        assert 2 == info.value.attempts
        cause = info.value.__cause__
        assert isinstance(cause, TransportFailure)
        assert "ConnectionError" == cause.kind


class TestExactness:
    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture],
              deadline=None)
    @given(st.decimals(min_value=0, max_value=Decimal("1e15"), places=2))
    def test_luxtak_amounts_round_trip(self, canned: Canned, amount: Decimal) -> None:
        """Any BRL amount string comes back as exactly that Decimal."""
        canned.reply(luxtak_body(amount=str(amount)))
        with luxtak(canned) as fetcher:
            assert amount == fetcher.fetch()[0].available

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture],
              deadline=None)
    @given(st.integers(0, 10**18), st.integers(0, 10**18))
    def test_luxcore_minor_units(self, canned: Canned, available: int, frozen: int) -> None:
        """Minor units convert exactly: available, frozen and total add up in major units."""
        canned.reply(luxcore_body(
            balance_amount=str(available + frozen), available_amount=str(available),
            frozen_amount=str(frozen), new_balance=available + frozen,
            available_balance=available))
        with luxcore(canned) as fetcher:
            [got] = fetcher.fetch("ARS")
        assert (Decimal(available) / 100, Decimal(available + frozen) / 100) == (
            got.available, got.total)
