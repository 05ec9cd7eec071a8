"""The projections' row cache: a table that was empty is wholly cached (misses read
nothing) until it evicts a row or another connection writes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from functools import partial
from pathlib import Path

import anyio
import pytest

from projections import replay
from projections.locks import LockRow, table
from tracker import Tracker, db
from tracker.errors import DuplicateRequest, InvalidTransition
from tracker.schema import EVENT_ROWS


def _lock(target: str) -> LockRow:
    return LockRow("agent", target, "h", 1, "held", "t0", "t1", None, None, 1)


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A connection to a new database (closed after the test)."""
    with closing(sqlite3.connect(tmp_path / "new.db", isolation_level=None)) as new:
        db.create_schema(new)
        yield new


def test_an_empty_table_answers_misses_without_reading(conn: sqlite3.Connection) -> None:
    selects: list[str] = []
    conn.set_trace_callback(lambda sql: selects.append(sql) if "SELECT" in sql else None)
    locks = table(limit=100)
    locks.reload(conn)
    selects.clear()
    assert locks.get(("agent", "nobody")) is None
    assert selects == []


def test_after_an_eviction_a_miss_reads_the_table(conn: sqlite3.Connection) -> None:
    locks = table(limit=4)
    locks.reload(conn)
    for i in range(10):
        locks.add(("agent", f"a{i}"), _lock(f"a{i}"))
    locks.flush(conn)  # writes all ten, keeps only the newest few
    assert locks.get(("agent", "a0")) == _lock("a0")  # evicted, read back from the table


def test_a_table_with_rows_is_never_assumed_complete(conn: sqlite3.Connection) -> None:
    writer = table(limit=100)
    writer.reload(conn)
    writer.add(("agent", "a0"), _lock("a0"))
    writer.flush(conn)
    reader = table(limit=100)
    reader.reload(conn)
    assert reader.get(("agent", "a0")) == _lock("a0")


async def test_rows_written_by_another_connection_are_seen(db_path: Path) -> None:
    async with Tracker.open(db_path) as first, Tracker.open(db_path) as second:
        await first.track_request("r1", agent_id="a1")  # first's tables were empty
        await second.track_request("r2", agent_id="a2")
        await first.update_request_session("r2", "s2")  # must read r2
        done = await first.complete_request("r2", response="ok")
        assert done.status == "completed"
        assert (await first.get_agent("a2")) is not None
        assert (await first.verify()).ok


async def test_a_replay_into_empty_tables_reads_no_rows_back(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    async with Tracker.open(db_path) as t:
        for i in range(20):
            await t.track_request(f"r{i}", agent_id=f"a{i % 3}", lock=True)
            await t.update_request_session(f"r{i}", f"s{i}")
            await t.complete_request(f"r{i}", response="ok")
    with closing(sqlite3.connect(db_path)) as live:
        rows = live.execute(EVENT_ROWS.format(db="main") + " ORDER BY seq").fetchall()
    reads: list[str] = []
    conn.set_trace_callback(lambda sql: reads.append(sql) if sql.startswith("SELECT") else None)
    assert replay(conn, rows) == len(rows)
    assert [sql for sql in reads if "SELECT 1 FROM" not in sql] == []  # only emptiness checks


async def test_a_batch_reads_the_rows_its_calls_need_in_one_statement_per_table(
    db_path: Path,
) -> None:
    async with Tracker.open(db_path) as t:  # the tables hold rows: misses must read
        await t.track_request("old", agent_id="a0")
        await t.update_request_session("old", "s-old")
    async with Tracker.open(db_path) as t:  # a new process: nothing cached
        writer = db.raw(t._store._writer)  # type: ignore[arg-type]
        reads: list[str] = []
        writer.set_trace_callback(lambda sql: reads.append(sql) if "SELECT" in sql else None)
        async with anyio.create_task_group() as tg:
            for i in range(1, 41):
                tg.start_soon(partial(t.track_request, f"r{i}", agent_id=f"a{i % 4}"))
        async with anyio.create_task_group() as tg:
            for i in range(1, 41):
                tg.start_soon(t.update_request_session, f"r{i}", f"s{i}")
        # the rows found by a batch's read are the real ones
        with pytest.raises(DuplicateRequest):
            await t.track_request("old", agent_id="a1")
        with pytest.raises(InvalidTransition, match="belongs to agent 'a0'"):
            await t.track_request("r41", agent_id="a1", session_id="s-old")
        writer.set_trace_callback(None)
        assert (await t.verify()).ok
    one_by_one = [sql for sql in reads if "request_id = '" in sql or "session_id = '" in sql]
    assert one_by_one == []
    assert any("json_each" in sql for sql in reads)
