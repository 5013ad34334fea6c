"""What a fleet store promises, whichever it is: shared values, fetch leases, a request budget.

One suite for every ``FleetStore`` (SQLite, Redis and PostgreSQL), written against
the protocol: the first reader of a missing or stale value leads the fetch and the others wait,
a written value is fresh for everyone, a failed fetch hands the lead on, and the budget lets
through exactly what ``gcra`` allows. It also states ``CommittedTotals`` (PostgreSQL too).
Times here are the store's own clock, so the tests use short ttls and generous sleeps.
"""

from __future__ import annotations

import math
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest

from guard.stores import (
    CommittedTotals,
    FleetStore,
    PostgresReservations,
    RedisReservations,
    ReservationStore,
    Shared,
    gcra,
)
from tests._holds import KEY, T0, hold, owner_of
from tests._postgres_server import PostgresServer
from tests._store_workers import open_store, set_barrier, wait_for_start

SPAWN = multiprocessing.get_context("spawn")
WORKERS = 6
NAME = "bal|luxcore|BRL"

class _Totals(CommittedTotals, ReservationStore, Protocol):
    """A reservation store that totals commits (PostgreSQL, and every fleet store)."""


class _Both(FleetStore, _Totals, Protocol):
    """What the fleet stores under test are: reservation stores, fleet stores, commit totals."""


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Return where a store meets its peers: a SQLite file, a Redis namespace or a schema."""
    if request.param == "sqlite":
        return str(tmp_path / "fleet.db")
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return f"{server.dsn()}#{server.fresh_schema()}"
    url: str = request.getfixturevalue("redis_url")
    return f"{url}#fleet-{uuid.uuid4().hex}"


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def totals(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Totals]:
    """Yield a fresh store that totals commits: SQLite, Redis or PostgreSQL."""
    if request.param == "sqlite":
        where = str(tmp_path / "fleet.db")
    elif request.param == "postgres":
        # These tests pass commit times by hand: the store keeps them as passed.
        server: PostgresServer = request.getfixturevalue("postgres_server")
        made: Any = PostgresReservations(server.dsn(), schema=server.fresh_schema(),
                                         create_schema=True, clock="caller")
        yield made
        made.close()
        return
    else:
        # These tests pass commit times by hand: the Redis store keeps them as passed.
        opened: Any = RedisReservations(request.getfixturevalue("redis_url"),
                                        namespace=f"fleet-{uuid.uuid4().hex}", clock="caller")
        yield opened
        opened.close()
        return
    opened = open_store(where)
    yield opened
    opened.close()


@pytest.fixture
def store(target: str) -> Iterator[_Both]:
    """Yield a fresh fleet store (closed afterwards)."""
    opened: Any = open_store(target)
    yield opened
    opened.close()


def read(store: _Both, owner: str, *, lease_ttl: float = 5.0,
         fresh_for: float = 5.0) -> tuple[Shared | None, bool]:
    """Read NAME as *owner*."""
    return store.read_shared(NAME, owner=owner, lease_ttl=lease_ttl, fresh_for=fresh_for)


class TestProtocol:
    def test_is_a_fleet_store_with_committed_totals(self, store: _Both) -> None:
        """The store satisfies both runtime-checkable protocols."""
        assert (True, True) == (isinstance(store, FleetStore), isinstance(store,
                                                                          CommittedTotals))


class TestLeader:
    def test_first_reader_of_a_missing_value_leads(self, store: _Both) -> None:
        """Nothing stored: the first reader gets no value and the lease."""
        assert (None, True) == read(store, "a")

    def test_second_owner_waits_while_the_lease_lives(self, store: _Both) -> None:
        """Another owner does not lead while the first one's lease lives."""
        read(store, "a")
        assert (None, False) == read(store, "b")

    def test_the_leader_reading_again_still_leads(self, store: _Both) -> None:
        """The lease holder reading again is told it still leads."""
        read(store, "a")
        assert (None, True) == read(store, "a")

    def test_the_lease_ends_after_its_ttl(self, store: _Both) -> None:
        """Once lease_ttl has passed without a write, the next reader leads."""
        read(store, "a", lease_ttl=0.2)
        time.sleep(0.5)
        assert (None, True) == read(store, "b")

    def test_names_are_separate(self, store: _Both) -> None:
        """A lease on one name leaves every other name free."""
        read(store, "a")
        other = store.read_shared("bal|luxcore|ARS", owner="b", lease_ttl=5, fresh_for=5)
        assert (None, True) == other


