"""Invariants of the guard as hypothesis properties (DESIGN.md, Invariants 1-4 and 6)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from structlog.testing import capture_logs

from guard import Decision, InvalidPayoutRequest, PayoutDenied, PayoutGuard, Reservation
from guard._money import currency_exponent, parse_amount
from guard.stores import (
    InMemoryReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)
from guard.testing import StaticFetcher
from rules import Facts, ReserveMargin, Rule
from tests._guard_strategies import START, FakeClock, balances, major, unit
from tests.strategies import amounts, currencies, rule_trees

PROPERTY = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Keep thousands of decision events out of stdout (they are tested elsewhere)."""
    with capture_logs():
        yield


def build(currency: str, balance: dict[str, Any], rules: list[Rule], *, age: int = 0,
          holds: tuple[Decimal, ...] = (), store: InMemoryReservations | None = None,
          ) -> tuple[PayoutGuard, StaticFetcher]:
    """Return a guard over one balance *age* seconds old, with *holds* reserved first."""
    clock = FakeClock()
    spec = {**balance, "as_of": datetime.fromtimestamp(START - age, UTC)}
    fetcher = StaticFetcher({currency: spec}, clock=clock)
    guard = PayoutGuard(fetcher, rules, clock=clock, cache_ttl=0, reservations=store)
    for n, held in enumerate(holds):
        with contextlib.suppress(PayoutDenied):
            guard.reserve(held, currency, payout_id=f"hold_{n}")
    return guard, fetcher


@st.composite
def scenarios(draw: st.DrawFn, *, trees: bool) -> dict[str, Any]:
    """Draw a currency, a balance, rules, a fee, prior holds and a balance age."""
    currency = draw(currencies())
    rules: list[Rule] = draw(st.lists(
        rule_trees(currency) if trees else _reserve_margins(currency), max_size=2
    ))
    return {
        "currency": currency,
        "balance": draw(balances(currency)),
        "rules": rules,
        "age": draw(st.sampled_from([0, 0, 30, 90, 600])),
        "holds": tuple(draw(st.lists(amounts(currency, max_value=50_000), max_size=3))),
        "fee": draw(amounts(currency, min_value=0, max_value=100)),
    }


def _reserve_margins(currency: str) -> st.SearchStrategy[Rule]:
    return st.builds(
        ReserveMargin,
        percent=st.integers(0, 5000).map(lambda n: str(Decimal(n).scaleb(-2))),
        minimum=st.dictionaries(st.just(currency), amounts(currency, min_value=0,
                                                           max_value=100_000), max_size=1),
        basis=st.sampled_from(["available", "total"]),
    )


class TestNoOverspend:
    @PROPERTY
    @given(scenarios(trees=False), st.data())
    def test_no_allowed_payout_exceeds_spendable_minus_reserve_minus_fee(
        self, scenario: dict[str, Any], data: st.DataObject
    ) -> None:
        """Allowed implies amount + fee <= available - held - the largest reserve kept."""
        currency = scenario["currency"]
        guard, _ = build(currency, scenario["balance"], scenario["rules"],
                         holds=scenario["holds"])
        amount = data.draw(amounts(currency, max_value=200_000))
        decision = guard.check(amount, currency, fee=scenario["fee"])
        balance = decision.balance
        assert balance is not None
        assert balance.available - decision.reserved == decision.spendable
        facts = Facts(amount=decision.amount, currency=currency, available=balance.available,
                      fee=decision.fee, frozen=balance.frozen, total=balance.total,
                      reserved=decision.reserved)
        reserve = max((r.reserve_for(facts) for r in scenario["rules"]
                       if isinstance(r, ReserveMargin)), default=Decimal(0))
        event("allowed" if decision.allowed else "denied")
        if decision.allowed:
            assert decision.amount + decision.fee <= decision.spendable - reserve
            assert decision.amount <= decision.max_payable
        else:
            assert decision.amount + decision.fee > decision.spendable - reserve


class TestMaxPayable:
    @PROPERTY
    @given(scenarios(trees=True), st.data())
    def test_max_payable_is_allowed_and_one_unit_more_is_denied(
        self, scenario: dict[str, Any], data: st.DataObject
    ) -> None:
        """For any built-in rules, balance, fee and holds, max_payable is exact."""
        currency, fee = scenario["currency"], scenario["fee"]
        guard, _ = build(currency, scenario["balance"], scenario["rules"], age=scenario["age"],
                         holds=scenario["holds"])
        best = guard.check(unit(currency), currency, fee=fee).max_payable
        event("something payable" if best > 0 else "nothing payable")
        if best > 0:
            allowed = guard.check(best, currency, fee=fee)
            assert (True, best) == (allowed.allowed, allowed.max_payable)
        assert not guard.check(best + unit(currency), currency, fee=fee).allowed
        if fee == 0:
            assert best == guard.max_payable(currency)
        anywhere = guard.check(data.draw(amounts(currency, max_value=200_000)), currency,
                               fee=fee)
        assert not anywhere.allowed or anywhere.amount <= best


