"""The SQL of ``PostgresReservations``: the versioned schema, its functions and the queries.

Everything lives in one schema of the operator's choice (``{s}`` below, default
``payout_guard``), created and upgraded by ``migrate`` only. Amounts are integers in the
currency's minor unit (``bigint`` per hold, ``numeric`` for running totals, which never
overflow). As in SQLite, each key has a ledger row: ``committed_minor`` is the running total of
every hold ever committed on it, and each committed hold records that running total after
itself (``running_minor``), so "committed after t" is one index seek however many commits the
retention keeps. The ledger also keeps the live (pending and uncertain) total, settled as
holds expire (see ``ledgers``), so counting costs O(1) index work however many holds a key has.

Every change is one PL/pgSQL function call: one round trip, atomic under READ COMMITTED from
any number of hosts, because each function first locks its key's ledger row (``FOR UPDATE``),
and every writer on a key takes that lock before it reads or changes the key's holds. Locks are
always taken ledger first, then hold (only a hold re-taken on another key after it expired
locks a second ledger: a deadlock there is SQLSTATE 40P01, which the store retries).
The functions mirror the hold state machine of ``guard/stores/_machine.py`` (``admit``,
``to_commit``, ``commit_time``, ``to_uncertain``); each says which part. A race only between
payouts with the same id on two different keys raises SQLSTATE 40001, which the store retries.

Times are seconds since the epoch (``double precision``). With ``p_db`` (the store's
``clock="database"``) the times a function takes are offsets from the database's
``clock_timestamp()``, read once after the function has its lock; the read-only queries then
add ``statement_timestamp()`` (``{t}``). Without it they are taken as passed.

The fleet (``FleetStore``): ``shared`` keeps each shared value with its fetch lease,
``budgets`` each request budget's ``tat`` (``gcra``); both always on the database's clock.
"""

from __future__ import annotations

__all__ = [
    "COMMITTED",
    "COUNTED",
    "DATABASE_NOW",
    "DROP_LEASE",
    "GET",
    "HOLDS",
    "LIST",
    "MIGRATION_LOCK",
    "READ_SHARED",
    "RELEASE",
    "SPEND",
    "STEPS",
    "VERSION",
    "VERSION_READ",
    "WRITE_SHARED",
    "functions",
]

VERSION = 4

