"""Decisions: each command checks the current state, then appends its events.

A command runs on the writer thread inside the group-commit transaction. It
raises a TrackerError before appending anything when the call is impossible;
an exact repeat of a call that already took effect appends nothing and
returns the same result (retries are safe).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from projections.common import merge_json
from projections.requests import RequestRow
from projections.sessions import SessionRow
from projections.state import State
from tracker import errors
from tracker.codec import encode_value
from tracker.events import (
    AgentReset,
    AnyEvent,
    RequestCompleted,
    RequestFailed,
    RequestTracked,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
    SessionMetadataUpdated,
    Usage,
)
from tracker.locking import (
    LockKey,
    Tx,
    conversation,
    lock_key,
    release_for,
    take_lock,
    taken_over,
)
from tracker.models import Request, request_from_row
from tracker.validate import MAX_METADATA_BYTES


def _request(state: State, request_id: str) -> RequestRow:
    row = state.requests.get(request_id)
    if row is None:
        raise errors.UnknownRequest(f"no request {request_id!r}")
    return row


def _session(state: State, session_id: str) -> SessionRow:
    row = state.sessions.get(session_id)
    if row is None:
        raise errors.UnknownSession(f"no session {session_id!r}")
    return row


def _result(state: State, request_id: str) -> Request:
    return request_from_row(_request(state, request_id))


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    request_id: str
    agent_id: str | None
    resumed_session_id: str | None
    resume_current: bool  # resume the agent's current session (resumed_session_id None)
    prompt: str | None  # as retained (full, preview or None)
    prompt_chars: int
    metadata: dict[str, Any]
    owner: str | None
    digest: str
    lock: bool
    lock_ttl: float
    waited_ms: int = 0

    def rows_read(self) -> Iterator[tuple[str, str]]:
        yield "requests", self.request_id
        if self.resumed_session_id is not None:
            yield "sessions", self.resumed_session_id
        if self.resume_current and self.agent_id is not None:
            yield "agents", self.agent_id

    def __call__(self, tx: Tx) -> tuple[Request, bool]:
        """The request, and whether this call tracked it (False: a retry)."""
        state = tx.hook.state
        existing = state.requests.get(self.request_id)
        if existing is not None:
            if existing.track_digest == self.digest:
                return request_from_row(existing), False
            raise errors.DuplicateRequest(
                f"request {self.request_id!r} was already tracked with other arguments"
            )
        if self.resume_current:  # decided now, in the transaction that takes the lock
            decided = replace(self, resumed_session_id=self._current(state), resume_current=False)
            return decided(tx)
        self._check_resumed(state)
        events: list[AnyEvent] = [
            RequestTracked(
                request_id=self.request_id,
                agent_id=self.agent_id,
                resumed_session_id=self.resumed_session_id,
                prompt=self.prompt,
                prompt_chars=self.prompt_chars,
                metadata=self.metadata,
                owner=self.owner,
                digest=self.digest,
            )
        ]
        if self.lock:
            events += take_lock(
                tx,
                self._lock_key(state),
                self.request_id,
                self.lock_ttl,
                request_id=self.request_id,
                waited_ms=self.waited_ms,
            )
        tx.append(events)
        return _result(state, self.request_id), True

    def _current(self, state: State) -> str | None:
        agent = state.agents.get(self.agent_id) if self.agent_id is not None else None
        return agent.current_session_id if agent is not None else None

    def _check_resumed(self, state: State) -> None:
        if self.resumed_session_id is None:
            return
        session = state.sessions.get(self.resumed_session_id)
        if session is None:
            return  # a session from before the tracker: recorded as the CLI reports it
        if session.status == "deleted":
            raise errors.InvalidTransition(
                f"session {self.resumed_session_id!r} was deleted and cannot be resumed"
            )
        if session.agent_id != self.agent_id:
            raise errors.InvalidTransition(
                f"session {self.resumed_session_id!r} belongs to agent {session.agent_id!r}, "
                f"not {self.agent_id!r}"
            )

    def _lock_key(self, state: State) -> LockKey:
        found = conversation(self.agent_id, self.resumed_session_id)
        if found is not None:
            return lock_key(state, *found)
        raise errors.InvalidInput(
            f"request {self.request_id!r} has no agent and no session to lock: "
            f"pass agent_id= or session_id=, or lock=False"
        )


@dataclass(frozen=True, slots=True)
class Assign:
    request_id: str
    session_id: str

    def rows_read(self) -> Iterator[tuple[str, str]]:
        yield "requests", self.request_id
        yield "sessions", self.session_id

    def __call__(self, tx: Tx) -> Request:
        state = tx.hook.state
        row = _request(state, self.request_id)
        if row.session_id == self.session_id:
            return request_from_row(row)  # a retry
        if row.session_id is not None:
            raise errors.InvalidTransition(
                f"request {self.request_id!r} already has session {row.session_id!r}, "
                f"not {self.session_id!r}"
            )
        if row.finished:
            raise errors.InvalidTransition(
                f"request {self.request_id!r} is {row.status}: it cannot get a session"
            )
        tx.append(
            [
                SessionAssigned(
                    request_id=self.request_id,
                    session_id=self.session_id,
                    agent_id=row.agent_id,
                    parent_session_id=self._parent(state, row),
                    superseded=taken_over(state, row) or _reset_since(state, row),
                )
            ]
        )
        return _result(state, self.request_id)

    def _parent(self, state: State, row: RequestRow) -> str | None:
        session = state.sessions.get(self.session_id)
        if session is None:  # new: it continues the resumed session, if any
            return row.resumed_session_id if row.resumed_session_id != self.session_id else None
        if session.status == "deleted":
            raise errors.InvalidTransition(f"session {self.session_id!r} was deleted")
        if session.agent_id != row.agent_id:
            raise errors.InvalidTransition(
                f"session {self.session_id!r} belongs to agent {session.agent_id!r}, "
                f"not to request {self.request_id!r}'s agent {row.agent_id!r}"
            )
        return session.parent_session_id


def _reset_since(state: State, row: RequestRow) -> bool:
    """Whether the request's agent was reset after the request was tracked: a pending
    request's last event is its tracking (or the lock taken with it, in its transaction)."""
    agent = state.agents.get(row.agent_id) if row.agent_id is not None else None
    return agent is not None and agent.reset_seq is not None and agent.reset_seq > row.last_seq


