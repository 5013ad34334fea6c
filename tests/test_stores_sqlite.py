"""What only the SQLite store promises: a file that outlives processes, bounded waits."""

from __future__ import annotations

import pickle
import sqlite3
import tempfile
import threading
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import SqliteReservations, StoreUnavailable, balance_key
from guard.stores._protocol import total_held
from tests._holds import KEY, T0, hold, owner_of

# The schema of version 2 (before the live total and the fleet tables), as it created files.
_V2_SCHEMA = (
    """CREATE TABLE ledgers (key TEXT PRIMARY KEY, currency TEXT NOT NULL,
        committed_minor INTEGER NOT NULL, last_commit REAL, lapse_at REAL)""",
    """CREATE TABLE holds (payout_id TEXT PRIMARY KEY, key TEXT NOT NULL,
        currency TEXT NOT NULL, amount_minor INTEGER NOT NULL, fee_minor INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'uncertain')),
        created_at REAL NOT NULL, expires_at REAL NOT NULL, committed_at REAL,
        running_minor INTEGER, owner TEXT NOT NULL DEFAULT '',
        reported INTEGER NOT NULL DEFAULT 0)""",
    """CREATE INDEX holds_live ON holds (key, expires_at, amount_minor, fee_minor)
        WHERE state != 'committed'""",
    """CREATE INDEX holds_committed
        ON holds (key, committed_at, running_minor, amount_minor, fee_minor)
        WHERE state = 'committed'""",
    "PRAGMA user_version = 2",
)