# What a read-only query adds to its time offsets on the database clock ({t}): one instant
# per statement.
DATABASE_NOW = "extract(epoch FROM statement_timestamp())::float8 + "

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
        # live_minor is the sum over the key's pending and uncertain holds that expire after
        # settled_until (the latest "now" a hold was taken at): what counts now is live_minor
        # corrected by the holds expiring between settled_until and now, a short index range
        # however many holds the key has (the clock may step back: the range then adds).
        """CREATE TABLE {s}.ledgers (
            key             text PRIMARY KEY,
            currency        text NOT NULL,
            committed_minor numeric NOT NULL DEFAULT 0,
            last_commit     double precision,
            live_minor      numeric NOT NULL DEFAULT 0,
            settled_until   double precision NOT NULL DEFAULT '-Infinity',
            purged_at       double precision
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
    (
        # Version 2: the fleet tables, and the hold functions take p_db (the database clock);
        # the old signatures go (the functions are all made again after every step).
        """CREATE TABLE {s}.shared (
            name        text PRIMARY KEY,
            payload     text,
            written_at  double precision,
            keep_until  double precision,
            lease_owner text,
            lease_until double precision
        )""",
        """CREATE TABLE {s}.budgets (
            name text PRIMARY KEY,
            tat  double precision
        )""",
        """DROP FUNCTION IF EXISTS {s}.try_hold(text, text, text, bigint, bigint,
            double precision, double precision, text, numeric, double precision,
            double precision, double precision)""",
        "DROP FUNCTION IF EXISTS {s}.commit(text, text, double precision)",
        "DROP FUNCTION IF EXISTS {s}.mark_uncertain(text, text, double precision)",
        "DROP FUNCTION IF EXISTS {s}.resolve(text, boolean, double precision)",
    ),
    (
        # Version 3, for speed: a table's CHECK constraints are read back from their catalog
        # text and planned again by every statement that writes a row (a tenth of a hold and
        # its commit); a domain's check is kept compiled for the session, and runs only on
        # the columns a statement sets. So the holds' amounts and state are domains, checked
        # as before. try_hold returns a composite type: its row shape is looked up, not built
        # again from the OUT parameters at each call.
        "CREATE DOMAIN {s}.minor_units AS bigint CHECK (VALUE >= 0)",
        """CREATE DOMAIN {s}.hold_state AS text
            CHECK (VALUE IN ('pending', 'committed', 'uncertain'))""",
        """ALTER TABLE {s}.holds
            DROP CONSTRAINT IF EXISTS holds_amount_minor_check,
            DROP CONSTRAINT IF EXISTS holds_fee_minor_check,
            DROP CONSTRAINT IF EXISTS holds_state_check,
            ALTER COLUMN amount_minor TYPE {s}.minor_units,
            ALTER COLUMN fee_minor TYPE {s}.minor_units,
            ALTER COLUMN state TYPE {s}.hold_state""",
        """CREATE TYPE {s}.hold_outcome AS (
            status text, counted numeric, key_currency text, existing json, lapsed json,
            created double precision, expires double precision)""",
        """DROP FUNCTION IF EXISTS {s}.try_hold(text, text, text, bigint, bigint,
            double precision, double precision, text, numeric, double precision,
            double precision, double precision, boolean)""",
        # A key's ledger row is updated at every hold and commit, each update a new version
        # in the same page (HOT), and every lookup of the row walks that chain of versions.
        # The page is pruned only once it is nearly full: by default after some 60 versions.
        # With 90% of each page kept free, pruning starts after a few: a twentieth fewer
        # server instructions per hold and commit, for a table of one row per key.
        "ALTER TABLE {s}.ledgers SET (fillfactor = 10)",
    ),
    (
        # Version 4, for speed: keys and payout ids are compared byte by byte (COLLATE "C"):
        # every index probe and insert on them compared them through the database's locale
        # before, and the other stores order ties by payout id in byte order too. Each ledger
        # keeps a lower bound of when one of its unreported uncertain holds lapses
        # (lapse_from, NULL: none), so try_hold looks for lapsed holds only from then on,
        # and one of when the next live hold after settled_until expires (next_expiry,
        # NULL: none), so try_hold sums the holds expired since the mark only from then on.
        """ALTER TABLE {s}.holds ALTER COLUMN payout_id TYPE text COLLATE "C",
            ALTER COLUMN key TYPE text COLLATE "C"
        """,
        """ALTER TABLE {s}.ledgers ALTER COLUMN key TYPE text COLLATE "C",
            ADD COLUMN lapse_from double precision,
            ADD COLUMN next_expiry double precision""",
        """UPDATE {s}.ledgers AS l SET
            lapse_from = (SELECT min(h.expires_at) FROM {s}.holds AS h
                WHERE h.key = l.key AND h.state = 'uncertain' AND NOT h.reported),
            next_expiry = (SELECT min(h.expires_at) FROM {s}.holds AS h
                WHERE h.key = l.key AND h.state <> 'committed'
                AND h.expires_at > l.settled_until)""",
    ),
)

# What the holds on a key take now: the live total corrected by the holds expiring between
# the ledger's settled_until (l) and now, plus the commits after counted_since. Arguments:
# ledger alias l, now, counted_since.
_COUNT = """
    l.live_minor
    + CASE WHEN {now} > l.settled_until THEN -1 ELSE 1 END * COALESCE((
        SELECT sum(amount_minor + fee_minor) FROM {s}.holds
        WHERE state <> 'committed' AND key = l.key
        AND expires_at > least(l.settled_until, {now})
        AND expires_at <= greatest(l.settled_until, {now})), 0)
    + COALESCE((
        SELECT l.committed_minor - running_minor + amount_minor + fee_minor FROM {s}.holds
        WHERE state = 'committed' AND key = l.key AND committed_at > {since}
        ORDER BY committed_at, running_minor LIMIT 1), 0)"""

# Lock the ledger of the key the hold under p_id is on (nothing found: return), then read the
# hold: every function that changes a hold holds its key's ledger lock, so e stays as read.
_LOCK_HOLD = """
    SELECT * INTO l FROM {s}.ledgers
        WHERE key = (SELECT h.key FROM {s}.holds AS h WHERE h.payout_id = p_id)
        FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO e FROM {s}.holds AS h WHERE h.payout_id = p_id AND h.key = l.key;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM {s}.holds AS h WHERE h.payout_id = p_id) THEN
            -- Re-taken on another key meanwhile: start again.
            RAISE EXCEPTION 'hold % moved between keys', p_id USING ERRCODE = '40001';
        END IF;
        RETURN;  -- dropped meanwhile
    END IF;
