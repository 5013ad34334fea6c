"""Configuration as data: loading, validation errors, secrets from the environment, building."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard import ConfigurationError, PayoutGuard
from guard.config import (
    GuardConfig,
    NamedFetcher,
    build_fetcher,
    build_reservations,
    load_config,
)
from guard.stores import InMemoryReservations
from guard.testing.emulators import LuxCoreEmulator, LuxtakEmulator, PagsmileEmulator
from rules import CurrencyMinimums, MaxPayout, ReserveMargin, RuleSet, When

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "guard.toml"
FAST_RETRY = {"attempts": 1, "deadline": 5}


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(source: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load_config(source)
    return caught.value


def _flat(rule: Any) -> list[Any]:
    if isinstance(rule, RuleSet):
        return [leaf for member in rule for leaf in _flat(member)]
    if isinstance(rule, When):
        return _flat(rule.rule)
    inner = getattr(rule, "rules", None)
    return [rule] if inner is None else [leaf for member in inner for leaf in _flat(member)]


class TestExampleFile:
    def test_describes_all_three_providers_and_every_builtin_rule(self) -> None:
        """examples/guard.toml loads, names the three providers and uses every built-in rule."""
        config = load_config(EXAMPLE)
        kinds = sorted(spec.kind for spec in config.providers.values())
        names = {type(rule).__name__ for rule in _flat(config.ruleset)}
        assert ["luxcore", "luxtak", "pagsmile"] == kinds
        assert {"SufficientFunds", "ReserveMargin", "FrozenFunds", "CurrencyMinimums",
                "MaxPayout", "MaxBalanceAge"} <= names
        assert str(EXAMPLE) == config.source

    def test_reads_amounts_as_exact_decimals(self) -> None:
        """The example's amounts arrive as Decimal at their currency exponent."""
        reserve = next(r for r in _flat(load_config(EXAMPLE).ruleset)
                       if isinstance(r, ReserveMargin))
        assert Decimal("1000.00") == reserve.minimum["ARS"]
        assert Decimal("5") == reserve.percent

    def test_names_its_credentials_by_environment_variable(self) -> None:
        """Every credential is an environment variable name, listed with its key path."""
        env = load_config(EXAMPLE).env_vars()
        assert {"LUXTAK_APP_ID": "providers.luxtak.app_id_env",
                "LUXTAK_APP_KEY": "providers.luxtak.app_key_env",
                "LUXCORE_API_KEY": "providers.luxcore_ar.api_key_env",
                "PAGSMILE_SECURITY_KEY": "providers.pagsmile.security_key_env"} == env


class TestFormats:
    def test_toml_decimals_are_never_floats(self, tmp_path: Path) -> None:
        """An unquoted TOML decimal reaches the rule exactly (0.10 stays 0.10)."""
        path = _write(tmp_path, "g.toml", '[[rules]]\ntype = "max_payout"\n'
                      "limits = { BRL = 1234567890123.10 }\n")
        rule = next(iter(load_config(path).ruleset))
        assert isinstance(rule, MaxPayout)
        assert Decimal("1234567890123.10") == rule.limits["BRL"]

    def test_yaml_loads_with_money_as_strings_and_seconds_as_decimals(
        self, tmp_path: Path
    ) -> None:
        """A YAML file loads: money as a string, seconds as a YAML float read as Decimal."""
        path = _write(tmp_path, "g.yaml", "mode: dry_run\nproviders:\n  luxcore:\n"
                      "    api_key_env: LUXCORE_API_KEY\ncache: {ttl: 0.5}\nrules:\n"
                      "  - type: currency_minimums\n    min_payout: {BRL: '0.10'}\n")
        config = load_config(path)
        rule = next(iter(config.ruleset))
        assert isinstance(rule, CurrencyMinimums)
        assert (Decimal("0.10"), Decimal("0.5")) == (rule.min_payout["BRL"], config.cache.ttl)
        assert "dry_run" == config.mode

    def test_json_file_loads(self, tmp_path: Path) -> None:
        """A JSON file of the same shape loads."""
        document = {"providers": {"pagsmile": {"app_id": "1", "security_key_env": "PS_KEY"}}}
        config = load_config(_write(tmp_path, "g.json", json.dumps(document)))
        assert ("pagsmile",) == config.provider_names

    def test_a_config_is_returned_as_is(self) -> None:
        """load_config(GuardConfig) returns the same object."""
        config = load_config({})
        assert config is load_config(config)

    def test_rules_file_is_read_relative_to_the_configuration(self, tmp_path: Path) -> None:
        """rules_file names a rules file next to the configuration."""
        _write(tmp_path, "rules.toml", '[[rules]]\ntype = "max_balance_age"\nseconds = 30\n')
        config = load_config(_write(tmp_path, "g.toml", 'rules_file = "rules.toml"\n'))
        assert ["max_balance_age"] == [rule.name for rule in config.ruleset]

    @given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("10") ** 15, places=2))
    def test_any_two_place_amount_round_trips_exactly(self, amount: Decimal) -> None:
        """Whatever the amount, an unquoted TOML decimal reaches the rule unchanged."""
        from guard._config import load_text

        config = load_text(f'[[rules]]\ntype = "max_payout"\nlimits = {{ BRL = {amount} }}\n')
        rule = next(iter(config.ruleset))
        assert isinstance(rule, MaxPayout)
        assert amount == rule.limits["BRL"]


