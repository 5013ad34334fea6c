"""The hold state machine, as every reservation store (memory, SQLite, Redis, PostgreSQL) keeps it.

One suite, four stores: duplicates by state, ownership, uncertain holds, resolve, one currency
per key, bounds checked before anything is written, and a stateful comparison with a model.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import (
    Hold,
    HoldOutcome,
    ReservationStore,
    balance_key,
)
from tests._holds import KEY, T0, hold

DAY = 86_400.0
MAX = 30 * DAY  # the longest ttl, uncertain_ttl or retention any store accepts

MakeStore = Callable[..., ReservationStore]


def owned(
    payout_id: str, amount: str = "10.00", *, owner: str = "", currency: str = "BRL",
    key: str | None = None, at: float = T0, ttl: float = 300.0,
) -> Hold:
    """Return a pending hold (see ``tests._holds.hold``) with an owner token."""
    taken = hold(payout_id, amount, currency=currency, key=key, at=at, ttl=ttl)
    return replace(taken, owner=owner) if owner else taken


def take(
    store: ReservationStore, taken: Hold, *, ceiling: str = "1000", since: float = 0.0,
    now: float | None = None,
) -> HoldOutcome:
    """Try to hold *taken* at *now* (default: when it was created)."""
    return store.try_hold(taken, ceiling=Decimal(ceiling), counted_since=since,
                          now=taken.created_at if now is None else now)


def counted(store: ReservationStore, *, now: float = T0, since: float = 0.0) -> Decimal:
    """Return what counts on KEY at *now* for a balance that reflects commits up to *since*."""
    return store.reserved(KEY, counted_since=since, now=now)


def uncertain(store: ReservationStore, payout_id: str, *, at: float = T0,
              lasts: float = 600.0) -> Hold:
    """Hold *payout_id* (10.00) and mark it uncertain at *at* for *lasts* seconds."""
    taken = owned(payout_id, at=at)
    assert "held" == take(store, taken).status
    marked = store.mark_uncertain(payout_id, owner=taken.owner, now=at, until=at + lasts)
    assert marked is not None
    return marked


class TestDuplicates:
    def test_live_pending_is_duplicate(self, store: ReservationStore) -> None:
        """A second hold for an id someone is sending is a duplicate; nothing more is held."""
        first = owned("po_1", "60.00")
        take(store, first)
        again = take(store, owned("po_1", "60.00", owner="retry", at=T0 + 1))
        assert ("duplicate", first, Decimal("60.00")) == (again.status, again.hold, again.counted)
        assert Decimal("60.00") == counted(store, now=T0 + 1)
        assert first == store.get("po_1")

    def test_duplicate_even_when_full(self, store: ReservationStore) -> None:
        """A repeated id is a duplicate, not over_ceiling, when no room is left."""
        take(store, owned("po_1", "100.00"), ceiling="100")
        assert "duplicate" == take(store, owned("po_1", "100.00"), ceiling="100").status

    def test_committed_is_duplicate(self, store: ReservationStore) -> None:
        """An id whose payout was sent is a duplicate for good, with the commit returned."""
        first = owned("po_1")
        take(store, first)
        store.commit("po_1", owner=first.owner, now=T0 + 1)
        again = take(store, owned("po_1", at=T0 + 2))
        assert ("duplicate", first.committed(T0 + 1)) == (again.status, again.hold)

    def test_uncertain_is_duplicate(self, store: ReservationStore) -> None:
        """An id whose payout may have left is a duplicate."""
        marked = uncertain(store, "po_1")
        again = take(store, owned("po_1", at=T0 + 1))
        assert ("duplicate", marked) == (again.status, again.hold)

    def test_uncertain_past_its_ttl_still_blocks_its_id(self, store: ReservationStore) -> None:
        """After its uncertain_ttl an uncertain hold stops counting but its id stays taken."""
        marked = uncertain(store, "po_1", lasts=60)
        again = take(store, owned("po_1", at=T0 + 61))
        assert ("duplicate", marked) == (again.status, again.hold)

    def test_expired_pending_is_replaced(self, store: ReservationStore) -> None:
        """A pending hold past its ttl is replaced by the next hold for its id."""
        take(store, owned("po_1", "60.00", ttl=10))
        retry = owned("po_1", "70.00", owner="retry", at=T0 + 10)
        outcome = take(store, retry)
        assert ("held", retry, Decimal(0)) == (outcome.status, outcome.hold, outcome.counted)
        assert retry == store.get("po_1")
        assert Decimal("70.00") == counted(store, now=T0 + 10)

    def test_released_id_holds_again(self, store: ReservationStore) -> None:
        """After its owner released it, the id is free."""
        first = owned("po_1")
        take(store, first)
        assert store.release("po_1", owner=first.owner) is True
        assert "held" == take(store, owned("po_1", owner="again")).status


class TestOwnership:
    @pytest.mark.parametrize("intruder", ["", "not-the-owner"], ids=["empty", "other"])
    def test_only_the_owner_changes_a_hold(self, store: ReservationStore, intruder: str) -> None:
        """commit, release and mark_uncertain with another or an empty token change nothing."""
        first = owned("po_1")
        take(store, first)
        assert store.commit("po_1", owner=intruder, now=T0 + 1) is None
        assert store.release("po_1", owner=intruder) is False
        assert store.mark_uncertain("po_1", owner=intruder, now=T0 + 1, until=T0 + 99) is None
        assert first == store.get("po_1")
        assert Decimal("10.00") == counted(store, now=T0 + 1, since=T0 + 1)

    def test_the_owner_commits(self, store: ReservationStore) -> None:
        """The token of the reservation that took the hold commits it."""
        first = owned("po_1")
        take(store, first)
        assert first.committed(T0 + 1) == store.commit("po_1", owner=first.owner, now=T0 + 1)

    def test_unknown_id(self, store: ReservationStore) -> None:
        """An id nobody holds: None, False, None, and nothing recorded."""
        assert store.commit("po_x", owner="o", now=T0) is None
        assert store.release("po_x", owner="o") is False
        assert store.mark_uncertain("po_x", owner="o", now=T0, until=T0 + 1) is None
        assert store.get("po_x") is None

    def test_stale_owner_cannot_touch_the_next_hold(self, store: ReservationStore) -> None:
        """After expiry and replacement, the first reservation's token changes nothing."""
        stale = owned("po_1", ttl=10, owner="first")
        take(store, stale)
        later = owned("po_1", "20.00", owner="second", at=T0 + 11)
        take(store, later)
        assert store.commit("po_1", owner="first", now=T0 + 12) is None
        assert store.release("po_1", owner="first") is False
        assert store.mark_uncertain("po_1", owner="first", now=T0 + 12, until=T0 + 99) is None
        assert later == store.get("po_1")

    def test_owner_commits_after_expiry(self, store: ReservationStore) -> None:
        """An expired pending hold its owner commits is recorded and counts: the money left."""
        first = owned("po_1", ttl=10)
        take(store, first)
        done = store.commit("po_1", owner=first.owner, now=T0 + 20)
        assert first.committed(T0 + 20) == done
        assert Decimal("10.00") == counted(store, now=T0 + 21, since=T0)

    def test_release_keeps_committed_and_uncertain(self, store: ReservationStore) -> None:
        """Release drops only a pending hold, even for its owner."""
        sent = owned("po_1")
        take(store, sent)
        store.commit("po_1", owner=sent.owner, now=T0)
        marked = uncertain(store, "po_2")
        assert store.release("po_1", owner=sent.owner) is False
        assert store.release("po_2", owner=marked.owner) is False
        assert Decimal("20.00") == counted(store, now=T0 + 1)

    def test_double_commit_keeps_the_first_time(self, store: ReservationStore) -> None:
        """Committing twice returns and keeps the first commit."""
        first = owned("po_1")
        take(store, first)
        one = store.commit("po_1", owner=first.owner, now=T0 + 1)
        two = store.commit("po_1", owner=first.owner, now=T0 + 2)
        assert first.committed(T0 + 1) == one == two == store.get("po_1")


