"""Fetcher construction: exports, URL safety, timeouts, credentials, sessions and reprs."""

from __future__ import annotations

import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import guard.fetchers
from guard.errors import ConfigurationError, ProviderUnavailable
from guard.fetchers import (
    LUXCORE_URL,
    LUXTAK_PRODUCTION_URL,
    LUXTAK_SANDBOX_URL,
    PAGSMILE_PRODUCTION_URL,
    PAGSMILE_SANDBOX_URL,
    BalanceFetcher,
    LuxCoreFetcher,
    LuxtakFetcher,
    PagsmileFetcher,
    RetryPolicy,
)
from guard.fetchers._http import HttpFetcher
from tests.test_fetchers_golden import LUXCORE_ONE, Canned

Factory = Callable[..., HttpFetcher]
FACTORIES: dict[str, Factory] = {
    "luxtak": lambda **kw: LuxtakFetcher("LT_APP", "lt_secret_key_123", **kw),
    "luxcore": lambda **kw: LuxCoreFetcher("qp_test_sk_secret_123", **kw),
    "pagsmile": lambda **kw: PagsmileFetcher("16258292145316638", "Pagsmile_sk_secret", **kw),
}
SECRETS = ("lt_secret_key_123", "qp_test_sk_secret_123", "Pagsmile_sk_secret")


@pytest.fixture(params=sorted(FACTORIES))
def factory(request: pytest.FixtureRequest) -> Factory:
    return FACTORIES[request.param]


@pytest.fixture
def canned() -> Iterator[Canned]:
    server = Canned()
    yield server
    server.close()


class RecordingSession(requests.Session):
    """A real session that remembers whether it was closed and how often it was used."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.used = 0

    def close(self) -> None:
        self.closed = True
        super().close()

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        self.used += 1
        return super().request(*args, **kwargs)


class TestExports:
    def test_public_names(self) -> None:
        """guard.fetchers exports exactly the fetchers, the policy, the protocol and the URLs."""
        assert {
            "BalanceFetcher", "LuxCoreFetcher", "LuxtakFetcher", "PagsmileFetcher", "RetryPolicy",
            "LUXCORE_URL", "LUXTAK_PRODUCTION_URL", "LUXTAK_SANDBOX_URL",
            "PAGSMILE_PRODUCTION_URL", "PAGSMILE_SANDBOX_URL",
        } == set(guard.fetchers.__all__)
        assert all(hasattr(guard.fetchers, name) for name in guard.fetchers.__all__)

    def test_base_urls(self) -> None:
        """The documented hosts are the module constants, all https."""
        assert ("https://sandbox.luxtak.com", "https://api.luxtak.com",
                "https://api.lux-core.io", "https://gateway-test.pagsmile.com",
                "https://gateway.pagsmile.com") == (
            LUXTAK_SANDBOX_URL, LUXTAK_PRODUCTION_URL, LUXCORE_URL, PAGSMILE_SANDBOX_URL,
            PAGSMILE_PRODUCTION_URL)

    def test_protocol(self, factory: Factory) -> None:
        """Each fetcher is a BalanceFetcher with its provider's name, on the sandbox by default."""
        with factory() as fetcher:
            assert isinstance(fetcher, BalanceFetcher)
            assert fetcher.base_url in {LUXTAK_SANDBOX_URL, LUXCORE_URL, PAGSMILE_SANDBOX_URL}
            assert fetcher.name in FACTORIES


class TestBaseUrl:
    @pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost",
                                     "http://[::1]:9000/", "https://api.example.com/"])
    def test_accepted(self, factory: Factory, url: str) -> None:
        """An https URL anywhere and http on loopback are accepted; a trailing / is dropped."""
        with factory(base_url=url) as fetcher:
            assert url.rstrip("/") == fetcher.base_url

    @pytest.mark.parametrize("url", ["http://api.example.com", "http://10.0.0.1:80",
                                     "http://127.0.0.1.example.com"])
    def test_plain_http_refused(self, factory: Factory, url: str) -> None:
        """Plain http to a non-loopback host is refused at construction."""
        with pytest.raises(ConfigurationError, match="unencrypted") as info:
            factory(base_url=url)
        assert "base_url" == info.value.path

    def test_plain_http_when_allowed(self, factory: Factory) -> None:
        """allow_insecure=True lets plain http through (for a private test network)."""
        with factory(base_url="http://emulator.internal:8080", allow_insecure=True) as fetcher:
            assert "http://emulator.internal:8080" == fetcher.base_url

    @pytest.mark.parametrize("url", ["ftp://x.example", "https://user:pw@x.example",
                                     "https://x.example/?a=1", "https://", 42])
    def test_malformed_refused(self, factory: Factory, url: object) -> None:
        """Other schemes, credentials in the URL, queries and non-strings are refused."""
        with pytest.raises(ConfigurationError):
            factory(base_url=url)


