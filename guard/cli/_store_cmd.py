"""``store migrate``: create or upgrade the PostgreSQL reservation schema a configuration names."""

from __future__ import annotations

import click

from guard._config_build import postgres_store
from guard.cli._app import EXIT_UNAVAILABLE, config_option, fail, handle_errors, load
from guard.errors import StoreUnavailable

__all__ = ["store_group"]


@click.group("store")
def store_group() -> None:
    """Look after the reservation store."""


@store_group.command("migrate")
@config_option
@handle_errors
def migrate(*, config_path: str) -> None:
    """Create or upgrade the PostgreSQL reservation schema; safe to run again.

    The DSN comes from the environment variable the configuration's dsn_env names. Exit code 3
    when the database cannot be reached.
    """
    config = load(config_path)
    try:
        store = postgres_store(config, to_migrate=True)
        try:
            found, now = store.migrate()
        finally:
            store.close()
    except StoreUnavailable as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    if found == now:
        click.echo(f"schema {store.schema!r} is at version {now}: nothing to do")
    else:
        click.echo(f"schema {store.schema!r} migrated from version {found} to {now}")
