"""Counting, commits, releases, exact money and retention, in every reservation store.

The hold state machine itself (duplicates, owners, uncertain holds) is in
``test_store_contract.py``; the ``store`` and ``make_store`` fixtures are in ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from decimal import Decimal, localcontext

import pytest

from guard.stores import (
    Hold,
    ReservationStore,
    balance_key,
)
from tests._holds import KEY, T0, hold, owner_of

MakeStore = Callable[..., ReservationStore]


def reserved(store: ReservationStore, *, now: float = T0, since: float = T0 - 30) -> Decimal:
    """Return what counts on KEY at *now* for a balance fetched at *since* + 30 s."""
    return store.reserved(KEY, counted_since=since, now=now)


class TestTryHold:
    def test_within_ceiling_is_held(self, store: ReservationStore) -> None:
        """Holds are written while the counted total plus the new one stays within the ceiling."""
        first = store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=T0 - 30,
                               now=T0)
        second = store.try_hold(hold("po_2", "40.00"), ceiling=Decimal(100),
                                counted_since=T0 - 30, now=T0)
        assert ("held", Decimal(0)) == (first.status, first.counted)
        assert ("held", Decimal("60.00")) == (second.status, second.counted)
        assert hold("po_2", "40.00") == second.hold
        assert Decimal("100.00") == reserved(store)

    def test_over_ceiling_writes_nothing(self, store: ReservationStore) -> None:
        """A hold that would pass the ceiling is refused and leaves no trace."""
        store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=T0 - 30, now=T0)
        outcome = store.try_hold(hold("po_2", "40.01"), ceiling=Decimal(100),
                                 counted_since=T0 - 30, now=T0)
        assert ("over_ceiling", None, Decimal("60.00")) == (
            outcome.status, outcome.hold, outcome.counted
        )
        assert store.get("po_2") is None
        assert Decimal("60.00") == reserved(store)

    def test_fee_is_held_too(self, store: ReservationStore) -> None:
        """What a hold takes is its amount plus its fee."""
        outcome = store.try_hold(hold("po_1", "99.00", fee="1.01"), ceiling=Decimal(100),
                                 counted_since=T0 - 30, now=T0)
        assert "over_ceiling" == outcome.status

    def test_fractional_ceiling(self, store: ReservationStore) -> None:
        """A ceiling finer than the currency's unit is honoured exactly."""
        ceiling = Decimal("10.009")
        fits = store.try_hold(hold("po_1", "10.00"), ceiling=ceiling, counted_since=0, now=T0)
        more = store.try_hold(hold("po_2", "0.01"), ceiling=ceiling, counted_since=0, now=T0)
        assert ("held", "over_ceiling") == (fits.status, more.status)

    def test_negative_ceiling_refuses(self, store: ReservationStore) -> None:
        """A negative ceiling (the reserve already eats the balance) holds nothing."""
        outcome = store.try_hold(hold("po_1", "0.01"), ceiling=Decimal("-5.00"), counted_since=0,
                                 now=T0)
        assert "over_ceiling" == outcome.status

    def test_keys_are_separate(self, store: ReservationStore) -> None:
        """Holds on another balance key do not count against this one."""
        other = hold("po_1", "90.00", key=balance_key("luxcore", "acct-2", "BRL"))
        store.try_hold(other, ceiling=Decimal(100), counted_since=0, now=T0)
        outcome = store.try_hold(hold("po_2", "90.00"), ceiling=Decimal(100), counted_since=0,
                                 now=T0)
        assert ("held", Decimal(0)) == (outcome.status, outcome.counted)


