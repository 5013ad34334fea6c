"""``payout-guard simulate``: batches dry-run in order against a snapshot, bad rows reported."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard import BalanceSnapshot
from guard.cli._batch import Row, read_batch
from guard.cli._simulation import Simulation, summarize
from guard.cli._snapshot import ProviderBalances, Snapshot, read_snapshot
from guard.config import load_config
from guard.errors import ConfigurationError
from guard.testing import capture_decisions
from guard.testing.emulators import LuxCoreEmulator, LuxtakEmulator
from tests._cli import emulator_env, parse_json, run_cli, write_config

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _snapshot(path: Path, balances: dict[str, dict[str, str]],
              errors: dict[str, str] | None = None) -> Path:
    providers = {
        name: ProviderBalances(kind=name, balances=tuple(
            BalanceSnapshot(provider=name, currency=cur, available=Decimal(amount), as_of=NOW)
            for cur, amount in table.items()))
        for name, table in balances.items()
    }
    for name, error in (errors or {}).items():
        providers[name] = ProviderBalances(kind=name, error=error)
    path.write_text(Snapshot(taken_at=NOW, providers=providers).dumps(), encoding="utf-8")
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "guard.toml"
    path.write_text(
        'default_provider = "luxcore"\n'
        '[providers.luxcore]\napi_key_env = "UNUSED_WITH_A_SNAPSHOT"\n'
        '[providers.luxtak]\napp_id = "A"\napp_key_env = "UNUSED_WITH_A_SNAPSHOT"\n'
        '[[rules]]\ntype = "currency_minimums"\nmin_payout = { ARS = "100.00" }\n',
        encoding="utf-8")
    return path


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return _snapshot(tmp_path / "snap.json", {"luxcore": {"ARS": "10000.00"},
                                               "luxtak": {"BRL": "500.00"}})


class TestSimulateCommand:
    def test_consumes_funds_in_order_and_summarizes(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """Allowed payouts use up the balance; later ones are denied; totals are exact."""
        batch = tmp_path / "batch.csv"
        batch.write_text("amount,currency,payout_id,provider,fee\n"
                         "4000.00,ARS,a,,\n4000.00,ARS,b,,10.00\n4000.00,ARS,c,,\n"
                         "50.00,ARS,d,,\n300,BRL,e,luxtak,\n300,BRL,f,luxtak,\n",
                         encoding="utf-8")
        report = tmp_path / "report.json"
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json", "--report", str(report))
        summary = parse_json(result.stdout)
        payouts = parse_json(report.read_text(encoding="utf-8"))["payouts"]
        assert 0 == result.returncode, result.stderr
        assert {"ARS": {"count": 2, "total": "8000.00"},
                "BRL": {"count": 1, "total": "300.00"}} == summary["allowed"]
        assert {"insufficient_funds": 2, "below_minimum_payout": 1} == summary["denied"]
        assert ["allowed", "allowed", "denied", "denied", "allowed", "denied"] == [
            p["status"] for p in payouts]
        assert "1990.00" == payouts[2]["max_payable"]

    def test_bad_rows_are_named_and_the_rest_still_simulated(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """Each bad row is reported by line and field; every other row is simulated."""
        batch = tmp_path / "batch.csv"
        batch.write_text("amount,currency,payout_id,provider,note\n"
                         "100.00,ARS,ok-1,,x\n"
                         "1O0.00,ARS,typo,,\n"
                         "100.00,XYZ,bad-currency,,\n"
                         "100.001,ARS,too-precise,,\n"
                         "100.00,,no-currency,,\n"
                         "100.00,ARS,bad-provider,stripe,\n"
                         "100.00,ARS,ok-2,,\n", encoding="utf-8")
        report = tmp_path / "report.csv"
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--report", str(report))
        with report.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert 1 == result.returncode
        for where in ("line 3, field amount", "line 4, field currency",
                      "line 5, field amount", "line 6, field currency",
                      "line 7, field provider"):
            assert where in result.stderr
        assert "ignoring columns note" in result.stderr
        assert ["allowed", "invalid", "invalid", "invalid", "invalid", "invalid", "allowed"] == [
            row["status"] for row in rows]
        assert ["ok-1", "typo", "bad-currency", "too-precise", "no-currency", "bad-provider",
                "ok-2"] == [row["payout_id"] for row in rows]

    def test_json_lines_against_live_balances(self, tmp_path: Path) -> None:
        """JSON lines (numbers read as decimals) run against balances fetched once, live."""
        batch = tmp_path / "batch.jsonl"
        batch.write_text(
            '{"amount": 600.10, "currency": "ARS", "payout_id": "x"}\n'
            '{"amount": "600.10", "currency": "ARS", "payout_id": "x"}\n'
            '{"amount": "500", "currency": "ARS", "payout_id": "x"}\n'
            '{"amount": "500", "currency": "ARS", "payout_id": "y"}\n'
            "not json\n", encoding="utf-8")
        with LuxCoreEmulator(balances={"ARS": "1000.00"}) as luxcore:
            path = write_config(tmp_path / "g.toml", luxcore=luxcore)
            result = run_cli("simulate", str(batch), "-c", str(path), "--json",
                             env=emulator_env(luxcore=luxcore))
            balance_requests = luxcore.balance_requests
        summary = parse_json(result.stdout)
        assert 1 == result.returncode
        assert 1 == balance_requests
        # A payout id is sent once: both later rows under "x" are duplicates, whatever they ask.
        assert ({"ARS": {"count": 1, "total": "600.10"}}, 2) == (
            summary["allowed"], summary["duplicate_rows"])
        assert {"insufficient_funds": 1} == summary["denied"]
        assert [5] == [entry["line"] for entry in summary["invalid"]]

    def test_balances_json_feeds_simulate(self, tmp_path: Path) -> None:
        """`balances --json > snap.json` then `simulate --balances snap.json` works."""
        with LuxtakEmulator(balances={"BRL": "250.00"}) as luxtak:
            path = write_config(tmp_path / "g.toml", luxtak=luxtak)
            saved = run_cli("balances", "-c", str(path), "--json",
                            env=emulator_env(luxtak=luxtak))
        snap = tmp_path / "snap.json"
        snap.write_text(saved.stdout, encoding="utf-8")
        batch = tmp_path / "b.csv"
        batch.write_text("amount,currency\n200,BRL\n100,BRL\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(path), "--balances", str(snap),
                         "--json")
        assert 0 == result.returncode, result.stderr
        assert {"BRL": {"count": 1, "total": "200.00"}} == parse_json(result.stdout)["allowed"]

    def test_an_unavailable_provider_in_the_snapshot_exits_3(
        self, tmp_path: Path, config: Path
    ) -> None:
        """Payouts on a provider the snapshot could not read are balance_unavailable: exit 3."""
        snap = _snapshot(tmp_path / "s.json", {"luxtak": {"BRL": "1.00"}},
                         errors={"luxcore": "luxcore: HTTP 503"})
        batch = tmp_path / "b.csv"
        batch.write_text("amount,currency\n100,ARS\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(snap),
                         "--json")
        assert 3 == result.returncode
        assert {"balance_unavailable": 1} == parse_json(result.stdout)["denied"]

    @pytest.mark.parametrize(("name", "content", "message"), [
        ("b.csv", "amount,payout_id\n1,a\n", "the CSV header lacks currency"),
        ("b.txt", "amount,currency\n", "unknown batch file type '.txt'"),
    ])
    def test_unusable_batch_files_exit_2(  # noqa: PLR0917 - pytest passes fixtures by name
        self, tmp_path: Path, config: Path, snapshot: Path, name: str, content: str,
        message: str,
    ) -> None:
        """A batch without the required columns, or of an unknown type, is exit code 2."""
        batch = tmp_path / name
        batch.write_text(content, encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(snapshot))
        assert 2 == result.returncode
        assert message in result.stderr

    def test_ten_thousand_rows(self, tmp_path: Path, config: Path, snapshot: Path) -> None:
        """A 10,000-row batch runs to the end with exact totals (timing is in the benchmark)."""
        batch = tmp_path / "big.csv"
        lines = ["amount,currency,payout_id"]
        lines += [f"1.{i % 100:02d},ARS,po-{i}" for i in range(10_000)]
        batch.write_text("\n".join(lines) + "\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(snapshot),
                         "--json", "--no-progress", timeout=120)
        summary = parse_json(result.stdout)
        assert 0 == result.returncode, result.stderr
        assert 10_000 == summary["rows"]
        assert (0, {"below_minimum_payout": 10_000}) == (
            summary["allowed_rows"], summary["denied"])


class TestSimulateRows:
    def test_a_row_with_fewer_fields_than_the_header_is_refused_like_one_with_more(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """A short row names its line and the first field it lacks; a long row its line."""
        batch = tmp_path / "batch.csv"
        batch.write_text("amount,currency,payout_id,provider,fee\n"
                         "100.00,ARS,ok-1,,\n"
                         "100.00,ARS\n"
                         "100.00,ARS,long,,,\n"
                         "100.00\n"
                         "100.00,ARS,ok-2,,\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert (1, 2) == (result.returncode, parse_json(result.stdout)["allowed_rows"])
        assert [
            ("invalid row: line 3, field payout_id: missing: the row has 2 fields, the header "
            "has 5 (leave a field empty rather than dropping it)"),
            "invalid row: line 4: has 6 fields, the header has 5",
            ("invalid row: line 5, field currency: missing: the row has 1 field, the header "
            "has 5 (leave a field empty rather than dropping it)"),
        ] == result.stderr.splitlines()

    def test_a_json_line_missing_a_required_field_is_named(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """JSON lines: a missing required field is named; extra fields are ignored, noted once."""
        batch = tmp_path / "batch.jsonl"
        batch.write_text('{"amount": "10.00"}\n'
                         '{"currency": "ARS", "payout_id": "p"}\n'
                         '{"amount": "100.00", "currency": "ARS", "note": "x"}\n',
                         encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert (1, 1) == (result.returncode, parse_json(result.stdout)["allowed_rows"])
        assert [
            "note: ignoring columns note",
            "invalid row: line 1, field currency: missing (amount and currency are required)",
            "invalid row: line 2, field amount: missing (amount and currency are required)",
        ] == result.stderr.splitlines()

    def test_a_negative_amount_must_be_positive_as_in_check(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """A signed amount or fee reads as it does for `check`: it must be positive."""
        batch = tmp_path / "batch.csv"
        batch.write_text("amount,currency,fee\n-5,ARS,\n150,ARS,-1\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert [
            ("invalid row: line 2, field amount: must be positive, got '-5' (amounts are "
            "written without a sign)"),
            ("invalid row: line 3, field fee: must be zero or positive, got '-1' (amounts are "
            "written without a sign)"),
        ] == result.stderr.splitlines()

    @pytest.mark.parametrize("number", ["1e3", "1E+3", "100.0e0"])
    def test_a_json_number_is_read_by_the_one_amount_grammar(
        self, tmp_path: Path, config: Path, snapshot: Path, number: str
    ) -> None:
        """A JSON number with an exponent is refused, quoted as it was written."""
        batch = tmp_path / "batch.jsonl"
        batch.write_text(f'{{"amount": {number}, "currency": "ARS"}}\n', encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert 1 == result.returncode
        assert (f"invalid row: line 1, field amount: {number!r} is not an amount: write ASCII "
                "digits") in result.stderr

    def test_a_json_line_too_big_to_read_is_an_invalid_row(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """A 5,000-digit number or nesting too deep makes its row invalid; the rest run."""
        batch = tmp_path / "batch.jsonl"
        batch.write_text('{"amount": ' + "1" * 5000 + ', "currency": "ARS"}\n'
                         + "[" * 100_000 + "]" * 100_000 + "\n"
                         '{"amount": "150.00", "currency": "ARS"}\n', encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert (1, 3, 1) == (result.returncode, parse_json(result.stdout)["rows"],
                             parse_json(result.stdout)["allowed_rows"])
        assert [
            ("invalid row: line 1: not valid JSON: Exceeds the limit (4300 digits) for integer "
             "string conversion: value has 5000 digits"),
            "invalid row: line 2: not valid JSON: nested too deeply to read",
        ] == result.stderr.splitlines()

    @staticmethod
    def batch_with_a_separator(directory: Path, separator: str, suffix: str) -> Path:
        """Write a batch whose first row's note holds *separator*, then a row with a typo."""
        note = f"Jos\u00e9{separator}Lima"
        batch = directory / f"batch{suffix}"
        if suffix == ".csv":
            batch.write_text(f"amount,currency,payout_id,note\n150.00,ARS,a,{note}\n"
                             "1O0,ARS,typo,\n", encoding="utf-8")
        else:
            rows = [{"amount": "150.00", "currency": "ARS", "payout_id": "a", "note": note},
                    {"amount": "1O0", "currency": "ARS", "payout_id": "typo"}]
            batch.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                             encoding="utf-8")
        return batch

    @pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0c", "\x1e"])
    @pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
    def test_rows_are_split_at_newlines_only(
        self, tmp_path: Path, separator: str, suffix: str
    ) -> None:
        """A field holding U+2028, NEL or a form feed stays in its row; lines keep count."""
        batch = read_batch(self.batch_with_a_separator(tmp_path, separator, suffix), ["luxcore"])
        line = 3 if suffix == ".csv" else 2
        assert [(line - 1, "150.00"), (line, "amount")] == [
            (row.line, str(row.amount) if isinstance(row, Row) else row.field)
            for row in batch.rows
        ]

    def test_the_command_keeps_a_row_holding_u2028_whole(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """The same through ``payout-guard simulate``: one valid row, one named invalid row."""
        batch = self.batch_with_a_separator(tmp_path, "\u2028", ".jsonl")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        summary = parse_json(result.stdout)
        assert (2, 1, [2]) == (summary["rows"], summary["allowed_rows"],
                               [row["line"] for row in summary["invalid"]])
        refused = "invalid row: line 2, field amount: '1O0' is not an amount"
        assert ["note: ignoring columns note", refused] == [
            text.partition(": write")[0] for text in result.stderr.splitlines()]

    @pytest.mark.parametrize(("delimiter", "shown"), [(";", "';'"), ("\t", "tab")])
    def test_the_delimiter_is_read_from_the_header(
        self, tmp_path: Path, config: Path, snapshot: Path, delimiter: str, shown: str
    ) -> None:
        """A CSV separated by ';' (Excel in Latin America) or tabs is read, and says so."""
        batch = tmp_path / "batch.csv"
        rows = [["amount", "currency", "payout_id"], ["150.00", "ARS", "a"],
                ["150,00", "ARS", "b"]]
        batch.write_text("".join(delimiter.join(row) + "\n" for row in rows), encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances",
                         str(snapshot), "--json")
        assert {"ARS": {"count": 1, "total": "150.00"}} == parse_json(result.stdout)["allowed"]
        assert [
            f"note: reading {batch} with {shown} as the delimiter",
            ("invalid row: line 3, field amount: '150,00' is not an amount: write ASCII digits "
            "with at most one '.', such as '2500' or '2500.00' (no sign, spaces, '_' or "
            "exponent)"),
        ] == result.stderr.splitlines()

    def test_a_header_no_delimiter_splits_names_the_delimiters_tried(
        self, tmp_path: Path, config: Path, snapshot: Path
    ) -> None:
        """A header that no delimiter splits into amount and currency says what was tried."""
        batch = tmp_path / "batch.csv"
        batch.write_text("amount|currency\n1|ARS\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(snapshot))
        assert 2 == result.returncode
        assert ("the CSV header lacks amount, currency (read with ',' as the delimiter; ';' and "
                "tab were tried too)") in result.stderr


class TestSimulationEngine:
    @given(available=st.integers(min_value=0, max_value=10_000_00),
           amounts=st.lists(st.integers(min_value=1, max_value=3_000_00), max_size=30))
    def test_allows_exactly_what_still_fits_never_more(
        self, available: int, amounts: list[int]
    ) -> None:
        """Each payout is allowed iff it fits in what earlier allowed payouts left."""
        balance = Decimal(available).scaleb(-2)
        snap = Snapshot(taken_at=NOW, providers={"luxcore": ProviderBalances(balances=(
            BalanceSnapshot(provider="luxcore", currency="BRL", available=balance,
                            as_of=NOW),))})
        config = load_config({"providers": {"luxcore": {"api_key_env": "K"}}})
        rows = [Row(i, Decimal(a).scaleb(-2), "BRL", f"p{i}", None, None)
                for i, a in enumerate(amounts)]
        outcomes = Simulation(config, snap).run(rows)
        left, expected = balance, []
        for row in rows:
            fits = row.amount <= left
            left -= row.amount if fits else 0
            expected.append("allowed" if fits else "denied")
        assert expected == [outcome.status for outcome in outcomes]
        assert balance - left == sum(
            (o.amount or 0 for o in outcomes if o.status == "allowed"), Decimal(0))
        assert summarize(outcomes).rows == len(rows)

    def test_a_denial_lists_the_oldest_holds_that_took_the_funds(self) -> None:
        """Denied payouts show the earlier allowed payouts holding the funds, oldest first."""
        snap = Snapshot(taken_at=NOW, providers={"luxcore": ProviderBalances(balances=(
            BalanceSnapshot(provider="luxcore", currency="BRL", available=Decimal("100.00"),
                            as_of=NOW),))})
        config = load_config({"providers": {"luxcore": {"api_key_env": "K"}}})
        rows = [Row(i, Decimal("30.00"), "BRL", f"p{i}", None, None) for i in range(5)]
        with capture_decisions() as decisions:
            Simulation(config, snap).run(rows)
        denied = [d for d in decisions if not d.allowed]
        assert 2 == len(denied)
        assert [("p0", "committed"), ("p1", "committed"), ("p2", "committed")] == [
            (h.payout_id, h.state) for h in denied[-1].holds]
        assert Decimal("90.00") == denied[-1].reserved

    def test_rows_without_a_provider_are_routed(self, tmp_path: Path) -> None:
        """With several providers, a row lacking one is routed to a provider that can pay it."""
        config = load_config({"providers": {"luxcore": {"api_key_env": "K"},
                                            "luxtak": {"app_id": "A", "app_key_env": "K"}}})
        snap = read_snapshot(_snapshot(tmp_path / "s.json", {"luxtak": {"BRL": "10.00"}}))
        batch = tmp_path / "b.csv"
        batch.write_text("amount,currency,provider\n1,BRL,\n1,BRL,luxtak\n", encoding="utf-8")
        outcomes = Simulation(config, snap).run(read_batch(batch, config.provider_names).rows)
        assert [("allowed", (), "luxtak"), ("allowed", (), "luxtak")] == [
            (o.status, o.codes, o.provider) for o in outcomes]
        # LuxCore is absent from the snapshot: listed, skipped.
        assert [("luxcore", ("balance_unavailable",)), ("luxtak", ())] == [
            (c.provider, c.codes) for c in outcomes[0].candidates]

    @pytest.mark.parametrize("text", [
        '{"format": "payout-guard/balances", "version": 1, "x": ' + "1" * 5000 + "}",
        "[" * 100_000 + "]" * 100_000,
    ])
    def test_a_snapshot_too_big_to_read_exits_2_naming_the_file(
        self, tmp_path: Path, config: Path, text: str
    ) -> None:
        """A 5,000-digit number or nesting too deep in --balances is exit 2, not a crash."""
        path = tmp_path / "s.json"
        path.write_text(text, encoding="utf-8")
        batch = tmp_path / "b.csv"
        batch.write_text("amount,currency\n1.00,ARS\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(path))
        assert 2 == result.returncode
        assert f"Error: {path}: not valid JSON: " in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_snapshot_starting_with_a_byte_order_mark_reads_the_same(
        self, tmp_path: Path
    ) -> None:
        """A snapshot saved as UTF-8 with a BOM (Windows Notepad) reads like one without."""
        path = _snapshot(tmp_path / "s.json", {"luxcore": {"ARS": "10.00"}})
        marked = tmp_path / "marked.json"
        marked.write_text(path.read_text(encoding="utf-8"), encoding="utf-8-sig")
        assert read_snapshot(path) == read_snapshot(marked)

    @pytest.mark.parametrize(("field", "written"), [
        ("available", '" 1_2000 "'), ("available", '"1.2e4"'), ("frozen", '"+12000"'),
        ("total", "1.2e4"), ("available", '"12 000"'),
    ])
    def test_a_snapshot_amount_is_read_by_the_one_amount_grammar(
        self, tmp_path: Path, field: str, written: str
    ) -> None:
        """Spaces, '_', a sign or an exponent in an amount are refused as `check` refuses them."""
        balance = {"provider": "luxcore", "currency": "ARS", "available": "12000.00",
                   "as_of": "2025-03-01T12:00:00Z"}
        text = json.dumps({"format": "payout-guard/balances", "version": 1,
                           "taken_at": "2025-03-01T12:00:00Z", "providers": {"luxcore": {
                               "kind": "luxcore", "balances": [balance | {field: "X"}]}}})
        path = tmp_path / "s.json"
        path.write_text(text.replace('"X"', written), encoding="utf-8")
        with pytest.raises(ConfigurationError) as refused:
            read_snapshot(path)
        assert (str(path), f"providers.luxcore.balances.0.{field}") == (
            refused.value.source, refused.value.path)
        assert (f"{written.strip(chr(34))!r} is not an amount: write ASCII digits"
                in refused.value.message)

    def test_the_command_exits_2_for_a_snapshot_amount_it_refuses(
        self, tmp_path: Path, config: Path
    ) -> None:
        """The same through ``payout-guard simulate --balances``: exit 2, naming the amount."""
        path = _snapshot(tmp_path / "s.json", {"luxcore": {"ARS": "12000.00"}})
        path.write_text(path.read_text(encoding="utf-8").replace('"12000.00"', '"1.2e4"'),
                        encoding="utf-8")
        batch = tmp_path / "b.csv"
        batch.write_text("amount,currency\n1.00,ARS\n", encoding="utf-8")
        result = run_cli("simulate", str(batch), "-c", str(config), "--balances", str(path))
        assert 2 == result.returncode
        assert (f"Error: {path}: providers.luxcore.balances.0.available: '1.2e4' is not an "
                f"amount: write ASCII digits") in " ".join(result.stderr.split())

    def test_a_snapshot_must_be_a_snapshot(self, tmp_path: Path) -> None:
        """Any other JSON is refused, naming the file and what is expected."""
        path = tmp_path / "s.json"
        path.write_text(json.dumps({"balances": []}), encoding="utf-8")
        with pytest.raises(ConfigurationError) as caught:
            read_snapshot(path)
        assert str(path) == caught.value.source
        assert "payout-guard balances --json" in caught.value.message
