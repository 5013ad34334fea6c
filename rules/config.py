"""Rules as data: :func:`load` them from a mapping, a TOML or a YAML file; :func:`dump` them back.

A rules document is a list of entries, each a table with a ``type``::

    [[rules]]
    type = "reserve_margin"
    percent = "5"
    minimum = { ARS = "1000.00" }

    [[rules]]
    type = "max_payout"
    provider = "luxtak"              # any entry may carry currency and/or provider
    limits = { BRL = "5000.00" }

Amounts are strings, integers, or decimals read by the TOML/YAML loader as ``Decimal``; a
Python ``float`` is refused. Every error is a :class:`~rules.ConfigurationError` whose ``path``
names the place (``rules[2].minimum.BRL``) and whose message says what is accepted.

Reading a file given by path is the only I/O in the ``rules`` package.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from rules._engine import AnyOf, Rule, RuleSet, When
from rules._errors import ConfigurationError
from rules._funds import FrozenFunds, ReserveMargin, SufficientFunds
from rules._limits import CurrencyMinimums, MaxBalanceAge, MaxPayout
from rules._schema import TYPES, Document, build_all, keys_of
from rules._yaml import read_yaml

__all__ = ["RulesData", "dump", "load"]

RulesData = Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | os.PathLike[str]
_SUFFIXES = (".toml", ".yaml", ".yml")
_MORE = 5  # further problems listed after the first one
_OURS = frozenset({"amount", "float_amount", "scope"})  # raised by rules._schema, worded there


def load(data: RulesData) -> RuleSet:
    """Return the rules described by *data*, validated.

    Args:
        data: ``{"rules": [...]}``, a bare list of rule entries, or a path (``str`` or
            ``os.PathLike``) to a ``.toml``, ``.yaml`` or ``.yml`` file holding either.
            YAML needs PyYAML (``pip install 'payout-guard[yaml]'``).

    Returns:
        A :class:`~rules.RuleSet`; an empty document gives an empty set, which allows all.

    Raises:
        ConfigurationError: the file cannot be read or parsed, or an entry is invalid: an
            unknown type or key, a bad amount or currency, a float. ``.path`` names the place;
            ``.source`` names the file when there is one.
    """
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        try:
            return _from_data(_read(path))
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, path=exc.path, source=str(path)) from None
    return _from_data(data)


def _read(path: Path) -> object:
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        hint = " (to load rules from text, parse it and pass the mapping)" if "\n" in str(
            path
        ) else ""
        raise ConfigurationError(
            f"expected a path to a .toml, .yaml or .yml rules file, got {str(path)!r}{hint}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"the file is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read the rules file: {exc.strerror or exc}") from None
    if suffix == ".toml":
        try:
            return tomllib.loads(text, parse_float=Decimal)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"invalid TOML: {exc}") from None
    return read_yaml(text, path.name)


def _plain(value: object) -> object:
    """Return *value* with every mapping turned into a dict (tomlkit, MappingProxyType...)."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _from_data(data: object) -> RuleSet:
    if isinstance(data, Mapping):
        document = _plain(data)
    elif isinstance(data, list | tuple):
        document = {"rules": _plain(data)}
    else:
        got = "an empty document" if data is None else type(data).__name__
        raise ConfigurationError(
            f"expected a table with a 'rules' list, or a list of rule entries; got {got}"
        )
    try:
        validated = Document.model_validate(document)
    except ValidationError as exc:
        problems = [_problem(error) for error in exc.errors(include_url=False)]
        path, message = problems[0]
        more = "".join(f"; also {where}: {what}" for where, what in problems[1 : 1 + _MORE])
        if len(problems) > 1 + _MORE:
            more += f"; and {len(problems) - 1 - _MORE} more"
        raise ConfigurationError(message + more, path=path) from None
    return RuleSet(build_all(validated.rules, "rules"))


