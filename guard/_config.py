"""``load_config``: read a TOML/YAML/JSON file (or a mapping) into a checked ``GuardConfig``.

Numbers with a fraction are read as ``Decimal`` (TOML and JSON ``parse_float=Decimal``, a YAML
loader whose floats are ``Decimal``), so no amount ever passes through ``float``. Every error
is a :class:`~guard.errors.ConfigurationError` naming the file, the key path and what is
accepted; an error about a credential never shows the value.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
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
)
from guard.errors import ConfigurationError

__all__ = ["ConfigSource", "load_config", "load_text", "parse_text"]

ConfigSource = str | os.PathLike[str] | Mapping[str, Any] | GuardConfig
_FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
_BY_KIND: dict[str, type[BaseModel]] = {
    "luxtak": LuxtakProvider, "luxcore": LuxCoreProvider, "pagsmile": PagsmileProvider,
}
_SECRETISH = re.compile(r"(key|secret|password|token)", re.IGNORECASE)
_MAX_SHOWN = 3


def load_config(source: ConfigSource) -> GuardConfig:
    """Return the configuration in *source*, validated, with its rules loaded.

    Args:
        source: A ``.toml`` file (``.yaml``/``.yml`` with the ``yaml`` extra, or ``.json``),
            a mapping of the same shape, or a ``GuardConfig`` (returned as is).

    Returns:
        The checked configuration. Credentials are not read here: they are looked up in the
        environment when a guard is built.

    Raises:
        ConfigurationError: the file cannot be read or parsed, or a value is invalid; the
            error names the file (``.source``), the key path (``.path``) and what is accepted.
    """
    if isinstance(source, GuardConfig):
        return source
    if isinstance(source, Mapping):
        return _validated(dict(source), "", Path.cwd())
    if not isinstance(source, str | os.PathLike):
        raise ConfigurationError(
            f"must be a file path, a mapping or a GuardConfig, got {type(source).__name__}"
        )
    path = Path(source)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigurationError(
            f"unknown file type {path.suffix or '(none)'!r}; accepted: .toml, .yaml, .yml, .json",
            source=str(path),
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot read the file: {reason}", source=str(path)) from None
    return _validated(parse_text(text, fmt, str(path)), str(path), path.parent)


def load_text(text: str, fmt: str = "toml", *, source: str = "") -> GuardConfig:
    """Return the configuration written in *text* (a built-in or generated configuration).

    Raises:
        ConfigurationError: as :func:`load_config`; *source* names the text in messages.
    """
    return _validated(parse_text(text, fmt, source), source, Path.cwd())


def parse_text(text: str, fmt: str, source: str = "") -> dict[str, Any]:
    """Return the document in *text* (``"toml"``, ``"yaml"`` or ``"json"``), numbers as Decimal.

    Raises:
        ConfigurationError: the text is not valid in that format, or is not a table/mapping.
    """
    try:
        if fmt == "toml":
            data: object = tomllib.loads(text, parse_float=Decimal)
        elif fmt == "json":
            data = json.loads(text, parse_float=Decimal)
        elif fmt == "yaml":
            data = _yaml(text, source)
        else:
            raise ConfigurationError(f"unknown format {fmt!r}; accepted: toml, yaml, json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigurationError(f"not valid {fmt.upper()}: {exc}", source=source) from None
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"the document must be a table of settings, got {type(data).__name__}",
            source=source,
        )
    return data


def _yaml(text: str, source: str) -> object:
    try:
        import yaml  # noqa: PLC0415 - optional dependency, only needed for YAML files
    except ImportError:  # pragma: no cover - the dev environment has pyyaml
        raise ConfigurationError(
            "YAML configuration needs PyYAML: pip install 'payout-guard[yaml]'", source=source
        ) from None

    class _Loader(yaml.SafeLoader):
        """A safe loader whose floats are Decimals (an amount never passes through float)."""

    def _decimal(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
        raw = str(loader.construct_scalar(node)).replace("_", "")
        special = {".inf": "Infinity", "+.inf": "Infinity", "-.inf": "-Infinity", ".nan": "NaN"}
        try:
            return Decimal(special.get(raw.lower(), raw))
        except InvalidOperation:
            raise ConfigurationError(
                f"line {node.start_mark.line + 1}: {raw!r} is not a decimal number",
                source=source,
            ) from None

    _Loader.add_constructor("tag:yaml.org,2002:float", _decimal)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"not valid YAML: {exc}", source=source) from None


def _validated(data: dict[str, Any], source: str, base_dir: Path) -> GuardConfig:
    _refuse_secrets(data, source)
    try:
        config = GuardConfig.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, source) from None
    config._source = source
    config._ruleset = _ruleset(config, source, base_dir)
    return config


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


# -- pydantic errors -> ConfigurationError ---------------------------------------------------


def _translate(exc: ValidationError, source: str) -> ConfigurationError:
    problems = [_problem(error) for error in exc.errors(include_url=False)]
    path, message = problems[0]
    if len(problems) > 1:
        more = "; ".join(f"{p or '(top level)'}: {m}" for p, m in problems[1:1 + _MAX_SHOWN])
        left = len(problems) - 1 - _MAX_SHOWN
        message += f" (also {more}{f'; and {left} more' if left > 0 else ''})"
    return ConfigurationError(message, path=path, source=source)


def _problem(error: Any) -> tuple[str, str]:
    raw = tuple(error["loc"])
    loc = _clean_loc(raw)
    path = _dotted(loc)
    kind, msg, value = error["type"], error["msg"], error.get("input")
    last = str(loc[-1]) if loc else ""
    # URLs may carry user:password@; *_env values may be a pasted key: never echo them.
    secret = last.endswith(("_env", "url")) or bool(_SECRETISH.search(last))
    if kind == "extra_forbidden":
        model = _model_at(raw[:-1])
        keys = sorted(model.model_fields, key=lambda key: key != "kind") if model else []
        accepted = ", ".join(keys)
        return path, f"unknown key{f'; accepted here: {accepted}' if accepted else ''}"
    if kind == "union_tag_invalid":
        got = value.get("kind") if isinstance(value, dict) else None
        return f"{path}.kind", f"must be one of {', '.join(KINDS)}; got {got!r}"
    if kind == "union_tag_not_found":
        return f"{path}.kind", f"required: one of {', '.join(KINDS)}"
    if kind == "missing":
        hint = ""
        if last.endswith("_env"):
            hint = f" (the name of the environment variable holding it, e.g. \"{_example(loc)}\")"
        return path, f"required{hint}"
    if kind == "string_pattern_mismatch" and last.endswith("_env"):
        return path, ("must be an environment variable name: upper-case letters, digits and _ "
                      "(the value itself is not shown)")
    if kind == "string_pattern_mismatch":
        return path, "must be letters, digits, '_', '.' or '-' (at most 64), starting with one"
    if msg.startswith("Value error, "):
        msg = msg.removeprefix("Value error, ")
    shown = "" if secret or isinstance(value, dict | list) else f"; got {value!r}"
    return path, f"{msg[:1].lower()}{msg[1:]}{shown}"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # A tagged union adds the tag to the path (providers.x.luxtak.app_id); users never wrote it.
    if len(loc) >= 3 and loc[0] == "providers" and loc[2] in KINDS:
        return loc[:2] + loc[3:]
    return loc


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _model_at(raw: tuple[Any, ...]) -> type[BaseModel] | None:
    """Return the model whose keys live at *raw* (a pydantic location, tag included)."""
    if not raw:
        return GuardConfig
    if raw[0] in {"cache", "reservations"} and len(raw) == 1:
        return CacheConfig if raw[0] == "cache" else ReservationsConfig
    if raw[0] == "providers" and len(raw) >= 3 and raw[2] in _BY_KIND:
        if len(raw) == 3:
            return _BY_KIND[raw[2]]
        if raw[3:] == ("retry",):
            return RetryConfig
    return None


def _example(loc: tuple[Any, ...]) -> str:
    name = str(loc[1]) if len(loc) > 1 else "PROVIDER"
    field = str(loc[-1]).removesuffix("_env")
    return re.sub(r"[^A-Z0-9_]", "_", f"{name}_{field}".upper())
