"""Replay: judge logged decisions again, on exactly the facts they were made on, with other rules.

A decision record (``guard/_records.py``) carries the balance, the held total, the balance's
age and our own payouts in flight of every provider the payout was judged at. Replaying runs
the decision core itself (``guard/_core.py``) over those facts: each step it asks for is
answered from the record instead of a provider or a store, so the new rules judge exactly as
a guard would have, routing and all. The same rules give the same decision.

Some decisions were not the rules' to make, and are carried over unchanged (``rejudged`` is
``False``): an id already taken (``duplicate_payout``), a store that could not answer, a
provider that could not be read or did not hold the currency, concurrent payouts that took the
room before the hold. They depend on the state of the moment, which no rule changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, NamedTuple

from guard._cache import SKEW_WARNING, Fetched
from guard._config import ConfigSource, load_config
from guard._core import (
    Core,
    FetchBalances,
    GetHold,
    ListHolds,
    Policy,
    ReadCommitted,
    ReadHeld,
    Step,
    run,
)
from guard._guard import guard_rules, watches_frozen
from guard._models import BalanceSnapshot, Decision, Reason
from guard._reasons import unavailable_reason
from guard._records import DecisionRecord, rules_fingerprint
from guard._request import Request
from guard.errors import ProviderUnavailable, StoreUnavailable
from guard.stores import Hold
from rules import Rule, RuleSet
from rules.money import ADD

__all__ = ["Change", "ReplaySummary", "Replayed", "Replayer", "outcome", "rejudgeable"]

Change = Literal["unchanged", "allowed_to_denied", "denied_to_allowed", "reasons_changed"]

_ELSEWHERE = "(a provider without the currency)"


@dataclass(frozen=True, slots=True)
class Replayed:
    """One logged decision and the decision the replayed rules make on its facts.

    Attributes:
        record: The logged record (``record.decision`` is the decision as it was made).
        after: The decision made again (the logged one itself when not ``rejudged``).
        rejudged: Whether the rules judged it again (``False``: carried over, see module).
    """

    record: DecisionRecord
    after: Decision
    rejudged: bool

    @property
    def before(self) -> Decision:
        """Return the decision as it was made."""
        return self.record.decision

    @property
    def change(self) -> Change:
        """Return how the decision changed: the outcome first, then the reasons' codes."""
        before, after = self.before, self.after
        if before.allowed and not after.allowed:
            return "allowed_to_denied"
        if after.allowed and not before.allowed:
            return "denied_to_allowed"
        if outcome(before) != outcome(after):
            return "reasons_changed"
        return "unchanged"


def outcome(decision: Decision) -> tuple[Any, ...]:
    """Return what a replay compares of *decision*.

    The verdict, the reasons' codes and messages, the warnings' codes, ``max_payable``, the
    provider, and each candidate's verdict, codes and ``max_payable``.
    """
    return (
        decision.allowed,
        tuple((r.code, r.message) for r in decision.reasons),
        tuple(w.code for w in decision.warnings),
        decision.max_payable,
        decision.provider,
        tuple((c.provider, c.allowed, c.codes, c.max_payable) for c in decision.candidates),
    )


class _Facts(NamedTuple):
    """What one provider's judgement was made on, as the record keeps it."""

    balance: BalanceSnapshot | None
    reserved: Decimal | None
    age: float | None
    own: Decimal
    codes: tuple[str, ...]


