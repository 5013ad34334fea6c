"""``holds``: see and fix the holds in the reservation store a configuration names.

``holds list``, ``holds show ID``, ``holds release ID``, ``holds resolve ID --sent|--not-sent``
and ``holds rearm`` work on the store alone: no provider credential is read, only what the
store needs (``url_env``, ``dsn_env``). Each runs the flow ``PayoutGuard`` runs for the same
call (``guard._core``), so the checks and the ``payout_guard.hold`` events are the same.

Exit codes: 0 done, 1 not found or refused (a committed hold is never released; an uncertain
one is resolved, not released), 2 usage or configuration error, 3 the store did not answer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from guard._config_build import build_reservations
from guard._config_schema import GuardConfig
from guard._core import (
    FetchBalances,
    Flow,
    Step,
    list_flow,
    release_flow,
    resolve_flow,
    run,
    store_call,
)
from guard._request import parse_payout_id
from guard.cli._app import (
    EXIT_DENIED,
    EXIT_UNAVAILABLE,
    config_option,
    err_console,
    fail,
    handle_errors,
    load,
    money,
    out_console,
)
from guard.errors import ConfigurationError, GuardError, InvalidPayoutRequest, StoreUnavailable
from guard.stores import Hold, ReservationStore

__all__ = ["holds_group"]

P = ParamSpec("P")
R = TypeVar("R")

EXIT_REFUSED = EXIT_DENIED
_STATES = ("pending", "committed", "uncertain")


def _refused(message: str) -> NoReturn:
    """Stop with *message* on stderr and exit code 1 (not found, or refused)."""
    err_console().print(Text.assemble(("Refused: ", "red"), message), soft_wrap=True)
    raise SystemExit(EXIT_REFUSED)


def _store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a store that did not answer into exit 3 and a refusal into exit 1."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigurationError, InvalidPayoutRequest):
            raise  # usage and configuration: exit 2 (handle_errors)
        except StoreUnavailable as exc:
            fail(str(exc), EXIT_UNAVAILABLE)
        except GuardError as exc:
            _refused(str(exc))

    return wrapper


@contextmanager
def _store(config: GuardConfig | str) -> Iterator[ReservationStore]:
    """Yield the store the configuration (or the file at that path) names; close it after."""
    store = build_reservations(load(config) if isinstance(config, str) else config)
    try:
        yield store
    finally:
        store.close()


def _run(store: ReservationStore, flow: Flow[R]) -> R:
    """Run *flow* with its store steps done on *store* (the operator flows fetch nothing)."""

    def perform(step: Step) -> Any:
        if isinstance(step, FetchBalances):  # pragma: no cover - the operator flows never ask
            raise TypeError("the holds commands read no balance")
        return store_call(store, step)

    return run(flow, perform)


def _time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds")


def _parts(key: str) -> tuple[str, str]:
    """Return the provider and account of the balance key *key* (``balance_key``)."""
    provider, _, rest = key.partition("|")
    account = rest.rpartition("|")[0]
    return provider, account


def _note(hold: Hold, now: float) -> str:
    """Return what an operator should know of *hold* at *now*."""
    if hold.state == "pending":
        return f"expires in {max(hold.expires_at - now, 0.0):.0f}s"
    if hold.state == "uncertain":
        if hold.expires_at <= now:
            return "uncertain_ttl ended: resolve it"
        return f"counts {hold.expires_at - now:.0f}s more: resolve it"
    return "sent"


def _as_json(hold: Hold) -> dict[str, Any]:
    """Return *hold* for ``--json``: amounts as exact strings, times as ISO 8601 UTC."""
    provider, account = _parts(hold.key)
    return {
        "payout_id": hold.payout_id,
        "state": hold.state,
        "provider": provider,
        "account": account or None,
        "key": hold.key,
        "currency": hold.currency,
        "amount": money(hold.amount),
        "fee": money(hold.fee),
        "held": money(hold.held),
        "created_at": _time(hold.created_at),
        "expires_at": _time(hold.expires_at),
        "committed_at": _time(hold.committed_at),
    }


def _table(holds: list[Hold], title: str, now: float) -> Table:
    table = Table(title=title)
    for column in ("payout id", "state", "provider", "account", "held", "currency",
                   "created (UTC)", "note"):
        table.add_column(column, no_wrap=column != "payout id",
                         justify="right" if column == "held" else "left")
    colors = {"pending": "yellow", "uncertain": "red", "committed": "green"}
    for hold in holds:
        provider, account = _parts(hold.key)
        created = datetime.fromtimestamp(hold.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        # Names come from the store: escaped, so that "[...]" in an id is shown, not styled.
        table.add_row(escape(hold.payout_id), f"[{colors[hold.state]}]{hold.state}[/]",
                      escape(provider), escape(account or "-"), money(hold.held),
                      hold.currency, created, _note(hold, now))
    return table


def _show(holds: list[Hold], *, title: str, as_json: bool, now: float) -> None:
    if as_json:
        click.echo(json.dumps([_as_json(h) for h in holds], indent=2))
    else:
        out_console().print(_table(holds, title, now))


def _payout_id(value: str) -> str:
    try:
        return parse_payout_id(value)
    except InvalidPayoutRequest as exc:
        raise click.BadParameter(str(exc), param_hint="'ID'") from None


json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print JSON (amounts as strings, times ISO 8601 UTC).")


@click.group("holds")
def holds_group() -> None:
    """See and fix the holds in the configured reservation store (no provider credentials)."""


@holds_group.command("list")
@config_option
@click.option("--state", type=click.Choice(_STATES), default=None,
              help="Only holds in this state (default: all three).")
@click.option("--provider", "-p", metavar="NAME", default=None,
              help="Only holds on this configured provider's balances.")
@click.option("--currency", metavar="CODE", default=None, help="Only holds in this currency.")
@click.option("--limit", "-n", type=click.IntRange(1, 10_000), default=100, show_default=True,
              help="At most this many holds, the newest.")
@json_option
@handle_errors
@_store_errors
def list_holds(*, config_path: str, state: str | None, provider: str | None,
               currency: str | None, limit: int, as_json: bool) -> None:
    """List the holds across every balance, newest first.

    Pending holds (not past their ttl), uncertain ones (they wait for `holds resolve`) and
    committed ones the store still remembers. Reads every hold the store keeps.
    """
    config = load(config_path)
    if provider is not None:
        config.pick_provider(provider)
    now = time.time()
    with _store(config) as store:
        found = _run(store, list_flow(provider=provider, currency=currency, state=state,
                                      limit=limit, now=now))
    shown = f"{len(found)} hold{'s' if len(found) != 1 else ''}"
    _show(found, title=f"Holds ({shown}, newest first)", as_json=as_json, now=now)


@holds_group.command("show")
@config_option
@click.argument("payout_id", metavar="ID")
@json_option
@handle_errors
@_store_errors
def show(*, config_path: str, payout_id: str, as_json: bool) -> None:
    """Show the hold of payout ID (exit 1 when the store has none)."""
    wanted = _payout_id(payout_id)
    with _store(config_path) as store:
        found = store.get(wanted)
    if found is None:
        _refused(f"no hold is recorded for payout {wanted[:40]!r}")
    if as_json:
        click.echo(json.dumps(_as_json(found.public()), indent=2))
        return
    now = time.time()
    console = out_console()
    console.print(_table([found.public()], f"Hold of {escape(wanted[:40])}", now))
    if found.expired(now):
        console.print("expired: it no longer counts, and its payout id is free again")


@holds_group.command("release")
@config_option
@click.argument("payout_id", metavar="ID")
@json_option
@handle_errors
@_store_errors
def release(*, config_path: str, payout_id: str, as_json: bool) -> None:
    """Release the pending hold of payout ID, left by a worker that will not end it.

    Refused (exit 1) for a committed hold (the money left) and an uncertain one (it may
    have: use `holds resolve`).
    """
    wanted = _payout_id(payout_id)
    with _store(config_path) as store:
        released = _run(store, release_flow(wanted))
    if as_json:
        click.echo(json.dumps({"released": _as_json(released)}, indent=2))
    else:
        click.echo(f"released the pending hold of payout {wanted}: "
                   f"{money(released.held)} {released.currency} no longer held")


@holds_group.command("resolve")
@config_option
@click.argument("payout_id", metavar="ID")
@click.option("--sent/--not-sent", "sent", default=None,
              help="Whether the provider says the payout left (one is required).")
@json_option
@handle_errors
@_store_errors
def resolve(*, config_path: str, payout_id: str, sent: bool | None, as_json: bool) -> None:
    """End the uncertain hold of payout ID once the provider says whether it left.

    --sent: the hold becomes committed (it counts until a balance shows it); --not-sent: it is
    released. Refused (exit 1) when the hold is not uncertain.
    """
    if sent is None:
        raise click.UsageError("say what the provider says: --sent or --not-sent")
    wanted = _payout_id(payout_id)
    with _store(config_path) as store:
        found = _run(store, resolve_flow(wanted, sent=sent, now=time.time()))
    if as_json:
        click.echo(json.dumps({"payout_id": wanted, "sent": sent,
                               "hold": None if found is None else _as_json(found)}, indent=2))
    elif sent:
        click.echo(f"payout {wanted} resolved as sent: its hold is committed")
    else:
        click.echo(f"payout {wanted} resolved as not sent: its hold is released")


@holds_group.command("rearm")
@config_option
@handle_errors
@_store_errors
def rearm(*, config_path: str) -> None:
    """Accept the store as it is now, after it lost its holds (Redis restarted empty).

    Checks the server again and, for Redis, rebuilds the ledgers of keys that lost theirs.
    Do it once you know which payouts were in flight (ask the provider): their holds are gone.
    A running process that noticed the loss keeps denying until it calls rearm() itself (or
    restarts): it alone knows what it remembered of the store.
    """
    with _store(config_path) as store:
        store.rearm()
    click.echo("store rearmed: checks and reserves use it again")
