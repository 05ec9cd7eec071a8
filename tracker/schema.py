"""The database layout, loaded from the schema.sql shipped in the package."""

from __future__ import annotations

from functools import cache
from importlib import resources

SCHEMA_VERSION = 1
# The columns of the event log, in table order (the hash chain covers all but hash).
EVENT_COLUMNS = "seq, id, type, version, at, request_id, agent_id, session_id, payload, hash"
INSERT_EVENT = f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"


@cache
def schema_sql() -> str:
    """Return the text of schema.sql (the single source of the layout)."""
    return resources.files("tracker").joinpath("schema.sql").read_text(encoding="utf-8")
