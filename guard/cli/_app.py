"""The command group, its logging set-up, exit codes, and what every command shares.

This is the only place in payout-guard that configures structlog: console lines by default,
``--log-format json`` for one JSON object per line, always to stderr so that ``--json``
output on stdout stays parseable.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, ParamSpec, TypeVar

import click
import structlog
from rich.console import Console

from guard._config import load_config
from guard._config_schema import GuardConfig
from guard._money import parse_amount, parse_currency
from guard._text import quoted
from guard.errors import (
    ConfigurationError,
    GuardError,
    InvalidPayoutRequest,
    ProviderAuthError,
    ProviderError,
)
from rules.money import to_decimal

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DENIED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "AmountCommand",
    "CliError",
    "UnavailableError",
    "amount_argument",
    "bad_parameter",
    "cli",
    "config_option",
    "configure_logging",
    "currency_argument",
    "err_console",
    "fail",
    "handle_errors",
    "load",
    "money",
    "negative_amount",
    "out_console",
    "unreadable",
]

EXIT_OK = 0
EXIT_DENIED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

P = ParamSpec("P")
R = TypeVar("R")


class CliError(click.ClickException):
    """A configuration or usage error: ``Error: <message>`` on stderr, exit code 2."""

    exit_code = EXIT_CONFIG


class UnavailableError(CliError):
    """A provider could not be read: exit code 3."""

    exit_code = EXIT_UNAVAILABLE


def fail(message: str, exit_code: int = EXIT_CONFIG) -> NoReturn:
    """Stop the command with *message* on stderr and *exit_code* (2 or 3)."""
    if exit_code == EXIT_UNAVAILABLE:
        raise UnavailableError(message)
    raise CliError(message)


def bad_parameter(hint: str, exc: InvalidPayoutRequest, field: str) -> click.BadParameter:
    """Return the usage error "Invalid value for *hint*: ..." for the library's refusal *exc*.

    The library's message starts with the field it refused (``amount: ...``, ``fee must
    be ...``); *hint* already names it, so that word is not said twice.
    """
    message = str(exc)
    for prefix in (f"{field}: ", f"{field} ", "amount "):
        message = message.removeprefix(prefix)
    return click.BadParameter(message, param_hint=hint)


def negative_amount(text: str, currency: str, *, allow_zero: bool = False) -> str | None:
    """Return the "must be positive" message when *text* is an amount written with a ``-``.

    ``None`` for anything else: the library's own message then says what is wrong.
    """
    if not text.startswith("-"):
        return None
    try:
        parse_amount(text[1:], currency, allow_zero=True)
    except InvalidPayoutRequest:
        return None  # not an amount with a sign: the library's own message says what is wrong
    return (f"must be {'zero or ' if allow_zero else ''}positive, got {quoted(text)} "
            "(amounts are written without a sign)")


def unreadable(exc: ValueError | RecursionError) -> str:
    """Return why ``json.loads`` could not read a document, for a message.

    Besides a syntax error, an integer longer than Python reads (4,300 digits) raises a plain
    ``ValueError``, and nesting deeper than the interpreter's stack a ``RecursionError``;
    both are bad input, said as such.
    """
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    # The digit limit's message ends in advice for programmers (sys.set_int_max_str_digits).
    return str(exc).partition("; use sys.")[0]


def currency_argument(value: str, hint: str = "'CURRENCY'") -> str:
    """Return *value* as an ISO 4217 code, read as the library reads it.

    Raises:
        click.BadParameter: it is not one, naming *hint* and what is accepted.
    """
    try:
        return parse_currency(value)
    except InvalidPayoutRequest as exc:
        raise bad_parameter(hint, exc, "currency") from None


def amount_argument(value: str, currency: str, hint: str = "'AMOUNT'", *, field: str = "amount",
                    allow_zero: bool = False) -> Decimal:
    """Return *value* as an exact amount of *currency*, read by the library's one grammar.

    Raises:
        click.BadParameter: it is not one (a sign, an exponent, too many decimals, ...),
            naming *hint*, quoting at most 60 characters of *value*, and saying what is
            accepted.
    """
    try:
        return parse_amount(value, currency, field=field, allow_zero=allow_zero)
    except InvalidPayoutRequest as exc:
        signed = negative_amount(value, currency, allow_zero=allow_zero)
        if signed is not None:
            raise click.BadParameter(signed, param_hint=hint) from None
        raise bad_parameter(hint, exc, field) from None


_NEGATIVE = re.compile(r"-[0-9.]")


class AmountCommand(click.Command):
    """A command whose ``AMOUNT`` argument may be typed with a sign.

    Click reads ``check -5 ARS`` as the unknown option ``-5``; this command answers that the
    amount must be positive instead.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Parse *args*; a negative number where an option was expected is a bad AMOUNT."""
        given = list(args)  # click's parser consumes the list it is handed
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            if not _NEGATIVE.match(exc.option_name):
                raise
            token = next((arg for arg in given if arg.startswith(exc.option_name)),
                         exc.option_name)
            try:
                to_decimal(token[1:])
            except ValueError:
                message = _refusal(token)  # not a number with a sign: say what is accepted
            else:
                message = (f"must be positive, got {quoted(token)} (amounts are written "
                           "without a sign)")
            raise click.BadParameter(message, ctx=ctx, param_hint="'AMOUNT'") from None


def _refusal(text: str) -> str:
    """Return the library's message refusing the amount string *text*."""
    try:
        to_decimal(text)
    except ValueError as exc:
        return str(exc)
    return f"{quoted(text)} is not an amount"  # pragma: no cover - only called on a refusal


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn payout-guard's errors into exit codes: configuration 2, provider 3."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ProviderError as exc:
            rejected = isinstance(exc, ProviderAuthError) and exc.credentials_rejected
            # Rejected credentials are configuration, not an outage.
            fail(str(exc), EXIT_CONFIG if rejected else EXIT_UNAVAILABLE)
        except GuardError as exc:  # ConfigurationError, InvalidPayoutRequest
            fail(str(exc), EXIT_CONFIG)

    return wrapper


