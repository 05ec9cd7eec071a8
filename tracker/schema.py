"""The database layout, loaded from the schema.sql shipped in the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

from tracker.logrow import TYPE_CODES

SCHEMA_VERSION = 5
# The columns of the event log, in table order (the hash chain covers all but hash).
EVENT_COLUMNS = "seq, id, type, version, at, request_id, agent_id, session_id, payload, hash"
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
# What completes an upgrade once schema.sql created this version's tables.
UPGRADES_AFTER_SCHEMA: dict[int, tuple[str, ...]] = {
    4: (
        f"INSERT INTO event_log ({EVENT_COLUMNS}) SELECT seq, id, "
        f"{STORED_TYPE_SQL}, version, {STORED_AT_SQL}, "
        "request_id, agent_id, session_id, payload, hash FROM events_v4 ORDER BY seq",
        "DROP TABLE events_v4",
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
