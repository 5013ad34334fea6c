"""The values the guard hands out: balance snapshots, reasons and decisions.

All are frozen pydantic models whose JSON form round-trips exactly (amounts as strings).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from guard.errors import PayoutDenied
from rules.money import ADD, normalize_currency, quantize_exact

__all__ = ["BalanceSnapshot", "Candidate", "Decision", "HoldSummary", "Mode", "Reason", "built"]

Mode = Literal["enforce", "dry_run"]


def _refuse_float(value: object) -> object:
    if isinstance(value, float):
        raise ValueError(
            f"amount {value!r} is a float, which cannot hold money exactly; "
            f"pass a Decimal or a string"
        )
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _currency(value: str) -> str:
    return normalize_currency(value)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_utc)]
Money = Annotated[Decimal, BeforeValidator(_refuse_float)]
Currency = Annotated[str, AfterValidator(_currency)]
# A detail is an amount, or a word such as a hold's state. Amounts are tried first, so an amount
# read back from JSON (a string there) is a Decimal again; a word never parses as one.
Detail = Annotated[Money | str, Field(union_mode="left_to_right")]

_FROZEN = ConfigDict(frozen=True, extra="forbid", strict=False, ser_json_inf_nan="strings")


class BalanceSnapshot(BaseModel):
    """One currency's balance at one provider, in major units at the currency's exponent.

    ``frozen`` and ``total`` are ``None`` when the provider does not report them. ``as_of`` is
    the provider's own time when it sends one, otherwise the local receive time (UTC).
    ``requested_at`` is when the guard sent the request (local time, UTC; ``None`` on a
    snapshot built by hand): the provider computed the balance after it, so a payout committed
    ``settle_lag`` seconds before it shows in it.

    Raises:
        pydantic.ValidationError: a negative amount, more decimals than the currency has, an
            unknown currency, or a naive ``as_of``.
    """

    model_config = _FROZEN

    provider: str
    currency: Currency
    available: Decimal
    frozen: Decimal | None = None
    total: Decimal | None = None
    as_of: UtcDatetime
    account: str | None = None
    requested_at: UtcDatetime | None = None

    @field_validator("available", "frozen", "total", mode="before")
    @classmethod
    def _no_float(cls, value: object) -> object:
        return _refuse_float(value)

    @model_validator(mode="after")
    def _exact_amounts(self) -> BalanceSnapshot:
        for name in ("available", "frozen", "total"):
            value = getattr(self, name)
            if value is None:
                continue
            if not value.is_finite() or value < 0:
                raise ValueError(f"{name} must be a finite amount >= 0, got {value}")
            object.__setattr__(self, name, quantize_exact(value, self.currency))
        return self


class Reason(BaseModel):
    """Why a decision went the way it did: one failing (or warning) rule.

    Attributes:
        code: Stable reason code (``insufficient_funds``, ``balance_unavailable``, ...).
        message: What a person should read, with the numbers.
        rule: The rule that produced it (``"guard"`` for the guard's own reasons).
        retryable: Whether the same payout may be allowed later.
        details: Observed and required amounts, and words for the guard's own reasons:
            ``state`` on a ``duplicate_payout`` (the state of the hold under the id),
            ``"cause": "credentials"`` on a ``balance_unavailable`` whose credentials were
            rejected.
    """

    model_config = _FROZEN

    code: str
    message: str
    rule: str
    retryable: bool = False
    details: dict[str, Detail] = {}


class HoldSummary(BaseModel):
    """An in-flight payout whose hold reduced what was spendable."""

    model_config = _FROZEN

    payout_id: str
    amount: Money
    state: Literal["pending", "committed", "uncertain"]


class Candidate(BaseModel):
    """One provider a routed payout was judged at (``Decision.candidates``).

    Attributes:
        provider: The provider's name.
        allowed: Whether this provider's rules allowed the payout (for a held payout: and
            the hold was taken there).
        max_payable: The largest amount this provider could pay now with the same fee.
        codes: The reason codes of its denial (empty when allowed).
        lost: Its rules allowed the payout, but concurrent payouts took the room there
            before the hold (``allowed`` is then ``False``, ``codes`` insufficient_funds).
        balance: The balance it was judged on (``None`` when none could be read).
        reserved: The holds counted against it when judged (``None`` when not read).
        balance_age: How old that balance was, in seconds, when judged.
        own_in_flight: Our own recently sent payouts counted as explaining frozen funds.

    The last four are the facts the payout was judged on there: what ``payout-guard
    replay`` judges again.
    """

    model_config = _FROZEN

    provider: str
    allowed: bool
    max_payable: Money
    codes: tuple[str, ...] = ()
    lost: bool = False
    balance: BalanceSnapshot | None = None
    reserved: Money | None = None
    balance_age: float | None = None
    own_in_flight: Money = Decimal(0)


class Decision(BaseModel):
    """The guard's answer for one payout. A denial is a return value, not an exception.

    Attributes:
        decision_id: Unique id, for logs and audit.
        allowed: Whether the payout may go out now (in dry-run mode: whether it would).
            ``blocks`` says whether it is stopped: only an enforced denial is.
        mode: ``"enforce"`` or ``"dry_run"``.
        amount: Requested amount; fee: the provider's fee, both in major units.
        reasons: Why it was denied (empty when allowed).
        warnings: Non-blocking concerns.
        balance: The snapshot judged, or ``None`` when none could be had.
        reserved: This merchant's in-flight holds subtracted from ``available``.
        reserve: The largest reserve a rule kept untouched.
        spendable: ``available - reserved``.
        max_payable: The largest amount that would be allowed now with the same fee.
        holds: In-flight payouts that make up ``reserved`` (up to 20, on denials only).
        more_holds: Whether more in-flight payouts hold funds than ``holds`` lists.
        candidates: For a payout routed over several providers, every provider judged, in
            the order tried (empty for a guard of one provider, or a pinned payout).
            ``provider`` is then the chosen one (for a denial, the first candidate) and
            ``max_payable`` the best any candidate could pay.
        balance_age: How old ``balance`` was, in seconds, when it was judged (``None`` when
            no rule judged it: no balance, or the store could not say what was held).
        balance_source: ``"fetched"`` when the balance was requested for this decision,
            ``"cached"`` when an earlier answer was reused (``None`` without a balance).
        own_in_flight: Our own payouts sent within ``own_payouts_window`` that
            ``FrozenFunds(max_ratio=...)`` took to explain frozen funds (0 when not asked).

    With ``balance``, ``reserved`` and these three, a decision carries every fact its rules
    judged: ``DecisionRecord`` logs it and ``payout-guard replay`` judges it again.
    """

    model_config = _FROZEN

    decision_id: str
    allowed: bool
    mode: Mode
    amount: Money
    currency: Currency
    fee: Money
    provider: str
    account: str | None = None
    payout_id: str | None = None
    reasons: tuple[Reason, ...] = ()
    warnings: tuple[Reason, ...] = ()
    balance: BalanceSnapshot | None = None
    reserved: Money = Decimal(0)
    reserve: Money = Decimal(0)
    spendable: Money = Decimal(0)
    max_payable: Money = Decimal(0)
    holds: tuple[HoldSummary, ...] = ()
    more_holds: bool = False
    candidates: tuple[Candidate, ...] = ()
    evaluated_at: UtcDatetime
    balance_age: float | None = None
    balance_source: Literal["fetched", "cached"] | None = None
    own_in_flight: Money = Decimal(0)

    @property
    def retryable(self) -> bool:
        """Return whether every reason says the same payout may succeed later."""
        return bool(self.reasons) and all(r.retryable for r in self.reasons)

    @property
    def codes(self) -> tuple[str, ...]:
        """Return the reason codes, in order."""
        return tuple(r.code for r in self.reasons)

    @property
    def blocks(self) -> bool:
        """Return whether the payout must not go out: a denial the guard enforces.

        Always ``False`` in ``dry_run`` mode, where ``allowed`` still says what the rules said.
        """
        return not self.allowed and self.mode == "enforce"

    def raise_for_denial(self) -> Decision:
        """Raise :class:`~guard.errors.PayoutDenied` if the decision blocks; return ``self``.

        A dry-run decision never raises, allowed or not (see :attr:`blocks`).

        Raises:
            PayoutDenied: the decision is a denial in ``enforce`` mode.
        """
        if self.blocks:
            raise PayoutDenied(self)
        return self

    def explain(self) -> str:
        """Return a short report a person can act on, with every number that mattered."""
        cur = self.currency
        verdict = "ALLOWED" if self.allowed else "DENIED"
        if self.mode == "dry_run":
            verdict += " (dry run)"
        head = f"{verdict}: payout {self.amount} {cur}"
        if self.fee:
            head += f" + fee {self.fee} {cur}"
        head += f" via {self.provider}"
        if self.account:
            head += f" account {self.account}"
        if self.payout_id:
            head += f" [{self.payout_id}]"
        lines = [head]
        rows: list[tuple[str, str]] = []
        if self.balance is not None:
            b = self.balance
            stamp = b.as_of.strftime("%Y-%m-%d %H:%M:%SZ")
            rows.append(("available", f"{b.available} {cur}  (as of {stamp})"))
            if b.frozen is not None:
                rows.append(("frozen", f"{b.frozen} {cur}"))
            if self.holds:
                held = _holds_text(self.holds, more=self.more_holds)
                rows.append(("held", f"{self.reserved} {cur}  ({held})"))
            else:
                rows.append(("held", f"{self.reserved} {cur}"))
            if self.reserve:
                rows.append(("reserve", f"{self.reserve} {cur}"))
            rows.append(("spendable", f"{self.spendable} {cur}"))
        rows.append(("requested", f"{ADD(self.amount, self.fee)} {cur}"))
        rows.append(("max payable", f"{self.max_payable} {cur}"))
        width = max(len(label) for label, _ in rows)
        lines.extend(f"  {label:<{width}}  {value}" for label, value in rows)
        for reason in self.reasons:
            # A message that already speaks of retrying is not told "(retry later)" again.
            retry = " (retry later)" if reason.retryable and "retr" not in reason.message else ""
            lines.append(f"  x {reason.code}: {reason.message}{retry}")
        lines.extend(f"  ! {w.code}: {w.message}" for w in self.warnings)
        if len(self.candidates) > 1:
            lines.extend(_candidates_table(self.candidates, cur, chosen=self.provider,
                                           allowed=self.allowed))
        return "\n".join(lines)

    def log_fields(self) -> dict[str, Any]:
        """Return the key/value fields of the ``payout_guard.decision`` log event.

        Everything the decision was judged on is there (amounts as strings): the request,
        the balance, the held total, the balance's age and source, our own payouts in
        flight, reasons with messages, warnings, ``max_payable`` and the candidates, each
        with its facts. ``decision.model_dump(mode="json")`` is the same in full.
        """
        fields: dict[str, Any] = {
            "decision_id": self.decision_id,
            "allowed": self.allowed,
            "codes": [reason.code for reason in self.reasons],
            "amount": str(self.amount),
            "currency": self.currency,
            "provider": self.provider,
            "mode": self.mode,
            "payout_id": self.payout_id,
            "fee": str(self.fee),
            "account": self.account,
            "reasons": [{"code": r.code, "message": r.message} for r in self.reasons],
            "warnings": [{"code": w.code, "message": w.message} for w in self.warnings],
            "max_payable": str(self.max_payable),
            "held": str(self.reserved),
            **_facts_fields(self.balance, self.balance_age, self.own_in_flight),
            "balance_source": self.balance_source,
        }
        if self.candidates:
            fields["candidates"] = [
                {"provider": c.provider, "allowed": c.allowed,
                 "max_payable": str(c.max_payable), "codes": list(c.codes),
                 "held": None if c.reserved is None else str(c.reserved),
                 **_facts_fields(c.balance, c.balance_age, c.own_in_flight)}
                for c in self.candidates
            ]
        return fields


def _facts_fields(
    balance: BalanceSnapshot | None, age: float | None, own: Decimal
) -> dict[str, Any]:
    """Return a decision event's fields for the balance judged (``None``s when none was)."""
    if balance is None:
        return {"balance": None, "balance_age": age, "own_in_flight": str(own)}
    return {
        "balance": {
            "available": str(balance.available),
            "frozen": None if balance.frozen is None else str(balance.frozen),
            "total": None if balance.total is None else str(balance.total),
            "account": balance.account,
            "as_of": balance.as_of.isoformat(),
            "requested_at": (
                None if balance.requested_at is None else balance.requested_at.isoformat()
            ),
        },
        "balance_age": age,
        "own_in_flight": str(own),
    }


