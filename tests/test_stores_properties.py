"""Invariant of every reservation store: no interleaving lets the counted holds pass a ceiling.

A state machine drives one store with random try_hold / commit / release calls while time and
the balance's fetch time move on, and checks every answer against a plain model of the
protocol. The property: a hold is written only if the holds that count plus it stay within the
ceiling passed, so whatever happens afterwards (commits, releases, expiries, newer balances)
the counted total never exceeds the ceiling of the latest hold taken.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from guard.stores import (
    InMemoryReservations,
    PostgresReservations,
    RedisReservations,
    ReservationStore,
    SqliteReservations,
)
from tests._holds import KEY, T0, hold, owner_of
from tests._postgres_server import shared_postgres
from tests._redis_server import shared_redis

_ZERO = Decimal(0)


@dataclass(frozen=True)
class Modelled:
    """What the model knows of one hold."""

    amount: Decimal
    fee: Decimal
    expires_at: float
    committed_at: float | None = None

    def counts(self, now: float, since: float) -> bool:
        """Return whether it counts (the protocol's rule, written independently)."""
        if self.committed_at is None:
            return now < self.expires_at
        return self.committed_at > since


class StoreMachine(RuleBasedStateMachine):
    """Random operations on one store, checked against the model."""

    make: Callable[[], tuple[ReservationStore, Callable[[], None]]]

    def __init__(self) -> None:
        super().__init__()
        self.store, self.cleanup = type(self).make()
        self.now = T0
        self.since = T0 - 30.0
        self.model: dict[str, Modelled] = {}
        self.last_ceiling: Decimal | None = None
        self.ids = itertools.count()

    def teardown(self) -> None:
        """Close the store and remove what it left behind."""
        self.store.close()
        self.cleanup()

    def counted(self) -> Decimal:
        """Return the model's counted total."""
        return sum(
            (h.amount + h.fee for h in self.model.values() if h.counts(self.now, self.since)),
            _ZERO,
        )

    @rule(
        data=st.data(),
        cents=st.integers(1, 5_000),
        fee_cents=st.integers(0, 50),
        ttl=st.sampled_from([1.0, 5.0, 60.0]),
        ceiling_mills=st.integers(-1_000, 200_000),
        reuse=st.booleans(),
    )
    def try_hold(
        self, *, data: st.DataObject, cents: int, fee_cents: int, ttl: float,
        ceiling_mills: int, reuse: bool,
    ) -> None:
        """Hold a new or a repeated payout id against a random ceiling."""
        if reuse and self.model:
            payout_id = data.draw(st.sampled_from(sorted(self.model)))
        else:
            payout_id = f"po_{next(self.ids)}"
        taken = hold(payout_id, str(Decimal(cents).scaleb(-2)), fee=str(Decimal(fee_cents)
                     .scaleb(-2)), at=self.now, ttl=ttl)
        ceiling = Decimal(ceiling_mills).scaleb(-3)
        counted = self.counted()
        outcome = self.store.try_hold(taken, ceiling=ceiling, counted_since=self.since,
                                      now=self.now)
        assert counted == outcome.counted
        known = self.model.get(payout_id)
        if known is not None and (known.committed_at is not None or self.now < known.expires_at):
            assert "duplicate" == outcome.status
        elif counted + taken.held > ceiling:
            assert "over_ceiling" == outcome.status
        else:
            assert "held" == outcome.status
            assert counted + taken.held <= ceiling
            self.model[payout_id] = Modelled(taken.amount, taken.fee, taken.expires_at)
            self.last_ceiling = ceiling

    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        """Commit a live pending hold, or commit a committed one again."""
        live = sorted(
            pid for pid, h in self.model.items()
            if h.committed_at is not None or self.now < h.expires_at
        )
        if not live:
            assert self.store.commit("po_unknown", owner="x", now=self.now) is None
            return
        payout_id = data.draw(st.sampled_from(live))
        got = self.store.commit(payout_id, owner=owner_of(payout_id), now=self.now)
        known = self.model[payout_id]
        if known.committed_at is None:
            known = self.model[payout_id] = replace(known, committed_at=self.now)
        assert got is not None
        assert (known.committed_at, known.amount) == (got.committed_at, got.amount)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """Release any known payout id: only pending ones go."""
        if not self.model:
            assert self.store.release("po_unknown", owner="x") is False
            return
        payout_id = data.draw(st.sampled_from(sorted(self.model)))
        pending = self.model[payout_id].committed_at is None
        assert pending == self.store.release(payout_id, owner=owner_of(payout_id))
        if pending:
            del self.model[payout_id]

    @rule(seconds=st.sampled_from([0.0, 0.5, 1.0, 4.0, 30.0]))
    def advance(self, seconds: float) -> None:
        """Let time pass: pending holds expire."""
        self.now += seconds

    @rule(seconds=st.sampled_from([0.5, 2.0, 10.0, 60.0]))
    def newer_balance(self, seconds: float) -> None:
        """A newer balance was fetched: commits before it stop counting."""
        self.since = min(self.now, self.since + seconds)

    @invariant()
    def counted_total_never_exceeds_the_latest_ceiling(self) -> None:
        """The store's total is the model's, and within the ceiling of the latest hold."""
        total = self.store.reserved(KEY, counted_since=self.since, now=self.now)
        assert self.counted() == total
        if total > 0:
            assert self.last_ceiling is not None
            assert total <= self.last_ceiling

    @invariant()
    def holds_list_what_counts(self) -> None:
        """``holds`` names exactly the counting holds of the model."""
        listed = self.store.holds(KEY, counted_since=self.since, now=self.now)
        expected = {pid for pid, h in self.model.items() if h.counts(self.now, self.since)}
        assert expected == {h.payout_id for h in listed}


def _memory() -> tuple[ReservationStore, Callable[[], None]]:
    return InMemoryReservations(), lambda: None


def _sqlite() -> tuple[ReservationStore, Callable[[], None]]:
    folder = Path(tempfile.mkdtemp(prefix="payout-guard-"))
    return SqliteReservations(folder / "holds.db"), lambda: shutil.rmtree(folder)


class TestStoreInvariant:
    @pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgres"])
    def test_counted_holds_never_exceed_the_ceiling(self, kind: str) -> None:
        """Random operations keep each store equal to the model and within its ceilings."""
        if kind == "postgres":
            with shared_postgres() as pg:

                def make_pg() -> tuple[ReservationStore, Callable[[], None]]:
                    store = PostgresReservations(pg.dsn(), schema=pg.fresh_schema(),
                                                 create_schema=True, clock="caller")
                    return store, lambda: None

                self._run(make_pg)
        elif kind == "redis":
            with shared_redis() as server:
                url = server.url

                def make() -> tuple[ReservationStore, Callable[[], None]]:
                    store = RedisReservations(url, namespace=f"prop-{uuid.uuid4().hex}",
                                              clock="caller")
                    return store, lambda: None

                self._run(make)
        else:
            self._run(_memory if kind == "memory" else _sqlite)

    @staticmethod
    def _run(make: Callable[[], tuple[ReservationStore, Callable[[], None]]]) -> None:
        machine = type("Machine", (StoreMachine,), {"make": staticmethod(make)})
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=40, stateful_step_count=40,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
