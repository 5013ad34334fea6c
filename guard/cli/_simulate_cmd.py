"""``simulate``: dry-run a batch of payouts against live balances or a saved snapshot."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.table import Table

from guard._config_schema import GuardConfig
from guard.cli._app import (
    EXIT_OK,
    EXIT_UNAVAILABLE,
    config_option,
    err_console,
    handle_errors,
    load,
    money,
    out_console,
)
from guard.cli._batch import ROW, InvalidRow, Row, read_batch
from guard.cli._simulation import Outcome, Simulation, Summary, summarize, write_report
from guard.cli._snapshot import Snapshot, fetch_snapshot, read_snapshot

__all__ = ["simulate"]

_PROGRESS_ABOVE = 300
_SHOWN_INVALID = 20
EXIT_INVALID_ROWS = 1


@contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None] | None]:
    """Yield a function advancing a progress bar on stderr, or ``None`` when disabled."""
    if not enabled:
        yield None
        return
    from rich.progress import (  # noqa: PLC0415 - only batches on a terminal need it
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console(), transient=True,
    ) as progress:
        task = progress.add_task("simulating", total=total)
        yield lambda: progress.advance(task)


def _providers_needed(rows: tuple[Row | InvalidRow, ...], config: GuardConfig,
                      pinned: str | None) -> list[str]:
    """Return the providers whose balances the batch needs: every one, when a row is routed."""
    named = {row.provider for row in rows if isinstance(row, Row) and row.provider}
    if any(isinstance(r, Row) and r.provider is None for r in rows):
        if pinned is None:
            return list(config.provider_names)
        named.add(pinned)
    return sorted(named)


def _render(summary: Summary) -> None:
    console = out_console()
    allowed = Table(title=f"Simulated {summary.rows} payouts")
    allowed.add_column("currency", no_wrap=True)
    allowed.add_column("allowed", justify="right")
    allowed.add_column("total allowed", justify="right", no_wrap=True)
    for currency, (count, total) in sorted(summary.allowed.items()):
        allowed.add_row(currency, str(count), money(total))
    if not summary.allowed:
        allowed.add_row("-", "0", "-")
    console.print(allowed)
    if summary.denied_rows:
        denied = Table(title=f"Denied: {summary.denied_rows} payouts")
        denied.add_column("reason code", no_wrap=True)
        denied.add_column("payouts", justify="right")
        for code, count in sorted(summary.denied.items(), key=lambda item: (-item[1], item[0])):
            denied.add_row(code, str(count))
        console.print(denied)
    else:
        console.print("Denied: 0 payouts")
    if summary.duplicate_rows:
        console.print(f"{summary.duplicate_rows} rows repeat a payout id already held "
                      "(not counted twice)")
    if summary.invalid:
        console.print(f"{len(summary.invalid)} rows could not be read (see stderr)")


@click.command()
@click.argument("payouts", type=click.Path(dir_okay=False))
@config_option
@click.option("--balances", "snapshot_path", metavar="SNAPSHOT.json",
              type=click.Path(dir_okay=False),
              help="Start from a saved snapshot (`balances --json`) instead of live balances.")
@click.option("--provider", "-p", metavar="NAME",
              help="Provider for rows without one (default: each such row is routed across "
                   "the providers).")
@click.option("--report", metavar="OUT.csv|OUT.json", type=click.Path(dir_okay=False),
              help="Write the per-payout report (.csv, or .json with the summary).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--progress/--no-progress", default=None,
              help=f"Show a progress bar (default: on a terminal, above {_PROGRESS_ABOVE} rows).")
@handle_errors
def simulate(*, payouts: str, config_path: str, snapshot_path: str | None, provider: str | None,
             report: str | None, as_json: bool, progress: bool | None) -> None:
    """Dry-run the batch PAYOUTS in order, consuming funds as each payout is allowed.

    PAYOUTS is CSV with a header, or JSON lines: amount, currency (required), payout_id,
    provider, fee. Balances are read once (or taken from --balances) and never refreshed;
    nothing is sent anywhere, and the configured mode is ignored (a simulation always
    consumes funds). A row without a provider is routed as the guard would route it (the
    report names the chosen provider and the candidates). This is how to try a rule change
    on last week's payouts before enabling it.

    Exit codes: 0 done, 1 done but some rows could not be read (each is reported), 2 usage
    or configuration error, 3 a provider's balance was unavailable.
    """
    config = load(config_path)
    if provider is not None:
        config.pick_provider(provider)
    batch = read_batch(payouts, config.provider_names)
    if batch.delimiter not in {None, ","}:
        shown = "tab" if batch.delimiter == "\t" else repr(batch.delimiter)
        click.echo(f"note: reading {payouts} with {shown} as the delimiter", err=True)
    if batch.ignored_columns:
        err_console().print(f"note: ignoring columns {', '.join(batch.ignored_columns)}")
    snapshot: Snapshot
    if snapshot_path is not None:
        snapshot = read_snapshot(snapshot_path)
    else:
        snapshot = fetch_snapshot(config, _providers_needed(batch.rows, config, provider))
    unavailable = sorted(n for n, e in snapshot.providers.items() if e.error is not None)
    for name in unavailable:
        err_console().print(f"warning: {name} balances unavailable; its payouts are denied "
                            f"(balance_unavailable): {snapshot.providers[name].error}")
    simulation = Simulation(config, snapshot, provider=provider)
    show = progress if progress is not None else (
        sys.stderr.isatty() and len(batch.rows) > _PROGRESS_ABOVE
    )
    with _progress(len(batch.rows), show) as tick:
        outcomes = simulation.run(batch.rows, tick)
    summary = summarize(outcomes)
    _report_invalid(summary)
    if report is not None:
        write_report(report, outcomes, summary)
    if as_json:
        click.echo(json.dumps(summary.document(), indent=2))
    else:
        _render(summary)
    raise SystemExit(_exit_code(outcomes, summary, unavailable))


def _report_invalid(summary: Summary) -> None:
    # Plain lines (not rich): one per row, never wrapped, easy to grep.
    for outcome in summary.invalid[:_SHOWN_INVALID]:
        field = outcome.codes[0] if outcome.codes else ROW
        where = "" if field == ROW else f", field {field}"
        message = outcome.message.removeprefix(f"{field}: ")
        click.echo(f"invalid row: line {outcome.line}{where}: {message}", err=True)
    if len(summary.invalid) > _SHOWN_INVALID:
        click.echo(f"... and {len(summary.invalid) - _SHOWN_INVALID} more invalid rows "
                   "(all are in --report)", err=True)


def _exit_code(outcomes: list[Outcome], summary: Summary, unavailable: list[str]) -> int:
    if unavailable and any(o.provider in unavailable for o in outcomes):
        return EXIT_UNAVAILABLE
    return EXIT_INVALID_ROWS if summary.invalid else EXIT_OK
