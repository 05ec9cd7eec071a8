"""What the API returns: frozen msgspec Structs (``msgspec.to_builtins`` works on all)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Literal, TypeVar

import msgspec

from projections.agents import AgentRow
from projections.locks import LockRow
from projections.requests import RequestRow
from projections.sessions import SessionRow
from tracker.events import Usage


class Resume(enum.Enum):
    """What ``track_request(session_id=CURRENT)`` resumes (see CURRENT)."""

    CURRENT = "current"


# track_request(session_id=CURRENT): resume the agent's current session as the tracker
# knows it when the request is tracked. With lock=True that is once the lock is held, so
# a request that waited for it continues the session its predecessor was given; a
# session read beforehand (get_agent_session) may be stale by then.
CURRENT = Resume.CURRENT
ResumedSession = str | Literal[Resume.CURRENT] | None


class _Result(msgspec.Struct, frozen=True, kw_only=True):
    pass


class Lock(_Result, frozen=True):
    """A conversation lock; ``token`` is its fencing token (strictly increasing)."""

    scope: str  # "agent" or "session"
    target: str  # the agent id or session id
    holder: str
    token: int
    status: str  # held | released | expired
    acquired_at: datetime
    expires_at: datetime
    ended_at: datetime | None = None
    request_id: str | None = None

    def held_at(self, now: datetime) -> bool:
        """Whether the lock is held and unexpired at ``now``."""
        return self.status == "held" and self.expires_at > now


class Request(_Result, frozen=True):
    """One call to the CLI. ``session_id`` None means pending assignment."""

    request_id: str
    agent_id: str | None
    resumed_session_id: str | None
    session_id: str | None
    superseded: bool  # the agent had moved on before the CLI answered: a branch
    status: str  # pending | active | completed | failed
    owner: str | None
    created_at: datetime
    assigned_at: datetime | None
    finished_at: datetime | None
    error: str | None
    error_kind: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float | None
    duration_ms: int | None
    metadata: dict[str, Any]
    lock_token: int | None

    @property
    def usage(self) -> Usage:
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")


SESSION_STATUSES = ("active", "expired", "deleted")


class Session(_Result, frozen=True):
    """A CLI conversation handle, its place in the agent's chain, and its totals."""

    session_id: str
    agent_id: str | None
    parent_session_id: str | None
    position: int
    status: str  # active | expired | deleted
    status_reason: str | None
    first_seen: datetime
    last_activity: datetime
    request_count: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    duration_ms: int
    metadata: dict[str, Any]
    lock: Lock | None = None


class Turn(_Result, frozen=True):
    """One answered request of a conversation: what it asked and what the CLI answered,
    as the log kept them (``content="full"``: whole; "preview": the first characters;
    "none": None)."""

    request_id: str
    session_id: str  # the session the CLI answered with
    prompt: str | None
    response: str | None
    prompt_chars: int  # the length of the prompt as sent (``prompt`` may keep less)
    response_chars: int
    asked_at: datetime  # tracked
    answered_at: datetime  # completed

    @property
    def whole(self) -> bool:
        """Whether the prompt and the response are kept in full."""
        return (
            len(self.prompt or "") == self.prompt_chars
            and len(self.response or "") == self.response_chars
        )


class Agent(_Result, frozen=True):
    """An agent: where its next request continues, its chain length and totals."""

    agent_id: str
    current_session_id: str | None
    chain_length: int
    request_count: int
    resets: int
    first_seen: datetime
    last_activity: datetime
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


class Stats(_Result, frozen=True):
    """Counts, tokens, cost, durations, failure rate and lock contention."""

    agents: int
    sessions: int
    requests: int
    pending: int
    active: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    duration_ms: int
    timed_requests: int  # finished requests that reported a duration (duration_ms sums them)
    avg_duration_ms: float | None  # of the finished requests that reported a duration
    failure_rate: float | None
    lock_acquisitions: int
    lock_waits: int
    lock_wait_ms: int
    lock_expiries: int
    events: int


class UsageGroup(_Result, frozen=True):
    """Usage of one day, agent or session (``key``)."""

    key: str
    requests: int
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    duration_ms: int
    timed_requests: int  # finished requests that reported a duration (duration_ms sums them)
    avg_duration_ms: float | None  # of the finished requests that reported a duration
    failure_rate: float | None


class CleanupReport(_Result, frozen=True):
    """What cleanup retired (or, with ``dry_run``, would retire)."""

    dry_run: bool
    abandoned_requests: list[str]
    expired_sessions: list[str]  # idle
    expired_locks: list[str]  # "scope:target"
    over_capacity_sessions: list[str] = []  # expired beyond max_sessions

    @property
    def total(self) -> int:
        return (
            len(self.abandoned_requests)
            + len(self.expired_sessions)
            + len(self.expired_locks)
            + len(self.over_capacity_sessions)
        )


class Health(_Result, frozen=True):
    """Schema version, integrity, projection lag and sizes of one database."""

    ok: bool
    path: str
    schema_version: int
    integrity: str | None  # PRAGMA quick_check's answer ("ok"); None: not checked
    events: int
    projection_seq: int
    lag: int
    file_bytes: int
    wal_bytes: int
    bytes_per_event: float | None
    durability: str


class TableDiff(_Result, frozen=True):
    """Rows of one projection that differ between live state and replay."""

    table: str
    missing: int  # in the replay, not live
    unexpected: int  # live, not in the replay
    examples: list[str]


class VerifyReport(_Result, frozen=True):
    """``ok`` when the hash chain holds and live projections equal a replay."""

    ok: bool
    events: int
    head_hash: str  # keep it elsewhere to detect a rewrite of the whole file
    chain_ok: bool
    first_bad_seq: int | None
    chain_problem: str | None
    projections_ok: bool
    checked_seq: int
    diffs: list[TableDiff]


class RebuildReport(_Result, frozen=True):
    """How many events a rebuild replayed, how long it took, and how long of that the
    swap held the write lock (every writer, in any process, waited for it)."""

    events: int
    seconds: float
    swap_seconds: float


class BackupReport(_Result, frozen=True):
    """A backup written: its events, the hash of the last (the head, as ``verify`` of the
    source showed it then), its size, and how long it took; ``added``: the events it
    gained (all of them unless an update); ``whole``: written whole and checked whole
    (``quick_check``), not updated."""

    path: str
    events: int
    head_hash: str
    bytes: int
    seconds: float
    added: int
    whole: bool


R = TypeVar("R", bound=_Result)


def from_row(row: msgspec.Struct, cls: type[R], **extra: Any) -> R:
    """Build the result ``cls`` from a projection row (msgspec parses the times in C);
    columns the result does not show (digests, last_seq) are left out."""
    values = msgspec.structs.asdict(row)
    if "metadata" in values:
        values["metadata"] = msgspec.json.decode(values["metadata"])
    values.update(extra)
    return msgspec.convert(values, cls)


def request_from_row(row: RequestRow) -> Request:
    return from_row(row, Request, superseded=bool(row.superseded))


def session_from_row(row: SessionRow, lock: Lock | None = None) -> Session:
    return from_row(row, Session, lock=lock)


def lock_from_row(row: LockRow) -> Lock:
    return from_row(row, Lock)


def agent_from_row(
    row: AgentRow, totals: Usage, completed: int, failed: int, cost_usd: float
) -> Agent:
    return from_row(
        row,
        Agent,
        completed=completed,
        failed=failed,
        cost_usd=cost_usd,
        **msgspec.structs.asdict(totals),
    )
