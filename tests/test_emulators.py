"""Behaviour shared by the three provider emulators: lifecycle, faults, request log, secrets."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
import requests

import guard.testing.emulators as emulators_package
from guard.testing.emulators import (
    Fault,
    LuxCoreEmulator,
    LuxtakEmulator,
    PagsmileEmulator,
    ReceivedRequest,
)
from guard.testing.emulators._base import EmulatorBase

Emulator = LuxtakEmulator | LuxCoreEmulator | PagsmileEmulator


def luxtak_post(emu: LuxtakEmulator, timeout: float) -> requests.Response:
    body = json.dumps({"timestamp": int(emu.server_time())}, separators=(",", ":"))
    signed = hashlib.sha256(f"timestamp={int(emu.server_time())}{emu.app_key}".encode())
    headers = {"AppId": emu.app_id, "Authorization": signed.hexdigest()}
    return requests.post(f"{emu.url}/api/balance", data=body, headers=headers, timeout=timeout)


def luxcore_get(emu: LuxCoreEmulator, timeout: float) -> requests.Response:
    return requests.get(
        f"{emu.url}/api/v1/balance",
        params={"currency": "ARS"},
        headers={"X-API-Key": emu.api_key},
        timeout=timeout,
    )


def pagsmile_post(emu: PagsmileEmulator, timeout: float) -> requests.Response:
    token = base64.b64encode(f"{emu.app_id}:{emu.security_key}".encode()).decode()
    body = {"app_id": emu.app_id, "timestamp": "2024-05-01 12:00:00", "version": "2.0"}
    return requests.post(
        f"{emu.url}/merchant/assets",
        json=body,
        headers={"Authorization": f"Basic {token}"},
        timeout=timeout,
    )


def call(emu: EmulatorBase, timeout: float = 5.0) -> requests.Response:
    """Send one properly authenticated balance request to *emu*."""
    if isinstance(emu, LuxtakEmulator):
        return luxtak_post(emu, timeout)
    if isinstance(emu, LuxCoreEmulator):
        return luxcore_get(emu, timeout)
    assert isinstance(emu, PagsmileEmulator)
    return pagsmile_post(emu, timeout)


def call_unauthenticated(emu: EmulatorBase) -> requests.Response:
    """Send a balance request without credentials."""
    if isinstance(emu, LuxCoreEmulator):
        return requests.get(f"{emu.url}/api/v1/balance", timeout=5)
    path = "/api/balance" if isinstance(emu, LuxtakEmulator) else "/merchant/assets"
    return requests.post(f"{emu.url}{path}", data=b"{}", timeout=5)


def parse(response: requests.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


FACTORIES: dict[str, Callable[[], Emulator]] = {
    "luxtak": LuxtakEmulator,
    "luxcore": LuxCoreEmulator,
    "pagsmile": PagsmileEmulator,
}


@pytest.fixture(params=sorted(FACTORIES))
def emu(request: pytest.FixtureRequest) -> Any:
    with FACTORIES[request.param]() as emulator:
        yield emulator


def secret_of(emu: Emulator) -> str:
    if isinstance(emu, LuxtakEmulator):
        return emu.app_key
    if isinstance(emu, LuxCoreEmulator):
        return emu.api_key
    return emu.security_key


class TestExports:
    def test_all_is_sorted_and_complete(self) -> None:
        """The package exports exactly the five public names, in a sorted ``__all__``."""
        expected = ["Fault", "LuxCoreEmulator", "LuxtakEmulator", "PagsmileEmulator"]
        assert [*expected, "ReceivedRequest"] == emulators_package.__all__
        assert sorted(emulators_package.__all__) == emulators_package.__all__

    def test_fault_values(self) -> None:
        """``Fault`` is a str enum with the documented values."""
        expected = {
            "http_500", "http_502", "http_503", "rate_limit", "rate_limit_no_retry_after",
            "slow", "drop", "malformed_json", "html_error", "wrong_types", "expired",
            "provider_busy",
        }  # fmt: skip
        assert expected == {fault.value for fault in Fault}
        assert (True, Fault.HTTP_503) == (isinstance(Fault.HTTP_503, str), Fault("http_503"))


class TestLifecycle:
    def test_url_is_loopback_base_without_trailing_slash(self, emu: Emulator) -> None:
        """``url`` is ``http://127.0.0.1:<port>`` with a real port."""
        host, port = emu.url.removeprefix("http://").split(":")
        assert ("127.0.0.1", True) == (host, int(port) > 0)

    def test_url_before_start_raises(self) -> None:
        """Asking for the URL of a never-started emulator says how to start it."""
        with pytest.raises(RuntimeError, match="has not been started"):
            _ = LuxtakEmulator().url

    def test_context_manager_stops_the_server(self) -> None:
        """After the ``with`` block the port refuses connections."""
        with LuxCoreEmulator() as emu:
            assert 200 == call(emu).status_code
        assert not emu.running
        with pytest.raises(requests.ConnectionError):
            call(emu)

    def test_start_and_stop_are_idempotent(self) -> None:
        """A second ``start`` or ``stop`` does nothing."""
        emu = PagsmileEmulator()
        assert emu is emu.start()
        url = emu.url
        emu.start()
        assert url == emu.url
        emu.stop()
        emu.stop()
        assert not emu.running

    def test_restart_keeps_the_url(self) -> None:
        """A stopped emulator can be started again on the same port."""
        emu = LuxCoreEmulator().start()
        url = emu.url
        emu.stop()
        with emu:
            assert (url, 200) == (emu.url, call(emu).status_code)

    def test_stop_returns_promptly_during_a_slow_answer(self) -> None:
        """``stop`` wakes a sleeping slow fault; the client sees the connection drop."""
        emu = LuxtakEmulator().start()
        emu.slow_seconds = 60.0
        emu.fail_next(Fault.SLOW)
        outcome: list[BaseException] = []

        def client() -> None:
            try:
                call(emu, timeout=30.0)
            except requests.RequestException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=client)
        thread.start()
        deadline = time.monotonic() + 5.0
        while emu.balance_requests == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        started = time.monotonic()
        emu.stop()
        elapsed = time.monotonic() - started
        thread.join(10.0)
        assert elapsed < 5.0  # generous: the fault would have slept 60 s
        assert [True] == [isinstance(exc, requests.ConnectionError) for exc in outcome]

    def test_repr_hides_the_secret(self, emu: Emulator) -> None:
        """The emulator's repr names the class and URL but never the key."""
        text = repr(emu)
        assert (True, False) == (type(emu).__name__ in text, secret_of(emu) in text)

    def test_received_request_repr_redacts_credentials(self, emu: Emulator) -> None:
        """The request log's repr hides Authorization and X-API-Key values."""
        call(emu)
        (logged,) = emu.requests
        name = "X-API-Key" if isinstance(emu, LuxCoreEmulator) else "Authorization"
        sent = str(logged.header(name))
        assert (False, False) == (secret_of(emu) in repr(logged), sent in repr(logged))
        assert "'<redacted>'" in repr(logged)


