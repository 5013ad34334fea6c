"""No secret anywhere in an error's chain, however an application renders or ships it.

Every fault of every provider emulator (plus rejected credentials, a dead port, a TLS failure
and a timeout) is raised through ``fetch`` and then rendered the ways applications do:
structlog's ``dict_tracebacks`` and ``ExceptionRenderer`` with locals,
``traceback.format_exception(capture_locals=True)``, ``repr`` and ``pickle``. Each rendering
is scanned for every secret: the API key, the app key, the security key and the Basic token.
"""

from __future__ import annotations

import json
import pickle
import socket
import traceback

import pytest
import structlog
from structlog.tracebacks import ExceptionDictTransformer

from guard.errors import ProviderError
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from guard.fetchers._http import HttpFetcher, TransportFailure
from guard.testing.emulators import Fault
from tests._hostile import HostileServer, drip_body
from tests.test_fetchers_emulated import PROVIDERS, Emulator, Provider

POLICY = RetryPolicy(attempts=2, deadline=1.0, backoff=0.001, max_backoff=0.002)
WRONG_KEY = "wrong_secret_key_98765_hostile"


def _raise_through(fetcher: HttpFetcher, currency: str) -> ProviderError:
    """Return the error fetch raised (with its traceback), or fail when it answered."""
    try:
        fetcher.fetch(currency)
    except ProviderError as exc:
        return exc
    pytest.fail("the fetch was expected to fail")


def renderings(error: ProviderError) -> dict[str, str]:
    """Return every way the error is shown: structlog, traceback with locals, repr, pickle."""
    exc_info = (type(error), error, error.__traceback__)
    dict_tb = structlog.processors.dict_tracebacks(None, "error", {"exc_info": exc_info})
    with_locals = structlog.processors.ExceptionRenderer(
        ExceptionDictTransformer(show_locals=True, max_frames=100, locals_max_string=10_000)
    )(None, "error", {"exc_info": exc_info})
    plain = structlog.processors.format_exc_info(None, "error", {"exc_info": exc_info})
    chain = []
    link: BaseException | None = error
    while link is not None:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return {
        "dict_tracebacks": json.dumps(dict_tb, default=repr),
        "exception_renderer_locals": json.dumps(with_locals, default=repr),
        "format_exc_info": str(plain),
        "format_exception_locals": "".join(
            traceback.TracebackException(*exc_info, capture_locals=True).format()
        ),
        "repr": " ".join(repr(e) + repr(vars(e)) for e in chain),
        "pickle": repr(pickle.dumps(error)) + repr(pickle.loads(pickle.dumps(error)).__dict__),
    }


def _faults(provider: Provider) -> list[str]:
    faults = [str(f) for f in Fault if f is not Fault.EXPIRED and f is not Fault.SLOW]
    if provider.name == "luxtak":
        faults.append(str(Fault.EXPIRED))
    return ["wrong_key", *faults]


def _secrets(provider: Provider, emu: Emulator) -> tuple[str, ...]:
    return (*provider.secrets(emu), WRONG_KEY)


def _fetcher_at(name: str, emu: Emulator, url: str) -> HttpFetcher:
    """Return *name*'s fetcher with the emulator's credentials, aimed at *url*."""
    retry = RetryPolicy(attempts=1, deadline=0.6)
    if name == "luxtak":
        return LuxtakFetcher(emu.app_id, emu.app_key, base_url=url, retry=retry)
    if name == "luxcore":
        return LuxCoreFetcher(emu.api_key, base_url=url, retry=retry)
    return PagsmileFetcher(emu.app_id, emu.security_key, base_url=url, retry=retry)


def _assert_clean(error: ProviderError, secrets: tuple[str, ...]) -> None:
    for how, text in renderings(error).items():
        for secret in secrets:
            assert secret not in text, f"{type(error).__name__} leaks a secret via {how}"


class TestErrorsCarryNoSecrets:
    @pytest.mark.parametrize("name", sorted(PROVIDERS))
    def test_every_fault_renders_without_secrets(self, name: str) -> None:
        """Each emulator fault and a wrong key: no secret in any rendering of the error."""
        provider = PROVIDERS[name]
        with provider.emulator() as emu:
            secrets = _secrets(provider, emu)
            for fault in _faults(provider):
                emu.clear_faults()
                secret = WRONG_KEY if fault == "wrong_key" else None
                if fault != "wrong_key":
                    emu.fail_next(fault, times=4)
                with provider.fetcher(emu, retry=POLICY, timeout=(1.0, 0.5),
                                      secret=secret) as fetcher:
                    error = _raise_through(fetcher, provider.currency)
                _assert_clean(error, secrets)

    @pytest.mark.parametrize("name", sorted(PROVIDERS))
    @pytest.mark.parametrize("where", ["dead_port", "dripping", "not_tls"])
    def test_transport_failures_render_without_secrets(self, name: str, where: str) -> None:
        """A refused connection, a timeout and a TLS failure chain to a clean stand-in."""
        provider = PROVIDERS[name]
        with provider.emulator() as emu:
            secrets = _secrets(provider, emu)
            server = HostileServer(drip_body(b"{}" * 100))
            if where == "dead_port":
                with socket.socket() as free:
                    free.bind(("127.0.0.1", 0))
                    url = f"http://127.0.0.1:{free.getsockname()[1]}"
            elif where == "dripping":
                url = server.url
            else:
                url = server.url.replace("http:", "https:")
            fetcher = _fetcher_at(name, emu, url)
            with fetcher:
                error = _raise_through(fetcher, provider.currency)
            server.close()
        assert isinstance(error.__cause__, TransportFailure | None)
        _assert_clean(error, secrets)

    def test_the_chain_holds_no_transport_exception(self) -> None:
        """No requests or urllib3 exception is reachable through __cause__ or __context__."""
        provider = PROVIDERS["luxcore"]
        with provider.emulator() as emu:
            fetcher = provider.fetcher(emu, retry=RetryPolicy(attempts=1, deadline=0.5))
            emu.fail_next("drop")
            with fetcher:
                error = _raise_through(fetcher, provider.currency)
        link: BaseException | None = error
        modules = []
        while link is not None:
            modules.append(type(link).__module__)
            link = link.__cause__ or link.__context__
        assert not any(m.startswith(("requests", "urllib3", "http")) for m in modules)