class TestSqliteFile:
    def test_survives_reopening(self, tmp_path: Path) -> None:
        """Holds, commits and their times are all there after the file is opened again."""
        path = tmp_path / "holds.db"
        with SqliteReservations(path) as store:
            store.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            store.try_hold(hold("po_2", "30.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            store.commit("po_1", owner=owner_of("po_1"), now=T0 + 1)
        with SqliteReservations(path) as reopened:
            assert hold("po_1", "60.00").committed(T0 + 1) == reopened.get("po_1")
            assert Decimal("90.00") == reopened.reserved(KEY, counted_since=0, now=T0 + 2)
            outcome = reopened.try_hold(hold("po_3", "10.01"), ceiling=Decimal(100),
                                        counted_since=0, now=T0 + 2)
            assert "over_ceiling" == outcome.status

    def test_two_stores_on_one_file_share_holds(self, tmp_path: Path) -> None:
        """Two store objects (as in two processes) see each other's holds at once."""
        with SqliteReservations(tmp_path / "h.db") as one, SqliteReservations(
            tmp_path / "h.db"
        ) as two:
            one.try_hold(hold("po_1", "60.00"), ceiling=Decimal(100), counted_since=0, now=T0)
            outcome = two.try_hold(hold("po_2", "60.00"), ceiling=Decimal(100), counted_since=0,
                                   now=T0)
            assert ("over_ceiling", Decimal("60.00")) == (outcome.status, outcome.counted)

    def test_uses_wal(self, tmp_path: Path) -> None:
        """The database is in WAL mode, so readers never wait for the writer."""
        SqliteReservations(tmp_path / "h.db").close()
        with sqlite3.connect(tmp_path / "h.db") as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        conn.close()
        assert "wal" == mode

    def test_amounts_are_integers_in_minor_units(self, tmp_path: Path) -> None:
        """Amounts are stored as whole minor units, never as REAL."""
        with SqliteReservations(tmp_path / "h.db") as store:
            store.try_hold(hold("po_1", "1.250", fee="0.005", currency="KWD"),
                           ceiling=Decimal(2), counted_since=0, now=T0)
        with sqlite3.connect(tmp_path / "h.db") as conn:
            row = conn.execute(
                "SELECT amount_minor, fee_minor, typeof(amount_minor) FROM holds"
            ).fetchone()
        conn.close()
        assert (1250, 5, "integer") == row

    def test_threads_never_overspend(self, tmp_path: Path) -> None:
        """Eight threads racing on one store object hold at most the ceiling."""
        with SqliteReservations(tmp_path / "h.db") as store:
            won: list[Decimal] = []

            def worker(n: int) -> None:
                for i in range(50):
                    taken = hold(f"po_{n}_{i}", "7.00")
                    if store.try_hold(taken, ceiling=Decimal(500), counted_since=0,
                                      now=T0).status == "held":
                        won.append(taken.held)

            threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert (71, Decimal("497.00")) == (len(won), sum(won, Decimal(0)))
            assert Decimal("497.00") == store.reserved(KEY, counted_since=0, now=T0)


class TestSqliteErrors:
    @pytest.mark.parametrize("name", ["missing/holds.db", "", ":memory:"])
    def test_bad_path_is_a_configuration_error(self, tmp_path: Path, name: str) -> None:
        """A path that cannot be a shared database file is refused at construction."""
        path = str(tmp_path / name) if name.startswith("missing") else name
        with pytest.raises(ConfigurationError):
            SqliteReservations(path)

    def test_directory_is_a_configuration_error(self, tmp_path: Path) -> None:
        """A directory is not a database file."""
        with pytest.raises(ConfigurationError, match="is a directory"):
            SqliteReservations(tmp_path)

    def test_not_a_database_is_a_configuration_error(self, tmp_path: Path) -> None:
        """A file that is not SQLite is refused, not overwritten."""
        path = tmp_path / "notes.db"
        path.write_bytes(b"this is not a database, just some text " * 100)
        with pytest.raises(ConfigurationError, match="cannot use"):
            SqliteReservations(path)
        assert path.read_bytes().startswith(b"this is not a database")

    @pytest.mark.parametrize(
        "options", [{"timeout": 0}, {"timeout": float("nan")}, {"retention": -1.0}]
    )
    def test_bad_numbers_are_configuration_errors(
        self, tmp_path: Path, options: dict[str, float]
    ) -> None:
        """Timeouts and retention must be finite seconds."""
        with pytest.raises(ConfigurationError):
            SqliteReservations(tmp_path / "h.db", **options)

    def test_locked_past_timeout_is_store_unavailable(self, tmp_path: Path) -> None:
        """A file another writer keeps locked makes try_hold fail after the timeout."""
        path = tmp_path / "h.db"
        store = SqliteReservations(path, timeout=0.2)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="stayed locked") as caught:
                store.try_hold(hold("po_1", "1.00"), ceiling=Decimal(10), counted_since=0,
                               now=T0)
            waited = time.monotonic() - started
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert "sqlite" == caught.value.store
        assert 0.15 <= waited < 10.0
        assert store.get("po_1") is None  # readers are not blocked, nothing was written
        store.close()

    def test_store_unavailable_pickles(self) -> None:
        """The error crosses a process boundary with its fields (multiprocessing)."""
        error = StoreUnavailable("stayed locked", store="sqlite")
        back = pickle.loads(pickle.dumps(error))
        assert (StoreUnavailable, "sqlite", str(error)) == (type(back), back.store, str(back))

    def test_closed_store_refuses(self, tmp_path: Path) -> None:
        """Using a closed store raises instead of reopening behind the caller's back."""
        store = SqliteReservations(tmp_path / "h.db")
        store.close()
        with pytest.raises(StoreUnavailable, match="closed"):
            store.get("po_1")

    def test_mixed_currencies_on_one_key_are_refused(self, tmp_path: Path) -> None:
        """A key sums one currency; a hold in another currency on it is an error."""
        with SqliteReservations(tmp_path / "h.db") as store:
            store.try_hold(hold("po_1", "1.00", key="k"), ceiling=Decimal(10), counted_since=0,
                           now=T0)
            with pytest.raises(InvalidPayoutRequest, match="holds BRL"):
                store.try_hold(hold("po_2", "1.00", key="k", currency="USD"),
                               ceiling=Decimal(10), counted_since=0, now=T0)

    @pytest.mark.parametrize("amount", ["1.001", "-1.00", str(2**53)])
    def test_inexact_or_huge_amounts_are_refused(self, tmp_path: Path, amount: str) -> None:
        """Amounts finer than the currency, negative, or past 2**53 minor units are refused."""
        with SqliteReservations(tmp_path / "h.db") as store, pytest.raises(
            InvalidPayoutRequest
        ):
            store.try_hold(hold("po_1", amount, currency="CLP" if "." not in amount else "BRL"),
                           ceiling=Decimal(10**20), counted_since=0, now=T0)

    def test_repr_names_the_file(self, tmp_path: Path) -> None:
        """The repr says which file, nothing more."""
        with SqliteReservations(tmp_path / "h.db") as store:
            assert f"SqliteReservations(path={str(tmp_path / 'h.db')!r})" == repr(store)


def test_balance_key_of_another_account_is_separate(tmp_path: Path) -> None:
    """Accounts at one provider are separate balances in the file."""
    with SqliteReservations(tmp_path / "h.db") as store:
        other = balance_key("luxcore", "acct-9", "BRL")
        store.try_hold(hold("po_1", "5.00", key=other), ceiling=Decimal(5), counted_since=0,
                       now=T0)
        assert Decimal(0) == store.reserved(KEY, counted_since=0, now=T0)


def _v2_file(path: Path) -> None:
    """Write a version 2 file: 60.00 pending, 5.00 expired, 7.00 uncertain, 30.00 committed."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in _V2_SCHEMA:
        conn.execute(statement)
    conn.execute("INSERT INTO ledgers VALUES (?, 'BRL', 3000, ?, NULL)", (KEY, T0 + 1))
    rows = [
        ("po_live", 6000, "pending", T0 + 300, None, None),
        ("po_gone", 500, "pending", T0 + 10, None, None),
        ("po_maybe", 700, "uncertain", T0 + 600, None, None),
        ("po_sent", 3000, "committed", T0 + 300, T0 + 1, 3000),
    ]
    for payout_id, minor, state, expires, committed, running in rows:
        conn.execute(
            "INSERT INTO holds VALUES (?, ?, 'BRL', ?, 0, ?, ?, ?, ?, ?, ?, 0)",
            (payout_id, KEY, minor, state, T0, expires, committed, running,
             owner_of(payout_id)),
        )
    conn.close()


class TestSqliteSchema:
    def test_upgrades_a_version_2_file(self, tmp_path: Path) -> None:
        """A version 2 file opens at version 3 with every hold counted as before."""
        path = tmp_path / "v2.db"
        _v2_file(path)
        with SqliteReservations(path) as store:
            assert Decimal("97.00") == store.reserved(KEY, counted_since=0, now=T0 + 20)
            assert Decimal("30.00") == store.committed(KEY, since=T0, now=T0 + 20)
            store.commit("po_live", owner=owner_of("po_live"), now=T0 + 21)
            outcome = store.try_hold(hold("po_new", "3.00", at=T0 + 22), ceiling=Decimal(100),
                                     counted_since=0, now=T0 + 22)
            assert ("held", Decimal("97.00")) == (outcome.status, outcome.counted)
            assert Decimal("100.00") == store.reserved(KEY, counted_since=0, now=T0 + 22)
            assert Decimal("90.00") == store.committed(KEY, since=T0, now=T0 + 22)
        with sqlite3.connect(path) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.close()
        assert 3 == version

    def test_upgrades_a_version_1_file(self, tmp_path: Path) -> None:
        """A version 1 file (no owners, no uncertain holds) opens at version 3, totals intact."""
        path = tmp_path / "v1.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("""CREATE TABLE ledgers (key TEXT PRIMARY KEY, currency TEXT NOT NULL,
            committed_minor INTEGER NOT NULL, last_commit REAL)""")
        conn.execute("""CREATE TABLE holds (payout_id TEXT PRIMARY KEY, key TEXT NOT NULL,
            currency TEXT NOT NULL, amount_minor INTEGER NOT NULL, fee_minor INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('pending', 'committed')),
            created_at REAL NOT NULL, expires_at REAL NOT NULL, committed_at REAL,
            running_minor INTEGER)""")
        conn.execute("PRAGMA user_version = 1")
        conn.execute("INSERT INTO ledgers VALUES (?, 'BRL', 2000, ?)", (KEY, T0 + 1))
        conn.execute("INSERT INTO holds VALUES ('po_a', ?, 'BRL', 4000, 0, 'pending', ?, ?, "
                     "NULL, NULL)", (KEY, T0, T0 + 300))
        conn.execute("INSERT INTO holds VALUES ('po_b', ?, 'BRL', 2000, 0, 'committed', ?, ?, "
                     "?, 2000)", (KEY, T0, T0 + 300, T0 + 1))
        conn.close()
        with SqliteReservations(path) as store:
            assert (Decimal("60.00"), Decimal("20.00")) == (
                store.reserved(KEY, counted_since=0, now=T0 + 5),
                store.committed(KEY, since=T0, now=T0 + 5),
            )
            assert Decimal(0) == store.reserved(KEY, counted_since=T0 + 2, now=T0 + 400)

    def test_a_newer_schema_is_refused(self, tmp_path: Path) -> None:
        """A file from a later version is not opened (nor changed)."""
        path = tmp_path / "v9.db"
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA user_version = 9")
        conn.close()
        with pytest.raises(ConfigurationError, match="schema version 9"):
            SqliteReservations(path)


_STEPS = st.lists(
    st.tuples(
        st.sampled_from(["hold", "commit", "release", "uncertain", "resolve", "read"]),
        st.integers(0, 7),  # which payout id
        st.integers(-30, 60),  # how the clock moves (back, sometimes)
        st.integers(1, 90),  # a ttl
    ),
    max_size=40,
)


class TestSqliteLiveTotal:
    @given(steps=_STEPS)
    def test_running_total_matches_the_holds(
        self, steps: list[tuple[str, int, int, int]]
    ) -> None:
        """Whatever happens to holds and however the clock moves, the kept total is the sum."""
        with tempfile.TemporaryDirectory() as folder, SqliteReservations(
            Path(folder) / "h.db", retention=120.0
        ) as store:
            now = T0
            for action, n, step, ttl in steps:
                now += step
                payout_id = f"po_{n}"
                if action == "hold":
                    store.try_hold(hold(payout_id, f"{n + 1}.25", at=now, ttl=ttl),
                                   ceiling=Decimal(40), counted_since=now - 50, now=now)
                elif action == "commit":
                    store.commit(payout_id, owner=owner_of(payout_id), now=now)
                elif action == "release":
                    store.release(payout_id, owner=owner_of(payout_id))
                elif action == "uncertain":
                    store.mark_uncertain(payout_id, owner=owner_of(payout_id), now=now,
                                         until=now + ttl)
                elif action == "resolve":
                    store.resolve(payout_id, sent=ttl % 2 == 0, now=now)
                for at in (now, now - 25, now + 25):
                    listed = store.holds(KEY, counted_since=at - 50, now=at)
                    assert total_held(listed) == store.reserved(KEY, counted_since=at - 50,
                                                                now=at)

    def test_expired_holds_leave_the_total(self, tmp_path: Path) -> None:
        """Holds stop counting at their expiry, and count again if the clock steps back."""
        with SqliteReservations(tmp_path / "h.db") as store:
            for n in range(100):
                store.try_hold(hold(f"po_{n}", "1.00", ttl=10 + n), ceiling=Decimal(1000),
                               counted_since=0, now=T0)
            assert Decimal("49.00") == store.reserved(KEY, counted_since=0, now=T0 + 60)
            store.try_hold(hold("po_x", "1.00", at=T0 + 200), ceiling=Decimal(1000),
                           counted_since=0, now=T0 + 200)  # settles all 100
            assert Decimal("1.00") == store.reserved(KEY, counted_since=0, now=T0 + 200)
            assert Decimal("50.00") == store.reserved(KEY, counted_since=0, now=T0 + 60)

    def test_a_read_settles_a_large_backlog(self, tmp_path: Path) -> None:
        """A read finding many expired holds still in the total takes them out (next reads O(1))."""
        path = tmp_path / "h.db"
        with SqliteReservations(path) as store:
            for n in range(100):
                store.try_hold(hold(f"po_{n}", "1.00", ttl=10), ceiling=Decimal(1000),
                               counted_since=0, now=T0)
            assert Decimal(0) == store.reserved(KEY, counted_since=0, now=T0 + 60)
        with sqlite3.connect(path) as conn:
            ledger = conn.execute("SELECT live_minor, settled_until FROM ledgers").fetchone()
        conn.close()
        assert (0, T0 + 60) == ledger

    def test_a_read_never_waits_to_settle(self, tmp_path: Path) -> None:
        """With the file locked by a writer, a read answers at once and leaves settling."""
        path = tmp_path / "h.db"
        with SqliteReservations(path, timeout=2.0) as store:
            for n in range(100):
                store.try_hold(hold(f"po_{n}", "1.00", ttl=10 + n), ceiling=Decimal(1000),
                               counted_since=0, now=T0)
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                started = time.monotonic()
                counted = store.reserved(KEY, counted_since=0, now=T0 + 80)
                waited = time.monotonic() - started
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert (Decimal("29.00"), True) == (counted, waited < 1.0)
            assert Decimal("29.00") == store.reserved(KEY, counted_since=0, now=T0 + 80)

    def test_purges_run_in_bounded_batches(self, tmp_path: Path) -> None:
        """Past the retention, a key's old holds go a batch per call until none is left."""
        with SqliteReservations(tmp_path / "h.db", retention=100.0) as store:
            for n in range(1200):
                taken = hold(f"po_{n}", "1.00", ttl=5)
                store.try_hold(taken, ceiling=Decimal(10**6), counted_since=0, now=T0)
            left = []
            for step in range(4):
                at = T0 + 200 + step
                store.try_hold(hold(f"po_new_{step}", "1.00", at=at), ceiling=Decimal(10**6),
                               counted_since=0, now=at)
                left.append(sum(store.get(f"po_{n}") is not None for n in range(1200)))
            assert [700, 200, 0, 0] == left