class TestDeterminism:
    @PROPERTY
    @given(scenarios(trees=True), st.data())
    def test_same_facts_same_decision_and_nothing_changes(
        self, scenario: dict[str, Any], data: st.DataObject
    ) -> None:
        """Checking twice gives the same decision (but its id); store and balance unchanged."""
        currency = scenario["currency"]
        store = InMemoryReservations()
        guard, fetcher = build(currency, scenario["balance"], scenario["rules"],
                               age=scenario["age"], holds=scenario["holds"], store=store)
        key = balance_key("static", None, currency)
        amount = data.draw(amounts(currency, max_value=200_000))
        before = (store.holds(key, counted_since=0, now=START), fetcher.fetch())
        first = guard.check(amount, currency, fee=scenario["fee"])
        second = guard.check(amount, currency, fee=scenario["fee"])
        after = (store.holds(key, counted_since=0, now=START), fetcher.fetch())
        assert before == after
        ignored = {"decision_id", "evaluated_at"}
        assert first.model_dump(exclude=ignored) == second.model_dump(exclude=ignored)


class TestExactMoney:
    @PROPERTY
    @given(st.data())
    def test_amounts_round_trip_at_the_currency_exponent(self, data: st.DataObject) -> None:
        """str, Decimal and (for whole units) int inputs come back exact, also via JSON."""
        currency = data.draw(currencies())
        exponent = currency_exponent(currency)
        minor = data.draw(st.integers(1, 10**15))
        amount = major(minor, currency)
        text = str(amount)
        assert len(text.partition(".")[2]) == exponent
        assert text == str(parse_amount(text, currency))
        assert text == str(parse_amount(amount.normalize(), currency))
        if minor % 10**exponent == 0:
            assert text == str(parse_amount(minor // 10**exponent, currency))
        guard = PayoutGuard(StaticFetcher({currency: "1"}))
        decision = guard.check(text, currency)
        back = Decision.model_validate_json(decision.model_dump_json())
        assert (text, decision) == (str(back.amount), back)


JUNK = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.binary(max_size=8),
    st.sampled_from(["NaN", "nan", "-NaN", "sNaN", "Infinity", "-inf", "1e", "--1", "0x10",
                     "1,5", "\u0661\u0660", "1_0", " ", "", "+1.00", "1E+99999", "1e-99999"]),
    st.integers(-(10**40), 10**40).map(lambda e: f"1E{e}"),
    st.integers(-(10**40), 10**40),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
CURRENCY_JUNK = st.one_of(
    st.sampled_from(["BRL", "brl", " CLP ", "KWD", "VEF", "XAU", "ZZZ", "", "BRLL", "bR",
                     "ÄÄÄ", "Uß", "B\x00L", "\U0001d401\U0001d411\U0001d40b"]),
    st.text(max_size=5),
    st.none(),
    st.binary(max_size=4),
    st.integers(),
    st.floats(),
)


class TestOnlyInvalidPayoutRequest:
    @settings(max_examples=400, deadline=None)
    @given(amount=JUNK, currency=CURRENCY_JUNK, fee=st.one_of(st.none(), JUNK),
           account=st.one_of(st.none(), st.text(max_size=3), st.integers()),
           payout_id=st.one_of(st.none(), st.text(max_size=3), st.binary(max_size=2)))
    def test_junk_raises_only_invalid_payout_request(
        self, amount: object, currency: object, fee: object, account: object,
        payout_id: object,
    ) -> None:
        """Whatever is passed, check returns a Decision or raises InvalidPayoutRequest."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00", "CLP": "5000", "KWD": "1.000"}))
        outcome: object
        try:
            outcome = guard.check(amount, currency, fee=fee, account=account,  # type: ignore[arg-type]  # junk on purpose
                                  payout_id=payout_id)  # type: ignore[arg-type]  # junk on purpose
        except InvalidPayoutRequest as exc:
            outcome = exc
        assert isinstance(outcome, Decision) or str(outcome)


def _ceil_percent(available: Decimal, percent: Decimal, currency: str) -> Decimal:
    return (available * percent / 100).quantize(unit(currency), rounding=ROUND_CEILING)


@dataclass
class ModelHold:
    """What the test expects the store to hold for one payout."""

    amount: Decimal
    fee: Decimal
    expires_at: float
    committed_at: float | None = None

    def counts(self, now: float, lag: float) -> bool:
        """Pending and unexpired, or committed after the balance's ``as_of - lag``."""
        if self.committed_at is None:
            return now < self.expires_at
        return self.committed_at > now - lag


class ReservationMachine(RuleBasedStateMachine):
    """Reserve, commit, release, repeat, let time pass and move the balance, in any order.

    A model of the holds says which ones count (pending and unexpired; committed after the
    balance's ``as_of - settle_lag``). Every reserve must be allowed exactly when it fits
    under ``available - reserve`` next to the holds that count, and check never raises.
    """

    CURRENCY = "BRL"
    TTL, LAG, PERCENT = 60.0, 30.0, Decimal(10)

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.fetcher = StaticFetcher({self.CURRENCY: "1000"}, clock=self.clock)
        self.available = Decimal(1000)
        self.store = self.make_store()
        self.guard = PayoutGuard(
            self.fetcher, [ReserveMargin(percent=self.PERCENT)], cache_ttl=0,
            settle_lag=self.LAG, hold_ttl=self.TTL, clock=self.clock, reservations=self.store,
        )
        self.model: dict[str, ModelHold] = {}
        self.open: dict[str, Reservation] = {}
        self.serial = 0

    def make_store(self) -> ReservationStore:
        """Return the store the guard holds funds in."""
        return InMemoryReservations()

    def teardown(self) -> None:
        self.store.close()

    def counted(self) -> Decimal:
        now = self.clock()
        total = Decimal(0)
        for hold in self.model.values():
            if hold.counts(now, self.LAG):
                total += hold.amount + hold.fee
        return total

    def room(self) -> Decimal:
        reserve = _ceil_percent(self.available, self.PERCENT, self.CURRENCY)
        return self.available - reserve - self.counted()

    def live(self) -> list[str]:
        now = self.clock()
        return sorted(p for p, hold in self.model.items()
                      if hold.committed_at is not None or now < hold.expires_at)

    @rule(minor=st.integers(1, 70_000), fee_minor=st.integers(0, 500))
    def reserve(self, minor: int, fee_minor: int) -> None:
        amount, fee = major(minor, self.CURRENCY), major(fee_minor, self.CURRENCY)
        self.serial += 1
        payout_id = f"po_{self.serial}"
        fits = amount + fee <= self.room()
        try:
            reservation = self.guard.reserve(amount, self.CURRENCY, payout_id=payout_id, fee=fee)
        except PayoutDenied as exc:
            denied = exc.decision.codes
        else:
            denied = ()
        assert fits == (not denied)
        assert set() == set(denied) - {"insufficient_funds", "reserve_margin"}
        if denied:
            return
        self.model[payout_id] = ModelHold(amount, fee, self.clock() + self.TTL)
        self.open[payout_id] = reservation

    @precondition(lambda self: self.live())
    @rule(data=st.data())
    def repeat(self, data: st.DataObject) -> None:
        payout_id = data.draw(st.sampled_from(self.live()))
        hold = self.model[payout_id]
        for amount in (hold.amount, hold.amount + unit(self.CURRENCY)):
            with pytest.raises(PayoutDenied) as info:
                self.guard.reserve(amount, self.CURRENCY, payout_id=payout_id, fee=hold.fee)
            decision = info.value.decision
            assert (("duplicate_payout",), hold.committed_at is None) == (
                decision.codes, decision.retryable)

    @precondition(lambda self: self.open)
    @rule(data=st.data(), submitted=st.booleans())
    def finish(self, data: st.DataObject, submitted: bool) -> None:
        payout_id = data.draw(st.sampled_from(sorted(self.open)))
        reservation = self.open.pop(payout_id)
        if submitted:
            reservation.commit()
            self.model[payout_id].committed_at = self.clock()
        else:
            assert reservation.release()
            del self.model[payout_id]

    @rule(seconds=st.sampled_from([0.5, 5.0, 29.0, 31.0, 59.0, 61.0, 120.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(minor=st.integers(0, 200_000))
    def change_balance(self, minor: int) -> None:
        self.available = major(minor, self.CURRENCY)
        self.fetcher.set(self.CURRENCY, self.available)

    @rule(minor=st.integers(1, 200_000))
    def check(self, minor: int) -> None:
        amount = major(minor, self.CURRENCY)
        decision = self.guard.check(amount, self.CURRENCY)
        assert (amount <= self.room()) == decision.allowed

    @invariant()
    def holds_that_count_match_the_model(self) -> None:
        assert self.counted() == self.guard.check(unit(self.CURRENCY), self.CURRENCY).reserved


class KwdReservationMachine(ReservationMachine):
    """The same machine in a 3-decimal currency."""

    CURRENCY = "KWD"


class SqliteReservationMachine(ReservationMachine):
    """The same machine with the holds in a SQLite file."""

    def make_store(self) -> ReservationStore:
        self.folder = Path(tempfile.mkdtemp(prefix="payout-guard-machine-"))
        return SqliteReservations(self.folder / "holds.db")

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.mark.parametrize(
    "machine", [ReservationMachine, KwdReservationMachine, SqliteReservationMachine]
)
def test_reservations_never_overspend(machine: type[ReservationMachine]) -> None:
    """Run the state machine: no hold beyond what the rules permit, check never raises."""
    run_state_machine_as_test(
        machine, settings=settings(max_examples=60, stateful_step_count=30, deadline=None)
    )