class TestErrors:
    def test_unknown_key_names_file_path_and_accepted_keys(self, tmp_path: Path) -> None:
        """A misspelt key is refused with the file, the key path and the keys accepted there."""
        path = _write(tmp_path, "g.toml", '[providers.luxcore]\napi_key_env = "K"\n'
                      'base_ulr = "https://x"\n')
        error = _error(path)
        assert str(path) == error.source
        assert "providers.luxcore.base_ulr" == error.path
        assert "accepted keys: kind, " in error.message
        assert "base_url" in error.message

    @pytest.mark.parametrize(("data", "path", "message"), [
        ({"mode": "x" * 5000}, "mode", "must be 'enforce' or 'dry_run', got 'xxxxx"),
        ({"mode": ["x"] * 5000}, "mode", "must be 'enforce' or 'dry_run', got ['x', 'x',"),
        ({"routing": {"X" * 5000: ["a"]}}, "routing", "unknown key 'XXXXX"),
        ({"providers": {"luxcore": {"api_key_env": "K", "x" * 5000: 1}}},
         f"providers.luxcore.{'x' * 57}...", "unknown key 'xxxxx"),
        ({"providers": {"luxcore": {"kind": "x" * 5000, "api_key_env": "K"}}},
         "providers.luxcore.kind", "must be one of luxtak, luxcore, pagsmile; got 'xxxxx"),
    ])
    def test_a_long_input_is_quoted_at_most_60_characters(
        self, data: dict[str, Any], path: str, message: str
    ) -> None:
        """A 5,000-character value or key is quoted by its first 60 characters, not whole."""
        error = _error(data)
        assert (path, True) == (error.path, error.message.startswith(message))
        assert "x" * 61 not in str(error).lower()
        assert len(str(error)) < 400

    def test_a_secret_in_the_file_is_refused_without_showing_it(self) -> None:
        """app_key = ... is refused, pointing at app_key_env; the value never appears."""
        error = _error({"providers": {"luxtak": {"app_id": "A", "app_key": "s3cr3t-value"}}})
        assert "providers.luxtak.app_key" == error.path
        assert 'app_key_env = "LUXTAK_APP_KEY"' in error.message
        assert "s3cr3t-value" not in str(error)

    def test_an_env_name_that_looks_like_a_secret_is_not_echoed(self) -> None:
        """A key pasted into *_env is refused without repeating it."""
        error = _error({"providers": {"luxcore": {"api_key_env": "qp_test_sk_abcdef"}}})
        assert "providers.luxcore.api_key_env" == error.path
        assert "qp_test_sk_abcdef" not in str(error)

    def test_unknown_kind_lists_the_kinds(self) -> None:
        """A provider of an unknown kind is refused, listing luxtak, luxcore and pagsmile."""
        error = _error({"providers": {"main": {"kind": "stripe"}}})
        assert "providers.main.kind" == error.path
        assert "luxtak, luxcore, pagsmile" in error.message
        assert "'stripe'" in error.message

    def test_a_float_amount_in_rules_names_the_rule(self) -> None:
        """A Python float amount is refused at rules[i].<key>."""
        error = _error({"rules": [{"type": "max_payout"},
                                  {"type": "reserve_margin", "percent": 5.5}]})
        assert error.path.startswith("rules[")
        assert "float" in str(error)

    def test_bad_toml_names_the_file_and_line(self, tmp_path: Path) -> None:
        """A TOML syntax error names the file and where."""
        path = _write(tmp_path, "g.toml", 'mode = "enforce"\nmode = \n')
        error = _error(path)
        assert str(path) == error.source
        assert "invalid TOML" in error.message
        assert "line 2" in error.message

    def test_wrong_mode_says_what_is_accepted(self) -> None:
        """The mode must be enforce or dry_run."""
        error = _error({"mode": "shadow"})
        assert "mode" == error.path
        assert "'enforce' or 'dry_run'" in error.message

    @pytest.mark.parametrize(("suffix", "expected"), [
        (".ini", "accepted: .toml, .yaml, .yml, .json"),
        (".toml", "cannot read the configuration file"),
    ])
    def test_unreadable_sources_are_configuration_errors(
        self, tmp_path: Path, suffix: str, expected: str
    ) -> None:
        """An unknown file type or a missing file is a ConfigurationError naming the file."""
        error = _error(tmp_path / f"absent{suffix}")
        assert expected in error.message

    @pytest.mark.parametrize(("reservations", "expected"), [
        ({"store": "sqlite"}, "needs path"),
        ({"store": "memory", "path": "x.db"}, "path not used by store = 'memory'"),
        ({"store": "redis", "url": "redis://:pw@host:6379/0"}, "must not carry credentials"),
        ({"store": "redis"}, "exactly one of url"),
    ])
    def test_store_options_must_fit_the_store(
        self, reservations: dict[str, str], expected: str
    ) -> None:
        """Each store takes its own options; a Redis password never sits in the file."""
        error = _error({"reservations": reservations})
        assert "reservations" == error.path
        assert expected in error.message
        assert ":pw@" not in str(error)

    def test_default_provider_must_be_configured(self) -> None:
        """default_provider names a configured provider."""
        error = _error({"providers": {"luxcore": {"api_key_env": "K"}},
                        "default_provider": "luxtak"})
        assert "default_provider" == error.path
        assert "luxcore" in error.message

    def test_several_problems_are_reported_together(self) -> None:
        """The first problem sets the path; the others are listed in the message."""
        error = _error({"mode": "x", "cache": {"ttl": -1}})
        assert "mode" == error.path
        assert "cache.ttl" in error.message

    def test_an_error_in_a_rules_file_names_that_file(self, tmp_path: Path) -> None:
        """A bad entry in rules_file is reported against the rules file."""
        rules_path = _write(tmp_path, "rules.toml", '[[rules]]\ntype = "nope"\n')
        error = _error(_write(tmp_path, "g.toml", 'rules_file = "rules.toml"\n'))
        assert str(rules_path) == error.source
        assert "rules[0]" in error.path