class TestUncertain:
    def test_counts_whatever_the_balance_shows(self, store: ReservationStore) -> None:
        """An uncertain hold counts like a committed one but ignores counted_since."""
        uncertain(store, "po_1")
        assert Decimal("10.00") == counted(store, now=T0 + 1, since=T0 + 1)

    def test_stops_counting_at_its_expiry(self, store: ReservationStore) -> None:
        """It counts while now < its uncertain_ttl's end, not at or after it."""
        uncertain(store, "po_1", lasts=60)
        assert Decimal("10.00") == counted(store, now=T0 + 59.999)
        assert Decimal(0) == counted(store, now=T0 + 60)

    def test_is_never_dropped_by_the_pending_ttl(self, store: ReservationStore) -> None:
        """Marked uncertain, a hold outlives its pending ttl (300 s) up to its own end."""
        uncertain(store, "po_1", lasts=3600)
        assert Decimal("10.00") == counted(store, now=T0 + 3000)

    def test_lapsed_is_reported_once(self, store: ReservationStore) -> None:
        """The first try_hold on the key after its end reports it; the next ones do not."""
        marked = uncertain(store, "po_1", lasts=60)
        first = take(store, owned("po_2", at=T0 + 60))
        second = take(store, owned("po_3", at=T0 + 61))
        assert ((marked,), ()) == (first.lapsed, second.lapsed)

    def test_lapsed_is_reported_whatever_the_outcome(self, store: ReservationStore) -> None:
        """A refused try_hold (over the ceiling) reports it too."""
        marked = uncertain(store, "po_1", lasts=60)
        refused = take(store, owned("po_2", "5000.00", at=T0 + 61))
        assert ("over_ceiling", (marked,)) == (refused.status, refused.lapsed)

    def test_nothing_lapses_early(self, store: ReservationStore) -> None:
        """Before its end an uncertain hold is not reported."""
        uncertain(store, "po_1", lasts=60)
        assert () == take(store, owned("po_2", at=T0 + 59)).lapsed

    def test_only_a_pending_hold_becomes_uncertain(self, store: ReservationStore) -> None:
        """Marking a committed or an uncertain hold returns it unchanged."""
        sent = owned("po_1")
        take(store, sent)
        done = store.commit("po_1", owner=sent.owner, now=T0)
        marked = uncertain(store, "po_2", lasts=60)
        assert done == store.mark_uncertain("po_1", owner=sent.owner, now=T0, until=T0 + 9)
        assert marked == store.mark_uncertain("po_2", owner=marked.owner, now=T0,
                                              until=T0 + 999)
        assert marked == store.get("po_2")

    def test_an_expired_pending_hold_marked_uncertain_counts_again(
        self, store: ReservationStore
    ) -> None:
        """A body that outlived the ttl and then timed out: the hold counts until its end."""
        late = owned("po_1", ttl=10)
        take(store, late)
        marked = store.mark_uncertain("po_1", owner=late.owner, now=T0 + 20, until=T0 + 80)
        assert late.uncertain(T0 + 80) == marked
        assert Decimal("10.00") == counted(store, now=T0 + 21)

    def test_the_owner_commits_an_uncertain_hold(self, store: ReservationStore) -> None:
        """Commit turns an uncertain hold committed, counted from the commit on."""
        marked = uncertain(store, "po_1")
        done = store.commit("po_1", owner=marked.owner, now=T0 + 5)
        assert marked.committed(T0 + 5) == done
        assert Decimal(0) == counted(store, now=T0 + 6, since=T0 + 5)


