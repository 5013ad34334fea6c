"""The README's code and the example scripts run, so they cannot rot (STYLE.md 21)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

from tests._postgres_server import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def _without_timestamps(text: str) -> str:
    return re.sub(r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", "as of <time>", text)


class TestReadme:
    def test_python_blocks_run_in_order_and_print_what_the_readme_shows(self) -> None:
        """Every python block runs; the quick start prints exactly the report shown after it."""
        namespace: dict[str, object] = {"__name__": "readme"}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            for block in _blocks("python"):
                exec(compile(block, "README.md", "exec"), namespace)

        report = _without_timestamps(_blocks("text")[0].strip())
        assert report in _without_timestamps(printed.getvalue())

    def test_shows_the_two_setup_commands(self) -> None:
        """The demo and test commands named in the README exist and are executable."""
        commands = re.findall(r"^bash (\.ci/\w+)", README, flags=re.MULTILINE)
        assert [".ci/demo", ".ci/test"] == commands
        assert all((ROOT / c).is_file() for c in commands)

    def test_rule_table_names_every_builtin(self) -> None:
        """Each built-in rule is documented in the README."""
        import rules

        for name in ("SufficientFunds", "ReserveMargin", "FrozenFunds", "CurrencyMinimums",
                     "MaxPayout", "MaxBalanceAge"):
            assert hasattr(rules, name)
            assert f"`{name}(" in README


def _run(script: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / script)],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )
    return result.stdout


class TestExamples:
    def test_quickstart_prints_an_allowed_and_a_denied_decision(self) -> None:
        """examples/quickstart.py shows allowed and denied decisions with their reasons."""
        out = _run("quickstart.py")

        assert "ALLOWED: payout 2500.00 ARS via luxcore" in out
        assert "DENIED: payout 11500.00 ARS via luxcore" in out
        assert "x reserve_margin:" in out
        assert "x below_minimum_payout:" in out
        assert "largest ARS payout allowed now: 11000.00" in out

    def test_decorator_example_blocks_the_payout_that_would_overdraw(self) -> None:
        """examples/decorator.py sends two payouts and stops the third before the provider."""
        out = _run("decorator.py")

        assert "po_3 not sent: insufficient_funds, reserve_margin" in out
        assert "sent: ['po_1', 'po_2']" in out

    def test_postgres_outbox_holds_and_records_in_one_transaction(
        self, postgres_server: PostgresServer
    ) -> None:
        """examples/postgres_outbox.py: a commit keeps hold and row, a rollback neither."""
        out = _run("postgres_outbox.py", {"PAYOUT_GUARD_PG_DSN": postgres_server.dsn()})

        assert "po_1: hold=committed payout_row=True" in out
        assert "po_2: hold=None payout_row=False" in out
        assert "po_3 denied: insufficient_funds" in out
        assert "po_3: hold=None payout_row=False" in out
