"""schema.sql: shipped in the wheel, pinned for analysts, versioned."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.helpers import (
    ROOT,
    durations_some_unreported,
    log_as_text,
    make_version,
    make_version_4,
    make_version_5,
    readme,
    readme_block,
    rows,
    run_unprivileged,
)
from tracker import Tracker, chain, cleanup, codec, logrow, queries
from tracker.clock import ManualClock, iso
from tracker.events import KEYS as EVENT_KEYS
from tracker.events import AnyEvent, LockEvent
from tracker.schema import EVENT_COLUMNS, SCHEMA_VERSION, schema_sql

LOG_COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")]
# Analysts query these: renaming or dropping a column breaks their SQL.
PINNED: dict[str, list[str]] = {
    "events": LOG_COLUMNS,
    "event_log": LOG_COLUMNS,
    "checkpoints": ["projection", "seq"],
    "requests": [
        "request_id",
        "agent_id",
        "resumed_session_id",
        "session_id",
        "superseded",
        "status",
        "owner",
        "created_at",
        "assigned_at",
        "finished_at",
        "error",
        "error_kind",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "metadata",
        "lock_token",
        "track_digest",
        "finish_digest",
        "last_seq",
    ],
    "sessions": [
        "session_id",
        "agent_id",
        "parent_session_id",
        "position",
        "status",
        "status_reason",
        "first_seen",
        "last_activity",
        "request_count",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "timed",
        "metadata",
        "last_seq",
    ],
    "agents": [
        "agent_id",
        "current_session_id",
        "chain_length",
        "request_count",
        "resets",
        "first_seen",
        "last_activity",
        "last_seq",
        "reset_seq",
    ],
    "locks": [
        "scope",
        "target",
        "holder",
        "token",
        "status",
        "acquired_at",
        "expires_at",
        "ended_at",
        "request_id",
        "last_seq",
    ],
    "usage_daily": [
        "day",
        "agent_id",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "timed",
        "lock_acquisitions",
        "lock_waits",
        "lock_wait_ms",
        "lock_expiries",
    ],
    "current_agent_sessions": [
        "agent_id",
        "session_id",
        "first_seen",
        "last_activity",
        "request_count",
        "chain_length",
        "agent_requests",
    ],
    "session_chains": [
        "session_id",
        "agent_id",
        "parent_session_id",
        "root_session_id",
        "depth",
        "position",
        "status",
    ],
    "agent_usage": [
        "agent_id",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "avg_duration_ms",
        "failure_rate",
        "lock_acquisitions",
        "lock_waits",
        "lock_expiries",
    ],
    "daily_usage": [
        "day",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "avg_duration_ms",
        "failure_rate",
    ],
    "stale_requests": [
        "request_id",
        "agent_id",
        "session_id",
        "status",
        "owner",
        "created_at",
        "age_seconds",
    ],
    "idle_sessions": ["session_id", "agent_id", "last_activity", "request_count", "idle_seconds"],
    "request_latency": ["agent_id", "bucket", "requests", "min_ms", "max_ms", "avg_ms"],
    "lock_events": [
        "seq",
        "at",
        "type",
        "scope",
        "target",
        "holder",
        "token",
        "expires_at",
        "request_id",
        "agent_id",
    ],
    "lock_contention": ["agent_id", "acquisitions", "waits", "wait_rate", "wait_ms", "expiries"],
    "expired_locks": [
        "scope",
        "target",
        "holder",
        "token",
        "acquired_at",
        "expires_at",
        "overdue_seconds",
    ],
}


async def test_tables_and_views_are_pinned(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass
    names = {
        n
        for (n,) in rows(
            db_path,
            "SELECT name FROM sqlite_master WHERE type IN "
            "('table', 'view') AND name NOT LIKE 'sqlite_%'",
        )
    }
    assert names == set(PINNED)
    for name, columns in PINNED.items():
        assert [r[1] for r in rows(db_path, f"PRAGMA table_info({name})")] == columns, name


async def test_the_schema_has_a_version(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert f"PRAGMA user_version = {SCHEMA_VERSION};" in schema_sql()


KEYS = ("request", "agent", "session")


def make_version_1(path: Path) -> None:
    """Give a file the layout schema version 1 had where version 2 differs (the view
    stands in for its older text)."""
    make_version_4(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for key in KEYS:
        conn.execute(f"DROP INDEX events_by_{key}")
        conn.execute(f"CREATE INDEX events_by_{key} ON events({key}_id) WHERE {key}_id IS NOT NULL")
    conn.execute("DROP INDEX sessions_by_parent")
    conn.execute("CREATE INDEX sessions_by_parent ON sessions(parent_session_id)")
    conn.execute("DROP VIEW session_chains")  # version 1 joined on the parent alone
    conn.execute("CREATE VIEW session_chains AS SELECT session_id FROM sessions")
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def layout(path: Path) -> list[tuple[Any, ...]]:
    return rows(path, "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")


async def assert_like_a_new_file(old: Path) -> None:
    """An upgraded file has this schema version and exactly the layout of a new file."""
    new = old.with_name("new.db")
    async with Tracker.open(new):
        pass
    assert layout(old) == layout(new)
    assert rows(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def track_one(t: Tracker, request_id: str) -> None:
    await t.track_request(request_id, agent_id="a1", lock=True)
    await t.update_request_session(request_id, f"s-{request_id}")
    await t.complete_request(request_id)


async def test_a_version_1_file_is_upgraded_at_open_keeping_its_log(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
    make_version_1(old)
    log = log_as_text(old)
    async with Tracker.open(old) as t:
        assert [e.seq async for e in t.events(agent_id="a1")] == [e[0] for e in log]
        await track_one(t, "r2")
        assert (await t.verify()).ok
    await assert_like_a_new_file(old)
    assert log_as_text(old)[: len(log)] == log


async def test_a_version_5_file_counts_the_requests_that_reported_a_duration(
    tmp_path: Path,
) -> None:
    old, clock = tmp_path / "old.db", ManualClock()

    async def figures(t: Tracker) -> list[Any]:
        return [await t.stats(), *[await t.usage_by(by) for by in ("day", "agent", "session")]]

    async with Tracker.open(old, clock=clock) as t:
        await durations_some_unreported(t)
        clock.advance(86400)  # a second day, and a request without an agent
        await t.track_request("r6")
        await t.update_request_session("r6", "S6")
        await t.complete_request("r6", duration_ms=500)
        before = await figures(t)
    make_version_5(old)
    assert "timed" not in str(rows(old, "PRAGMA table_info(sessions)"))
    async with Tracker.open(old) as t:
        assert await figures(t) == before
        assert (await t.verify()).ok
    await assert_like_a_new_file(old)


async def test_a_version_6_file_learns_when_its_agents_were_reset(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
        await t.track_request("late", agent_id="a1", session_id="s-r1")  # still running...
        await t.reset_agent("a1")  # ...when the agent starts over
        await t.track_request("r2", agent_id="a2")
    make_version(old, 6)
    assert "reset_seq" not in str(rows(old, "PRAGMA table_info(agents)"))
    async with Tracker.open(old) as t:
        assert (await t.verify()).ok  # the seq the upgrade found is the one a replay sets
        await t.update_request_session("late", "s-late")  # the answer, after the reset
        assert await t.get_agent_session("a1") is None  # the agent still starts over
        assert (await t.verify()).ok
    assert rows(old, "SELECT agent_id, reset_seq IS NOT NULL FROM agents ORDER BY 1") == [
        ("a1", 1),
        ("a2", 0),
    ]
    await assert_like_a_new_file(old)


async def test_a_version_7_file_learns_which_answers_were_superseded(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
        await t.track_request("late", agent_id="a1", session_id="s-r1")
        await t.reset_agent("a1")
        await t.update_request_session("late", "s-late")  # after the reset: superseded
        await t.track_request("r2", agent_id="a1")
        await t.update_request_session("r2", "s-r2")
        await t.track_request("open", agent_id="a1", session_id="s-r2")  # no answer yet
    make_version(old, 7)
    assert "superseded" not in str(rows(old, "PRAGMA table_info(requests)"))
    async with Tracker.open(old) as t:
        assert (await t.verify()).ok  # what the upgrade found is what a replay sets
        flags = [(r.request_id, r.superseded) for r in await t.in_flight(agent_id="a1")]
        assert flags == [("late", True), ("r2", False), ("open", False)]
        await t.reset_agent("a1")
        assert (await t.update_request_session("open", "s-open")).superseded
        assert (await t.verify()).ok
    assert rows(old, "SELECT request_id, superseded FROM requests ORDER BY rowid") == [
        ("r1", 0),
        ("late", 1),
        ("r2", 0),
        ("open", 1),
    ]
    await assert_like_a_new_file(old)


async def test_a_version_8_file_gets_the_index_of_usage_by_agent(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
    make_version(old, 8)
    assert "usage_by_agent" not in plan_of(old, queries._USAGE_SUMS[True], {"agent": "a1"})
    async with Tracker.open(old) as t:
        assert (await t.verify()).ok
    await assert_like_a_new_file(old)


async def test_an_agents_usage_is_read_through_its_index(db_path: Path) -> None:
    """get_agent, stats(agent) and a page of agents read an agent's days, not every
    agent's (0.38 ms a get_agent on W4's 4,000 rows, 0.05 ms so; linear in the days
    times the agents)."""
    async with Tracker.open(db_path):
        pass
    by_agent = "USING INDEX usage_by_agent (agent_id=?)"
    assert by_agent in plan_of(db_path, queries._USAGE_SUMS[True], {"agent": "a1"})
    assert by_agent in plan_of(db_path, queries._AGENT, {"agent": "a1"})
    assert by_agent in plan_of(db_path, queries._AGENTS_AFTER, {"after": "", "limit": 9})


async def test_a_version_9_file_gets_the_index_of_retired_sessions(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
    make_version(old, 9)
    retired = queries._PAGES[False, False, True]
    assert "sessions_retired" not in plan_of(old, retired, {"status": "deleted", "limit": 9})
    async with Tracker.open(old) as t:
        assert (await t.verify()).ok
    await assert_like_a_new_file(old)


async def test_expired_and_deleted_sessions_are_read_through_their_index(db_path: Path) -> None:
    """A page of a status few sessions have read every session without it (18 ms on W4's
    104,000 sessions, 0.08 ms so); an agent's are read through sessions_by_agent."""
    async with Tracker.open(db_path) as t:
        await track_one(t, "r1")
    params = {"status": "deleted", "before": 9, "agent": "a1", "limit": 9}
    for paged in (False, True):
        plan = plan_of(db_path, queries._PAGES[False, paged, True], params)
        assert "USING INDEX sessions_retired (status=?" in plan, plan
    assert "sessions_by_agent" in plan_of(db_path, queries._PAGES[True, False, False], params)


