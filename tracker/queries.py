"""Reads: plain SQL over the projection tables, turned into result structs.

Each function takes a read-only sqlite3 connection and runs on the reader's
thread, so one API read costs one thread hop.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from projections.agents import AgentRow
from projections.locks import LockRow
from projections.requests import UNFINISHED, RequestRow
from projections.sessions import SessionRow
from projections.state import State
from tracker import db, logrow
from tracker.errors import UnknownSession
from tracker.events import Usage
from tracker.models import (
    Agent,
    Health,
    Lock,
    Request,
    Session,
    Stats,
    UsageGroup,
    agent_from_row,
    lock_from_row,
    request_from_row,
    session_from_row,
)
from tracker.store import Filter

_TABLES = State(1)
_BY_REQUEST = _TABLES.requests.select_sql + " WHERE request_id = ?"
_BY_SESSION = _TABLES.sessions.select_sql + " WHERE session_id = ?"
_CHAIN = _TABLES.sessions.select_sql + " WHERE agent_id = ? ORDER BY position"
_LOCK = _TABLES.locks.select_sql + " WHERE scope = ? AND target = ?"
_SESSION_ROWID = "SELECT rowid FROM sessions WHERE session_id = ?"
_SUMS = """coalesce(sum(requests), 0), coalesce(sum(completed), 0), coalesce(sum(failed), 0),
       coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
       coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0),
       coalesce(sum(cost_usd), 0.0), coalesce(sum(duration_ms), 0), coalesce(sum(timed), 0),
       coalesce(sum(lock_acquisitions), 0), coalesce(sum(lock_waits), 0),
       coalesce(sum(lock_wait_ms), 0), coalesce(sum(lock_expiries), 0)"""
# Everyone's sums, or an agent's (through usage_by_agent: "agent_id = :agent OR :agent IS
# NULL" would read every row).
_USAGE_SUMS = {
    False: f"SELECT {_SUMS} FROM usage_daily",
    True: f"SELECT {_SUMS} FROM usage_daily WHERE agent_id = :agent",
}
# Agents with their usage sums (their days through usage_by_agent), in the order of their
# ids: one agent, or a page ('' sorts before every id: none is empty).
_AGENTS_WITH_SUMS = f"""
SELECT {", ".join(f"a.{column}" for column in _TABLES.agents.columns)}, {_SUMS}
FROM agents a LEFT JOIN usage_daily u ON u.agent_id = a.agent_id
WHERE {{where}} GROUP BY a.agent_id ORDER BY a.agent_id"""
_AGENT = _AGENTS_WITH_SUMS.format(where="a.agent_id = :agent")
_AGENTS_AFTER = _AGENTS_WITH_SUMS.format(where="a.agent_id > :after") + " LIMIT :limit"
# Unfinished requests, oldest first, of an agent and an owner (NULL: any), at most a limit
# (-1: none). The requests_unfinished index finds them; the filters scan only those.
_IN_FLIGHT = (
    _TABLES.requests.select_sql
    + f""" WHERE {UNFINISHED}
    AND (:agent IS NULL OR agent_id = :agent) AND (:owner IS NULL OR owner = :owner)
    ORDER BY created_at, rowid LIMIT :limit"""
)
_UNFINISHED_BY_STATUS = f"""
SELECT status, count(*) FROM requests
WHERE {UNFINISHED} AND (:agent IS NULL OR agent_id = :agent) GROUP BY status"""


def request(conn: sqlite3.Connection, request_id: str) -> Request | None:
    row = conn.execute(_BY_REQUEST, (request_id,)).fetchone()
    return request_from_row(RequestRow(*row)) if row else None


def in_flight(
    conn: sqlite3.Connection, agent_id: str | None, owner: str | None, limit: int | None
) -> list[Request]:
    params = {"agent": agent_id, "owner": owner, "limit": -1 if limit is None else limit}
    rows = conn.execute(_IN_FLIGHT, params)
    return [request_from_row(RequestRow(*row)) for row in rows]


def agent_session(conn: sqlite3.Connection, agent_id: str) -> str | None:
    row = conn.execute(
        "SELECT current_session_id FROM agents WHERE agent_id = ?", (agent_id,)
    ).fetchone()
    return row[0] if row else None


def lock(conn: sqlite3.Connection, scope: str, target: str) -> Lock | None:
    row = conn.execute(_LOCK, (scope, target)).fetchone()
    return lock_from_row(LockRow(*row)) if row else None


def session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(_BY_SESSION, (session_id,)).fetchone()
    if row is None:
        return None
    found = SessionRow(*row)
    return session_from_row(found, _session_lock(conn, found))


def _page_sql(of_agent: bool, paged: bool, retired: bool) -> str:
    """Sessions newest first, filtered. A filter is written only when given, so that an
    agent's are read through sessions_by_agent and a page starts at its rowid ("agent_id
    = :agent OR :agent IS NULL" would scan from the newest session down: 14 ms on W4's
    104,000 sessions, 0.1 ms so). Expired or deleted ones of every agent (``retired``)
    are read through sessions_retired, whose WHERE the query repeats so SQLite takes it."""
    terms = ["(:status IS NULL OR status = :status)"]
    if retired:
        terms = ["status = :status AND status != 'active'"]
    if of_agent:
        terms.append("agent_id = :agent")
    if paged:
        terms.append("rowid < :before")
    where = " AND ".join(terms)
    return f"{_TABLES.sessions.select_sql} WHERE {where} ORDER BY rowid DESC LIMIT :limit"


_PAGES = {
    (of_agent, paged, retired): _page_sql(of_agent, paged, retired)
    for of_agent in (False, True)
    for paged in (False, True)
    for retired in (False, True)
}


def known_session(conn: sqlite3.Connection, session_id: str) -> bool:
    return _session_rowid(conn, session_id) is not None


def _session_rowid(conn: sqlite3.Connection, session_id: str) -> int | None:
    found = conn.execute(_SESSION_ROWID, (session_id,)).fetchone()
    return None if found is None else int(found[0])


def sessions_page(
    conn: sqlite3.Connection,
    agent_id: str | None,
    status: str | None,
    before: str | None,
    limit: int,
) -> list[Session]:
    """Up to ``limit`` sessions, the newest first (by when the CLI first reported them),
    of an agent and a status (None: any), first seen before session ``before`` (None:
    from the newest): the next page starts before the last one given."""
    start = None if before is None else _session_rowid(conn, before)
    if before is not None and start is None:
        raise UnknownSession(f"no session {before!r} to list the sessions before")
    params = {"agent": agent_id, "status": status, "before": start, "limit": limit}
    retired = agent_id is None and status not in (None, "active")
    rows = conn.execute(_PAGES[agent_id is not None, before is not None, retired], params)
    return [session_from_row(SessionRow(*row)) for row in rows]


def session_ids_from(conn: sqlite3.Connection, prefix: str, limit: int) -> list[str]:
    """Up to ``limit`` session ids starting with ``prefix``, in order (an index range)."""
    sql = (
        "SELECT session_id FROM sessions WHERE session_id >= :prefix "
        "AND session_id < :prefix || char(1114111) ORDER BY session_id LIMIT :limit"
    )
    return [found for (found,) in conn.execute(sql, {"prefix": prefix, "limit": limit})]


def _session_lock(conn: sqlite3.Connection, row: SessionRow) -> Lock | None:
    """The held lock on a session: its own, or its agent's if it is the agent's current one."""
    own = lock(conn, "session", row.session_id)
    if own is not None and own.status == "held":
        return own
    if row.agent_id is None or agent_session(conn, row.agent_id) != row.session_id:
        return None
    agents = lock(conn, "agent", row.agent_id)
    return agents if agents is not None and agents.status == "held" else None


def chain(conn: sqlite3.Connection, agent_id: str) -> list[Session]:
    return [session_from_row(SessionRow(*r)) for r in conn.execute(_CHAIN, (agent_id,))]


def agent(conn: sqlite3.Connection, agent_id: str) -> Agent | None:
    row = conn.execute(_AGENT, {"agent": agent_id}).fetchone()
    return None if row is None else _agent(row)


def agents_page(conn: sqlite3.Connection, after: str | None, limit: int) -> list[Agent]:
    """Up to ``limit`` agents in the order of their ids, those after ``after`` (None: from
    the first; it need not be an agent's): the next page starts after the last one given."""
    return [
        _agent(row) for row in conn.execute(_AGENTS_AFTER, {"after": after or "", "limit": limit})
    ]


_AGENT_FIELDS = len(_TABLES.agents.columns)


def _agent(row: Sequence[Any]) -> Agent:
    """An agent from a row of _AGENTS_WITH_SUMS: its columns, then its usage sums."""
    sums = row[_AGENT_FIELDS:]
    totals = Usage(
        input_tokens=sums[3],
        output_tokens=sums[4],
        cache_read_tokens=sums[5],
        cache_write_tokens=sums[6],
    )
    return agent_from_row(AgentRow(*row[:_AGENT_FIELDS]), totals, sums[1], sums[2], sums[7])


def stats(conn: sqlite3.Connection, agent_id: str | None) -> Stats:
    (
        requests,
        completed,
        failed,
        input_tokens,
        output_tokens,
        cache_read,
        cache_write,
        cost,
        duration,
        timed,
        acquisitions,
        waits,
        wait_ms,
        expiries,
    ) = conn.execute(_USAGE_SUMS[agent_id is not None], {"agent": agent_id}).fetchone()
    unfinished = dict(conn.execute(_UNFINISHED_BY_STATUS, {"agent": agent_id}).fetchall())
    return Stats(
        agents=_count(conn, "agents", agent_id),
        sessions=_count(conn, "sessions", agent_id),
        requests=requests,
        pending=unfinished.get("pending", 0),
        active=unfinished.get("active", 0),
        completed=completed,
        failed=failed,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cost_usd=round(cost, 9),
        duration_ms=duration,
        timed_requests=timed,
        avg_duration_ms=_ratio(duration, timed),
        failure_rate=_ratio(failed, completed + failed),
        lock_acquisitions=acquisitions,
        lock_waits=waits,
        lock_wait_ms=wait_ms,
        lock_expiries=expiries,
        events=_event_count(conn, agent_id),
    )


def _ratio(part: float, whole: int) -> float | None:
    """``part / whole``, None when there is nothing to divide by (no finished request)."""
    return part / whole if whole else None


def _event_count(conn: sqlite3.Connection, agent_id: str | None) -> int:
    if agent_id is None:  # seq is gapless
        return db.last_seq(conn)
    return int(conn.execute(*Filter(agent_id=agent_id).select_count()).fetchone()[0])


# :limit (-1: none): with one, the latest days, still shown in order
_GROUPS = {
    "day": "SELECT * FROM (SELECT day, {sums} FROM usage_daily {where} GROUP BY day "
    "ORDER BY day DESC LIMIT :limit) ORDER BY day",
    "agent": "SELECT agent_id, {sums} FROM usage_daily {where} GROUP BY agent_id "
    "ORDER BY sum(cost_usd) DESC, agent_id LIMIT :limit",
}
_SUMS = (
    "sum(requests), sum(completed), sum(failed), sum(input_tokens), sum(output_tokens), "
    "sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_usd), sum(duration_ms), sum(timed)"
)
_USAGE_BY_SESSION = """
SELECT session_id, request_count, completed, failed, input_tokens, output_tokens,
       cache_read_tokens, cache_write_tokens, cost_usd, duration_ms, timed
FROM sessions WHERE :agent IS NULL OR agent_id = :agent ORDER BY cost_usd DESC, session_id
LIMIT :limit"""


def usage_by(
    conn: sqlite3.Connection, by: str, agent_id: str | None, limit: int | None = None
) -> list[UsageGroup]:
    """Usage grouped by UTC day, agent or session, most expensive first (days in order);
    ``limit``: at most that many groups (the most expensive, or the latest days)."""
    params = {"agent": agent_id, "limit": -1 if limit is None else limit}
    if by == "session":
        found = conn.execute(_USAGE_BY_SESSION, params).fetchall()
    else:
        where = "WHERE agent_id = :agent" if agent_id is not None else "WHERE :agent IS NULL"
        found = conn.execute(_GROUPS[by].format(sums=_SUMS, where=where), params).fetchall()
    return [_group(*row) for row in found]


def _group(
    key: str,
    requests: int,
    completed: int,
    failed: int,
    input_tokens: int,
    output_tokens: int,
    cache_read: int,
    cache_write: int,
    cost: float,
    duration: int,
    timed: int,
) -> UsageGroup:
    return UsageGroup(
        key=key or "(no agent)",
        requests=requests,
        completed=completed,
        failed=failed,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cost_usd=round(cost, 9),
        duration_ms=duration,
        timed_requests=timed,
        avg_duration_ms=_ratio(duration, timed),
        failure_rate=_ratio(failed, completed + failed),
    )


def _count(conn: sqlite3.Connection, table: str, agent_id: str | None) -> int:
    if agent_id is None:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    sql = f"SELECT count(*) FROM {table} WHERE agent_id = ?"
    return int(conn.execute(sql, (agent_id,)).fetchone()[0])


def seq_at(conn: sqlite3.Connection, moment: str) -> int:
    """The seq of the last event at or before ``moment`` (stored-time text), 0 if none.

    The log's seqs run from 1 without gaps and its times never go backwards, so a
    binary search finds it in about 20 point reads of a million events, no scan.
    """
    low, high = 0, db.last_seq(conn)
    while low < high:  # at(low) <= moment (seq 0: before everything) < at(high + 1)
        middle = (low + high + 1) // 2
        stored = conn.execute("SELECT at FROM event_log WHERE seq = ?", (middle,)).fetchone()[0]
        if logrow.at_text(stored) <= moment:
            low = middle
        else:
            high = middle - 1
    return int(low)


def health(conn: sqlite3.Connection, path: Path, durability: str, integrity: bool) -> Health:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    checked = conn.execute("PRAGMA quick_check").fetchone()[0] if integrity else None
    events = db.last_seq(conn)
    projected = db.projected_seq(conn)
    file_bytes, wal_bytes = _size(path), _size(Path(f"{path}-wal"))
    return Health(
        ok=checked in ("ok", None) and projected == events,
        path=str(path),
        schema_version=version,
        integrity=checked,
        events=events,
        projection_seq=projected,
        lag=events - projected,
        file_bytes=file_bytes,
        wal_bytes=wal_bytes,
        bytes_per_event=round((file_bytes + wal_bytes) / events, 1) if events else None,
        durability=durability,
    )


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0