def out_console() -> Console:
    """Return a console on stdout (tables, explanations).

    Off a terminal (a pipe, a file, CI logs) tables get 160 columns unless ``COLUMNS`` says
    otherwise, so that codes and amounts are not cut at rich's default of 80.
    """
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, soft_wrap=False, width=160)
    return console


def err_console() -> Console:
    """Return a console on stderr (progress, notes, warnings)."""
    return Console(stderr=True, highlight=False)


def money(value: Decimal | None) -> str:
    """Return *value* as plain digits (``-`` when the provider does not report it)."""
    return "-" if value is None else format(value, "f")


def load(path: str) -> GuardConfig:
    """Load the configuration at *path*; a problem is exit code 2 naming file and key."""
    try:
        return load_config(Path(path))
    except ConfigurationError as exc:
        fail(f"invalid configuration: {exc}")


config_option = click.option(
    "--config", "-c", "config_path", required=True, metavar="FILE",
    type=click.Path(dir_okay=False), envvar="PAYOUT_GUARD_CONFIG", show_envvar=True,
    help="Configuration file (.toml, .yaml, .yml or .json).",
)


def configure_logging(log_format: str, level: str) -> None:
    """Configure structlog for this process: *log_format* lines at *level* and above, to stderr."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(default=str)
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console",
              show_default=True, help="How log lines look (always on stderr).")
@click.option("--log-level", type=click.Choice(list(_LEVELS)), default="warning",
              show_default=True, help="The least severe log lines shown.")
@click.version_option(package_name="payout-guard", message="%(prog)s %(version)s")
def cli(log_format: str, log_level: str) -> None:
    """Decide, with reasons, whether a merchant's payout can go out.

    Start with `payout-guard demo`: it needs no credentials.

    Exit codes: 0 allowed (or done), 1 denied, 2 usage or configuration error (rejected
    credentials too), 3 provider unavailable.
    """
    configure_logging(log_format, log_level)