# How an older schema version stored an event: from its stored payload and the event
# it decodes to, the payload that version wrote.
OldPayload = Callable[[str, AnyEvent], bytes]
Log = list[tuple[Any, ...]]


def rewrite_log(path: Path, version: int, old_payload: OldPayload) -> None:
    """Give every event of ``path`` the form schema ``version`` wrote (as before schema
    4: ids as text, lock events of payload version 1; and ``old_payload``), recompute the
    hash chain, and mark the file with that version."""
    make_version_4(path)
    conn = sqlite3.connect(path, isolation_level=None)
    log = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq").fetchall()
    conn.execute("DROP TRIGGER events_no_update")  # schema.sql puts it back at the upgrade
    prev = chain.GENESIS
    for seq, id_, type_, stored_version, at, rid, aid, sid, stored, _ in log:
        event = codec.decode(type_, stored_version, stored, (rid, aid, sid))
        payload, event_id = old_payload(stored, event), logrow.id_text(id_)
        old_version = 1 if isinstance(event, LockEvent) else stored_version
        prev = chain.link(prev, seq, event_id, type_, old_version, at, (rid, aid, sid), payload)
        conn.execute(
            "UPDATE events SET id = ?, version = ?, payload = ?, hash = ? WHERE seq = ?",
            (event_id, old_version, payload.decode(), prev, seq),
        )
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def version_2_payload(stored: str, event: AnyEvent) -> bytes:
    """Schema 2 stored the whole tagged event, keys included."""
    return msgspec.json.encode(event)


