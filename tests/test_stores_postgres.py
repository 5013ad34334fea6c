"""What only the PostgreSQL store does: its schema, its targets, the caller's transaction, faults.

The protocol itself (holds, duplicates, ownership, uncertain, retention) is checked by the
contract suites, which run against this store too (``make_store`` in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from structlog.testing import capture_logs

from guard import AsyncPayoutGuard, PayoutDenied, PayoutGuard, load_config
from guard._config_build import build_reservations
from guard.errors import ConfigurationError, StoreUnavailable
from guard.stores import InMemoryReservations, PostgresReservations
from guard.stores._async import AsyncReservationStore
from guard.stores._postgres_sql import MIGRATION_LOCK, STEPS, version_table
from guard.stores.postgres import AsyncPostgresReservations
from guard.testing import StaticFetcher
from tests._cli import run_cli
from tests._holds import KEY, T0, hold, owner_of
from tests._postgres_server import PASSWORD, PostgresServer
from tests._redis_server import free_port

CEILING = Decimal(1000)


@pytest.fixture
def server(postgres_server: PostgresServer) -> PostgresServer:
    """Return the session's server (a shorter name)."""
    return postgres_server


@pytest.fixture
def make(server: PostgresServer) -> Iterator[Callable[..., PostgresReservations]]:
    """Yield a factory of stores in fresh schemas (created); each is closed afterwards."""
    made: list[PostgresReservations] = []

    def build(target: Any = None, **options: Any) -> PostgresReservations:
        options.setdefault("schema", server.fresh_schema())
        options.setdefault("create_schema", True)
        store = PostgresReservations(server.dsn() if target is None else target, **options)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def take(store: PostgresReservations, payout_id: str, amount: str = "10.00") -> str:
    """Hold *amount* for *payout_id* now-ish (T0); return the outcome's status."""
    return store.try_hold(hold(payout_id, amount), ceiling=CEILING, counted_since=0,
                          now=T0).status


def schemas(server: PostgresServer) -> set[str]:
    """Return the names of the schemas in the server's database."""
    with server.connect() as conn:
        return {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}


