"""Requests: one row per call to the CLI, pending -> active -> completed | failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections.common import merge_json
from projections.table import Table
from tracker import codec
from tracker.events import (
    LockAcquired,
    RequestCompleted,
    RequestFailed,
    RequestTracked,
    SessionAssigned,
    Usage,
)

if TYPE_CHECKING:
    from projections.state import Handlers, State

# The requests not finished (``RequestRow.finished`` false), as SQL; the partial indexes
# requests_unfinished and requests_by_owner (schema.sql) hold exactly these rows.
UNFINISHED = "status IN ('pending', 'active')"


class RequestRow(msgspec.Struct):
    """A row of ``requests`` (columns in this order)."""

    request_id: str
    agent_id: str | None
    resumed_session_id: str | None
    session_id: str | None
    superseded: int  # 1: the agent had moved on before the CLI answered (SessionAssigned)
    status: str
    owner: str | None
    created_at: str
    assigned_at: str | None
    finished_at: str | None
    error: str | None
    error_kind: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None
    duration_ms: int | None
    metadata: str
    lock_token: int | None
    track_digest: str
    finish_digest: str | None
    last_seq: int

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


def table(limit: int) -> Table[RequestRow]:
    immutable = ("agent_id", "resumed_session_id", "owner", "created_at", "track_digest")
    return Table("requests", RequestRow, ("request_id",), limit, immutable)


def tracked(state: State, seq: int, at: str, ev: RequestTracked) -> None:
    state.requests.add(
        ev.request_id,
        RequestRow(
            ev.request_id,
            ev.agent_id,
            ev.resumed_session_id,
            None,
            0,
            "pending",
            ev.owner,
            at,
            None,
            None,
            None,
            None,
            0,
            0,
            0,
            0,
            None,
            None,
            codec.encode_value(ev.metadata).decode(),
            None,
            ev.digest,
            None,
            seq,
        ),
    )


def assigned(state: State, seq: int, at: str, ev: SessionAssigned) -> None:
    row = state.requests.edit(ev.request_id)
    row.session_id, row.status, row.assigned_at, row.last_seq = ev.session_id, "active", at, seq
    row.superseded = int(ev.superseded)


def completed(state: State, seq: int, at: str, ev: RequestCompleted) -> None:
    row = _finish(state, seq, at, ev.request_id, "completed", ev.usage)
    row.cost_usd, row.duration_ms, row.finish_digest = ev.cost_usd, ev.duration_ms, ev.digest
    if ev.metadata:
        row.metadata = merge_json(row.metadata, ev.metadata)


def failed(state: State, seq: int, at: str, ev: RequestFailed) -> None:
    row = _finish(state, seq, at, ev.request_id, "failed", ev.usage)
    row.cost_usd, row.duration_ms, row.finish_digest = ev.cost_usd, ev.duration_ms, ev.digest
    row.error, row.error_kind = ev.error, ev.kind


def _finish(
    state: State, seq: int, at: str, request_id: str, status: str, usage: Usage
) -> RequestRow:
    row = state.requests.edit(request_id)
    row.status, row.finished_at, row.last_seq = status, at, seq
    row.input_tokens, row.output_tokens = usage.input_tokens, usage.output_tokens
    row.cache_read_tokens, row.cache_write_tokens = (
        usage.cache_read_tokens,
        usage.cache_write_tokens,
    )
    return row


def lock_taken(state: State, seq: int, at: str, ev: LockAcquired) -> None:
    if ev.request_id is not None and state.requests.get(ev.request_id) is not None:
        row = state.requests.edit(ev.request_id)
        row.lock_token, row.last_seq = seq, seq


HANDLERS: Handlers = {
    RequestTracked: tracked,
    SessionAssigned: assigned,
    RequestCompleted: completed,
    RequestFailed: failed,
    LockAcquired: lock_taken,
}
