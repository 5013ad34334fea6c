"""Assemble the ``payout-guard`` command group and run it."""

from __future__ import annotations

import click

from guard.cli._app import cli
from guard.cli._commands import balances, check, rules_group
from guard.cli._emulate import demo, emulate
from guard.cli._health_cmd import health
from guard.cli._holds_cmd import holds_group
from guard.cli._replay_cmd import replay
from guard.cli._simulate_cmd import simulate
from guard.cli._store_cmd import store_group

__all__ = ["cli", "run"]

for command in (demo, check, balances, simulate, emulate, health, holds_group, replay,
                rules_group, store_group):
    cli.add_command(command)


def run(argv: list[str], *, prog_name: str) -> int:
    """Run the command group on *argv*; return the exit code instead of exiting."""
    try:
        cli.main(args=argv, prog_name=prog_name, standalone_mode=True)
    except SystemExit as exit_:
        code = exit_.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        click.echo(str(code), err=True)
        return 1
    return 0
