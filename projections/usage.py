"""Usage per UTC day and agent: requests by outcome, tokens, cost, durations, locks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections.common import add_finished
from projections.table import Table
from tracker.events import (
    LockAcquired,
    LockExpired,
    RequestCompleted,
    RequestFailed,
    RequestTracked,
)

if TYPE_CHECKING:
    from projections.state import Handlers, State


class UsageRow(msgspec.Struct):
    """A row of ``usage_daily``; ``agent_id`` is '' for requests without an agent."""

    day: str
    agent_id: str
    requests: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: int = 0
    timed: int = 0  # finished requests that reported a duration
    lock_acquisitions: int = 0
    lock_waits: int = 0
    lock_wait_ms: int = 0
    lock_expiries: int = 0


def table(limit: int) -> Table[UsageRow]:
    return Table("usage_daily", UsageRow, ("day", "agent_id"), limit)


def _row(state: State, at: str, agent_id: str | None) -> UsageRow:
    key = (at[:10], agent_id or "")
    if state.usage.get(key) is None:
        return state.usage.add(key, UsageRow(*key))
    return state.usage.edit(key)


def tracked(state: State, seq: int, at: str, ev: RequestTracked) -> None:
    _row(state, at, ev.agent_id).requests += 1


def finished(state: State, seq: int, at: str, ev: RequestCompleted | RequestFailed) -> None:
    add_finished(_row(state, at, ev.agent_id), ev)


def lock_taken(state: State, seq: int, at: str, ev: LockAcquired) -> None:
    row = _row(state, at, ev.agent_id)
    row.lock_acquisitions += 1
    if ev.waited_ms > 0:
        row.lock_waits += 1
        row.lock_wait_ms += ev.waited_ms


def lock_expired(state: State, seq: int, at: str, ev: LockExpired) -> None:
    _row(state, at, ev.agent_id).lock_expiries += 1


HANDLERS: Handlers = {
    RequestTracked: tracked,
    RequestCompleted: finished,
    RequestFailed: finished,
    LockAcquired: lock_taken,
    LockExpired: lock_expired,
}
