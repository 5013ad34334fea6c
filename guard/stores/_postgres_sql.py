"""The SQL of ``PostgresReservations``: the versioned schema, its functions and the queries.

Everything lives in one schema of the operator's choice (``{s}`` below, default
``payout_guard``), created and upgraded by ``migrate`` only. Amounts are integers in the
currency's minor unit (``bigint`` per hold, ``numeric`` for running totals, which never
overflow). As in SQLite, each key has a ledger row: ``committed_minor`` is the running total of
every hold ever committed on it, and each committed hold records that running total after
itself (``running_minor``), so "committed after t" is one index seek however many commits the
retention keeps. Live (pending and uncertain) holds are summed through a covering index.

Every change is one PL/pgSQL function call: one round trip, atomic under READ COMMITTED from
any number of hosts, because each function first locks its key's ledger row (``FOR UPDATE``),
and every writer on a key takes that lock before it reads or changes the key's holds. Locks are
always taken ledger first, then hold, so two functions never wait on each other in a cycle.
The functions mirror the hold state machine of ``guard/stores/_machine.py`` (``admit``,
``to_commit``, ``commit_time``, ``to_uncertain``); each says which part. A race only between
payouts with the same id on two different keys raises SQLSTATE 40001, which the store retries.
"""

from __future__ import annotations

__all__ = [
    "COUNTED",
    "GET",
    "HOLDS",
    "MIGRATION_LOCK",
    "RELEASE",
    "STEPS",
    "VERSION",
    "VERSION_READ",
    "functions",
]

VERSION = 1

# A constant advisory lock id: migrations of any schema by any host take turns.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(7161102016)"

COLUMNS = (
    "payout_id, key, currency, amount_minor, fee_minor, state, created_at, expires_at, "
    "committed_at, owner"
)

VERSION_READ = "SELECT max(version) FROM {s}.schema_version"

_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS {s}.schema_version (
    version     integer PRIMARY KEY,
    migrated_at timestamptz NOT NULL DEFAULT now()
)"""

# Schema steps: STEPS[n] takes a schema at version n to version n + 1.
STEPS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE {s}.ledgers (
            key             text PRIMARY KEY,
            currency        text NOT NULL,
            committed_minor numeric NOT NULL DEFAULT 0,
            last_commit     double precision
        )""",
        """CREATE TABLE {s}.holds (
            payout_id     text PRIMARY KEY,
            key           text NOT NULL,
            currency      text NOT NULL,
            amount_minor  bigint NOT NULL CHECK (amount_minor >= 0),
            fee_minor     bigint NOT NULL CHECK (fee_minor >= 0),
            state         text NOT NULL CHECK (state IN ('pending', 'committed', 'uncertain')),
            created_at    double precision NOT NULL,
            expires_at    double precision NOT NULL,
            committed_at  double precision,
            running_minor numeric,
            owner         text NOT NULL DEFAULT '',
            reported      boolean NOT NULL DEFAULT false
        )""",
        # Pending and uncertain holds ("live") both count while expires_at is ahead.
        """CREATE INDEX holds_live ON {s}.holds (key, expires_at)
            INCLUDE (amount_minor, fee_minor) WHERE state <> 'committed'""",
        """CREATE INDEX holds_committed ON {s}.holds (key, committed_at, running_minor)
            INCLUDE (amount_minor, fee_minor) WHERE state = 'committed'""",
        # Uncertain holds not yet reported as lapsed: few, looked at by every try_hold.
        """CREATE INDEX holds_unreported ON {s}.holds (key, expires_at)
            WHERE state = 'uncertain' AND NOT reported""",
    ),
)

# What every function shares: lock the ledger of the hold under p_id, then the hold itself.
# Sets e (the hold, or e.payout_id IS NULL when there is none) and l (its ledger).
_LOCK_HOLD = """
    SELECT h.key INTO v_key FROM {s}.holds AS h WHERE h.payout_id = p_id;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO l FROM {s}.ledgers WHERE key = v_key FOR UPDATE;
    SELECT * INTO e FROM {s}.holds AS h WHERE h.payout_id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;  -- released meanwhile
    END IF;
    IF e.key <> v_key THEN
        -- Replaced on another key meanwhile (an expired hold re-taken): start again.
        RAISE EXCEPTION 'hold % moved between keys' , p_id USING ERRCODE = '40001';
    END IF;
"""

