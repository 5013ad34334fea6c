"""Tests for rules.config and rules._describe: rules as data, in and out, and in words."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from decimal import Decimal, localcontext
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from rules import (
    ConfigurationError,
    CurrencyMinimums,
    Facts,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    Rule,
    RuleSet,
    SufficientFunds,
    Verdict,
    all_of,
    any_of,
    describe,
    dump,
    load,
    when,
)
from tests.strategies import rule_trees

D = Decimal
ROOT = Path(__file__).resolve().parent.parent

EXPECTED = RuleSet([
    SufficientFunds(),
    ReserveMargin(percent="5", minimum={"ARS": "1000.00"}),
    when(any_of(MaxPayout({"BRL": "5000"}), MaxBalanceAge(30)), provider="luxtak"),
    when(FrozenFunds(max_ratio="0.5", when_unknown="warn"), currency=["ARS", "BRL"]),
    CurrencyMinimums(min_payout={"ARS": "100", "CLP": "1500"}, min_remaining={"KWD": "1.250"}),
])

MAPPING: dict[str, Any] = {
    "rules": [
        {"type": "sufficient_funds"},
        {"type": "reserve_margin", "percent": "5", "minimum": {"ARS": "1000.00"}},
        {
            "type": "any_of",
            "provider": "luxtak",
            "rules": [
                {"type": "max_payout", "limits": {"BRL": 5000}},
                {"type": "max_balance_age", "seconds": 30},
            ],
        },
        {
            "type": "frozen_funds", "max_ratio": D("0.5"), "when_unknown": "warn",
            "currency": ["ars", "BRL"],
        },
        {
            "type": "currency_minimums",
            "min_payout": {"ARS": "100", "CLP": 1500},
            "min_remaining": {"KWD": "1.250"},
        },
    ]
}

TOML = """
[[rules]]
type = "sufficient_funds"

[[rules]]
type = "reserve_margin"
percent = 5
minimum = { ARS = 1000.00 }

[[rules]]
type = "any_of"
provider = "luxtak"

  [[rules.rules]]
  type = "max_payout"
  limits = { BRL = "5000" }

  [[rules.rules]]
  type = "max_balance_age"
  seconds = 30

[[rules]]
type = "frozen_funds"
max_ratio = 0.5
when_unknown = "warn"
currency = ["ARS", "BRL"]