class TestWrite:
    def test_a_written_value_is_fresh_for_everyone(self, store: _Both) -> None:
        """After the leader writes, readers get the payload at age about 0 and nobody leads."""
        read(store, "a")
        store.write_shared(NAME, '{"available": "10.00"}', keep=60, owner="a")
        value, leads = read(store, "b")
        assert value is not None
        assert ('{"available": "10.00"}', False) == (value.payload, leads)
        assert 0 <= value.age < 1.0

    def test_writing_drops_the_writers_lease(self, store: _Both) -> None:
        """Once the value is stale again, another owner leads at once: the lease went."""
        read(store, "a", lease_ttl=30)
        store.write_shared(NAME, "v1", keep=60, owner="a")
        time.sleep(0.3)
        value, leads = read(store, "b", fresh_for=0.1)
        assert ("v1", True) == (value.payload if value else None, leads)

    def test_writing_keeps_another_owners_lease(self, store: _Both) -> None:
        """A writer without the lease does not take it from the owner who has it."""
        read(store, "a", lease_ttl=30)
        store.write_shared(NAME, "v1", keep=60, owner="b")
        time.sleep(0.3)
        _, leads = read(store, "c", fresh_for=0.1)
        assert leads is False

    def test_age_grows_with_time(self, store: _Both) -> None:
        """The age is the time since the write, on the store's clock."""
        store.write_shared(NAME, "v1", keep=60, owner="a")
        time.sleep(0.4)
        value, _ = read(store, "b", fresh_for=30)
        assert value is not None
        assert 0.3 <= value.age < 5.0

    def test_a_write_replaces_the_value(self, store: _Both) -> None:
        """The last write wins, with its own age."""
        store.write_shared(NAME, "v1", keep=60, owner="a")
        store.write_shared(NAME, "v2", keep=60, owner="a")
        value, _ = read(store, "b")
        assert "v2" == (value.payload if value else None)


class TestFreshness:
    def test_a_fresh_value_makes_nobody_lead(self, store: _Both) -> None:
        """While the value is younger than fresh_for, every reader just reads it."""
        store.write_shared(NAME, "v1", keep=60, owner="a")
        answers = [read(store, owner, fresh_for=30)[1] for owner in ("a", "b", "c")]
        assert [False, False, False] == answers

    def test_a_stale_value_is_returned_and_one_reader_leads(self, store: _Both) -> None:
        """Past fresh_for the value is still returned; the first reader leads, the next waits."""
        store.write_shared(NAME, "v1", keep=60, owner="a")
        time.sleep(0.3)
        first = read(store, "b", fresh_for=0.1)
        second = read(store, "c", fresh_for=0.1)
        assert [("v1", True), ("v1", False)] == [
            (value.payload if value else None, leads) for value, leads in (first, second)
        ]

    def test_a_value_is_gone_after_keep(self, store: _Both) -> None:
        """After keep seconds the value is gone and the next reader leads."""
        store.write_shared(NAME, "v1", keep=0.2, owner="a")
        time.sleep(0.5)
        assert (None, True) == read(store, "b")


class TestDropLease:
    def test_dropping_lets_the_next_reader_lead(self, store: _Both) -> None:
        """A failed fetch drops the lease: the next reader leads at once."""
        read(store, "a", lease_ttl=30)
        store.drop_lease(NAME, owner="a")
        assert (None, True) == read(store, "b")

    def test_only_the_holder_drops_a_lease(self, store: _Both) -> None:
        """Another owner's drop leaves the lease where it is."""
        read(store, "a", lease_ttl=30)
        store.drop_lease(NAME, owner="b")
        assert (None, False) == read(store, "c")

    def test_dropping_nothing_is_harmless(self, store: _Both) -> None:
        """Dropping a lease nobody holds changes nothing."""
        store.drop_lease(NAME, owner="a")
        assert (None, True) == read(store, "a")


def _allowed(per_minute: int) -> int:
    """Return how many requests gcra lets through at once from a fresh budget: its burst.

    Replayed through ``gcra`` a microsecond apart (a burst takes time), never at one instant:
    there the last request of the burst sits exactly on the tolerance, where float rounding
    decides.
    """
    tat: float | None = None
    for taken in range(per_minute + 1):
        tat, wait = gcra(tat, T0 + taken * 1e-6, per_minute)
        if wait > 0:
            return taken
    return per_minute  # pragma: no cover - gcra never lets a whole minute through at once
