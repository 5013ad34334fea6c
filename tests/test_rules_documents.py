"""The one document reader: rules files and guard configurations read TOML, YAML and JSON alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

import rules
from guard import load_config
from rules import ConfigurationError, Rule, RuleSet
from rules.config import parse_document
from tests.strategies import rule_trees


def toml_text(value: object) -> str:
    """Return *value* (str, list and dict of them) as TOML: inline tables and arrays."""
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string, escapes included
    if isinstance(value, list):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_text(v)}" for k, v in value.items()) + "}"


WRITERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "toml": lambda data: f"rules = {toml_text(data['rules'])}\n",
    "yaml": lambda data: yaml.safe_dump(data, sort_keys=False),
    "json": json.dumps,
}


def from_rules_file(path: Path) -> RuleSet:
    return rules.load(path)


def from_guard_config(path: Path) -> RuleSet:
    return load_config(path).ruleset


LOADERS = {"rules file": from_rules_file, "guard config": from_guard_config}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rule=rule_trees())
def test_the_same_rules_in_any_format_and_either_kind_of_file_are_equal(
    tmp_path_factory: pytest.TempPathFactory, rule: Rule
) -> None:
    """Inline in a guard config or in a rules file, as TOML, YAML or JSON: one rule set."""
    data = rules.dump(rule)
    folder = tmp_path_factory.mktemp("same")
    loaded = []
    for fmt, write in WRITERS.items():
        path = folder / f"rules.{fmt}"
        path.write_text(write(data), encoding="utf-8")
        loaded += [load(path) for load in LOADERS.values()]
        guard_file = folder / f"guard_{fmt}.toml"
        guard_file.write_text(f'rules_file = "rules.{fmt}"\n', encoding="utf-8")
        loaded.append(load_config(guard_file).ruleset)
    assert [RuleSet([rule])] * len(loaded) == loaded


PITFALLS = [
    pytest.param(
        "rules:\n  - {type: max_payout, limits: {CLP: 0100}}\n", "rules[0].limits.CLP",
        "0100 has a leading zero, which YAML 1.1 reads as octal 64 and YAML 1.2 as 100; "
        "write money in YAML as a string ('0100') or a plain integer", id="octal",
    ),
    pytest.param(
        "rules:\n  - type: max_payout\n    limits: {BRL: '1'}\n    limits: {BRL: '2'}\n",
        "rules[0]", "found the key 'limits' twice in one table", id="duplicate key",
    ),
    pytest.param(
        "rules:\n  - {type: max_payout, limits: {BRL: 10.50}}\n", "rules[0].limits.BRL",
        "YAML reads 10.50 as a float; write money in YAML as a string ('10.50') or a plain "
        "integer", id="float",
    ),
]


class TestYamlPitfalls:
    @pytest.mark.parametrize("kind", list(LOADERS))
    @pytest.mark.parametrize(("text", "path", "message"), PITFALLS)
    def test_are_refused_in_both_kinds_of_file_with_the_path(
        self, tmp_path: Path, kind: str, text: str, path: str, message: str
    ) -> None:
        """Octal-looking numbers, repeated keys and float money: refused, named by key path."""
        file = tmp_path / "doc.yaml"
        file.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigurationError) as caught:
            LOADERS[kind](file)
        assert (path, str(file)) == (caught.value.path, caught.value.source)
        assert message in caught.value.message

    def test_a_leading_zero_is_refused_outside_money_too(self) -> None:
        """cache.ttl: 010 means 8 to one YAML reader and 10 to another: refused."""
        with pytest.raises(ConfigurationError) as caught:
            parse_document("cache: {ttl: 010}\n", "yaml")
        assert "cache.ttl" == caught.value.path

    @pytest.mark.parametrize("text", ["0", "10", "-5", "1_000"])
    def test_plain_integers_are_read_as_integers(self, text: str) -> None:
        """Integers without a leading zero are what they look like."""
        assert {"n": int(text.replace("_", ""))} == parse_document(f"n: {text}\n", "yaml")


class TestEveryFormat:
    @pytest.mark.parametrize("loader", LOADERS.values(), ids=LOADERS.keys())
    @pytest.mark.parametrize("fmt", WRITERS)
    def test_a_file_starting_with_a_byte_order_mark_reads_the_same(
        self, tmp_path: Path, fmt: str, loader: Callable[[Path], RuleSet]
    ) -> None:
        """UTF-8 with a BOM (Windows Notepad) reads like UTF-8 without one, in every format."""
        text = WRITERS[fmt]({"rules": [{"type": "max_payout", "limits": {"BRL": "10"}}]})
        plain_file, marked = tmp_path / f"plain.{fmt}", tmp_path / f"marked.{fmt}"
        plain_file.write_text(text, encoding="utf-8")
        marked.write_text(text, encoding="utf-8-sig")
        assert marked.read_bytes().startswith(b"\xef\xbb\xbf")
        assert loader(plain_file) == loader(marked)

    @pytest.mark.parametrize(("text", "fmt", "path"), [
        ('{"mode": "enforce", "mode": "dry_run"}', "json", "(top)"),
        ('{"rules": [{"type": "max_payout", "limits": {"BRL": "1", "BRL": "2"}}]}', "json",
         "rules[0].limits"),
        ("mode: enforce\nmode: dry_run\n", "yaml", "(top)"),
    ])
    def test_a_key_given_twice_is_refused(self, text: str, fmt: str, path: str) -> None:
        """No format silently keeps the last of two values (TOML refuses it itself)."""
        with pytest.raises(ConfigurationError, match="twice in one table") as caught:
            parse_document(text, fmt, source="doc")
        assert (path, "doc") == (caught.value.path or "(top)", caught.value.source)

    def test_toml_refuses_a_key_given_twice_itself(self) -> None:
        """TOML's own rule, reported as invalid TOML."""
        with pytest.raises(ConfigurationError, match="invalid TOML"):
            parse_document('mode = "enforce"\nmode = "dry_run"\n', "toml")

    @pytest.mark.parametrize("fmt", ["toml", "yaml", "json"])
    def test_decimals_never_pass_through_float(self, fmt: str) -> None:
        """0.1 reads as exactly one tenth in every format."""
        text = {"toml": "x = 0.1\n", "yaml": "x: 0.1\n", "json": '{"x": 0.1}'}[fmt]
        value = parse_document(text, fmt)
        assert isinstance(value, dict)
        assert "0.1" == str(value["x"])
        assert not isinstance(value["x"], float)

    @pytest.mark.parametrize(("fmt", "template"), [
        ("toml", "x = {}\n"), ("yaml", "x: {}\n"), ("json", '{{"x": {}}}'),
    ])
    def test_an_integer_longer_than_python_reads_is_invalid_input(
        self, fmt: str, template: str
    ) -> None:
        """A 5,000-digit integer is a ConfigurationError naming the source, not a ValueError."""
        with pytest.raises(ConfigurationError) as caught:
            parse_document(template.format("9" * 5000), fmt, source="doc")
        assert (f"doc: invalid {fmt.upper()}: Exceeds the limit (4300 digits) for integer "
                "string conversion: value has 5000 digits") == str(caught.value)

    @pytest.mark.parametrize(("fmt", "text"), [
        ("toml", "x = " + "[" * 100_000 + "]" * 100_000 + "\n"),
        ("json", "[" * 100_000 + "]" * 100_000),
    ])
    def test_nesting_too_deep_to_read_is_invalid_input(self, fmt: str, text: str) -> None:
        """Nesting deeper than the stack is a ConfigurationError, not a RecursionError."""
        with pytest.raises(ConfigurationError) as caught:
            parse_document(text, fmt, source="doc")
        assert f"doc: invalid {fmt.upper()}: nested too deeply to read" == str(caught.value)

    def test_json_nan_is_refused(self) -> None:
        """JSON's NaN and Infinity are not numbers a configuration holds."""
        with pytest.raises(ConfigurationError, match="NaN"):
            parse_document('{"x": NaN}', "json")
