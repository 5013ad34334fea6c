"""``health``: does every provider answer a balance request, and does the store answer a read?"""

from __future__ import annotations

import click
from rich.table import Table

from guard._health import Health, ProviderHealth
from guard._sync import PayoutGuard
from guard.cli._app import EXIT_DENIED, EXIT_OK, config_option, handle_errors, load, out_console

__all__ = ["health"]

EXIT_UNHEALTHY = EXIT_DENIED


def _merged(reports: list[Health]) -> Health:
    """Return one report of every provider; the store as the first guard that failed saw it."""
    providers = {name: part for report in reports for name, part in report.providers.items()}
    store = next((r.store for r in reports if not r.store.ok), reports[0].store)
    return Health(providers=providers, store=store, checked_at=reports[-1].checked_at)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s ago"


def _budget(part: ProviderHealth) -> str:
    """Return the budget column: its size, and how long it is spent for (if it is)."""
    if part.requests_per_minute is None:
        return "unlimited"
    wait = part.budget_wait_seconds
    spent = f", spent for {wait:.0f}s" if wait else ""
    return f"{part.requests_per_minute}/min{spent}"


def _render(report: Health) -> None:
    table = Table(title=f"Health ({report.checked_at:%Y-%m-%d %H:%M:%SZ})")
    for column in ("part", "status", "last request", "last error", "budget"):
        table.add_column(column, no_wrap=True)
    for name, part in report.providers.items():
        status = "[green]ok[/green]" if part.healthy else "[red]FAILING[/red]"
        error = "-" if part.last_error is None else (
            f"{part.last_error} ({_seconds(part.last_error_age_seconds)})"
        )
        table.add_row(name, status, _seconds(part.age_seconds), error, _budget(part))
    store = report.store
    table.add_row(f"store ({store.store})",
                  "[green]ok[/green]" if store.ok else "[red]FAILING[/red]", "-",
                  store.error or "-", "-")
    console = out_console()
    console.print(table)
    console.print("healthy" if report.healthy else "[red]UNHEALTHY[/red]")


@click.command()
@config_option
@click.option("--provider", "-p", "providers", metavar="NAME", multiple=True,
              help="Only this provider (repeatable; default: every configured provider).")
@click.option("--json", "as_json", is_flag=True, help="Print the health report as JSON.")
@handle_errors
def health(*, config_path: str, providers: tuple[str, ...], as_json: bool) -> None:
    """Ask every provider for its balances once, and the reservation store for one read.

    Shows, per provider, whether the request succeeded, and the error class when it did not;
    and whether the store answered. Exit codes: 0 all healthy, 1 a provider or the store is
    not, 2 usage or configuration error.
    """
    config = load(config_path)
    for name in providers:
        config.pick_provider(name)
    reports = []
    for name in providers or config.provider_names:
        with PayoutGuard.from_config(config, provider=name) as guard:
            reports.append(guard.health(probe=True))
    if not reports:  # pragma: no cover - a configuration always names a provider
        raise click.UsageError("the configuration names no provider")
    report = _merged(reports)
    if as_json:
        click.echo(report.model_dump_json(indent=2))
    else:
        _render(report)
    raise SystemExit(EXIT_OK if report.healthy else EXIT_UNHEALTHY)
