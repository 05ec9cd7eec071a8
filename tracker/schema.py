"""The database layout, loaded from the schema.sql shipped in the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

from tracker.logrow import TYPE_CODES

SCHEMA_VERSION = 10
# The columns of the event log, in table order (the hash chain covers all but hash).
EVENT_COLUMNS = "seq, id, type, version, at, request_id, agent_id, session_id, payload, hash"
# The views of schema.sql that read sessions or usage_daily (the 5 -> 6 upgrade).
_VIEWS_ON_SESSIONS_OR_USAGE = (
    "current_agent_sessions",
    "session_chains",
    "idle_sessions",
    "agent_usage",
    "daily_usage",
    "lock_contention",
)
# What brings a file of an older version to the next one, before schema.sql (whose
# statements are idempotent) completes it; one transaction, at open.
UPGRADES: dict[int, tuple[str, ...]] = {
    # 1 -> 2: the event key indexes lead with the seq bucket, sessions_by_parent with
    # the agent, and session_chains joins on it (see schema.sql).
    1: (
        *(f"DROP INDEX IF EXISTS events_by_{key}" for key in ("request", "agent", "session")),
        "DROP INDEX IF EXISTS sessions_by_parent",
        "DROP VIEW IF EXISTS session_chains",
    ),
    # 2 -> 3: new payloads leave out the tag and keys, which are columns already; older
    # payloads stay as stored, and still decode.
    2: (),
    # 3 -> 4: new event ids are stored as 16 bytes, and lock events leave out the
    # fields their key columns give (codec.encode); older rows stay as stored.
    3: (),
    # 4 -> 5: the table events becomes event_log, with type and time stored compactly
    # (logrow), and events a view of it; the rows are copied after schema.sql ran.
    4: (
        "DROP VIEW IF EXISTS lock_events",
        "DROP TRIGGER IF EXISTS events_no_update",
        "DROP TRIGGER IF EXISTS events_no_delete",
        *(f"DROP INDEX IF EXISTS events_by_{key}" for key in ("request", "agent", "session")),
        "ALTER TABLE events RENAME TO events_v4",
    ),
    # 5 -> 6: sessions and usage_daily count the finished requests that reported a
    # duration (timed); both are copied after schema.sql ran, counting them in requests.
    # The views on them are dropped first (a rename would carry them along), and the
    # indexes (they would keep their names on the old table, and schema.sql skip them).
    5: (
        *(f"DROP VIEW IF EXISTS {view}" for view in _VIEWS_ON_SESSIONS_OR_USAGE),
        *(f"DROP INDEX IF EXISTS sessions_{name}" for name in ("by_agent", "by_parent", "active")),
        "ALTER TABLE sessions RENAME TO sessions_v5",
        "ALTER TABLE usage_daily RENAME TO usage_daily_v5",
    ),
    # 6 -> 7: agents keep the seq of their last reset (reset_seq), so an answer to a
    # request tracked before it does not move the agent on; agents is copied after
    # schema.sql ran, with it, and the view on it is dropped first (as for 5 -> 6).
    6: (
        "DROP VIEW IF EXISTS current_agent_sessions",
        "ALTER TABLE agents RENAME TO agents_v6",
    ),
    # 7 -> 8: requests say whether their answer was superseded (beside session_id);
    # requests is copied after schema.sql ran, its views and indexes dropped first.
    7: (
        *(f"DROP VIEW IF EXISTS {view}" for view in ("stale_requests", "request_latency")),
        *(f"DROP INDEX IF EXISTS requests_{name}" for name in ("unfinished", "by_owner")),
        "ALTER TABLE requests RENAME TO requests_v7",
    ),
    # 8 -> 9: usage_daily gets an index by agent, which schema.sql creates.
    8: (),
    # 9 -> 10: expired and deleted sessions get an index, which schema.sql creates.
    9: (),
}
STORED_TYPE_SQL = (  # logrow.stored_type in SQL
    "CASE type "
    + " ".join(f"WHEN '{name}' THEN {code}" for name, code in TYPE_CODES.items())
    + " ELSE type END"
)
_FIXED_WIDTH = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]"
STORED_AT_SQL = (  # logrow.stored_at in SQL: text that does not read back exactly stays
    f"CASE WHEN at GLOB '{_FIXED_WIDTH}.[0-9][0-9][0-9][0-9][0-9][0-9]Z' AND at >= '1970' "
    "AND strftime('%Y-%m-%dT%H:%M:%S', CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER), "
    "'unixepoch') = substr(at, 1, 19) "
    "THEN CAST(strftime('%s', substr(at, 1, 19)) AS INTEGER) * 1000000 "
    "+ CAST(substr(at, 21, 6) AS INTEGER) ELSE at END"
)
# The columns of sessions and usage_daily the 5 -> 6 copy writes: those of version 5
# (named: a later schema.sql may add more), and timed, counted in requests (a request has
# a duration once finished, and only if it reported one). A copy, not ADD COLUMN, which
# would put timed last: a new file has it beside duration_ms.
_TOTALS = (
    "completed, failed, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "cost_usd, duration_ms"
)
_SESSIONS_V5 = (
    "session_id, agent_id, parent_session_id, position, status, status_reason, first_seen, "
    f"last_activity, request_count, {_TOTALS}, metadata, last_seq"
)
_USAGE_V5 = (
    f"day, agent_id, requests, {_TOTALS}, lock_acquisitions, lock_waits, lock_wait_ms, "
    "lock_expiries"
)
_TIMED = "SELECT count(duration_ms) AS n"
_AGENTS_V6 = (
    "agent_id, current_session_id, chain_length, request_count, resets, first_seen, "
    "last_activity, last_seq"
)
_REQUESTS_V7 = (
    "request_id, agent_id, resumed_session_id, session_id, status, owner, created_at, "
    "assigned_at, finished_at, error, error_kind, input_tokens, output_tokens, "
    "cache_read_tokens, cache_write_tokens, cost_usd, duration_ms, metadata, lock_token, "
    "track_digest, finish_digest, last_seq"
)
# What completes an upgrade step once schema.sql created the tables it copies into
# (db._upgrade runs the steps one after the other).
UPGRADES_AFTER_SCHEMA: dict[int, tuple[str, ...]] = {
    4: (
        f"INSERT INTO event_log ({EVENT_COLUMNS}) SELECT seq, id, "
        f"{STORED_TYPE_SQL}, version, {STORED_AT_SQL}, "
        "request_id, agent_id, session_id, payload, hash FROM events_v4 ORDER BY seq",
        "DROP TABLE events_v4",
    ),
    5: (
        f"INSERT INTO sessions ({_SESSIONS_V5}, timed) SELECT {_SESSIONS_V5}, coalesce(n, 0) "
        f"FROM sessions_v5 LEFT JOIN ({_TIMED}, session_id AS s FROM requests GROUP BY s) "
        "ON s = session_id",
        "DROP TABLE sessions_v5",
        f"INSERT INTO usage_daily ({_USAGE_V5}, timed) SELECT {_USAGE_V5}, coalesce(n, 0) "
        f"FROM usage_daily_v5 LEFT JOIN ({_TIMED}, substr(finished_at, 1, 10) AS d, "
        "coalesce(agent_id, '') AS a FROM requests GROUP BY d, a) ON d = day AND a = agent_id",
        "DROP TABLE usage_daily_v5",
    ),
    6: (  # one pass over the log, not one per agent (its key indexes lead with seq)
        f"INSERT INTO agents ({_AGENTS_V6}, reset_seq) SELECT {_AGENTS_V6}, r.seq "
        "FROM agents_v6 LEFT JOIN (SELECT agent_id AS a, max(seq) AS seq FROM event_log "
        f"WHERE type = {TYPE_CODES['AgentReset']} GROUP BY a) AS r ON r.a = agent_id",
        "DROP TABLE agents_v6",
    ),
    7: (  # a superseded answer is a version 2 SessionAssigned (schema 7 brought both)
        f"INSERT INTO requests ({_REQUESTS_V7}, superseded) SELECT {_REQUESTS_V7}, "
        "request_id IN (SELECT request_id FROM event_log "
        f"WHERE type = {TYPE_CODES['SessionAssigned']} AND version >= 2 "
        "AND json_extract(payload, '$.superseded')) FROM requests_v7 ORDER BY rowid",
        "DROP TABLE requests_v7",
    ),
}
# Events per bucket of the key indexes, as a shift: seq >> KEY_BUCKET_BITS (schema.sql).
KEY_BUCKET_BITS = 12
INSERT_EVENT = f"INSERT INTO event_log ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
# What replay reads of each event, as stored, from the log of database {db} (main, live...).
EVENT_ROWS = (
    "SELECT seq, type, version, at, request_id, agent_id, session_id, payload FROM {db}.event_log"
)


@cache
def schema_sql() -> str:
    """Return the text of schema.sql (the single source of the layout)."""
    return resources.files("tracker").joinpath("schema.sql").read_text(encoding="utf-8")
