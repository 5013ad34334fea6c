"""Fault injection, the same for every emulator: each kind's observable behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
import requests

from guard.testing.emulators import Fault, LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator
from guard.testing.emulators._base import EmulatorBase
from tests.test_emulators import FACTORIES, Emulator, call, call_unauthenticated, parse


@pytest.fixture(params=sorted(FACTORIES))
def emu(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    with FACTORIES[request.param]() as emulator:
        yield emulator


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


CLASSES: dict[str, type[Emulator]] = {
    "luxtak": LuxtakEmulator,
    "luxcore": LuxCoreEmulator,
    "pagsmile": PagsmileEmulator,
}


@pytest.fixture(params=sorted(CLASSES))
def limited(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """Yield each emulator limited to two balance requests a minute."""
    with CLASSES[request.param](requests_per_minute=2) as emulator:
        yield emulator


class TestRateLimit:
    def test_requests_beyond_the_limit_get_the_provider_429(self, limited: Emulator) -> None:
        """The third balance request within a minute is the provider's 429, with Retry-After."""
        statuses = [call(limited).status_code for _ in range(2)]
        refused = call(limited)
        assert ([200, 200], 429) == (statuses, refused.status_code)
        assert ERROR_SHAPES[provider(limited), 429] == without_time(parse(refused))
        assert 1 <= int(refused.headers["Retry-After"]) <= 60

    def test_counters(self, limited: Emulator) -> None:
        """Authenticated balance calls and the 429s sent are counted; rejected auth is not."""
        call_unauthenticated(limited)
        for _ in range(3):
            call(limited)
        calls = limited.balance_calls
        assert (3, 1, 4) == (
            limited.authenticated_balance_requests,
            limited.rate_limited_requests,
            limited.balance_requests,
        )
        assert [False, False, True] == [balance_call.rate_limited for balance_call in calls]
        assert [entry.received_at for entry in limited.requests[1:]] == [
            balance_call.received_at for balance_call in calls
        ]

    def test_a_limited_request_uses_no_fault(self, limited: Emulator) -> None:
        """The limit answers before the fault queue: a queued fault waits for an answered call."""
        call(limited)
        call(limited)
        limited.fail_next(Fault.HTTP_503)
        assert (429, (Fault.HTTP_503,)) == (call(limited).status_code, limited.pending_faults)

    def test_no_limit_by_default(self, emu: Emulator) -> None:
        """Without ``requests_per_minute`` every balance request is answered."""
        statuses = {call(emu).status_code for _ in range(30)}
        assert ({200}, 0) == (statuses, emu.rate_limited_requests)

    @pytest.mark.parametrize("bad", [0, -1, True, 1.5, "100"])
    def test_a_bad_limit_is_refused(self, bad: object) -> None:
        """``requests_per_minute`` must be a positive int or None."""
        with pytest.raises(ValueError, match="requests_per_minute must be a positive int"):
            LuxCoreEmulator(requests_per_minute=bad)  # type: ignore[arg-type] # the bad input