class TestPickProvider:
    CONFIG: ClassVar[dict[str, Any]] = {"providers": {"luxtak": {"app_id": "A", "app_key_env": "K"},
                            "luxcore": {"api_key_env": "K"}}}

    def test_a_named_provider_is_picked(self) -> None:
        """provider= wins."""
        assert "luxcore" == load_config(self.CONFIG).pick_provider("luxcore")

    def test_default_provider_is_picked_when_none_is_named(self) -> None:
        """default_provider is used when no name is given."""
        config = load_config({**self.CONFIG, "default_provider": "luxcore"})
        assert "luxcore" == config.pick_provider()

    def test_the_only_provider_is_picked(self) -> None:
        """With one provider, it is the pick."""
        assert "luxcore" == load_config(
            {"providers": {"luxcore": {"api_key_env": "K"}}}
        ).pick_provider()

    def test_several_providers_without_a_default_is_an_error(self) -> None:
        """Several providers and no choice: an error listing them."""
        with pytest.raises(ConfigurationError) as caught:
            load_config(self.CONFIG).pick_provider()
        assert "luxtak, luxcore" in caught.value.message

    def test_an_unknown_name_lists_the_configured_ones(self) -> None:
        """Naming a provider that is not configured lists the configured ones."""
        with pytest.raises(ConfigurationError) as caught:
            load_config(self.CONFIG).pick_provider("pagsmile")
        assert "luxtak, luxcore" in caught.value.message