def _candidates_table(
    candidates: tuple[Candidate, ...], currency: str, *, chosen: str, allowed: bool
) -> list[str]:
    """Return the lines of ``explain()``'s table of the providers a payout was routed over."""
    rows = [("   provider", "verdict", "max payable", "reasons")]
    for c in candidates:
        mark = "-> " if allowed and c.provider == chosen else "   "
        rows.append((mark + c.provider, "allowed" if c.allowed else "denied",
                     f"{c.max_payable} {currency}", ", ".join(c.codes) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  candidates (in the order tried):"]
    lines.extend(
        f"    {p:<{widths[0]}}  {v:<{widths[1]}}  {m:>{widths[2]}}  {r}".rstrip()
        for p, v, m, r in rows
    )
    return lines


def _holds_text(holds: tuple[HoldSummary, ...], *, more: bool) -> str:
    shown = ", ".join(f"{h.payout_id} {h.amount} {h.state}" for h in holds[:3])
    count = f"more than {len(holds)}" if more else str(len(holds))
    rest = f", +{len(holds) - 3}{' and more' if more else ''} more" if len(holds) > 3 else ""
    return f"{count} in-flight: {shown}{rest}"


# The slots every pydantic model has, set directly: what model_construct sets, minus its loop.
_SET_DICT = BaseModel.__dict__["__dict__"].__set__
_SET_FIELDS_SET = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_SET_EXTRA = BaseModel.__dict__["__pydantic_extra__"].__set__
_SET_PRIVATE = BaseModel.__dict__["__pydantic_private__"].__set__
# Per model class, the set of its field names every built model shares as its fields set:
# the models are frozen, so pydantic never adds to it (``model_copy`` copies it first).
_FIELDS: dict[type[BaseModel], set[str]] = {
    cls: set(cls.model_fields) for cls in (Decision, Reason, HoldSummary, Candidate)
}
ModelT = TypeVar("ModelT", bound=BaseModel)


def built(cls: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Return a *cls* (``Decision``, ``Reason``, ...) from trusted, complete *values*, unvalidated.

    The guard's one fast constructor: what ``model_construct`` does for a model without extras
    or private attributes, without its generic per-field loop (a tenth of its cost, on the hot
    path of every check). Every field must be given, already valid; the decision tests
    round-trip such models through JSON. *cls* must be frozen: its models share one fields
    set.
    """
    fields = _FIELDS.get(cls)
    if fields is None:
        if not cls.model_config.get("frozen"):
            raise TypeError(f"built() makes frozen models only, not {cls.__name__}")
        fields = _FIELDS[cls] = set(cls.model_fields)
    model = object.__new__(cls)
    _SET_DICT(model, values)
    _SET_FIELDS_SET(model, fields)
    _SET_EXTRA(model, None)
    _SET_PRIVATE(model, None)
    return model