class _OnItsRequest:
    """A command on one tracked request, whose row it reads first."""

    __slots__ = ()
    request_id: str

    def rows_read(self) -> Iterator[tuple[str, str]]:
        yield "requests", self.request_id


@dataclass(frozen=True, slots=True)
class Complete(_OnItsRequest):
    request_id: str
    response: str | None
    response_chars: int
    usage: Usage
    cost_usd: float | None
    duration_ms: int | None
    metadata: dict[str, Any]
    digest: str

    def __call__(self, tx: Tx) -> Request:
        state = tx.hook.state
        row = _request(state, self.request_id)
        if _finished_before(row, self.digest):
            return request_from_row(row)
        if row.status == "pending":
            raise errors.InvalidTransition(
                f"request {self.request_id!r} has no session yet: "
                f"call update_request_session before complete_request"
            )
        _check_merge(row.metadata, self.metadata, f"request {self.request_id!r}")
        tx.append(
            [
                RequestCompleted(
                    request_id=self.request_id,
                    agent_id=row.agent_id,
                    session_id=row.session_id,
                    response=self.response,
                    response_chars=self.response_chars,
                    usage=self.usage,
                    cost_usd=self.cost_usd,
                    duration_ms=self.duration_ms,
                    metadata=self.metadata,
                    digest=self.digest,
                ),
                *release_for(tx, row),
            ]
        )
        return _result(state, self.request_id)


@dataclass(frozen=True, slots=True)
class Fail(_OnItsRequest):
    request_id: str
    error: str
    kind: str
    usage: Usage
    cost_usd: float | None
    duration_ms: int | None
    digest: str

    def __call__(self, tx: Tx) -> Request:
        state = tx.hook.state
        row = _request(state, self.request_id)
        if _finished_before(row, self.digest):
            return request_from_row(row)
        tx.append(
            fail_events(
                tx,
                row,
                self.error,
                self.kind,
                self.usage,
                self.cost_usd,
                self.duration_ms,
                self.digest,
            )
        )
        return _result(state, self.request_id)


