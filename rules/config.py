"""Rules as data: :func:`load` them from a mapping or a file; :func:`dump` them back.

A rules document is a list of entries, each a table with a ``type``::

    [[rules]]
    type = "reserve_margin"
    percent = "5"
    minimum = { ARS = "1000.00" }

    [[rules]]
    type = "max_payout"
    provider = "luxtak"              # any entry may carry currency and/or provider
    limits = { BRL = "5000.00" }

A ``type`` names a registered rule class (the built-ins, and yours: see
:func:`rules.register`) or ``all_of``/``any_of`` with a ``rules`` list. Each class's ``Config``
model says which keys its entry takes; this module reads the registry for them.

Amounts are strings, integers, or decimals read by the TOML/JSON reader as ``Decimal``; a Python
``float`` is refused, and in YAML money must be a string or a plain integer (see
:func:`read_document`). Every error is a :class:`~rules.ConfigurationError` whose ``path``
names the place (``rules[2].minimum.BRL``) and whose message says what is accepted.

This module also holds what ``guard``'s configuration shares with rules files: the one
document reader (:func:`read_document`, :func:`parse_document`) and the one translation of
pydantic validation errors (:func:`configuration_error`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError, create_model
from pydantic_core import ErrorDetails
from pydantic_core.core_schema import ErrorType

from rules._documents import parse_document, plain, read_document
from rules._engine import AnyOf, Rule, RuleSet, When
from rules._errors import ConfigurationError
from rules._registry import COMBINATORS, DataRule, config_of, rule_types, type_name_of
from rules._schema import Amount, AmountTable, Number, RuleConfig, Scope, at
from rules._text import QUOTE_LIMIT, quoted

__all__ = [
    "Amount",
    "AmountTable",
    "Number",
    "RuleConfig",
    "RulesData",
    "configuration_error",
    "dump",
    "load",
    "parse_document",
    "read_document",
]

RulesData = Mapping[str, Any] | Sequence[Mapping[str, Any]] | str | os.PathLike[str]
_MORE = 5  # further problems listed after the first one
# pydantic's own kinds of error; any other kind is a PydanticCustomError, worded by us.
_PYDANTIC_KINDS = frozenset(get_args(ErrorType))


# -- pydantic errors -> ConfigurationError ----------------------------------------------------


def _never(key: str) -> bool:  # noqa: ARG001 - the default of configuration_error's hidden
    return False


def _key(key: object) -> str:
    """Return *key* for a key path: a key longer than a quote is cut like one (``...``)."""
    text = str(key)
    return text if len(text) <= QUOTE_LIMIT else text[: QUOTE_LIMIT - 3] + "..."


def _dotted(loc: Sequence[str | int], prefix: str = "") -> str:
    """Return *loc* as a key path: list indices as ``[i]``, keys (``[key]`` after) dotted.

    A key is cut to 60 characters, as input quoted in a message is.
    """
    path = prefix
    for index, part in enumerate(loc):
        if part == "[key]":
            continue
        is_key = index + 1 < len(loc) and loc[index + 1] == "[key]"
        if isinstance(part, int) and not is_key:
            path += f"[{part}]"
        else:
            path += f".{_key(part)}" if path else _key(part)
    return path


def _problem(
    error: ErrorDetails,
    *,
    prefix: str,
    keys: Callable[[tuple[str | int, ...]], Sequence[str]],
    where: str,
    tags: Collection[str],
    tag_at: int,
    hidden: Callable[[str], bool],
) -> tuple[str, str]:
    raw = error["loc"]
    # pydantic puts a tagged union's tag into the location; nobody wrote it in the file.
    loc = tuple(
        item for index, item in enumerate(raw) if not (index == tag_at and item in tags)
    )
    path = _dotted(loc, prefix)
    kind, got, msg = error["type"], error.get("input"), error["msg"]
    named = [item for item in loc if item != "[key]"]
    last = str(named[-1]) if named else ""
    place = f" {where}" if where else ""
    if kind == "extra_forbidden":
        accepted = ", ".join(keys(tuple(item for item in raw if item != "[key]")[:-1]))
        return path, f"unknown key {quoted(last)}{place}" + (
            f"; accepted keys: {accepted}" if accepted else ""
        )
    if kind == "missing":
        return path, f"missing required key {last!r}{place}"
    if kind in {"union_tag_invalid", "union_tag_not_found"}:
        tag = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        value = got.get(tag) if isinstance(got, dict) else None
        found = "required" if kind == "union_tag_not_found" else f"got {quoted(value)}"
        return _dotted((*named, tag), prefix), f"must be one of {', '.join(tags)}; {found}"
    shown = "" if hidden(last) else quoted(got)
    messages = {
        "literal_error": f"must be {error.get('ctx', {}).get('expected')}, got {shown}",
        "list_type": f"expected a list, got {type(got).__name__} {shown}",
        "dict_type": "expected a table of currency -> amount such as {BRL = '100.00'}, got "
        f"{type(got).__name__} {shown}",
        "string_type": f"expected a string, got {type(got).__name__} {shown}",
    }
    if kind in messages:
        return path, messages[kind]
    if kind == "value_error" or kind not in _PYDANTIC_KINDS:
        # Our own words: a model validator's ValueError, or a PydanticCustomError.
        return path, msg.removeprefix("Value error, ")
    if not shown or isinstance(got, dict | list):
        return path, f"{msg[:1].lower()}{msg[1:]}"
    return path, f"{msg[:1].lower()}{msg[1:]}; got {shown}"


def _no_keys(loc: tuple[str | int, ...]) -> Sequence[str]:  # noqa: ARG001 - the default keys
    return ()


def _joined(problems: Sequence[tuple[str, str]], source: str = "") -> ConfigurationError:
    """Return one error for *problems*: the first sets ``.path``, up to five more follow."""
    path, message = problems[0]
    more = "".join(f"; also {where}: {what}" for where, what in problems[1 : 1 + _MORE])
    if len(problems) > 1 + _MORE:
        more += f"; and {len(problems) - 1 - _MORE} more"
    return ConfigurationError(message + more, path=path, source=source)


def configuration_error(
    exc: ValidationError,
    *,
    source: str = "",
    prefix: str = "",
    keys: Callable[[tuple[str | int, ...]], Sequence[str]] = _no_keys,
    where: str = "",
    tags: Collection[str] = (),
    tag_at: int = -1,
    hidden: Callable[[str], bool] = _never,
) -> ConfigurationError:
    """Return *exc* as one :class:`~rules.ConfigurationError`: file, key path and our words.

    The first problem sets ``.path``; up to five more follow in the message.

    Args:
        exc: What pydantic raised.
        source: The file the document came from.
        prefix: The path in front of every location (``rules[2]``).
        keys: The keys accepted at a pydantic location (tags included), for an unknown
            key's message.
        where: How messages name the place (``for max_payout``).
        tags: The tags of a tagged union, listed when one is wrong.
        tag_at: Where in a location pydantic puts the tag (left out of paths).
        hidden: Whether the value of a key must never be shown (a credential).
    """
    return _joined([
        _problem(error, prefix=prefix, keys=keys, where=where, tags=tags, tag_at=tag_at,
                 hidden=hidden)
        for error in exc.errors(include_url=False)
    ], source)


# -- load -------------------------------------------------------------------------------------


class _Members(RuleConfig):
    """``{type = "all_of", rules = [...]}`` and ``any_of``: the nested rules."""

    rules: list[Any]


@lru_cache(maxsize=128)
def _entry_model(config: type[RuleConfig]) -> type[RuleConfig]:
    """Return *config* with the keys every entry may carry: its scope."""
    return create_model(
        f"{config.__name__}Entry",
        __base__=config,
        currency=(Scope | None, None),
        provider=(Scope | None, None),
    )


def _valid_types() -> str:
    return ", ".join(sorted([*COMBINATORS, *rule_types()]))


def _keys_of(config: type[RuleConfig]) -> tuple[str, ...]:
    return ("type", *config.model_fields, "currency", "provider")


@dataclass
class _Entry:
    """One validated entry, before its rule is built."""

    type_name: str
    config: RuleConfig
    members: list[_Entry] = field(default_factory=list)


def _validate(entry: object, path: str, problems: list[tuple[str, str]]) -> _Entry | None:
    if not isinstance(entry, Mapping):
        got = f"{type(entry).__name__} {quoted(entry)}"
        problems.append((path, f"expected a rule entry (a table with a 'type' key), got {got}"))
        return None
    name = entry.get("type")
    if name is None:
        problems.append((path, f"each rule needs a 'type'; valid types: {_valid_types()}"))
        return None
    cls = rule_types().get(name) if isinstance(name, str) else None
    if cls is None and name not in COMBINATORS:
        problems.append((path, f"unknown rule type {quoted(name)}; valid types: {_valid_types()}"))
        return None
    base = _Members if cls is None else config_of(cls)
    given = {key: value for key, value in entry.items() if key != "type"}
    try:
        config = _entry_model(base).model_validate(given)
    except ValidationError as exc:
        keys = _keys_of(base)
        problems.extend(
            _problem(error, prefix=path, keys=lambda _: keys, where=f"for {name}", tags=(),
                     tag_at=-1, hidden=_never)
            for error in exc.errors(include_url=False)
        )
        return None
    found = _Entry(str(name), config)
    if isinstance(config, _Members):
        for index, member in enumerate(config.rules):
            valid = _validate(member, f"{path}.rules[{index}]", problems)
            if valid is not None:
                found.members.append(valid)
    return found


def _build(entry: _Entry, path: str) -> Rule:
    config = entry.config
    rule: Rule
    if entry.type_name in COMBINATORS:
        members = [_build(member, f"{path}.rules[{i}]") for i, member in enumerate(entry.members)]
        combine = RuleSet if entry.type_name == "all_of" else AnyOf
        rule = at(f"{path}.rules", lambda: combine(members))
    else:
        cls = rule_types()[entry.type_name]
        given = config.model_fields_set - {"currency", "provider"}
        rule = at(path, lambda: cls(**{key: getattr(config, key) for key in given}))
    currency, provider = getattr(config, "currency", None), getattr(config, "provider", None)
    if currency is None and provider is None:
        return rule
    return at(path, lambda: When(rule, currency=currency, provider=provider))


def _from_data(data: object) -> RuleSet:
    if isinstance(data, Mapping):
        document = plain(data)
    elif isinstance(data, list | tuple):
        document = {"rules": plain(data, "rules")}
    else:
        got = "an empty document" if data is None else type(data).__name__
        raise ConfigurationError(
            f"expected a table with a 'rules' list, or a list of rule entries; got {got}"
        )
    assert isinstance(document, dict)  # noqa: S101 - plain() keeps a mapping a mapping
    problems: list[tuple[str, str]] = [
        (_key(key), f"unknown key {quoted(key)} at the top level; accepted keys: rules")
        for key in document if key != "rules"
    ]
    entries = document.get("rules")
    if "rules" not in document:
        problems.insert(0, ("rules", "missing required key 'rules' at the top level"))
    elif not isinstance(entries, list):
        got = f"{type(entries).__name__} {quoted(entries)}"
        problems.insert(0, ("rules", f"expected a list, got {got}"))
    valid = [
        _validate(entry, f"rules[{index}]", problems)
        for index, entry in enumerate(entries if isinstance(entries, list) else ())
    ]
    if problems:
        raise _joined(problems)
    return RuleSet([
        _build(entry, f"rules[{index}]") for index, entry in enumerate(valid) if entry is not None
    ])


def load(data: RulesData) -> RuleSet:
    """Return the rules described by *data*, validated.

    Args:
        data: ``{"rules": [...]}``, a bare list of rule entries, or a path (``str`` or
            ``os.PathLike``) to a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file holding
            either. YAML needs PyYAML (``pip install 'payout-guard[yaml]'``).

    Returns:
        A :class:`~rules.RuleSet`; an empty document gives an empty set, which allows all.

    Raises:
        ConfigurationError: the file cannot be read or parsed, or an entry is invalid: an
            unknown type or key, a bad amount or currency, a float. ``.path`` names the place;
            ``.source`` names the file when there is one.
    """
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        document = read_document(path, what="rules file")
        try:
            return _from_data(document)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, path=exc.path, source=str(path)) from None
    return _from_data(data)


# -- dump -------------------------------------------------------------------------------------


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
    name = type_name_of(rule)
    if name is None or not isinstance(rule, DataRule):
        raise ConfigurationError(
            f"cannot write {rule.name!r} ({type(rule).__name__}) as data: only registered "
            f"rules (see rules.register), all_of, any_of and when can be"
        )
    return {"type": name, **rule.to_data()}


def dump(ruleset: Rule) -> dict[str, list[dict[str, Any]]]:
    """Return *ruleset* as data that :func:`load` turns back into an equal ``RuleSet``.

    Amounts are strings (``"1000.00"``), so the result can be written as TOML, YAML or JSON
    without ever passing through ``float``.

    Args:
        ruleset: A ``RuleSet`` (its members become the entries) or any single rule.

    Raises:
        ConfigurationError: a rule is neither registered nor a combinator of registered ones.
    """
    members = ruleset.rules if isinstance(ruleset, RuleSet) else (ruleset,)
    return {"rules": [_entry(rule) for rule in members]}

