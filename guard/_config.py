"""``load_config``: read a TOML/YAML/JSON file (or a mapping) into a checked ``GuardConfig``.

Files are read by the one reader rules files use (``rules.config.read_document``): numbers never
pass through ``float``, a key given twice is refused, and in YAML money must be a string or a
plain integer. Every error is a :class:`~guard.errors.ConfigurationError` naming the file, the
key path and what is accepted (``rules.config.configuration_error``); an error about a
credential never shows the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

import rules
from guard._config_schema import (
    KINDS,
    SECRET_FIELDS,
    CacheConfig,
    GuardConfig,
    LuxCoreProvider,
    LuxtakProvider,
    PagsmileProvider,
    ReservationsConfig,
    RetryConfig,
    closest,
)
from guard.errors import ConfigurationError
from guard.fetchers._checks import check_base_url
from rules.config import configuration_error, parse_document, read_document

__all__ = ["ConfigSource", "load_config", "load_text"]

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | GuardConfig
_BY_KIND: dict[str, type[BaseModel]] = {
    "luxtak": LuxtakProvider, "luxcore": LuxCoreProvider, "pagsmile": PagsmileProvider,
}
_SECRETISH = re.compile(r"(key|secret|password|token)", re.IGNORECASE)


def load_config(source: ConfigSource) -> GuardConfig:
    """Return the configuration in *source*, validated, with its rules loaded.

    Args:
        source: A ``.toml`` file (``.yaml``/``.yml`` with the ``yaml`` extra, or ``.json``),
            a mapping of the same shape, or a ``GuardConfig`` (returned as is).

    Returns:
        The checked configuration. Credentials are not read here: they are looked up in the
        environment when a guard is built (``PayoutGuard.from_config``).

    Raises:
        ConfigurationError: the file cannot be read or parsed, or a value is invalid; the
            error names the file (``.source``), the key path (``.path``) and what is accepted.
    """
    if isinstance(source, GuardConfig):
        return source
    if isinstance(source, Mapping):
        return _validated(source, "", Path.cwd())
    if not isinstance(source, str | os.PathLike):
        raise ConfigurationError(
            f"must be a file path, a mapping or a GuardConfig, got {type(source).__name__}"
        )
    path = Path(source)
    return _validated(read_document(path), str(path), path.parent)


def load_text(text: str, fmt: str = "toml", *, source: str = "") -> GuardConfig:
    """Return the configuration written in *text* (a built-in or generated configuration).

    Raises:
        ConfigurationError: as :func:`load_config`; *source* names the text in messages.
    """
    return _validated(parse_document(text, fmt, source=source), source, Path.cwd())


def _validated(document: object, source: str, base_dir: Path) -> GuardConfig:
    if not isinstance(document, Mapping):
        raise ConfigurationError(
            f"the document must be a table of settings, got {type(document).__name__}",
            source=source,
        )
    data = dict(document)
    _refuse_secrets(data, source)
    try:
        config = GuardConfig.model_validate(data)
    except ValidationError as exc:
        raise configuration_error(
            # providers.<name>.<kind>.…: pydantic puts the kind third.
            exc, source=source, keys=_keys_at, tags=KINDS, tag_at=2, hidden=_hidden
        ) from None
    config._source = source
    config._base_dir = base_dir.absolute()
    _check_base_urls(config, source)
    config._ruleset = _ruleset(config, source, base_dir)
    _check_provider_names(config, source, base_dir)
    return config


def _check_base_urls(config: GuardConfig, source: str) -> None:
    """Refuse a ``base_url`` the fetcher would refuse, when the file is read, not first used.

    ``rules validate`` then catches a credential written into a URL; the error never quotes
    the value's credentials, path or query (``check_base_url``).
    """
    for name, spec in config.providers.items():
        if spec.base_url is None:
            continue
        try:
            check_base_url(spec.base_url, allow_insecure=spec.allow_insecure)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, path=f"providers.{name}.base_url",
                                     source=source) from None


def _check_provider_names(config: GuardConfig, source: str, base_dir: Path) -> None:
    """Refuse a route or a rule scope naming a provider that is not configured.

    A rule scoped to an unknown provider would silently never apply. Nothing is checked
    when no provider is configured (a rules-only document).
    """
    names = config.provider_names
    if not names:
        return
    known = ", ".join(names)
    for currency, route in config.routing.routes.items():
        for name in route:
            if name not in config.providers:
                raise ConfigurationError(
                    f"routes {currency} through {name[:40]!r}, which is not configured "
                    f"(configured: {known}){closest(name, names)}",
                    path=f"routing.{currency}", source=source,
                )
    rules_source = source if config.rules_file is None else str(base_dir / config.rules_file)
    lowered = {name.lower(): name for name in names}
    for path, scope in _provider_scopes(config.ruleset, "rules"):
        for name in sorted(scope):
            if name not in lowered:
                raise ConfigurationError(
                    f"the rule is scoped to provider {name[:40]!r}, which is not configured "
                    f"(configured: {known}), so it would never apply"
                    f"{closest(name, tuple(lowered))}",
                    path=f"{path}.provider", source=rules_source,
                )


def _provider_scopes(
    rule: rules.Rule, path: str
) -> list[tuple[str, frozenset[str]]]:
    """Return every provider scope in *rule*'s tree with its key path (``rules[2]``)."""
    found: list[tuple[str, frozenset[str]]] = []
    if isinstance(rule, rules.When):
        if rule.providers is not None:
            found.append((path, rule.providers))
        found.extend(_provider_scopes(rule.rule, path))
    elif isinstance(rule, rules.RuleSet | rules.AnyOf):
        top = path == "rules" and isinstance(rule, rules.RuleSet)
        for i, member in enumerate(rule.rules):
            found.extend(_provider_scopes(member, f"rules[{i}]" if top else f"{path}.rules[{i}]"))
    return found


