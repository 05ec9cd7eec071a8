"""Sessions: one row per id the CLI reported, with parent link, totals and status.

Runs after ``agents`` for SessionAssigned, so an agent's ``chain_length``
already counts a new session and gives its position in the chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections.common import add_finished, merge_json
from projections.table import Table
from tracker.events import (
    RequestCompleted,
    RequestFailed,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
    SessionMetadataUpdated,
)

if TYPE_CHECKING:
    from projections.state import Handlers, State


class SessionRow(msgspec.Struct):
    """A row of ``sessions``."""

    session_id: str
    agent_id: str | None
    parent_session_id: str | None
    position: int
    status: str
    status_reason: str | None
    first_seen: str
    last_activity: str
    request_count: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    duration_ms: int
    timed: int
    metadata: str
    last_seq: int


def table(limit: int) -> Table[SessionRow]:
    immutable = ("agent_id", "parent_session_id", "position", "first_seen")
    return Table("sessions", SessionRow, ("session_id",), limit, immutable)


def assigned(state: State, seq: int, at: str, ev: SessionAssigned) -> None:
    row = state.sessions.get(ev.session_id)
    if row is None:
        agent = state.agents.get(ev.agent_id) if ev.agent_id else None
        position = agent.chain_length if agent else 1
        state.sessions.add(
            ev.session_id,
            SessionRow(
                ev.session_id,
                ev.agent_id,
                ev.parent_session_id,
                position,
                "active",
                None,
                at,
                at,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                0.0,
                0,
                0,
                "{}",
                seq,
            ),
        )
        return
    row = state.sessions.edit(ev.session_id)
    row.request_count += 1
    row.last_activity, row.last_seq = at, seq
    if row.status == "expired":  # the CLI resumed it: it is alive again
        row.status, row.status_reason = "active", None


def finished(state: State, seq: int, at: str, ev: RequestCompleted | RequestFailed) -> None:
    if ev.session_id is None:
        return
    row = state.sessions.edit(ev.session_id)
    add_finished(row, ev)
    row.last_activity, row.last_seq = at, seq


def metadata_updated(state: State, seq: int, at: str, ev: SessionMetadataUpdated) -> None:
    row = state.sessions.edit(ev.session_id)
    row.metadata, row.last_seq = merge_json(row.metadata, ev.metadata), seq


def expired(state: State, seq: int, at: str, ev: SessionExpired) -> None:
    row = state.sessions.edit(ev.session_id)
    row.status, row.status_reason, row.last_seq = "expired", ev.reason, seq


def deleted(state: State, seq: int, at: str, ev: SessionDeleted) -> None:
    row = state.sessions.edit(ev.session_id)
    row.status, row.status_reason, row.last_seq = "deleted", ev.reason, seq


HANDLERS: Handlers = {
    SessionAssigned: assigned,
    RequestCompleted: finished,
    RequestFailed: finished,
    SessionMetadataUpdated: metadata_updated,
    SessionExpired: expired,
    SessionDeleted: deleted,
}
