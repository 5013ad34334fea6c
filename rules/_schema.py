"""The pieces a rule's config model is made of: :class:`RuleConfig` and its field types.

pydantic checks the structure (known keys, tables, lists, no floats); the rule constructors
then check the values (ranges, currencies, decimal places), so each check lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, PlainValidator
from pydantic_core import PydanticCustomError

from rules._documents import YamlFloat
from rules._errors import ConfigurationError
from rules._money import float_refusal, to_decimal
from rules._protocol import Rule
from rules._text import quoted

__all__ = ["Amount", "AmountTable", "Number", "RuleConfig", "Scope", "at"]


def _number(value: object) -> Decimal:
    if isinstance(value, float):
        raise PydanticCustomError("float_amount", "{reason}", {"reason": float_refusal(value)})
    try:
        return Decimal(value) if isinstance(value, YamlFloat) else to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise PydanticCustomError(
            "amount", "{reason}; expected a number such as '100.00' (a string, an integer or "
            "a TOML/JSON decimal)", {"reason": str(exc)}
        ) from None


def _money(value: object) -> Decimal:
    if isinstance(value, YamlFloat):
        raise PydanticCustomError(
            "yaml_float",
            "YAML reads {text} as a float; write money in YAML as a string ('{text}') or a "
            "plain integer, which every YAML reader reads alike",
            {"text": value.text},
        )
    return _number(value)


def _scope(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise PydanticCustomError(
        "scope", "expected a string or a list of strings such as ['ARS', 'BRL'], got {got}",
        {"got": quoted(value)},
    )


Number = Annotated[Decimal, PlainValidator(_number)]
"""A number that is not money (a percent, a ratio, seconds): never a Python ``float``."""
Amount = Annotated[Decimal, PlainValidator(_money)]
"""An amount of money: a string, an integer or a TOML/JSON decimal; in YAML never a float."""
AmountTable = dict[str, Amount]
"""A table of currency -> amount, such as ``{BRL = "100.00"}``."""
Scope = Annotated[str | tuple[str, ...], PlainValidator(_scope)]
"""A currency or provider, or a list of them."""


class RuleConfig(BaseModel):
    """Base of a rule's config model: its fields are the keys of the rule's entry.

    Unknown keys are refused. The registry calls the rule class with the keys an entry gives
    as keyword arguments, so the fields are named after the constructor's parameters. Use
    :data:`Amount` and :data:`AmountTable` for money and :data:`Number` for other numbers:
    they refuse floats the way the built-ins do.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def at(path: str, make: Callable[[], Rule]) -> Rule:
    """Return ``make()``, re-raising its ConfigurationError with *path* in front of its own."""
    try:
        return make()
    except ConfigurationError as exc:
        where = f"{path}.{exc.path}" if exc.path and not exc.path.startswith("[") else (
            path + exc.path
        )
        raise ConfigurationError(exc.message, path=where) from None