def _refuse_secrets(data: dict[str, Any], source: str) -> None:
    providers = data.get("providers")
    if not isinstance(providers, Mapping):
        return
    for name, spec in providers.items():
        if not isinstance(spec, Mapping):
            continue
        kind = spec.get("kind", name)
        secrets = SECRET_FIELDS.get(kind, ()) if isinstance(kind, str) else ()
        for key in spec:
            if key in secrets or (not str(key).endswith("_env") and _SECRETISH.search(str(key))):
                var = re.sub(r"[^A-Z0-9_]", "_", f"{name}_{key}".upper())
                raise ConfigurationError(
                    "secrets never sit in the configuration file; keep it in an environment "
                    f"variable and name that variable instead: {key}_env = \"{var}\"",
                    path=f"providers.{name}.{key}", source=source,
                )


def _ruleset(config: GuardConfig, source: str, base_dir: Path) -> rules.RuleSet:
    if config.rules_file is not None:
        # Errors name the rules file itself (rules.load sets .source), where the problem is.
        return rules.load(str(base_dir / config.rules_file))
    if not config.rules:
        return rules.RuleSet()
    try:
        return rules.load({"rules": list(config.rules)})
    except ConfigurationError as exc:
        raise ConfigurationError(exc.message, path=exc.path or "rules", source=source) from None


def _hidden(key: str) -> bool:
    """Return whether the value of *key* may be a credential, never to be shown."""
    # URLs may carry user:password@; *_env values may be a pasted key.
    return key.endswith(("_env", "url")) or bool(_SECRETISH.search(key))


def _keys_at(loc: tuple[str | int, ...]) -> list[str]:
    """Return the keys accepted at *loc* (a pydantic location, provider kind included)."""
    model: type[BaseModel] | None = None
    if not loc:
        model = GuardConfig
    elif loc in {("cache",), ("reservations",)}:
        model = CacheConfig if loc[0] == "cache" else ReservationsConfig
    elif loc[0] == "providers" and len(loc) >= 3 and loc[2] in _BY_KIND:
        if len(loc) == 3:
            model = _BY_KIND[str(loc[2])]
        elif loc[3:] == ("retry",):
            model = RetryConfig
    return sorted(model.model_fields, key=lambda key: key != "kind") if model else []
