"""``check``, ``balances`` and ``rules validate``: one decision, every balance, a config's rules."""

from __future__ import annotations

import os

import click
from rich.markup import escape
from rich.table import Table

from guard._config_schema import GuardConfig
from guard._request import optional_text, parse_payout_id
from guard._sync import PayoutGuard
from guard.cli._app import (
    EXIT_CONFIG,
    EXIT_DENIED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    AmountCommand,
    amount_argument,
    bad_parameter,
    config_option,
    currency_argument,
    err_console,
    handle_errors,
    load,
    money,
    out_console,
)
from guard.cli._snapshot import fetch_snapshot
from guard.errors import InvalidPayoutRequest
from rules import describe

__all__ = ["balances", "check", "rules_group"]


@click.command(cls=AmountCommand)
@click.argument("amount")
@click.argument("currency")
@config_option
@click.option("--provider", "-p", metavar="NAME",
              help="Check at this provider only (default: route across every provider).")
@click.option("--fee", metavar="AMOUNT", help="The provider's fee on top of the amount.")
@click.option("--payout-id", metavar="ID", help="Your id for the payout (shown in the decision).")
@click.option("--account", metavar="ACCOUNT", help="Account, for providers that report several.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@handle_errors
def check(*, amount: str, currency: str, config_path: str, provider: str | None, fee: str | None,
          payout_id: str | None, account: str | None, as_json: bool) -> None:
    """Decide whether a payout of AMOUNT CURRENCY may go out now, and say why.

    With several providers configured, the payout is routed: the explanation names the
    chosen provider and lists every candidate (--json includes them). Exit codes: 0 allowed,
    1 denied, 2 usage or configuration error (the provider rejected the credentials too), 3
    provider unavailable (no candidate's balance could be read).
    """
    # Each argument is read by the library's own parsers, before anything is loaded or fetched,
    # so that an error names the argument it is about.
    code = currency_argument(currency)
    value = amount_argument(amount, code)
    fee_value = None if fee is None else amount_argument(fee, code, "'--fee'", field="fee",
                                                         allow_zero=True)
    try:
        payout_id = None if payout_id is None else parse_payout_id(payout_id)
    except InvalidPayoutRequest as exc:
        raise bad_parameter("'--payout-id'", exc, "payout_id") from None
    try:
        account = optional_text(account, "account")
    except InvalidPayoutRequest as exc:
        raise bad_parameter("'--account'", exc, "account") from None
    with PayoutGuard.from_config(load(config_path), provider=provider) as guard:
        decision = guard.check(value, code, fee=fee_value, payout_id=payout_id, account=account)
    if as_json:
        click.echo(decision.model_dump_json(indent=2))
    else:
        click.echo(decision.explain())
    if decision.allowed:
        raise SystemExit(EXIT_OK)
    if decision.candidates:
        # Routed: an outage is the answer only when no candidate could be read.
        unread = all("balance_unavailable" in c.codes for c in decision.candidates)
    else:
        unread = "balance_unavailable" in decision.codes
    if unread and any(r.details.get("cause") == "credentials" for r in decision.reasons):
        raise SystemExit(EXIT_CONFIG)  # rejected credentials: configuration, not an outage
    raise SystemExit(EXIT_UNAVAILABLE if unread else EXIT_DENIED)


@click.command()
@config_option
@click.option("--provider", "-p", "providers", metavar="NAME", multiple=True,
              help="Only this provider (repeatable; default: every configured provider).")
@click.option("--json", "as_json", is_flag=True,
              help="Print a balance snapshot document (what simulate --balances reads).")
@handle_errors
def balances(*, config_path: str, providers: tuple[str, ...], as_json: bool) -> None:
    """Show every provider's balances: available, frozen, total, as of.

    `balances --json > snapshot.json` saves a snapshot that `simulate PAYOUTS --balances
    snapshot.json` reads. Every provider is shown even when one could not be built (a
    missing environment variable) or read (an outage): its row says why. Exit code 0 when
    every provider was read, 3 when one was not (2 when a provider rejected the credentials).
    """
    config = load(config_path)
    for name in providers:
        config.pick_provider(name)
    snapshot = fetch_snapshot(config, providers or None)
    failed = [name for name, entry in snapshot.providers.items() if entry.error is not None]
    if as_json:
        click.echo(snapshot.dumps())
    else:
        table = Table(title=f"Balances ({snapshot.taken_at:%Y-%m-%d %H:%M:%SZ})")
        table.add_column("provider", no_wrap=True)
        table.add_column("currency", no_wrap=True)
        for column in ("available", "frozen", "total"):
            table.add_column(column, justify="right", no_wrap=True)
        table.add_column("as of (UTC)", no_wrap=True)
        for name, entry in snapshot.providers.items():
            for s in entry.balances:
                table.add_row(name, s.currency, money(s.available), money(s.frozen),
                              money(s.total), f"{s.as_of:%Y-%m-%d %H:%M:%S}")
            if not entry.balances and entry.error is None:
                table.add_row(name, "-", "-", "-", "-", "(no balances reported)")
            if entry.error is not None:
                table.add_row(name, "-", "-", "-", "-", f"unavailable: {escape(entry.error)}")
        out_console().print(table)
    for name in failed:
        # The error quotes the provider: its text must not be read as rich markup.
        error = escape(snapshot.providers[name].error or "")
        err_console().print(f"[red]{name}: unavailable[/red]: {error}")
    if any(snapshot.providers[name].cause == "credentials" for name in failed):
        raise SystemExit(EXIT_CONFIG)  # rejected credentials: configuration, not an outage
    if failed:
        raise SystemExit(EXIT_UNAVAILABLE)


@click.group("rules")
def rules_group() -> None:
    """Work with the rules of a configuration."""


def _describe_config(config: GuardConfig, path: str) -> str:
    lines = [f"{path}: valid", f"mode: {config.mode}"
             + ("  (fail_open: allows when no balance can be read)" if config.fail_open else "")]
    if config.providers:
        lines.append("providers:")
    for name, spec in config.providers.items():
        default = "  (default)" if name == config.default_provider or (
            config.default_provider is None and len(config.providers) == 1) else ""
        lines.append(f"  {name}: {spec.kind} at {spec.base_url or 'its default URL'}{default}")
    if len(config.providers) > 1:
        routes = "".join(f"; {currency}: {', '.join(route)}"
                         for currency, route in config.routing.routes.items())
        lines.append(f"routing: {config.routing.policy} over "
                     f"{', '.join(config.pick_providers())}{routes}")
    env = config.env_vars()
    if env:
        lines.append("environment variables read when a guard is built:")
        lines.extend(f"  {var} ({where}): {'set' if os.environ.get(var) else 'NOT SET'}"
                     for var, where in env.items())
    store = config.reservations
    lines.append(f"reservations: {store.store}"
                 + (f" at {config.resolve_path(store.path)}" if store.path else "")
                 + "; settle_lag " + (f"{store.settle_lag}s" if store.settle_lag is not None
                                      else "per provider")
                 + f", hold_ttl {store.hold_ttl}s;"
                 + f" balance cache ttl {config.cache.ttl}s")
    lines.append("rules (the guard always checks sufficient funds too):")
    lines.extend(f"  {line}" for line in describe(config.ruleset).splitlines())
    return "\n".join(lines)


@rules_group.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
@handle_errors
def validate(file: str) -> None:
    """Load and validate the configuration FILE; print its rules in plain words.

    Exit code 0 when valid, 2 (naming the file, the key and what is accepted) when not.
    """
    config = load(file)
    click.echo(_describe_config(config, file))