class TestBudget:
    @pytest.mark.parametrize("per_minute", [1, 10, 60, 90])
    def test_a_burst_gets_what_gcra_allows(self, store: _Both, per_minute: int) -> None:
        """A burst on a fresh budget gets gcra's count through, then waits."""
        waits = [store.spend("luxcore|key", per_minute=per_minute) for _ in range(20)]
        allowed = _allowed(per_minute)
        interval = 60.0 / (per_minute - max(1, per_minute // 10) + 1)
        assert [0.0] * allowed == waits[:allowed]
        assert all(0 < wait <= interval for wait in waits[allowed:])

    def test_a_refused_request_takes_nothing(self, store: _Both) -> None:
        """Asking while the budget is spent does not push the next request further away."""
        store.spend("b", per_minute=1)
        first = store.spend("b", per_minute=1)
        second = store.spend("b", per_minute=1)
        assert 0 < second <= first <= 60.0

    def test_the_budget_refills_with_time(self, store: _Both) -> None:
        """After the interval, one more request goes through (600 a minute: every 0.11 s)."""
        per_minute = 600
        while store.spend("b", per_minute=per_minute) == 0.0:
            pass
        time.sleep(0.3)
        assert 0.0 == store.spend("b", per_minute=per_minute)

    def test_budgets_are_separate(self, store: _Both) -> None:
        """Spending one budget leaves another whole."""
        store.spend("one", per_minute=1)
        assert 0.0 == store.spend("two", per_minute=1)


class TestBadInput:
    @pytest.mark.parametrize("name", ["", "x" * 1000, 7, None])
    def test_bad_names_are_refused(self, store: _Both, name: Any) -> None:
        """A name must be a non-empty short string, for every method."""
        with pytest.raises(ValueError, match="name"):
            store.read_shared(name, owner="a", lease_ttl=1, fresh_for=1)
        with pytest.raises(ValueError, match="name"):
            store.write_shared(name, "v", keep=1, owner="a")
        with pytest.raises(ValueError, match="name"):
            store.drop_lease(name, owner="a")
        with pytest.raises(ValueError, match="name"):
            store.spend(name, per_minute=10)

    @pytest.mark.parametrize("owner", ["", 3, None])
    def test_bad_owners_are_refused(self, store: _Both, owner: Any) -> None:
        """An owner token must be a non-empty string."""
        with pytest.raises(ValueError, match="owner"):
            store.read_shared(NAME, owner=owner, lease_ttl=1, fresh_for=1)
        with pytest.raises(ValueError, match="owner"):
            store.write_shared(NAME, "v", keep=1, owner=owner)

    @pytest.mark.parametrize("seconds", [0, -1.0, math.nan, math.inf, "5", True, 31 * 86_400])
    @pytest.mark.parametrize("option", ["lease_ttl", "fresh_for", "keep"])
    def test_durations_must_be_finite_positive(
        self, store: _Both, option: str, seconds: Any
    ) -> None:
        """Every duration is a finite positive number of seconds (at most 30 days)."""
        durations = {"lease_ttl": 1.0, "fresh_for": 1.0, option: seconds}
        if option == "keep":
            with pytest.raises(ValueError, match=option):
                store.write_shared(NAME, "v", keep=seconds, owner="a")
        else:
            with pytest.raises(ValueError, match=option):
                store.read_shared(NAME, owner="a", **durations)

    @pytest.mark.parametrize("per_minute", [0, -5, 1.5, 60.0, True, "60"])
    def test_per_minute_is_a_positive_int(self, store: _Both, per_minute: Any) -> None:
        """A budget is a whole number of requests a minute, at least one."""
        with pytest.raises(ValueError, match="per_minute"):
            store.spend("b", per_minute=per_minute)

    def test_payload_must_be_text(self, store: _Both) -> None:
        """The payload is a string (the guard writes JSON)."""
        with pytest.raises(ValueError, match="payload"):
            store.write_shared(NAME, b"{}", keep=1, owner="a")  # type: ignore[arg-type]  # wrong on purpose

    def test_nothing_is_written_on_bad_input(self, store: _Both) -> None:
        """A refused call leaves no lease behind."""
        with pytest.raises(ValueError, match="lease_ttl"):
            store.read_shared(NAME, owner="a", lease_ttl=0, fresh_for=1)
        assert (None, True) == read(store, "b")


def _commit(totals: _Totals, payout_id: str, amount: str, at: float) -> None:
    """Hold *amount* (fee 0.50) at *at* and commit it a second later."""
    taken = hold(payout_id, amount, fee="0.50", at=at)
    assert "held" == totals.try_hold(taken, ceiling=Decimal(10**6), counted_since=0,
                                    now=at).status
    assert totals.commit(payout_id, owner=owner_of(payout_id), now=at + 1) is not None


class TestCommittedTotals:
    def test_nothing_committed_is_zero(self, totals: _Totals) -> None:
        """A key nobody committed on totals zero."""
        assert Decimal(0) == totals.committed(KEY, since=T0, now=T0)

    def test_sums_commits_after_since_with_fees(self, totals: _Totals) -> None:
        """Commits after since count with their fees; earlier ones do not."""
        for n in range(4):
            _commit(totals, f"po_{n}", "10.00", T0 + 10 * n)  # committed at T0 + 1, 11, 21, 31
        assert (Decimal("42.00"), Decimal("21.00"), Decimal(0)) == (
            totals.committed(KEY, since=T0, now=T0 + 40),
            totals.committed(KEY, since=T0 + 11, now=T0 + 40),
            totals.committed(KEY, since=T0 + 31, now=T0 + 40),
        )

    def test_pending_released_and_unresolved_holds_are_not_committed(
        self, totals: _Totals
    ) -> None:
        """Only sent payouts count: pending, released and uncertain holds do not."""
        _commit(totals, "po_sent", "10.00", T0)
        for payout_id in ("po_pending", "po_released", "po_maybe"):
            totals.try_hold(hold(payout_id, "5.00"), ceiling=Decimal(1000), counted_since=0,
                           now=T0)
        totals.release("po_released", owner=owner_of("po_released"))
        totals.mark_uncertain("po_maybe", owner=owner_of("po_maybe"), now=T0, until=T0 + 600)
        assert Decimal("10.50") == totals.committed(KEY, since=T0 - 1, now=T0 + 2)

    def test_a_resolved_sent_payout_counts(self, totals: _Totals) -> None:
        """An uncertain hold resolved as sent is committed at the resolve time."""
        totals.try_hold(hold("po_maybe", "5.00"), ceiling=Decimal(1000), counted_since=0, now=T0)
        totals.mark_uncertain("po_maybe", owner=owner_of("po_maybe"), now=T0, until=T0 + 600)
        totals.resolve("po_maybe", sent=True, now=T0 + 5)
        assert (Decimal("5.00"), Decimal(0)) == (
            totals.committed(KEY, since=T0 + 4, now=T0 + 6),
            totals.committed(KEY, since=T0 + 5, now=T0 + 6),
        )

    def test_other_keys_are_separate(self, totals: _Totals) -> None:
        """Commits on one balance do not count on another."""
        _commit(totals, "po_1", "10.00", T0)
        assert Decimal(0) == totals.committed("luxcore|acct-9|BRL", since=0, now=T0 + 2)


def race_for_lead(target: str, worker: int) -> bool:
    """Read NAME once, together with the other workers; return whether this one leads."""
    opened: Any = open_store(target)
    try:
        wait_for_start()
        _, leads = opened.read_shared(NAME, owner=f"w{worker}", lease_ttl=30.0, fresh_for=5.0)
        return bool(leads)
    finally:
        opened.close()


def spend_burst(target: str, attempts: int) -> list[float]:
    """Spend *attempts* requests of a 60-a-minute budget at once; return the waits."""
    opened: Any = open_store(target)
    try:
        wait_for_start()
        return [opened.spend("luxcore|key", per_minute=60) for _ in range(attempts)]
    finally:
        opened.close()


@pytest.mark.slow
class TestProcesses:
    def _pool(self) -> ProcessPoolExecutor:
        barrier = SPAWN.Barrier(WORKERS)
        return ProcessPoolExecutor(WORKERS, mp_context=SPAWN, initializer=set_barrier,
                                   initargs=(barrier,))

    def test_exactly_one_process_leads(self, target: str) -> None:
        """Six processes reading a missing value at once: exactly one leads the fetch."""
        open_store(target).close()  # create the file first, as a deployment would
        with self._pool() as pool:
            leads = list(pool.map(race_for_lead, [target] * WORKERS, range(WORKERS)))
        assert 1 == sum(leads)

    def test_a_burst_across_processes_gets_what_gcra_allows(self, target: str) -> None:
        """Six processes spending 5 each from one 60-a-minute budget get exactly its burst."""
        open_store(target).close()
        with self._pool() as pool:
            waits = [w for got in pool.map(spend_burst, [target] * WORKERS, [5] * WORKERS)
                     for w in got]
        assert (_allowed(60), WORKERS * 5 - _allowed(60)) == (
            waits.count(0.0), sum(wait > 0 for wait in waits)
        )

