"""Decisions: each command checks the current state, then appends its events.

A command runs on the writer thread inside the group-commit transaction. It
raises a TrackerError before appending anything when the call is impossible;
an exact repeat of a call that already took effect appends nothing and
returns the same result (retries are safe).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from projections.locks import LockRow
from projections.requests import RequestRow
from projections.sessions import SessionRow
from projections.state import Projector, State
from tracker import errors
from tracker.events import (
    AgentReset,
    AnyEvent,
    LockAcquired,
    LockExpired,
    LockReleased,
    LockRenewed,
    RequestCompleted,
    RequestFailed,
    RequestTracked,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
    SessionMetadataUpdated,
    Usage,
)
from tracker.models import Lock, Request, lock_from_row, request_from_row
from tracker.store import Transaction

Tx = Transaction[Projector]


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


# -- locks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockKey:
    """A conversation lock: by agent, or by session for agent-less requests."""

    scope: str
    target: str
    agent_id: str | None  # whose usage the lock counts toward

    @property
    def session_id(self) -> str | None:
        return self.target if self.scope == "session" else None

    def label(self) -> str:
        return f"{self.scope} {self.target!r}"


def lock_key(state: State, scope: str, target: str) -> LockKey:
    """Return the key, attributing a session lock to the session's agent if known."""
    if scope == "agent":
        return LockKey(scope, target, target)
    session = state.sessions.get(target)
    return LockKey(scope, target, session.agent_id if session else None)


def take_lock(
    tx: Tx,
    key: LockKey,
    holder: str,
    ttl: float,
    *,
    request_id: str | None = None,
    waited_ms: int = 0,
) -> list[AnyEvent]:
    """Events taking ``key`` for ``holder``; an expired lock is recorded as expired first."""
    row = tx.hook.state.locks.get((key.scope, key.target))
    events: list[AnyEvent] = []
    if row is not None and row.status == "held":
        if row.held_at(tx.at):
            raise errors.LockHeld(
                f"{key.label()} is locked by {row.holder!r} until {row.expires_at} "
                f"(token {row.token})"
            )
        events.append(
            LockExpired(
                scope=key.scope,
                target=key.target,
                holder=row.holder,
                token=row.token,
                agent_id=key.agent_id,
                session_id=key.session_id,
            )
        )
    events.append(
        LockAcquired(
            scope=key.scope,
            target=key.target,
            holder=holder,
            expires_at=tx.now + timedelta(seconds=ttl),
            agent_id=key.agent_id,
            session_id=key.session_id,
            request_id=request_id,
            waited_ms=waited_ms,
        )
    )
    return events


def _lock_row(tx: Tx, key: LockKey) -> LockRow | None:
    return tx.hook.state.locks.get((key.scope, key.target))


def _held_lock(tx: Tx, key: LockKey) -> Lock:
    row = _lock_row(tx, key)
    assert row is not None
    return lock_from_row(row)


@dataclass(frozen=True, slots=True)
class AcquireLock:
    scope: str
    target: str
    holder: str
    ttl: float
    waited_ms: int = 0

    def __call__(self, tx: Tx) -> Lock:
        key = lock_key(tx.hook.state, self.scope, self.target)
        row = _lock_row(tx, key)
        if row is not None and row.holder == self.holder and row.held_at(tx.at):
            return lock_from_row(row)  # already ours: a retry
        tx.append(take_lock(tx, key, self.holder, self.ttl, waited_ms=self.waited_ms))
        return _held_lock(tx, key)


@dataclass(frozen=True, slots=True)
class RenewLock:
    scope: str
    target: str
    holder: str
    ttl: float

    def __call__(self, tx: Tx) -> Lock:
        key = lock_key(tx.hook.state, self.scope, self.target)
        row = _owned(tx, key, self.holder, "renew")
        tx.append(
            [
                LockRenewed(
                    scope=key.scope,
                    target=key.target,
                    holder=self.holder,
                    token=row.token,
                    expires_at=tx.now + timedelta(seconds=self.ttl),
                    agent_id=key.agent_id,
                    session_id=key.session_id,
                )
            ]
        )
        return _held_lock(tx, key)


