"""Exactly-once payouts as a hypothesis state machine driven through ``PayoutGuard`` (issue 9).

Payouts are sent through a ``protect(payout_id=...)``-decorated function and through
``reserve`` handles kept open, retried under the same id, crashed (a handle dropped unsettled),
settled by hand, resolved after an unknown outcome, outlived by the fake clock and judged
against a balance that moves. A model of every hold, written like
``guard.stores._protocol.Hold.counts``, says what the guard must answer at every step.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import ClassVar, Literal

import pytest
import redis
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from structlog.testing import capture_logs

from guard import GuardError, PayoutDenied, PayoutGuard, Reservation
from guard.errors import PayoutNotSent, PayoutOutcomeUnknown
from guard.stores import (
    InMemoryReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
    balance_key,
)
from guard.testing import StaticFetcher
from rules import SufficientFunds
from tests._guard_strategies import FakeClock, major, unit

CURRENCY = "BRL"
KEY = balance_key("static", None, CURRENCY)
# Small round numbers the clock steps below cross from either side.
LAG, TTL, UNCERTAIN_TTL = 30.0, 60.0, 120.0

Outcome = Literal["sent", "refused", "timeout", "unknown", "bug"]
HoldState = Literal["pending", "committed", "uncertain"]
HandleState = Literal["pending", "committed", "released", "uncertain"]
#: What a reserve of an id is answered: allowed, no room, or a duplicate of a hold in a state.
Admission = Literal["allowed", "insufficient_funds"] | HoldState

#: What leaving the payout body each way raises (``None``: it returns).
RAISED: dict[Outcome, type[Exception] | None] = {
    "sent": None,
    "refused": PayoutNotSent,
    "timeout": TimeoutError,
    "unknown": PayoutOutcomeUnknown,
    "bug": ValueError,
}
Ending = Literal["commit", "release", "uncertain"]
#: What each way of leaving the body leaves in the store: the issue's table of endings.
ENDING: dict[Outcome, Ending] = {
    "sent": "commit",
    "refused": "release",
    "timeout": "uncertain",
    "unknown": "uncertain",
    "bug": "release",
}
#: The same with ``protect(uncertain_on=ValueError)``: it replaces the guard's ``OSError``.
STRICT_ENDING: dict[Outcome, Ending] = {**ENDING, "timeout": "release", "bug": "uncertain"}

amounts = st.integers(1, 6_000).map(lambda minor: major(minor, CURRENCY))
fees = st.sampled_from([0, 0, 0, 50, 150]).map(lambda minor: major(minor, CURRENCY))


@dataclass(frozen=True)
class Attempt:
    """How one send goes: how the body ends, and whether it outlives the hold's ttl first.

    With *strict*, the payout function is guarded by ``protect(uncertain_on=ValueError)``.
    """

    outcome: Outcome
    slow: bool = False
    strict: bool = False

    @property
    def ending(self) -> Ending:
        """Return what leaving the body this way does to its hold."""
        return (STRICT_ENDING if self.strict else ENDING)[self.outcome]


attempts = st.builds(
    Attempt, st.sampled_from(list(RAISED)), st.sampled_from([False] * 3 + [True]), st.booleans()
)


@pytest.fixture(autouse=True)
def _quiet_logs() -> Iterator[None]:
    """Keep the machine's decision and hold events out of stdout (tested elsewhere)."""
    with capture_logs():
        yield


@dataclass
class ModelHold:
    """What the store must record for one payout id."""

    amount: Decimal
    fee: Decimal
    state: HoldState
    expires_at: float
    owner: int  # the serial of the attempt (handle or protect call) that took it
    committed_at: float | None = None

    @property
    def held(self) -> Decimal:
        """Return what the hold takes from spendable."""
        return self.amount + self.fee

    def counts(self, now: float) -> bool:
        """Mirror ``Hold.counts`` with ``counted_since = as_of - LAG`` and ``as_of = now``."""
        if self.state == "committed":
            return self.committed_at is not None and self.committed_at > now - LAG
        return now < self.expires_at

    def taken(self, now: float) -> bool:
        """Return whether a new reserve of this id is a duplicate (all but an expired pending)."""
        return self.state != "pending" or now < self.expires_at


