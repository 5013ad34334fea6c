"""The shape of rules as data, as pydantic models discriminated on ``type``.

pydantic checks the structure (known types and keys, tables, lists, no floats); the rule
constructors then check the values (ranges, currencies, decimal places), so each check lives
in one place. :func:`build_all` turns validated entries into rules, prefixing the constructors'
error paths with the entry's place (``rules[2].minimum.BRL``).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from pydantic_core import PydanticCustomError

from rules._engine import AnyOf, Rule, RuleSet, When
from rules._errors import ConfigurationError
from rules._funds import FrozenFunds, ReserveMargin, SufficientFunds
from rules._limits import CurrencyMinimums, MaxBalanceAge, MaxPayout
from rules._money import float_refusal, to_decimal

__all__ = ["TYPES", "Document", "RuleSpec", "build_all"]


def _amount(value: object) -> Decimal:
    if isinstance(value, float):
        raise PydanticCustomError("float_amount", "{reason}", {"reason": float_refusal(value)})
    try:
        return to_decimal(value)
    except (TypeError, ValueError) as exc:
        raise PydanticCustomError(
            "amount", "{reason}; expected a number such as '100.00' (a string, an integer or "
            "a TOML/YAML decimal)", {"reason": str(exc)}
        ) from None


def _scope(value: object) -> str | tuple[str, ...]:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise PydanticCustomError(
        "scope", "expected a string or a list of strings such as ['ARS', 'BRL'], got {got}",
        {"got": repr(value)},
    )


Amount = Annotated[Decimal, PlainValidator(_amount)]
Scope = Annotated[str | tuple[str, ...], PlainValidator(_scope)]
AmountTable = dict[str, Amount]
_SCOPE = ("currency", "provider")


def at(path: str, make: Callable[[], Rule]) -> Rule:
    """Return ``make()``, re-raising its ConfigurationError with *path* in front of its own."""
    try:
        return make()
    except ConfigurationError as exc:
        where = f"{path}.{exc.path}" if exc.path and not exc.path.startswith("[") else (
            path + exc.path
        )
        raise ConfigurationError(exc.message, path=where) from None


class _Spec(BaseModel):
    """What every entry may carry: a scope that wraps it in ``when(...)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: Scope | None = None
    provider: Scope | None = None

    def to_rule(self) -> Rule:
        """Return the rule this entry describes, without its scope."""
        raise NotImplementedError  # pragma: no cover - every entry type overrides it

    def make(self, path: str) -> Rule:
        """Return :meth:`to_rule`'s rule, its errors naming *path*."""
        return at(path, self.to_rule)

    def build(self, path: str) -> Rule:
        """Return the rule, scoped when the entry names a currency or provider."""
        rule = self.make(path)
        if self.currency is None and self.provider is None:
            return rule
        return at(path, lambda: When(rule, currency=self.currency, provider=self.provider))


class SufficientFundsSpec(_Spec):
    """``{type = "sufficient_funds"}``."""

    type: Literal["sufficient_funds"]

    def to_rule(self) -> Rule:
        return SufficientFunds()


class ReserveMarginSpec(_Spec):
    """``{type = "reserve_margin", percent = "5", minimum = {ARS = "1000.00"}}``."""

    type: Literal["reserve_margin"]
    percent: Amount | None = None
    minimum: AmountTable | None = None
    basis: Literal["available", "total"] = "available"

    def to_rule(self) -> Rule:
        return ReserveMargin(percent=self.percent, minimum=self.minimum, basis=self.basis)


class FrozenFundsSpec(_Spec):
    """``{type = "frozen_funds", max_ratio = "0.5", when_unknown = "warn"}``."""

    type: Literal["frozen_funds"]
    max_ratio: Amount | None = None
    when_unknown: Literal["allow", "warn", "deny"] = "allow"

    def to_rule(self) -> Rule:
        return FrozenFunds(max_ratio=self.max_ratio, when_unknown=self.when_unknown)


class CurrencyMinimumsSpec(_Spec):
    """``{type = "currency_minimums", min_payout = {...}, min_remaining = {...}}``."""

    type: Literal["currency_minimums"]
    min_payout: AmountTable | None = None
    min_remaining: AmountTable | None = None

    def to_rule(self) -> Rule:
        return CurrencyMinimums(min_payout=self.min_payout, min_remaining=self.min_remaining)


class MaxPayoutSpec(_Spec):
    """``{type = "max_payout", limits = {BRL = "5000.00"}}``."""

    type: Literal["max_payout"]
    limits: AmountTable

    def to_rule(self) -> Rule:
        return MaxPayout(self.limits)


class MaxBalanceAgeSpec(_Spec):
    """``{type = "max_balance_age", seconds = 30}``."""

    type: Literal["max_balance_age"]
    seconds: Amount | None = None

    def to_rule(self) -> Rule:
        return MaxBalanceAge() if self.seconds is None else MaxBalanceAge(self.seconds)


class AllOfSpec(_Spec):
    """``{type = "all_of", rules = [...]}``: every nested rule must pass."""

    type: Literal["all_of"]
    rules: list[RuleSpec]

    def make(self, path: str) -> Rule:
        members = build_all(self.rules, f"{path}.rules")
        return at(f"{path}.rules", lambda: RuleSet(members))


class AnyOfSpec(_Spec):
    """``{type = "any_of", rules = [...]}``: at least one nested rule must pass."""

    type: Literal["any_of"]
    rules: list[RuleSpec]

    def make(self, path: str) -> Rule:
        members = build_all(self.rules, f"{path}.rules")
        return at(f"{path}.rules", lambda: AnyOf(members))


RuleSpec = Annotated[
    SufficientFundsSpec
    | ReserveMarginSpec
    | FrozenFundsSpec
    | CurrencyMinimumsSpec
    | MaxPayoutSpec
    | MaxBalanceAgeSpec
    | AllOfSpec
    | AnyOfSpec,
    Field(discriminator="type"),
]

AllOfSpec.model_rebuild()
AnyOfSpec.model_rebuild()


class Document(BaseModel):
    """``{"rules": [...]}``: the whole of a rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[RuleSpec]


SPECS: dict[str, type[_Spec]] = {
    "all_of": AllOfSpec,
    "any_of": AnyOfSpec,
    "currency_minimums": CurrencyMinimumsSpec,
    "frozen_funds": FrozenFundsSpec,
    "max_balance_age": MaxBalanceAgeSpec,
    "max_payout": MaxPayoutSpec,
    "reserve_margin": ReserveMarginSpec,
    "sufficient_funds": SufficientFundsSpec,
}
TYPES: tuple[str, ...] = tuple(sorted(SPECS))


def keys_of(type_name: str) -> tuple[str, ...]:
    """Return the keys an entry of *type_name* accepts: ``type``, its own, then the scope."""
    own = [key for key in SPECS[type_name].model_fields if key not in ("type", *_SCOPE)]
    return ("type", *own, *_SCOPE)


def build_all(specs: list[Any], path: str) -> list[Rule]:
    """Return the rules of validated *specs*, errors naming ``<path>[i]``."""
    return [spec.build(f"{path}[{index}]") for index, spec in enumerate(specs)]

