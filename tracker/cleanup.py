"""Cleanup and recovery: abandon stuck requests, retire idle sessions, expire locks.

Candidates come from SQL over the projection tables (indexed), and each is
checked again against the cached rows of the running transaction, so a row
changed earlier in the same batch is judged on its current state. The capacity
rule counts sessions, so it flushes the batch's earlier changes to the tables
first (they commit together anyway).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from projections.requests import UNFINISHED, RequestRow
from tracker.clock import iso
from tracker.commands import fail_events
from tracker.events import AnyEvent, LockReleased, SessionExpired
from tracker.locking import Tx, expired, holds_live_lock, lock_key
from tracker.models import CleanupReport

STALE_REQUESTS = f"SELECT request_id FROM requests WHERE {UNFINISHED} AND created_at < ?"
OWNED_REQUESTS = f"SELECT request_id FROM requests WHERE {UNFINISHED} AND owner = ?"
# Active sessions no unfinished request and no held lock uses, least recently active first.
_UNUSED_SESSIONS = """
SELECT session_id FROM sessions
WHERE status = 'active' {idle}
  AND session_id NOT IN (SELECT session_id FROM requests
                         WHERE {unfinished} AND session_id IS NOT NULL)
  AND session_id NOT IN (SELECT resumed_session_id FROM requests
                         WHERE {unfinished} AND resumed_session_id IS NOT NULL)
  AND session_id NOT IN (SELECT target FROM locks WHERE scope = 'session' AND status = 'held')
ORDER BY last_activity, session_id"""
IDLE_SESSIONS = _UNUSED_SESSIONS.format(idle="AND last_activity < ?", unfinished=UNFINISHED)
LEAST_RECENT_SESSIONS = _UNUSED_SESSIONS.format(idle="", unfinished=UNFINISHED) + " LIMIT ?"
ACTIVE_SESSIONS = "SELECT count(*) FROM sessions WHERE status = 'active'"
EXPIRED_LOCKS = "SELECT scope, target FROM locks WHERE status = 'held' AND expires_at <= ?"


@dataclass(frozen=True, slots=True)
class Cleanup:
    """Fail requests older than ``stale_after`` (not one holding an unexpired lock), expire
    sessions idle for ``idle_for``, then the least recently active beyond ``max_sessions``
    active ones, and record locks past their TTL as expired."""

    idle_for: float | None
    stale_after: float | None
    expire_locks: bool
    dry_run: bool
    max_sessions: int | None = None

    def __call__(self, tx: Tx) -> CleanupReport:
        events: list[AnyEvent] = []
        requests = self._stale_requests(tx, events)
        sessions = self._idle_sessions(tx, events)
        over = self._over_capacity(tx, events, idle=sessions)
        locks = self._expired_locks(tx, events)
        if not self.dry_run:
            tx.append(events)
        return CleanupReport(
            dry_run=self.dry_run,
            abandoned_requests=requests,
            expired_sessions=sessions,
            expired_locks=locks,
            over_capacity_sessions=over,
        )

    def _stale_requests(self, tx: Tx, events: list[AnyEvent]) -> list[str]:
        """Requests older than ``stale_after``, but those holding an unexpired lock: one
        whose lock is being renewed (ClaudeRunner renews it) is running, not stuck."""
        if self.stale_after is None:
            return []
        cutoff = _before(tx, self.stale_after)
        reason = f"no outcome after {self.stale_after:g}s: abandoned by cleanup"
        return _abandon(tx, STALE_REQUESTS, cutoff, reason, events, spare=holds_live_lock)

    def _idle_sessions(self, tx: Tx, events: list[AnyEvent]) -> list[str]:
        if self.idle_for is None:
            return []
        cutoff, state, found = _before(tx, self.idle_for), tx.hook.state, []
        for (session_id,) in tx.conn.execute(IDLE_SESSIONS, (cutoff,)).fetchall():
            row = state.sessions.get(session_id)
            if row is not None and row.status == "active" and row.last_activity < cutoff:
                found.append(session_id)
                events.append(_expired(row.agent_id, session_id, "idle"))
        return found

    def _over_capacity(self, tx: Tx, events: list[AnyEvent], idle: list[str]) -> list[str]:
        """The least recently active unused sessions beyond ``max_sessions`` active ones
        (the ``idle`` ones this call already expires no longer count)."""
        if self.max_sessions is None:
            return []
        tx.hook.state.flush(tx.conn)  # count this batch's new and retired sessions too
        active = tx.conn.execute(ACTIVE_SESSIONS).fetchone()[0] - len(idle)
        if active <= self.max_sessions:
            return []
        state, excess, skip = tx.hook.state, active - self.max_sessions, set(idle)
        found: list[str] = []
        candidates = tx.conn.execute(LEAST_RECENT_SESSIONS, (excess + len(skip),)).fetchall()
        for (session_id,) in candidates:
            row = state.sessions.get(session_id)
            if row is not None and session_id not in skip and len(found) < excess:
                found.append(session_id)
                events.append(_expired(row.agent_id, session_id, "capacity"))
        return found

    def _expired_locks(self, tx: Tx, events: list[AnyEvent]) -> list[str]:
        if not self.expire_locks:
            return []
        state, found = tx.hook.state, []
        released = {(e.scope, e.target) for e in events if isinstance(e, LockReleased)}
        for scope, target in tx.conn.execute(EXPIRED_LOCKS, (tx.at,)).fetchall():
            row = state.locks.get((scope, target))
            if row is None or row.status != "held" or row.held_at(tx.at):
                continue
            if (scope, target) in released:
                continue  # its request was just abandoned, which releases it
            found.append(f"{scope}:{target}")
            events.append(expired(lock_key(state, scope, target), row))
        return found


@dataclass(frozen=True, slots=True)
class AbandonOwned:
    """Fail the requests a previous run of ``owner`` left unfinished."""

    owner: str

    def __call__(self, tx: Tx) -> list[str]:
        events: list[AnyEvent] = []
        reason = f"owner {self.owner!r} restarted before the request finished"
        found = _abandon(tx, OWNED_REQUESTS, self.owner, reason, events)
        tx.append(events)
        return found


def _abandon(
    tx: Tx,
    sql: str,
    param: str,
    reason: str,
    events: list[AnyEvent],
    spare: Callable[[Tx, RequestRow], bool] | None = None,
) -> list[str]:
    """Fail the unfinished requests ``sql`` finds but those ``spare`` keeps (checked
    again on the cached rows: one may have finished earlier in this batch)."""
    state, found = tx.hook.state, []
    for (request_id,) in tx.conn.execute(sql, (param,)).fetchall():
        row = state.requests.get(request_id)
        if row is None or row.finished or (spare is not None and spare(tx, row)):
            continue
        found.append(request_id)
        events.extend(fail_events(tx, row, reason, "abandoned"))
    return found


def _before(tx: Tx, age_s: float) -> str:
    return iso(tx.now - timedelta(seconds=age_s))


def _expired(agent_id: str | None, session_id: str, reason: str) -> SessionExpired:
    return SessionExpired(session_id=session_id, agent_id=agent_id, reason=reason)