@dataclass
class Handle:
    """An open ``reserve`` handle and the state its ``Reservation`` must report."""

    serial: int
    payout_id: str
    reservation: Reservation
    state: HandleState


class ExactlyOnceMachine(RuleBasedStateMachine):
    """Send, retry, hold, crash, settle, resolve and wait, in any order, through the guard.

    Invariants: no payout id's body runs after it returned once, nor while an earlier attempt
    may have sent it (until resolved unsent); a reserve is allowed exactly when its id is free
    and it fits under ``available`` next to the holds that count, so what was sent plus what is
    in flight never exceeds what ``SufficientFunds`` permits when it is judged; every hold the
    guard reports matches the model, and a live pending hold always belongs to an open handle
    or to a crashed one whose ttl has not passed yet.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.available = major(30_000, CURRENCY)
        self.fetcher = StaticFetcher({CURRENCY: self.available}, clock=self.clock)
        self.store = self.make_store()
        self.guard = PayoutGuard(
            self.fetcher, [SufficientFunds()], cache_ttl=0, reservations=self.store,
            settle_lag=LAG, hold_ttl=TTL, uncertain_ttl=UNCERTAIN_TTL, clock=self.clock,
        )
        self.model: dict[str, ModelHold] = {}
        self.ids: list[str] = []
        self.handles: dict[int, Handle] = {}
        self.crashed: set[int] = set()
        self.serial = 0
        # The ledger: what bodies and commits sent, and what may have left (outcome unknown).
        self.sent: dict[str, Decimal] = {}
        self.maybe_sent: set[str] = set()

        def send(
            amount: Decimal, currency: str, *, payout_id: str, fee: Decimal, attempt: Attempt
        ) -> str:
            """Send one payout: record it in the ledger, then leave the way *attempt* says."""
            self.body_entered(payout_id)
            assert CURRENCY == currency
            if attempt.slow:  # the provider answers after the hold's ttl
                self.clock.advance(TTL + 1)
            raised = RAISED[attempt.outcome]
            if raised is not None:
                raise raised(f"payout {payout_id} ended: {attempt.outcome}")
            self.record_sent(payout_id, amount + fee)
            return payout_id

        self.send = self.guard.protect(payout_id="payout_id", fee="fee")(send)
        self.send_strict = self.guard.protect(
            payout_id="payout_id", fee="fee", uncertain_on=ValueError
        )(send)

    def make_store(self) -> ReservationStore:
        """Return the store the guard holds funds in."""
        return InMemoryReservations()

    def teardown(self) -> None:
        self.guard.close()

    # -- the model ----------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def counted(self) -> Decimal:
        """Return what the model's counting holds take from spendable now."""
        now = self.now()
        return sum((h.held for h in self.model.values() if h.counts(now)), Decimal(0))

    def fits(self, held: Decimal) -> bool:
        """Return whether ``SufficientFunds`` allows *held* next to the counting holds."""
        return held <= self.available - self.counted()

    def taken(self) -> list[str]:
        """Return the ids a new reserve must refuse as ``duplicate_payout``."""
        now = self.now()
        return sorted(p for p, h in self.model.items() if h.taken(now))

    def in_state(self, state: HoldState, *, live: bool | None = None) -> list[str]:
        """Return the ids whose hold is in *state* (and, with *live*, before or past expiry)."""
        now = self.now()
        return sorted(
            p for p, h in self.model.items()
            if h.state == state and (live is None or (now < h.expires_at) == live)
        )

    def fresh_id(self) -> str:
        self.serial += 1
        return f"po_{self.serial}"

    def pick_id(self, data: st.DataObject) -> str:
        """Draw a new payout id or, as a retried job does, one used before."""
        fresh = f"po_{self.serial + 1}"
        chosen = data.draw(st.sampled_from([fresh, *self.ids]) if self.ids else st.just(fresh))
        if chosen == fresh:
            self.serial += 1
        return chosen

    def remember(self, payout_id: str) -> None:
        if payout_id not in self.ids:
            self.ids.append(payout_id)

    def body_entered(self, payout_id: str) -> None:
        """Assert that sending *payout_id* now can be neither a second send nor a maybe-second."""
        assert payout_id not in self.sent, f"{payout_id} sent again"
        assert payout_id not in self.maybe_sent, f"{payout_id} sent again after an unknown outcome"
        found = self.guard.hold(payout_id)
        assert found is not None
        assert ("pending", False) == (found.state, found.expired(self.now()))

    def record_sent(self, payout_id: str, held: Decimal) -> None:
        assert payout_id not in self.sent, f"{payout_id} sent twice"
        self.sent[payout_id] = held
        self.maybe_sent.discard(payout_id)

    def expect_admission(self, payout_id: str, held: Decimal) -> Admission:
        """Return what a reserve of *payout_id* holding *held* must be answered now."""
        existing = self.model.get(payout_id)
        if existing is not None and existing.taken(self.now()):
            return existing.state
        return "allowed" if self.fits(held) else "insufficient_funds"

    def assert_denied(self, denied: PayoutDenied, expected: Admission) -> None:
        """Assert *denied* says what ``expect_admission`` predicted (no room or a duplicate)."""
        decision = denied.decision
        assert expected != "allowed", "an allowed payout was denied"
        if expected == "insufficient_funds":
            event("denied: insufficient_funds")
            assert ("insufficient_funds",) == decision.codes
            return
        event(f"denied: duplicate_payout of a {expected} hold")
        assert ("duplicate_payout",) == decision.codes
        assert decision.payout_id is not None
        details = decision.reasons[0].details
        assert (expected == "pending", expected, self.model[decision.payout_id].held) == (
            decision.retryable, details["state"], details["held"]
        )

    def take(self, payout_id: str, amount: Decimal, fee: Decimal, ttl: float) -> int:
        """Record a new pending hold of *payout_id* and return its owner's serial."""
        previous = self.model.get(payout_id)
        if previous is not None:
            event("an expired pending hold was taken over by a new attempt")
        self.serial += 1
        self.model[payout_id] = ModelHold(amount, fee, "pending", self.now() + ttl, self.serial)
        self.remember(payout_id)
        return self.serial

    def commit_model(self, payout_id: str) -> None:
        hold = self.model[payout_id]
        if hold.state != "committed":
            self.record_sent(payout_id, hold.held)
            hold.state, hold.committed_at = "committed", self.now()

    def uncertain_model(self, payout_id: str) -> None:
        hold = self.model[payout_id]
        hold.state, hold.expires_at = "uncertain", self.now() + UNCERTAIN_TTL
        self.maybe_sent.add(payout_id)

    def release_model(self, payout_id: str) -> None:
        del self.model[payout_id]
        self.maybe_sent.discard(payout_id)

    # -- payouts through protect --------------------------------------------------------------

    def call_send(self, payout_id: str, amount: Decimal, fee: Decimal, attempt: Attempt) -> None:
        """Send through the protected function; check that the hold ended as *attempt* says.

        A slow body outlives its hold's ttl, but as nobody took the id over meanwhile, its
        ending still acts on its own hold (a commit of an expired hold is still recorded).
        """
        send = self.send_strict if attempt.strict else self.send
        expected = self.expect_admission(payout_id, amount + fee)
        if expected != "allowed":
            with pytest.raises(PayoutDenied) as denied:
                send(amount, CURRENCY, payout_id=payout_id, fee=fee, attempt=attempt)
            self.assert_denied(denied.value, expected)
            self.remember(payout_id)
            return
        self.take(payout_id, amount, fee, TTL)
        raised = RAISED[attempt.outcome]
        if raised is None:
            assert payout_id == send(
                amount, CURRENCY, payout_id=payout_id, fee=fee, attempt=attempt
            )
        else:
            with pytest.raises(raised):
                send(amount, CURRENCY, payout_id=payout_id, fee=fee, attempt=attempt)
        event(f"protect body: {attempt}")
        if attempt.ending == "commit":
            hold = self.model[payout_id]
            hold.state, hold.committed_at = "committed", self.now()
        elif attempt.ending == "uncertain":
            self.uncertain_model(payout_id)
        else:
            self.release_model(payout_id)
        found = self.guard.hold(payout_id)
        assert found is None or found.state != "pending", "protect left a pending hold behind"

    @rule(amount=amounts, fee=fees, attempt=attempts)
    def send_payout(self, amount: Decimal, fee: Decimal, attempt: Attempt) -> None:
        """A new payout goes through ``protect``: its body runs exactly when it fits."""
        self.call_send(self.fresh_id(), amount, fee, attempt)

    @rule(attempt=attempts)
    def send_everything(self, attempt: Attempt) -> None:
        """``max_payable`` is exactly the room left: one unit more is denied, all of it fits."""
        room = max(Decimal(0), self.available - self.counted())
        assert room == self.guard.max_payable(CURRENCY)
        self.call_send(self.fresh_id(), room + unit(CURRENCY), Decimal(0), attempt)
        if room > 0:
            event("sent everything payable")
            self.call_send(self.fresh_id(), room, Decimal(0), attempt)

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), amount=amounts, fee=fees, attempt=attempts)
    def retry_payout(
        self, data: st.DataObject, amount: Decimal, fee: Decimal, attempt: Attempt
    ) -> None:
        """A retried job sends an id used before: its body runs only if the id is free again."""
        self.call_send(data.draw(st.sampled_from(self.ids)), amount, fee, attempt)

    # -- reserve handles ----------------------------------------------------------------------

    @rule(data=st.data(), amount=amounts, fee=fees,
          ttl=st.sampled_from([None, None, 30.0, 90.0]))
    def open_handle(
        self, data: st.DataObject, amount: Decimal, fee: Decimal, ttl: float | None
    ) -> None:
        """``reserve`` a new or used id and keep the handle open; allowed iff free and fitting."""
        payout_id = self.pick_id(data)
        expected = self.expect_admission(payout_id, amount + fee)
        if expected != "allowed":
            with pytest.raises(PayoutDenied) as denied:
                self.guard.reserve(amount, CURRENCY, payout_id=payout_id, fee=fee, ttl=ttl)
            self.assert_denied(denied.value, expected)
            self.remember(payout_id)
            return
        reservation = self.guard.reserve(amount, CURRENCY, payout_id=payout_id, fee=fee, ttl=ttl)
        serial = self.take(payout_id, amount, fee, TTL if ttl is None else ttl)
        self.handles[serial] = Handle(serial, payout_id, reservation, "pending")
        event("handle opened")

    @precondition(lambda self: self.taken())
    @rule(data=st.data(), amount=amounts)
    def duplicate_handle(self, data: st.DataObject, amount: Decimal) -> None:
        """A second ``reserve`` of a taken id is refused as ``duplicate_payout`` by its state."""
        payout_id = data.draw(st.sampled_from(self.taken()))
        state = self.model[payout_id].state
        with pytest.raises(PayoutDenied) as denied:
            self.guard.reserve(amount, CURRENCY, payout_id=payout_id)
        self.assert_denied(denied.value, state)

    @precondition(lambda self: self.in_state("pending"))
    @rule(data=st.data(), amount=amounts, via_protect=st.booleans(), attempt=attempts,
          stale_acts=st.booleans())
    def outlive_and_take_over(
        self, data: st.DataObject, amount: Decimal, via_protect: bool, attempt: Attempt,
        stale_acts: bool,
    ) -> None:
        """A worker outlives its hold's ttl and a retry takes the id over.

        The clock moves to the pending hold's ``expires_at`` (if not past it already): the hold
        stops counting and its id is free, so a new ``reserve`` (or ``protect`` call) of the id
        is judged afresh, and its old owner, if still open, is stale from now on (with
        *stale_acts*, it tries to settle at once).
        """
        payout_id = data.draw(st.sampled_from(self.in_state("pending")))
        old = self.handles.get(self.model[payout_id].owner)
        self.clock.advance(max(0.0, self.model[payout_id].expires_at - self.now()))
        if via_protect:
            self.call_send(payout_id, amount, Decimal(0), attempt)
        elif not self.fits(amount):
            with pytest.raises(PayoutDenied) as denied:
                self.guard.reserve(amount, CURRENCY, payout_id=payout_id)
            self.assert_denied(denied.value, "insufficient_funds")
        else:
            reservation = self.guard.reserve(amount, CURRENCY, payout_id=payout_id)
            serial = self.take(payout_id, amount, Decimal(0), TTL)
            self.handles[serial] = Handle(serial, payout_id, reservation, "pending")
        if stale_acts and old is not None and not self.owns(old):
            self.settle_stale(old)

    def pick_handle(self, data: st.DataObject) -> Handle:
        return self.handles[data.draw(st.sampled_from(sorted(self.handles)))]

    def owns(self, handle: Handle) -> bool:
        """Return whether the store's hold of *handle*'s id is still the one it took."""
        hold = self.model.get(handle.payout_id)
        return hold is not None and hold.owner == handle.serial

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def commit_handle(self, data: st.DataObject) -> None:
        """``commit()`` records the send of its own hold only; a stale one raises GuardError."""
        handle = self.pick_handle(data)
        if handle.state == "committed":
            handle.reservation.commit()
            return
        if handle.state == "released" or not self.owns(handle):
            event(f"commit refused ({handle.state} handle)")
            with pytest.raises(GuardError):
                handle.reservation.commit()
            return
        event(f"commit of a {self.model[handle.payout_id].state} hold")
        handle.reservation.commit()
        self.commit_model(handle.payout_id)
        handle.state = "committed"

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def release_handle(self, data: st.DataObject) -> None:
        """``release()`` frees its own pending hold only; otherwise it returns False."""
        handle = self.pick_handle(data)
        freed = handle.state == "pending" and self.owns(handle)
        if handle.state == "pending" and not freed:
            event("stale release refused")
        assert freed == handle.reservation.release()
        if freed:
            self.release_model(handle.payout_id)
        if handle.state == "pending":
            handle.state = "released"

    @precondition(lambda self: self.handles)
    @rule(data=st.data())
    def mark_handle_uncertain(self, data: st.DataObject) -> None:
        """``mark_uncertain()`` keeps its own pending hold counting; a stale one raises."""
        handle = self.pick_handle(data)
        if handle.state in ("committed", "uncertain"):
            assert handle.reservation.hold == handle.reservation.mark_uncertain()
            return
        if handle.state == "released" or not self.owns(handle):
            event(f"mark_uncertain refused ({handle.state} handle)")
            with pytest.raises(GuardError):
                handle.reservation.mark_uncertain()
            return
        marked = handle.reservation.mark_uncertain()
        assert marked is not None
        assert "uncertain" == marked.state
        self.uncertain_model(handle.payout_id)
        handle.state = "uncertain"

    def stale(self) -> list[int]:
        """Return the open handles whose hold was taken over or resolved away."""
        return sorted(
            s for s, h in self.handles.items()
            if h.state in ("pending", "uncertain") and not self.owns(h)
        )

    @precondition(lambda self: self.stale())
    @rule(data=st.data())
    def settle_stale_handle(self, data: st.DataObject) -> None:
        """A handle whose hold was taken over (or resolved away) can neither commit nor free it."""
        self.settle_stale(self.handles[data.draw(st.sampled_from(self.stale()))])

    def settle_stale(self, handle: Handle) -> None:
        """Assert that *handle*, which no longer owns its id's hold, changes nothing.

        Its ``commit()`` and ``mark_uncertain()`` raise ``GuardError``, its ``release()``
        returns False, and the hold the id has now stays exactly as it was.
        """
        before = self.guard.hold(handle.payout_id)
        event(f"stale {handle.state} handle settled; the id now has "
              f"{'no hold' if before is None else 'a ' + before.state + ' hold'}")
        with pytest.raises(GuardError):
            handle.reservation.commit()
        if handle.state == "pending":
            with pytest.raises(GuardError):
                handle.reservation.mark_uncertain()
            assert not handle.reservation.release()
            handle.state = "released"
        assert before == self.guard.hold(handle.payout_id)

    @precondition(lambda self: any(h.state == "pending" for h in self.handles.values()))
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A worker dies holding a pending handle: nobody settles it; only its ttl frees it."""
        serial = data.draw(st.sampled_from(
            sorted(s for s, h in self.handles.items() if h.state == "pending")
        ))
        del self.handles[serial]
        self.crashed.add(serial)

    # -- resolving, checking, time and balance ------------------------------------------------

    @precondition(lambda self: self.in_state("uncertain"))
    @rule(data=st.data(), sent=st.booleans())
    def resolve(self, data: st.DataObject, sent: bool) -> None:
        """``resolve`` ends an uncertain hold: sent, it is committed now; not, it is released."""
        payout_id = data.draw(st.sampled_from(self.in_state("uncertain")))
        lapsed = "after" if self.now() >= self.model[payout_id].expires_at else "before"
        event(f"resolve(sent={sent}) {lapsed} uncertain_ttl")
        resolved = self.guard.resolve(payout_id, sent=sent)
        if sent:
            self.commit_model(payout_id)
            assert resolved is not None
            assert ("committed", self.now()) == (resolved.state, resolved.committed_at)
        else:
            self.release_model(payout_id)
            assert resolved is None

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), sent=st.booleans())
    def resolve_certain(self, data: st.DataObject, sent: bool) -> None:
        """``resolve`` of an id whose hold is not uncertain (or gone) raises and changes nothing."""
        certain = [p for p in self.ids if p not in self.in_state("uncertain")]
        payout_id = data.draw(st.sampled_from(certain) if certain else st.just("po_never"))
        with pytest.raises(GuardError):
            self.guard.resolve(payout_id, sent=sent)

    @rule(data=st.data(), amount=amounts)
    def check(self, data: st.DataObject, amount: Decimal) -> None:
        """``check`` with a payout id answers what ``reserve`` would, and holds nothing."""
        payout_id = data.draw(st.sampled_from(self.ids) if self.ids else st.just("po_never"))
        expected = self.expect_admission(payout_id, amount)
        decision = self.guard.check(amount, CURRENCY, payout_id=payout_id)
        if expected == "allowed":
            assert decision.allowed
        else:
            assert not decision.allowed
            self.assert_denied(PayoutDenied(decision), expected)

    @rule(seconds=st.sampled_from([0.5, 1.0, 15.0, 29.0, 30.0, 31.0, 59.5, 60.0, 61.0, 90.0,
                                   119.0, 120.0, 121.0]))
    def advance(self, seconds: float) -> None:
        """Time passes: past settle_lag, hold_ttl and uncertain_ttl, or just short of them."""
        self.clock.advance(seconds)
        self.crashed = {
            serial for serial in self.crashed
            if any(h.owner == serial and h.counts(self.now()) for h in self.model.values())
        }

    @rule(minor=st.integers(0, 50_000))
    def change_balance(self, minor: int) -> None:
        """The provider's balance moves (payouts landing, deposits arriving)."""
        self.available = major(minor, CURRENCY)
        self.fetcher.set(CURRENCY, self.available)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def reserved_is_what_the_model_counts(self) -> None:
        """The guard subtracts exactly the holds that count: sent, uncertain and in flight."""
        decision = self.guard.check(unit(CURRENCY), CURRENCY)
        assert self.counted() == decision.reserved
        now = self.now()
        listed = self.store.holds(KEY, counted_since=now - LAG, now=now)
        assert sorted(p for p, h in self.model.items() if h.counts(now)) == sorted(
            h.payout_id for h in listed
        )

    @invariant()
    def every_hold_matches_the_model(self) -> None:
        """``guard.hold(id)`` reports what the model holds for every id ever used."""
        for payout_id in self.ids:
            found = self.guard.hold(payout_id)
            hold = self.model.get(payout_id)
            if hold is None:
                assert found is None, payout_id
                continue
            assert found is not None, payout_id
            expected = (hold.state, hold.held, hold.committed_at)
            assert expected == (found.state, found.held, found.committed_at), payout_id
            if hold.state != "committed":
                assert hold.expires_at == found.expires_at, payout_id

    @invariant()
    def no_live_pending_hold_without_an_owner(self) -> None:
        """A live pending hold belongs to an open pending handle or to a crashed one."""
        open_owners = {s for s, h in self.handles.items() if h.state == "pending"}
        now = self.now()
        for payout_id, hold in self.model.items():
            if hold.state == "pending" and now < hold.expires_at:
                assert hold.owner in open_owners | self.crashed, payout_id

    @invariant()
    def handles_report_their_state(self) -> None:
        """Each open handle's ``state`` is what its own calls left it in."""
        for handle in self.handles.values():
            assert handle.state == handle.reservation.state


