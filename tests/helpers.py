"""Helpers shared by tests: raw reads of the database file, subprocess runners."""

from __future__ import annotations

import inspect
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tracker import Tracker, db, logrow
from tracker.events import StoredEvent
from tracker.schema import EVENT_COLUMNS, SCHEMA_VERSION, schema_sql
from tracker.store import EventStore

ROOT = Path(__file__).resolve().parent.parent
Run = Callable[..., tuple[int, str, str]]  # the run fixture: (exit code, stdout, stderr)


def rows(
    path: Path, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()
) -> list[tuple[Any, ...]]:
    """Run a read query on the file with a plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


V4_LOG = (ROOT / "tests" / "fixtures" / "schema_v4_log.sql").read_text(encoding="utf-8")


V5_USAGE = (ROOT / "tests" / "fixtures" / "schema_v5_usage.sql").read_text(encoding="utf-8")
V5_TABLES = ("sessions", "usage_daily")


# What undoes what each schema version from 7 on added to the projections.
UNDO_VERSION = {
    7: "ALTER TABLE agents DROP COLUMN reset_seq",
    8: "ALTER TABLE requests DROP COLUMN superseded",
    9: "DROP INDEX usage_by_agent",
    10: "DROP INDEX sessions_retired",
}


def make_version(path: Path, version: int) -> None:
    """Give a file the projections schema ``version`` (6 or later) had: without what
    the versions after it added."""
    conn = sqlite3.connect(path, isolation_level=None)
    with db.immediate(conn):
        for later in range(version + 1, SCHEMA_VERSION + 1):
            conn.execute(UNDO_VERSION[later])
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def make_version_5(path: Path) -> None:
    """Give a file the projections schema version 5 had: that of version 6, with sessions
    and usage_daily without the count of requests that reported a duration, and the views
    on them of then."""
    make_version(path, 6)
    conn = sqlite3.connect(path, isolation_level=None)
    with db.immediate(conn):
        for (view,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'view'"):
            conn.execute(f"DROP VIEW {view}")  # schema.sql puts back those version 5 shares
        for table in V5_TABLES:
            conn.execute(f"ALTER TABLE {table} RENAME TO {table}_v6")
        for statement in db.statements(V5_USAGE):
            conn.execute(statement)
        for table in V5_TABLES:
            columns = [c for _, c, *_ in conn.execute(f"PRAGMA table_info({table})")]
            conn.execute(f"INSERT INTO {table} SELECT {', '.join(columns)} FROM {table}_v6")
            conn.execute(f"DROP TABLE {table}_v6")  # and its indexes: schema.sql remakes them
        for statement in db.statements(schema_sql()):
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
    conn.close()


def make_version_4(path: Path) -> None:
    """Give a file the event log schema version 4 had: the table events, with the type
    and time stored as text (and the ids the tracker mints as their 16 bytes)."""
    make_version_5(path)
    conn = sqlite3.connect(path, isolation_level=None)
    log = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq").fetchall()
    with db.immediate(conn):
        for name in ("VIEW lock_events", "VIEW events", "TABLE event_log"):
            conn.execute(f"DROP {name}")  # and the triggers and indexes on them
        for statement in db.statements(V4_LOG):
            conn.execute(statement)
        conn.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(row[0], logrow.stored_id(row[1]), *row[2:]) for row in log],
        )
        conn.execute("PRAGMA user_version = 4")
    conn.close()


async def durations_some_unreported(t: Tracker) -> None:
    """Agent a1's session S1 finishes four requests, two with a duration (1 s and 3 s);
    agent a2's one request fails before the CLI ran: it reported no duration."""
    for rid in ("r1", "r2", "r3", "r4"):
        await t.track_request(rid, agent_id="a1", session_id=None if rid == "r1" else "S1")
        await t.update_request_session(rid, "S1")
    await t.complete_request("r1", duration_ms=1000)
    await t.fail_request("r2", error="cli error", duration_ms=3000)
    await t.fail_request("r3", error="killed")
    await t.complete_request("r4")
    await t.track_request("r5", agent_id="a2")
    await t.fail_request("r5", error="no CLI", kind="cli_error")