class TestRequestLog:
    def test_every_request_is_logged_including_rejected(self, emu: Emulator) -> None:
        """Rejected and accepted balance requests are both logged and counted."""
        call_unauthenticated(emu)
        call(emu)
        requests.get(f"{emu.url}/nowhere", timeout=5)
        assert (3, 2) == (len(emu.requests), emu.balance_requests)
        assert "/nowhere" == emu.requests[-1].path

    def test_logged_request_fields(self) -> None:
        """Method, path, query, headers and the raw body are recorded as sent."""
        with LuxCoreEmulator() as emu:
            before = time.time()
            requests.get(
                f"{emu.url}/api/v1/balance?currency=MXN&balance_type=main",
                headers={"X-API-Key": emu.api_key, "X-Trace": "t-1"},
                timeout=5,
            )
            (logged,) = emu.requests
        assert ("GET", "/api/v1/balance") == (logged.method, logged.path)
        assert {"currency": "MXN", "balance_type": "main"} == logged.query
        assert ("t-1", "t-1", b"") == (
            logged.header("x-trace"),
            logged.headers["X-Trace"],
            logged.body,
        )
        assert before <= logged.received_at <= time.time()

    def test_logged_body_is_raw_bytes_and_parses_exactly(self) -> None:
        """``ReceivedRequest.json`` parses the raw body with Decimal numbers."""
        with PagsmileEmulator() as emu:
            requests.post(f"{emu.url}/merchant/assets", data=b'{"x": 1.10}', timeout=5)
            (logged,) = emu.requests
        assert (b'{"x": 1.10}', {"x": Decimal("1.10")}) == (logged.body, logged.json())

    def test_received_request_is_exported_type(self, emu: Emulator) -> None:
        """Log entries are ``ReceivedRequest`` values and the list is a copy."""
        call(emu)
        log = emu.requests
        log.clear()
        assert (ReceivedRequest, 1) == (type(emu.requests[0]), len(emu.requests))