class _ReplayClock:
    """The clocks a replay judges by: the decision's wall time and a monotonic 0."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return 0.0


class Replayer:
    """Judges logged decisions again with *rules* (``SufficientFunds`` added when missing).

    Args:
        rules: The rules to judge with.
        fail_open: As the guard's option: how a provider that could not be read is judged.
        routing: As the guard's option: the order a routed payout's candidates are tried in.
        own_payouts_window: As the guard's option (only its presence matters here: our own
            payouts in flight are read from the record).
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        fail_open: bool = False,
        routing: Policy = "priority",
        own_payouts_window: float = 3600.0,
    ) -> None:
        self.rules: RuleSet = guard_rules(rules)
        self.fingerprint = rules_fingerprint(self.rules)
        self.fail_open = fail_open
        self.routing: Policy = routing
        self.own_window = own_payouts_window if watches_frozen(self.rules) else None
        self._clock = _ReplayClock()
        self._cores: dict[tuple[tuple[str, ...], str], Core] = {}

    @classmethod
    def from_config(cls, source: ConfigSource) -> Replayer:
        """Return the replayer of a configuration's rules, ``fail_open`` and routing policy.

        Raises:
            ConfigurationError: the configuration is invalid.
        """
        config = load_config(source)
        window = float(config.reservations.own_payouts_window)  # money-ok: seconds
        return cls(config.ruleset, fail_open=config.fail_open, routing=config.routing.policy,
                   own_payouts_window=window)

    def replay_all(self, records: Iterable[DecisionRecord]) -> Iterator[Replayed]:
        """Yield each record replayed, in order."""
        for record in records:
            yield self.replay(record)

    def replay(self, record: DecisionRecord) -> Replayed:
        """Return *record*'s decision made again with this replayer's rules."""
        before = record.decision
        if not rejudgeable(before):
            return Replayed(record, before, rejudged=False)
        if before.candidates:
            facts = {c.provider: _Facts(c.balance, c.reserved, c.balance_age, c.own_in_flight,
                                        c.codes) for c in before.candidates}
            if len(facts) == 1:
                # Routed to the one provider holding the currency: the others were judged and
                # left out. One that holds none stands for them, so the core routes again.
                facts[_ELSEWHERE] = _Facts(None, None, None, Decimal(0), ("currency_not_held",))
        else:
            reserved = None if before.balance_age is None else before.reserved
            facts = {before.provider: _Facts(before.balance, reserved, before.balance_age,
                                             before.own_in_flight, before.codes)}
        core = self._core(tuple(facts), before.mode)
        self._clock.now = before.evaluated_at.timestamp()
        request = Request(before.amount, before.currency, before.fee, before.account,
                          before.payout_id)
        answers = _Answers(before, facts)
        after, _ = run(core.check(request), answers.perform)
        unread = [p for p, f in facts.items() if f.balance is None and not _not_held(f)]
        if unread:
            after = self._as_recorded(after, before, unread)
        return Replayed(record, after, rejudged=True)

    def _as_recorded(self, after: Decision, before: Decision, unread: list[str]) -> Decision:
        """Return *after* with the reasons recorded for the providers in *unread*.

        A provider whose balance could not be read is not read again: its reason (the
        provider's own error, its retry_after, a rejected key) is the one recorded, word
        for word, where the replay could only say that the balance was not read.
        """
        update: dict[str, Any] = {}
        for kind in ("reasons", "warnings"):
            made: tuple[Reason, ...] = getattr(after, kind)
            recorded: tuple[Reason, ...] = getattr(before, kind)
            for provider in unread:
                stand_in = unavailable_reason(provider, after.currency, _unread(provider),
                                              allowed=kind == "warnings")
                found = _recorded_unavailable(recorded, provider, after.currency)
                if found is not None and stand_in in made:
                    made = tuple(found if reason == stand_in else reason for reason in made)
            update[kind] = made
        return after.model_copy(update=update)

    def _core(self, providers: tuple[str, ...], mode: Any) -> Core:
        core = self._cores.get((providers, mode))
        if core is None:
            core = self._cores[providers, mode] = Core(
                providers=providers, rules=self.rules, mode=mode, fail_open=self.fail_open,
                settle_lags=dict.fromkeys(providers, 0.0), clocks=self._clock,
                own_window=self.own_window, routing=self.routing,
            )
        return core


def rejudgeable(decision: Decision) -> bool:
    """Return whether the rules made *decision*, so that other rules could make another.

    Not when the payout id was taken, when concurrent payouts took the room at a provider
    that allowed it, when the store could not answer, or when no balance was judged at all.
    """
    if any(r.code == "duplicate_payout" for r in decision.reasons):
        return False
    if decision.candidates:
        if any(c.lost for c in decision.candidates):
            return False
        if not decision.allowed and any(c.allowed for c in decision.candidates):
            return False  # allowed somewhere, then refused by the store
        return any(c.balance_age is not None for c in decision.candidates)
    if decision.balance_age is None:
        return False
    return not any(r.rule == "guard" and r.code != "rule_error" for r in decision.reasons)


class _Answers:
    """Answers a replayed flow's steps from a record's facts."""

    def __init__(self, decision: Decision, facts: dict[str, _Facts]) -> None:
        self.decision = decision
        self.facts = facts
        self.now = decision.evaluated_at.timestamp()
        self.skew = _skew_of(decision)

    def perform(self, step: Step) -> Any:
        if isinstance(step, FetchBalances):
            return self._fetched(step.provider)
        if isinstance(step, ReadHeld):
            facts = self.facts[step.key.split("|", 1)[0]]
            if facts.reserved is None:
                raise StoreUnavailable("the store did not answer when this was decided",
                                       store="replay")
            return facts.reserved
        if isinstance(step, ReadCommitted):
            return self.facts[step.key.split("|", 1)[0]].own
        if isinstance(step, ListHolds):
            return self._holds(step.key)
        if isinstance(step, GetHold):
            return None  # a taken id is never re-judged (see rejudgeable)
        raise TypeError(f"a replay does not answer {type(step).__name__}")  # pragma: no cover

    def _fetched(self, provider: str) -> Fetched:
        facts = self.facts[provider]
        balance = facts.balance
        if balance is None:
            if _not_held(facts):
                return Fetched({}, self.now, 0.0, 0.0, self.now, {})
            raise _unread(provider)  # its recorded reason is put back (Replayer._as_recorded)
        as_of = balance.as_of.timestamp()
        # Arrived at its own as_of, and -age on a monotonic clock that reads 0 now: the core
        # computes exactly the recorded age (0.0 + age, and 0.0 - -age).
        skew = self.skew if provider == self.decision.provider else 0.0
        return Fetched({balance.account: balance}, as_of, -(facts.age or 0.0), skew, as_of, {})

    def _holds(self, key: str) -> list[Hold]:
        decision = self.decision
        if key.split("|", 1)[0] != decision.provider:
            return []
        holds = [
            Hold(payout_id=h.payout_id, key=key, currency=decision.currency, amount=h.amount,
                 fee=Decimal(0), state=h.state, created_at=self.now, expires_at=math.inf)
            for h in decision.holds
        ]
        if decision.more_holds:  # one more than shown: the core only counts it
            holds.append(Hold(payout_id="(more)", key=key, currency=decision.currency,
                              amount=Decimal(0), fee=Decimal(0), state="pending",
                              created_at=self.now, expires_at=math.inf))
        return holds


