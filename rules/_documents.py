"""The one reader of configuration documents (TOML, YAML, JSON), for rules files and guard configs.

Whatever the format, a document reads the same way: decimals never pass through ``float``
(TOML and JSON decimals become ``Decimal``; a YAML float becomes a :class:`YamlFloat`, which
money fields refuse), a table that gives a key twice is refused, and so is a YAML number with a
leading zero (YAML 1.1 reads ``0100`` as octal 64, YAML 1.2 as 100). Errors are
:class:`~rules.ConfigurationError` naming the file and the key path.

PyYAML is optional (``pip install 'payout-guard[yaml]'``); it is imported only when a YAML
document is read. Reading a file given by path is the only I/O in the ``rules`` package.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any

from rules._errors import ConfigurationError

__all__ = ["FORMATS", "YamlFloat", "parse_document", "plain", "read_document"]

FORMATS = {".toml": "toml", ".yaml": "yaml", ".yml": "yaml", ".json": "json"}
"""File suffix -> format."""

_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")
_LEADING_ZERO = re.compile(r"[-+]?0[0-9_]+")


class YamlFloat(Decimal):
    """A number YAML reads as a float, kept exactly: fine for a percent, refused for money."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> YamlFloat:
        """Return the number written *text*, remembering how it was written."""
        value = super().__new__(cls, text.replace("_", ""))
        value.text = text
        return value


