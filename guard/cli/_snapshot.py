"""Balance snapshots: what ``balances --json`` prints and ``simulate --balances`` reads.

The document (version 1), amounts as strings in major units, times in ISO 8601 UTC::

    {
      "format": "payout-guard/balances",
      "version": 1,
      "taken_at": "2025-03-01T12:00:00Z",
      "providers": {
        "luxcore": {
          "kind": "luxcore",
          "balances": [
            {"provider": "luxcore", "currency": "ARS", "available": "12000.00",
             "frozen": "3000.00", "total": "15000.00", "as_of": "2025-03-01T12:00:00Z",
             "account": null}
          ],
          "error": null
        },
        "luxtak": {"kind": "luxtak", "balances": [], "error": "luxtak: ... HTTP 503 ..."}
      }
    }

A provider whose balance could not be read carries its ``error`` (and no balances); simulating
against it denies its payouts with ``balance_unavailable``, as the live guard would.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard._config_build import build_fetcher
from guard._config_schema import GuardConfig
from guard._models import BalanceSnapshot, UtcDatetime
from guard.cli._app import unreadable
from guard.errors import ConfigurationError, ProviderAuthError, ProviderError
from rules.money import parse_amount_text

__all__ = ["FORMAT", "ProviderBalances", "Snapshot", "fetch_snapshot", "read_snapshot"]

FORMAT = "payout-guard/balances"
_AMOUNTS = ("available", "frozen", "total")


class ProviderBalances(BaseModel):
    """One provider's balances, or why they could not be read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str | None = None
    balances: tuple[BalanceSnapshot, ...] = ()
    error: str | None = None
    # "credentials" when the provider rejected them; not part of the document.
    cause: str | None = Field(default=None, exclude=True)


class Snapshot(BaseModel):
    """Every configured provider's balances at one moment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["payout-guard/balances"] = "payout-guard/balances"
    version: Literal[1] = 1
    taken_at: UtcDatetime
    providers: dict[str, ProviderBalances]

    def document(self) -> dict[str, Any]:
        """Return the JSON-ready document (amounts as strings)."""
        return self.model_dump(mode="json")

    def dumps(self) -> str:
        """Return the document as indented JSON text."""
        return json.dumps(self.document(), indent=2)


def fetch_snapshot(
    config: GuardConfig, names: Iterable[str] | None = None, *,
    env: Mapping[str, str] | None = None,
) -> Snapshot:
    """Fetch every balance of the providers *names* (default all), once each.

    A provider failure is recorded in the snapshot, not raised: one that cannot be read, and
    one that cannot even be built (a credential variable not set), whose error then names
    the key (``cause`` ``"configuration"``).
    """
    chosen = list(config.provider_names if names is None else names)
    providers: dict[str, ProviderBalances] = {}
    for name in chosen:
        kind = config.providers[name].kind
        try:
            fetcher = build_fetcher(config, name, env=env)
        except ConfigurationError as exc:
            providers[name] = ProviderBalances(kind=kind, error=str(exc), cause="configuration")
            continue
        try:
            balances = tuple(fetcher.fetch())
        except ProviderError as exc:
            rejected = isinstance(exc, ProviderAuthError) and exc.credentials_rejected
            providers[name] = ProviderBalances(
                kind=kind, error=str(exc), cause="credentials" if rejected else None
            )
        else:
            providers[name] = ProviderBalances(kind=kind, balances=balances)
        finally:
            close = getattr(fetcher, "close", None)
            if callable(close):
                close()
    return Snapshot(taken_at=datetime.now(UTC), providers=providers)


def _check_amounts(data: dict[str, Any], source: str) -> None:
    """Refuse an amount the one amount grammar refuses (``" 1_2000 "``, ``"1.2e4"``, ``"+5"``).

    Raises:
        ConfigurationError: naming the amount's key path and quoting it.
    """
    providers = data.get("providers")
    for name, entry in (providers.items() if isinstance(providers, dict) else ()):
        balances = entry.get("balances") if isinstance(entry, dict) else None
        for index, balance in enumerate(balances if isinstance(balances, list) else ()):
            for field in _AMOUNTS:
                value = balance.get(field) if isinstance(balance, dict) else None
                if not isinstance(value, str):
                    continue  # null, or not a string: the model says what is wrong
                try:
                    parse_amount_text(value)
                except ValueError as exc:
                    raise ConfigurationError(
                        str(exc), path=f"providers.{name}.balances.{index}.{field}",
                        source=source,
                    ) from None


def read_snapshot(path: str | Path) -> Snapshot:
    """Read a snapshot document written by ``payout-guard balances --json`` (UTF-8, BOM or not).

    Raises:
        ConfigurationError: the file cannot be read, is not JSON (a number longer than
            4,300 digits and nesting too deep to read count as not JSON), is not a snapshot,
            or holds an amount outside the one amount grammar (JSON numbers are read as
            written: ``1.2e4`` is refused); the error names the file and the key path.
    """
    source = str(path)
    try:
        # utf-8-sig: a snapshot saved by Windows Notepad starts with a byte order mark.
        # A JSON number is kept as written, and read by the one amount grammar like a string.
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"), parse_float=str)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the file: {exc.strerror or exc}",
                                 source=source) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"not valid JSON: {exc}", source=source) from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
        raise ConfigurationError(f"not valid JSON: {unreadable(exc)}", source=source) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigurationError(
            f"not a balance snapshot: expected a JSON object with \"format\": \"{FORMAT}\", "
            "as `payout-guard balances --json` prints", source=source,
        )
    _check_amounts(data, source)
    try:
        return Snapshot.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigurationError(error["msg"], path=where, source=source) from None