class TestOptions:
    @pytest.mark.parametrize("timeout", [0, -1, float("inf"), (1, 2, 3), (1, None), "5", True])
    def test_bad_timeout(self, factory: Factory, timeout: object) -> None:
        """A timeout must be finite positive seconds or a (connect, read) pair of them."""
        with pytest.raises(ConfigurationError, match="timeout"):
            factory(timeout=timeout)

    def test_bad_retry(self, factory: Factory) -> None:
        """The retry option must be a RetryPolicy."""
        with pytest.raises(ConfigurationError, match="retry"):
            factory(retry={"attempts": 3})

    def test_unverified_session_refused(self, factory: Factory) -> None:
        """A session with TLS verification turned off is refused."""
        session = requests.Session()
        session.verify = False
        with session, pytest.raises(ConfigurationError, match="verify"):
            factory(session=session)

    @pytest.mark.parametrize(("make", "field"), [
        (lambda: LuxtakFetcher("", "k"), "app_id"),
        (lambda: LuxtakFetcher("a", " k "), "app_key"),
        (lambda: LuxCoreFetcher(None), "api_key"),  # type: ignore[arg-type]  # wrong on purpose
        (lambda: PagsmileFetcher("a:b", "k"), "app_id"),
        (lambda: PagsmileFetcher("1" * 33, "k"), "app_id"),  # the docs: at most 32 characters
        (lambda: PagsmileFetcher("a", ""), "security_key"),
        (lambda: LuxCoreFetcher("k", balance_type="savings"), "balance_type"),  # type: ignore[arg-type]  # wrong on purpose
        (lambda: PagsmileFetcher("a", "k", available_field="settled"), "available_field"),  # type: ignore[arg-type]  # wrong on purpose
    ])
    def test_bad_arguments(self, make: Callable[[], object], field: str) -> None:
        """Bad credentials and options are refused at construction, naming the argument."""
        with pytest.raises(ConfigurationError) as info:
            make()
        assert field == info.value.path

    def test_credential_not_echoed(self) -> None:
        """A refused credential's value is not in the error message."""
        with pytest.raises(ConfigurationError) as info:
            LuxtakFetcher("app", " lt_secret_key_123")
        assert "lt_secret_key_123" not in str(info.value)


class TestSessions:
    def test_passed_session_left_open_and_reused(self, canned: Canned) -> None:
        """A caller's session is used for every request and is not closed by the fetcher."""
        canned.reply(LUXCORE_ONE)
        canned.reply(LUXCORE_ONE)
        with RecordingSession() as session:
            with LuxCoreFetcher("k", base_url=canned.url, session=session) as fetcher:
                fetcher.fetch("ARS")
                fetcher.fetch("ARS")
            assert (2, False) == (session.used, session.closed)

    def test_own_session_closed(self, canned: Canned) -> None:
        """close() is idempotent and the fetcher stays a context manager returning itself."""
        fetcher = LuxCoreFetcher("k", base_url=canned.url)
        with fetcher as entered:
            assert fetcher is entered
        fetcher.close()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """Return (cert, key) of a fresh self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[Canned]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = Canned(tls=context)
    yield server
    server.close()


class TestTls:
    def test_verification_cannot_be_switched_off_later(self, tls_server: Canned) -> None:
        """Setting session.verify = False after construction is refused before any request."""
        with requests.Session() as session:
            fetcher = LuxCoreFetcher("k", base_url=tls_server.url, session=session)
            session.verify = False
            with fetcher, pytest.raises(ConfigurationError, match="TLS verification"):
                fetcher.fetch("ARS")
        assert [] == tls_server.received

    def test_untrusted_certificate_refused(self, tls_server: Canned) -> None:
        """TLS verification is on: a self-signed certificate fails at once, not retried."""
        with LuxCoreFetcher("k", base_url=tls_server.url) as fetcher, pytest.raises(
            ProviderUnavailable, match="TLS verification failed"
        ) as info:
            fetcher.fetch("ARS")
        assert 1 == info.value.attempts

    def test_private_ca_bundle_trusted(self, tls_server: Canned,
                                       certificate: tuple[Path, Path]) -> None:
        """A session trusting a private CA bundle (verify=<path>) works, whatever the env says."""
        tls_server.reply(LUXCORE_ONE)
        with requests.Session() as session:
            session.verify = str(certificate[0])
            with LuxCoreFetcher("k", base_url=tls_server.url, session=session) as fetcher:
                assert 1 == len(fetcher.fetch("ARS"))


class TestRepr:
    def test_no_secret_in_repr(self, factory: Factory) -> None:
        """The repr shows the URL and options but never a key (nor Pagsmile's Basic token)."""
        with factory() as fetcher:
            text = repr(fetcher)
        assert text.startswith(type(fetcher).__name__ + "(base_url='https://")
        assert not any(secret in text for secret in SECRETS)
        assert "UGFnc21pbGVfc2tf" not in text

    def test_policy_repr(self) -> None:
        """RetryPolicy has a readable repr."""
        assert "RetryPolicy(attempts=2" in repr(RetryPolicy(attempts=2))
