"""The SQL of ``SqliteReservations``: schema, queries and opening a connection.

Amounts are integers in the currency's minor unit. Each key has a ledger row whose
``committed_minor`` is the running total of every hold ever committed on it, and each committed
hold records that running total after itself (``running_minor``). Commit times never go
backwards on a key, so "committed after t" is the ledger total minus the running total just
before the first hold committed after t: one index seek, however many holds are kept.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = [
    "COMMITTED_DELETE",
    "COUNTED",
    "DROP",
    "GET",
    "HOLDS",
    "INSERT",
    "LAPSED",
    "LAPSE_AT_NEXT",
    "LAPSE_AT_SOONER",
    "LEDGER_COMMIT",
    "LEDGER_INSERT",
    "LIVE_DELETE",
    "MARK_COMMITTED",
    "MARK_UNCERTAIN",
    "connect",
]

VERSION = 2
_COLUMNS = (
    "payout_id, key, currency, amount_minor, fee_minor, state, created_at, expires_at, "
    "committed_at, owner"
)
_HOLDS_TABLE = """CREATE TABLE {name} (
        payout_id     TEXT PRIMARY KEY,
        key           TEXT NOT NULL,
        currency      TEXT NOT NULL,
        amount_minor  INTEGER NOT NULL,
        fee_minor     INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'committed', 'uncertain')),
        created_at    REAL NOT NULL,
        expires_at    REAL NOT NULL,
        committed_at  REAL,
        running_minor INTEGER,
        owner         TEXT NOT NULL DEFAULT '',
        reported      INTEGER NOT NULL DEFAULT 0
    )"""
# Covering indexes: counting the holds on a key never reads the table itself. Pending and
# uncertain holds ("live") both count while expires_at is ahead.
_INDEXES = (
    """CREATE INDEX IF NOT EXISTS holds_live
        ON holds (key, expires_at, amount_minor, fee_minor)
        WHERE state != 'committed'""",
    """CREATE INDEX IF NOT EXISTS holds_committed
        ON holds (key, committed_at, running_minor, amount_minor, fee_minor)
        WHERE state = 'committed'""",
)
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledgers (
        key             TEXT PRIMARY KEY,
        currency        TEXT NOT NULL,
        committed_minor INTEGER NOT NULL,
        last_commit     REAL,
        lapse_at        REAL
    )""",
    _HOLDS_TABLE.format(name="holds"),
    *_INDEXES,
    f"PRAGMA user_version = {VERSION}",
)
# Version 1 had no owner tokens and no uncertain state: its holds keep an empty owner (no
# reservation can act on them; they expire or stay committed as before).
_UPGRADE_FROM_1 = (
    "ALTER TABLE ledgers ADD COLUMN lapse_at REAL",
    _HOLDS_TABLE.format(name="holds_v2"),
    """INSERT INTO holds_v2 (payout_id, key, currency, amount_minor, fee_minor, state,
        created_at, expires_at, committed_at, running_minor)
        SELECT payout_id, key, currency, amount_minor, fee_minor, state, created_at,
        expires_at, committed_at, running_minor FROM holds""",
    "DROP TABLE holds",
    "ALTER TABLE holds_v2 RENAME TO holds",
    *_INDEXES,
    f"PRAGMA user_version = {VERSION}",
)

