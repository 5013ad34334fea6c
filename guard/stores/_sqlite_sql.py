"""The SQL of ``SqliteReservations``: schema, queries and opening a connection.

Amounts are integers in the currency's minor unit. Each key has a ledger row whose
``committed_minor`` is the running total of every hold ever committed on it, and each committed
hold records that running total after itself (``running_minor``). Commit times never go
backwards on a key, so "committed after t" is the ledger total minus the running total just
before the first hold committed after t: one index seek, however many holds are kept.

The ledger also keeps ``live_minor``, the sum over the key's pending and uncertain holds that
expire after ``settled_until``: every change to a hold adjusts it, and what counts at *now* is
``live_minor`` corrected by the holds expiring between ``settled_until`` and *now* (a short
range of the live index; the clock may step back, and the range then adds). A write moves
``settled_until`` up to its *now*, so each hold crosses it once (the same design as
``_postgres_sql``). Retention purges run at most every ``purge_at`` per key, in bounded batches.

SQLite's integers are exact below 2**63; an arithmetic result past that silently becomes a
REAL (a float). ``SqliteReservations`` refuses a hold that would take a key's live total plus
its committed running total to 2**62; the statements that add to a total return it, and the
reads check the sums they get, so that a REAL is refused (its transaction rolled back) rather
than kept or counted.

The fleet tables (``shared``: values and fetch leases; ``budgets``: one GCRA state per request
budget) are part of the same file, so the processes of a host share them.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = [
    "ADJUST_LIVE",
    "BUDGET_READ",
    "BUDGET_WRITE",
    "COMMITTED",
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
    "LIST",
    "LIVE_DELETE",
    "MARK_COMMITTED",
    "MARK_UNCERTAIN",
    "PURGE_AT",
    "SETTLE",
    "SHARED_DROP_LEASE",
    "SHARED_LEASE",
    "SHARED_READ",
    "SHARED_WRITE",
    "connect",
]

VERSION = 3
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
# Values and fetch leases a fleet shares (a row may hold either or both), and request budgets.
_FLEET = (
    """CREATE TABLE IF NOT EXISTS shared (
        name        TEXT PRIMARY KEY,
        payload     TEXT,
        written_at  REAL,
        keep_until  REAL,
        lease_owner TEXT,
        lease_until REAL
    )""",
    """CREATE TABLE IF NOT EXISTS budgets (
        name TEXT PRIMARY KEY,
        tat  REAL NOT NULL
    )""",
)
# -1e999 is SQLite's -Infinity: a new ledger has settled nothing yet.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS ledgers (
        key             TEXT PRIMARY KEY,
        currency        TEXT NOT NULL,
        committed_minor INTEGER NOT NULL,
        last_commit     REAL,
        lapse_at        REAL,
        live_minor      INTEGER NOT NULL DEFAULT 0,
        settled_until   REAL NOT NULL DEFAULT -1e999,
        purge_at        REAL
    )""",
    _HOLDS_TABLE.format(name="holds"),
    *_INDEXES,
    *_FLEET,
    f"PRAGMA user_version = {VERSION}",
)
# Version 2 had no live total: every live hold starts in it (settled_until is -Infinity), and
# the first write on the key settles those that expired.
_UPGRADE_FROM_2 = (
    "ALTER TABLE ledgers ADD COLUMN live_minor INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE ledgers ADD COLUMN settled_until REAL NOT NULL DEFAULT -1e999",
    "ALTER TABLE ledgers ADD COLUMN purge_at REAL",
    """UPDATE ledgers SET live_minor = (SELECT COALESCE(SUM(amount_minor + fee_minor), 0)
        FROM holds WHERE state != 'committed' AND holds.key = ledgers.key)""",
    *_FLEET,
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
    *_UPGRADE_FROM_2,
)

# The live holds on key ?1 expiring between the ledger's settled_until and ?2 (now), in either
# order: (their sum, how many). Used inside a query on ledgers aliased l.
_RANGE = """FROM holds WHERE state != 'committed' AND key = ?1
            AND expires_at > min(l.settled_until, ?2) AND expires_at <= max(l.settled_until, ?2)"""