def _problem(error: ErrorDetails) -> tuple[str, str]:
    """Return ``(path, message)`` for one pydantic error, in this package's words."""
    parts: list[str] = []
    entry_type = ""
    loc = error["loc"]
    for index, item in enumerate(loc):
        is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        if item == "[key]":
            continue
        if isinstance(item, int) and not is_key:
            parts.append(f"[{item}]")
        elif index and isinstance(loc[index - 1], int) and item in TYPES:
            entry_type = str(item)  # the discriminator's tag, not a key of the document
        else:
            parts.append(f".{item}" if parts else str(item))
    path = "".join(parts)
    kind, got, key = error["type"], error.get("input"), loc[-1]
    where = f"for {entry_type}" if entry_type else "at the top level"
    accepted = ", ".join(keys_of(entry_type)) if entry_type else "rules"
    messages = {
        "union_tag_invalid": f"unknown rule type {got.get('type')!r}; valid types: "
        f"{', '.join(TYPES)}" if isinstance(got, dict) else "",
        "union_tag_not_found": f"each rule needs a 'type'; valid types: {', '.join(TYPES)}",
        "model_attributes_type": "expected a rule entry (a table with a 'type' key), got "
        f"{type(got).__name__} {got!r}",
        "extra_forbidden": f"unknown key {key!r} {where}; accepted keys: {accepted}",
        "missing": f"missing required key {key!r} {where}",
        "literal_error": f"must be {error.get('ctx', {}).get('expected')}, got {got!r}",
        "list_type": f"expected a list, got {type(got).__name__} {got!r}",
        "dict_type": "expected a table of currency -> amount such as {BRL = '100.00'}, got "
        f"{type(got).__name__} {got!r}",
        "string_type": f"expected a string, got {type(got).__name__} {got!r}",
    }
    if kind in _OURS:
        return path, error["msg"]
    return path, messages.get(kind) or f"{error['msg']} (got {got!r})"


def _amount(value: Decimal) -> str:
    return format(value, "f")


def _table(table: Mapping[str, Decimal]) -> dict[str, str]:
    return {code: _amount(amount) for code, amount in table.items()}


_BUILTINS = (
    CurrencyMinimums, FrozenFunds, MaxBalanceAge, MaxPayout, ReserveMargin, SufficientFunds,
)


def _entry(rule: Rule) -> dict[str, Any]:
    if isinstance(rule, When):
        entry = _entry(rule.rule)
        for key, scope in (("currency", rule.currencies), ("provider", rule.providers)):
            if scope is not None:
                entry[key] = sorted(scope)
        return entry
    if isinstance(rule, RuleSet | AnyOf):
        kind = "all_of" if isinstance(rule, RuleSet) else "any_of"
        return {"type": kind, "rules": [_entry(member) for member in rule.rules]}
    if type(rule) not in _BUILTINS:
        raise ConfigurationError(
            f"cannot write {rule.name!r} ({type(rule).__name__}) as data: only the built-in "
            f"rules, all_of, any_of and when can be"
        )
    # A built-in's dataclass fields are exactly its constructor's (and its entry's) keys.
    entry = {"type": rule.name}
    for field in fields(rule):  # type: ignore[arg-type] # every built-in is a dataclass
        if field.name.startswith("_"):
            continue
        value = getattr(rule, field.name)
        if isinstance(value, Decimal):
            entry[field.name] = _amount(value)
        elif isinstance(value, Mapping):
            if value:
                entry[field.name] = _table(value)
        elif value is not None:
            entry[field.name] = value
    return entry


def dump(ruleset: Rule) -> dict[str, list[dict[str, Any]]]:
    """Return *ruleset* as data that :func:`load` turns back into an equal ``RuleSet``.

    Amounts are strings (``"1000.00"``), so the result can be written as TOML, YAML or JSON
    without ever passing through ``float``.

    Args:
        ruleset: A ``RuleSet`` (its members become the entries) or any single rule.

    Raises:
        ConfigurationError: a rule is not a built-in or a combinator of them.
    """
    members = ruleset.rules if isinstance(ruleset, RuleSet) else (ruleset,)
    return {"rules": [_entry(rule) for rule in members]}