def version_3_payload(stored: str, event: AnyEvent) -> bytes:
    """Schema 3 left out the tag and keys, but kept a lock event's scope, target and
    holder."""
    if not isinstance(event, LockEvent):
        return stored.encode()
    fields = msgspec.to_builtins(event)
    return msgspec.json.encode({k: v for k, v in fields.items() if k not in ("type", *EVENT_KEYS)})


async def upgrade_and_use(tmp_path: Path, version: int, old_payload: OldPayload) -> tuple[Log, Log]:
    """Write a request, rewrite the log as schema ``version`` had it, then open the file
    (the upgrade), read it, write a request more, verify and rebuild; return the rows
    the old version left and those written after the upgrade."""
    old = tmp_path / "old.db"
    async with Tracker.open(old) as t:
        await track_one(t, "r1")
        events = [(e.id, e.event) async for e in t.events()]
    rewrite_log(old, version, old_payload)
    log = log_as_text(old)
    async with Tracker.open(old) as t:
        assert [(e.id, e.event) async for e in t.events()] == events
        assert [(e.id, e.event) async for e in t.events(agent_id="a1")] == events
        await track_one(t, "r2")
        assert (await t.verify()).ok  # the chain over both forms, and a replay of both
        assert (await t.rebuild()).events == 2 * len(log)
    await assert_like_a_new_file(old)
    assert log_as_text(old)[: len(log)] == log  # the same events, as the API shows them
    stored = rows(old, "SELECT * FROM event_log ORDER BY seq")
    assert all(isinstance(row[2], int) and isinstance(row[4], int) for row in stored)
    return stored[: len(log)], stored[len(log) :]