"""

# machine.commit_time: commit times never go backwards on a key.
_COMMIT_TIME = """
CREATE OR REPLACE FUNCTION {s}.commit_time(p_now double precision, p_last double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_last IS NULL OR p_now >= p_last THEN p_now ELSE p_last END
$$"""

# Mark e committed at commit_time(p_now) and add it to the running total, leaving the live
# total; returns the hold as recorded. The caller holds the ledger lock (l is fresh).
_RECORD_COMMIT = """
CREATE OR REPLACE FUNCTION {s}.record_commit(e {s}.holds, l {s}.ledgers, p_now double precision)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY WITH done AS (
        UPDATE {s}.holds SET state = 'committed',
            committed_at = {s}.commit_time(p_now, l.last_commit),
            running_minor = l.committed_minor + e.amount_minor + e.fee_minor
        WHERE payout_id = e.payout_id
        RETURNING *
    ), ledger AS (
        UPDATE {s}.ledgers AS lg SET committed_minor = done.running_minor,
            last_commit = done.committed_at,
            live_minor = lg.live_minor - CASE WHEN e.expires_at > l.settled_until
                                              THEN e.amount_minor + e.fee_minor ELSE 0 END
        FROM done WHERE lg.key = l.key
    )
    SELECT * FROM done;
END $$"""

# machine.admit, then write: returns the status, what counted, the key's currency when it
# differs, the existing hold (duplicate) and the uncertain holds found lapsed, as JSON.
_TRY_HOLD = """
CREATE OR REPLACE FUNCTION {s}.try_hold(
    p_id text, p_key text, p_currency text, p_amount bigint, p_fee bigint,
    p_created double precision, p_expires double precision, p_owner text,
    p_ceiling numeric, p_since double precision, p_now double precision,
    p_horizon double precision, p_db boolean, OUT r {s}.hold_outcome)
LANGUAGE plpgsql AS $$
DECLARE
    l record;  -- the key's ledger row, and where it is (row_id)
    o {s}.holds%ROWTYPE;
    other {s}.ledgers%ROWTYPE;
    v_new boolean := false;
    v_range numeric;
    v_committed numeric;
    v_old json;
    v_next double precision;
    v_t double precision;
BEGIN
    SELECT ctid AS row_id, * INTO l FROM {s}.ledgers WHERE key = p_key FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        -- Two first holds on a key: the second waits here for the first to commit.
        INSERT INTO {s}.ledgers (key, currency) VALUES (p_key, p_currency)
            ON CONFLICT (key) DO NOTHING;
        v_new := FOUND;
        SELECT ctid AS row_id, * INTO l FROM {s}.ledgers WHERE key = p_key
            FOR NO KEY UPDATE;
    END IF;
    IF p_db THEN  -- offsets from the database clock, read under the key's lock
        v_t := extract(epoch FROM clock_timestamp())::float8;
        p_created := v_t + p_created;
        p_expires := v_t + p_expires;
        p_since := v_t + p_since;
        p_now := v_t + p_now;
        p_horizon := v_t + p_horizon;
    END IF;
    r.created := p_created;
    r.expires := p_expires;
    IF l.currency <> p_currency THEN  -- machine.admit: one currency per key
        r.status := 'mixed';
        r.key_currency := l.currency;
        RETURN;
    END IF;
    IF l.next_expiry <= p_now OR p_now < l.settled_until THEN
        -- A live hold may have expired since the mark (or the clock stepped back): sum
        -- them, and find when the next one expires.
        SELECT
            COALESCE((SELECT sum(amount_minor + fee_minor) FROM {s}.holds
                WHERE state <> 'committed' AND key = p_key
                AND expires_at > least(l.settled_until, p_now)
                AND expires_at <= greatest(l.settled_until, p_now)), 0),
            COALESCE((SELECT l.committed_minor - running_minor + amount_minor + fee_minor
                FROM {s}.holds WHERE state = 'committed' AND key = p_key
                AND committed_at > p_since ORDER BY committed_at, running_minor LIMIT 1), 0),
            (SELECT row_to_json(h) FROM {s}.holds AS h WHERE h.payout_id = p_id),
            (SELECT min(expires_at) FROM {s}.holds WHERE state <> 'committed'
                AND key = p_key AND expires_at > greatest(l.settled_until, p_now))
        INTO v_range, v_committed, v_old, v_next;
        IF p_now > l.settled_until THEN
            l.next_expiry := v_next;  -- kept with the settled mark, below
        END IF;
    ELSE
        -- No live hold expires between the mark and now: nothing to sum.
        v_range := 0;
        SELECT
            COALESCE((SELECT l.committed_minor - running_minor + amount_minor + fee_minor
                FROM {s}.holds WHERE state = 'committed' AND key = p_key
                AND committed_at > p_since ORDER BY committed_at, running_minor LIMIT 1), 0),
            (SELECT row_to_json(h) FROM {s}.holds AS h WHERE h.payout_id = p_id)
        INTO v_committed, v_old;
    END IF;
    IF p_now > l.settled_until THEN
        -- Settle the holds that expired since the mark: each crosses it once.
        l.live_minor := l.live_minor - v_range;
        l.settled_until := p_now;
        r.counted := l.live_minor + v_committed;
    ELSE
        r.counted := l.live_minor + v_range + v_committed;  -- the clock stepped back
    END IF;
    IF v_old IS NOT NULL AND NOT (v_old->>'state' = 'pending'
                                  AND (v_old->>'expires_at')::double precision <= p_now) THEN
        r.status := 'duplicate';  -- being sent, sent, or maybe sent
        r.existing := v_old;
    ELSIF r.counted + p_amount + p_fee > p_ceiling THEN
        r.status := 'over_ceiling';
    ELSE
        r.status := 'held';
        r.existing := v_old;  -- NULL, or the expired pending hold this one replaces
    END IF;
    IF l.lapse_from <= p_now THEN  -- an uncertain hold may have lapsed: report each once
        WITH gone AS (
            UPDATE {s}.holds SET reported = true
            WHERE key = p_key AND state = 'uncertain' AND NOT reported AND expires_at <= p_now
            RETURNING {columns}
        ) SELECT json_agg(row_to_json(gone)) INTO r.lapsed FROM gone;
        -- Kept only with a hold taken (below); otherwise it stays a lower bound.
        l.lapse_from := (SELECT min(expires_at) FROM {s}.holds WHERE key = p_key
                         AND state = 'uncertain' AND NOT reported);
    END IF;
    IF r.status <> 'held' THEN
        IF v_new THEN
            DELETE FROM {s}.ledgers WHERE key = p_key;  -- nothing was held: leave no trace
        END IF;
        RETURN;  -- the settled mark is not kept: the ledger stays as it was, consistent
    END IF;
    IF v_old IS NOT NULL AND v_old->>'key' <> p_key THEN
        -- The id's expired hold sits on another key: take it out of that key's live total,
        -- under that key's lock (two keys at once may deadlock: 40P01, retried).
        SELECT * INTO other FROM {s}.ledgers WHERE key = v_old->>'key' FOR NO KEY UPDATE;
        SELECT * INTO o FROM {s}.holds AS h WHERE h.payout_id = p_id FOR UPDATE;
        IF FOUND THEN
            IF o.key <> other.key OR o.state <> 'pending' OR o.expires_at > p_now THEN
                RAISE EXCEPTION 'hold % changed concurrently', p_id USING ERRCODE = '40001';
            END IF;
            IF o.expires_at > other.settled_until THEN
                UPDATE {s}.ledgers SET live_minor = live_minor - o.amount_minor - o.fee_minor
                    WHERE key = other.key;
            END IF;
        END IF;
    END IF;
    IF l.purged_at IS NULL OR p_now >= l.purged_at + 1 OR p_now < l.purged_at THEN
        -- Forget holds past the retention window (at most once a second per key); none of
        -- them is in the live total (they expired before the settled mark).
        DELETE FROM {s}.holds WHERE key = p_key AND (
            (state <> 'committed' AND expires_at <= p_horizon)
            OR (state = 'committed' AND committed_at <= p_horizon));
        l.purged_at := p_now;
    END IF;
    IF p_expires > l.settled_until THEN
        l.live_minor := l.live_minor + p_amount + p_fee;
        l.next_expiry := least(l.next_expiry, p_expires);
    END IF;
    -- A new id is a plain insert: the server sets up no update for it.
    IF v_old IS NULL THEN
        INSERT INTO {s}.holds (payout_id, key, currency, amount_minor, fee_minor, state,
                               created_at, expires_at, owner)
        VALUES (p_id, p_key, p_currency, p_amount, p_fee, 'pending', p_created, p_expires,
                p_owner)
        ON CONFLICT (payout_id) DO NOTHING;
    ELSE
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
    END IF;
    IF NOT FOUND THEN
        -- The same payout id was taken on another key since we looked: start again, and
        -- the next attempt reports it as a duplicate.
        RAISE EXCEPTION 'hold % taken concurrently', p_id USING ERRCODE = '40001';
    END IF;
    -- The row as locked above: nobody else can have changed it since, and this call
    -- changes it only here (a row found by its place costs the server no index search).
    UPDATE {s}.ledgers SET live_minor = l.live_minor, settled_until = l.settled_until,
        purged_at = l.purged_at, lapse_from = l.lapse_from, next_expiry = l.next_expiry
    WHERE ctid = l.row_id AND key = p_key;
    IF NOT FOUND THEN  -- cannot happen (the row is locked): refuse rather than lose a hold
        RAISE EXCEPTION 'ledger % moved', p_key USING ERRCODE = '40001';
    END IF;
END $$"""

# machine.to_commit: only the owner commits; a committed hold keeps its first commit time.
# The hot path is two plain statements after the lock (record_commit, inlined): a hold's
# UPDATE ... RETURNING INTO, then the ledger's, which costs the server less to start than one
# statement of two data-modifying CTEs joined (and commit_time, inlined as an IF).
_COMMIT = """
CREATE OR REPLACE FUNCTION {s}.commit(p_id text, p_owner text, p_now double precision,
                                     p_db boolean)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    l record;  -- the key's ledger row, and where it is (row_id)
    e {s}.holds%ROWTYPE;
BEGIN
    SELECT ctid AS row_id, * INTO l FROM {s}.ledgers
        WHERE key = (SELECT h.key FROM {s}.holds AS h WHERE h.payout_id = p_id)
        FOR NO KEY UPDATE;
    IF NOT FOUND OR p_owner = '' THEN
        RETURN;
    END IF;
    IF p_db THEN
        p_now := extract(epoch FROM clock_timestamp())::float8 + p_now;
    END IF;
    IF l.last_commit > p_now THEN  -- machine.commit_time: never backwards on a key
        p_now := l.last_commit;
    END IF;
    UPDATE {s}.holds AS h SET state = 'committed', committed_at = p_now,
            running_minor = l.committed_minor + h.amount_minor + h.fee_minor
        WHERE h.payout_id = p_id AND h.key = l.key AND h.owner = p_owner
            AND h.state <> 'committed'
        RETURNING h.* INTO e;
    IF FOUND THEN
        UPDATE {s}.ledgers SET committed_minor = e.running_minor, last_commit = p_now,
            live_minor = live_minor - CASE WHEN e.expires_at > l.settled_until
                                           THEN e.amount_minor + e.fee_minor ELSE 0 END
            WHERE ctid = l.row_id AND key = l.key;  -- as locked above (see try_hold)
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger % moved', l.key USING ERRCODE = '40001';
        END IF;
        RETURN NEXT e;
        RETURN;
    END IF;
    -- Not changed: already committed (returned as it is), another owner's, or moved.
    RETURN QUERY SELECT * FROM {s}.holds AS h
        WHERE h.payout_id = p_id AND h.key = l.key AND h.owner = p_owner
        AND h.state = 'committed';
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM {s}.holds AS h
                                 WHERE h.payout_id = p_id AND h.key = l.key) THEN
        IF EXISTS (SELECT 1 FROM {s}.holds AS h WHERE h.payout_id = p_id) THEN
            RAISE EXCEPTION 'hold % moved between keys', p_id USING ERRCODE = '40001';
        END IF;
    END IF;