@dataclass(frozen=True, slots=True)
class ReleaseLock:
    scope: str
    target: str
    holder: str

    def __call__(self, tx: Tx) -> None:
        key = lock_key(tx.hook.state, self.scope, self.target)
        row = _lock_row(tx, key)
        if row is not None and row.holder == self.holder and row.status == "released":
            return  # released already: a retry
        row = _owned(tx, key, self.holder, "release")
        tx.append(
            [
                LockReleased(
                    scope=key.scope,
                    target=key.target,
                    holder=self.holder,
                    token=row.token,
                    agent_id=key.agent_id,
                    session_id=key.session_id,
                )
            ]
        )


def _owned(tx: Tx, key: LockKey, holder: str, verb: str) -> LockRow:
    """The lock row if ``holder`` holds it (a lapsed lease nobody took still counts)."""
    row = _lock_row(tx, key)
    if row is None or row.status != "held" or row.holder != holder:
        now = "nobody" if row is None or row.status != "held" else repr(row.holder)
        raise errors.LockNotHeld(
            f"cannot {verb} {key.label()}: {holder!r} does not hold it ({now} does)"
        )
    return row


def _release_for(tx: Tx, row: RequestRow) -> list[AnyEvent]:
    """The release of the lock taken with a request, if that request still holds it."""
    if row.lock_token is None:
        return []
    scope, target = ("agent", row.agent_id) if row.agent_id else ("session", row.resumed_session_id)
    assert target is not None
    key = lock_key(tx.hook.state, scope, target)
    lock = _lock_row(tx, key)
    if lock is None or lock.status != "held" or lock.token != row.lock_token:
        return []  # it expired and someone else may hold it now: not ours to release
    return [
        LockReleased(
            scope=scope,
            target=target,
            holder=lock.holder,
            token=lock.token,
            agent_id=key.agent_id,
            session_id=key.session_id,
            request_id=row.request_id,
        )
    ]


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Track:
    request_id: str
    agent_id: str | None
    resumed_session_id: str | None
    prompt: str | None  # as retained (full, preview or None)
    prompt_chars: int
    metadata: dict[str, Any]
    owner: str | None
    digest: str
    lock: bool
    lock_ttl: float
    waited_ms: int = 0

    def __call__(self, tx: Tx) -> Request:
        state = tx.hook.state
        existing = state.requests.get(self.request_id)
        if existing is not None:
            if existing.track_digest == self.digest:
                return request_from_row(existing)  # a retry
            raise errors.DuplicateRequest(
                f"request {self.request_id!r} was already tracked with other arguments"
            )
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
        return _result(state, self.request_id)

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
        if self.agent_id is not None:
            return lock_key(state, "agent", self.agent_id)
        if self.resumed_session_id is not None:
            return lock_key(state, "session", self.resumed_session_id)
        raise errors.InvalidInput(
            f"request {self.request_id!r} has no agent and no session to lock: "
            f"pass agent_id= or session_id=, or lock=False"
        )


@dataclass(frozen=True, slots=True)
class Assign:
    request_id: str
    session_id: str

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


@dataclass(frozen=True, slots=True)
class Complete:
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
                *_release_for(tx, row),
            ]
        )
        return _result(state, self.request_id)


@dataclass(frozen=True, slots=True)
class Fail:
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
        *_release_for(tx, row),
    ]


def _finished_before(row: RequestRow, digest: str) -> bool:
    """True for a retry of the call that finished the request; raise for any other."""
    if not row.finished:
        return False
    if row.finish_digest == digest:
        return True
    raise errors.InvalidTransition(f"request {row.request_id!r} is already {row.status}")


# -- sessions and agents ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpdateSessionMetadata:
    session_id: str
    metadata: dict[str, Any]

    def __call__(self, tx: Tx) -> None:
        session = _live_session(tx.hook.state, self.session_id, "update metadata of")
        if not self.metadata:
            return
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
        if agent.current_session_id is None:
            return  # nothing to reset: a retry, or a fresh agent
        tx.append([AgentReset(agent_id=self.agent_id, reason=self.reason)])