class TestExpiry:
    def test_expired_pending_stops_counting(self, store: ReservationStore) -> None:
        """A pending hold counts until its expiry, not at or after it."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        assert Decimal("60.00") == reserved(store, now=T0 + 9.999)
        assert Decimal(0) == reserved(store, now=T0 + 10)

    def test_expired_pending_frees_room(self, store: ReservationStore) -> None:
        """Once a crashed worker's hold expires, its funds can be held again."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        outcome = store.try_hold(hold("po_2", "100.00", at=T0 + 10), ceiling=Decimal(100),
                                 counted_since=0, now=T0 + 10)
        assert ("held", Decimal(0)) == (outcome.status, outcome.counted)

    def test_expired_pending_can_be_replaced(self, store: ReservationStore) -> None:
        """The same payout id may hold again, even for another amount, once its hold expired."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        retry = hold("po_1", "70.00", at=T0 + 11)
        outcome = store.try_hold(retry, ceiling=Decimal(100), counted_since=0, now=T0 + 11)
        assert ("held", retry) == (outcome.status, outcome.hold)
        assert retry == store.get("po_1")
        assert Decimal("70.00") == reserved(store, now=T0 + 11)

    def test_expired_hold_replaced_on_another_key(self, store: ReservationStore) -> None:
        """A replaced hold moves to its new key and no longer appears on the old one."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        moved = hold("po_1", "60.00", key=balance_key("luxcore", "acct-2", "BRL"), at=T0 + 11)
        store.try_hold(moved, ceiling=Decimal(100), counted_since=0, now=T0 + 11)
        store.commit("po_1", owner=owner_of("po_1"), now=T0 + 12)
        assert [] == store.holds(KEY, counted_since=0, now=T0 + 12)
        assert Decimal("60.00") == store.reserved(moved.key, counted_since=0, now=T0 + 12)