class TestResolve:
    def test_sent_becomes_committed_now(self, store: ReservationStore) -> None:
        """resolve(sent=True) returns the uncertain hold and records it committed at now."""
        marked = uncertain(store, "po_1")
        assert marked == store.resolve("po_1", sent=True, now=T0 + 5)
        assert marked.committed(T0 + 5) == store.get("po_1")
        assert Decimal("10.00") == counted(store, now=T0 + 6, since=T0 + 4)
        assert Decimal(0) == counted(store, now=T0 + 6, since=T0 + 5)

    def test_sent_keeps_its_id_taken(self, store: ReservationStore) -> None:
        """Once resolved as sent, the id is a duplicate."""
        uncertain(store, "po_1")
        store.resolve("po_1", sent=True, now=T0 + 5)
        assert "duplicate" == take(store, owned("po_1", at=T0 + 6)).status

    def test_not_sent_is_dropped(self, store: ReservationStore) -> None:
        """resolve(sent=False) drops the hold: nothing counts and the id is free."""
        marked = uncertain(store, "po_1")
        assert marked == store.resolve("po_1", sent=False, now=T0 + 5)
        assert (None, Decimal(0)) == (store.get("po_1"), counted(store, now=T0 + 5))
        assert "held" == take(store, owned("po_1", at=T0 + 6)).status

    def test_a_lapsed_hold_resolves(self, store: ReservationStore) -> None:
        """An uncertain hold past its end can still be resolved as sent."""
        marked = uncertain(store, "po_1", lasts=60)
        assert marked == store.resolve("po_1", sent=True, now=T0 + 100)
        assert marked.committed(T0 + 100) == store.get("po_1")

    def test_commit_time_never_goes_backwards(self, store: ReservationStore) -> None:
        """Resolved at a time before the key's last commit, it is recorded at that commit."""
        marked = uncertain(store, "po_1")
        other = owned("po_2")
        take(store, other)
        store.commit("po_2", owner=other.owner, now=T0 + 50)
        store.resolve("po_1", sent=True, now=T0 + 40)
        assert marked.committed(T0 + 50) == store.get("po_1")

    def test_other_holds_are_returned_unchanged(self, store: ReservationStore) -> None:
        """Only an uncertain hold is changed; a pending or committed one comes back as is."""
        pending = owned("po_1")
        take(store, pending)
        sent = owned("po_2")
        take(store, sent)
        done = store.commit("po_2", owner=sent.owner, now=T0)
        for sent_flag in (True, False):
            assert pending == store.resolve("po_1", sent=sent_flag, now=T0 + 1)
            assert done == store.resolve("po_2", sent=sent_flag, now=T0 + 1)
        assert store.resolve("po_x", sent=True, now=T0) is None
        assert (pending, done) == (store.get("po_1"), store.get("po_2"))