class TestSchema:
    def test_missing_schema_names_the_migrate_command(self, server: PostgresServer) -> None:
        """Without the schema the store refuses to start and says which command makes it."""
        schema = server.fresh_schema()
        with pytest.raises(ConfigurationError, match="does not exist") as raised:
            PostgresReservations(server.dsn(), schema=schema)
        assert "payout-guard store migrate --config FILE" in str(raised.value)
        assert schema not in schemas(server)  # nothing was created

    def test_a_schema_found_missing_at_first_use_is_unavailable_and_the_guard_denies(
        self, server: PostgresServer
    ) -> None:
        """Built while the server was down, the store finds the schema at its first call.

        A ConfigurationError there would escape ``reserve`` (and turn ``check``'s denial
        into a provider's fault): it is StoreUnavailable naming the migrate command.
        """
        schema = _old_schema(server)
        server.stop()
        try:
            store = PostgresReservations(server.dsn(), schema=schema, timeout=1.0)
        finally:
            server.start()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        try:
            with pytest.raises(StoreUnavailable, match=r"version 3.*store migrate --config"):
                take(store, "po_1")
            checked = guard.check("10.00", "BRL")
            with pytest.raises(PayoutDenied) as denied:
                guard.reserve("10.00", "BRL", payout_id="po_1")
        finally:
            store.close()
        assert ("balance_unavailable",) == checked.codes
        assert "store migrate --config" in checked.reasons[0].message
        assert ("balance_unavailable",) == denied.value.decision.codes

    def test_a_schema_found_older_after_rearm_is_unavailable(
        self, server: PostgresServer
    ) -> None:
        """After ``rearm()`` a mismatch is StoreUnavailable too, in both stores, until migrated."""
        store = PostgresReservations(server.dsn(), schema=_old_schema(server),
                                     check_schema=False)

        async def twin_get() -> None:
            twin = store.asyncio()
            assert twin is not None
            try:
                await twin.get("po_1")
            finally:
                await twin.aclose()

        try:
            store.rearm()
            with pytest.raises(StoreUnavailable, match="store migrate --config"):
                store.get("po_1")
            with pytest.raises(StoreUnavailable, match="store migrate --config"):
                asyncio.run(twin_get())
            store.migrate()
            assert store.get("po_1") is None
        finally:
            store.close()

    def test_migrate_creates_then_does_nothing(self, server: PostgresServer) -> None:
        """migrate() creates the schema at the current version; running it again changes nothing."""
        store = PostgresReservations(server.dsn(), schema=server.fresh_schema(),
                                     check_schema=False)
        try:
            assert ((0, 4), (4, 4)) == (store.migrate(), store.migrate())
            assert 4 == store.schema_version()
            assert "held" == take(store, "po_1")
        finally:
            store.close()

    def test_a_version_1_schema_names_the_migrate_command_then_upgrades(
        self, server: PostgresServer
    ) -> None:
        """A schema from before the fleet tables is refused until migrate() upgrades it."""
        schema = server.fresh_schema()
        with server.connect() as conn:  # version 1: its tables, as it made them
            conn.execute(f'CREATE SCHEMA "{schema}"')
            conn.execute(version_table(f'"{schema}"'))
            for statement in STEPS[0]:
                conn.execute(statement.format(s=f'"{schema}"'))
            conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (1)')
        with pytest.raises(ConfigurationError, match=r"version 1.*store migrate --config"):
            PostgresReservations(server.dsn(), schema=schema)
        with PostgresReservations(server.dsn(), schema=schema, check_schema=False) as store:
            assert (1, 4) == store.migrate()
        with PostgresReservations(server.dsn(), schema=schema) as store:
            assert ("held", 0.0) == (take(store, "po_1"), store.spend("b", per_minute=60))

    def test_a_version_2_schema_keeps_its_holds_and_checks_through_the_upgrade(
        self, server: PostgresServer
    ) -> None:
        """Version 3 turns the holds' CHECK constraints into domains: rows stay, checks hold."""
        schema = server.fresh_schema()
        quoted = f'"{schema}"'
        with server.connect() as conn:  # version 2's tables, a pending and a committed hold
            conn.execute(f"CREATE SCHEMA {quoted}")
            conn.execute(version_table(quoted))
            for statement in STEPS[0] + STEPS[1]:
                conn.execute(statement.format(s=quoted))
            conn.execute(f"INSERT INTO {quoted}.ledgers (key, currency, committed_minor, "
                         f"last_commit, live_minor) VALUES (%s, 'BRL', 500, %s, 1000)",
                         (KEY, T0))
            conn.execute(
                f"INSERT INTO {quoted}.holds (payout_id, key, currency, amount_minor, "
                "fee_minor, state, created_at, expires_at, committed_at, running_minor, owner) "
                "VALUES ('po_old', %s, 'BRL', 1000, 0, 'pending', %s, %s, NULL, NULL, 'w'), "
                "('po_sent', %s, 'BRL', 500, 0, 'committed', %s, %s, %s, 500, 'w')",
                (KEY, T0, T0 + 3600, KEY, T0, T0 + 3600, T0))
            conn.execute(f"INSERT INTO {quoted}.schema_version (version) VALUES (2)")
        with PostgresReservations(server.dsn(), schema=schema, check_schema=False,
                                  clock="caller") as store:
            assert (2, 4) == store.migrate()
            found = store.get("po_old")
            assert found is not None
            assert (Decimal("10.00"), "pending") == (found.amount, found.state)
            assert Decimal("15.00") == store.reserved(KEY, counted_since=T0 - 1, now=T0 + 1)
            assert "held" == take(store, "po_new")
        with server.connect() as conn:
            for column, value in (("amount_minor", -1), ("fee_minor", -1), ("state", "'lost'")):
                with pytest.raises(psycopg.errors.CheckViolation):
                    conn.execute(f"UPDATE {quoted}.holds SET {column} = {value} "
                                 "WHERE payout_id = 'po_old'")

    def test_a_version_3_schema_reports_its_lapsed_uncertain_hold_after_the_upgrade(
        self, server: PostgresServer
    ) -> None:
        """Version 4 compares keys and ids bytewise and marks when live holds run out."""
        schema = server.fresh_schema()
        quoted = f'"{schema}"'
        with server.connect() as conn:  # version 3's tables: holds that run out at T0, T0 + 10
            conn.execute(f"CREATE SCHEMA {quoted}")
            conn.execute(version_table(quoted))
            for statement in STEPS[0] + STEPS[1] + STEPS[2]:
                conn.execute(statement.format(s=quoted))
            conn.execute(f"INSERT INTO {quoted}.ledgers (key, currency, live_minor, "
                         f"settled_until) VALUES (%s, 'BRL', 2000, %s)", (KEY, T0 - 60))
            conn.execute(
                f"INSERT INTO {quoted}.holds (payout_id, key, currency, amount_minor, "
                "fee_minor, state, created_at, expires_at, owner) "
                "VALUES ('po_maybe', %s, 'BRL', 1000, 0, 'uncertain', %s, %s, 'w'), "
                "('po_old', %s, 'BRL', 1000, 0, 'pending', %s, %s, 'w')",
                (KEY, T0 - 120, T0, KEY, T0 - 120, T0 + 10))
            conn.execute(f"INSERT INTO {quoted}.schema_version (version) VALUES (3)")
        with PostgresReservations(server.dsn(), schema=schema, check_schema=False,
                                  clock="caller") as store:
            assert (3, 4) == store.migrate()
            first = store.try_hold(hold("po_new", "10.00"), ceiling=CEILING,
                                   counted_since=0, now=T0 + 1)
            assert ("held", Decimal("10.00"), ["po_maybe"]) == (
                first.status, first.counted, [h.payout_id for h in first.lapsed])
            later = store.try_hold(hold("po_next", "10.00"), ceiling=CEILING,
                                   counted_since=0, now=T0 + 11)
            # po_old ran out at T0 + 10: only po_new counts, and po_maybe is not reported again.
            assert ("held", Decimal("10.00"), ()) == (later.status, later.counted, later.lapsed)
        with server.connect() as conn:
            collations = conn.execute(
                "SELECT table_name, column_name, collation_name "
                "FROM information_schema.columns WHERE table_schema = %s "
                "AND column_name IN ('key', 'payout_id') "
                "AND table_name IN ('holds', 'ledgers') ORDER BY 1, 2", (schema,)).fetchall()
        assert [("holds", "key", "C"), ("holds", "payout_id", "C"),
                ("ledgers", "key", "C")] == collations

    def test_concurrent_migrations_take_turns(self, server: PostgresServer) -> None:
        """Four hosts migrating the same schema at once all succeed; one of them created it."""
        schema = server.fresh_schema()
        results: list[tuple[int, int]] = []

        def migrate() -> None:
            with PostgresReservations(server.dsn(), schema=schema, check_schema=False) as store:
                results.append(store.migrate())

        threads = [threading.Thread(target=migrate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [(0, 4), (4, 4), (4, 4), (4, 4)] == sorted(results)

    def test_a_newer_schema_is_refused(self, make: Callable[..., PostgresReservations],
                                       server: PostgresServer) -> None:
        """A schema migrated by a newer payout-guard is not used by this one."""
        store = make()
        with server.connect() as conn:
            conn.execute(f'INSERT INTO "{store.schema}".schema_version (version) VALUES (99)')
        with pytest.raises(ConfigurationError, match="upgrade payout-guard"):
            PostgresReservations(server.dsn(), schema=store.schema)

    @pytest.mark.parametrize("schema", ["", "Payouts", "a-b", "x" * 64, 'a"; drop'])
    def test_schema_must_be_a_plain_identifier(self, server: PostgresServer,
                                               schema: str) -> None:
        """The schema name is checked before it is ever put into SQL."""
        with pytest.raises(ConfigurationError, match="schema"):
            PostgresReservations(server.dsn(), schema=schema)

    def test_cli_migrate(self, server: PostgresServer, tmp_path: Path) -> None:
        """`payout-guard store migrate --config FILE` makes the schema the config names, once."""
        schema = server.fresh_schema()
        config = tmp_path / "guard.toml"
        config.write_text(
            '[providers.luxcore]\napi_key_env = "LUXCORE_KEY"\n\n'
            f'[reservations]\nstore = "postgres"\ndsn_env = "PG_DSN"\nnamespace = "{schema}"\n'
        )
        env = {"PG_DSN": server.dsn()}
        first = run_cli("store", "migrate", "--config", str(config), env=env)
        again = run_cli("store", "migrate", "--config", str(config), env=env)
        assert (0, 0) == (first.returncode, again.returncode), first.stderr + again.stderr
        assert f"schema '{schema}' migrated from version 0 to 4" in first.stdout
        assert f"schema '{schema}' is at version 4: nothing to do" in again.stdout
        store = build_reservations(load_config(config), env=env)
        try:
            assert isinstance(store, PostgresReservations)
            assert "held" == take(store, "po_1")
        finally:
            store.close()

    def test_cli_migrate_without_a_server_exits_3(self, tmp_path: Path) -> None:
        """No database to reach: exit code 3, and the password is not printed."""
        config = tmp_path / "guard.toml"
        config.write_text('[providers.luxcore]\napi_key_env = "LUXCORE_KEY"\n\n'
                          '[reservations]\nstore = "postgres"\ndsn_env = "PG_DSN"\n')
        dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
        result = run_cli("store", "migrate", "--config", str(config), env={"PG_DSN": dsn})
        assert 3 == result.returncode
        assert "postgres reservation store" in result.stderr
        assert PASSWORD not in result.stdout + result.stderr


class TestTargets:
    def test_a_callers_pool_is_used_and_left_open(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A psycopg_pool.ConnectionPool works as the target; close() leaves it to its owner."""
        with ConnectionPool(server.dsn(), min_size=1, max_size=2, open=True) as pool:
            store = make(pool)
            assert "held" == take(store, "po_1")
            store.close()
            assert not pool.closed
            with pool.connection() as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)

    @pytest.mark.parametrize(("threshold", "prepared"), [(0, True), (None, False)])
    def test_prepared_statements_can_be_switched_off(
        self, make: Callable[..., PostgresReservations], server: PostgresServer,
        threshold: int | None, prepared: bool,
    ) -> None:
        """prepare_threshold=None never prepares a statement (PgBouncer in transaction mode)."""
        connections: list[psycopg.Connection[Any]] = []

        def connect() -> psycopg.Connection[Any]:
            conn = psycopg.connect(server.dsn())
            connections.append(conn)
            return conn

        store = make(connect, prepare_threshold=threshold)
        for n in range(8):
            take(store, f"po_{n}")
            store.get(f"po_{n}")
        assert 1 == len(connections)
        count = connections[0].execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
        assert prepared == bool(count and count[0])

    def test_the_target_must_be_a_dsn_pool_or_factory(self) -> None:
        """Anything else is refused at construction."""
        with pytest.raises(ConfigurationError, match="DSN"):
            PostgresReservations(42)  # type: ignore[arg-type]  # the wrong type is the test


class TestCallersTransaction:
    def test_a_rollback_drops_the_hold(self, make: Callable[..., PostgresReservations],
                                       server: PostgresServer) -> None:
        """A hold taken in the caller's transaction disappears when it rolls back."""
        store = make()
        with server.connect() as conn:
            with conn.transaction(force_rollback=True):
                assert "held" == take(store.bound(conn), "po_1")
                assert store.bound(conn).get("po_1") is not None
                assert store.get("po_1") is None  # not committed: others do not see it
            assert store.get("po_1") is None

    def test_a_commit_keeps_the_hold_and_the_callers_rows(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The guard's hold and the caller's payout row commit together."""
        store = make()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        with server.connect() as conn:
            conn.execute(f'CREATE TABLE "{store.schema}".payouts (id text PRIMARY KEY)')
            with conn.transaction():
                reservation = guard.reserve("60.00", "BRL", payout_id="po_1", connection=conn)
                conn.execute(f'INSERT INTO "{store.schema}".payouts VALUES (%s)', ("po_1",))
                reservation.commit()
                assert store.get("po_1") is None  # still inside the transaction
            found = store.get("po_1")
            rows = conn.execute(f'SELECT id FROM "{store.schema}".payouts').fetchall()
        assert ("committed", [("po_1",)]) == (found.state if found else None, rows)
        with pytest.raises(PayoutDenied, match="insufficient_funds"):
            guard.reserve("60.00", "BRL", payout_id="po_2")

    def test_an_uncertain_hold_in_the_callers_transaction_says_it_rolls_back_with_it(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A provider timeout inside the transaction: the error it ends rolls the hold back."""
        store = make()
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        with (
            capture_logs() as logs,
            server.connect() as conn,
            pytest.raises(TimeoutError),
            conn.transaction(),
            guard.reserve("60.00", "BRL", payout_id="po_1", connection=conn),
        ):
            raise TimeoutError("the provider did not answer")
        assert store.get("po_1") is None  # rolled back with the caller's transaction
        said = [e for e in logs if e["event"] == "payout_guard.uncertain_in_transaction"]
        assert ["po_1"] == [e["payout_id"] for e in said]
        assert "error" == said[0]["log_level"]

    def test_a_store_without_bound_is_refused(self, server: PostgresServer) -> None:
        """reserve(connection=...) on a store that cannot join a transaction is an error."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}),
                            reservations=InMemoryReservations())
        with server.connect() as conn, pytest.raises(ConfigurationError, match="connection"):
            guard.reserve("10.00", "BRL", payout_id="po_1", connection=conn)

    def test_bound_needs_a_psycopg_connection(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """Binding to something that is not a connection is refused."""
        with pytest.raises(ConfigurationError, match=r"psycopg\.Connection"):
            make().bound(object())  # type: ignore[arg-type]  # the wrong type is the test


class TestDatabaseClock:
    def test_callers_60_s_apart_share_one_ceiling_and_agree_on_expiry(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """Two hosts whose clocks differ by 60 s: one ceiling, no overspend, one expiry."""
        behind = make(clock="database")
        ahead = make(schema=behind.schema, create_schema=False, clock="database")
        now = time.time()
        later = now + 60.0  # the second host's clock runs a minute ahead
        outcomes = [
            store.try_hold(hold(payout_id, "600.00", at=at, ttl=30.0), ceiling=CEILING,
                           counted_since=at - 30, now=at).status
            for store, payout_id, at in ((behind, "po_a", now), (ahead, "po_b", later),
                                         (behind, "po_c", now), (ahead, "po_d", later))
        ]
        seen = [store.get("po_a") for store in (behind, ahead)]
        counted = [behind.reserved(KEY, counted_since=now - 30, now=now),
                   ahead.reserved(KEY, counted_since=later - 30, now=later)]
        assert ["held", "over_ceiling", "over_ceiling", "over_ceiling"] == outcomes
        assert [Decimal("600.00")] * 2 == counted
        assert seen[0] is not None
        assert seen[0] == seen[1]
        assert now + 29 < seen[0].expires_at < time.time() + 31  # on the database's clock
        committed = ahead.commit("po_a", owner=owner_of("po_a"), now=later)
        assert committed is not None
        assert committed.committed_at is not None
        assert committed.committed_at < time.time() + 1  # not the caller's clock, a minute on
        assert [Decimal("600.00")] * 2 == [
            behind.committed(KEY, since=now - 5, now=now),
            ahead.committed(KEY, since=later - 5, now=later),
        ]

    def test_a_hold_expires_by_the_database_clock_whatever_the_caller_passes(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """A caller whose clock stands still still sees a hold expire on the database's time."""
        store = make(clock="database")
        store.try_hold(hold("po_1", "10.00", at=T0, ttl=0.3), ceiling=CEILING,
                       counted_since=0, now=T0)
        first = store.reserved(KEY, counted_since=0, now=T0)
        time.sleep(0.6)
        assert (Decimal("10.00"), Decimal(0)) == (first, store.reserved(KEY, counted_since=0,
                                                                        now=T0))
        assert "held" == take(store, "po_1")  # expired: the payout id is free again

    def test_the_callers_clock_keeps_times_as_passed(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """clock='caller' records exactly the times the caller passes."""
        store = make(clock="caller")
        take(store, "po_1")
        found = store.get("po_1")
        assert (T0, T0 + 300) == ((found.created_at, found.expires_at) if found else None)

    def test_the_clock_must_be_database_or_caller(self, server: PostgresServer) -> None:
        """Any other clock is refused at construction."""
        with pytest.raises(ConfigurationError, match="clock"):
            PostgresReservations(server.dsn(), clock="server")


class TestFleet:
    def test_a_nul_character_is_refused_before_anything_is_sent(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """PostgreSQL text cannot hold NUL: names, owners and payloads with one are refused."""
        store = make()
        with pytest.raises(ValueError, match="name"):
            store.spend("a\x00b", per_minute=10)
        with pytest.raises(ValueError, match="owner"):
            store.read_shared("n", owner="a\x00", lease_ttl=1, fresh_for=1)
        with pytest.raises(ValueError, match="payload"):
            store.write_shared("n", "{\x00}", keep=1, owner="a")

    def test_fleet_times_are_the_databases_even_with_the_callers_clock(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """clock='caller' changes holds only: shared values and budgets keep the database's."""
        store = make(clock="caller")
        store.write_shared("n", "v1", keep=60, owner="a")
        value, _ = store.read_shared("n", owner="b", lease_ttl=1, fresh_for=30)
        assert value is not None
        assert 0 <= value.age < 5.0


class TestAsyncio:
    def test_the_asyncio_store_shares_the_holds(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """Every method awaited; the sync store sees what the asyncio one did, and back."""
        store = make()
        twin = store.asyncio()
        assert isinstance(twin, AsyncPostgresReservations)
        assert isinstance(twin, AsyncReservationStore)
        take(store, "po_sync")

        async def scenario() -> tuple[Any, ...]:
            async with twin:
                outcome = await twin.try_hold(hold("po_1", "10.00"), ceiling=CEILING,
                                              counted_since=0, now=T0)
                committed = await twin.commit("po_1", owner=owner_of("po_1"), now=T0 + 1)
                duplicate = await twin.try_hold(hold("po_sync", "10.00"), ceiling=CEILING,
                                                counted_since=0, now=T0)
                released = await twin.release("po_sync", owner=owner_of("po_sync"))
                return (outcome.status, committed.state if committed else None,
                        duplicate.status, released,
                        await twin.reserved(KEY, counted_since=0, now=T0 + 2),
                        [h.payout_id for h in await twin.holds(KEY, counted_since=0,
                                                               now=T0 + 2)])

        assert ("held", "committed", "duplicate", True, Decimal("10.00"), ["po_1"]) == (
            asyncio.run(scenario())
        )
        found = store.get("po_1")
        assert "committed" == (found.state if found else None)

    def test_the_asyncio_store_is_a_fleet_store(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """Shared values, leases and budgets awaited, on the same tables."""
        store = make()
        twin = store.asyncio()
        assert twin is not None

        async def scenario() -> tuple[Any, ...]:
            async with twin:
                first = await twin.read_shared("n", owner="a", lease_ttl=5, fresh_for=5)
                await twin.write_shared("n", "v1", keep=60, owner="a")
                spent = [await twin.spend("b", per_minute=1) for _ in range(2)]
                await twin.drop_lease("n", owner="a")
                return first, spent

        first, spent = asyncio.run(scenario())
        value, leads = store.read_shared("n", owner="b", lease_ttl=5, fresh_for=5)
        assert ((None, True), 0.0) == (first, spent[0])
        assert 0 < spent[1] <= 60
        assert ("v1", False) == (value.payload if value else None, leads)

    def test_concurrent_tasks_never_overspend(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """Fifty tasks holding 10.00 each under a ceiling of 100.00: exactly ten are held."""
        store = make()
        twin = store.asyncio()
        assert twin is not None

        async def scenario() -> list[str]:
            async with twin:
                outcomes = await asyncio.gather(*(
                    twin.try_hold(hold(f"po_{n}", "10.00"), ceiling=Decimal(100),
                                  counted_since=0, now=T0)
                    for n in range(50)
                ))
            return [outcome.status for outcome in outcomes]

        statuses = asyncio.run(scenario())
        assert (10, 40) == (statuses.count("held"), statuses.count("over_ceiling"))
        assert Decimal(100) == store.reserved(KEY, counted_since=0, now=T0)

    def test_async_guard_uses_it_natively(
        self, make: Callable[..., PostgresReservations]
    ) -> None:
        """AsyncPayoutGuard picks the asyncio store up and holds through it."""
        store = make()
        guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)

        async def scenario() -> tuple[Any, ...]:
            async with guard.reserve("60.00", "BRL", payout_id="po_1"):
                pass
            denied = await guard.check("60.00", "BRL")
            native = guard._astore  # which store the guard awaits is the test
            await guard.aclose()
            return type(native), denied.codes

        assert (AsyncPostgresReservations, ("insufficient_funds",)) == asyncio.run(scenario())
        found = store.get("po_1")
        assert "committed" == (found.state if found else None)

    def test_a_callers_async_pool_is_used_and_left_open(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """asyncio(pool) takes connections from the caller's AsyncConnectionPool."""
        store = make()

        async def scenario() -> tuple[str, bool]:
            pool = AsyncConnectionPool(server.dsn(), kwargs={"autocommit": True}, open=False)
            await pool.open()
            try:
                twin = store.asyncio(pool)
                assert twin is not None
                outcome = await twin.try_hold(hold("po_1", "10.00"), ceiling=CEILING,
                                              counted_since=0, now=T0)
                await twin.aclose()
                return outcome.status, pool.closed
            finally:
                await pool.close()

        assert ("held", False) == asyncio.run(scenario())
        assert store.get("po_1") is not None

    def test_a_factory_store_has_no_asyncio_form(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A store built from a sync connection factory leaves AsyncPayoutGuard its threads."""
        assert make(server.connect).asyncio() is None

    def test_a_rollback_drops_an_async_bound_hold(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A hold taken in the caller's asyncio transaction disappears when it rolls back."""
        store = make()
        twin = store.asyncio()
        assert twin is not None

        async def scenario() -> str:
            conn = await psycopg.AsyncConnection.connect(server.dsn())
            async with conn, conn.transaction(force_rollback=True):
                outcome = await twin.bound(conn).try_hold(
                    hold("po_1", "10.00"), ceiling=CEILING, counted_since=0, now=T0)
            await twin.aclose()
            return outcome.status

        assert "held" == asyncio.run(scenario())
        assert store.get("po_1") is None

    def test_the_async_guard_holds_inside_the_callers_transaction(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """AsyncPayoutGuard.reserve(connection=...): the hold and the caller's row go together.

        Rolled back: neither is there. Committed: both are, and the funds are taken.
        """
        store = make()
        guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
        table = f'"{store.schema}".payouts'

        async def pay(conn: psycopg.AsyncConnection[Any], payout_id: str) -> None:
            async with guard.reserve("60.00", "BRL", payout_id=payout_id, connection=conn):
                await conn.execute(f"INSERT INTO {table} VALUES (%s)", (payout_id,))

        async def scenario() -> tuple[Any, ...]:
            conn = await psycopg.AsyncConnection.connect(server.dsn())
            async with conn:
                await conn.execute(f"CREATE TABLE {table} (id text PRIMARY KEY)")
                await conn.commit()
                async with conn.transaction(force_rollback=True):
                    await pay(conn, "po_rolled_back")
                async with conn.transaction():
                    await pay(conn, "po_sent")
                rows = await (await conn.execute(f"SELECT id FROM {table}")).fetchall()
            denied = await guard.check("60.00", "BRL")
            await guard.aclose()
            return rows, denied.codes

        rows, codes = asyncio.run(scenario())
        assert ([("po_sent",)], ("insufficient_funds",)) == (rows, codes)
        assert store.get("po_rolled_back") is None
        found = store.get("po_sent")
        assert "committed" == (found.state if found else None)

    def test_the_async_guard_refuses_a_connection_its_store_cannot_join(self) -> None:
        guard = AsyncPayoutGuard(StaticFetcher({"BRL": "100.00"}))
        with pytest.raises(ConfigurationError, match="connection"):
            guard.reserve("10.00", "BRL", payout_id="po_1", connection=object())

    def test_connection_refused_is_unavailable(self) -> None:
        """Nothing listening: an awaited call raises StoreUnavailable, never a psycopg error."""
        dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
        store = PostgresReservations(dsn, timeout=1.0)
        twin = store.asyncio()
        assert twin is not None

        async def scenario() -> None:
            await twin.get("po_1")

        with pytest.raises(StoreUnavailable) as raised:
            asyncio.run(scenario())
        store.close()
        assert PASSWORD not in f"{raised.value} {twin!r}"


class TestFaults:
    def test_connection_refused_is_unavailable(self) -> None:
        """Nothing listening: every call raises StoreUnavailable, and the guard denies."""
        dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
        store = PostgresReservations(dsn, timeout=1.0)
        try:
            with pytest.raises(StoreUnavailable) as raised:
                take(store, "po_1")
            guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=store)
            with capture_logs() as logs, pytest.raises(PayoutDenied) as denied:
                guard.reserve("10.00", "BRL", payout_id="po_1")
        finally:
            store.close()
        assert ("balance_unavailable",) == denied.value.decision.codes
        assert PASSWORD not in f"{raised.value} {denied.value} {logs} {store!r}"

    def test_statement_timeout_is_unavailable(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A call stuck behind a lock ends at the store's timeout with StoreUnavailable.

        Only a connection the server ended is replaced: a statement error is not run again.
        """
        store = make(timeout=0.3)
        take(store, "po_1")
        with server.connect() as other, other.transaction():
            other.execute(f'SELECT 1 FROM "{store.schema}".ledgers FOR UPDATE')
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="statement timeout"):
                take(store, "po_2")
            assert time.monotonic() - started < 2.0
        assert "held" == take(store, "po_2")  # the store goes on once the lock is gone

    def test_a_server_that_stops_answering_fails_within_the_timeout(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A backend that hangs (SIGSTOP: the kernel still acknowledges, nothing answers).

        ``statement_timeout`` cannot fire in a stopped server, so the store keeps its own
        deadline: StoreUnavailable about a second after the timeout, then the store goes on.
        """
        store = make(timeout=0.5)
        take(store, "po_1")
        raised, took = _while_stopped(_backend_of(server, store), store.get)
        assert [StoreUnavailable] == raised
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"
        assert "held" == take(store, "po_2")  # a new connection: the store goes on

    def test_a_server_that_never_answers_bounds_the_first_contact(self) -> None:
        """A listening socket that never replies: construction and calls end in bounded time.

        The first contact (the schema check) gives up at the connect timeout (the store's,
        rounded up; libpq's least is 2 s), and every call after it raises StoreUnavailable.
        """
        with _silent_listener() as port:
            dsn = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
            started = time.monotonic()
            store = PostgresReservations(dsn, timeout=0.5)
            try:
                built = time.monotonic() - started
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as raised:
                    take(store, "po_1")
                called = time.monotonic() - started
            finally:
                store.close()
        assert built < 4.0, f"construction took {built:.2f} s"
        assert called < 4.0, f"a call took {called:.2f} s"
        assert PASSWORD not in f"{raised.value} {store!r}"

    def test_the_schema_check_on_a_hung_backend_ends_within_the_timeout(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The schema check (first contact, or after ``rearm``) is bounded like every call."""
        schema = make().schema
        store = PostgresReservations(server.dsn(), schema=schema, timeout=0.5)
        try:
            assert store.get("po_1") is None  # the check passed; one connection kept idle
            store.rearm()  # the next call checks the schema again, on that connection
            raised, took = _while_stopped(_backend_of(server, store), store.get)
            assert [StoreUnavailable] == raised
            assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"
            assert store.get("po_1") is None  # a new connection: the store goes on
        finally:
            store.close()

    def test_the_asyncio_schema_check_on_a_hung_backend_ends_within_the_timeout(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The asyncio twin's schema check is bounded the same way."""
        schema = make().schema
        store = PostgresReservations(server.dsn(), schema=schema, timeout=0.5)
        store.close()  # only the twin's connection stays: the backend to stop is its one

        async def scenario() -> tuple[float, list[type[BaseException]]]:
            twin = store.asyncio()
            assert twin is not None
            try:
                assert await twin.get("po_1") is None
                store.rearm()  # the twin's next call checks the schema again
                backend = _backend_of(server, store)
                os.kill(backend, signal.SIGSTOP)
                raised: list[type[BaseException]] = []
                try:
                    started = time.monotonic()
                    try:
                        await asyncio.wait_for(twin.get("po_1"), timeout=10)
                    except BaseException as exc:  # noqa: BLE001 - the test checks its type
                        raised.append(type(exc))
                    took = time.monotonic() - started
                finally:
                    os.kill(backend, signal.SIGCONT)
                assert await twin.get("po_1") is None  # a new connection: it goes on
                return took, raised
            finally:
                await twin.aclose()

        took, raised = asyncio.run(scenario())
        assert [StoreUnavailable] == raised
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"

    def test_a_pool_store_built_on_a_hung_backend_returns_in_bounded_time(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A store made from a caller's pool whose connection hangs: the check is cut, too."""
        schema = make().schema
        with ConnectionPool(server.dsn(), min_size=1, max_size=1, open=True,
                            kwargs={"application_name": "pool-test"}) as pool:
            with pool.connection() as conn:
                pid = conn.info.backend_pid
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                store = PostgresReservations(pool, schema=schema, timeout=0.5)
                took = time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
            store.close()
        assert took < 3.0, f"construction took {took:.2f} s with a 0.5 s timeout"

    def test_the_asyncio_store_stops_waiting_too(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The asyncio twin is bounded the same way on a hung backend."""
        store = make(timeout=0.5)

        async def scenario() -> float:
            twin = store.asyncio()
            assert twin is not None
            try:
                assert await twin.get("po_1") is None
                backend = _backend_of(server, store)
                os.kill(backend, signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    with pytest.raises(StoreUnavailable):
                        await asyncio.wait_for(twin.get("po_1"), timeout=10)
                    return time.monotonic() - started
                finally:
                    os.kill(backend, signal.SIGCONT)
            finally:
                await twin.aclose()

        took = asyncio.run(scenario())
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"

    def test_a_connection_dropped_mid_statement_is_unavailable(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The server ending the store's connection during a call: StoreUnavailable, then on."""
        store = make()
        take(store, "po_1")
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                take(store, "po_2")
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread
                errors.append(exc)

        with server.connect() as other:
            with other.transaction():
                other.execute(f'SELECT 1 FROM "{store.schema}".ledgers FOR UPDATE')
                worker = threading.Thread(target=blocked)
                worker.start()
                pid = _waiting_backend(other)
                other.execute("SELECT pg_terminate_backend(%s)", (pid,))
                worker.join(timeout=10)
            assert [StoreUnavailable] == [type(e) for e in errors]
        assert store.get("po_2") is None
        assert "held" == take(store, "po_2")

    def test_holds_survive_a_server_crash_and_restart(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """Every acknowledged hold is still there after the server crashed and came back."""
        store = make()
        for n in range(5):
            take(store, f"po_{n}")
        store.commit("po_0", owner=owner_of("po_0"), now=T0 + 1)
        server.restart(crash=True)
        fresh = make(schema=store.schema, create_schema=False)
        for each in (store, fresh):
            assert Decimal("50.00") == each.reserved(KEY, counted_since=0, now=T0 + 2)
            assert ["committed", "pending", "pending", "pending", "pending"] == [
                h.state for h in each.holds(KEY, counted_since=0, now=T0 + 2)
            ]

    @pytest.mark.parametrize("crash", [False, True], ids=["fast", "crash"])
    def test_the_commit_after_a_restart_runs_on_a_new_connection(
        self, make: Callable[..., PostgresReservations], server: PostgresServer, crash: bool
    ) -> None:
        """A restart during the payout ends the idle connections: the commit takes a new one.

        The body ran, so its commit must land: a StoreUnavailable there would leave the hold
        pending, and once its ttl passed the same payout id could be sent again.
        """
        store = make(timeout=2.0)
        take(store, "po_1")
        take(store, "po_2")
        server.restart(crash=crash)
        started = time.monotonic()
        committed = store.commit("po_1", owner=owner_of("po_1"), now=T0 + 1)
        uncertain = store.mark_uncertain("po_2", owner=owner_of("po_2"), now=T0 + 1,
                                         until=T0 + 60)
        took = time.monotonic() - started
        assert ("committed", "uncertain") == (
            committed and committed.state, uncertain and uncertain.state
        )
        assert took < 3.0, f"took {took:.2f} s with a 2 s timeout"

    def test_the_guard_commits_a_payout_whose_body_spanned_a_restart(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """Through the guard: the body runs once, the hold ends committed, a retry is refused."""
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=make(timeout=2.0))
        sent: list[str] = []
        with guard.reserve("10.00", "BRL", payout_id="po_1", ttl=2):
            server.restart(crash=False)  # a routine fast restart while the payout is sent
            sent.append("po_1")
        hold_after = guard.hold("po_1")
        with pytest.raises(PayoutDenied) as denied:
            guard.reserve("10.00", "BRL", payout_id="po_1")
        assert ["po_1"] == sent
        assert "committed" == (hold_after and hold_after.state)
        assert ("duplicate_payout",) == denied.value.decision.codes

    def test_the_asyncio_store_commits_on_a_new_connection_after_a_restart(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The asyncio twin replaces an idle connection the restart ended, the same way."""
        store = make(timeout=2.0)

        async def scenario() -> tuple[str | None, float]:
            twin = store.asyncio()
            assert twin is not None
            try:
                outcome = await twin.try_hold(hold("po_1", "10.00"), ceiling=CEILING,
                                              counted_since=0, now=T0)
                assert "held" == outcome.status
                await asyncio.to_thread(server.restart, crash=False)
                started = time.monotonic()
                committed = await asyncio.wait_for(
                    twin.commit("po_1", owner=owner_of("po_1"), now=T0 + 1), timeout=10)
                return (None if committed is None else committed.state,
                        time.monotonic() - started)
            finally:
                await twin.aclose()

        state, took = asyncio.run(scenario())
        assert "committed" == state
        assert took < 3.0, f"took {took:.2f} s with a 2 s timeout"


    def test_a_commit_the_server_never_answers_on_a_callers_pool_ends_within_the_timeout(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """A caller's pool without autocommit: the store's COMMIT is bounded by its deadline.

        The pool would commit after the store's deadline; a COMMIT waiting for a standby that
        is gone never returns. The store commits itself, in time, and the pool drops the cut
        connection.
        """
        with ConnectionPool(server.dsn(), min_size=1, max_size=2, open=True) as pool:
            store = make(pool, timeout=0.5)
            outcome: list[BaseException | None] = []
            with _commits_never_answered(server):
                started = time.monotonic()
                worker = threading.Thread(target=_call_into,
                                          args=(lambda payout_id: take(store, payout_id),
                                                outcome))
                worker.start()
                worker.join(timeout=10)
                took = time.monotonic() - started
                assert not worker.is_alive(), "the call was still waiting after 10 s"
            assert [StoreUnavailable] == [type(e) for e in outcome]
            assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"
            assert "held" == take(store, "po_2")  # the pool goes on with a new connection

    def test_the_schema_check_on_a_callers_pool_commits_within_the_timeout(
        self, server: PostgresServer
    ) -> None:
        """The schema check's transaction ends inside the store's deadline, not the pool's.

        A caller's pool without autocommit commits when the store hands the connection back;
        a server that stops answering just then would hold the check (and the guard being
        built) for ever. Here the backend stops as its COMMIT is sent.
        """
        schema = server.fresh_schema()
        with PostgresReservations(server.dsn(), schema=schema, create_schema=True):
            pass
        stopped: list[int] = []

        class StopsAtCommit(psycopg.Connection[Any]):
            def commit(self) -> None:
                stopped.append(self.info.backend_pid)
                os.kill(stopped[-1], signal.SIGSTOP)
                super().commit()

        outcome: list[BaseException | None] = []
        with ConnectionPool(server.dsn(), connection_class=StopsAtCommit, min_size=1,
                            max_size=2, open=True) as pool:
            store = PostgresReservations(pool, schema=schema, timeout=0.5, check_schema=False)
            started = time.monotonic()
            worker = threading.Thread(target=_call_into,
                                      args=(lambda _: store.schema_version(), outcome),
                                      daemon=True)
            worker.start()
            worker.join(timeout=10)
            took = time.monotonic() - started
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            assert not worker.is_alive(), "the schema check was still waiting after 10 s"
            store.close()
        assert [StoreUnavailable] == [type(e) for e in outcome]
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"

    def test_the_asyncio_schema_check_on_a_callers_pool_commits_within_the_timeout(
        self, server: PostgresServer
    ) -> None:
        """The same on a caller's AsyncConnectionPool: the first call's schema check."""
        schema = server.fresh_schema()
        store = PostgresReservations(server.dsn(), schema=schema, create_schema=True,
                                     timeout=0.5)
        store.close()
        stopped: list[int] = []

        class StopsAtCommit(psycopg.AsyncConnection[Any]):
            async def commit(self) -> None:
                stopped.append(self.info.backend_pid)
                os.kill(stopped[-1], signal.SIGSTOP)
                await super().commit()

        async def scenario() -> tuple[list[type[BaseException]], float]:
            async with AsyncConnectionPool(server.dsn(), connection_class=StopsAtCommit,
                                           min_size=1, max_size=2, open=False) as pool:
                checked = PostgresReservations(server.dsn(), schema=schema, timeout=0.5)
                checked.rearm()  # the twin's first call checks the schema, on the pool
                twin = checked.asyncio(pool)
                assert twin is not None
                raised, took = await _timed_first_hold(twin)
                for pid in stopped:
                    os.kill(pid, signal.SIGCONT)
                checked.close()
            return raised, took

        raised, took = asyncio.run(scenario())
        assert [StoreUnavailable] == raised
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"

    def test_the_asyncio_store_on_a_callers_pool_bounds_its_commit_too(
        self, make: Callable[..., PostgresReservations], server: PostgresServer
    ) -> None:
        """The same on a caller's AsyncConnectionPool without autocommit."""
        store = make(timeout=0.5)

        async def scenario() -> tuple[list[type[BaseException]], float, str]:
            async with AsyncConnectionPool(server.dsn(), min_size=1, max_size=2,
                                           open=False) as pool:
                twin = store.asyncio(pool)
                assert twin is not None
                with _commits_never_answered(server):
                    raised, took = await _timed_first_hold(twin)
                after = await twin.try_hold(hold("po_2", "10.00"), ceiling=CEILING,
                                            counted_since=0, now=T0)
                return raised, took, after.status

        raised, took, after = asyncio.run(scenario())
        assert [StoreUnavailable] == raised
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"
        assert "held" == after

    def test_a_migration_whose_commit_is_never_answered_ends_within_the_timeout(
        self, server: PostgresServer
    ) -> None:
        """migrate()'s COMMIT is bounded like every call; a later migrate() finds it whole.

        The DDL has run and its COMMIT waits for a standby that is gone (it would wait the same
        for a server that stopped answering, or a network cut after the statements): without a
        deadline the migration, and the command running it, would wait for ever.
        """
        schema = server.fresh_schema()
        outcome: list[BaseException | None] = []
        store = PostgresReservations(server.dsn(), schema=schema, timeout=0.5,
                                     check_schema=False)
        with store, _commits_never_answered(server):
            started = time.monotonic()
            worker = threading.Thread(target=_call_into,
                                      args=(lambda _: store.migrate(), outcome), daemon=True)
            worker.start()
            worker.join(timeout=10)
            took = time.monotonic() - started
            assert not worker.is_alive(), "migrate() was still waiting after 10 s"
        assert [StoreUnavailable] == [type(e) for e in outcome]
        assert took < 3.0, f"took {took:.2f} s with a 0.5 s timeout"
        # The COMMIT took effect or it did not, never half: a retry ends at version 4.
        with PostgresReservations(server.dsn(), schema=schema, check_schema=False) as again:
            assert 4 == again.migrate()[1]
            assert "held" == take(again, "po_1")

    @pytest.mark.parametrize("target", ["dsn", "pool"])
    def test_a_migration_waiting_its_turn_ends_within_the_timeout(
        self, server: PostgresServer, target: str
    ) -> None:
        """Another migration holding the lock: migrate() gives up at the store's timeout.

        The server ends the wait itself (a caller's pool may set no statement timeout), so no
        backend is left queued for the lock; migrate() succeeds once the lock is free.
        """
        schema = server.fresh_schema()
        with contextlib.ExitStack() as stack:
            pool = None
            if target == "pool":
                pool = stack.enter_context(ConnectionPool(server.dsn(), min_size=1,
                                                          max_size=1, open=True))
            store = stack.enter_context(PostgresReservations(
                pool or server.dsn(), schema=schema, timeout=0.5, check_schema=False))
            with server.connect() as other, other.transaction():
                other.execute(MIGRATION_LOCK)  # a migration under way elsewhere
                started = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    store.migrate()
                took = time.monotonic() - started
                queued = other.execute("SELECT count(*) FROM pg_locks "
                                       "WHERE locktype = 'advisory' AND NOT granted").fetchone()
            assert took < 2.0, f"took {took:.2f} s with a 0.5 s timeout"
            assert (0,) == queued
            assert (0, 4) == store.migrate()

def _old_schema(server: PostgresServer) -> str:
    """Return the name of a new schema left at version 3 (not yet migrated)."""
    schema = server.fresh_schema()
    with server.connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(version_table(f'"{schema}"'))
        for step in STEPS[:3]:
            for statement in step:
                conn.execute(statement.format(s=f'"{schema}"'))
        conn.execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (3)')
    return schema


@contextmanager
def _commits_never_answered(server: PostgresServer) -> Iterator[None]:
    """Make every COMMIT that wrote something wait for a standby that does not exist."""
    with server.connect() as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'gone_standby'")
        conn.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)  # the backends read the new setting at their next command
    try:
        yield
    finally:
        with server.connect() as conn:
            conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)


def _while_stopped(
    backend: int, call: Callable[[str], object]
) -> tuple[list[type[BaseException] | None], float]:
    """Run ``call("po_1")`` in a thread while *backend* is stopped (SIGSTOP).

    Returns what it raised (``[None]``: it returned) and the seconds it took; fails the test
    if it still waits after 10 s.
    """
    outcome: list[BaseException | None] = []
    started = time.monotonic()
    os.kill(backend, signal.SIGSTOP)
    try:
        worker = threading.Thread(target=_call_into, args=(call, outcome))
        worker.start()
        worker.join(timeout=10)
        took = time.monotonic() - started
    finally:
        os.kill(backend, signal.SIGCONT)
    assert not worker.is_alive(), "the call was still waiting after 10 s"
    return [None if e is None else type(e) for e in outcome], took


async def _timed_first_hold(
    twin: AsyncReservationStore,
) -> tuple[list[type[BaseException]], float]:
    """Hold po_1 on *twin*, giving up after 10 s; return what it raised, and the seconds taken."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(twin.try_hold(hold("po_1", "10.00"), ceiling=CEILING,
                                             counted_since=0, now=T0), timeout=10)
    except BaseException as exc:  # noqa: BLE001 - the test checks its type
        return [type(exc)], time.monotonic() - started
    return [], time.monotonic() - started


def _call_into(call: Callable[[str], object], outcome: list[BaseException | None]) -> None:
    """Run ``call("po_1")``; append the exception it raised (``None``: it returned)."""
    try:
        call("po_1")
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        outcome.append(exc)
    else:
        outcome.append(None)


@contextmanager
def _silent_listener() -> Iterator[int]:
    """Yield the port of a loopback socket that accepts connections and never replies."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    worker = threading.Thread(target=accept, daemon=True)
    worker.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        worker.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()


def _backend_of(server: PostgresServer, store: PostgresReservations) -> int:
    """Return the pid of the idle backend whose last statement used *store*'s schema."""
    with server.connect() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'payout-guard' "
            "AND state = 'idle' AND position(%s in query) > 0", (f'"{store.schema}"',),
        ).fetchall()
    assert 1 == len(rows), f"expected one idle backend of the store, found {len(rows)}"
    return int(rows[0][0])


def _waiting_backend(conn: psycopg.Connection[Any]) -> int:
    """Return the pid of the payout-guard backend waiting for a lock (waits up to 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'payout-guard' "
            "AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None:
            return int(row[0])
        time.sleep(0.02)
    raise AssertionError("no payout-guard backend waited for the lock")


class TestSecrets:
    def test_the_password_is_never_shown(self, make: Callable[..., PostgresReservations],
                                         server: PostgresServer) -> None:
        """repr, errors and the logs of a failing guard never contain the DSN's password."""
        store = make()
        wrong = server.dsn().replace(PASSWORD, "not-" + PASSWORD)
        with pytest.raises(ConfigurationError) as bad_dsn:
            PostgresReservations(f"postgresql://postgres:{PASSWORD}@h/db?bogus=1")
        refused = PostgresReservations(wrong, schema=store.schema, timeout=1.0)
        guard = PayoutGuard(StaticFetcher({"BRL": "100.00"}), reservations=refused)
        with capture_logs() as logs, pytest.raises(PayoutDenied) as denied:
            guard.reserve("10.00", "BRL", payout_id="po_1")
        with pytest.raises(StoreUnavailable) as auth:
            refused.get("po_1")
        refused.close()
        assert "password authentication failed" in str(auth.value)
        shown = f"{store!r} {refused!r} {bad_dsn.value} {auth.value} {denied.value} {logs}"
        assert PASSWORD not in shown
        assert "host=127.0.0.1" in repr(store)

    def test_the_dsn_comes_from_the_environment_only(self, server: PostgresServer) -> None:
        """The configuration names the variable; a DSN written in the file is refused."""
        with pytest.raises(ConfigurationError, match="dsn"):
            load_config({"providers": {"luxcore": {"api_key_env": "K"}},
                         "reservations": {"store": "postgres", "dsn": server.dsn()}})
        with pytest.raises(ConfigurationError, match="needs dsn_env"):
            load_config({"providers": {"luxcore": {"api_key_env": "K"}},
                         "reservations": {"store": "postgres"}})
        config = load_config({"providers": {"luxcore": {"api_key_env": "K"}},
                              "reservations": {"store": "postgres", "dsn_env": "PG_DSN"}})
        with pytest.raises(ConfigurationError, match="PG_DSN is not set") as missing:
            build_reservations(config, env={})
        assert "reservations.dsn_env" == missing.value.path
