"""The ``payout-guard`` command through subprocesses: check, balances, rules, demo, logging."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from guard.config import load_config
from guard.testing.emulators import Fault, LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator
from tests._cli import EXAMPLE, ROOT, emulator_env, parse_json, run_cli, write_config
from tests._redis_server import free_port

RESERVE = '[[rules]]\ntype = "reserve_margin"\npercent = "10"\n'


@pytest.fixture
def luxcore() -> Iterator[LuxCoreEmulator]:
    with LuxCoreEmulator() as emulator:
        emulator.set_balance("ARS", available="10000.00", frozen="500.00")
        yield emulator


@pytest.fixture
def config(tmp_path: Path, luxcore: LuxCoreEmulator) -> Path:
    return write_config(tmp_path / "guard.toml", luxcore=luxcore, rules=RESERVE)


class TestCheck:
    def test_allowed_prints_the_explanation_and_exits_0(
        self, config: Path, luxcore: LuxCoreEmulator
    ) -> None:
        """An allowed payout prints explain() and exits 0."""
        result = run_cli("check", "2500.00", "ARS", "--config", str(config),
                         env=emulator_env(luxcore=luxcore))
        assert 0 == result.returncode, result.stderr
        assert result.stdout.startswith("ALLOWED: payout 2500.00 ARS via luxcore")
        assert "max payable  9000.00 ARS" in result.stdout

    def test_denied_json_parses_and_exits_1(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """A denial exits 1; --json prints the decision with exact amounts."""
        result = run_cli("check", "9500", "ARS", "-c", str(config), "--json",
                         env=emulator_env(luxcore=luxcore))
        decision = parse_json(result.stdout)
        assert 1 == result.returncode
        assert (False, "9500.00", ["reserve_margin"], "9000.00") == (
            decision["allowed"], decision["amount"],
            [reason["code"] for reason in decision["reasons"]], decision["max_payable"])

    def test_provider_outage_exits_3(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """A balance that cannot be read is a balance_unavailable denial, exit code 3."""
        luxcore.fail_next(Fault.HTTP_503)
        result = run_cli("check", "10", "ARS", "-c", str(config),
                         env=emulator_env(luxcore=luxcore))
        assert 3 == result.returncode
        assert "balance_unavailable" in result.stdout

    def test_missing_credential_variable_exits_2_naming_it(self, config: Path) -> None:
        """An unset credential variable is exit code 2, naming the variable and the file."""
        result = run_cli("check", "10", "ARS", "-c", str(config))
        assert 2 == result.returncode
        assert "TEST_LUXCORE_API_KEY is not set" in result.stderr
        assert str(config) in result.stderr

    def test_bad_amount_exits_2(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """An amount with too many decimals is a usage error."""
        result = run_cli("check", "10.001", "ARS", "-c", str(config),
                         env=emulator_env(luxcore=luxcore))
        assert 2 == result.returncode
        assert "10.001" in result.stderr

    def test_an_outage_says_retry_once(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """The explanation says the payout can be retried later, without '(retry later)' too."""
        luxcore.fail_next(Fault.HTTP_503)
        result = run_cli("check", "10", "ARS", "-c", str(config),
                         env=emulator_env(luxcore=luxcore))
        reason = result.stdout.splitlines()[-1]
        assert (True, False) == (reason.endswith("can be retried later"),
                                 "(retry later)" in reason)

    def test_bad_configuration_exits_2_naming_file_and_key(self, tmp_path: Path) -> None:
        """A configuration error names the file, the key path and what is accepted."""
        path = tmp_path / "bad.toml"
        path.write_text('mode = "shadow"\n', encoding="utf-8")
        result = run_cli("check", "10", "ARS", "-c", str(path))
        assert 2 == result.returncode
        assert f"{path}: mode: must be 'enforce' or 'dry_run', got 'shadow'" in result.stderr

    @pytest.mark.parametrize(("name", "content", "message"), [
        ("huge.toml", "[cache]\nttl = " + "9" * 5000 + "\n",
         "invalid TOML: Exceeds the limit (4300 digits)"),
        ("huge.json", '{"cache": {"ttl": ' + "9" * 5000 + "}}",
         "invalid JSON: Exceeds the limit (4300 digits)"),
        ("deep.json", "[" * 100_000 + "]" * 100_000, "invalid JSON: nested too deeply to read"),
    ])
    def test_a_configuration_too_big_to_read_exits_2_naming_the_file(
        self, tmp_path: Path, name: str, content: str, message: str
    ) -> None:
        """A 5,000-digit integer or nesting too deep is a configuration error, not a crash."""
        path = tmp_path / name
        path.write_text(content, encoding="utf-8")
        for args in (("check", "10", "ARS", "-c", str(path)), ("rules", "validate", str(path))):
            result = run_cli(*args)
            assert 2 == result.returncode, result.stderr
            assert f"{path}: {message}" in result.stderr
            assert "Traceback" not in result.stderr

    def test_an_unknown_provider_lists_the_configured_ones(self) -> None:
        """--provider naming no configured provider is exit 2, listing the configured ones."""
        result = run_cli("check", "10", "ARS", "-c", str(EXAMPLE), "--provider", "nope")
        assert 2 == result.returncode
        assert "luxtak, luxcore_ar, pagsmile" in result.stderr

    def test_missing_config_option_is_a_usage_error(self) -> None:
        """Leaving out --config is click's usage error, exit code 2."""
        assert 2 == run_cli("check", "10", "ARS").returncode


