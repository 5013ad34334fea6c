"""The registry of rule types: what ``type = "..."`` in a rules document can name.

Each rule class declares, in its own body, its ``type_name``, its ``Config`` model (the keys of
its entry), how it describes itself (``describe()``) and how it is written as data
(``to_data()``). :func:`rules.load`, :func:`rules.dump` and :func:`rules.describe` read the
registry, so a class registered with :func:`register` is loaded, validated, dumped and
described like a built-in. The registry is the one piece of global state in ``rules``: it
changes under a lock, and :func:`registered` is a ``with`` block that restores it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

from rules._errors import ConfigurationError
from rules._facts import Facts, Verdict
from rules._funds import FrozenFunds, ReserveMargin, SufficientFunds
from rules._limits import CurrencyMinimums, MaxBalanceAge, MaxPayout
from rules._schema import RuleConfig

__all__ = [
    "BUILTINS",
    "COMBINATORS",
    "DataRule",
    "config_of",
    "register",
    "registered",
    "rule_types",
    "type_name_of",
    "unregister",
]

COMBINATORS = ("all_of", "any_of")
"""Type names the engine itself reads: they hold a list of rules."""
_SCOPE = ("type", "currency", "provider")


@runtime_checkable
class DataRule(Protocol):
    """A rule that can be written as data: what :func:`register` takes (as a class).

    Attributes:
        type_name: The entry's ``type`` (``"max_payout"``); letters, digits and ``_``.
        Config: A :class:`~rules.config.RuleConfig` whose fields are the entry's keys; the
            class is called with the keys an entry gives, as keyword arguments.
    """

    @property
    def type_name(self) -> str:
        """Return the entry's ``type``: a class attribute."""
        ...

    @property
    def Config(self) -> type[RuleConfig]:  # noqa: N802 - a nested class in every rule
        """Return the model of the entry's keys: a class nested in the rule's class."""
        ...

    @property
    def name(self) -> str:
        """Return the rule's name as it appears in verdicts."""
        ...

    def evaluate(self, facts: Facts) -> Verdict:
        """Judge *facts*; never raise for a denial, never do I/O."""
        ...

    def describe(self) -> str:
        """Return what the rule does, in words with its numbers, without its name."""
        ...

    def to_data(self) -> dict[str, Any]:
        """Return the entry's keys but ``type``, amounts as strings, that build it again."""
        ...


RuleClass = TypeVar("RuleClass", bound=type[Any])

BUILTINS: tuple[type[DataRule], ...] = (
    CurrencyMinimums,
    FrozenFunds,
    MaxBalanceAge,
    MaxPayout,
    ReserveMargin,
    SufficientFunds,
)

_lock = threading.Lock()
# Replaced, never changed in place: readers take the current mapping without the lock.
_types: Mapping[str, type[DataRule]] = {
    str(vars(cls)["type_name"]): cls for cls in BUILTINS
}


def config_of(cls: type[DataRule]) -> type[RuleConfig]:
    """Return the ``Config`` model of a registered rule class."""
    config: type[RuleConfig] = cls.Config  # type: ignore[assignment] # a class attribute; a protocol can only call it a property
    return config


def rule_types() -> Mapping[str, type[DataRule]]:
    """Return the registered rule classes by type name (built-ins and yours)."""
    return _types


def type_name_of(rule: object) -> str | None:
    """Return the type name *rule*'s class is registered under, or ``None``."""
    name = getattr(type(rule), "type_name", None)
    return name if isinstance(name, str) and _types.get(name) is type(rule) else None


def _check(cls: type[Any]) -> str:
    name = getattr(cls, "type_name", None)
    what = getattr(cls, "__name__", repr(cls))
    if not isinstance(name, str) or not name.isidentifier() or name in COMBINATORS:
        raise ConfigurationError(
            f"{what} needs a class attribute type_name: the entry's type, letters, digits and "
            f"_ (not all_of or any_of); got {name!r}"
        )
    config = getattr(cls, "Config", None)
    if not (isinstance(config, type) and issubclass(config, RuleConfig)):
        raise ConfigurationError(
            f"{what} needs a class attribute Config: a subclass of rules.config.RuleConfig "
            f"whose fields are the keys of its entry"
        )
    if clash := sorted(set(config.model_fields) & set(_SCOPE)):
        raise ConfigurationError(
            f"{what}.Config may not have the fields {', '.join(clash)}: every entry has them"
        )
    missing = [
        method for method in ("evaluate", "describe", "to_data")
        if not callable(getattr(cls, method, None))
    ]
    if missing or not hasattr(cls, "name"):
        raise ConfigurationError(
            f"{what} needs name, evaluate(facts), describe() and to_data() to be registered; "
            f"missing: {', '.join(missing) or 'name'}"
        )
    return name


def register(cls: RuleClass) -> RuleClass:
    """Make the rule class *cls* loadable from data like a built-in; usable as a decorator.

    Example:
        >>> import rules
        >>> from rules.config import Amount, RuleConfig
        >>> @rules.register
        ... class AtMost:
        ...     type_name = "at_most"
        ...     class Config(RuleConfig):
        ...         limit: Amount
        ...     ...

    Raises:
        ConfigurationError: *cls* lacks ``type_name``, ``Config``, ``describe`` or
            ``to_data``, or another class is registered under its type name.
    """
    global _types  # noqa: PLW0603 - the registry, replaced under the lock
    name = _check(cls)
    with _lock:
        current = _types.get(name)
        if current is not None and current is not cls:
            raise ConfigurationError(
                f"the rule type {name!r} is already registered by {current.__name__}; "
                f"unregister it first"
            )
        _types = {**_types, name: cls}
    return cls


def unregister(cls: type[Any]) -> None:
    """Forget the rule class *cls*; a built-in cannot be forgotten.

    Raises:
        ConfigurationError: *cls* is a built-in, or not registered.
    """
    global _types  # noqa: PLW0603 - the registry, replaced under the lock
    if cls in BUILTINS:
        raise ConfigurationError(f"{cls.__name__} is built in and cannot be unregistered")
    name = getattr(cls, "type_name", None)
    with _lock:
        if not isinstance(name, str) or _types.get(name) is not cls:
            raise ConfigurationError(f"{getattr(cls, '__name__', cls)!r} is not registered")
        _types = {key: value for key, value in _types.items() if key != name}


@contextmanager
def registered(*classes: type[Any]) -> Iterator[None]:
    """Return a ``with`` block in which *classes* are registered; the registry is restored after.

    Meant for tests: registration never leaks out of the block, whatever happens in it.

    Raises:
        ConfigurationError: as :func:`register`.
    """
    global _types  # noqa: PLW0603 - the registry, replaced under the lock
    saved = _types
    try:
        for cls in classes:
            register(cls)
        yield
    finally:
        with _lock:
            _types = saved