END $$"""

# ReservationStore.release: only the owner's pending hold is dropped.
_RELEASE = """
CREATE OR REPLACE FUNCTION {s}.release(p_id text, p_owner text)
RETURNS SETOF boolean LANGUAGE plpgsql AS $$
DECLARE
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    IF p_owner = '' OR e.owner <> p_owner OR e.state <> 'pending' THEN
        RETURN;
    END IF;
    DELETE FROM {s}.holds WHERE payout_id = p_id;
    IF e.expires_at > l.settled_until THEN
        UPDATE {s}.ledgers SET live_minor = live_minor - e.amount_minor - e.fee_minor
            WHERE key = l.key;
    END IF;
    RETURN NEXT true;
END $$"""

# machine.to_uncertain: only the owner's pending hold becomes uncertain, counting until p_until.
_MARK_UNCERTAIN = """
CREATE OR REPLACE FUNCTION {s}.mark_uncertain(p_id text, p_owner text,
                                             p_until double precision, p_db boolean)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    IF p_db THEN
        p_until := extract(epoch FROM clock_timestamp())::float8 + p_until;
    END IF;
    IF p_owner = '' OR e.owner <> p_owner THEN
        RETURN;
    END IF;
    IF e.state = 'pending' THEN
        UPDATE {s}.ledgers SET live_minor = live_minor
            - CASE WHEN e.expires_at > l.settled_until THEN e.amount_minor + e.fee_minor
                   ELSE 0 END
            + CASE WHEN p_until > l.settled_until THEN e.amount_minor + e.fee_minor ELSE 0 END,
            lapse_from = least(lapse_from, p_until), next_expiry = least(next_expiry, p_until)
            WHERE key = l.key;
        UPDATE {s}.holds SET state = 'uncertain', expires_at = p_until WHERE payout_id = p_id
            RETURNING * INTO e;
    END IF;
    RETURN NEXT e;
