"""Rejected credentials are a configuration problem, not an outage; the CLI never tracebacks.

Against real emulators on 127.0.0.1 with a wrong key (HTTP 401 or the provider's own auth
code), and a hostile server for answers no balance can be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from guard import PayoutGuard
from guard.fetchers import RetryPolicy
from guard.testing.emulators import LuxCoreEmulator
from tests._cli import emulator_env, run_cli, write_config
from tests._hostile import HostileServer, answer
from tests.test_fetchers_emulated import PROVIDERS

POLICY = RetryPolicy(attempts=3, deadline=5.0, backoff=0.001, max_backoff=0.002)
WRONG_KEY = "wrong_secret_key_credentials_0001"


class TestRejectedCredentials:
    @pytest.mark.parametrize("name", sorted(PROVIDERS))
    def test_a_wrong_key_denies_without_retry(self, name: str) -> None:
        """balance_unavailable, retryable=False, cause credentials, one request, no 'retry'."""
        provider = PROVIDERS[name]
        with provider.emulator() as emu:
            fetcher = provider.fetcher(emu, retry=POLICY, secret=WRONG_KEY)
            with PayoutGuard(fetcher) as guard, capture_logs() as logs:
                decision = guard.check("1.00", provider.currency)
            requests_made = emu.balance_requests
        [reason] = decision.reasons
        assert ("balance_unavailable", False, "credentials") == (
            reason.code, reason.retryable, reason.details["cause"])
        assert "rejected the credentials" in reason.message
        assert "retry" not in reason.message.lower()
        assert "retry" not in decision.explain().lower()
        assert 1 == requests_made
        [event] = [e for e in logs if e["event"] == "payout_guard.credentials_rejected"]
        assert ("error", name) == (event["log_level"], event["provider"])

    def test_the_decision_round_trips_through_json(self) -> None:
        """Details mix a word with amounts and still round-trips exactly."""
        provider = PROVIDERS["luxcore"]
        with provider.emulator() as emu:
            fetcher = provider.fetcher(emu, retry=POLICY, secret=WRONG_KEY)
            with PayoutGuard(fetcher) as guard:
                decision = guard.check("1.00", provider.currency)
        assert decision == type(decision).model_validate_json(decision.model_dump_json())

    def test_cli_check_exits_2(self, tmp_path: Path) -> None:
        """payout-guard check with a rejected key exits 2 (configuration), not 3."""
        with LuxCoreEmulator() as emu:
            config = write_config(tmp_path / "guard.toml", luxcore=emu)
            result = run_cli("check", "10", "ARS", "-c", str(config),
                             env={"TEST_LUXCORE_API_KEY": WRONG_KEY})
        assert 2 == result.returncode, result.stderr
        assert "credentials" in result.stdout

    def test_cli_balances_exits_2(self, tmp_path: Path) -> None:
        """payout-guard balances with a rejected key exits 2, without a traceback."""
        with LuxCoreEmulator() as emu:
            config = write_config(tmp_path / "guard.toml", luxcore=emu)
            result = run_cli("balances", "-c", str(config),
                             env={"TEST_LUXCORE_API_KEY": WRONG_KEY})
        assert 2 == result.returncode, result.stderr
        assert "Traceback" not in result.stderr


class TestBalancesNeverTracebacks:
    @pytest.mark.parametrize("amount", ["9" * 40, "1" * 400])
    def test_huge_luxcore_numbers_exit_3_with_a_message(self, tmp_path: Path,
                                                        amount: str) -> None:
        """A LuxCore amount too large for money is a one-line error and exit 3."""
        body = ('{"success": true, "merchant_id": 1, "balances": [{"currency": "ARS", '
                f'"balance_type": "main", "balance_amount": "{amount}", '
                f'"available_amount": "{amount}", "frozen_amount": "0"}}]}}')
        with LuxCoreEmulator() as emu, HostileServer(answer(200, body)) as server:
            config = write_config(tmp_path / "guard.toml", luxcore=emu)
            config.write_text(config.read_text().replace(emu.url, server.url))
            result = run_cli("balances", "-c", str(config), env=emulator_env(luxcore=emu))
        assert 3 == result.returncode, result.stderr
        assert "Traceback" not in result.stderr
        assert "balance_amount" in result.stderr
