"""Agents: where each agent's next request continues, and how long its chain is.

Runs before ``sessions`` for SessionAssigned: a session not yet in the
sessions table is new, so it lengthens the chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections.table import Table
from tracker.events import (
    AgentReset,
    RequestTracked,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
)

if TYPE_CHECKING:
    from projections.state import Handlers, State


class AgentRow(msgspec.Struct):
    """A row of ``agents``."""

    agent_id: str
    current_session_id: str | None
    chain_length: int
    request_count: int
    resets: int
    first_seen: str
    last_activity: str
    last_seq: int
    reset_seq: int | None  # of its last AgentReset


def table(limit: int) -> Table[AgentRow]:
    return Table("agents", AgentRow, ("agent_id",), limit, ("first_seen",))


def tracked(state: State, seq: int, at: str, ev: RequestTracked) -> None:
    if ev.agent_id is None:
        return
    row = state.agents.get(ev.agent_id)
    if row is None:
        row = state.agents.add(ev.agent_id, AgentRow(ev.agent_id, None, 0, 0, 0, at, at, seq, None))
    else:
        state.agents.edit(ev.agent_id)
    row.request_count += 1
    row.last_activity, row.last_seq = at, seq


def assigned(state: State, seq: int, at: str, ev: SessionAssigned) -> None:
    if ev.agent_id is None:
        return
    row = state.agents.edit(ev.agent_id)
    if state.sessions.get(ev.session_id) is None:
        row.chain_length += 1
    if not ev.superseded:  # a superseded answer's session is a branch, not where to go on
        row.current_session_id = ev.session_id
    row.last_activity, row.last_seq = at, seq


def retired(state: State, seq: int, at: str, ev: SessionExpired | SessionDeleted) -> None:
    if ev.agent_id is None:
        return
    row = state.agents.get(ev.agent_id)
    if row is not None and row.current_session_id == ev.session_id:
        state.agents.edit(ev.agent_id)
        row.current_session_id, row.last_seq = None, seq


def reset(state: State, seq: int, at: str, ev: AgentReset) -> None:
    row = state.agents.edit(ev.agent_id)
    row.current_session_id, row.last_seq, row.reset_seq = None, seq, seq
    row.resets += 1


HANDLERS: Handlers = {
    RequestTracked: tracked,
    SessionAssigned: assigned,
    SessionExpired: retired,
    SessionDeleted: retired,
    AgentReset: reset,
}