END $$"""

# ReservationStore.resolve: an uncertain hold becomes committed at p_now (sent) or is
# dropped; the hold is returned as it was found.
_RESOLVE = """
CREATE OR REPLACE FUNCTION {s}.resolve(p_id text, p_sent boolean, p_now double precision,
                                      p_db boolean)
RETURNS SETOF {s}.holds LANGUAGE plpgsql AS $$
DECLARE
    l {s}.ledgers%ROWTYPE;
    e {s}.holds%ROWTYPE;
BEGIN
""" + _LOCK_HOLD + """
    IF p_db THEN
        p_now := extract(epoch FROM clock_timestamp())::float8 + p_now;
    END IF;
    RETURN NEXT e;
    IF e.state <> 'uncertain' THEN
        RETURN;
    END IF;
    IF p_sent THEN
        PERFORM {s}.record_commit(e, l, p_now);
    ELSE
        DELETE FROM {s}.holds WHERE payout_id = p_id;
        IF e.expires_at > l.settled_until THEN
            UPDATE {s}.ledgers SET live_minor = live_minor - e.amount_minor - e.fee_minor
                WHERE key = l.key;
        END IF;
    END IF;
END $$"""

# FleetStore.read_shared: a fresh value is read without a lock; a stale or missing one again
# under the name's row lock, where p_owner takes the lease unless another owner holds an
# unexpired one (its own is renewed). Returns the payload (NULL: none), its age and whether
# p_owner holds the lease after the call. Times: the database clock.
_READ_SHARED = """
CREATE OR REPLACE FUNCTION {s}.read_shared(
    p_name text, p_owner text, p_lease_ttl double precision, p_fresh_for double precision,
    OUT payload text, OUT age double precision, OUT leads boolean)