class _LeadingZero:
    """A YAML integer written with a leading zero: refused wherever it is (see :func:`plain`)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def message(self) -> str:
        digits = self.text.replace("_", "").lstrip("+-")
        old = f"as octal {int(digits, 8)}" if set(digits) <= set("01234567") else "otherwise"
        return (
            f"{self.text} has a leading zero, which YAML 1.1 reads {old} and YAML 1.2 as "
            f"{int(digits)}; write money in YAML as a string ('{self.text}') or a plain "
            f"integer without the zero"
        )


class _Table(dict[Any, Any]):
    """A parsed table that remembers the keys it was given more than once."""

    twice: tuple[object, ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[Any, Any]]) -> _Table:
        table = cls()
        twice = []
        for key, value in pairs:
            if key in table:
                twice.append(key)
            table[key] = value
        table.twice = tuple(twice)
        return table


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def plain(value: object, path: str = "") -> object:
    """Return *value* with every mapping a ``dict`` and every sequence a ``list``.

    Raises:
        ConfigurationError: a table gives a key twice, or a YAML number has a leading zero;
            ``.path`` names the place.
    """
    if isinstance(value, _LeadingZero):
        raise ConfigurationError(value.message(), path=path)
    if isinstance(value, Mapping):
        twice = getattr(value, "twice", ())
        if twice:
            raise ConfigurationError(
                f"found the key {twice[0]!r} twice in one table; give each key once",
                path=path,
            )
        return {key: plain(item, _join(path, key)) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


@lru_cache(maxsize=1)
def _yaml_loader() -> Any:
    try:
        import yaml  # noqa: PLC0415 - optional dependency, needed only for YAML documents
    except ImportError:
        raise ConfigurationError(
            "reading YAML needs PyYAML: pip install 'payout-guard[yaml]' (or write it in TOML)"
        ) from None

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type] # base is chosen at run time
        """SafeLoader whose numbers are never floats and whose tables note repeated keys."""

    def table(loader: Any, node: Any) -> Any:
        data = _Table()
        yield data
        keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
        hashable = [key for key in keys if isinstance(key, str | int | Decimal)]
        data.update(loader.construct_mapping(node))
        data.twice = tuple(key for index, key in enumerate(hashable) if key in hashable[:index])

    def decimal(loader: Any, node: Any) -> Decimal | str:
        # Forms Decimal cannot read (.inf, 1:30.5) stay strings, which checks refuse by name.
        text = str(loader.construct_scalar(node))
        try:
            value = YamlFloat(text)
        except InvalidOperation:
            return text
        return value if value.is_finite() else text

    def integer(loader: Any, node: Any) -> int | str | _LeadingZero:
        # YAML 1.1 reads 0100 as octal 64 and 1:30 as 90; money must not. Plain decimal
        # integers become int, a leading zero is refused, other forms stay strings.
        text = str(loader.construct_scalar(node))
        if _PLAIN_INT.fullmatch(text):
            return int(text.replace("_", ""))
        if _LEADING_ZERO.fullmatch(text):
            return _LeadingZero(text)
        return text

    Loader.add_constructor("tag:yaml.org,2002:map", table)
    Loader.add_constructor("tag:yaml.org,2002:float", decimal)
    Loader.add_constructor("tag:yaml.org,2002:int", integer)
    return Loader


def _yaml(text: str, name: str) -> object:
    loader = _yaml_loader()
    import yaml  # noqa: PLC0415 - imported by _yaml_loader already; optional dependency

    stream = io.StringIO(text)
    stream.name = name  # PyYAML shows it in error marks
    try:
        return yaml.load(stream, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML: {exc}") from None


def _json_constant(name: str) -> object:
    raise ConfigurationError(f"{name} is not a number a configuration may hold")


def parse_document(text: str, fmt: str, *, source: str = "") -> object:
    """Return the document written in *text* (``"toml"``, ``"yaml"`` or ``"json"``).

    Mappings come back as ``dict`` and sequences as ``list``; numbers as ``int``,
    ``Decimal`` (TOML, JSON) or :class:`YamlFloat`, never ``float``.

    Raises:
        ConfigurationError: the text is not valid in that format, holds an integer longer
            than Python reads (4,300 digits) or is nested too deeply to read, a table gives a
            key twice, or a YAML number has a leading zero. ``.source`` is *source*.
    """
    try:
        if fmt == "toml":
            data: object = tomllib.loads(text, parse_float=Decimal)
        elif fmt == "json":
            data = json.loads(text, parse_float=Decimal, parse_constant=_json_constant,
                              object_pairs_hook=_Table.of)
        elif fmt == "yaml":
            data = _yaml(text, Path(source).name or "<yaml>")
        else:
            raise ConfigurationError(f"unknown format {fmt!r}; accepted: toml, yaml, json")
        return plain(data)
    except ConfigurationError as exc:
        raise ConfigurationError(exc.message, path=exc.path, source=source) from None
    except (ValueError, RecursionError) as exc:
        raise ConfigurationError(f"invalid {fmt.upper()}: {_unreadable(exc)}",
                                 source=source) from None


def _unreadable(exc: ValueError | RecursionError) -> str:
    """Return why a JSON/TOML/YAML reader failed with *exc*, for a message.

    Besides the readers' own syntax errors (``ValueError`` subclasses), an integer longer
    than Python reads (4,300 digits) raises a plain ``ValueError``, and nesting deeper than
    the interpreter's stack a ``RecursionError``; neither is a syntax error, both are input.
    """
    if isinstance(exc, RecursionError):
        return "nested too deeply to read"
    # The digit limit's message ends in advice for programmers (sys.set_int_max_str_digits).
    return str(exc).partition("; use sys.")[0]


def read_document(path: Path, *, what: str = "configuration file") -> object:
    """Return the document in the ``.toml``, ``.yaml``/``.yml`` or ``.json`` file at *path*.

    Args:
        path: The file; its suffix says the format.
        what: What the file is, for messages (``"rules file"``).

    The file is UTF-8, with or without a byte order mark.

    Raises:
        ConfigurationError: an unknown suffix, a file that cannot be read, or what
            :func:`parse_document` raises; ``.source`` names the file.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        hint = " (to load text, parse it and pass the mapping)" if "\n" in str(path) else ""
        raise ConfigurationError(
            f"unknown file type {path.suffix or '(none)'!r} for a {what}; accepted: .toml, "
            f".yaml, .yml, .json{hint}",
            source=str(path),
        )
    try:
        # utf-8-sig: Windows Notepad starts UTF-8 with a byte order mark; it is not content.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"the {what} is not UTF-8 text ({exc.reason})", source=str(path)
        ) from None
    except OSError as exc:
        raise ConfigurationError(
            f"cannot read the {what}: {exc.strerror or exc}", source=str(path)
        ) from None
    return parse_document(text, fmt, source=str(path))