class TestOneCurrencyPerKey:
    def test_mixed_currencies_are_refused(self, store: ReservationStore) -> None:
        """A key sums one currency: a hold in another one is refused and nothing is written."""
        take(store, owned("po_1", key="shared"))
        with pytest.raises(InvalidPayoutRequest, match="holds BRL"):
            take(store, owned("po_2", "5", currency="CLP", key="shared"))
        assert store.get("po_2") is None
        assert Decimal("10.00") == store.reserved("shared", counted_since=0, now=T0)


class TestBoundsBeforeWrites:
    @pytest.mark.parametrize(
        "bad",
        [
            owned("po_1", ttl=MAX + 1),
            owned("po_1", ttl=1e16),
            owned("po_1", at=math.nan),
            owned("po_1", ttl=math.inf),
        ],
        ids=["ttl-over-30-days", "ttl-1e16", "nan-created", "infinite-ttl"],
    )
    def test_bad_hold_times_write_nothing(self, store: ReservationStore, bad: Hold) -> None:
        """A hold no store can keep raises ValueError and leaves the store unchanged."""
        with pytest.raises(ValueError, match=r"finite|30 days"):
            take(store, bad, now=T0)
        assert (None, Decimal(0)) == (store.get("po_1"), counted(store))

    @pytest.mark.parametrize("now", [math.nan, math.inf])
    def test_a_bad_now_writes_nothing(self, store: ReservationStore, now: float) -> None:
        """try_hold at a time that is not finite raises and writes nothing."""
        with pytest.raises(ValueError, match="finite"):
            take(store, owned("po_1"), now=now)
        assert store.get("po_1") is None

    @pytest.mark.parametrize(("now", "until"), [(T0, T0 + MAX + 1), (T0, math.nan),
                                                (math.nan, T0 + 1)])
    def test_bad_uncertain_times_change_nothing(
        self, store: ReservationStore, now: float, until: float
    ) -> None:
        """mark_uncertain with an end over 30 days away or not finite leaves the hold as it was."""
        first = owned("po_1")
        take(store, first)
        with pytest.raises(ValueError, match=r"finite|30 days"):
            store.mark_uncertain("po_1", owner=first.owner, now=now, until=until)
        assert first == store.get("po_1")

    def test_thirty_days_is_accepted(self, store: ReservationStore) -> None:
        """Exactly 30 days of ttl and of uncertain_ttl are within bounds."""
        longest = owned("po_1", ttl=MAX)
        assert "held" == take(store, longest).status
        assert store.mark_uncertain("po_1", owner=longest.owner, now=T0, until=T0 + MAX)

    @pytest.mark.parametrize("retention", [MAX + 1, math.nan, 0.0, -1.0])
    def test_retention_is_bounded(self, make_store: MakeStore, retention: float) -> None:
        """A retention that is not positive, finite and at most 30 days is refused."""
        with pytest.raises(ConfigurationError, match="retention"):
            make_store(retention=retention)


class TestRearm:
    def test_rearm_keeps_a_healthy_store_working(self, store: ReservationStore) -> None:
        """rearm() on a store that lost nothing changes nothing."""
        first = owned("po_1")
        take(store, first)
        store.rearm()
        assert (first, Decimal("10.00")) == (store.get("po_1"), counted(store))