async def test_a_version_2_file_keeps_its_tagged_payloads_and_still_replays(
    tmp_path: Path,
) -> None:
    old, new = await upgrade_and_use(tmp_path, 2, version_2_payload)
    assert all(row[8].startswith('{"type":') for row in old)
    assert not any(row[8].startswith('{"type":') for row in new)


async def test_a_version_3_file_keeps_its_text_ids_and_whole_lock_payloads(
    tmp_path: Path,
) -> None:
    old, new = await upgrade_and_use(tmp_path, 3, version_3_payload)
    assert all(isinstance(row[1], str) for row in old)
    assert [row[3] for row in old if '"holder":"r1"' in row[8]] == [1, 1]  # payload version 1
    assert all(isinstance(row[1], bytes) for row in new)
    assert not any('"holder"' in row[8] for row in new)
    assert {row[3] for row in new if logrow.type_text(row[2]).startswith("Lock")} == {2}


async def test_a_version_4_file_keeps_a_time_it_cannot_store_as_microseconds_as_text(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    async with Tracker.open(path) as t:
        await track_one(t, "r1")
    make_version_4(path)
    last = rows(path, f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT 1")[0]
    seq, id_, type_, version, at, rid, aid, sid, payload, _ = last
    odd = at[:19] + "Z"  # no microseconds: not the fixed-width form
    before = rows(path, "SELECT hash FROM events WHERE seq = ?", (seq - 1,))[0][0]
    digest = chain.link(
        before, seq, logrow.id_text(id_), type_, version, odd, (rid, aid, sid), payload.encode()
    )
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER events_no_update")
    conn.execute("UPDATE events SET at = ?, hash = ? WHERE seq = ?", (odd, digest, seq))
    conn.close()
    log = log_as_text(path)
    async with Tracker.open(path) as t:
        await t.rebuild()  # the projections had the time before it was changed
        assert (await t.verify()).ok
        assert [e.seq async for e in t.events()] == [row[0] for row in log]
    assert log_as_text(path) == log
    stored = rows(path, "SELECT seq, at FROM event_log ORDER BY seq")
    assert stored[-1] == (seq, odd)
    assert all(isinstance(at, int) for _, at in stored[:-1])


UPGRADE_CHILD = """
import sys, anyio
from tracker import Tracker, ReadOnlyDatabase
async def main():
    try:
        async with Tracker.open(sys.argv[1], create=False):
            pass
    except ReadOnlyDatabase as exc:
        print("ReadOnlyDatabase:", exc)
anyio.run(main)
"""


async def test_a_version_1_file_that_cannot_be_written_says_why(db_path: Path) -> None:
    async with Tracker.open(db_path) as t:
        await track_one(t, "r1")
    make_version_1(db_path)
    before = layout(db_path)
    db_path.chmod(0o444)  # readable, in a writable folder: only the upgrade fails
    done = run_unprivileged(UPGRADE_CHILD, str(db_path))
    assert "ReadOnlyDatabase" in done.stdout, done
    assert "upgrading it to" in done.stdout, done
    assert layout(db_path) == before
    assert rows(db_path, "PRAGMA user_version") == [(1,)]


async def test_the_readme_way_to_read_a_payload_with_json_extract(db_path: Path) -> None:
    assert "json_extract(payload, '$.usage.input_tokens')" in readme()
    async with Tracker.open(db_path) as t:
        await t.track_request("r1", agent_id="a1", lock=False)
        await t.update_request_session("r1", "s1")
        await t.complete_request("r1", usage={"input_tokens": 1200}, cost_usd=0.01)
    sql = (
        "SELECT request_id, json_extract(payload, '$.usage.input_tokens'), "
        "json_extract(payload, '$.request_id'), json_extract(payload, '$.type') "
        "FROM events WHERE type = 'RequestCompleted'"
    )
    assert rows(db_path, sql) == [("r1", 1200, None, None)]  # keys and type: the columns


async def test_the_view_events_shows_the_envelope_as_the_api_does(db_path: Path) -> None:
    assert "the view shows them as the\nAPI does" in readme()
    async with Tracker.open(db_path) as t:
        await track_one(t, "r1")
        shown = [(e.seq, e.id, e.type, iso(e.at)) async for e in t.events()]
    assert rows(db_path, "SELECT seq, id, type, at FROM events ORDER BY seq") == shown


async def test_the_readme_way_to_filter_the_log_by_time_counts_what_the_view_does(
    db_path: Path, clock: ManualClock
) -> None:
    sql = readme_block("sql", "strftime('%s'")
    async with Tracker.open(db_path, clock=clock) as t:
        for k in range(4):
            await track_one(t, f"r{k}")
            clock.advance(60)
    start = clock.now() - timedelta(minutes=2, seconds=30)  # the last two requests
    moment = start.strftime("%Y-%m-%dT%H:%M:%S")
    fast = rows(db_path, sql.replace("2026-11-21T11:09", moment))
    assert fast == rows(db_path, "SELECT count(*) FROM events WHERE at >= ?", (moment,))
    assert fast == [(2 * 5,)]  # tracked, locked, assigned, completed, released


async def test_the_readme_way_to_read_the_log_by_key_seeks_the_index(db_path: Path) -> None:
    sql = readme_block("sql", "WITH RECURSIVE b(n)")
    async with Tracker.open(db_path) as t:
        for k in range(3):
            await track_one(t, f"r{k}")
    plan = plan_of(db_path, sql)
    conn = sqlite3.connect(db_path)
    assert "SEARCH event_log USING INDEX events_by_agent (<expr>=? AND agent_id=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
    by_key = conn.execute(sql.replace("'agent-03'", "'a1'")).fetchall()
    plain = "SELECT seq, type, at, payload FROM events WHERE agent_id = 'a1' ORDER BY seq"
    assert by_key == conn.execute(plain).fetchall()
    assert len(by_key) > 3
    conn.close()


@pytest.mark.parametrize(
    ("sql", "params", "index"),
    [
        (cleanup.STALE_REQUESTS, ("2030-01-01",), "requests_unfinished"),
        (cleanup.OWNED_REQUESTS, ("orch-1",), "requests_by_owner"),
        (queries._IN_FLIGHT, {"agent": None, "owner": None, "limit": -1}, "requests_unfinished"),
    ],
)
async def test_unfinished_requests_are_read_through_their_partial_indexes(
    db_path: Path, sql: str, params: tuple[object, ...] | dict[str, object], index: str
) -> None:
    async with Tracker.open(db_path):
        pass
    plan = plan_of(db_path, sql, params)
    assert f"USING INDEX {index} " in plan, plan  # UNFINISHED is the indexes' WHERE


CHAIN_TURNS = [  # request, agent, resumed session, the session the CLI answers with
    ("r1", "a1", None, "s1"),
    ("r2", "a1", "s1", "s2"),
    ("r3", "a1", "s1", "s3"),  # a fork: s1 resumed twice
    ("r4", "a1", "s2", "s2"),  # the same id again: no new session
    ("r5", "a2", "pre", "s5"),  # resumes a session from before the tracker
    ("r6", None, None, "s6"),  # no agent: chained by session
    ("r7", None, "s6", "s7"),
    ("r8", "a3", "x", "s8"),  # x is unknown now, and becomes a4's session later
    ("r9", "a4", None, "x"),
]


async def chained(path: Path) -> None:
    """A database holding CHAIN_TURNS."""
    async with Tracker.open(path) as t:
        for request_id, agent, resumed, answer in CHAIN_TURNS:
            await t.track_request(request_id, agent_id=agent, session_id=resumed, lock=False)
            await t.update_request_session(request_id, answer)
            await t.complete_request(request_id)


async def test_session_chains_roots_forks_and_depths(db_path: Path) -> None:
    await chained(db_path)
    chains = rows(
        db_path,
        "SELECT session_id, agent_id, parent_session_id, root_session_id, depth "
        "FROM session_chains ORDER BY session_id",
    )
    assert chains == [
        ("s1", "a1", None, "s1", 0),
        ("s2", "a1", "s1", "s1", 1),
        ("s3", "a1", "s1", "s1", 1),
        ("s5", "a2", "pre", "s5", 0),
        ("s6", None, None, "s6", 0),
        ("s7", None, "s6", "s6", 1),
        ("s8", "a3", "x", "s8", 0),  # its parent is another agent's: a root of a3's chain
        ("x", "a4", None, "x", 0),
    ]


def test_the_package_reads_the_top_level_schema() -> None:
    assert schema_sql() == (ROOT / "schema.sql").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_built_wheel_ships_every_module_and_schema_sql(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("tracker/schema.sql").decode()
        names = set(archive.namelist())
    assert "tracker/py.typed" in names
    assert shipped == (ROOT / "schema.sql").read_text(encoding="utf-8")
    modules = {
        str(found.relative_to(ROOT))
        for package in ("tracker", "projections")
        for found in (ROOT / package).rglob("*.py")
    }
    assert {"tracker/cli/__init__.py", "tracker/web/app.py"} <= modules
    assert modules - names == set()  # subpackages included (the CLI's among them)


async def test_the_readme_way_to_read_one_agents_chain_is_the_views_rows_by_index(
    db_path: Path,
) -> None:
    sql = readme_block("sql", "FROM chain c JOIN sessions s")
    await chained(db_path)
    view = (
        "SELECT session_id, parent_session_id, root_session_id, depth, position, status "
        "FROM session_chains WHERE agent_id = ? ORDER BY position"
    )
    for agent in ("a1", "a2", "a3", "a4", "nobody"):
        one = rows(db_path, sql.replace("'agent-03'", f"'{agent}'"))
        assert one == rows(db_path, view, (agent,)), agent
    assert [r[0] for r in rows(db_path, sql.replace("'agent-03'", "'a1'"))] == ["s1", "s2", "s3"]
    plan = plan_of(db_path, sql)
    assert "SEARCH s USING INDEX sessions_by_agent (agent_id=?)" in plan, plan
    assert "SEARCH s USING INDEX sessions_by_parent (agent_id=? AND" in plan, plan
    scans = [step for step in plan.split(" | ") if step.startswith("SCAN")]
    assert scans == ["SCAN c", "SCAN chain"], plan  # the recursion's own rows, no table
    # what the README says the view does, even for one agent: it reads every session
    assert "SCAN s |" in plan_of(db_path, view, ("a1",))


async def test_lock_events_scans_the_log_as_the_readme_says(db_path: Path) -> None:
    assert "`lock_events` scans the log" in readme()
    async with Tracker.open(db_path):
        pass
    plan = plan_of(db_path, "SELECT * FROM lock_events WHERE agent_id = ?", ("a1",))
    assert "SCAN event_log" in plan, plan


def plan_of(path: Path, sql: str, params: tuple[object, ...] | dict[str, object] = ()) -> str:
    """SQLite's query plan of ``sql``, its steps joined by " | "."""
    return " | ".join(r[3] for r in rows(path, f"EXPLAIN QUERY PLAN {sql}", params))