class TestSqliteCommitted:
    def test_sums_commits_after_since(self, tmp_path: Path) -> None:
        """Committed totals count what was committed after *since*, fees included."""
        with SqliteReservations(tmp_path / "h.db") as store:
            for n in range(5):
                taken = replace(hold(f"po_{n}", "10.00", fee="0.50"), created_at=T0)
                store.try_hold(taken, ceiling=Decimal(1000), counted_since=0, now=T0)
                store.commit(f"po_{n}", owner=owner_of(f"po_{n}"), now=T0 + n)
            assert Decimal("31.50") == store.committed(KEY, since=T0 + 1.5, now=T0 + 10)
            assert Decimal(0) == store.committed("other", since=T0, now=T0 + 10)


# The largest hold (2**53 - 1 minor units) of a zero-decimal currency: 512 of them stay 512
# minor units below 2**62, a 513th would pass it.
_BIGGEST = str(2**53 - 1)
_CLP = balance_key("luxcore", None, "CLP")


def _fill(store: SqliteReservations, count: int, *, commit: bool = False) -> None:
    """Hold *count* of the largest CLP holds on one key (each committed at once if *commit*)."""
    for n in range(count):
        store.try_hold(hold(f"po_{n}", _BIGGEST, currency="CLP"), ceiling=Decimal(10**30),
                       counted_since=0, now=T0)
        if commit:
            store.commit(f"po_{n}", owner=owner_of(f"po_{n}"), now=T0)