class SqliteExactlyOnceMachine(ExactlyOnceMachine):
    """The same machine with the holds in a SQLite file."""

    def make_store(self) -> ReservationStore:
        self.folder = Path(tempfile.mkdtemp(prefix="payout-guard-exactly-once-"))
        return SqliteReservations(self.folder / "holds.db")

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.folder, ignore_errors=True)


class RedisExactlyOnceMachine(ExactlyOnceMachine):
    """The same machine with the holds in Redis, a fresh namespace per example."""

    url: ClassVar[str] = ""

    def make_store(self) -> ReservationStore:
        self.namespace = f"exactly-once-{uuid.uuid4().hex}"
        return RedisReservations(self.url, namespace=self.namespace, clock="caller")

    def teardown(self) -> None:
        super().teardown()
        client = redis.Redis.from_url(self.url)
        try:
            # The session's server outlives this example: leave nothing of it behind.
            for key in client.scan_iter(match=f"{{{self.namespace}}}:*"):
                client.delete(key)
        finally:
            client.close()


MACHINE_SETTINGS = settings(
    max_examples=50, stateful_step_count=30, deadline=None,
    # A store round trip per hold per step is the point, not a slow data generator.
    suppress_health_check=[HealthCheck.too_slow],
)


class TestExactlyOnce:
    @pytest.mark.parametrize(
        ("machine", "examples"),
        [(ExactlyOnceMachine, 100), (SqliteExactlyOnceMachine, 50)],
        ids=["memory", "sqlite"],
    )
    def test_payouts_are_sent_exactly_once(
        self, machine: type[ExactlyOnceMachine], examples: int
    ) -> None:
        """No id is sent twice, holds never exceed the balance when judged, none is orphaned."""
        run_state_machine_as_test(
            machine, settings=settings(MACHINE_SETTINGS, max_examples=examples)
        )

    def test_payouts_are_sent_exactly_once_on_redis(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The same machine, shorter, with the holds in a real redis-server."""
        monkeypatch.setattr(RedisExactlyOnceMachine, "url", redis_url)
        run_state_machine_as_test(
            RedisExactlyOnceMachine, settings=settings(MACHINE_SETTINGS, max_examples=15)
        )