# machine.commit_time + the running total: record e's commit at p_now; returns nothing.
_RECORD_COMMIT = """
CREATE OR REPLACE FUNCTION {s}.record_commit(p_id text, p_key text, p_currency text,
                                            p_held bigint, p_now double precision)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    l {s}.ledgers%ROWTYPE;
    v_at double precision;
    v_running numeric;
BEGIN
    SELECT * INTO l FROM {s}.ledgers WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN  -- a hold always creates its ledger; be safe all the same
        INSERT INTO {s}.ledgers (key, currency) VALUES (p_key, p_currency)
            RETURNING * INTO l;
    END IF;
    -- machine.commit_time: commit times never go backwards on a key.
    v_at := CASE WHEN l.last_commit IS NULL OR p_now >= l.last_commit
                 THEN p_now ELSE l.last_commit END;
    v_running := l.committed_minor + p_held;
    UPDATE {s}.ledgers SET committed_minor = v_running, last_commit = v_at WHERE key = p_key;
    UPDATE {s}.holds SET state = 'committed', committed_at = v_at, running_minor = v_running
        WHERE payout_id = p_id;
END $$"""

# machine.admit, then write: returns the status, what counted, the key's currency when it
# differs, the existing hold (duplicate) and the uncertain holds found lapsed, as JSON.
_TRY_HOLD = """
CREATE OR REPLACE FUNCTION {s}.try_hold(
    p_id text, p_key text, p_currency text, p_amount bigint, p_fee bigint,
    p_created double precision, p_expires double precision, p_owner text,
    p_ceiling numeric, p_since double precision, p_now double precision,
    p_horizon double precision,
    OUT status text, OUT counted numeric, OUT key_currency text, OUT existing json,
    OUT lapsed json)
LANGUAGE plpgsql AS $$
DECLARE
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
    v_new boolean := false;
BEGIN
    SELECT * INTO l FROM {s}.ledgers WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        -- Two first holds on a key: the second waits here for the first to commit.
        INSERT INTO {s}.ledgers (key, currency) VALUES (p_key, p_currency)
            ON CONFLICT (key) DO NOTHING;
        v_new := FOUND;
        SELECT * INTO l FROM {s}.ledgers WHERE key = p_key FOR UPDATE;
    END IF;
    IF l.currency <> p_currency THEN  -- machine.admit: one currency per key
        status := 'mixed';
        key_currency := l.currency;
        RETURN;
    END IF;
    counted := COALESCE((
        SELECT sum(amount_minor + fee_minor) FROM {s}.holds
        WHERE state <> 'committed' AND key = p_key AND expires_at > p_now), 0)
      + COALESCE((
        SELECT l.committed_minor - running_minor + amount_minor + fee_minor FROM {s}.holds
        WHERE state = 'committed' AND key = p_key AND committed_at > p_since
        ORDER BY committed_at, running_minor LIMIT 1), 0);
    SELECT * INTO e FROM {s}.holds AS h WHERE h.payout_id = p_id;
    IF FOUND AND NOT (e.state = 'pending' AND e.expires_at <= p_now) THEN
        status := 'duplicate';  -- being sent, sent, or maybe sent
        existing := row_to_json(e);
    ELSIF counted + p_amount + p_fee > p_ceiling THEN
        status := 'over_ceiling';
    ELSE
        status := 'held';
    END IF;
    WITH gone AS (
        UPDATE {s}.holds SET reported = true
        WHERE key = p_key AND state = 'uncertain' AND NOT reported AND expires_at <= p_now
        RETURNING {columns}
    ) SELECT json_agg(row_to_json(gone)) INTO lapsed FROM gone;
    IF status <> 'held' THEN
        IF v_new THEN
            DELETE FROM {s}.ledgers WHERE key = p_key;  -- nothing was held: leave no trace
        END IF;
        RETURN;
    END IF;
    -- Forget holds past the retention window, as the other stores do.
    DELETE FROM {s}.holds
        WHERE state <> 'committed' AND key = p_key AND expires_at <= p_horizon;
    DELETE FROM {s}.holds
        WHERE state = 'committed' AND key = p_key AND committed_at <= p_horizon;
    INSERT INTO {s}.holds AS h (payout_id, key, currency, amount_minor, fee_minor, state,
                                created_at, expires_at, owner)
        VALUES (p_id, p_key, p_currency, p_amount, p_fee, 'pending', p_created, p_expires,
                p_owner)
        ON CONFLICT (payout_id) DO UPDATE SET
            key = EXCLUDED.key, currency = EXCLUDED.currency,
            amount_minor = EXCLUDED.amount_minor, fee_minor = EXCLUDED.fee_minor,
            state = 'pending', created_at = EXCLUDED.created_at,
            expires_at = EXCLUDED.expires_at, committed_at = NULL, running_minor = NULL,
            owner = EXCLUDED.owner, reported = false
        WHERE h.state = 'pending' AND h.expires_at <= p_now;
    IF NOT FOUND THEN
        -- The same payout id was taken on another key since we looked: start again, and
        -- the next attempt reports it as a duplicate.
        RAISE EXCEPTION 'hold % taken concurrently', p_id USING ERRCODE = '40001';
    END IF;
END $$"""