# -- a stateful comparison with a model -------------------------------------------------------

PAYOUT_IDS = ("a", "b", "c", "d", "e")
IDS = st.sampled_from(PAYOUT_IDS)
AMOUNTS = st.sampled_from(["10.00", "25.50", "40.00"])
MINE = st.sampled_from([True, True, True, False])  # mostly the owner's own token
LAG = 30.0  # counted_since = now - LAG


class StoreVersusModel(RuleBasedStateMachine):
    """Drive a store and a dict of holds with the same calls; they must always agree."""

    make: MakeStore

    def __init__(self) -> None:
        super().__init__()
        self.store = self.make()
        self.now = T0
        self.model: dict[str, Hold] = {}
        self.reported: set[str] = set()
        self.last_commit: float | None = None
        self.serial = 0

    def counted(self) -> Decimal:
        """Return what the model says counts now."""
        since = self.now - LAG
        return sum(
            (h.held for h in self.model.values() if h.counts(now=self.now, counted_since=since)),
            Decimal(0),
        )

    def commit_at(self, hold_: Hold) -> Hold:
        """Return *hold_* committed now, never before the key's last commit."""
        at = self.now if self.last_commit is None else max(self.now, self.last_commit)
        self.last_commit = at
        return hold_.committed(at)

    def pick(self, data: st.DataObject) -> str:
        """Draw a payout id, mostly one the model holds."""
        known = sorted(self.model)
        return data.draw(st.sampled_from(known) | IDS if known else IDS, label="payout_id")

    def token(self, payout_id: str, mine: bool) -> str:
        """Return the owner token of *payout_id*'s hold, or an intruder's."""
        found = self.model.get(payout_id)
        return found.owner if mine and found is not None else "intruder"

    @rule(payout_id=IDS, amount=AMOUNTS, ttl=st.sampled_from([5.0, 60.0]),
          ceiling=st.sampled_from(["50", "100"]))
    def try_hold(self, payout_id: str, amount: str, ttl: float, ceiling: str) -> None:
        """A payout asks for a hold."""
        self.hold(payout_id, amount, ttl, ceiling)

    @rule(payout_id=IDS, lasts=st.sampled_from([5.0, 50.0]))
    def time_out(self, payout_id: str, lasts: float) -> None:
        """A payout is held and its body times out at once: the hold becomes uncertain."""
        if self.hold(payout_id, "10.00", 60.0, "100"):
            marked = self.store.mark_uncertain(payout_id, owner=f"t{self.serial}", now=self.now,
                                               until=self.now + lasts)
            self.model[payout_id] = self.model[payout_id].uncertain(self.now + lasts)
            assert self.model[payout_id] == marked

    def hold(self, payout_id: str, amount: str, ttl: float, ceiling: str) -> bool:
        """Try a hold on the store and the model; return whether it was held."""
        self.serial += 1
        wanted = owned(payout_id, amount, owner=f"t{self.serial}", at=self.now, ttl=ttl)
        outcome = take(self.store, wanted, ceiling=ceiling, since=self.now - LAG)
        total = self.counted()
        existing = self.model.get(payout_id)
        lapsed = {
            i for i, h in self.model.items()
            if h.state == "uncertain" and h.expires_at <= self.now and i not in self.reported
        }
        self.reported |= lapsed
        assert total == outcome.counted
        assert lapsed == {h.payout_id for h in outcome.lapsed}
        if existing is not None and not existing.expired(self.now):
            assert ("duplicate", existing) == (outcome.status, outcome.hold)
        elif total + wanted.held > Decimal(ceiling):
            assert ("over_ceiling", None) == (outcome.status, outcome.hold)
        else:
            assert ("held", wanted, existing) == (outcome.status, outcome.hold, outcome.replaced)
            self.model[payout_id] = wanted
            return True
        return False

    @rule(data=st.data(), mine=MINE)
    def commit(self, data: st.DataObject, mine: bool) -> None:
        """A reservation (or an intruder) commits."""
        payout_id = self.pick(data)
        got = self.store.commit(payout_id, owner=self.token(payout_id, mine), now=self.now)
        found = self.model.get(payout_id)
        if found is None or not mine:
            assert got is None
            return
        if found.state != "committed":
            self.model[payout_id] = found = self.commit_at(found)
            self.reported.discard(payout_id)
        assert found == got

    @rule(data=st.data(), mine=MINE)
    def release(self, data: st.DataObject, mine: bool) -> None:
        """A reservation (or an intruder) releases."""
        payout_id = self.pick(data)
        got = self.store.release(payout_id, owner=self.token(payout_id, mine))
        found = self.model.get(payout_id)
        expected = found is not None and mine and found.state == "pending"
        if expected:
            del self.model[payout_id]
        assert expected == got

    @rule(data=st.data(), mine=MINE, lasts=st.sampled_from([5.0, 50.0]))
    def mark_uncertain(self, data: st.DataObject, mine: bool, lasts: float) -> None:
        """A body times out: its reservation (or an intruder) marks the hold uncertain."""
        payout_id = self.pick(data)
        got = self.store.mark_uncertain(payout_id, owner=self.token(payout_id, mine),
                                        now=self.now, until=self.now + lasts)
        found = self.model.get(payout_id)
        if found is None or not mine:
            assert got is None
            return
        if found.state == "pending":
            self.model[payout_id] = found = found.uncertain(self.now + lasts)
        assert found == got

    @rule(data=st.data(), sent=st.booleans())
    def resolve(self, data: st.DataObject, sent: bool) -> None:
        """An operator resolves a payout id."""
        payout_id = self.pick(data)
        got = self.store.resolve(payout_id, sent=sent, now=self.now)
        found = self.model.get(payout_id)
        assert found == got
        if found is not None and found.state == "uncertain":
            self.reported.discard(payout_id)
            if sent:
                self.model[payout_id] = self.commit_at(found)
            else:
                del self.model[payout_id]

    @rule(seconds=st.sampled_from([0.0, 1.0, 4.5, 5.0, 30.0, 50.0, -10.0]))
    def advance(self, seconds: float) -> None:
        """Time passes (or the wall clock steps back)."""
        self.now += seconds

    @precondition(lambda self: bool(self.model))
    @invariant()
    def agrees(self) -> None:
        """Every hold and the counted total are what the model says."""
        for payout_id in PAYOUT_IDS:
            assert self.model.get(payout_id) == self.store.get(payout_id)
        assert self.counted() == self.store.reserved(KEY, counted_since=self.now - LAG,
                                                     now=self.now)
        listed = self.store.holds(KEY, counted_since=self.now - LAG, now=self.now)
        assert sorted(
            i for i, h in self.model.items()
            if h.counts(now=self.now, counted_since=self.now - LAG)
        ) == sorted(h.payout_id for h in listed)
        kept = sorted((h.public() for h in self.model.values() if not h.expired(self.now)),
                      key=lambda h: h.payout_id)
        kept.sort(key=lambda h: h.created_at, reverse=True)
        assert kept == self.store.list_holds(now=self.now)

    def teardown(self) -> None:
        """Close the store."""
        self.store.close()


