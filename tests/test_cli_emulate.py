"""``payout-guard emulate``: a provider emulator in the foreground, stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import pytest

from guard.errors import ProviderError, ProviderRateLimited, ProviderUnavailable
from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher, RetryPolicy
from guard.fetchers._http import HttpFetcher
from tests._cli import ROOT, run_cli


def _read_details(proc: subprocess.Popen[str]) -> dict[str, str]:
    """Read the emulator's banner up to 'Press Ctrl-C'; return its key: value lines."""
    assert proc.stdout is not None
    details: dict[str, str] = {}
    for line in proc.stdout:
        key, sep, value = line.strip().partition(": ")
        if sep and " " not in key:
            details[key] = value
        if line.startswith("Press Ctrl-C"):
            return details
    raise AssertionError(f"the emulator exited early: {proc.wait()}")


def _fetcher(provider: str, details: dict[str, str], retry: RetryPolicy | None = None
             ) -> HttpFetcher:
    url = details["url"]
    policy = retry or RetryPolicy()
    if provider == "luxtak":
        return LuxtakFetcher(details["app_id"], details["app_key"], base_url=url, retry=policy)
    if provider == "luxcore":
        return LuxCoreFetcher(details["api_key"], base_url=url, retry=policy)
    return PagsmileFetcher(details["app_id"], details["security_key"], base_url=url,
                           retry=policy)


@contextmanager
def _emulating(*args: str) -> Iterator[dict[str, str]]:
    """Run `payout-guard emulate ARGS`; yield its banner's details; stop it with SIGINT."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GUARD_")}
    command = [sys.executable, "-m", "guard", "emulate", *args]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, cwd=ROOT, env=env) as proc:
        try:
            yield _read_details(proc)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)


class TestEmulate:
    @pytest.mark.timeout(60)
    @pytest.mark.parametrize(("provider", "stop"), [
        ("luxtak", signal.SIGINT), ("luxcore", signal.SIGTERM), ("pagsmile", signal.SIGINT),
    ])
    def test_serves_its_balances_until_a_signal_stops_it(
        self, provider: str, stop: signal.Signals
    ) -> None:
        """It prints URL and credentials, answers a real fetcher, and exits 0 on the signal."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYOUT_GUARD_")}
        command = [sys.executable, "-m", "guard", "emulate", provider,
                   "--balance", "BRL=1234.50", "--balance", "USD=7"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env=env) as proc:
            try:
                details = _read_details(proc)
                with _fetcher(provider, details) as fetcher:
                    balances = {s.currency: s.available for s in fetcher.fetch()}
            finally:
                proc.send_signal(stop)
                started = time.monotonic()
                code = proc.wait(timeout=20)
                waited = time.monotonic() - started
            assert proc.stderr is not None
            stderr = proc.stderr.read()
        assert {"BRL": Decimal("1234.50"), "USD": Decimal("7.00")} == balances
        assert 0 == code, stderr
        assert waited < 10  # generous: stopping must not hang
        assert f"{provider} emulator stopped" in stderr

    @pytest.mark.parametrize(("args", "message"), [
        (["luxtak", "--frozen", "BRL=1.00"], "only reported by LuxCore"),
        (["luxcore", "--balance", "ARS"], "expected CURRENCY=AMOUNT"),
    ])
    def test_bad_options_exit_2(self, args: list[str], message: str) -> None:
        """Options that make no sense for the provider are usage errors."""
        result = run_cli("emulate", *args)
        assert 2 == result.returncode
        assert message in result.stderr


class TestEmulateFaults:
    @pytest.mark.timeout(60)
    def test_the_next_requests_fail_as_asked_then_it_answers(self) -> None:
        """--fail http_503 --times 2: two requests get a 503, the third the balances."""
        with _emulating("luxcore", "--balance", "ARS=10.00", "--fail", "http_503",
                        "--times", "2") as details:
            outcomes: list[object] = []
            with _fetcher("luxcore", details, RetryPolicy(attempts=1)) as fetcher:
                for _ in range(3):
                    try:
                        outcomes.append([s.available for s in fetcher.fetch()])
                    except ProviderError as exc:
                        outcomes.append(type(exc))
        assert [ProviderUnavailable, ProviderUnavailable, [Decimal("10.00")]] == outcomes
        assert ("the next balance requests get http_503 x2; then it answers normally"
                == details["faults"])

    @pytest.mark.timeout(60)
    def test_faults_queue_in_the_order_given(self) -> None:
        """Each --fail is used up in turn: a rate limit, then a 503, then the balances."""
        with _emulating("luxtak", "--balance", "BRL=5", "--fail", "RATE_LIMIT",
                        "--fail", "http_503") as details:
            outcomes: list[object] = []
            with _fetcher("luxtak", details, RetryPolicy(attempts=1)) as fetcher:
                for _ in range(3):
                    try:
                        outcomes.append([s.available for s in fetcher.fetch()])
                    except ProviderError as exc:
                        outcomes.append(type(exc))
        assert [ProviderRateLimited, ProviderUnavailable, [Decimal("5.00")]] == outcomes

    @pytest.mark.parametrize(("args", "message"), [
        (["luxcore", "--fail", "expired"], ("Invalid value for '--fail': LuxCoreEmulator does "
                                           "not model fault 'expired'; accepted: drop,")),
        (["luxcore", "--times", "3"], "Invalid value for '--times': needs a fault to repeat"),
        (["luxcore", "--fail", "http_503", "--times", "0"], "Invalid value for '--times'"),
        (["luxcore", "--balance", "ARS=-5"], ("Invalid value for '--balance': must be zero or "
                                             "positive, got '-5'")),
        (["luxcore", "--balance", "ARS=1e3"], ("Invalid value for '--balance': '1e3' is not "
                                              "an amount")),
    ])
    def test_bad_fault_and_amount_options_name_the_option(
        self, args: list[str], message: str
    ) -> None:
        """Unknown faults list the accepted ones; amounts are read by the library's grammar."""
        result = run_cli("emulate", *args)
        assert 2 == result.returncode
        assert message in result.stderr