def fail_events(
    tx: Tx,
    row: RequestRow,
    error: str,
    kind: str,
    usage: Usage | None = None,
    cost_usd: float | None = None,
    duration_ms: int | None = None,
    digest: str = "",
) -> list[AnyEvent]:
    """The failure of an unfinished request, and the release of its lock."""
    return [
        RequestFailed(
            request_id=row.request_id,
            error=error,
            kind=kind,
            agent_id=row.agent_id,
            session_id=row.session_id,
            usage=usage or Usage(),
            cost_usd=cost_usd,
            duration_ms=duration_ms,
            digest=digest,
        ),
        *release_for(tx, row),
    ]


def _finished_before(row: RequestRow, digest: str) -> bool:
    """True for a retry of the call that finished the request; raise for any other."""
    if not row.finished:
        return False
    if row.finish_digest == digest:
        return True
    raise errors.InvalidTransition(f"request {row.request_id!r} is already {row.status}")


def undo_track(result: tuple[Request, bool]) -> Fail | None:
    """Fail a request a cancelled caller tracked without knowing it (releasing its lock):
    the caller never got to send it."""
    request, fresh = result
    if not fresh:
        return None
    return Fail(
        request.request_id,
        error="the caller was cancelled before tracking was acknowledged",
        kind="cancelled",
        usage=Usage(),
        cost_usd=None,
        duration_ms=None,
        digest="cancelled",  # no caller's call: a fingerprint no call of the API has
    )


def _check_merge(current: str, changes: dict[str, Any], owner: str) -> None:
    """Refuse ``changes`` whose merge into the stored metadata ``current`` would pass the
    bound each call's metadata has (so a stored object stays within it too)."""
    if not changes or 4 * len(current) + len(encode_value(changes)) <= MAX_METADATA_BYTES:
        return  # within the bound however the keys overlap (UTF-8: 4 bytes a character)
    size = len(merge_json(current, changes).encode())  # the projection merges it again
    if size > MAX_METADATA_BYTES:
        raise errors.InvalidInput(
            f"the metadata of {owner} would be {size:,} bytes as JSON with these keys merged "
            f"in, at most {MAX_METADATA_BYTES:,}: replace large values instead of adding keys"
        )


# -- sessions and agents ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateSessionMetadata:
    session_id: str
    metadata: dict[str, Any]

    def __call__(self, tx: Tx) -> None:
        session = _live_session(tx.hook.state, self.session_id, "update metadata of")
        current = msgspec.json.decode(session.metadata)
        if all(key in current and current[key] == value for key, value in self.metadata.items()):
            return  # nothing would change: a retry, or an empty update
        _check_merge(session.metadata, self.metadata, f"session {self.session_id!r}")
        tx.append(
            [
                SessionMetadataUpdated(
                    session_id=self.session_id, metadata=self.metadata, agent_id=session.agent_id
                )
            ]
        )


@dataclass(frozen=True, slots=True)
class RetireSession:
    """Expire (reason idle, capacity, manual) or delete a session."""

    session_id: str
    reason: str
    delete: bool

    def __call__(self, tx: Tx) -> None:
        session = _session(tx.hook.state, self.session_id)
        if session.status == "deleted" or (session.status == "expired" and not self.delete):
            return  # already retired: a retry
        if self.delete:
            event: AnyEvent = SessionDeleted(
                session_id=self.session_id, agent_id=session.agent_id, reason=self.reason
            )
        else:
            event = SessionExpired(
                session_id=self.session_id, agent_id=session.agent_id, reason=self.reason
            )
        tx.append([event])


def _live_session(state: State, session_id: str, verb: str) -> SessionRow:
    session = _session(state, session_id)
    if session.status == "deleted":
        raise errors.InvalidTransition(f"cannot {verb} session {session_id!r}: it was deleted")
    return session


@dataclass(frozen=True, slots=True)
class ResetAgent:
    agent_id: str
    reason: str | None

    def __call__(self, tx: Tx) -> None:
        agent = tx.hook.state.agents.get(self.agent_id)
        if agent is None:
            raise errors.UnknownAgent(f"no agent {self.agent_id!r}")
        if agent.current_session_id is None and agent.last_seq == agent.reset_seq:
            return  # nothing happened since its last reset: a retry
        # else, even without a current session, requests in flight may answer: they
        # must not move the agent on (Assign: superseded)
        tx.append([AgentReset(agent_id=self.agent_id, reason=self.reason)])