class TestCommit:
    def test_commit_counts_until_counted_since_passes_it(self, store: ReservationStore) -> None:
        """A committed hold counts while the balance was fetched before the commit (+lag)."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        committed = store.commit("po_1", owner=owner_of("po_1"), now=T0 + 5)
        assert committed == hold("po_1", "60.00", ttl=10).committed(T0 + 5)
        assert Decimal("60.00") == reserved(store, now=T0 + 500, since=T0 + 4.999)
        assert Decimal(0) == reserved(store, now=T0 + 500, since=T0 + 5)

    def test_commit_unknown_is_none(self, store: ReservationStore) -> None:
        """Committing a payout id nobody holds returns None and records nothing."""
        assert store.commit("po_missing", owner=owner_of("po_missing"), now=T0) is None
        assert store.get("po_missing") is None

    def test_double_commit_keeps_first_time(self, store: ReservationStore) -> None:
        """Committing twice returns and keeps the first commit."""
        store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        first = store.commit("po_1", owner=owner_of("po_1"), now=T0 + 1)
        second = store.commit("po_1", owner=owner_of("po_1"), now=T0 + 2)
        assert first == second == store.get("po_1")
        assert second is not None
        assert T0 + 1 == second.committed_at

    def test_commit_after_expiry_still_counts(self, store: ReservationStore) -> None:
        """An expired hold that is committed anyway counts: the money has left."""
        store.try_hold(hold("po_1", "60.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        committed = store.commit("po_1", owner=owner_of("po_1"), now=T0 + 20)
        assert committed is not None
        assert "committed" == committed.state
        assert Decimal("60.00") == reserved(store, now=T0 + 21)


class TestRelease:
    def test_release_pending(self, store: ReservationStore) -> None:
        """Releasing a pending hold drops it and frees its funds, once."""
        store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        assert store.release("po_1", owner=owner_of("po_1")) is True
        assert store.release("po_1", owner=owner_of("po_1")) is False
        assert store.get("po_1") is None
        assert Decimal(0) == reserved(store)

    def test_release_committed_keeps_it(self, store: ReservationStore) -> None:
        """A committed hold cannot be released: the money has left."""
        store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        store.commit("po_1", owner=owner_of("po_1"), now=T0)
        assert store.release("po_1", owner=owner_of("po_1")) is False
        assert Decimal("60.00") == reserved(store)

    def test_release_unknown(self, store: ReservationStore) -> None:
        """Releasing a payout id nobody holds returns False."""
        assert store.release("po_missing", owner=owner_of("po_missing")) is False

    def test_released_id_can_hold_again(self, store: ReservationStore) -> None:
        """After a release the payout id is free for a new request."""
        store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        store.release("po_1", owner=owner_of("po_1"))
        outcome = store.try_hold(hold("po_1", "80.00"), ceiling=Decimal(100), counted_since=0,
                                 now=T0)
        assert "held" == outcome.status


class TestReservedAndHolds:
    def test_reserved_and_holds_agree(self, store: ReservationStore) -> None:
        """``holds`` lists exactly the holds whose sum is ``reserved``, oldest first."""
        for n, (amount, ttl) in enumerate([("10.00", 300), ("20.00", 5), ("30.00", 300),
                                           ("40.00", 300), ("50.00", 300)]):
            store.try_hold(hold(f"po_{n}", amount, ttl=ttl, at=T0 + n), ceiling=Decimal(1000),
                           counted_since=0, now=T0 + n)
        store.commit("po_0", owner=owner_of("po_0"), now=T0 + 6)  # counts: after since
        store.commit("po_3", owner=owner_of("po_3"), now=T0 + 6)
        store.release("po_4", owner=owner_of("po_4"))
        listed = store.holds(KEY, counted_since=T0 + 5, now=T0 + 7)
        assert ["po_0", "po_2", "po_3"] == [h.payout_id for h in listed]
        assert ["committed", "pending", "committed"] == [h.state for h in listed]
        assert sum(h.held for h in listed) == reserved(store, now=T0 + 7, since=T0 + 5)
        assert Decimal("80.00") == reserved(store, now=T0 + 7, since=T0 + 5)

    def test_a_limit_bounds_the_listing(self, store: ReservationStore) -> None:
        """With a limit, at most that many holds come back, however many count."""
        for n in range(30):
            store.try_hold(hold(f"po_{n}", "1.00", at=T0 + n), ceiling=Decimal(1000),
                           counted_since=0, now=T0 + n)
            if n % 2:
                store.commit(f"po_{n}", owner=owner_of(f"po_{n}"), now=T0 + n)
        listed = store.holds(KEY, counted_since=0, now=T0 + 30, limit=7)
        assert 7 == len(listed)
        assert len({h.payout_id for h in listed}) == 7
        assert 30 == len(store.holds(KEY, counted_since=0, now=T0 + 30))

    def test_nothing_held_is_zero(self, store: ReservationStore) -> None:
        """A key nobody held on reserves nothing."""
        assert (Decimal(0), []) == (reserved(store), store.holds(KEY, counted_since=0, now=T0))

    def test_many_commits_stay_exact(self, store: ReservationStore) -> None:
        """With many committed holds, each window since t sums exactly those after t."""
        amounts = [Decimal(n % 97) + Decimal("0.01") for n in range(300)]
        for n, amount in enumerate(amounts):
            store.try_hold(hold(f"po_{n}", str(amount), at=T0 + n), ceiling=Decimal(10**6),
                           counted_since=T0 + n - 30, now=T0 + n)
            store.commit(f"po_{n}", owner=owner_of(f"po_{n}"), now=T0 + n)
        for since in (0, T0 + 10, T0 + 150.5, T0 + 298, T0 + 299):
            expected = sum((a for n, a in enumerate(amounts) if T0 + n > since), Decimal(0))
            assert expected == reserved(store, now=T0 + 300, since=since)


class TestExactMoney:
    @pytest.mark.parametrize(
        ("currency", "amount", "fee", "total"),
        [
            ("BRL", "1234567.89", "0.01", "1234567.90"),
            ("CLP", "1500", "1", "1501"),
            ("KWD", "1.250", "0.005", "1.255"),
            ("JPY", "99999999999", "0", "99999999999"),
        ],
    )
    def test_amounts_round_trip_at_the_exponent(
        self, store: ReservationStore, currency: str, amount: str, fee: str, total: str
    ) -> None:
        """Amounts come back as the same Decimals, at the currency's exponent."""
        taken = hold("po_1", amount, fee=fee, currency=currency)
        store.try_hold(taken, ceiling=Decimal(total), counted_since=0, now=T0)
        got = store.get("po_1")
        assert got is not None
        assert (amount, fee) == (str(got.amount), str(got.fee))
        counted = store.reserved(taken.key, counted_since=0, now=T0)
        assert Decimal(total) == counted
        store.commit("po_1", owner=owner_of("po_1"), now=T0)
        assert Decimal(total) == store.reserved(taken.key, counted_since=0, now=T0)

    def test_the_callers_decimal_context_changes_nothing(self, make_store: MakeStore) -> None:
        """Sums stay exact under a caller's 6-digit context, through commits and a purge."""
        store = make_store(retention=100.0)
        with localcontext() as ctx:
            ctx.prec = 6
            for n, (amount, at) in enumerate([("1234567.89", T0), ("7654321.98", T0 + 2)]):
                store.try_hold(hold(f"po_{n}", amount, fee="0.01", at=at),
                               ceiling=Decimal(10**9), counted_since=0, now=at)
                store.commit(f"po_{n}", owner=owner_of(f"po_{n}"), now=at + 1)
            store.try_hold(hold("po_2", "1111111.11", at=T0 + 101.5), ceiling=Decimal(10**9),
                           counted_since=0, now=T0 + 101.5)  # purges po_0, past the retention
            counted = store.reserved(KEY, counted_since=0, now=T0 + 101.5)
        assert Decimal("8765433.10") == counted