# ?1 key, ?2 now, ?3 counted_since -> (currency, counted minor units, lapse_at, the settle
# range's size, settled_until, purge_at, live_minor, committed_minor); no row: nothing held.
# The range is subtracted when now is past settled_until, added when the clock stepped back
# before it.
COUNTED = f"""
    SELECT l.currency,
        l.live_minor
        + CASE WHEN ?2 > l.settled_until THEN -1 ELSE 1 END
          * COALESCE((SELECT SUM(amount_minor + fee_minor) {_RANGE}), 0)
        + COALESCE((SELECT l.committed_minor - running_minor + amount_minor + fee_minor
            FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at > ?3
            ORDER BY committed_at, running_minor LIMIT 1), 0),
        l.lapse_at,
        (SELECT COUNT(*) {_RANGE}),
        l.settled_until,
        l.purge_at,
        l.live_minor,
        l.committed_minor
    FROM ledgers AS l WHERE l.key = ?1
"""  # noqa: S608 - built from constants only; values are bound parameters
# ?1 key, ?2 now: move settled_until up to now, taking the holds that expired out of the total.
SETTLE = f"""
    UPDATE ledgers AS l SET
        live_minor = live_minor - COALESCE((SELECT SUM(amount_minor + fee_minor) {_RANGE}), 0),
        settled_until = ?2
    WHERE key = ?1 AND settled_until < ?2
"""  # noqa: S608 - constants only
# Take a live hold's old part out of its key's live total and put its new part in: ?1 key,
# ?2 old expires_at, ?3 old minor units, ?4 new expires_at, ?5 new minor units (NULL for "none").
# A part is in the total when it expires after settled_until. -> (the new live total).
ADJUST_LIVE = """
    UPDATE ledgers SET live_minor = live_minor
        - CASE WHEN ?2 > settled_until THEN ?3 ELSE 0 END
        + CASE WHEN ?4 > settled_until THEN ?5 ELSE 0 END
    WHERE key = ?1
    RETURNING live_minor
"""
# ?1 key, ?2 since -> (currency, minor units committed after since); no row: nothing committed.
COMMITTED = """
    SELECT l.currency, COALESCE((SELECT l.committed_minor - running_minor + amount_minor
        + fee_minor FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at > ?2
        ORDER BY committed_at, running_minor LIMIT 1), 0)
    FROM ledgers AS l WHERE l.key = ?1
"""
HOLDS = f"""
    SELECT {_COLUMNS} FROM holds WHERE state != 'committed' AND key = ?1 AND expires_at > ?2
    UNION ALL
    SELECT {_COLUMNS} FROM holds WHERE state = 'committed' AND key = ?1 AND committed_at > ?3
    ORDER BY created_at, payout_id
    LIMIT ?4
"""  # noqa: S608 - built from constants only; values are bound parameters
# Every hold across keys, newest first, for operators (list_holds): a scan of the table.
# :now, :state, :currency, :provider (NULL: any), :limit. A pending hold past its ttl is left out.
LIST = f"""
    SELECT {_COLUMNS} FROM holds
    WHERE (state != 'pending' OR expires_at > :now)
        AND (:state IS NULL OR state = :state)
        AND (:currency IS NULL OR currency = :currency)
        AND (:provider IS NULL OR key = :provider
             OR substr(key, 1, length(:provider) + 1) = :provider || '|')
    ORDER BY created_at DESC, payout_id
    LIMIT :limit
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
# ?1 the hold's minor units, ?2 now, ?3 key, ?4 the hold's expires_at while it was live ->
# (running total, commit time, live total): the hold leaves the live total for the committed
# one. Commit times never go backwards on a key: max(last, now) is
# guard.stores._machine.commit_time, in SQL so that reading and writing the ledger is one
# statement.
LEDGER_COMMIT = """
    UPDATE ledgers SET committed_minor = committed_minor + ?1,
        last_commit = max(coalesce(last_commit, ?2), ?2),
        live_minor = live_minor - CASE WHEN ?4 > settled_until THEN ?1 ELSE 0 END
    WHERE key = ?3
    RETURNING committed_minor, last_commit, live_minor
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
# Forget holds past the retention window (?1 key, ?2 horizon, ?3 at most this many): what
# memory.py purges too. Only live holds already settled out of the live total go.
LIVE_DELETE = """
    DELETE FROM holds WHERE rowid IN (SELECT rowid FROM holds WHERE state != 'committed'
        AND key = ?1 AND expires_at <= min(?2,
            (SELECT settled_until FROM ledgers WHERE key = ?1)) LIMIT ?3)
"""
COMMITTED_DELETE = """
    DELETE FROM holds WHERE rowid IN (SELECT rowid FROM holds WHERE state = 'committed'
        AND key = ?1 AND committed_at <= ?2 LIMIT ?3)
"""
# ?1 when the key's next purge is due, ?2 key.
PURGE_AT = "UPDATE ledgers SET purge_at = ?1 WHERE key = ?2"

# ?1 name -> (payload, written_at, keep_until, lease_owner, lease_until).
SHARED_READ = (
    "SELECT payload, written_at, keep_until, lease_owner, lease_until FROM shared WHERE name = ?"
)
# ?1 name, ?2 owner, ?3 lease_until.
SHARED_LEASE = """
    INSERT INTO shared (name, lease_owner, lease_until) VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET lease_owner = ?2, lease_until = ?3
"""
# ?1 name, ?2 payload, ?3 now, ?4 keep_until, ?5 the writer (whose lease ends).
SHARED_WRITE = """
    INSERT INTO shared (name, payload, written_at, keep_until) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (name) DO UPDATE SET payload = ?2, written_at = ?3, keep_until = ?4,
        lease_until = CASE WHEN lease_owner = ?5 THEN NULL ELSE lease_until END,
        lease_owner = CASE WHEN lease_owner = ?5 THEN NULL ELSE lease_owner END
"""
SHARED_DROP_LEASE = """
    UPDATE shared SET lease_owner = NULL, lease_until = NULL WHERE name = ?1 AND lease_owner = ?2
"""
BUDGET_READ = "SELECT tat FROM budgets WHERE name = ?"
BUDGET_WRITE = """
    INSERT INTO budgets (name, tat) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET tat = ?2
"""


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
        if version not in {0, 1, 2, VERSION}:
            raise sqlite3.DatabaseError(
                f"schema version {version} is not one this version reads (1 to {VERSION})"
            )
        if version != VERSION:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Another process may have created or upgraded the tables meanwhile.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                steps = {0: _SCHEMA, 1: _UPGRADE_FROM_1, 2: _UPGRADE_FROM_2}.get(version, ())
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
