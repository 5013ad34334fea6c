"""What only the SQLite store promises: a file that outlives processes, bounded waits."""

from __future__ import annotations

import pickle
import sqlite3
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest

from guard.errors import ConfigurationError, InvalidPayoutRequest
from guard.stores import SqliteReservations, StoreUnavailable, balance_key
from tests._holds import KEY, T0, hold, owner_of


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