[[rules]]
type = "currency_minimums"
min_payout = { ARS = "100", CLP = 1500 }
min_remaining = { KWD = 1.250 }
"""

YAML = """
rules:
  - type: sufficient_funds
  - type: reserve_margin
    percent: 5
    minimum: {ARS: "1000.00"}
  - type: any_of
    provider: luxtak
    rules:
      - {type: max_payout, limits: {BRL: "5000"}}
      - {type: max_balance_age, seconds: 30}
  - type: frozen_funds
    max_ratio: 0.5
    when_unknown: warn
    currency: [ARS, BRL]
  - type: currency_minimums
    min_payout: {ARS: "100", CLP: 1500}
    min_remaining: {KWD: "1.250"}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(data: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        load(data)  # type: ignore[arg-type] # wrong on purpose
    return caught.value


class TestLoad:
    def test_from_a_mapping(self) -> None:
        """{'rules': [...]} gives the rules it describes, scopes wrapped in when()."""
        assert EXPECTED == load(MAPPING)

    def test_from_a_bare_list(self) -> None:
        """A bare list of entries is the rules list."""
        assert EXPECTED == load(MAPPING["rules"])

    def test_from_a_toml_file(self, tmp_path: Path) -> None:
        """A .toml file, decimals read as Decimal, gives the same rules."""
        assert EXPECTED == load(write(tmp_path, "rules.toml", TOML))

    @pytest.mark.parametrize("suffix", [".yaml", ".yml", ".YAML"])
    def test_from_a_yaml_file(self, tmp_path: Path, suffix: str) -> None:
        """A .yaml/.yml file, given as str or Path, gives the same rules."""
        path = write(tmp_path, f"rules{suffix}", YAML)
        assert (EXPECTED, EXPECTED) == (load(path), load(str(path)))

    def test_toml_decimals_never_become_floats(self, tmp_path: Path) -> None:
        """A TOML decimal that a float would distort is kept exactly."""
        path = write(tmp_path, "r.toml", '[[rules]]\ntype = "reserve_margin"\npercent = 0.1\n')
        (rule,) = load(path)
        assert D("0.1") == rule.percent  # type: ignore[attr-defined]

    def test_yaml_numbers_that_are_not_money_are_read_exactly(self, tmp_path: Path) -> None:
        """YAML percent 0.1 stays 0.1 (never a float); money as a plain integer is fine."""
        text = "- {type: reserve_margin, percent: 0.1, minimum: {CLP: 1_000, BRL: '0.50'}}\n"
        (rule,) = load(write(tmp_path, "r.yaml", text))
        assert (D("0.1"), {"CLP": D(1000), "BRL": D("0.50")}) == (
            rule.percent, dict(rule.minimum)  # type: ignore[attr-defined]
        )

    def test_json_files_load_too(self, tmp_path: Path) -> None:
        """A .json rules file, decimals read as Decimal, gives the same rules."""
        path = write(tmp_path, "rules.json", json.dumps(dump(EXPECTED)))
        assert EXPECTED == load(path)

    def test_empty_rules_allow_everything(self) -> None:
        """An empty list is an empty RuleSet."""
        assert RuleSet() == load({"rules": []})

    def test_nested_all_of_and_defaults(self) -> None:
        """all_of nests; max_balance_age defaults to 60 seconds; tuples work as lists."""
        data = ({"type": "any_of", "rules": ({"type": "all_of", "rules": [
            {"type": "max_balance_age"}, {"type": "sufficient_funds"}]},)},)
        assert RuleSet([any_of(all_of(MaxBalanceAge(60), SufficientFunds()))]) == load(data)


class TestLoadErrors:
    @pytest.mark.parametrize(
        ("data", "path", "message"),
        [
            ([{"type": "max_payout", "limits": {"BRL": "1"}}, {"type": "reserve"}], "rules[1]",
             ("unknown rule type 'reserve'; valid types: all_of, any_of, currency_minimums, "
              "frozen_funds, max_balance_age, max_payout, reserve_margin, sufficient_funds")),
            ([{"percent": "5"}], "rules[0]", "each rule needs a 'type'; valid types: all_of"),
            ([5], "rules[0]", "expected a rule entry (a table with a 'type' key), got int 5"),
            ([{"type": "max_payout", "limits": {"BRL": "1"}, "limit": 1}], "rules[0].limit",
             ("unknown key 'limit' for max_payout; accepted keys: type, limits, currency, "
              "provider")),
            ({"rules": [], "guard": {}}, "guard",
             "unknown key 'guard' at the top level; accepted keys: rules"),
            ({"rule": []}, "rules", "missing required key 'rules' at the top level"),
            ([{"type": "max_payout"}], "rules[0].limits",
             "missing required key 'limits' for max_payout"),
            ({"rules": "max_payout"}, "rules", "expected a list, got str 'max_payout'"),
            ([{"type": "max_payout", "limits": ["BRL"]}], "rules[0].limits",
             "expected a table of currency -> amount"),
            ([{"type": "reserve_margin", "percent": 5.5}], "rules[0].percent",
             r"5\.5 is a float, which cannot hold decimal amounts exactly; quote it \('5\.5'\)"),
            ([{"type": "reserve_margin", "minimum": {"BRL": "ten"}}], "rules[0].minimum.BRL",
             ("'ten' is not an amount: write ASCII digits with at most one '.', such as '2500' "
              "or '2500.00' (no sign, spaces, '_' or exponent); expected a number such as "
              "'100.00'")),
            ([{"type": "reserve_margin", "minimum": {"BRL": True}}], "rules[0].minimum.BRL",
             "not bool"),
            ([{"type": "all_of", "rules": [{"type": "sufficient_funds"}, {
                "type": "reserve_margin", "minimum": {"BRX": "1"}}]}],
             "rules[0].rules[1].minimum.BRX", "unknown currency 'BRX'"),
            ([{"type": "currency_minimums", "min_payout": {"CLP": "10.5"}}],
             "rules[0].min_payout.CLP", "more decimal places than CLP allows (0)"),
            ([{"type": "currency_minimums", "min_payout": {5: "10"}}],
             "rules[0].min_payout.5", "expected a string, got int 5"),
            ([{"type": "reserve_margin", "percent": "120"}], "rules[0].percent",
             "must be below 100, got 120"),
            ([{"type": "reserve_margin"}], "rules[0]", "needs percent, minimum or both"),
            ([{"type": "reserve_margin", "percent": "5", "basis": "net"}], "rules[0].basis",
             "must be 'available' or 'total', got 'net'"),
            ([{"type": "frozen_funds", "when_unknown": "maybe"}], "rules[0].when_unknown",
             "must be 'allow', 'warn' or 'deny', got 'maybe'"),
            ([{"type": "any_of", "rules": []}], "rules[0].rules", "any_of needs at least one"),
            ([{"type": "sufficient_funds", "currency": ["BRL", "BRR"]}], "rules[0].currency[1]",
             "unknown currency 'BRR'"),
            ([{"type": "sufficient_funds", "currency": 986}], "rules[0].currency",
             "expected a string or a list of strings"),
            ([{"type": "sufficient_funds", "provider": []}], "rules[0].provider",
             "must name at least one provider"),
            ([{"type": "max_balance_age", "seconds": Decimal("1E+999999999")}],
             "rules[0].seconds", "has 1000000000 digits written out; at most 34"),
            ([{"type": "reserve_margin", "percent": Decimal("1E-999999999")}],
             "rules[0].percent", "has 1000000000 digits written out; at most 34"),
            ([{"type": "max_payout", "limits": {"BRL": "1" * 35}}],
             "rules[0].limits.BRL", "has 35 digits written out; at most 34"),
        ],
    )
    def test_error_names_the_place_and_what_is_accepted(
        self, data: object, path: str, message: str
    ) -> None:
        """Each invalid document raises ConfigurationError with .path and a helpful message."""
        error = error_of(data)
        assert path == error.path
        assert message in error.message or re.search(message, error.message)
        assert str(error).startswith(f"{path}: ")

    @pytest.mark.parametrize(("data", "path", "message"), [
        ([{"type": "x" * 5000}], "rules[0]", "unknown rule type 'xxxxx"),
        (["x" * 5000], "rules[0]", "expected a rule entry (a table with a 'type' key), got str"),
        ({"rules": "x" * 5000}, "rules", "expected a list, got str 'xxxxx"),
        ([{"type": "max_payout", "limits": {"BRL": "1"}, "currency": [1] * 5000}],
         "rules[0].currency", "expected a string or a list of strings"),
        ([{"type": "max_payout", "limits": {"BRL": "1"}, "x" * 5000: 1}],
         f"rules[0].{'x' * 57}...", "unknown key 'xxxxx"),
        ({"rules": [], "x" * 5000: 1}, f"{'x' * 57}...", "unknown key 'xxxxx"),
        ([{"type": "max_payout", "limits": {"x" * 5000: "1"}}],
         f"rules[0].limits.{'x' * 57}...", "unknown currency 'xxxxx"),
        ([{"type": "currency_minimums", "min_payout": {"x" * 5000: "1"}}],
         f"rules[0].min_payout.{'x' * 57}...", "unknown currency 'xxxxx"),
        ([{"type": "sufficient_funds", "provider": [" " * 5000]}], "rules[0].provider[0]",
         "expected a provider name such as 'luxtak', got '     "),
        ([{"type": "sufficient_funds", "provider": " " * 5000}], "rules[0].provider",
         "expected a provider name such as 'luxtak', got '     "),
    ])
    def test_a_long_input_is_quoted_at_most_60_characters(
        self, data: object, path: str, message: str
    ) -> None:
        """A 5,000-character value or key is quoted by its first 60 characters, not whole."""
        error = error_of(data)
        assert (path, True) == (error.path, error.message.startswith(message))
        assert "x" * 61 not in str(error)
        assert len(str(error)) < 300

    def test_several_problems_are_all_listed(self) -> None:
        """The first problem sets .path; the others follow in the message."""
        error = error_of([{"type": "max_payout", "limits": {"BRL": 1.5}, "x": 1}])
        assert "rules[0].limits.BRL" == error.path
        assert "; also rules[0].x: unknown key 'x'" in error.message

    @pytest.mark.parametrize(("data", "got"), [(None, "an empty document"), (42, "int")])
    def test_document_must_be_a_table_or_a_list(self, data: object, got: str) -> None:
        """Anything but a mapping, a list or a path is refused, saying what is accepted."""
        assert f"or a list of rule entries; got {got}" in str(error_of(data))


class TestLoadFileErrors:
    def test_missing_file_names_the_file(self, tmp_path: Path) -> None:
        """A file that cannot be read is a ConfigurationError whose message names it."""
        path = tmp_path / "absent.toml"
        error = error_of(path)
        assert (str(path), f"{path}: cannot read the rules file: No such file or directory") == (
            error.source, str(error)
        )

    def test_unsupported_suffix(self, tmp_path: Path) -> None:
        """Only .toml, .yaml, .yml and .json files are read."""
        error = error_of(write(tmp_path, "rules.ini", "{}"))
        assert "unknown file type '.ini' for a rules file; accepted: .toml, .yaml, .yml, .json" in (
            str(error)
        )

    def test_invalid_toml_names_the_file_and_line(self, tmp_path: Path) -> None:
        """A TOML syntax error says where."""
        path = write(tmp_path, "bad.toml", '[[rules]]\ntype = "max_payout\n')
        assert str(error_of(path)).startswith(f"{path}: invalid TOML: ")
        assert "line 2" in str(error_of(path))

    def test_invalid_yaml_names_the_file_and_line(self, tmp_path: Path) -> None:
        """A YAML syntax error says where."""
        path = write(tmp_path, "bad.yaml", "rules:\n  - type: [max_payout\n")
        message = str(error_of(path))
        assert message.startswith(f"{path}: invalid YAML: ")
        assert 'in "bad.yaml", line' in message


    def test_validation_errors_name_the_file_and_path(self, tmp_path: Path) -> None:
        """An invalid entry in a file is reported as <file>: <path>: <problem>."""
        path = write(tmp_path, "r.toml", '[[rules]]\ntype = "max_payout"\nlimits = {BRL = 1.001}\n')
        error = error_of(path)
        assert ("rules[0].limits.BRL", str(path)) == (error.path, error.source)
        assert str(error).startswith(f"{path}: rules[0].limits.BRL: amount 1.001 has more")

    @pytest.mark.parametrize("text", ["", "42\n", "rules: 5\n"])
    def test_yaml_document_of_the_wrong_shape(self, tmp_path: Path, text: str) -> None:
        """An empty or scalar YAML document is refused."""
        assert str(error_of(write(tmp_path, "r.yaml", text))).startswith(str(tmp_path))

    def test_yaml_without_pyyaml_says_how_to_install_it(self, tmp_path: Path) -> None:
        """Without PyYAML, loading YAML says to install payout-guard[yaml] or use TOML."""
        path = write(tmp_path, "r.yaml", YAML)
        code = (
            "import sys; sys.modules['yaml'] = None\n"  # makes `import yaml` fail, like absent
            "import rules\n"
            "try:\n"
            f"    rules.load({str(path)!r})\n"
            "except rules.ConfigurationError as exc:\n"
            "    print(exc)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        )
        assert (
            f"{path}: reading YAML needs PyYAML: pip install 'payout-guard[yaml]' "
            "(or write it in TOML)\n"
        ) == result.stdout


class TestDump:
    def test_dump_writes_amounts_as_strings(self) -> None:
        """Dump gives plain data with string amounts and sorted scopes."""
        assert {"rules": [
            {"type": "max_payout", "limits": {"BRL": "5000.00"}, "currency": ["BRL"],
             "provider": ["luxtak"]},
            {"type": "max_balance_age", "seconds": "30"},
        ]} == dump(all_of(
            when(MaxPayout({"BRL": "5000"}), currency="BRL", provider="LuxTak"), MaxBalanceAge(30)
        ))

    def test_round_trip_of_the_example(self) -> None:
        """load(dump(rules)) == rules."""
        assert EXPECTED == load(dump(EXPECTED))

    @given(rule_trees())
    def test_round_trip_of_any_composition(self, rule: Rule) -> None:
        """Every composition of built-ins survives dump and load unchanged."""
        assert RuleSet([rule]) == load(dump(rule))

    def test_a_negative_zero_is_read_as_zero_and_loads_again(self) -> None:
        """TOML's -0.0 is a limit of 0.00, written "0.00" (a sign would not load again)."""
        loaded = load([{"type": "max_payout", "limits": {"BRL": Decimal("-0.0")}}])
        assert {"rules": [{"type": "max_payout", "limits": {"BRL": "0.00"}}]} == dump(loaded)
        assert loaded == load(dump(loaded))

    def test_custom_rules_cannot_be_dumped(self) -> None:
        """A rule that is not built-in cannot be written as data."""

        class Custom:
            name = "custom"

            def evaluate(self, facts: Facts) -> Verdict:  # noqa: ARG002 - the protocol's
                return Verdict(rule="custom", passed=True)

        with pytest.raises(ConfigurationError, match="cannot write 'custom' \\(Custom\\)"):
            dump(all_of(Custom()))


class TestConfigurationError:
    def test_message_reads_source_path_message(self) -> None:
        """str() joins the non-empty parts: source, path, message."""
        error = ConfigurationError("bad", path="rules[0].x", source="r.toml")
        assert ("r.toml: rules[0].x: bad", "bad") == (str(error), error.message)

    def test_is_a_value_error(self) -> None:
        """ConfigurationError can be caught as ValueError."""
        assert isinstance(ConfigurationError("x"), ValueError)

    def test_pickles_with_its_fields(self) -> None:
        """Path and source survive pickling (multiprocessing)."""
        error = pickle.loads(pickle.dumps(ConfigurationError("bad", path="p", source="s")))
        assert ("bad", "p", "s", "s: p: bad") == (
            error.message, error.path, error.source, str(error)
        )


class TestDescribe:
    def test_one_line_per_rule_with_the_numbers(self) -> None:
        """Each rule is a line with its numbers; nested rules are indented; scopes lead."""
        assert (
            "sufficient_funds: deny when amount + fee is more than available - held\n"
            "reserve_margin: keep max(5% of available, 1000.00 ARS) untouched\n"
            "when provider is luxtak: any_of, at least one must pass (2 rules)\n"
            "  max_payout: deny payouts above 5000.00 BRL\n"
            "  max_balance_age: deny when the balance is more than 30s old\n"
            "when currency is ARS or BRL: frozen_funds: deny every payout while frozen / total "
            "is above 0.5 (50%); when frozen funds are not reported: allow with a warning\n"
            "currency_minimums: deny payouts below 100.00 ARS, 1500 CLP; leave at least "
            "1.250 KWD after each payout"
        ) == describe(EXPECTED)

    @pytest.mark.parametrize(
        ("rule", "line"),
        [
            (ReserveMargin(percent="2.5", basis="total"),
             "reserve_margin: keep 2.5% of total (available if not reported) untouched"),
            (ReserveMargin(minimum={"BRL": "50", "ARS": "1000"}),
             "reserve_margin: keep by currency 1000.00 ARS, 50.00 BRL untouched"),
            (FrozenFunds(when_unknown="deny"),
             "frozen_funds: when the provider does not report frozen funds: deny every payout"),
            (CurrencyMinimums(min_remaining={"BRL": "10"}),
             "currency_minimums: leave at least 10.00 BRL after each payout"),
            (when(SufficientFunds(), currency="CLP", provider=["luxcore", "pagsmile"]),
             ("when currency is CLP and provider is luxcore or pagsmile: sufficient_funds: "
              "deny when amount + fee is more than available - held")),
        ],
    )
    def test_single_rules(self, rule: Rule, line: str) -> None:
        """A single rule is one line."""
        assert line == describe(rule)

    def test_nested_combinators_indent_further(self) -> None:
        """all_of inside any_of inside the set is indented one level per nesting."""
        rule = any_of(all_of(MaxPayout({"BRL": "1"}), MaxBalanceAge(5)), SufficientFunds())
        assert (
            "any_of, at least one must pass (2 rules)\n"
            "  all_of, every one must pass (2 rules)\n"
            "    max_payout: deny payouts above 1.00 BRL\n"
            "    max_balance_age: deny when the balance is more than 5s old\n"
            "  sufficient_funds: deny when amount + fee is more than available - held"
        ) == describe(all_of(rule))

    def test_the_callers_decimal_context_changes_no_number(self) -> None:
        """A caller's 3-digit context shows 12.345% as written, not 12.3%."""
        rules = all_of(ReserveMargin(percent="12.345"), FrozenFunds(max_ratio="0.12345"))
        expected = describe(rules)
        with localcontext() as ctx:
            ctx.prec = 3
            assert expected == describe(rules)
        assert "keep 12.345% of available" in expected
        assert "above 0.12345 (12.345%)" in expected

    def test_empty_set(self) -> None:
        """An empty set says that it adds no rule."""
        assert describe(RuleSet()).startswith("no rules")

    @given(rule_trees())
    def test_every_composition_can_be_described(self, rule: Rule) -> None:
        """Describe never fails and gives at least one line per leaf rule."""
        text = describe(rule)
        assert text
        assert not text.endswith("\n")
