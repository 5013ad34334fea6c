"""``payout-guard replay LOG --config NEW.toml``: a backtest of new rules on logged traffic."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from guard import read_decisions
from guard._replay import Replayer, ReplaySummary
from tests._cli import parse_json, run_cli
from tests._replay_traffic import RULES_TOML, traffic

LOWER = RULES_TOML.replace('BRL = "900"', 'BRL = "500"')


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay-cli") / "decisions.jsonl"
    traffic(path, 2_000, seed=11)
    return path


def config(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "new.toml"
    path.write_text(rules, encoding="utf-8")
    return path


class TestReplayCommand:
    def test_the_same_rules_change_nothing(self, log: Path, tmp_path: Path) -> None:
        result = run_cli("replay", str(log), "--config", str(config(tmp_path, RULES_TOML)),
                         "--json")
        assert 0 == result.returncode, result.stderr
        data = parse_json(result.stdout)
        assert (2_000, 2_000, 0, 0) == (data["total"], data["unchanged"],
                                        data["allowed_to_denied"]["count"],
                                        data["denied_to_allowed"]["count"])

    def test_a_lower_maximum_is_reported_by_code_with_count_and_total(
        self, log: Path, tmp_path: Path
    ) -> None:
        summary = ReplaySummary()
        for replayed in Replayer.from_config(config(tmp_path, LOWER)).replay_all(
            read_decisions(log)
        ):
            summary.add(replayed)
        count, total = summary.allowed_to_denied["above_maximum_payout"]["BRL"]
        assert count > 0
        result = run_cli("replay", str(log), "--config", str(config(tmp_path, LOWER)), "--json")
        assert 0 == result.returncode, result.stderr
        data = parse_json(result.stdout)
        assert {"count": count, "total": str(total)} == (
            data["allowed_to_denied"]["by_code"]["above_maximum_payout"]["BRL"]
        )
        text = run_cli("replay", str(log), "--config", str(config(tmp_path, LOWER)))
        assert 0 == text.returncode, text.stderr
        assert "allowed -> denied" in text.stdout
        assert f"{count}" in text.stdout
        assert f"{total}" in text.stdout

    def test_the_report_lists_each_changed_decision(self, log: Path, tmp_path: Path) -> None:
        report = tmp_path / "out.csv"
        result = run_cli("replay", str(log), "--config", str(config(tmp_path, LOWER)),
                         "--report", str(report), "--json")
        assert 0 == result.returncode, result.stderr
        data = parse_json(result.stdout)
        with report.open(encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert data["total"] - data["unchanged"] == len(rows)
        denied = [r for r in rows if r["change"] == "allowed_to_denied"]
        assert data["allowed_to_denied"]["count"] == len(denied)
        assert all(Decimal(r["amount"]) > 500 for r in denied)
        assert all("above_maximum_payout" in r["after_codes"] for r in denied)

    def test_a_report_that_cannot_be_written_exits_2_as_for_simulate(
        self, log: Path, tmp_path: Path
    ) -> None:
        """--report into a missing directory is a usage error naming the path, no traceback."""
        report = tmp_path / "missing" / "out.csv"
        result = run_cli("replay", str(log), "--config", str(config(tmp_path, RULES_TOML)),
                         "--report", str(report))
        assert 2 == result.returncode
        assert [f"Error: {report}: cannot write the report: No such file or directory"] == (
            result.stderr.splitlines())

    def test_a_line_that_is_not_a_record_is_named(self, log: Path, tmp_path: Path) -> None:
        broken = tmp_path / "broken.jsonl"
        lines = log.read_text(encoding="utf-8").splitlines()[:3]
        broken.write_text("\n".join([*lines, '{"decision": 1}']) + "\n", encoding="utf-8")
        result = run_cli("replay", str(broken), "--config", str(config(tmp_path, RULES_TOML)))
        assert 2 == result.returncode
        assert "broken.jsonl:4 is not a decision record" in result.stderr

    def test_a_sqlite_log_replays_the_same(self, tmp_path: Path) -> None:
        """The SQLite sink's database is read like the JSON-lines file."""
        path = tmp_path / "decisions.db"
        made = traffic(path, 300, seed=3, sqlite=True)
        assert made == [r.decision for r in read_decisions(path)]
        result = run_cli("replay", str(path), "--config", str(config(tmp_path, RULES_TOML)),
                         "--json")
        assert 0 == result.returncode, result.stderr
        assert (300, 300) == (parse_json(result.stdout)["total"],
                              parse_json(result.stdout)["unchanged"])