class TestRetention:
    def test_committed_holds_are_forgotten_after_retention(self, make_store: MakeStore) -> None:
        """A committed hold older than the retention is pruned and its id can be used again."""
        store = make_store(retention=100.0)
        store.try_hold(hold("po_old", "10.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        store.commit("po_old", owner=owner_of("po_old"), now=T0 + 1)
        store.try_hold(hold("po_new", "10.00", at=T0 + 101.5), ceiling=Decimal(100),
                       counted_since=0, now=T0 + 101.5)
        assert store.get("po_old") is None
        again = store.try_hold(hold("po_old", "99.00", at=T0 + 102), ceiling=Decimal(1000),
                               counted_since=T0 + 72, now=T0 + 102)
        assert "held" == again.status

    def test_expired_pending_holds_are_forgotten_after_retention(
        self, make_store: MakeStore
    ) -> None:
        """An expired pending hold is remembered for the retention after its expiry."""
        store = make_store(retention=100.0)
        store.try_hold(hold("po_old", "10.00", ttl=10), ceiling=Decimal(100), counted_since=0,
                       now=T0)
        store.try_hold(hold("po_mid", "10.00", at=T0 + 50), ceiling=Decimal(100),
                       counted_since=0, now=T0 + 50)
        assert store.get("po_old") is not None
        store.try_hold(hold("po_new", "10.00", at=T0 + 111), ceiling=Decimal(100),
                       counted_since=0, now=T0 + 111)
        assert store.get("po_old") is None

    def test_recent_commits_are_kept(self, make_store: MakeStore) -> None:
        """Within the retention a committed hold is still known."""
        store = make_store(retention=100.0)
        store.try_hold(hold("po_old", "10.00"), ceiling=Decimal(100), counted_since=0, now=T0)
        store.commit("po_old", owner=owner_of("po_old"), now=T0 + 1)
        store.try_hold(hold("po_new", "10.00", at=T0 + 100), ceiling=Decimal(100),
                       counted_since=0, now=T0 + 100)
        assert store.get("po_old") is not None


class TestProtocol:
    def test_is_a_reservation_store(self, store: ReservationStore) -> None:
        """Every store satisfies the runtime-checkable protocol."""
        assert isinstance(store, ReservationStore)


class TestHoldValue:
    """A Hold is the frozen dataclass it declares, however it is built."""

    def test_built_positionally_or_by_keyword_it_is_one_frozen_value(self) -> None:
        by_position = Hold("po_1", KEY, "BRL", Decimal("10.00"), Decimal("0.50"), "pending",
                           T0, T0 + 60)
        by_keyword = Hold(payout_id="po_1", key=KEY, currency="BRL", amount=Decimal("10.00"),
                          fee=Decimal("0.50"), state="pending", created_at=T0,
                          expires_at=T0 + 60, committed_at=None, owner="")
        assert type(by_position) is Hold
        assert (by_position, hash(by_position)) == (by_keyword, hash(by_keyword))
        assert {f.name: getattr(by_position, f.name) for f in dataclasses.fields(Hold)} == {
            "payout_id": "po_1", "key": KEY, "currency": "BRL", "amount": Decimal("10.00"),
            "fee": Decimal("0.50"), "state": "pending", "created_at": T0,
            "expires_at": T0 + 60, "committed_at": None, "owner": "",
        }
        with pytest.raises(dataclasses.FrozenInstanceError):
            by_position.state = "committed"  # type: ignore[misc] # frozen on purpose
        changed = dataclasses.replace(by_position, state="committed", committed_at=T0 + 1)
        assert (changed.state, changed.committed_at, by_position.state) == (
            "committed", T0 + 1, "pending")

    def test_a_subclass_of_another_layout_is_built_field_by_field(self) -> None:
        class Tagged(Hold):
            __slots__ = ("tag",)

        tagged = Tagged("po_1", KEY, "BRL", Decimal("1.00"), Decimal(0), "pending", T0, T0 + 1)
        assert (type(tagged), tagged.payout_id, tagged.expires_at) == (Tagged, "po_1", T0 + 1)
