"""``replay``: judge every logged decision again with a configuration's rules; say what changes."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from guard._records import DecisionRecord, count_decisions, read_decisions
from guard._replay import Replayed, Replayer, ReplaySummary
from guard.cli._app import config_option, err_console, fail, handle_errors, load, out_console
from guard.errors import GuardError

__all__ = ["replay"]

# Below this many records a replay is over before a progress bar would help.
_PROGRESS_FROM = 2_000
_REPORT_COLUMNS = (
    "decision_id", "evaluated_at", "operation", "payout_id", "amount", "currency", "change",
    "before", "after", "before_codes", "after_codes", "before_provider", "after_provider",
    "before_max_payable", "after_max_payable",
)


def _records(paths: tuple[str, ...]) -> Iterator[DecisionRecord]:
    for path in paths:
        yield from read_decisions(path)


def _verdict(allowed: bool) -> str:
    return "allowed" if allowed else "denied"


def _report_row(replayed: Replayed) -> list[str]:
    before, after = replayed.before, replayed.after
    return [
        before.decision_id, before.evaluated_at.isoformat(), replayed.record.operation,
        before.payout_id or "", str(before.amount), before.currency, replayed.change,
        _verdict(before.allowed), _verdict(after.allowed), " ".join(before.codes),
        " ".join(after.codes), before.provider, after.provider, str(before.max_payable),
        str(after.max_payable),
    ]


def _open_report(path: str) -> TextIO:
    """Open the --report file; one that cannot be written is exit code 2, as for simulate."""
    try:
        return Path(path).open("w", newline="", encoding="utf-8")
    except OSError as exc:
        fail(f"{path}: cannot write the report: {exc.strerror or exc}")


def _render(summary: ReplaySummary, logs: tuple[str, ...]) -> None:
    console = out_console()
    console.print(f"Replayed {summary.total} decision(s) from {', '.join(logs)}")
    table = Table(show_header=True)
    for column in ("change", "reason", "currency", "count", "total"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("count", "total")
                         else "left")
    table.add_row("unchanged", "", "", str(summary.unchanged), "")
    table.add_row("  of which carried over", "not the rules' to make", "", str(summary.carried),
                  "")
    table.add_row("same verdict, other reasons", "", "", str(summary.reasons_changed), "")
    table.add_row("[red]allowed -> denied[/red]", "", "", str(summary.newly_denied), "")
    for code, by_currency in sorted(summary.allowed_to_denied.items()):
        for currency, (count, total) in sorted(by_currency.items()):
            table.add_row("", code, currency, str(count), f"{total}")
    table.add_row("[green]denied -> allowed[/green]", "", "", str(summary.newly_allowed), "")
    for currency, (count, total) in sorted(summary.denied_to_allowed.items()):
        table.add_row("", "", currency, str(count), f"{total}")
    console.print(table)


@click.command()
@click.argument("logs", nargs=-1, required=True, metavar="LOG...",
                type=click.Path(exists=True, dir_okay=False))
@config_option
@click.option("--report", "report_path", metavar="CSV", type=click.Path(dir_okay=False),
              help="Write each decision that changed (one row each) to this CSV file.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def replay(*, logs: tuple[str, ...], config_path: str, report_path: str | None,
           as_json: bool) -> None:
    """Judge every decision in LOG again, on exactly its facts, with the rules of --config.

    LOG is a decision log written by JsonLinesDecisionLog (rotated files: name each, oldest
    first) or SqliteDecisionLog. Prints what is unchanged, what was allowed and would now be
    denied (by reason code, with count and total per currency) and what was denied and would
    now be allowed. Decisions no rule made (a duplicate payout id, a store or provider that
    could not answer) are carried over unchanged. Exit codes: 0 done, 2 usage, configuration,
    unreadable log or a --report file that cannot be written.
    """
    replayer = Replayer.from_config(load(config_path))
    summary = ReplaySummary()
    console = err_console()
    total = 0
    if console.is_terminal:  # the records are counted only for a bar someone will see
        try:
            total = sum(count_decisions(path) for path in logs)
        except (OSError, GuardError) as exc:
            fail(f"cannot read the decision log: {exc}")
    report_file = None
    writer = None
    if report_path is not None:
        report_file = _open_report(report_path)
        writer = csv.writer(report_file)
        writer.writerow(_REPORT_COLUMNS)
    progress = Progress(
        TextColumn("replaying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, transient=True, disable=total < _PROGRESS_FROM,
    )
    try:
        with progress:
            task = progress.add_task("replay", total=total)
            for replayed in replayer.replay_all(_records(logs)):
                summary.add(replayed)
                if writer is not None and replayed.change != "unchanged":
                    writer.writerow(_report_row(replayed))
                progress.advance(task)
    except GuardError as exc:
        fail(str(exc))
    finally:
        if report_file is not None:
            report_file.close()
    if as_json:
        click.echo(json.dumps(summary.as_data(), indent=2))
    else:
        _render(summary, logs)
