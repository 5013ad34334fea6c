"""Each fetcher against its provider emulator over real loopback sockets: happy paths and auth."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from guard import PayoutGuard
from guard.errors import ProviderAuthError
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from guard.fetchers._http import HttpFetcher
from guard.testing.emulators import LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator

FAST = RetryPolicy(attempts=3, deadline=5.0, backoff=0.001, max_backoff=0.002)
TIMEOUT = (1.0, 1.0)

Emulator = Any  # the three emulators share an interface but no exported base class


@dataclass(frozen=True)
class Provider:
    """How to run one provider's emulator and point its fetcher at it."""

    name: str
    emulator: Callable[[], Emulator]
    connect: Callable[..., HttpFetcher]  # (emu, *, secret=None, **options)
    currency: str
    expected: dict[str, Decimal]
    auth_code: str
    secrets: Callable[[Emulator], tuple[str, ...]]

    def fetcher(self, emu: Emulator, *, retry: RetryPolicy = FAST, **options: Any
                ) -> HttpFetcher:
        options.setdefault("timeout", TIMEOUT)
        return self.connect(emu, retry=retry, **options)


def _luxtak(emu: LuxtakEmulator, *, secret: str | None = None, **options: Any) -> HttpFetcher:
    return LuxtakFetcher(emu.app_id, secret or emu.app_key, base_url=emu.url, **options)


def _luxcore(emu: LuxCoreEmulator, *, secret: str | None = None, **options: Any) -> HttpFetcher:
    return LuxCoreFetcher(secret or emu.api_key, base_url=emu.url, **options)


def _pagsmile(emu: PagsmileEmulator, *, secret: str | None = None, **options: Any
              ) -> HttpFetcher:
    return PagsmileFetcher(emu.app_id, secret or emu.security_key, base_url=emu.url, **options)


def _basic_token(emu: PagsmileEmulator) -> str:
    return base64.b64encode(f"{emu.app_id}:{emu.security_key}".encode()).decode()


PROVIDERS = {
    "luxtak": Provider(
        "luxtak", lambda: LuxtakEmulator(balances={"BRL": "99002.23", "USD": "551.38"}),
        _luxtak, "BRL", {"BRL": Decimal("99002.23"), "USD": Decimal("551.38")}, "4004003",
        lambda emu: (emu.app_key,),
    ),
    "luxcore": Provider(
        "luxcore", lambda: LuxCoreEmulator(balances={"ARS": "12000.00", "MXN": "8500.00"}),
        _luxcore, "ARS", {"ARS": Decimal("12000.00"), "MXN": Decimal("8500.00")},
        "INVALID_API_KEY", lambda emu: (emu.api_key,),
    ),
    "pagsmile": Provider(
        "pagsmile", lambda: PagsmileEmulator(balances={"BRL": "6000000.00", "MXN": "10.50"}),
        _pagsmile, "BRL", {"BRL": Decimal("6000000.00"), "MXN": Decimal("10.50")}, "40002",
        lambda emu: (emu.security_key, _basic_token(emu)),
    ),
}


