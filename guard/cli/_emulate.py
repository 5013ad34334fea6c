"""``demo`` (the guard against three emulated providers) and ``emulate`` (one provider)."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

import click
from rich.table import Table

from guard._text import quoted
from guard.cli._app import (
    EXIT_DENIED,
    EXIT_OK,
    amount_argument,
    currency_argument,
    err_console,
    fail,
    handle_errors,
    out_console,
)

if TYPE_CHECKING:
    from guard.cli._demo import DemoResult
    from guard.testing.emulators._base import EmulatorBase

__all__ = ["demo", "emulate"]

_DEFAULT_BALANCES = {
    "luxtak": {"BRL": "10000.00", "USD": "551.38"},
    "luxcore": {"ARS": "12000.00", "MXN": "5000.00"},
    "pagsmile": {"BRL": "5000.00"},
}


def _row(number: int, result: DemoResult) -> tuple[str, ...]:
    decision = result.decision
    verdict = "[green]ALLOWED[/green]" if decision.allowed else "[red]DENIED[/red]"
    if decision.allowed:
        why = f"max payable now {decision.max_payable} {decision.currency}"
        codes = "-"
    else:
        codes = "\n".join(decision.codes)
        why = "\n".join(reason.message for reason in decision.reasons)
    if decision.candidates:
        # Routed: say what each candidate could do, in the order tried.
        why += "\n" + "\n".join(
            f"{c.provider}: {'allowed' if c.allowed else 'denied'}"
            f"{' (' + ', '.join(c.codes) + ')' if c.codes else ''}, "
            f"max payable {c.max_payable} {decision.currency}"
            for c in decision.candidates
        )
    payout = f"{decision.amount} {decision.currency}"
    return (str(number), result.title, decision.provider, payout, verdict, codes, why)


@click.command()
@click.option("--details", is_flag=True, help="Also print each decision's full explanation.")
@click.option("--show-config", is_flag=True,
              help="Print the built-in configuration (TOML) the demo loads, and exit.")
@handle_errors
def demo(*, details: bool, show_config: bool) -> None:
    """Run the guard against the three emulated providers: no credentials needed.

    Starts Luxtak, LuxCore and Pagsmile emulators on 127.0.0.1 with sample balances, builds
    guards from a built-in configuration through the real fetchers (credentials passed in
    environment variables), and shows one decision per scenario with its reasons.
    """
    # The emulators start threads and servers: import them only for the commands using them.
    from guard.cli._demo import demo_config_text, run_demo  # noqa: PLC0415

    if show_config:
        click.echo(demo_config_text(), nl=False)
        return
    err_console().print("starting the Luxtak, LuxCore and Pagsmile emulators on 127.0.0.1 ...")
    results = run_demo()
    table = Table(title="payout-guard demo: one payout per scenario", show_lines=True)
    for column in ("#", "scenario", "provider", "payout", "decision", "reason codes"):
        table.add_column(column, no_wrap=column != "scenario")
    table.add_column("why")
    for number, result in enumerate(results, start=1):
        table.add_row(*_row(number, result))
    console = out_console()
    console.print(table)
    if details:
        for number, result in enumerate(results, start=1):
            console.print(f"\n[bold]{number}. {result.title}[/bold]")
            console.print(result.decision.explain(), markup=False)
    unexpected = [r for r in results if r.expected not in (
        ("allowed",) if r.decision.allowed else r.decision.codes)]
    for result in unexpected:
        err_console().print(f"unexpected: {result.title}: expected {result.expected}")
    raise SystemExit(EXIT_DENIED if unexpected else EXIT_OK)


def _amounts(specs: tuple[str, ...], option: str) -> dict[str, str]:
    hint = f"'{option}'"
    amounts: dict[str, str] = {}
    for spec in specs:
        currency, sep, amount = spec.partition("=")
        if not sep:
            raise click.BadParameter(
                f"{quoted(spec)}: expected CURRENCY=AMOUNT, such as BRL=1000.00", param_hint=hint
            )
        code = currency_argument(currency, hint)
        amounts[code] = format(amount_argument(amount, code, hint, allow_zero=True), "f")
    return amounts



def _emulator(provider: str, balances: dict[str, str], frozen: dict[str, str],
              port: int) -> EmulatorBase:
    from guard.testing.emulators import (  # noqa: PLC0415 - see demo()
        LuxCoreEmulator,
        LuxtakEmulator,
        PagsmileEmulator,
    )

    if provider == "luxtak":
        return LuxtakEmulator(balances=balances, port=port)
    if provider == "pagsmile":
        return PagsmileEmulator(balances=balances, port=port)
    luxcore = LuxCoreEmulator(balances=balances, port=port)
    for currency, amount in frozen.items():
        luxcore.set_balance(currency, available=balances.get(currency, "0"), frozen=amount)
    return luxcore


_CREDENTIALS = {"luxtak": ("app_id", "app_key"), "luxcore": ("api_key",),
                "pagsmile": ("app_id", "security_key")}


def _describe(provider: str, emulator: EmulatorBase, faults: tuple[str, ...],
              times: int) -> str:
    prefix = f"PAYOUT_GUARD_{provider.upper()}"
    secrets = {key: str(getattr(emulator, key)) for key in _CREDENTIALS[provider]}
    lines = [f"{provider} emulator running", f"url: {emulator.url}"]
    lines += [f"{key}: {value}" for key, value in secrets.items()]
    if faults:
        each = ", then ".join(f"{kind.lower()} x{times}" for kind in faults)
        lines.append(f"faults: the next balance requests get {each}; then it answers normally")
    lines += ["", "# for your shell:"]
    lines += [f"export {prefix}_{key.upper()}={value}" for key, value in secrets.items()]
    lines += ["", "# for your configuration file:", f"[providers.{provider}]",
              f'base_url = "{emulator.url}"']
    lines += [f'{key}_env = "{prefix}_{key.upper()}"' for key in secrets]
    lines += ["", "Press Ctrl-C to stop."]
    return "\n".join(lines)


@click.command()
@click.argument("provider", type=click.Choice(["luxtak", "luxcore", "pagsmile"]))
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port on 127.0.0.1 (0 picks a free one).")
@click.option("--balance", "balance_specs", multiple=True, metavar="CUR=AMOUNT",
              help="Available balance, major units (repeatable), e.g. --balance BRL=1000.00.")
@click.option("--frozen", "frozen_specs", multiple=True, metavar="CUR=AMOUNT",
              help="Frozen funds (LuxCore only; repeatable).")
@click.option("--fail", "faults", multiple=True, metavar="KIND",
              help="Make the next balance request fail this way (repeatable, in order), such as "
                   "http_503, rate_limit, slow, drop or malformed_json; a wrong KIND lists all.")
@click.option("--times", type=click.IntRange(min=1), default=None, metavar="N",
              help="How many balance requests each --fail fault answers  [default: 1].")
@handle_errors
def emulate(*, provider: str, port: int, balance_specs: tuple[str, ...],
            frozen_specs: tuple[str, ...], faults: tuple[str, ...], times: int | None) -> None:
    """Run a provider emulator in the foreground for your own integration tests.

    Prints its URL and test credentials; stops cleanly on Ctrl-C or SIGTERM. With --fail, the
    next balance requests that pass authentication fail as asked (an HTTP 503, a rate limit,
    a dropped connection, malformed JSON, ...), then it answers normally again:
    `emulate luxcore --fail http_503 --times 3` makes the next three requests get a 503.
    """
    balances = _amounts(balance_specs, "--balance") or dict(_DEFAULT_BALANCES[provider])
    frozen = _amounts(frozen_specs, "--frozen")
    if frozen and provider != "luxcore":
        fail("--frozen is only reported by LuxCore; Luxtak and Pagsmile send no frozen amount")
    if times is not None and not faults:
        raise click.BadParameter("needs a fault to repeat: add --fail KIND",
                                 param_hint="'--times'")
    emulator = _emulator(provider, balances, frozen, port)
    for kind in faults:
        try:
            emulator.fail_next(kind.strip().lower(), times or 1)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--fail'") from None
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001 - signal API
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            emulator.start()
        except OSError as exc:
            fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}")
        click.echo(_describe(provider, emulator, faults, times or 1))
        while not stop.wait(0.2):
            pass
    finally:
        emulator.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err_console().print(f"{provider} emulator stopped")