class TestCheckArguments:
    def test_a_negative_amount_must_be_positive(self, config: Path) -> None:
        """`check -5 ARS` says the amount must be positive, not that -5 is an unknown option."""
        result = run_cli("check", "-5", "ARS", "-c", str(config))
        assert 2 == result.returncode
        assert ("Error: Invalid value for 'AMOUNT': must be positive, got '-5' (amounts are "
                "written without a sign)") in result.stderr
        assert "No such option" not in result.stderr

    def test_a_negative_amount_with_decimals_is_quoted_whole(self, config: Path) -> None:
        """`check -5.50 ARS` quotes what was typed."""
        result = run_cli("check", "-5.50", "ARS", "-c", str(config))
        assert "Invalid value for 'AMOUNT': must be positive, got '-5.50'" in result.stderr

    @pytest.mark.parametrize(("args", "hint", "expected"), [
        (("1e3", "ARS"), "'AMOUNT'", "'1e3' is not an amount: write ASCII digits"),
        (("1_000", "ARS"), "'AMOUNT'", "'1_000' is not an amount"),
        (("0", "ARS"), "'AMOUNT'", "must be positive, got '0'"),
        (("10.001", "ARS"), "'AMOUNT'", "10.001 has more decimal places than ARS allows (2)"),
        (("10", "XYZ"), "'CURRENCY'", "unknown currency 'XYZ': expected an active ISO 4217"),
        (("10", "ARS", "--fee", "1e3"), "'--fee'", "'1e3' is not an amount"),
        (("10", "ARS", "--fee", "-1"), "'--fee'", "must be zero or positive, got '-1'"),
        (("10", "ARS", "--payout-id", "x" * 300), "'--payout-id'", "has 300 characters;"),
        (("10", "ARS", "--account", " "), "'--account'", "must be a non-empty string"),
    ])
    def test_an_error_names_the_argument_and_what_was_wrong(
        self, config: Path, args: tuple[str, ...], hint: str, expected: str
    ) -> None:
        """Each refusal names its argument and says what was wrong, in the library's words."""
        result = run_cli("check", *args, "-c", str(config))
        assert 2 == result.returncode
        assert f"Error: Invalid value for {hint}: {expected}" in result.stderr

    def test_a_long_amount_is_quoted_at_most_60_characters(self, config: Path) -> None:
        """A 10,000-character amount is quoted cut to 60 characters, not echoed whole."""
        result = run_cli("check", "9" * 10_000 + "x", "ARS", "-c", str(config))
        error = result.stderr.splitlines()[-1]
        quoted = error.split("'AMOUNT': ")[1].split(" is not an amount")[0]
        assert (2, 60) == (result.returncode, len(quoted))


