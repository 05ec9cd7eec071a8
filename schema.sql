-- Session tracker database, schema version 10.
--
-- One file holds everything: the append-only event log, the projections
-- derived from it (droppable, rebuilt identically by replay), their
-- checkpoints, and documented views for analysts.
--
-- Times are UTC text, fixed width: 2026-11-21T07:21:31.123456Z, so they sort
-- as text and work with SQLite's date functions (julianday, date, ...).
-- Every statement is idempotent (IF NOT EXISTS): two processes creating the
-- same new file at once both succeed.

-----------------------------------------------------------------------------
-- 1. The event log
-----------------------------------------------------------------------------

-- The log is the table event_log; analysts read it through the view events below,
-- which shows every column as the API does. seq is AUTOINCREMENT so a number is
-- never reused; it is gapless and strictly increasing in commit order. payload is a
-- JSON object: the event's fields but its tag and keys, which are the columns type,
-- request_id, agent_id and session_id (json_extract(payload, '$.usage.input_tokens')
-- reads the rest). Repeating them cost about 90 bytes an event; a payload written
-- before schema 3 repeats them, and starts with its tag ('{"type":...'). hash chains
-- each event to the previous one (blake2b-128 over the previous hash, the envelope
-- as the view shows it, and the payload).
--
-- Since schema 5 three envelope columns are stored compactly (tracker/logrow.py),
-- 36 bytes an event fewer than as text:
--   id    the 16 bytes of the event id the tracker mints (UUIDv7 layout: 48-bit ms
--         time + 75 random bits, one random draw per transaction plus a counter);
--   type  a code, spelled out in the view events (1 = RequestTracked, ...);
--   at    integer microseconds since 1970-01-01 UTC.
-- A value in any other form (an id not minted here, a time not in the fixed-width
-- form) is stored as its text, and the view shows it as it is. Those columns have no
-- declared type (no affinity), so SQLite stores each value as given.
CREATE TABLE IF NOT EXISTS event_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id                  NOT NULL,               -- 16 bytes, or text
    type                NOT NULL,               -- code, or text
    version     INTEGER NOT NULL,               -- payload schema version
    at                  NOT NULL,               -- microseconds, or text; non-decreasing
    request_id  TEXT,
    agent_id    TEXT,
    session_id  TEXT,
    payload     TEXT    NOT NULL,               -- JSON object
    hash        BLOB    NOT NULL                -- 16 bytes
);
-- Nothing looks events up by id (unique by construction), so it has no index: a
-- UNIQUE index cost 46 bytes and one B-tree per event.
--
-- The key indexes lead with the seq bucket (seq >> 12: 4,096 events), so an append
-- only touches the current bucket's few index pages, however long the log. Keyed
-- by the id alone, a commit rewrote about one page per agent (request, session)
-- in each index, scattered over the whole log: W1 wrote 377 WAL pages per commit
-- then, 135 now. The tracker reads a key by seeking bucket after bucket (see
-- store.Filter), so its reads come in seq order without a sort:
--   WITH RECURSIVE b(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM b
--                           WHERE n < (SELECT max(seq) FROM events) >> 12)
--   SELECT * FROM events WHERE (seq >> 12) IN b AND agent_id = 'a1'
--   ORDER BY seq >> 12, seq;
-- A plain "WHERE agent_id = ?" stays correct and scans the smaller index instead.
CREATE INDEX IF NOT EXISTS events_by_request ON event_log(seq >> 12, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_agent ON event_log(seq >> 12, agent_id)
    WHERE agent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_by_session ON event_log(seq >> 12, session_id)
    WHERE session_id IS NOT NULL;
-- No index on type or at: every index costs each append (its pages are rewritten in the
-- WAL at every commit). A type filter is cheap next to the key filters, and at rises with
-- seq, so time lookups are rare maintenance scans.

-- The log is append-only: the database itself refuses changes.
CREATE TRIGGER IF NOT EXISTS event_log_no_update BEFORE UPDATE ON event_log
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS event_log_no_delete BEFORE DELETE ON event_log
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;

-- The log as the API shows it: the event id as 32 hex digits, the type's name, the
-- time as UTC text. A filter on seq, request_id, agent_id or session_id reads the
-- indexes above through it.
CREATE VIEW IF NOT EXISTS events AS
SELECT seq,
       CASE typeof(id) WHEN 'blob' THEN lower(hex(id)) ELSE id END AS id,
       CASE type WHEN 1 THEN 'RequestTracked' WHEN 2 THEN 'SessionAssigned'
                 WHEN 3 THEN 'RequestCompleted' WHEN 4 THEN 'RequestFailed'
                 WHEN 5 THEN 'LockAcquired' WHEN 6 THEN 'LockRenewed'
                 WHEN 7 THEN 'LockReleased' WHEN 8 THEN 'LockExpired'
                 WHEN 9 THEN 'SessionMetadataUpdated' WHEN 10 THEN 'SessionExpired'
                 WHEN 11 THEN 'SessionDeleted' WHEN 12 THEN 'AgentReset'
                 ELSE type END AS type,
       version,
       CASE typeof(at) WHEN 'integer'
            THEN strftime('%Y-%m-%dT%H:%M:%S', at / 1000000, 'unixepoch')
                 || printf('.%06dZ', at % 1000000)
            ELSE at END AS at,
       request_id, agent_id, session_id, payload, hash
FROM event_log;
CREATE TRIGGER IF NOT EXISTS events_no_update INSTEAD OF UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete INSTEAD OF DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE refused'); END;
CREATE TRIGGER IF NOT EXISTS events_no_insert INSTEAD OF INSERT ON events
BEGIN SELECT RAISE(ABORT, 'events are appended by the tracker only: INSERT refused'); END;

-- The lock history, read from the log (a scan: for audits, not dashboards). Since
-- schema 4 (payload version 2) a lock event's payload leaves out what its key columns
-- give: the lock is the session's if session_id is set (a request without an agent),
-- else the agent's, and the holder is the request when request_id is set and it is
-- the holder. This view puts them back (codec._lock_of and codec._lock_fields do the
-- same for the tracker). A lock's fencing token is the seq of its LockAcquired.
CREATE VIEW IF NOT EXISTS lock_events AS
SELECT seq, at, type,
       coalesce(json_extract(payload, '$.scope'),
                CASE WHEN session_id IS NOT NULL THEN 'session' ELSE 'agent' END) AS scope,
       coalesce(json_extract(payload, '$.target'), session_id, agent_id) AS target,
       coalesce(json_extract(payload, '$.holder'), request_id) AS holder,
       CASE type WHEN 'LockAcquired' THEN seq ELSE json_extract(payload, '$.token') END AS token,
       json_extract(payload, '$.expires_at') AS expires_at,
       request_id, agent_id
FROM events WHERE type IN ('LockAcquired', 'LockRenewed', 'LockReleased', 'LockExpired');

-----------------------------------------------------------------------------
-- 2. Projections (written in the same transaction as the events they apply)
-----------------------------------------------------------------------------

-- Checkpoint: the last event seq the projections applied. They are all applied in the
-- append transaction, so one row ('projections') covers them; the key leaves room for
-- a projection maintained apart.
CREATE TABLE IF NOT EXISTS checkpoints (
    projection  TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL
);

-- Requests and sessions are rowid tables: new rows append at the end, so the
-- rows that change (recent requests, live sessions) share few pages, and their
-- id index is written once, at insert. Updates set only mutable columns.

-- One row per request (one call to the CLI).
CREATE TABLE IF NOT EXISTS requests (
    request_id          TEXT PRIMARY KEY,
    agent_id            TEXT,
    resumed_session_id  TEXT,              -- the session it continues, or NULL
    session_id          TEXT,              -- assigned by the CLI, NULL until then
    superseded          INTEGER NOT NULL DEFAULT 0,  -- 1: the agent had moved on before
                                           -- the CLI answered; its session is a branch
    status              TEXT NOT NULL,     -- pending | active | completed | failed
    owner               TEXT,              -- orchestrator process that tracked it
    created_at          TEXT NOT NULL,
    assigned_at         TEXT,
    finished_at         TEXT,
    error               TEXT,
    error_kind          TEXT,              -- cli_error, timeout, abandoned, ...
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL,
    duration_ms         INTEGER,
    metadata            TEXT NOT NULL DEFAULT '{}',
    lock_token          INTEGER,           -- fencing token of the lock taken with it
    track_digest        TEXT NOT NULL,     -- fingerprint of the tracking call (retries)
    finish_digest       TEXT,              -- fingerprint of the finishing call
    last_seq            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_unfinished ON requests(status, created_at)
    WHERE status IN ('pending', 'active');
CREATE INDEX IF NOT EXISTS requests_by_owner   ON requests(owner)
    WHERE status IN ('pending', 'active');

-- One row per session id the CLI reported. position orders an agent's chain.
CREATE TABLE IF NOT EXISTS sessions (
    session_id          TEXT PRIMARY KEY,
    agent_id            TEXT,
    parent_session_id   TEXT,              -- the session this one was resumed from
    position            INTEGER NOT NULL,  -- 1-based order of first assignment per agent
    status              TEXT NOT NULL,     -- active | expired | deleted
    status_reason       TEXT,              -- idle | capacity | manual | ...
    first_seen          TEXT NOT NULL,
    last_activity       TEXT NOT NULL,
    request_count       INTEGER NOT NULL DEFAULT 0,  -- requests assigned to it
    completed           INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL NOT NULL DEFAULT 0,
    duration_ms         INTEGER NOT NULL DEFAULT 0,  -- sum over its finished requests
    timed               INTEGER NOT NULL DEFAULT 0,  -- of those, how many reported one
    metadata            TEXT NOT NULL DEFAULT '{}',
    last_seq            INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_agent  ON sessions(agent_id, position);
-- Children by agent first: a session's parent is in its agent's chain, and a new
-- session's entry lands among its agent's (keyed by the random parent id alone, a
-- commit rewrote a page per new session, scattered over every session ever seen).
CREATE INDEX IF NOT EXISTS sessions_by_parent ON sessions(agent_id, parent_session_id);
CREATE INDEX IF NOT EXISTS sessions_active    ON sessions(last_activity) WHERE status = 'active';
-- Expired and deleted sessions, newest first by rowid (GET /sessions?status=deleted): a
-- status few sessions have read every session without it (18 ms on W4's 104,000). A new
-- session is active, so an append writes it only when a session is expired or deleted.
CREATE INDEX IF NOT EXISTS sessions_retired   ON sessions(status) WHERE status != 'active';

-- One row per agent: where its next request continues.
CREATE TABLE IF NOT EXISTS agents (
    agent_id            TEXT PRIMARY KEY,
    current_session_id  TEXT,              -- NULL: the next request starts a conversation
    chain_length        INTEGER NOT NULL DEFAULT 0,
    request_count       INTEGER NOT NULL DEFAULT 0,
    resets              INTEGER NOT NULL DEFAULT 0,
    first_seen          TEXT NOT NULL,
    last_activity       TEXT NOT NULL,
    last_seq            INTEGER NOT NULL,
    reset_seq           INTEGER            -- seq of its last AgentReset (NULL: never reset)
) WITHOUT ROWID;

-- One row per conversation lock, kept after release for audit and retries.
-- scope is 'agent' (target = agent_id) or 'session' (target = session_id).
CREATE TABLE IF NOT EXISTS locks (
    scope               TEXT NOT NULL,
    target              TEXT NOT NULL,
    holder              TEXT NOT NULL,
    token               INTEGER NOT NULL,  -- fencing token: seq of LockAcquired
    status              TEXT NOT NULL,     -- held | released | expired
    acquired_at         TEXT NOT NULL,
    expires_at          TEXT NOT NULL,
    ended_at            TEXT,
    request_id          TEXT,              -- request it was taken with, if any
    last_seq            INTEGER NOT NULL,
    PRIMARY KEY (scope, target)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS locks_held ON locks(expires_at) WHERE status = 'held';

-- Usage per UTC day and agent ('' for requests without an agent).
CREATE TABLE IF NOT EXISTS usage_daily (
    day                 TEXT NOT NULL,     -- YYYY-MM-DD (UTC)
    agent_id            TEXT NOT NULL,
    requests            INTEGER NOT NULL DEFAULT 0,  -- tracked that day
    completed           INTEGER NOT NULL DEFAULT 0,
    failed              INTEGER NOT NULL DEFAULT 0,
    input_tokens        INTEGER NOT NULL DEFAULT 0,
    output_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens  INTEGER NOT NULL DEFAULT 0,
    cost_usd            REAL NOT NULL DEFAULT 0,
    duration_ms         INTEGER NOT NULL DEFAULT 0,  -- sum over finished requests
    timed               INTEGER NOT NULL DEFAULT 0,  -- of those, how many reported one
    lock_acquisitions   INTEGER NOT NULL DEFAULT 0,
    lock_waits          INTEGER NOT NULL DEFAULT 0,  -- acquisitions that had to wait
    lock_wait_ms        INTEGER NOT NULL DEFAULT 0,
    lock_expiries       INTEGER NOT NULL DEFAULT 0,  -- locks lost to their TTL
    PRIMARY KEY (day, agent_id)
) WITHOUT ROWID;
-- An agent's days (get_agent, stats for one agent, the agents of a page): without, each
-- read every row of every day. An append writes it only when an agent's day begins
-- (updates of a row change none of its columns).
CREATE INDEX IF NOT EXISTS usage_by_agent ON usage_daily(agent_id, day);

-----------------------------------------------------------------------------
-- 3. Views for analysts (read projections only, so they stay fast)
-----------------------------------------------------------------------------

-- Where each agent's next request continues.
CREATE VIEW IF NOT EXISTS current_agent_sessions AS
SELECT a.agent_id, a.current_session_id AS session_id, s.first_seen, s.last_activity,
       s.request_count, a.chain_length, a.request_count AS agent_requests
FROM agents a LEFT JOIN sessions s ON s.session_id = a.current_session_id;

-- Every session with its depth and root in its agent's chain (forks share a parent; a
-- session whose parent is unknown, or another agent's, is a root). A WHERE does not
-- reach into a recursive view: even for one agent it works out every chain (0.45 s
-- for 104,000 sessions). For one agent, start the recursion from its sessions, through
-- sessions_by_agent (the README's query: 0.1 ms there).
CREATE VIEW IF NOT EXISTS session_chains AS
WITH RECURSIVE chain(session_id, agent_id, parent_session_id, root_session_id, depth,
                     position, status) AS (
    SELECT s.session_id, s.agent_id, s.parent_session_id, s.session_id, 0, s.position, s.status
    FROM sessions s
    WHERE s.parent_session_id IS NULL
       OR NOT EXISTS (SELECT 1 FROM sessions p
                      WHERE p.session_id = s.parent_session_id AND p.agent_id IS s.agent_id)
    UNION ALL
    SELECT s.session_id, s.agent_id, s.parent_session_id, c.root_session_id, c.depth + 1,
           s.position, s.status
    FROM chain c JOIN sessions s ON s.agent_id IS c.agent_id AND s.parent_session_id = c.session_id
)
SELECT * FROM chain;

-- Usage totals per agent (the mean duration: of the requests that reported one).
CREATE VIEW IF NOT EXISTS agent_usage AS
SELECT agent_id, SUM(requests) AS requests, SUM(completed) AS completed, SUM(failed) AS failed,
       SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
       SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens,
       ROUND(SUM(cost_usd), 6) AS cost_usd, SUM(duration_ms) AS duration_ms,
       ROUND(1.0 * SUM(duration_ms) / NULLIF(SUM(timed), 0), 1) AS avg_duration_ms,
       ROUND(1.0 * SUM(failed) / NULLIF(SUM(completed) + SUM(failed), 0), 4) AS failure_rate,
       SUM(lock_acquisitions) AS lock_acquisitions, SUM(lock_waits) AS lock_waits,
       SUM(lock_expiries) AS lock_expiries
FROM usage_daily GROUP BY agent_id;

-- Usage totals per UTC day (the mean duration: of the requests that reported one).
CREATE VIEW IF NOT EXISTS daily_usage AS
SELECT day, SUM(requests) AS requests, SUM(completed) AS completed, SUM(failed) AS failed,
       SUM(input_tokens) AS input_tokens, SUM(output_tokens) AS output_tokens,
       SUM(cache_read_tokens) AS cache_read_tokens, SUM(cache_write_tokens) AS cache_write_tokens,
       ROUND(SUM(cost_usd), 6) AS cost_usd, SUM(duration_ms) AS duration_ms,
       ROUND(1.0 * SUM(duration_ms) / NULLIF(SUM(timed), 0), 1) AS avg_duration_ms,
       ROUND(1.0 * SUM(failed) / NULLIF(SUM(completed) + SUM(failed), 0), 4) AS failure_rate
FROM usage_daily GROUP BY day;

-- Unfinished requests, oldest first, with their age in seconds.
CREATE VIEW IF NOT EXISTS stale_requests AS
SELECT request_id, agent_id, session_id, status, owner, created_at,
       ROUND((julianday('now') - julianday(created_at)) * 86400, 3) AS age_seconds
FROM requests WHERE status IN ('pending', 'active') ORDER BY created_at;

-- Active sessions, longest idle first, with their idle time in seconds.
CREATE VIEW IF NOT EXISTS idle_sessions AS
SELECT session_id, agent_id, last_activity, request_count,
       ROUND((julianday('now') - julianday(last_activity)) * 86400, 3) AS idle_seconds
FROM sessions WHERE status = 'active' ORDER BY last_activity;

-- Locks still marked held whose TTL has passed.
CREATE VIEW IF NOT EXISTS expired_locks AS
SELECT scope, target, holder, token, acquired_at, expires_at,
       ROUND((julianday('now') - julianday(expires_at)) * 86400, 3) AS overdue_seconds
FROM locks WHERE status = 'held' AND julianday(expires_at) < julianday('now');

-- Finished requests per latency bucket (duration_ms as the CLI reported it), per agent.
CREATE VIEW IF NOT EXISTS request_latency AS
SELECT agent_id,
       CASE WHEN duration_ms < 1000 THEN '0-1s'
            WHEN duration_ms < 5000 THEN '1-5s'
            WHEN duration_ms < 15000 THEN '5-15s'
            WHEN duration_ms < 60000 THEN '15-60s'
            ELSE '60s+' END AS bucket,
       count(*) AS requests, min(duration_ms) AS min_ms, max(duration_ms) AS max_ms,
       ROUND(avg(duration_ms), 1) AS avg_ms
FROM requests WHERE duration_ms IS NOT NULL
GROUP BY agent_id, bucket;

-- Lock contention per agent: acquisitions that had to wait, time waited, locks lost to TTL.
CREATE VIEW IF NOT EXISTS lock_contention AS
SELECT agent_id, SUM(lock_acquisitions) AS acquisitions, SUM(lock_waits) AS waits,
       ROUND(1.0 * SUM(lock_waits) / NULLIF(SUM(lock_acquisitions), 0), 4) AS wait_rate,
       SUM(lock_wait_ms) AS wait_ms, SUM(lock_expiries) AS expiries
FROM usage_daily GROUP BY agent_id;

PRAGMA user_version = 10;