@pytest.fixture(params=sorted(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    return PROVIDERS[request.param]


@pytest.fixture
def emu(provider: Provider) -> Iterator[Emulator]:
    with provider.emulator() as emulator:
        emulator.slow_seconds = 1.0
        yield emulator


class TestHappyPath:
    def test_all_currencies(self, provider: Provider, emu: Emulator) -> None:
        """fetch() returns every currency with exact amounts, tagged with the provider."""
        with provider.fetcher(emu) as fetcher:
            snapshots = fetcher.fetch()
        assert provider.expected == {s.currency: s.available for s in snapshots}
        assert {provider.name} == {s.provider for s in snapshots}
        assert all(s.as_of.tzinfo is UTC for s in snapshots)

    def test_one_currency(self, provider: Provider, emu: Emulator) -> None:
        """fetch(currency) returns just that currency, with one request."""
        with provider.fetcher(emu) as fetcher:
            [snapshot] = fetcher.fetch(provider.currency.lower())
        assert (provider.currency, provider.expected[provider.currency], 1) == (
            snapshot.currency, snapshot.available, emu.balance_requests)

    def test_balance_changes_seen(self, provider: Provider, emu: Emulator) -> None:
        """A new balance at the provider shows in the next fetch (the fetcher caches nothing)."""
        with provider.fetcher(emu) as fetcher:
            fetcher.fetch(provider.currency)
            emu.set_balance(provider.currency, "1.25")
            [snapshot] = fetcher.fetch(provider.currency)
        assert Decimal("1.25") == snapshot.available

    def test_currency_not_held(self, provider: Provider, emu: Emulator) -> None:
        """A currency the provider does not hold gives an empty list, not an error."""
        with provider.fetcher(emu) as fetcher:
            assert [] == fetcher.fetch("CLP")

    def test_fresh_as_of(self, provider: Provider, emu: Emulator) -> None:
        """as_of is the provider's time or the receive time: within a minute of now."""
        with provider.fetcher(emu) as fetcher:
            [snapshot] = fetcher.fetch(provider.currency)
        assert abs((datetime.now(UTC) - snapshot.as_of).total_seconds()) < 60


class TestAuth:
    def test_wrong_secret(self, provider: Provider, emu: Emulator) -> None:
        """A wrong key is ProviderAuthError with the provider's code, after one attempt."""
        with provider.fetcher(emu, secret="wrong-key-0000") as fetcher, pytest.raises(
            ProviderAuthError
        ) as info:
            fetcher.fetch(provider.currency)
        assert (provider.name, provider.auth_code, 1, 1) == (
            info.value.provider, info.value.code, info.value.attempts, emu.balance_requests)

    def test_luxtak_unknown_app_id(self) -> None:
        """Luxtak: an unknown AppId is 401 code 4004003."""
        with LuxtakEmulator() as emu:
            fetcher = LuxtakFetcher("OTHER", emu.app_key, base_url=emu.url, retry=FAST)
            with fetcher, pytest.raises(ProviderAuthError) as info:
                fetcher.fetch()
        assert (401, "4004003") == (info.value.status, info.value.code)

    def test_pagsmile_app_not_match(self) -> None:
        """Pagsmile: auth for one app but body app_id of another is 40002 app-not-match."""
        with PagsmileEmulator(app_id="11111111111111111") as emu:
            fetcher = PagsmileFetcher("22222222222222222", emu.security_key, base_url=emu.url,
                                      retry=FAST)
            with fetcher, pytest.raises(ProviderAuthError) as info:
                fetcher.fetch()
        assert ("40002", 200) == (info.value.code, info.value.status)


class TestAmountsFinerThanTheCurrency:
    """Luxtak's amounts have no fixed scale and Pagsmile's six decimals: read, rounded down."""

    def test_luxtak_other_currency_with_three_decimals(self) -> None:
        """A USD row of '551.385' neither blocks BRL (no currency filter) nor reads as more."""
        balances = {"BRL": "1000.00", "USD": "551.385", "JPY": "1500.5"}
        with (LuxtakEmulator(balances=balances) as emu,
              _luxtak(emu, retry=FAST, timeout=TIMEOUT) as fetcher):
            [brl] = fetcher.fetch("BRL")
            every = {s.currency: s.available for s in fetcher.fetch()}
        assert Decimal("1000.00") == brl.available
        assert {"BRL": Decimal("1000.00"), "USD": Decimal("551.38"),
                "JPY": Decimal("1500")} == every

    def test_pagsmile_six_decimals(self) -> None:
        """A balance of 100.123456 BRL is 100.12 available: allowed up to it, denied above."""
        with (PagsmileEmulator(balances={"BRL": "100.123456"}) as emu,
              _pagsmile(emu, retry=FAST, timeout=TIMEOUT) as fetcher):
            guard = PayoutGuard(fetcher, cache_ttl=0)
            allowed, denied = guard.check("100.12", "BRL"), guard.check("100.13", "BRL")
        assert allowed.balance is not None
        assert (True, Decimal("100.12")) == (allowed.allowed, allowed.balance.available)
        assert (False, ("insufficient_funds",)) == (denied.allowed, denied.codes)


class TestLuxtakClock:
    def test_request_carries_current_timestamp(self) -> None:
        """The signed body holds the current Unix time, and the emulator accepts it."""
        with LuxtakEmulator() as emu, _luxtak(emu, retry=FAST) as fetcher:
            fetcher.fetch()
            [sent] = emu.requests
        stamp = json.loads(sent.body)["timestamp"]
        assert abs(stamp - datetime.now(UTC).timestamp()) < 60

    def test_skewed_server_resigned_once_then_auth_error(self) -> None:
        """A server clock far off: one re-signed retry, then ProviderAuthError naming the skew."""
        with LuxtakEmulator(timestamp_window=60) as emu, _luxtak(emu, retry=FAST) as fetcher:
            emu.server_time_offset = 3600.0
            with pytest.raises(ProviderAuthError) as info:
                fetcher.fetch()
        assert (2, 2, "4001000", 400) == (
            info.value.attempts, emu.balance_requests, info.value.code, info.value.status)
        # Server and local clocks are read a moment apart and truncated to whole seconds.
        off = re.search(r"off by (-?\d+) s", str(info.value))
        assert off is not None, str(info.value)
        assert abs(int(off.group(1)) + 3600) <= 1, str(info.value)

    def test_as_of_is_server_time(self) -> None:
        """Luxtak's as_of is the server's 'time', skew and all."""
        with LuxtakEmulator(timestamp_window=1e6) as emu, _luxtak(emu, retry=FAST) as fetcher:
            emu.server_time_offset = -7200.0
            [brl] = fetcher.fetch("BRL")
        assert 7000 < (datetime.now(UTC) - brl.as_of).total_seconds() < 7400


class TestPagsmileStamp:
    def test_utc_timestamp_and_version(self) -> None:
        """The body carries app_id, a UTC 'yyyy-MM-dd HH:mm:ss' timestamp and version 2.0."""
        with PagsmileEmulator() as emu, _pagsmile(emu, retry=FAST) as fetcher:
            fetcher.fetch("BRL")
            [sent] = emu.requests
        body = json.loads(sent.body)
        stamp = datetime.strptime(body["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        assert (emu.app_id, "2.0", "BRL") == (body["app_id"], body["version"], body["currency"])
        assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
