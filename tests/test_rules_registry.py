"""Tests for the rule registry: a rule of one's own, loaded, dumped and described alike."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest

import rules
from rules import (
    ConfigurationError,
    Facts,
    MaxPayout,
    RuleSet,
    SufficientFunds,
    Verdict,
    describe,
    dump,
    load,
    register,
    registered,
    unregister,
    when,
)
from rules.config import Amount, RuleConfig
from tests._facts import brl

D = Decimal


@dataclass(frozen=True)
class WeekendCap:
    """A rule of one's own: deny payouts above *limit*, whatever the currency."""

    limit: Decimal
    label: str = "weekend"

    type_name: ClassVar[str] = "weekend_cap"

    class Config(RuleConfig):
        """``{type = "weekend_cap", limit = "300.00", label = "..."}``."""

        limit: Amount
        label: str = "weekend"

    @property
    def name(self) -> str:
        return "weekend_cap"

    def evaluate(self, facts: Facts) -> Verdict:
        if facts.amount <= self.limit:
            return Verdict(rule=self.name, passed=True, cap=self.limit)
        return Verdict(rule=self.name, passed=False, code="weekend_cap",
                       message=f"{facts.amount} is above the {self.label} cap", cap=self.limit)

    def describe(self) -> str:
        return f"deny payouts above {self.limit} ({self.label})"

    def to_data(self) -> dict[str, Any]:
        return {"limit": format(self.limit, "f"), "label": self.label}


ENTRY = {"type": "weekend_cap", "limit": "300.00", "label": "saturday", "provider": "luxtak"}


class TestRegisteredRule:
    def test_loads_from_a_mapping_like_a_built_in(self) -> None:
        """Once registered, its type is read from data, scope and all."""
        with registered(WeekendCap):
            loaded = load([ENTRY])
        assert RuleSet([when(WeekendCap(D("300.00"), "saturday"), provider="luxtak")]) == loaded

    def test_loads_from_toml_and_yaml_files(self, tmp_path: Path) -> None:
        """A rules file names it by type, in TOML and in YAML."""
        toml = tmp_path / "r.toml"
        toml.write_text('[[rules]]\ntype = "weekend_cap"\nlimit = "300.00"\n', encoding="utf-8")
        yaml = tmp_path / "r.yaml"
        yaml.write_text("- {type: weekend_cap, limit: '300.00'}\n", encoding="utf-8")
        with registered(WeekendCap):
            assert load(toml) == load(yaml) == RuleSet([WeekendCap(D("300.00"))])

    def test_dumps_and_loads_back_equal(self) -> None:
        """Dump writes its to_data under its type; load reads it back to an equal rule."""
        rule_set = RuleSet([SufficientFunds(), when(WeekendCap(D("5")), currency="BRL")])
        with registered(WeekendCap):
            data = dump(rule_set)
            assert rule_set == load(data)
        assert {"type": "weekend_cap", "limit": "5", "label": "weekend",
                "currency": ["BRL"]} == data["rules"][1]

    def test_describes_itself(self) -> None:
        """describe() uses the class's own words."""
        with registered(WeekendCap):
            text = describe(RuleSet([WeekendCap(D("300"), "sunday")]))
        assert "weekend_cap: deny payouts above 300 (sunday)" == text

    def test_is_validated_the_same_way(self) -> None:
        """Its Config refuses unknown keys and floats, with the path, like a built-in's."""
        with registered(WeekendCap), pytest.raises(ConfigurationError) as caught:
            load([{"type": "weekend_cap", "limit": 1.5, "colour": "red"}])
        assert "rules[0].limit" == caught.value.path
        assert "1.5 is a float" in caught.value.message
        assert ("rules[0].colour: unknown key 'colour' for weekend_cap; accepted keys: type, "
                "limit, label, currency, provider") in caught.value.message

    def test_is_listed_among_the_valid_types(self) -> None:
        """An unknown type's message lists the registered types, yours included."""
        with registered(WeekendCap), pytest.raises(ConfigurationError, match="weekend_cap"):
            load([{"type": "holiday_cap"}])

    def test_the_decorator_form_registers_the_class(self) -> None:
        """@register returns the class itself; unregister forgets it."""
        with registered():
            assert WeekendCap is register(WeekendCap)
            assert 1 == len(load([{"type": "weekend_cap", "limit": "1"}]))
            unregister(WeekendCap)
            with pytest.raises(ConfigurationError, match="unknown rule type 'weekend_cap'"):
                load([{"type": "weekend_cap", "limit": "1"}])


class TestRegistrationDoesNotLeak:
    def test_outside_the_block_the_type_is_unknown(self) -> None:
        """registered() restores the registry, even when the block raises."""
        with pytest.raises(RuntimeError), registered(WeekendCap):
            raise RuntimeError
        with pytest.raises(ConfigurationError, match="unknown rule type 'weekend_cap'"):
            load([ENTRY])
        with pytest.raises(ConfigurationError, match="cannot write 'weekend_cap'"):
            dump(WeekendCap(D("1")))
        assert describe(WeekendCap(D("1"))).startswith("weekend_cap: custom rule WeekendCap(")

    def test_threads_registering_at_once_lose_nothing(self) -> None:
        """Registrations from several threads all land (the registry changes under a lock)."""
        classes = [type(f"Cap{n}", (WeekendCap,), {"type_name": f"cap_{n}"}) for n in range(8)]
        with registered():
            threads = [threading.Thread(target=register, args=(cls,)) for cls in classes]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert 8 == len(load([{"type": f"cap_{n}", "limit": "1"} for n in range(8)]))


class TestRefusals:
    def test_a_type_name_taken_by_another_class(self) -> None:
        """Two classes cannot share a type name."""

        class Impostor(WeekendCap):
            type_name: ClassVar[str] = "max_payout"

        with pytest.raises(ConfigurationError, match="already registered by MaxPayout"):
            register(Impostor)

    @pytest.mark.parametrize("name", ["all_of", "any_of", "two words", ""])
    def test_a_type_name_the_engine_reads_or_that_is_not_a_name(self, name: str) -> None:
        """type_name must be an identifier other than all_of and any_of."""
        cls = type("Bad", (WeekendCap,), {"type_name": name})
        with pytest.raises(ConfigurationError, match="needs a class attribute type_name"):
            register(cls)

    def test_a_config_that_is_not_a_rule_config(self) -> None:
        """Config must subclass RuleConfig (which refuses unknown keys)."""
        cls = type("Bad", (WeekendCap,), {"type_name": "bad", "Config": dict})
        with pytest.raises(ConfigurationError, match=r"subclass of rules\.config\.RuleConfig"):
            register(cls)

    def test_a_built_in_cannot_be_unregistered(self) -> None:
        """The built-ins stay."""
        with pytest.raises(ConfigurationError, match="built in"):
            unregister(MaxPayout)

    def test_every_built_in_is_registered_under_its_name(self) -> None:
        """Each built-in is dumped under the name its verdicts carry."""
        built_in: list[rules.Rule] = [SufficientFunds(), MaxPayout({"BRL": "1"})]
        assert [rule.name for rule in built_in] == [
            entry["type"] for entry in dump(RuleSet(built_in))["rules"]
        ]

    def test_a_registered_rule_is_judged_like_any_rule(self) -> None:
        """Registration changes nothing about judging: a guard-free check of its verdict."""
        assert rules.all_of(WeekendCap(D("5"))).evaluate(brl("10.00")).denies