class TestBalances:
    def test_table_shows_every_provider(self, tmp_path: Path) -> None:
        """Every provider's balances appear with available, frozen and total."""
        with LuxtakEmulator(balances={"BRL": "99002.23"}) as luxtak, \
                LuxCoreEmulator(balances={"ARS": "12000.00"}) as luxcore, \
                PagsmileEmulator(balances={"BRL": "300.00"}) as pagsmile:
            path = write_config(tmp_path / "g.toml", luxtak=luxtak, luxcore=luxcore,
                                pagsmile=pagsmile)
            result = run_cli("balances", "-c", str(path),
                             env=emulator_env(luxtak, luxcore, pagsmile))
        assert 0 == result.returncode, result.stderr
        lines = result.stdout.splitlines()
        assert any("luxtak" in line and "99002.23" in line for line in lines)
        assert any("luxcore" in line and "12000.00" in line and "0.00" in line for line in lines)
        assert any("pagsmile" in line and "300.00" in line for line in lines)

    def test_json_is_a_snapshot_document(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """--json prints the snapshot format with exact amounts."""
        result = run_cli("balances", "-c", str(config), "--json",
                         env=emulator_env(luxcore=luxcore))
        document = parse_json(result.stdout)
        ars = document["providers"]["luxcore"]["balances"][0]
        assert ("payout-guard/balances", 1) == (document["format"], document["version"])
        assert ("ARS", "10000.00", "500.00", "10500.00") == (
            ars["currency"], ars["available"], ars["frozen"], ars["total"])

    def test_an_unreadable_provider_exits_3(self, config: Path, luxcore: LuxCoreEmulator) -> None:
        """A provider outage is recorded in the snapshot and exits 3."""
        luxcore.fail_next(Fault.HTTP_503)
        result = run_cli("balances", "-c", str(config), "--json",
                         env=emulator_env(luxcore=luxcore))
        document = parse_json(result.stdout)
        assert 3 == result.returncode
        assert "HTTP 503" in document["providers"]["luxcore"]["error"]


class TestHealth:
    def test_every_part_answering_exits_0(self, tmp_path: Path) -> None:
        """Two providers up and the store answering: healthy, exit 0, one request each."""
        with LuxCoreEmulator() as luxcore, LuxtakEmulator() as luxtak:
            path = write_config(tmp_path / "g.toml", luxcore=luxcore, luxtak=luxtak)
            result = run_cli("health", "-c", str(path), "--json",
                             env=emulator_env(luxcore=luxcore, luxtak=luxtak))
            requests = (luxcore.balance_requests, luxtak.balance_requests)
        report = parse_json(result.stdout)
        assert (0, True, (1, 1)) == (result.returncode, report["healthy"], requests)
        assert {"luxcore": (True, None), "luxtak": (True, None)} == {
            name: (part["ok"], part["last_error"]) for name, part in report["providers"].items()
        }
        assert {"store": "InMemoryReservations", "ok": True, "error": None} == report["store"]

    def test_a_down_provider_exits_1_naming_its_error(self, tmp_path: Path) -> None:
        """A provider answering 503 (fault injected) is unhealthy: exit 1, its error class."""
        with LuxCoreEmulator() as luxcore, LuxtakEmulator() as luxtak:
            luxtak.fail_next(Fault.HTTP_503)
            path = write_config(tmp_path / "g.toml", luxcore=luxcore, luxtak=luxtak)
            result = run_cli("health", "-c", str(path), "--json",
                             env=emulator_env(luxcore=luxcore, luxtak=luxtak))
        report = parse_json(result.stdout)
        assert (1, False) == (result.returncode, report["healthy"])
        assert {"luxcore": (True, None), "luxtak": (False, "ProviderUnavailable")} == {
            name: (part["ok"], part["last_error"]) for name, part in report["providers"].items()
        }

    def test_the_table_shows_each_part_and_the_verdict(self, tmp_path: Path) -> None:
        """Without --json: a row per provider and the store, then UNHEALTHY."""
        with LuxCoreEmulator() as luxcore:
            luxcore.fail_next(Fault.DROP)
            path = write_config(tmp_path / "g.toml", luxcore=luxcore)
            result = run_cli("health", "-c", str(path), env=emulator_env(luxcore=luxcore))
        lines = result.stdout.splitlines()
        assert 1 == result.returncode
        assert any("luxcore" in line and "FAILING" in line and "ProviderUnavailable" in line
                   for line in lines)
        assert any("store (InMemoryReservations)" in line and " ok " in line for line in lines)
        assert "UNHEALTHY" == lines[-1]

    def test_a_store_that_does_not_answer_exits_1(self, tmp_path: Path) -> None:
        """A Redis store nobody listens for is reported failing (StoreUnavailable), exit 1.

        The provider is not asked: its request budget is kept in that store, and a request
        the budget cannot count is not sent. What it would answer is unknown (``ok`` null).
        """
        url = f"redis://127.0.0.1:{free_port()}/0"
        with LuxCoreEmulator() as luxcore:
            path = write_config(tmp_path / "g.toml", luxcore=luxcore,
                                head=f'[reservations]\nstore = "redis"\nurl = "{url}"\n')
            result = run_cli("health", "-c", str(path), "--json",
                             env=emulator_env(luxcore=luxcore))
        report = parse_json(result.stdout)
        assert (1, None, 0) == (result.returncode, report["providers"]["luxcore"]["ok"],
                                luxcore.balance_requests)
        assert {"store": "RedisReservations", "ok": False, "error": "StoreUnavailable"} == (
            report["store"]
        )

    def test_a_missing_credential_is_a_configuration_error(self, config: Path) -> None:
        """An unset credential variable is exit code 2, naming it, as for check."""
        result = run_cli("health", "-c", str(config))
        assert 2 == result.returncode
        assert "TEST_LUXCORE_API_KEY is not set" in result.stderr


class TestRulesValidate:
    def test_prints_the_example_rules_in_plain_words(self) -> None:
        """The example validates; every rule is described."""
        result = run_cli("rules", "validate", str(EXAMPLE))
        assert 0 == result.returncode, result.stderr
        for name in ("reserve_margin", "frozen_funds", "currency_minimums", "max_payout",
                     "max_balance_age", "when provider is luxtak"):
            assert name in result.stdout
        assert "LUXCORE_API_KEY (providers.luxcore_ar.api_key_env)" in result.stdout

    def test_an_invalid_rule_exits_2_naming_it(self, tmp_path: Path) -> None:
        """An unknown rule type is exit code 2 with the path and the valid types."""
        path = tmp_path / "rules.toml"
        path.write_text('[[rules]]\ntype = "reserve_margin"\nprecent = "5"\n', encoding="utf-8")
        result = run_cli("rules", "validate", str(path))
        assert 2 == result.returncode
        assert "rules[0].precent" in result.stderr
        assert "accepted keys" in result.stderr


    @pytest.mark.parametrize("url", ["https://api.lux-core.io/v1?api_key=SECRET123",
                                     "https://merchant:SECRET123@api.lux-core.io"])
    def test_a_credential_in_base_url_exits_2_unshown(self, tmp_path: Path, url: str) -> None:
        """A base_url carrying a credential is invalid, and neither stream shows it."""
        path = tmp_path / "guard.toml"
        path.write_text(f'[providers.luxcore]\napi_key_env = "K"\nbase_url = "{url}"\n',
                        encoding="utf-8")
        result = run_cli("rules", "validate", str(path))
        assert 2 == result.returncode
        assert "providers.luxcore.base_url" in result.stderr
        assert "SECRET123" not in result.stdout + result.stderr


class TestDemo:
    def test_shows_every_scenario_with_its_reason_code(self) -> None:
        """The demo runs without credentials and shows each scenario's reason code."""
        result = run_cli("demo")
        assert 0 == result.returncode, result.stderr
        for code in ("ALLOWED", "reserve_margin", "frozen_funds", "below_minimum_payout",
                     "balance_unavailable", "insufficient_funds"):
            assert code in result.stdout
        assert "held 7000.00" in result.stdout
        routed = result.stdout[result.stdout.index("routed past"):]
        assert "luxtak: denied (above_maximum_payout)" in " ".join(routed.split())

    def test_show_config_prints_a_valid_configuration(self, tmp_path: Path) -> None:
        """--show-config prints the built-in TOML, which loads as a configuration."""
        path = tmp_path / "demo.toml"
        path.write_text(run_cli("demo", "--show-config").stdout, encoding="utf-8")
        config = load_config(path)
        assert ("luxtak", "luxcore", "pagsmile") == config.provider_names
        assert "PAYOUT_GUARD_DEMO_LUXCORE_API_KEY" in config.env_vars()


class TestLogging:
    def test_json_logs_go_to_stderr_and_stdout_stays_json(
        self, config: Path, luxcore: LuxCoreEmulator
    ) -> None:
        """--log-format json writes JSON log lines on stderr; stdout is the decision alone."""
        result = run_cli("--log-format", "json", "--log-level", "info", "check", "10", "ARS",
                         "-c", str(config), "--json", env=emulator_env(luxcore=luxcore))
        events = [json.loads(line) for line in result.stderr.splitlines()]
        assert 0 == result.returncode
        assert "payout_guard.decision" in [event["event"] for event in events]
        assert "10.00" == parse_json(result.stdout)["amount"]
        assert luxcore.api_key not in result.stderr + result.stdout


class TestEntryPoint:
    def test_without_the_cli_extra_it_says_what_to_install(self) -> None:
        """When click is missing, the command says to pip install payout-guard[cli]."""
        code = ("import sys; sys.modules['click'] = None; from guard.cli import main; "
                "sys.exit(main(['demo']))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, cwd=ROOT, check=False)
        assert 2 == result.returncode
        assert "pip install 'payout-guard[cli]'" in result.stderr

    def test_version(self) -> None:
        """--version prints the package version."""
        result = run_cli("--version")
        assert 0 == result.returncode
        assert "0.1.0" in result.stdout