class TestFaultQueue:
    def test_each_fault_consumes_one_request(self, emu: Emulator) -> None:
        """``fail_next(kind, times=2)`` fails exactly the next two requests."""
        emu.fail_next(Fault.HTTP_503, times=2)
        statuses = [call(emu).status_code for _ in range(3)]
        assert [503, 503, 200] == statuses

    def test_faults_queue_in_order_and_accept_strings(self, emu: Emulator) -> None:
        """Faults given as strings queue behind earlier ones."""
        emu.fail_next("http_500")
        emu.fail_next(Fault.HTTP_502)
        queued = emu.pending_faults
        statuses = [call(emu).status_code for _ in range(3)]
        left = emu.pending_faults
        assert ((Fault.HTTP_500, Fault.HTTP_502), [500, 502, 200], ()) == (queued, statuses, left)

    def test_rejected_requests_do_not_consume_faults(self, emu: Emulator) -> None:
        """A request failing auth gets the auth answer and leaves the fault queued."""
        emu.fail_next(Fault.HTTP_503)
        rejected = call_unauthenticated(emu)
        assert (True, (Fault.HTTP_503,)) == (rejected.status_code != 503, emu.pending_faults)
        assert 503 == call(emu).status_code

    def test_clear_faults(self, emu: Emulator) -> None:
        """``clear_faults`` drops everything queued."""
        emu.fail_next(Fault.DROP, times=3)
        emu.clear_faults()
        assert 200 == call(emu).status_code

    @pytest.mark.parametrize("bad", ["teapot", "HTTP_503", ""])
    def test_unknown_fault_is_refused(self, bad: str) -> None:
        """An unknown fault name raises and lists the accepted ones."""
        with pytest.raises(ValueError, match=r"accepted: .*http_503"):
            LuxCoreEmulator().fail_next(bad)

    @pytest.mark.parametrize("times", [0, -1, True])
    def test_times_must_be_positive(self, times: int) -> None:
        """``times`` below one is refused."""
        with pytest.raises(ValueError, match="times must be a positive int"):
            LuxtakEmulator().fail_next(Fault.DROP, times=times)

    @pytest.mark.parametrize("factory", [LuxCoreEmulator, PagsmileEmulator])
    def test_expired_is_luxtak_only(self, factory: Callable[[], EmulatorBase]) -> None:
        """Only Luxtak models the ``expired`` fault."""
        with pytest.raises(ValueError, match="does not model fault 'expired'"):
            factory().fail_next(Fault.EXPIRED)


ERROR_SHAPES: dict[tuple[str, int], object] = {
    ("luxtak", 500): {"code": 5001000, "msg": "system error", "data": {}},
    ("luxtak", 502): {"code": 5001000, "msg": "system error", "data": {}},
    ("luxtak", 503): {"code": 5001000, "msg": "system error", "data": {}},
    ("luxtak", 429): {"code": 4004029, "msg": "too many requests", "data": {}},
    ("luxcore", 500): {
        "statusCode": 500, "message": "Internal server error", "error": "INTERNAL_SERVER_ERROR"
    },
    ("luxcore", 502): {"statusCode": 502, "message": "Bad gateway", "error": "BAD_GATEWAY"},
    ("luxcore", 503): {
        "statusCode": 503,
        "message": "Service temporarily unavailable",
        "error": "SERVICE_UNAVAILABLE",
    },
    ("luxcore", 429): {
        "statusCode": 429, "message": "Too many requests", "error": "RATE_LIMIT_EXCEEDED"
    },
    ("pagsmile", 500): {"code": "20000", "msg": "Service Currently Unavailable"},
    ("pagsmile", 502): {"code": "20000", "msg": "Service Currently Unavailable"},
    ("pagsmile", 503): {"code": "20000", "msg": "Service Currently Unavailable"},
    ("pagsmile", 429): {"code": "20000", "msg": "Service Currently Unavailable"},
}  # fmt: skip


def provider(emu: EmulatorBase) -> str:
    return type(emu).__name__.removesuffix("Emulator").lower()


def without_time(document: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in document.items() if key != "time"}