@pytest.fixture
def emulators() -> Iterator[tuple[LuxtakEmulator, LuxCoreEmulator, PagsmileEmulator]]:
    with LuxtakEmulator(balances={"BRL": "1000.00"}) as luxtak, \
            LuxCoreEmulator(balances={"ARS": "5000.00"}) as luxcore, \
            PagsmileEmulator(balances={"BRL": "300.00"}) as pagsmile:
        yield luxtak, luxcore, pagsmile


def _emulated(luxtak: LuxtakEmulator, luxcore: LuxCoreEmulator,
              pagsmile: PagsmileEmulator) -> tuple[dict[str, Any], dict[str, str]]:
    config = {
        "providers": {
            "luxtak": {"base_url": luxtak.url, "app_id_env": "LT_ID", "app_key_env": "LT_KEY",
                       "retry": FAST_RETRY},
            "luxcore": {"base_url": luxcore.url, "api_key_env": "LC_KEY", "retry": FAST_RETRY},
            "luxcore_mx": {"kind": "luxcore", "base_url": luxcore.url, "api_key_env": "LC_KEY"},
            "pagsmile": {"base_url": pagsmile.url, "app_id": pagsmile.app_id,
                         "security_key_env": "PS_KEY"},
        },
        "cache": {"ttl": 0},
        "reservations": {"settle_lag": 12, "hold_ttl": 34, "uncertain_ttl": 56},
        "rules": [{"type": "reserve_margin", "percent": "10"}],
    }
    env = {"LT_ID": luxtak.app_id, "LT_KEY": luxtak.app_key, "LC_KEY": luxcore.api_key,
           "PS_KEY": pagsmile.security_key}
    return config, env