# ?1 key, ?2 now, ?3 counted_since -> (currency, counted minor units); no row: nothing held.
# The third column, the key's lapse_at, spares try_hold reading the ledger on its own.
COUNTED = """
    SELECT l.currency,
        COALESCE((SELECT SUM(amount_minor + fee_minor) FROM holds
            WHERE state != 'committed' AND key = ?1 AND expires_at > ?2), 0)
        + COALESCE((SELECT l.committed_minor - running_minor + amount_minor + fee_minor
            FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at > ?3
            ORDER BY committed_at, running_minor LIMIT 1), 0),
        l.lapse_at
    FROM ledgers AS l WHERE l.key = ?1
"""
HOLDS = f"""
    SELECT {_COLUMNS} FROM holds WHERE state != 'committed' AND key = ?1 AND expires_at > ?2
    UNION ALL
    SELECT {_COLUMNS} FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at > ?3
    ORDER BY created_at, payout_id
    LIMIT ?4
"""  # noqa: S608 - built from constants only; values are bound parameters
GET = f"SELECT {_COLUMNS} FROM holds WHERE payout_id = ?"  # noqa: S608 - constants only
# ?1 key, ?2 now: the uncertain holds whose uncertain_ttl ended, each returned once.
# "state != 'committed'" repeats the live index's condition so that SQLite uses that index (it
# cannot tell that state = 'uncertain' implies it): without it every hold is scanned.
LAPSED = f"""
    UPDATE holds SET reported = 1
    WHERE key = ?1 AND state != 'committed' AND state = 'uncertain' AND reported = 0
        AND expires_at <= ?2
    RETURNING {_COLUMNS}
"""  # noqa: S608 - constants only
# A key's lapse_at is at or before the earliest expiry of its unreported uncertain holds (NULL:
# none), so that try_hold looks for lapsed ones only when one may have lapsed.
LAPSE_AT_SOONER = "UPDATE ledgers SET lapse_at = min(coalesce(lapse_at, ?1), ?1) WHERE key = ?2"
LAPSE_AT_NEXT = """
    UPDATE ledgers SET lapse_at = (SELECT MIN(expires_at) FROM holds
        WHERE key = ?1 AND state != 'committed' AND state = 'uncertain' AND reported = 0)
    WHERE key = ?1
"""
LEDGER_INSERT = "INSERT INTO ledgers (key, currency, committed_minor) VALUES (?, ?, 0)"
# ?1 the hold's minor units, ?2 now, ?3 key -> (running total, commit time). Commit times never
# go backwards on a key: max(last, now) is guard.stores._machine.commit_time, in SQL so that
# reading and writing the ledger is one statement.
LEDGER_COMMIT = """
    UPDATE ledgers SET committed_minor = committed_minor + ?1,
        last_commit = max(coalesce(last_commit, ?2), ?2)
    WHERE key = ?3
    RETURNING committed_minor, last_commit
"""
INSERT = """
    INSERT OR REPLACE INTO holds (payout_id, key, currency, amount_minor, fee_minor, state,
        created_at, expires_at, owner) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)
"""
MARK_COMMITTED = """
    UPDATE holds SET state = 'committed', committed_at = ?, running_minor = ?
    WHERE payout_id = ?
"""
MARK_UNCERTAIN = "UPDATE holds SET state = 'uncertain', expires_at = ? WHERE payout_id = ?"
DROP = "DELETE FROM holds WHERE payout_id = ?"
# Forget holds past the retention window (?1 key, ?2 horizon): what memory.py purges too.
LIVE_DELETE = "DELETE FROM holds WHERE state != 'committed' AND key = ?1 AND expires_at <= ?2"
COMMITTED_DELETE = (
    "DELETE FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at <= ?2"
)


def connect(path: Path, timeout: float) -> sqlite3.Connection:
    """Open *path* in WAL mode, creating the tables on first use.

    Raises:
        sqlite3.OperationalError: locked by another opener, or the file cannot be opened.
        sqlite3.DatabaseError: not a database, WAL refused, or a schema from another version.
    """
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.DatabaseError(f"the file system refused WAL journal mode ({mode!r})")
        # A committed transaction survives a crash of the process without an fsync per write.
        conn.execute("PRAGMA synchronous = NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in {0, 1, VERSION}:
            raise sqlite3.DatabaseError(
                f"schema version {version} is not one this version reads (1 or {VERSION})"
            )
        if version != VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have created or upgraded the tables meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                steps = {0: _SCHEMA, 1: _UPGRADE_FROM_1}.get(version, ())
                for statement in steps:
                    conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    return conn
