"""Credentials appear in no log line, repr, exception message or argument, whatever happens."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from structlog.testing import capture_logs

from guard.errors import ConfigurationError, ProviderError
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from guard.fetchers._http import HttpFetcher
from guard.testing.emulators import Fault
from tests.test_fetchers_emulated import PROVIDERS, Provider
from tests.test_fetchers_golden import Canned

POLICY = RetryPolicy(attempts=2, deadline=0.8, backoff=0.001, max_backoff=0.002)
WRONG_KEY = "wrong_secret_key_98765"


def texts_of(error: BaseException) -> Iterator[str]:
    """Yield every text an error chain shows: str, repr and args of each link."""
    seen: set[int] = set()
    link: BaseException | None = error
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield str(link)
        yield repr(link)
        yield repr(link.args)
        yield from (str(v) for v in vars(link).values() if isinstance(v, str))
        link = link.__cause__ or link.__context__


def scenarios(provider: Provider) -> list[Fault | str]:
    faults: list[Fault | str] = [f for f in Fault if f is not Fault.EXPIRED]
    if provider.name == "luxtak":
        faults.append(Fault.EXPIRED)
    return ["success", "wrong_key", *faults]


class TestSecrets:
    @pytest.mark.parametrize("name", sorted(PROVIDERS))
    def test_no_secret_anywhere(self, name: str) -> None:
        """Across success, auth failure and every fault, no key shows in logs, reprs or errors."""
        provider = PROVIDERS[name]
        shown: list[str] = []
        with provider.emulator() as emu:
            emu.slow_seconds = 1.0
            secrets = (*provider.secrets(emu), WRONG_KEY)
            for scenario in scenarios(provider):
                emu.clear_faults()
                secret = WRONG_KEY if scenario == "wrong_key" else None
                fetcher = provider.fetcher(emu, retry=POLICY, timeout=(1.0, 0.2), secret=secret)
                if isinstance(scenario, Fault):
                    emu.fail_next(scenario, times=2)
                with fetcher, capture_logs() as logs:
                    shown.append(repr(fetcher))
                    try:
                        shown.extend(repr(s) for s in fetcher.fetch(provider.currency))
                    except ProviderError as exc:
                        shown.extend(texts_of(exc))
                shown.extend(repr(entry) for entry in logs)
        assert any("fetch_retry" in text for text in shown)  # the scan did see retry logs
        leaks = [(secret, text) for text in shown for secret in secrets if secret in text]
        assert [] == leaks


    def test_key_echoed_by_provider_is_redacted(self) -> None:
        """A provider error message that quotes our key is redacted before it reaches an error."""
        server = Canned()
        try:
            server.reply('{"code":4004003,"msg":"bad key lt_secret_key_123","time":1,"data":{}}',
                         status=401)
            fetcher = LuxtakFetcher("APP", "lt_secret_key_123", base_url=server.url,
                                    retry=RetryPolicy(attempts=1))
            with fetcher, pytest.raises(ProviderError) as info:
                fetcher.fetch()
        finally:
            server.close()
        assert "bad key [redacted]" in str(info.value)
        assert not any("lt_secret_key_123" in text for text in texts_of(info.value))


class TestBaseUrlRefusals:
    @pytest.mark.parametrize("url", [
        "https://api.lux-core.io/v1?api_key=SECRET123",
        "https://api.lux-core.io/v1#SECRET123",
        "https://merchant:SECRET123@api.lux-core.io",
        "https://merchant:SECRET123@",
        "http://merchant:SECRET123@api.lux-core.io",
        "merchant:SECRET123@api.lux-core.io",
        "SECRET123",
        "https://[SECRET123",
        "http://api.lux-core.io/SECRET123",
    ])
    @pytest.mark.parametrize("name", sorted(PROVIDERS))
    def test_refused_url_is_not_echoed(self, name: str, url: str) -> None:
        """A refused base_url is named, but no credential, path or query of it is shown."""
        build: dict[str, Callable[[], HttpFetcher]] = {
            "luxtak": lambda: LuxtakFetcher("APP", "k", base_url=url),
            "luxcore": lambda: LuxCoreFetcher("qp_test_sk_k", base_url=url),
            "pagsmile": lambda: PagsmileFetcher("APP", "k", base_url=url),
        }
        with pytest.raises(ConfigurationError) as info:
            build[name]()
        assert "base_url" == info.value.path
        assert [] == [text for text in texts_of(info.value) if "SECRET123" in text]


ECHOED_KEY = "qp_test_sk_ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _echoed(body: str, status: int, **headers: str) -> list[str]:
    """Return every text (error chain and logs) a LuxCore fetch shows for one canned answer."""
    server = Canned()
    try:
        server.reply(body, status=status, **headers)
        server.reply(body, status=status, **headers)
        fetcher = LuxCoreFetcher(ECHOED_KEY, base_url=server.url,
                                 retry=RetryPolicy(attempts=2, deadline=2.0, backoff=0.001,
                                                   max_backoff=0.002, jitter=False))
        with fetcher, capture_logs() as logs, pytest.raises(ProviderError) as info:
            fetcher.fetch("ARS")
    finally:
        server.close()
    return [*texts_of(info.value), repr(info.value.code), *(repr(entry) for entry in logs)]


class TestEchoedKeyCut:
    @pytest.mark.parametrize("shown", [15, 30, 43])
    def test_a_key_straddling_the_message_cut_is_redacted_whole(self, shown: int) -> None:
        """A provider message cut at 200 characters shows no part of a key the cut splits."""
        prefix = "invalid api key "
        message = prefix + "." * (197 - len(prefix) - shown) + ECHOED_KEY + " (see dashboard)"
        body = json.dumps({"success": False, "error": "unauthorized", "message": message})
        texts = _echoed(body, 401)
        assert any("invalid api key" in text for text in texts)  # the message is still shown
        assert [] == [text for text in texts if ECHOED_KEY[:15] in text]

    def test_a_key_in_a_quoted_body_value_is_redacted_whole(self) -> None:
        """A body value quoted back (cut to 40 characters) shows no part of the key."""
        texts = _echoed(json.dumps({"success": ECHOED_KEY}), 200)
        assert any("field success" in text for text in texts)
        assert [] == [text for text in texts if ECHOED_KEY[:15] in text]

    def test_a_key_echoed_as_the_error_code_is_redacted(self) -> None:
        """A provider error code holding the key never becomes the error's code or a log field."""
        texts = _echoed(json.dumps({"success": False, "error": ECHOED_KEY}), 401)
        assert [] == [text for text in texts if ECHOED_KEY[:15] in text]

    def test_a_key_echoed_in_retry_after_is_not_logged(self) -> None:
        """An unreadable Retry-After header quoting the key is logged without it."""
        texts = _echoed('{"success": false, "error": "busy"}', 503,
                        Retry_After=f"soon {ECHOED_KEY}")
        assert any("retry_after_ignored" in text for text in texts)
        assert [] == [text for text in texts if ECHOED_KEY[:15] in text]
