"""Reading a batch of payouts to simulate: CSV with a header, or JSON lines.

Each row has ``amount`` and ``currency``, and optionally ``payout_id``, ``provider`` and
``fee``. Amounts are read by the library's one amount grammar, JSON numbers too (as written:
``1e3`` is refused). A CSV file may be separated by ``,``, ``;`` (Excel where the decimal
separator is a comma) or tabs: the header says which. A bad row does not stop the batch: it
becomes an :class:`InvalidRow` naming its line and field (a row with more or fewer fields than
the header is one), and the other rows are simulated as usual. Columns besides these are
ignored, and listed in :attr:`Batch.ignored_columns`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from guard._money import parse_amount, parse_currency
from guard._text import quoted
from guard.cli._app import negative_amount, unreadable
from guard.errors import ConfigurationError, InvalidPayoutRequest

__all__ = ["COLUMNS", "ROW", "Batch", "InvalidRow", "Row", "read_batch"]

COLUMNS = ("amount", "currency", "payout_id", "provider", "fee")
ROW = "(row)"
"""The ``field`` of an invalid row that is wrong as a whole (its shape, its JSON)."""
_REQUIRED = ("amount", "currency")
_DELIMITERS = (",", ";", "\t")
_MAX_ID = 200
_CSV = {".csv"}
_JSON_LINES = {".jsonl", ".ndjson", ".json"}


@dataclass(frozen=True, slots=True)
class Row:
    """One valid payout of the batch."""

    line: int
    amount: Decimal
    currency: str
    payout_id: str
    provider: str | None
    fee: Decimal | None


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A row that could not be read: where, which field, and what was wrong."""

    line: int
    field: str
    message: str
    payout_id: str | None = None

    def __str__(self) -> str:
        if self.field == ROW:
            return f"line {self.line}: {self.message}"
        return f"line {self.line}, field {self.field}: {self.message}"