def _not_held(facts: _Facts) -> bool:
    """Return whether the provider of *facts* reported no balance in the currency."""
    return "currency_not_held" in facts.codes


def _unread(provider: str) -> ProviderUnavailable:
    """Return what a replay raises for a provider whose balance was not read when decided."""
    return ProviderUnavailable(
        f"{provider}'s balance could not be read when this was decided", provider=provider
    )


def _recorded_unavailable(
    reasons: tuple[Reason, ...], provider: str, currency: str
) -> Reason | None:
    """Return the ``balance_unavailable`` reason recorded for *provider*, if one is."""
    worded = (f"could not read the {currency} balance from {provider} (",
              f"{provider} rejected the credentials used to read the {currency} balance")
    for reason in reasons:
        if (reason.code == "balance_unavailable" and reason.rule == "guard"
                and "store" not in reason.details and reason.message.startswith(worded)):
            return reason
    return None


def _skew_of(decision: Decision) -> float:
    """Return a skew that gives the decision's ``clock_skew`` warning again (0 without one)."""
    for warning in decision.warnings:
        if warning.code == "clock_skew":
            seconds = float(warning.details.get("skew_seconds", 0))
            # Rounded when logged: a value just above the threshold rounds to it again.
            return seconds if seconds > SKEW_WARNING else SKEW_WARNING + 0.5
    return 0.0


@dataclass
class ReplaySummary:
    """What changed over a replay, counted, with totals per currency.

    Attributes:
        total: Records replayed.
        unchanged: Records whose decision is the same (outcome, reasons, max payable).
        carried: Records carried over unchanged because no rule made them (see module).
        reasons_changed: Same verdict, other reasons (or another provider or max payable).
        allowed_to_denied: Reason code -> currency -> [count, total amount] of payouts
            allowed then and denied now (a payout denied for two reasons counts under both).
        denied_to_allowed: Currency -> [count, total amount] of payouts denied then and
            allowed now.
        newly_denied: Payouts allowed then and denied now (each once).
    """

    total: int = 0
    unchanged: int = 0
    carried: int = 0
    reasons_changed: int = 0
    allowed_to_denied: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    denied_to_allowed: dict[str, list[Any]] = field(default_factory=dict)
    newly_denied: int = 0

    @property
    def newly_allowed(self) -> int:
        """Return how many payouts were denied then and are allowed now."""
        return sum(count for count, _ in self.denied_to_allowed.values())

    def add(self, replayed: Replayed) -> None:
        """Count *replayed*."""
        self.total += 1
        if not replayed.rejudged:
            self.carried += 1
        change = replayed.change
        if change == "unchanged":
            self.unchanged += 1
            return
        if change == "reasons_changed":
            self.reasons_changed += 1
            return
        after = replayed.after
        amount, currency = after.amount, after.currency
        if change == "allowed_to_denied":
            self.newly_denied += 1
            for code in dict.fromkeys(after.codes):
                _tally(self.allowed_to_denied.setdefault(code, {}), currency, amount)
        else:
            _tally(self.denied_to_allowed, currency, amount)

    def as_data(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data (amounts as strings)."""
        return {
            "total": self.total,
            "unchanged": self.unchanged,
            "carried": self.carried,
            "reasons_changed": self.reasons_changed,
            "allowed_to_denied": {
                "count": self.newly_denied,
                "by_code": {
                    code: {cur: {"count": n, "total": str(t)} for cur, (n, t) in sorted(by.items())}
                    for code, by in sorted(self.allowed_to_denied.items())
                },
            },
            "denied_to_allowed": {
                "count": self.newly_allowed,
                "by_currency": {cur: {"count": n, "total": str(t)}
                                for cur, (n, t) in sorted(self.denied_to_allowed.items())},
            },
        }


def _tally(by_currency: dict[str, list[Any]], currency: str, amount: Decimal) -> None:
    entry = by_currency.setdefault(currency, [0, Decimal(0)])
    entry[0] += 1
    entry[1] = ADD(entry[1], amount)
