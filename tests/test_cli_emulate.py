"""``payout-guard emulate``: a provider emulator in the foreground, stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from guard.fetchers import LuxCoreFetcher, LuxtakFetcher, PagsmileFetcher
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


def _fetcher(provider: str, details: dict[str, str]) -> HttpFetcher:
    url = details["url"]
    if provider == "luxtak":
        return LuxtakFetcher(details["app_id"], details["app_key"], base_url=url)
    if provider == "luxcore":
        return LuxCoreFetcher(details["api_key"], base_url=url)
    return PagsmileFetcher(details["app_id"], details["security_key"], base_url=url)


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