LANGUAGE plpgsql AS $$
DECLARE
    r {s}.shared%ROWTYPE;
    v_t double precision := extract(epoch FROM clock_timestamp())::float8;
BEGIN
    SELECT * INTO r FROM {s}.shared AS sh WHERE sh.name = p_name;
    IF FOUND AND r.payload IS NOT NULL AND r.keep_until > v_t
            AND v_t - r.written_at < p_fresh_for THEN
        payload := r.payload;
        age := greatest(0, v_t - r.written_at);  -- written "later": the clock stepped back
        leads := COALESCE(r.lease_owner = p_owner AND r.lease_until > v_t, false);
        RETURN;
    END IF;
    INSERT INTO {s}.shared (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT * INTO r FROM {s}.shared AS sh WHERE sh.name = p_name FOR UPDATE;
    v_t := extract(epoch FROM clock_timestamp())::float8;
    IF r.payload IS NOT NULL AND r.keep_until > v_t THEN
        payload := r.payload;
        age := greatest(0, v_t - r.written_at);
        IF age < p_fresh_for THEN  -- another process wrote it meanwhile
            leads := COALESCE(r.lease_owner = p_owner AND r.lease_until > v_t, false);
            RETURN;
        END IF;
    END IF;
    IF r.lease_owner IS NOT NULL AND r.lease_owner <> p_owner AND r.lease_until > v_t THEN
        leads := false;  -- someone else is fetching it
        RETURN;
    END IF;
    UPDATE {s}.shared AS sh SET lease_owner = p_owner, lease_until = v_t + p_lease_ttl
        WHERE sh.name = p_name;
    leads := true;
END $$"""

# _protocol.gcra, line for line, under the budget's row lock, on the database clock (read
# after the lock, so each budget's clock never runs backwards between its callers). Returns
# 0 (one request taken) or the seconds to wait (nothing taken).
_SPEND = """
CREATE OR REPLACE FUNCTION {s}.spend(p_name text, p_per_minute integer)
RETURNS double precision LANGUAGE plpgsql AS $$
DECLARE
    v_tat double precision;
    v_now double precision;
    v_burst integer := greatest(1, p_per_minute / 10);
    v_interval double precision;
    v_tolerance double precision;
    v_start double precision;
BEGIN
    INSERT INTO {s}.budgets (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    SELECT b.tat INTO v_tat FROM {s}.budgets AS b WHERE b.name = p_name FOR UPDATE;
    v_now := extract(epoch FROM clock_timestamp())::float8;
    v_interval := 60.0::float8 / (p_per_minute - v_burst + 1);
    v_tolerance := (v_burst - 1) * v_interval;
    IF v_tat IS NULL OR v_tat < v_now THEN
        v_start := v_now;
    ELSE
        v_start := v_tat;
    END IF;
    IF v_start - v_now > v_tolerance THEN
        RETURN v_start - v_tolerance - v_now;
    END IF;
    UPDATE {s}.budgets AS b SET tat = v_start + v_interval WHERE b.name = p_name;
    RETURN 0;
END $$"""

_FUNCTIONS = (_COMMIT_TIME, _RECORD_COMMIT, _TRY_HOLD, _COMMIT, _RELEASE, _MARK_UNCERTAIN,
              _RESOLVE, _READ_SHARED, _SPEND)

# %s parameters are bound by psycopg; {s} is the schema (a checked, quoted identifier).
TRY_HOLD = (
    "SELECT status, counted, key_currency, existing, lapsed, created, expires FROM "
    "{s}.try_hold(%s, %s, %s, %s::bigint, %s::bigint, %s::float8, %s::float8, %s, %s::numeric, "
    "%s::float8, %s::float8, %s::float8, %s::boolean)"
)
COMMIT = "SELECT " + COLUMNS + " FROM {s}.commit(%s, %s, %s::float8, %s::boolean)"
MARK_UNCERTAIN = (
    "SELECT " + COLUMNS + " FROM {s}.mark_uncertain(%s, %s, %s::float8, %s::boolean)"
)
RESOLVE = "SELECT " + COLUMNS + " FROM {s}.resolve(%s, %s, %s::float8, %s::boolean)"
RELEASE = "SELECT * FROM {s}.release(%s, %s)"
GET = "SELECT " + COLUMNS + " FROM {s}.holds WHERE payout_id = %s"
# (key, now, counted_since) -> (currency, counted minor units); no row: nothing held.
COUNTED = (
    "SELECT l.currency, "
    + _COUNT.format(s="{s}", now="({t}%(now)s::float8)", since="({t}%(since)s::float8)")
    + " FROM {s}.ledgers AS l WHERE l.key = %(key)s"
)
# (key, since) -> (currency, minor units committed after since): the ledger's running total
# minus the one before the first commit after since, one index seek; no row: nothing committed.
COMMITTED = (
    "SELECT l.currency, COALESCE((SELECT l.committed_minor - running_minor + amount_minor "
    "+ fee_minor FROM {s}.holds WHERE state = 'committed' AND key = %(key)s "
    "AND committed_at > ({t}%(since)s::float8) "
    "ORDER BY committed_at, running_minor LIMIT 1), 0) "
    "FROM {s}.ledgers AS l WHERE l.key = %(key)s"
)
HOLDS = (
    "SELECT * FROM ("
    "SELECT " + COLUMNS + " FROM {s}.holds WHERE state <> 'committed' AND key = %(key)s "
    "AND expires_at > ({t}%(now)s::float8) "
    "UNION ALL "
    "SELECT " + COLUMNS + " FROM {s}.holds WHERE state = 'committed' AND key = %(key)s "
    "AND committed_at > ({t}%(since)s::float8)) AS counting "
    "ORDER BY created_at, payout_id LIMIT %(limit)s"
)
# Every hold across keys, newest first, for operators (list_holds): a scan of the holds table.
# (now, state, currency, provider: NULL for any; limit). A pending hold past its ttl is left
# out. Ties by payout id in byte order (COLLATE "C"), as the other stores sort them.
LIST = (
    "SELECT " + COLUMNS + " FROM {s}.holds "
    "WHERE (state <> 'pending' OR expires_at > ({t}%(now)s::float8)) "
    "AND (%(state)s::text IS NULL OR state = %(state)s::text) "
    "AND (%(currency)s::text IS NULL OR currency = %(currency)s::text) "
    "AND (%(provider)s::text IS NULL OR key = %(provider)s::text "
    "OR left(key, length(%(provider)s::text) + 1) = %(provider)s::text || '|') "
    "ORDER BY created_at DESC, payout_id COLLATE \"C\" LIMIT %(limit)s"
)

# (name, owner, lease_ttl, fresh_for) -> (payload or NULL, age, leads).
READ_SHARED = "SELECT payload, age, leads FROM {s}.read_shared(%s, %s, %s::float8, %s::float8)"
# (name, payload, keep, owner): one statement, one instant of the database clock.
WRITE_SHARED = """
    INSERT INTO {s}.shared AS sh (name, payload, written_at, keep_until)
    SELECT %(name)s, %(payload)s, c.t, c.t + %(keep)s::float8
    FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS c
    ON CONFLICT (name) DO UPDATE SET payload = EXCLUDED.payload,
        written_at = EXCLUDED.written_at, keep_until = EXCLUDED.keep_until,
        lease_until = CASE WHEN sh.lease_owner = %(owner)s THEN NULL ELSE sh.lease_until END,
        lease_owner = CASE WHEN sh.lease_owner = %(owner)s THEN NULL ELSE sh.lease_owner END
"""
# (name, owner): only the holder's lease goes.
DROP_LEASE = (
    "UPDATE {s}.shared SET lease_owner = NULL, lease_until = NULL "
    "WHERE name = %s AND lease_owner = %s"
)
# (name, per_minute) -> seconds to wait (0: taken).
SPEND = "SELECT {s}.spend(%s, %s::integer)"


def functions(schema: str) -> tuple[str, ...]:
    """Return the statements that (re)create the store's functions in *schema*."""
    return tuple(text.format(s=schema, columns=COLUMNS) for text in _FUNCTIONS)


def version_table(schema: str) -> str:
    """Return the statement that creates *schema*'s version table when missing."""
    return _VERSION_TABLE.format(s=schema)