class TestSqliteLargeTotals:
    def test_a_total_reaching_2_pow_62_is_refused_not_rounded(self, tmp_path: Path) -> None:
        """A hold taking a key's total to 2**62 minor units raises; the total stays exact."""
        with SqliteReservations(tmp_path / "h.db") as store:
            _fill(store, 512)
            with pytest.raises(InvalidPayoutRequest, match=r"2\*\*62 minor units"):
                store.try_hold(hold("po_512", _BIGGEST, currency="CLP"),
                               ceiling=Decimal(10**30), counted_since=0, now=T0)
            assert store.get("po_512") is None
            assert Decimal(512 * (2**53 - 1)) == store.reserved(_CLP, counted_since=0, now=T0)
            small = store.try_hold(hold("po_small", "1", currency="CLP"),
                                   ceiling=Decimal(10**30), counted_since=0, now=T0)
            assert "held" == small.status  # below the limit, holds still go in

    def test_a_total_over_a_smaller_ceiling_is_just_over(self, tmp_path: Path) -> None:
        """Past the ceiling as well, the hold is a plain over_ceiling, as in the Redis store."""
        with SqliteReservations(tmp_path / "h.db") as store:
            _fill(store, 512)
            outcome = store.try_hold(hold("po_512", _BIGGEST, currency="CLP"),
                                     ceiling=Decimal(2**61), counted_since=0, now=T0)
            assert "over_ceiling" == outcome.status

    def test_the_committed_running_total_counts_toward_the_limit(
        self, tmp_path: Path
    ) -> None:
        """Commits no longer counted still make the running total: past 2**62, holds raise."""
        with SqliteReservations(tmp_path / "h.db") as store:
            _fill(store, 512, commit=True)
            assert Decimal(0) == store.reserved(_CLP, counted_since=T0 + 1, now=T0 + 2)
            with pytest.raises(InvalidPayoutRequest, match=r"2\*\*62 minor units"):
                store.try_hold(hold("po_512", _BIGGEST, currency="CLP", at=T0 + 2),
                               ceiling=Decimal(10**30), counted_since=T0 + 1, now=T0 + 2)
            assert Decimal(512 * (2**53 - 1)) == store.committed(_CLP, since=0, now=T0 + 2)

    def test_a_total_sqlite_turned_into_a_float_is_refused(self, tmp_path: Path) -> None:
        """A file whose live total overflowed into a REAL (an earlier version) is not read."""
        path = tmp_path / "h.db"
        with SqliteReservations(path) as store:
            _fill(store, 1)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE ledgers SET live_minor = 9.9e18")
        conn.close()
        with SqliteReservations(path) as store:
            with pytest.raises(InvalidPayoutRequest, match="2\\*\\*62"):
                store.reserved(_CLP, counted_since=0, now=T0)
            with pytest.raises(InvalidPayoutRequest, match="2\\*\\*62"):
                store.try_hold(hold("po_2", "1", currency="CLP"), ceiling=Decimal(10**30),
                               counted_since=0, now=T0)
