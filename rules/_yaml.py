"""Reading YAML rules without ever making a float, and without silently merging keys.

PyYAML is optional (``pip install 'payout-guard[yaml]'``); it is imported only when a YAML
file is loaded.
"""

from __future__ import annotations

import io
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from rules._errors import ConfigurationError

__all__ = ["read_yaml"]

_PLAIN_INT = re.compile(r"[-+]?(0|[1-9][0-9_]*)")


def _loader() -> Any:
    try:
        import yaml  # noqa: PLC0415 - optional dependency, needed only for YAML files
    except ImportError:
        raise ConfigurationError(
            "reading YAML rules needs PyYAML: pip install 'payout-guard[yaml]' "
            "(or write the rules in TOML)"
        ) from None

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class Loader(base):  # type: ignore[misc,valid-type] # base is chosen at run time
        """SafeLoader that reads numbers as Decimal or int and refuses duplicate keys."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[object] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | Decimal):
                    continue  # the base class refuses unhashable keys with its own message
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a table", node.start_mark,
                        f"found the key {key!r} twice", key_node.start_mark,
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def decimal(loader: Any, node: Any) -> Decimal | str:
        # A YAML float becomes an exact Decimal; forms Decimal cannot read (.inf, 1:30.5)
        # stay strings, which the amount check then refuses by name.
        text = loader.construct_scalar(node)
        try:
            value = Decimal(text.replace("_", ""))
        except InvalidOperation:
            return str(text)
        return value if value.is_finite() else str(text)

    def integer(loader: Any, node: Any) -> int | str:
        # YAML 1.1 reads 0100 as octal 64 and 1:30 as 90; money must not. Plain decimal
        # integers become int; every other form stays a string and is read as decimal.
        text = loader.construct_scalar(node)
        return int(text.replace("_", "")) if _PLAIN_INT.fullmatch(text) else str(text)

    Loader.add_constructor("tag:yaml.org,2002:float", decimal)
    Loader.add_constructor("tag:yaml.org,2002:int", integer)
    return Loader


def read_yaml(text: str, name: str = "<yaml>") -> object:
    """Return the YAML document in *text*, numbers as ``Decimal``/``int``, never ``float``.

    Args:
        text: The document.
        name: The file name that error marks show.

    Raises:
        ConfigurationError: PyYAML is not installed, the text is not valid YAML, or a table
            lists a key twice.
    """
    loader = _loader()
    import yaml  # noqa: PLC0415 - imported by _loader already; optional dependency

    stream = io.StringIO(text)
    stream.name = name  # PyYAML shows it in error marks
    try:
        return yaml.load(stream, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML: {exc}") from None
