"""Lock decisions: take, renew, release; fencing tokens are LockAcquired seqs.

A conversation lock is keyed by agent, or by session for agent-less requests.
A lapsed lease nobody took over still belongs to its holder; once taken over
(LockExpired, then LockAcquired) the old holder can neither renew nor release, and
the answer to the request that took it is superseded (``taken_over``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import TypedDict

from projections.locks import LockRow
from projections.requests import RequestRow
from projections.state import Projector, State
from tracker import errors
from tracker.events import AnyEvent, LockAcquired, LockExpired, LockReleased, LockRenewed
from tracker.models import Lock, lock_from_row
from tracker.transaction import Transaction

Tx = Transaction[Projector]


class LockFields(TypedDict):
    """What every lock event names about its lock (see ``events.LockEvent``)."""

    scope: str
    target: str
    agent_id: str | None
    session_id: str | None


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

    def fields(self) -> LockFields:
        return {
            "scope": self.scope,
            "target": self.target,
            "agent_id": self.agent_id,
            "session_id": self.session_id,
        }


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
    row = _lock_row(tx, key)
    events: list[AnyEvent] = []
    if row is not None and row.status == "held":
        if row.held_at(tx.at):
            raise errors.LockHeld(
                f"{key.label()} is locked by {row.holder!r} until {row.expires_at} "
                f"(token {row.token})"
            )
        events.append(expired(key, row))
    events.append(
        LockAcquired(
            **key.fields(),
            holder=holder,
            expires_at=tx.now + timedelta(seconds=ttl),
            request_id=request_id,
            waited_ms=waited_ms,
        )
    )
    return events


def expired(key: LockKey, row: LockRow) -> LockExpired:
    """The event taking a lock past its TTL from its holder."""
    return LockExpired(**key.fields(), holder=row.holder, token=row.token)


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

    def __call__(self, tx: Tx) -> tuple[Lock, bool]:
        """The lock, and whether this call took it (False: the holder had it already)."""
        key = lock_key(tx.hook.state, self.scope, self.target)
        row = _lock_row(tx, key)
        if row is not None and row.holder == self.holder and row.held_at(tx.at):
            return lock_from_row(row), False  # already ours: a retry
        tx.append(take_lock(tx, key, self.holder, self.ttl, waited_ms=self.waited_ms))
        return _held_lock(tx, key), True


def undo_acquire(result: tuple[Lock, bool]) -> ReleaseLock | None:
    """The release of a lock a cancelled caller took without knowing it."""
    lock, fresh = result
    return ReleaseLock(lock.scope, lock.target, lock.holder) if fresh else None


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
                    **key.fields(),
                    holder=self.holder,
                    token=row.token,
                    expires_at=tx.now + timedelta(seconds=self.ttl),
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
        tx.append([LockReleased(**key.fields(), holder=self.holder, token=row.token)])


def _owned(tx: Tx, key: LockKey, holder: str, verb: str) -> LockRow:
    """The lock row if ``holder`` holds it (a lapsed lease nobody took still counts)."""
    row = _lock_row(tx, key)
    if row is None or row.status != "held" or row.holder != holder:
        now = "nobody" if row is None or row.status != "held" else repr(row.holder)
        raise errors.LockNotHeld(
            f"cannot {verb} {key.label()}: {holder!r} does not hold it ({now} does)"
        )
    return row


def conversation(agent_id: str | None, session_id: str | None) -> tuple[str, str] | None:
    """The (scope, target) of the lock a request takes: its agent's, or else the one of
    the session it resumes; None if it has neither."""
    if agent_id is not None:
        return "agent", agent_id
    if session_id is not None:
        return "session", session_id
    return None


def _conversation_lock(state: State, row: RequestRow) -> LockRow | None:
    """The row of the lock a request takes (``conversation``), if there is one."""
    found = conversation(row.agent_id, row.resumed_session_id)
    return state.locks.get(found) if found else None


def holds_live_lock(tx: Tx, row: RequestRow) -> bool:
    """Whether a request holds its conversation's lock, unexpired, under its id: the lock
    it took when tracked, or ``Tracker.lock(holder=request_id)``'s."""
    lock = _conversation_lock(tx.hook.state, row)
    return lock is not None and lock.holder == row.request_id and lock.held_at(tx.at)


def taken_over(state: State, row: RequestRow) -> bool:
    """Whether another holder has taken the lock taken with a request since (its fencing
    token is no longer the conversation's)."""
    lock = _conversation_lock(state, row) if row.lock_token is not None else None
    return lock is not None and lock.token != row.lock_token


def release_for(tx: Tx, row: RequestRow) -> list[AnyEvent]:
    """The release of the lock taken with a request, if that request still holds it."""
    lock = _conversation_lock(tx.hook.state, row) if row.lock_token is not None else None
    if lock is None or lock.status != "held" or lock.token != row.lock_token:
        return []  # it lapsed and someone else may hold it now: not ours to release
    key = lock_key(tx.hook.state, lock.scope, lock.target)
    return [
        LockReleased(
            **key.fields(), holder=lock.holder, token=lock.token, request_id=row.request_id
        )
    ]
