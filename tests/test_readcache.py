"""Point reads from the verified cache: exact, never stale, across processes too."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import ROOT, run_python
from tracker import Request, Session, Tracker, readcache


def count_hops(tracker: Tracker, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the reads that cross to the reader's thread: a one-item list, kept current."""
    hops, original = [0], tracker._store.read_with

    async def counting(fn: Any) -> Any:
        hops[0] += 1
        return await original(fn)

    monkeypatch.setattr(tracker._store, "read_with", counting)
    return hops


async def test_repeated_reads_of_an_unchanged_database_skip_the_thread_hop(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    hops = count_hops(tracker, monkeypatch)
    assert [await tracker.get_agent_session("a1") for _ in range(5)] == ["S1"] * 5
    assert hops == [1]


async def test_agent_and_lock_reads_are_cached_until_a_commit(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tracker.track_request("r1", agent_id="a1", lock=True)
    await tracker.update_request_session("r1", "S1")
    hops = count_hops(tracker, monkeypatch)

    async def lock_and_totals() -> tuple[str | None, int | None, int | None]:
        lock, agent = await tracker.get_lock(agent_id="a1"), await tracker.get_agent("a1")
        status = None if lock is None else lock.status
        if agent is None:
            return (status, None, None)
        return (status, agent.request_count, agent.completed)

    assert [await lock_and_totals() for _ in range(3)] == [("held", 1, 0)] * 3
    assert hops == [2]
    await tracker.complete_request("r1")  # releases the lock
    assert await lock_and_totals() == ("released", 1, 1)
    assert hops == [4]


async def test_request_session_and_chain_reads_are_cached_and_give_each_caller_its_own_metadata(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tracker.track_request("r1", agent_id="a1", metadata={"tags": ["x"]})
    await tracker.update_request_session("r1", "S1")
    await tracker.update_session_metadata("S1", {"model": "m"})
    hops = count_hops(tracker, monkeypatch)

    async def read() -> tuple[Request, Session, list[Session]]:
        request, session = await tracker.get_request("r1"), await tracker.get_session("S1")
        assert request is not None
        assert session is not None
        return request, session, await tracker.get_chain("a1")

    request, session, chain = await read()
    request.metadata["tags"].append("changed by a caller")
    session.metadata["model"] = "changed by a caller"
    chain[0].metadata.clear()
    request, session, chain = await read()
    assert (request.metadata, session.metadata, chain[0].metadata) == (
        {"tags": ["x"]},
        {"model": "m"},
        {"model": "m"},
    )
    assert hops == [3]
    await tracker.complete_request("r1")
    request, session, chain = await read()
    assert (request.status, session.completed, chain[0].completed) == ("completed", 1, 1)
    assert hops == [6]


async def test_the_cache_holds_a_bounded_number_of_rows(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readcache, "MAX_ROWS", 4)
    for k in range(5):  # a1's chain: five sessions, a list longer than the cache holds
        await tracker.track_request(f"r{k}", agent_id="a1")
        await tracker.update_request_session(f"r{k}", f"S{k}")
    await tracker.track_request("b", agent_id="a2")
    await tracker.update_request_session("b", "T")
    hops = count_hops(tracker, monkeypatch)
    assert [len(await tracker.get_chain("a1")) for _ in range(2)] == [5, 5]
    assert hops == [2]  # not kept
    assert [len(await tracker.get_chain("a2")) for _ in range(2)] == [1, 1]
    assert hops == [3]  # kept: a list of one counts two rows
    rows_held = []
    for k in range(5):
        await tracker.get_request(f"r{k}")
        rows_held.append(tracker._cache._rows)
    assert rows_held == [3, 4, 1, 2, 3]  # full at the third: started again empty
    await tracker.get_chain("a2")
    assert hops == [9]  # forgotten with the rest


async def test_own_writes_are_seen_at_once(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"
    await tracker.track_request("r2", agent_id="a1", session_id="S1")
    await tracker.update_request_session("r2", "S2")
    assert await tracker.get_agent_session("a1") == "S2"
    await tracker.reset_agent("a1")
    assert await tracker.get_agent_session("a1") is None


RESET_FROM_CHILD = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.reset_agent("a1")
anyio.run(main)
"""


async def test_another_process_commit_is_seen_on_the_next_read(
    tracker: Tracker, db_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"  # now cached
    done = await anyio.to_thread.run_sync(run_python, RESET_FROM_CHILD, str(db_path))
    assert done.returncode == 0, done.stderr
    assert await tracker.get_agent_session("a1") is None


async def test_an_unchanged_database_is_verified_without_a_statement(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"
    statements: list[str] = []
    assert tracker._store._probe is not None
    probe = tracker._store._probe._probe
    assert probe is not None
    probe.set_trace_callback(statements.append)
    assert [await tracker.get_agent_session("a1") for _ in range(5)] == ["S1"] * 5
    assert statements == []  # the wal-index header answered, not PRAGMA data_version


COMMIT_ON_REQUEST = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        for turn, line in enumerate(sys.stdin):
            await t.track_request(f"r{turn}", agent_id="a1", session_id=line.strip() or None)
            await t.update_request_session(f"r{turn}", f"S{turn}")
            print(f"S{turn}", flush=True)
anyio.run(main)
"""


async def test_each_commit_of_another_process_is_seen_once_it_is_acknowledged(
    tracker: Tracker, db_path: Path
) -> None:
    await tracker.track_request("r-first", agent_id="a0")  # the file and its WAL exist
    with subprocess.Popen(
        [sys.executable, "-c", COMMIT_ON_REQUEST, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as child:
        assert child.stdin is not None
        assert child.stdout is not None
        current = None
        for _ in range(8):
            assert await tracker.get_agent_session("a1") == current  # cached now
            child.stdin.write(f"{current or ''}\n")
            child.stdin.flush()
            current = (await anyio.to_thread.run_sync(child.stdout.readline)).strip()
            assert await tracker.get_agent_session("a1") == current
        child.stdin.close()
        assert child.wait(timeout=60) == 0


async def test_a_stale_shm_file_beside_a_symbolic_link_is_not_read(tmp_path: Path) -> None:
    real, link = tmp_path / "real" / "t.db", tmp_path / "link" / "t.db"
    real.parent.mkdir()
    link.parent.mkdir()
    async with Tracker.open(real) as t:
        await t.track_request("r1", agent_id="a1")
        await t.update_request_session("r1", "S1")
        shutil.copyfile(f"{real}-shm", f"{link}-shm")  # a valid header that never moves
    link.symlink_to(real)
    async with Tracker.open(link) as t:
        assert await t.get_agent_session("a1") == "S1"
        done = await anyio.to_thread.run_sync(run_python, RESET_FROM_CHILD, str(real))
        assert done.returncode == 0, done.stderr
        assert await t.get_agent_session("a1") is None
        assert t._store._probe is not None
        assert t._store._probe._header is not None  # SQLite's file found behind the link


ADVANCE = """
import sys, anyio
from tracker import Tracker
async def main():
    agent = sys.argv[2]
    async with Tracker.open(sys.argv[1]) as t:
        session = None
        for k in range(int(sys.argv[3])):
            await t.track_request(f"{agent}-r{k}", agent_id=agent, session_id=session)
            session = f"{agent}-S{k}"
            await t.update_request_session(f"{agent}-r{k}", session)
anyio.run(main)
"""


def _turn(session: str | None) -> int:
    return -1 if session is None else int(session.rsplit("S", 1)[1])


async def test_a_cached_read_is_never_older_than_the_database_before_it(
    tracker: Tracker, db_path: Path
) -> None:
    """Two processes commit as fast as they can while this one reads through the cache:
    each answer lies between what the file held just before the read and just after."""
    await tracker.track_request("r-first", agent_id="a0")
    agents, turns = ("p0", "p1"), 150
    children = [
        subprocess.Popen([sys.executable, "-c", ADVANCE, str(db_path), a, str(turns)], cwd=ROOT)
        for a in agents
    ]
    direct = sqlite3.connect(db_path)
    sql = "SELECT current_session_id FROM agents WHERE agent_id = ?"
    try:
        reads = 0
        while any(c.poll() is None for c in children) or reads < 100:
            for agent in agents:
                before = _turn((direct.execute(sql, (agent,)).fetchone() or (None,))[0])
                cached = _turn(await tracker.get_agent_session(agent))
                after = _turn((direct.execute(sql, (agent,)).fetchone() or (None,))[0])
                assert before <= cached <= after, (agent, before, cached, after)
                reads += 1
    finally:
        direct.close()
        codes = [c.wait(timeout=120) for c in children]
    assert codes == [0, 0]
    assert [await tracker.get_agent_session(a) for a in agents] == [
        f"{a}-S{turns - 1}" for a in agents
    ]