class TestStatusFaults:
    @pytest.mark.parametrize(
        ("fault", "status"),
        [(Fault.HTTP_500, 500), (Fault.HTTP_502, 502), (Fault.HTTP_503, 503)],
    )
    def test_server_errors_use_the_provider_body(
        self, emu: Emulator, fault: Fault, status: int
    ) -> None:
        """``http_5xx`` answers that status with the provider's own error body."""
        emu.fail_next(fault)
        response = call(emu)
        assert (status, ERROR_SHAPES[provider(emu), status]) == (
            response.status_code,
            without_time(parse(response)),
        )

    def test_rate_limit_sends_retry_after(self, emu: Emulator) -> None:
        """``rate_limit`` is HTTP 429 with ``Retry-After: 1`` and the provider body."""
        emu.fail_next(Fault.RATE_LIMIT)
        response = call(emu)
        assert (429, "1") == (response.status_code, response.headers.get("Retry-After"))
        assert ERROR_SHAPES[provider(emu), 429] == without_time(parse(response))

    def test_rate_limit_without_retry_after(self, emu: Emulator) -> None:
        """``rate_limit_no_retry_after`` is HTTP 429 with no ``Retry-After`` header."""
        emu.fail_next(Fault.RATE_LIMIT_NO_RETRY_AFTER)
        response = call(emu)
        assert (429, None) == (response.status_code, response.headers.get("Retry-After"))

    def test_provider_busy(self, emu: Emulator) -> None:
        """``provider_busy`` is each provider's own retryable business error."""
        emu.fail_next(Fault.PROVIDER_BUSY)
        response = call(emu)
        expected: dict[str, tuple[int, object]] = {
            "luxtak": (200, {"code": 5001000, "msg": "system error", "data": {}}),
            "luxcore": (500, ERROR_SHAPES["luxcore", 500]),
            "pagsmile": (200, {"code": "20000", "msg": "Service Currently Unavailable"}),
        }
        assert expected[provider(emu)] == (response.status_code, without_time(parse(response)))

    def test_luxtak_expired(self) -> None:
        """Luxtak's ``expired`` fault answers the 400 expiry body for a fresh timestamp."""
        with LuxtakEmulator(clock=lambda: 1_700_000_000.0) as emu:
            emu.fail_next(Fault.EXPIRED)
            response = call(emu)
        body = {"code": 4001000, "msg": "invalid parameter", "time": 1_700_000_000}
        assert (400, {**body, "data": {"err": "request has expired"}}) == (
            response.status_code,
            parse(response),
        )


class TestTransportFaults:
    def test_drop_closes_without_a_response(self, emu: Emulator) -> None:
        """``drop`` closes the connection; requests raises ConnectionError."""
        emu.fail_next(Fault.DROP)
        with pytest.raises(requests.ConnectionError):
            call(emu)
        assert 200 == call(emu).status_code

    def test_slow_exceeds_a_short_read_timeout(self, emu: Emulator) -> None:
        """``slow`` holds the answer past a client's read timeout."""
        emu.slow_seconds = 2.0
        emu.fail_next(Fault.SLOW)
        with pytest.raises(requests.ReadTimeout):
            call(emu, timeout=0.2)

    def test_slow_then_answers_normally(self, emu: Emulator) -> None:
        """``slow`` with a short delay still answers the normal success body."""
        expected = parse(call(emu))
        emu.slow_seconds = 0.05
        emu.fail_next(Fault.SLOW)
        response = call(emu)
        assert (200, without_time(expected)) == (
            response.status_code,
            without_time(parse(response)),
        )

    def test_malformed_json(self, emu: Emulator) -> None:
        """``malformed_json`` is HTTP 200 with a JSON content type and a body that won't parse."""
        emu.fail_next(Fault.MALFORMED_JSON)
        response = call(emu)
        assert (200, "application/json") == (
            response.status_code,
            response.headers["Content-Type"].split(";")[0],
        )
        with pytest.raises(json.JSONDecodeError):
            parse(response)

    def test_html_error(self, emu: Emulator) -> None:
        """``html_error`` is a 502 HTML page, as a proxy would show."""
        emu.fail_next(Fault.HTML_ERROR)
        response = call(emu)
        assert (502, "text/html", True) == (
            response.status_code,
            response.headers["Content-Type"],
            response.text.startswith("<html>"),
        )


class TestWrongTypes:
    def test_luxtak_amount_is_an_object(self) -> None:
        """Luxtak ``wrong_types`` sends ``amount`` as a JSON object."""
        with LuxtakEmulator(balances={"BRL": "10.00"}) as emu:
            emu.fail_next(Fault.WRONG_TYPES)
            response = call(emu)
        assert (200, [{"currency": "BRL", "amount": {"value": "10.00"}}]) == (
            response.status_code,
            parse(response)["data"],
        )

    def test_luxcore_available_is_a_bool(self) -> None:
        """LuxCore ``wrong_types`` sends ``available_amount`` as a JSON bool."""
        with LuxCoreEmulator() as emu:
            emu.fail_next(Fault.WRONG_TYPES)
            body = parse(call(emu))
        assert (True, "1500000") == (body["available_amount"], body["balance_amount"])

    def test_pagsmile_balance_is_a_string(self) -> None:
        """Pagsmile ``wrong_types`` sends ``balance`` as the string ``"lots"``."""
        with PagsmileEmulator() as emu:
            emu.fail_next(Fault.WRONG_TYPES)
            body = parse(call(emu))
        assert "lots" == body["assets"][0]["balance"]
