"""Fetches against hostile servers on 127.0.0.1: bounded time, TLS always on, only ProviderError.

The servers (``tests/_hostile.py``) drip headers or bodies, answer with numbers no balance can
have, unreadable ``Retry-After`` headers and redirects, or present a self-signed certificate.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from decimal import Decimal, localcontext
from pathlib import Path

import pytest
import requests
from structlog.testing import capture_logs

from guard import BalanceSnapshot, ConfigurationError, PayoutGuard
from guard.errors import ProviderError, ProviderResponseError, ProviderUnavailable
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from tests._hostile import (
    Behaviour,
    HostileServer,
    answer,
    drip_body,
    drip_headers,
    elapsed,
    self_signed,
)

LUXCORE_ARS = (
    '{"success": true, "merchant_id": 123, "currency": "ARS", "balance_type": "main", '
    '"balance_amount": "1500000", "available_amount": "1200000", "frozen_amount": "300000"}'
)
KEY = "qp_test_sk_hostile_0123456789"


def luxcore(server: HostileServer, *, deadline: float = 5.0, attempts: int = 1,
            timeout: tuple[float, float] = (3.0, 5.0)) -> LuxCoreFetcher:
    policy = RetryPolicy(attempts=attempts, deadline=deadline, backoff=0.01, max_backoff=0.01)
    return LuxCoreFetcher(KEY, base_url=server.url, retry=policy, timeout=timeout)


@pytest.fixture
def serve() -> Iterator[list[HostileServer]]:
    servers: list[HostileServer] = []
    yield servers
    for server in servers:
        server.close()


def start(servers: list[HostileServer], behaviour: Behaviour,
          tls: ssl.SSLContext | None = None) -> HostileServer:
    server = HostileServer(behaviour, tls=tls)
    servers.append(server)
    return server


class TestOneDeadline:
    def test_a_dripping_body_is_cut_at_the_deadline(self, serve: list[HostileServer]) -> None:
        """A body sent one byte per 0.25 s: deadline=2 gives up within 3 s, a timeout."""
        server = start(serve, drip_body(LUXCORE_ARS))
        fetcher = luxcore(server, deadline=2.0, timeout=(3.0, 5.0))
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="timed out"):
            fetcher.fetch("ARS")
        took = time.monotonic() - started
        print(f"dripping body, deadline=2: fetch gave up after {took:.2f} s")
        assert took < 3.0

    def test_slow_headers_are_cut_at_the_deadline(self, serve: list[HostileServer]) -> None:
        """Headers sent one byte per 0.25 s: deadline=2 gives up within 3 s."""
        server = start(serve, drip_headers())
        fetcher = luxcore(server, deadline=2.0, timeout=(3.0, 5.0))
        assert elapsed(lambda: fetcher.fetch("ARS")) < 3.0
        with pytest.raises(ProviderUnavailable, match="timed out"):
            fetcher.fetch("ARS")

    def test_the_deadline_covers_every_attempt_and_wait(
        self, serve: list[HostileServer]
    ) -> None:
        """Three attempts at a dripping server still end within the one deadline."""
        server = start(serve, drip_body(LUXCORE_ARS))
        fetcher = luxcore(server, deadline=2.0, attempts=3, timeout=(1.0, 1.0))
        assert elapsed(lambda: fetcher.fetch("ARS")) < 3.0

    def test_checks_sharing_a_fetch_return_within_deadline_plus_1_s(
        self, serve: list[HostileServer]
    ) -> None:
        """Four checks waiting on one dripping fetch all deny balance_unavailable in time."""
        server = start(serve, drip_body(LUXCORE_ARS))
        guard = PayoutGuard(luxcore(server, deadline=2.0, timeout=(3.0, 5.0)))
        results: list[tuple[float, list[str]]] = []

        def one_check() -> None:
            started = time.monotonic()
            decision = guard.check("1.00", "ARS")
            results.append((time.monotonic() - started, list(decision.codes)))

        threads = [threading.Thread(target=one_check) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [["balance_unavailable"]] * 4 == [codes for _, codes in results]
        assert max(took for took, _ in results) < 3.0 + 0.5  # deadline + 1 s, with slack
        guard.close()

    def test_a_body_over_1_mib_is_refused(self, serve: list[HostileServer]) -> None:
        """A body larger than 1 MiB is a ProviderResponseError, however fast it comes."""
        server = start(serve, answer(200, b"[" + b"0," * 600_000 + b"0]"))
        with pytest.raises(ProviderResponseError, match="larger than"):
            luxcore(server).fetch("ARS")


class _StuckFetcher:
    """A fetcher with a 1 s deadline whose fetch hangs until released (a broken transport)."""

    name = "stuck"
    deadline = 1.0

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def fetch(self, currency: str | None = None) -> list[BalanceSnapshot]:  # noqa: ARG002 - the protocol's signature
        self.started.set()
        self.release.wait(30)
        return []


class TestWaitersOnASharedFetch:
    def test_waiters_give_up_at_the_fetchers_deadline_plus_1_s(self) -> None:
        """Checks waiting on a fetch that overruns its deadline deny within deadline + 1 s."""
        fetcher = _StuckFetcher()
        guard = PayoutGuard(fetcher)
        leader = threading.Thread(target=guard.check, args=("1.00", "ARS"))
        leader.start()
        assert fetcher.started.wait(5)
        started = time.monotonic()
        decision = guard.check("1.00", "ARS")
        took = time.monotonic() - started
        fetcher.release.set()
        leader.join()
        assert ("balance_unavailable",) == decision.codes
        assert 1.0 <= took < 2.0 + 0.5


class TestTlsOnly:
    @pytest.fixture
    def tls_server(self, serve: list[HostileServer], tmp_path: Path) -> HostileServer:
        cert, key = self_signed(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        return start(serve, answer(200, LUXCORE_ARS), tls=context)

    @pytest.mark.parametrize("value", [False, "", 0, None, "/nonexistent/ca.pem"])
    def test_verification_off_is_refused_at_construction(self, value: object) -> None:
        """Verify False, "", 0, None or a missing CA path: ConfigurationError, no fetcher."""
        session = requests.Session()
        session.verify = value  # type: ignore[assignment]  # the point is a wrong value
        with pytest.raises(ConfigurationError, match=r"verif|CA"):
            LuxCoreFetcher(KEY, base_url="https://127.0.0.1:1", session=session)
        session.close()

    @pytest.mark.parametrize("value", [False, "", 0, None, "/nonexistent/ca.pem"])
    def test_verification_off_later_is_refused_before_the_request(
        self, tls_server: HostileServer, value: object
    ) -> None:
        """A session switched to verify=<value> after construction sends nothing at all."""
        session = requests.Session()
        fetcher = LuxCoreFetcher(KEY, base_url=tls_server.url, session=session)
        session.verify = value  # type: ignore[assignment]  # the point is a wrong value
        with pytest.raises(ConfigurationError):
            fetcher.fetch("ARS")
        assert [] == tls_server.received
        session.close()

    def test_a_self_signed_server_never_sees_the_key(self, tls_server: HostileServer) -> None:
        """With verification on, the handshake fails and no request (no key) is sent."""
        with pytest.raises(ProviderUnavailable, match="TLS"):
            luxcore(tls_server).fetch("ARS")
        assert [] == tls_server.received

    def test_a_ca_bundle_path_is_trusted(self, serve: list[HostileServer],
                                         tmp_path: Path) -> None:
        """verify=<existing CA file> is allowed and used."""
        cert, key = self_signed(tmp_path)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = start(serve, answer(200, LUXCORE_ARS), tls=context)
        session = requests.Session()
        session.verify = str(cert)
        [snapshot] = LuxCoreFetcher(KEY, base_url=server.url, session=session).fetch("ARS")
        assert "ARS" == snapshot.currency
        session.close()


class TestOnlyProviderErrors:
    def test_a_29_digit_luxcore_amount_is_read_exactly(self, serve: list[HostileServer]) -> None:
        """29 digits fit the money context (34): read exactly, whatever the caller's context."""
        body = LUXCORE_ARS.replace('"1200000"', f'"{"1" * 29}"').replace('"300000"', '"0"')
        server = start(serve, answer(200, body.replace('"1500000"', f'"{"1" * 29}"')))
        with localcontext() as context:
            context.prec = 6
            [snapshot] = luxcore(server).fetch("ARS")
        assert Decimal("1" * 27 + ".11") == snapshot.available

    @pytest.mark.parametrize("amount", ["9" * 40, "1" * 400])
    def test_luxcore_amounts_with_too_many_digits(self, serve: list[HostileServer],
                                                  amount: str) -> None:
        """A minor-unit amount of 29+ digits is a ProviderResponseError naming the field."""
        body = LUXCORE_ARS.replace('"1200000"', f'"{amount}"').replace('"300000"', '"0"')
        body = body.replace('"1500000"', f'"{amount}"')
        server = start(serve, answer(200, body))
        with pytest.raises(ProviderResponseError, match=r"balance_amount|available_amount"):
            luxcore(server).fetch("ARS")

    def test_pagsmile_json_number_below_every_unit_is_zero(
        self, serve: list[HostileServer]
    ) -> None:
        """1e-999 BRL is finite, not negative, and less than a centavo: 0.00, rounded down."""
        body = ('{"code": "10000", "msg": "Success", "assets": [{"currency": "BRL", '
                '"total_revenue": 1.0, "net_income": 1.0, "balance": 1e-999, "payout": 1.0}]}')
        server = start(serve, answer(200, body))
        fetcher = PagsmileFetcher("16258292145316638", "Pagsmile_sk_hostile",
                                  base_url=server.url, retry=RetryPolicy(attempts=1))
        [snapshot] = fetcher.fetch("BRL")
        assert "0.00" == str(snapshot.available)

    @pytest.mark.parametrize("number", ["1e999", "1E+400", "1" * 50 + ".5"])
    def test_pagsmile_json_numbers_no_balance_can_be(
        self, serve: list[HostileServer], number: str
    ) -> None:
        """JSON numbers such as 1e999 are a ProviderResponseError naming the field."""
        body = ('{"code": "10000", "msg": "Success", "assets": [{"currency": "BRL", '
                f'"total_revenue": 1.0, "net_income": 1.0, "balance": {number}, '
                '"payout": 1.0}]}')
        server = start(serve, answer(200, body))
        fetcher = PagsmileFetcher("16258292145316638", "Pagsmile_sk_hostile",
                                  base_url=server.url, retry=RetryPolicy(attempts=1))
        with pytest.raises(ProviderResponseError, match=r"assets\[0\]"):
            fetcher.fetch("BRL")

    @pytest.mark.parametrize("header", ["\u00b2", "\u0663", "soon", "1e3", "-5",
                                        "Mon, 99 Foo 2024", "9" * 400])
    def test_an_unreadable_retry_after_on_a_good_answer_is_ignored(
        self, serve: list[HostileServer], header: str
    ) -> None:
        """Retry-After: ² on a 200 with a good balance: the balance, and a log event."""
        server = start(serve, answer(200, LUXCORE_ARS, ("Retry-After", header)))
        with capture_logs() as logs:
            [snapshot] = luxcore(server).fetch("ARS")
        assert "ARS" == snapshot.currency
        assert "payout_guard.retry_after_ignored" in {e["event"] for e in logs}

    def test_an_unreadable_retry_after_on_a_503_falls_back_to_backoff(
        self, serve: list[HostileServer]
    ) -> None:
        """A 503 with Retry-After: ² is retried with backoff, then a ProviderUnavailable."""
        server = start(serve, answer(503, "{}", ("Retry-After", "\u00b2")))
        with pytest.raises(ProviderUnavailable) as info:
            luxcore(server, attempts=2).fetch("ARS")
        assert 2 == info.value.attempts

    @pytest.mark.parametrize("status", [301, 302, 307, 308])
    def test_a_redirect_is_not_followed(self, serve: list[HostileServer], status: int) -> None:
        """A redirect (to anywhere) is a ProviderResponseError; the key goes nowhere else."""
        elsewhere = start(serve, answer(200, LUXCORE_ARS))
        server = start(serve, answer(status, "", ("Location", elsewhere.url + "/steal")))
        with pytest.raises(ProviderResponseError, match="redirect"):
            luxcore(server).fetch("ARS")
        assert [] == elsewhere.received

    @pytest.mark.parametrize("body", [b"\xff\xfe", b"{" * 100_000 + b"}" * 100_000,
                                      b'{"success": true, "currency": ["ARS"]}', b"null"])
    def test_garbage_bodies_are_response_errors(self, serve: list[HostileServer],
                                                body: bytes) -> None:
        """Bodies that are not a balance raise ProviderResponseError, nothing else."""
        server = start(serve, answer(200, body))
        with pytest.raises(ProviderError):
            luxcore(server).fetch("ARS")

    def test_luxtak_time_out_of_range(self, serve: list[HostileServer]) -> None:
        """A Luxtak time no clock can show is a ProviderResponseError naming 'time'."""
        body = ('{"code": 200, "msg": "ok", "time": ' + "9" * 30
                + ', "data": [{"currency": "USD", "amount": "1.00"}]}')
        server = start(serve, answer(200, body))
        fetcher = LuxtakFetcher("LT_APP", "lt_key_hostile", base_url=server.url,
                                retry=RetryPolicy(attempts=1))
        with pytest.raises(ProviderResponseError, match="time"):
            fetcher.fetch()
