"""The database layout, loaded from the schema.sql shipped in the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

SCHEMA_VERSION = 4
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
}
# Events per bucket of the key indexes, as a shift: seq >> KEY_BUCKET_BITS (schema.sql).
KEY_BUCKET_BITS = 12
# The columns of the event log, in table order (the hash chain covers all but hash).
EVENT_COLUMNS = "seq, id, type, version, at, request_id, agent_id, session_id, payload, hash"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
# What replay reads of each event, from the log of database {db} (main, live...).
EVENT_ROWS = (
    "SELECT seq, type, version, at, request_id, agent_id, session_id, payload FROM {db}.events"
)


@cache
def schema_sql() -> str:
    """Return the text of schema.sql (the single source of the layout)."""
    return resources.files("tracker").joinpath("schema.sql").read_text(encoding="utf-8")
