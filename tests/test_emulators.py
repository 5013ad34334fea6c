"""Behaviour shared by the three provider emulators: lifecycle, faults, request log, secrets."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
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
def emu(request: pytest.FixtureRequest) -> Iterator[Emulator]:
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
        """The package exports exactly the six public names, in a sorted ``__all__``."""
        expected = ["BalanceCall", "Fault", "LuxCoreEmulator", "LuxtakEmulator", "PagsmileEmulator"]
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