class TestAgainstAModel:
    def test_store_agrees_with_the_model(
        self, make_store: MakeStore, request: pytest.FixtureRequest
    ) -> None:
        """Any sequence of holds, commits, releases, resolves and clock steps: as the model says."""
        # A server round trip per step: fewer examples for the stores behind one.
        remote = request.node.callspec.id in {"redis", "postgres"}
        machine = type("Machine", (StoreVersusModel,), {"make": staticmethod(make_store)})
        run_state_machine_as_test(
            machine,
            settings=settings(max_examples=25 if remote else 60, stateful_step_count=40,
                              deadline=None),
        )


def _listed(holds: list[Hold]) -> list[tuple[str, str]]:
    return [(h.payout_id, h.state) for h in holds]


class TestListHolds:
    """``list_holds``: every key's holds, newest first, filtered, without owner tokens."""

    @pytest.fixture
    def filled(self, store: ReservationStore) -> ReservationStore:
        """Return *store* with holds on three keys: pending, committed, uncertain, expired."""
        ars = balance_key("luxcore", None, "ARS")
        other = balance_key("pagsmile", "acct-2", "BRL")
        take(store, owned("po_old", owner="o1", at=T0 - 1000, ttl=10.0), now=T0 - 1000)
        take(store, owned("po_brl", owner="o2", at=T0 + 1))
        take(store, owned("po_ars", "500", owner="o3", currency="ARS", key=ars, at=T0 + 2),
             ceiling="100000")
        take(store, owned("po_other", owner="o4", key=other, at=T0 + 3))
        take(store, owned("po_sent", owner="o5", key=other, at=T0 + 4))
        store.commit("po_sent", owner="o5", now=T0 + 5)
        take(store, owned("po_unknown", owner="o6", at=T0 + 6))
        store.mark_uncertain("po_unknown", owner="o6", now=T0 + 6, until=T0 + 20)
        return store

    def test_every_key_newest_first(self, filled: ReservationStore) -> None:
        """Holds on every key are listed newest first; an expired pending hold is not."""
        assert [
            ("po_unknown", "uncertain"), ("po_sent", "committed"), ("po_other", "pending"),
            ("po_ars", "pending"), ("po_brl", "pending"),
        ] == _listed(filled.list_holds(now=T0 + 7))

    def test_no_owner_tokens(self, filled: ReservationStore) -> None:
        """Listed holds carry no owner token, and the same fields as ``get`` otherwise."""
        listed = filled.list_holds(now=T0 + 7)
        assert {""} == {h.owner for h in listed}
        got = filled.get("po_ars")
        assert got is not None
        assert got.public() == next(h for h in listed if h.payout_id == "po_ars")

    def test_filters(self, filled: ReservationStore) -> None:
        """Provider, currency and state narrow the list; they combine."""
        now = T0 + 7
        assert ["po_sent", "po_other"] == [
            h.payout_id for h in filled.list_holds(provider="pagsmile", now=now)
        ]
        assert ["po_ars"] == [h.payout_id for h in filled.list_holds(currency="ARS", now=now)]
        assert ["po_unknown"] == [
            h.payout_id for h in filled.list_holds(state="uncertain", now=now)
        ]
        assert ["po_brl"] == [
            h.payout_id for h in filled.list_holds(
                provider="luxcore", currency="BRL", state="pending", now=now)
        ]
        assert [] == filled.list_holds(provider="nobody", now=now)

    def test_limit_keeps_the_newest(self, filled: ReservationStore) -> None:
        """With *limit*, the newest holds are the ones listed."""
        assert ["po_unknown", "po_sent"] == [
            h.payout_id for h in filled.list_holds(limit=2, now=T0 + 7)
        ]

    def test_lapsed_uncertain_stays_listed(self, filled: ReservationStore) -> None:
        """An uncertain hold past its uncertain_ttl is still listed: it waits for resolve."""
        later = T0 + 400  # every pending hold has expired (ttl 300)
        assert ["po_unknown"] == [
            h.payout_id for h in filled.list_holds(state="uncertain", now=later)
        ]
        assert [] == filled.list_holds(state="pending", now=later)

    @pytest.mark.parametrize(("field", "value"), [
        ("state", "expired"), ("limit", 0), ("limit", 10_001), ("limit", True),
        ("provider", ""), ("currency", 7),
    ])
    def test_bad_filters_are_refused(
        self, store: ReservationStore, field: str, value: object
    ) -> None:
        """A state, limit or name that cannot be one is refused with a clear error."""
        with pytest.raises(InvalidPayoutRequest, match=field):
            store.list_holds(now=T0, **{field: value})  # type: ignore[arg-type]

    def test_the_asyncio_twin_lists_the_same(self, filled: ReservationStore) -> None:
        """A store's asyncio twin (Redis, PostgreSQL) lists exactly what the store lists."""
        make_twin = getattr(filled, "asyncio", None)
        twin = make_twin() if callable(make_twin) else None
        if twin is None:
            pytest.skip("this store has no asyncio twin")

        async def listed() -> list[Hold]:
            try:
                found: list[Hold] = await twin.list_holds(state="pending", limit=2, now=T0 + 7)
            finally:
                await twin.aclose()
            return found

        assert filled.list_holds(state="pending", limit=2, now=T0 + 7) == asyncio.run(listed())


class TestReplacedReported:
    def test_an_expired_pending_hold_replaced_is_reported(self, store: ReservationStore) -> None:
        """A hold that replaces its id's expired pending hold reports that hold, once."""
        first = owned("po_1", owner="crashed", ttl=10.0)
        assert take(store, first).replaced is None
        again = take(store, owned("po_1", "20.00", owner="retry", at=T0 + 60))
        assert ("held", "po_1", Decimal("10.00")) == (
            again.status, again.replaced.payout_id if again.replaced else None,
            again.replaced.amount if again.replaced else None,
        )
        third = take(store, owned("po_2", owner="other", at=T0 + 61))
        assert third.replaced is None