def log_as_text(path: Path) -> list[tuple[Any, ...]]:
    """The log as the API shows it, from the table events of an older version or the
    view events."""
    log = rows(path, "SELECT * FROM events ORDER BY seq")
    return [(r[0], logrow.id_text(r[1]), *r[2:]) for r in log]


def event_count(path: Path) -> int:
    return int(rows(path, "SELECT count(*) FROM events")[0][0])


def tamper(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    """Change the file the way an attacker would: without the append-only triggers."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER IF EXISTS event_log_no_update")
        conn.execute("DROP TRIGGER IF EXISTS event_log_no_delete")
        conn.execute(sql, params)
    finally:
        conn.close()


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (another process on the same files)."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def readme_block(language: str, part: str) -> str:
    """The README's fenced ``language`` block holding ``part``."""
    blocks = [block.split("```")[0] for block in readme().split(f"```{language}\n")[1:]]
    return next(block for block in blocks if part in block)


def start_python(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a fresh interpreter, its output piped as text (``communicate``)."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_unprivileged(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that obeys file modes, even under root
    (which otherwise ignores them): without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH."""
    drop = "-dac_override,-dac_read_search"
    prefix = (
        ["setpriv", f"--inh-caps={drop}", f"--bounding-set={drop}"] if os.geteuid() == 0 else []
    )
    return subprocess.run(
        [*prefix, sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


async def check_acknowledged(db: Path, acks: list[list[str]]) -> None:
    """After workers were killed: the file opens, verifies, and holds every fact they
    printed as acknowledged ("T rid" tracked with a lock, "A rid sid" assigned, "C rid"
    completed, "F rid" failed; other lines are ignored); nothing is half-applied."""
    assert rows(db, "PRAGMA integrity_check") == [("ok",)]
    async with Tracker.open(db, create=False) as t:
        report = await t.verify()
        assert report.ok, report
        for kind, rid, *rest in (a for a in acks if a[0] in "TACF"):
            request = await t.get_request(rid)
            assert request is not None, f"acknowledged {kind} {rid} is lost"
            if kind == "A":
                assert request.session_id == rest[0]
            elif kind == "C":
                assert request.status == "completed"
            elif kind == "F":
                assert request.status == "failed"
    tracked_without_lock = rows(
        db,
        """
        SELECT request_id FROM events WHERE type = 'RequestTracked' EXCEPT
        SELECT request_id FROM events WHERE type = 'LockAcquired'""",
    )
    assert tracked_without_lock == []  # track+lock is one transaction
    finished_holding = rows(
        db,
        """
        SELECT r.request_id FROM requests r JOIN locks l ON l.token = r.lock_token
        WHERE r.status = 'completed' AND l.status = 'held'""",
    )
    assert finished_holding == []  # completion+release is one transaction


def beside(target: Path) -> list[str]:
    """The names of what is written beside ``target`` (tracker.scratch: dot files led by
    its name), sorted."""
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def public_calls() -> set[str]:
    """The names of Tracker's public coroutines and async generators: its calls (lock(),
    a context manager over acquire_lock, is not one)."""
    return {
        name
        for name, fn in inspect.getmembers(Tracker)
        if not name.startswith("_")
        and (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn))
    }


def count_commits(store: EventStore[Any], monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the store's transactions (one per batch) from now on: a one-item list."""
    commits, commit = [0], store._commit

    async def counting(batch: Any) -> None:
        commits[0] += 1
        await commit(batch)

    monkeypatch.setattr(store, "_commit", counting)
    return commits


async def first(events: AsyncIterator[StoredEvent]) -> StoredEvent | None:
    """The first event an ``events()`` iteration yields, or None."""
    async for event in events:
        return event
    return None


async def briefly(call: Awaitable[Any]) -> Any:
    """Run a call that goes on until cancelled (keep_lock) for a moment: it refuses bad
    arguments, or a closed tracker, before it first waits."""
    with anyio.move_on_after(0.01):
        return await call
    return None


# Every call of the API taking arguments, with arguments as a caller would give them, on
# a database where request r0 of agent a has session S0 (test_hostile gives each argument
# odd values; test_flows calls each on a closed tracker).
Kwargs = dict[str, Any]
EVERY_CALL: dict[str, tuple[Callable[..., Awaitable[Any]], Kwargs]] = {
    "track_request": (
        lambda t, **k: t.track_request(**k),
        {
            "request_id": "r",
            "agent_id": "a",
            "session_id": None,
            "lock": False,
            "lock_ttl": 30,
            "lock_wait": 0,
            "prompt": None,
            "metadata": None,
        },
    ),
    "update_request_session": (
        lambda t, **k: t.update_request_session(**k),
        {"request_id": "r0", "session_id": "S0"},
    ),
    "complete_request": (
        lambda t, **k: t.complete_request(**k),
        {
            "request_id": "r0",
            "response": None,
            "usage": None,
            "cost_usd": None,
            "duration_ms": None,
        },
    ),
    "fail_request": (
        lambda t, **k: t.fail_request(**k),
        {"request_id": "r0", "error": "e", "kind": "x"},
    ),
    "acquire_lock": (
        lambda t, **k: t.acquire_lock(**k),
        {"agent_id": "L", "holder": "h", "ttl": 30, "wait": 0},
    ),
    "renew_lock": (lambda t, **k: t.renew_lock(**k), {"agent_id": "L", "holder": "h", "ttl": 30}),
    "keep_lock": (
        lambda t, **k: briefly(t.keep_lock(**k)),
        {"agent_id": "L", "holder": "h", "ttl": 30},
    ),
    "release_lock": (lambda t, **k: t.release_lock(**k), {"agent_id": "L", "holder": "h"}),
    "get_lock": (lambda t, **k: t.get_lock(**k), {"agent_id": "L"}),
    "history": (lambda t, **k: t.history(**k), {"session_id": "S0"}),
    "update_session_metadata": (
        lambda t, **k: t.update_session_metadata(**k),
        {"session_id": "S0", "metadata": {"k": 1}},
    ),
    "expire_session": (lambda t, **k: t.expire_session(**k), {"session_id": "S0"}),
    "delete_session": (lambda t, **k: t.delete_session(**k), {"session_id": "S0"}),
    "reset_agent": (lambda t, **k: t.reset_agent(**k), {"agent_id": "a"}),
    "get_request": (lambda t, **k: t.get_request(**k), {"request_id": "r0"}),
    "in_flight": (
        lambda t, **k: t.in_flight(**k),
        {"agent_id": None, "owner": None, "limit": None},
    ),
    "get_session": (lambda t, **k: t.get_session(**k), {"session_id": "S0"}),
    "find_sessions": (lambda t, **k: t.find_sessions(**k), {"prefix": "S"}),
    "health": (lambda t, **k: t.health(**k), {"integrity": False}),
    "list_sessions": (
        lambda t, **k: t.list_sessions(**k),
        {"agent_id": "a", "status": "active", "before": "S0", "limit": 10},
    ),
    "seq_at": (lambda t, **k: t.seq_at(**k), {"moment": "2026-01-01T00:00:00Z"}),
    "list_agents": (lambda t, **k: t.list_agents(**k), {"after": "a", "limit": 10}),
    "get_agent": (lambda t, **k: t.get_agent(**k), {"agent_id": "a"}),
    "get_agent_session": (lambda t, **k: t.get_agent_session(**k), {"agent_id": "a"}),
    "get_chain": (lambda t, **k: t.get_chain(**k), {"agent_id": "a"}),
    "stats": (lambda t, **k: t.stats(**k), {"agent_id": None}),
    "usage_by": (lambda t, **k: t.usage_by(**k), {"by": "day", "agent_id": None, "limit": None}),
    "events": (
        lambda t, **k: first(t.events(**k)),
        {
            "since": 0,
            "until": None,
            "last": None,
            "agent_id": None,
            "session_id": None,
            "request_id": None,
            "types": (),
            "follow": False,
            "poll": 0.1,
        },
    ),
    "cleanup": (
        lambda t, **k: t.cleanup(**k),
        {
            "idle_for": None,
            "stale_after": None,
            "max_sessions": None,
            "expire_locks": True,
            "dry_run": False,
        },
    ),
}