@dataclass(frozen=True, slots=True)
class Batch:
    """The rows of a batch file, in file order, and the columns it ignored."""

    rows: tuple[Row | InvalidRow, ...]
    ignored_columns: tuple[str, ...] = ()
    delimiter: str | None = None
    """The CSV delimiter found in the header (``None`` for JSON lines)."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def parse_row(line: int, raw: dict[str, Any], providers: Collection[str]) -> Row | InvalidRow:
    """Return the payout in *raw* (a row's fields by column), or what is wrong with it."""
    payout_id = _text(raw.get("payout_id"))
    if payout_id is not None and len(payout_id) > _MAX_ID:
        return InvalidRow(line, "payout_id", f"must be at most {_MAX_ID} characters")
    for name in _REQUIRED:
        if _text(raw.get(name)) is None:
            return InvalidRow(line, name, "missing (amount and currency are required)",
                              payout_id)
    step = "currency"
    try:
        currency = parse_currency(_text(raw.get("currency")) or "")
        step = "amount"
        amount_raw = raw.get("amount")
        if isinstance(amount_raw, float | bool):
            return InvalidRow(line, "amount", f"must be a decimal number, got {amount_raw!r}",
                              payout_id)
        amount = parse_amount(_text(amount_raw) or "", currency)
        step = "fee"
        fee_raw = _text(raw.get("fee"))
        fee = None if fee_raw is None else parse_amount(fee_raw, currency, field="fee",
                                                        allow_zero=True)
    except InvalidPayoutRequest as exc:
        signed = None if step == "currency" else negative_amount(
            _text(raw.get(step)) or "", currency, allow_zero=step == "fee"
        )
        message = signed or str(exc).removeprefix(f"{step}: ")
        return InvalidRow(line, step, message, payout_id)
    provider = _text(raw.get("provider"))
    if provider is not None and provider not in providers:
        known = ", ".join(providers) or "none"
        return InvalidRow(line, "provider", f"{quoted(provider)} is not a configured provider "
                          f"({known})", payout_id)
    return Row(line, amount, currency, payout_id or f"line-{line}", provider, fee)


def _lines(text: str) -> list[str]:
    r"""Return the lines of *text*, split at ``\n`` only (a ``\r`` before it dropped).

    Not ``str.splitlines()``, which also splits at ``\x0c``, ``\x85`` and ``\u2028``: a JSON
    string (``json.dumps(ensure_ascii=False)``) or a CSV field may hold them.
    """
    return [line.removesuffix("\r") for line in text.split("\n")]


def _header(line: str, delimiter: str) -> list[str]:
    return [name.strip() for name in next(csv.reader([line], delimiter=delimiter), [])]


def _delimiter(path: Path, text: str) -> str:
    """Return the delimiter whose header has the required columns (``,``, ``;`` or tab).

    Excel writes ``;`` where the decimal separator is a comma (most of Latin America).

    Raises:
        ConfigurationError: no delimiter gives a header with amount and currency.
    """
    first = _lines(text)[0] if text.strip() else ""
    for delimiter in _DELIMITERS:
        if all(name in _header(first, delimiter) for name in _REQUIRED):
            return delimiter
    missing = [name for name in _REQUIRED if name not in _header(first, ",")]
    raise ConfigurationError(
        f"the CSV header lacks {', '.join(missing)} (read with ',' as the delimiter; ';' and "
        "tab were tried too); columns: amount, currency (required), payout_id, provider, fee",
        source=str(path),
    )


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, dict[str, Any] | InvalidRow]]:
    reader = csv.DictReader(_lines(text), delimiter=delimiter)
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header
    for record in reader:
        line = reader.line_num
        if None in record:
            count = len(header) + len(record[None])
            yield line, InvalidRow(line, ROW, f"has {count} fields, the header has {len(header)}")
            continue
        absent = [name for name, value in record.items() if value is None]
        if absent:
            # A short row is as malformed as a long one (a field may have slid into another's
            # column): refused too, naming the first field it lacks.
            count = len(header) - len(absent)
            yield line, InvalidRow(
                line, absent[0], f"missing: the row has {count} field{'s' * (count != 1)}, "
                f"the header has {len(header)} (leave a field empty rather than dropping it)",
            )
            continue
        yield line, dict(record)


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | InvalidRow]]:
    for line, content in enumerate(_lines(text), start=1):
        if not content.strip():
            continue
        try:
            # A JSON number is kept as written, and read by the one amount grammar like a
            # string: 1e3 is refused as "1e3", whatever a float parser would make of it.
            record = json.loads(content, parse_float=str)
        except json.JSONDecodeError as exc:
            yield line, InvalidRow(line, ROW, f"not valid JSON: {exc.msg} (column {exc.colno})")
            continue
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
            yield line, InvalidRow(line, ROW, f"not valid JSON: {unreadable(exc)}")
            continue
        if not isinstance(record, dict):
            yield line, InvalidRow(line, ROW,
                                   f"expected a JSON object, got {type(record).__name__}")
            continue
        yield line, record


def read_batch(path: str | Path, providers: Collection[str]) -> Batch:
    """Read the payouts in *path* (``.csv``, or ``.jsonl``/``.ndjson``/``.json`` lines).

    Args:
        path: The batch file.
        providers: The configured provider names a row's ``provider`` may take.

    Raises:
        ConfigurationError: the file cannot be read, its type is unknown, or a CSV header
            lacks a required column. Bad rows do not raise: they are ``InvalidRow`` entries.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CSV | _JSON_LINES:
        raise ConfigurationError(
            f"unknown batch file type {suffix or '(none)'!r}; accepted: .csv, .jsonl, "
            ".ndjson, .json (one JSON object per line)", source=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot read the file: {reason}", source=str(path)) from None
    delimiter = _delimiter(path, text) if suffix in _CSV else None
    records = _json_rows(text) if delimiter is None else _csv_rows(text, delimiter)
    rows: list[Row | InvalidRow] = []
    extra: set[str] = set()
    for line, record in records:
        if isinstance(record, InvalidRow):
            rows.append(record)
            continue
        extra.update(key for key in record if key not in COLUMNS)
        rows.append(parse_row(line, record, providers))
    return Batch(tuple(rows), tuple(sorted(str(key) for key in extra)), delimiter)