class TestBuildGuard:
    def test_guards_check_through_the_real_fetchers(
        self, emulators: tuple[LuxtakEmulator, LuxCoreEmulator, PagsmileEmulator]
    ) -> None:
        """Each provider's guard reads its emulator over HTTP and applies the configured rules."""
        data, env = _emulated(*emulators)
        config = load_config(data)
        expected = {"luxtak": ("BRL", "900.00"), "luxcore": ("ARS", "4500.00"),
                    "pagsmile": ("BRL", "270.00")}
        for name, (currency, max_payable) in expected.items():
            with PayoutGuard.from_config(config, provider=name, env=env) as guard:
                decision = guard.check("100", currency)
            assert (True, name, Decimal(max_payable)) == (
                decision.allowed, decision.provider, decision.max_payable)

    def test_options_reach_the_guard(
        self, emulators: tuple[LuxtakEmulator, LuxCoreEmulator, PagsmileEmulator]
    ) -> None:
        """mode, settle_lag, hold_ttl and uncertain_ttl come from the file."""
        data, env = _emulated(*emulators)
        with PayoutGuard.from_config({**data, "mode": "dry_run"}, provider="luxcore",
                                     env=env) as guard:
            pass
        assert ("dry_run", 12.0, 34.0, 56.0) == (
            guard.mode, guard.settle_lag, guard.hold_ttl, guard.uncertain_ttl)

    def test_allow_eviction_is_a_redis_option_only(self) -> None:
        """Accepting an evicting Redis is said for Redis; for another store it is refused."""
        redis = load_config({"providers": {"luxcore": {"api_key_env": "K"}},
                             "reservations": {"store": "redis", "url_env": "R",
                                              "allow_eviction": True}})
        assert redis.reservations.allow_eviction is True
        with pytest.raises(ConfigurationError, match="allow_eviction not used by store"):
            load_config({"providers": {"luxcore": {"api_key_env": "K"}},
                         "reservations": {"store": "sqlite", "path": "h.db",
                                          "allow_eviction": True}})

    def test_a_second_account_of_one_kind_keeps_its_own_name_and_holds(
        self, emulators: tuple[LuxtakEmulator, LuxCoreEmulator, PagsmileEmulator]
    ) -> None:
        """Two LuxCore accounts sharing a store do not see each other's holds."""
        data, env = _emulated(*emulators)
        config = load_config(data)
        store = InMemoryReservations()
        first = PayoutGuard.from_config(config, provider="luxcore", env=env, reservations=store)
        second = PayoutGuard.from_config(config, provider="luxcore_mx", env=env,
                                         reservations=store)
        try:
            first.reserve("4000.00", "ARS", payout_id="po-1")
            decision = second.check("4000.00", "ARS")
        finally:
            first.close()
            second.close()
        assert isinstance(second.fetcher, NamedFetcher)
        assert ("luxcore_mx", True, Decimal("0.00")) == (
            decision.provider, decision.allowed, decision.reserved)

    def test_a_missing_variable_is_named(self) -> None:
        """An unset credential variable is a ConfigurationError naming it and its key."""
        config = load_config({"providers": {"luxcore": {"api_key_env": "NOT_SET_ANYWHERE"}}})
        with pytest.raises(ConfigurationError) as caught:
            build_fetcher(config, "luxcore", env={})
        assert "providers.luxcore.api_key_env" == caught.value.path
        assert "NOT_SET_ANYWHERE is not set" in caught.value.message

    def test_an_empty_variable_is_refused(self) -> None:
        """A variable set to blanks is as good as missing."""
        config = load_config({"providers": {"luxtak": {"app_id_env": "ID", "app_key_env": "K"}}})
        with pytest.raises(ConfigurationError) as caught:
            build_fetcher(config, "luxtak", env={"ID": "app", "K": "  "})
        assert "K is empty" in caught.value.message

    @pytest.mark.parametrize("url", ["https://api.lux-core.io/v1?api_key=SECRET123",
                                     "https://merchant:SECRET123@api.lux-core.io",
                                     "https://merchant:SECRET123@"])
    def test_a_credential_in_base_url_is_refused_when_loaded(self, tmp_path: Path,
                                                             url: str) -> None:
        """A base_url with user:password@ or a query is refused by load_config, unquoted."""
        path = _write(tmp_path, "g.toml", f'[providers.luxcore]\napi_key_env = "K"\n'
                      f'base_url = "{url}"\n')
        error = _error(path)
        assert (str(path), "providers.luxcore.base_url") == (error.source, error.path)
        assert "SECRET123" not in str(error)
        assert "SECRET123" not in repr(error.args)

    def test_fetcher_refusals_name_the_key_in_the_file(self, tmp_path: Path) -> None:
        """A base_url the fetcher refuses is reported at providers.<name>.base_url."""
        path = _write(tmp_path, "g.toml", '[providers.luxcore]\napi_key_env = "K"\n'
                      'base_url = "http://api.example.com"\n')
        with pytest.raises(ConfigurationError) as caught:
            build_fetcher(load_config(path), "luxcore", env={"K": "qp_test_sk_x"})
        assert (str(path), "providers.luxcore.base_url") == (
            caught.value.source, caught.value.path)
        assert "qp_test_sk_x" not in str(caught.value)

    def test_sqlite_store_is_built_from_the_file(self, tmp_path: Path) -> None:
        """A sqlite store is built as SqliteReservations at the path."""
        from guard.stores.sqlite import SqliteReservations

        config = load_config({"reservations": {"store": "sqlite",
                                               "path": str(tmp_path / "holds.db")}})
        store = build_reservations(config)
        store.close()
        assert isinstance(store, SqliteReservations)

    def test_a_relative_sqlite_path_is_taken_from_the_files_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two guards of one file, built from two working directories, share one store."""
        etc = tmp_path / "etc"
        workers = [tmp_path / "worker1", tmp_path / "worker2"]
        for directory in (etc, *workers):
            directory.mkdir()
        with LuxCoreEmulator(balances={"ARS": "100.00"}) as emu:
            path = _write(etc, "guard.toml", f'[providers.luxcore]\nbase_url = "{emu.url}"\n'
                          'api_key_env = "LC_KEY"\n[reservations]\nstore = "sqlite"\n'
                          'path = "holds.db"\n')
            allowed = []
            for worker in workers:
                monkeypatch.chdir(worker)
                with PayoutGuard.from_config(path, env={"LC_KEY": emu.api_key}) as guard:
                    decision = guard.check("80.00", "ARS", payout_id=worker.name)
                    allowed.append(decision.allowed)
                    if decision.allowed:  # held, and left held: the worker is still sending
                        guard.reserve("80.00", "ARS", payout_id=worker.name).__enter__()
        assert ([True, False], [etc / "holds.db"]) == (allowed, sorted(tmp_path.rglob("*.db")))

    def test_a_sqlite_memory_path_is_refused_when_loaded(self) -> None:
        """A sqlite path of ":memory:" is no file processes can share: refused at load."""
        error = _error({"reservations": {"store": "sqlite", "path": ":memory:"}})
        assert "reservations" == error.path
        assert "store = 'memory'" in error.message

    def test_a_subclass_builds_its_own_kind_of_guard(self) -> None:
        """MyGuard.from_config(...) returns a MyGuard."""

        class MyGuard(PayoutGuard):
            pass

        with MyGuard.from_config({"providers": {"luxcore": {"api_key_env": "K"}}},
                                 env={"K": "qp_test_sk_x"}) as guard:
            assert isinstance(guard, MyGuard)

    def test_an_empty_configuration_has_no_rules_and_no_providers(self) -> None:
        """{} is a valid configuration; building a guard from it says why it cannot."""
        config = load_config({})
        assert isinstance(config, GuardConfig)
        assert 0 == len(config.ruleset)
        with pytest.raises(ConfigurationError, match="no providers configured"):
            PayoutGuard.from_config(config)


class TestPublicNames:
    def test_config_module_exports_a_sorted_all(self) -> None:
        """guard.config lists its public names, sorted, and each exists."""
        import guard.config

        assert sorted(guard.config.__all__) == guard.config.__all__
        assert all(hasattr(guard.config, name) for name in guard.config.__all__)

    def test_payout_guard_from_config_picks_the_named_provider(self) -> None:
        """PayoutGuard.from_config builds the named provider's guard with the file's rules."""
        data = {"providers": {"luxcore": {"api_key_env": "K"},
                              "luxtak": {"app_id": "A", "app_key_env": "K"}},
                "rules": [{"type": "max_payout", "limits": {"BRL": "10"}}]}
        with PayoutGuard.from_config(data, provider="luxtak", env={"K": "secret"}) as made:
            pass
        assert ("luxtak", ("sufficient_funds", "max_payout")) == (made.provider,
                                                                  made.rules.names)

    @pytest.mark.parametrize("name", ["build_guard", "close_guard", "guard_from_config"])
    def test_there_is_one_way_to_build_a_guard_from_a_configuration(self, name: str) -> None:
        """PayoutGuard.from_config is it: the older builders are gone from guard.config."""
        import guard.config

        assert not hasattr(guard.config, name)

    def test_guard_package_exports_load_config(self) -> None:
        """load_config and GuardConfig are importable from guard."""
        import guard

        assert (guard.load_config, guard.GuardConfig) == (
            load_config, GuardConfig)