# machine.to_commit: only the owner commits; a committed hold keeps its first commit time.
_COMMIT = """
CREATE OR REPLACE FUNCTION {s}.commit(p_id text, p_owner text, p_now double precision)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    IF p_owner = '' OR e.owner <> p_owner THEN
        RETURN;
    END IF;
    IF e.state <> 'committed' THEN
        PERFORM {s}.record_commit(e.payout_id, e.key, e.currency,
                                 e.amount_minor + e.fee_minor, p_now);
    END IF;
    RETURN QUERY SELECT * FROM {s}.holds AS h WHERE h.payout_id = p_id;
END $$"""

# machine.to_uncertain: only the owner's pending hold becomes uncertain, counting until p_until.
_MARK_UNCERTAIN = """
CREATE OR REPLACE FUNCTION {s}.mark_uncertain(p_id text, p_owner text,
                                             p_until double precision)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    IF p_owner = '' OR e.owner <> p_owner THEN
        RETURN;
    END IF;
    IF e.state = 'pending' THEN
        UPDATE {s}.holds SET state = 'uncertain', expires_at = p_until WHERE payout_id = p_id;
    END IF;
    RETURN QUERY SELECT * FROM {s}.holds AS h WHERE h.payout_id = p_id;
END $$"""

# ReservationStore.resolve: an uncertain hold becomes committed at p_now (sent) or is
# dropped; the hold is returned as it was found.
_RESOLVE = """
CREATE OR REPLACE FUNCTION {s}.resolve(p_id text, p_sent boolean, p_now double precision)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    v_key text;
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    RETURN NEXT e;
    IF e.state <> 'uncertain' THEN
        RETURN;
    END IF;
    IF p_sent THEN
        PERFORM {s}.record_commit(e.payout_id, e.key, e.currency,
                                 e.amount_minor + e.fee_minor, p_now);
    ELSE
        DELETE FROM {s}.holds WHERE payout_id = p_id;
    END IF;
END $$"""

_FUNCTIONS = (_RECORD_COMMIT, _TRY_HOLD, _COMMIT, _MARK_UNCERTAIN, _RESOLVE)

# %(...)s parameters are bound by psycopg; {s} is the schema (a checked, quoted identifier).
TRY_HOLD = (
    "SELECT status, counted, key_currency, existing, lapsed FROM {s}.try_hold("
    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
COMMIT = "SELECT " + COLUMNS + " FROM {s}.commit(%s, %s, %s)"
MARK_UNCERTAIN = "SELECT " + COLUMNS + " FROM {s}.mark_uncertain(%s, %s, %s)"
RESOLVE = "SELECT " + COLUMNS + " FROM {s}.resolve(%s, %s, %s)"
# Only a pending hold, only by its owner; a release only lowers what counts, so it needs no
# ledger lock.
RELEASE = (
    "DELETE FROM {s}.holds WHERE payout_id = %s AND state = 'pending' AND owner <> '' "
    "AND owner = %s RETURNING 1"
)
GET = "SELECT " + COLUMNS + " FROM {s}.holds WHERE payout_id = %s"
# (key, now, counted_since) -> (currency, counted minor units); no row: nothing held.
COUNTED = """
    SELECT l.currency,
        COALESCE((SELECT sum(amount_minor + fee_minor) FROM {s}.holds
            WHERE state <> 'committed' AND key = l.key AND expires_at > %(now)s), 0)
        + COALESCE((SELECT l.committed_minor - running_minor + amount_minor + fee_minor
            FROM {s}.holds WHERE state = 'committed' AND key = l.key
            AND committed_at > %(since)s ORDER BY committed_at, running_minor LIMIT 1), 0)
    FROM {s}.ledgers AS l WHERE l.key = %(key)s
"""
HOLDS = (
    "SELECT * FROM ("
    "SELECT " + COLUMNS + " FROM {s}.holds WHERE state <> 'committed' AND key = %(key)s "
    "AND expires_at > %(now)s "
    "UNION ALL "
    "SELECT " + COLUMNS + " FROM {s}.holds WHERE state = 'committed' AND key = %(key)s "
    "AND committed_at > %(since)s) AS counting "
    "ORDER BY created_at, payout_id LIMIT %(limit)s"
)


def functions(schema: str) -> tuple[str, ...]:
    """Return the statements that (re)create the store's functions in *schema*."""
    return tuple(text.format(s=schema, columns=COLUMNS) for text in _FUNCTIONS)


def version_table(schema: str) -> str:
    """Return the statement that creates *schema*'s version table when missing."""
    return _VERSION_TABLE.format(s=schema)
