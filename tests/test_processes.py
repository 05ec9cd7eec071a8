"""Several processes on one database file: exact totals, no 'database is locked', and
a contended lock never held by two holders at once."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, make_version, rows, run_python, start_python
from tracker import DatabaseBusy, OwnerInUse, SchemaVersionError, Tracker, db, store
from tracker.schema import SCHEMA_VERSION

READER = """
import sys, anyio
from tracker import Tracker
async def main():
    reads = 0
    async with Tracker.open(sys.argv[1], create=False) as t:
        while not (await t.stats()).requests >= int(sys.argv[2]):
            await t.get_agent_session("p0-a0")
            async for _ in t.events(agent_id="p1-a1"):
                pass
            reads += 1
    print("reads", reads)
anyio.run(main)
"""

WORKER = """
import sys, anyio
from tracker import Tracker
name, agents, turns = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

async def agent_loop(t, agent):
    for k in range(turns):
        rid = f"{agent}-{k}"
        await t.track_request(rid, agent_id=agent, session_id=await t.get_agent_session(agent),
                              lock=True)
        await t.update_request_session(rid, f"{agent}-S{k // 3}")
        if k % 10 == 9:
            await t.fail_request(rid, error="timeout", kind="timeout")
        else:
            await t.complete_request(rid, usage={"input_tokens": 100, "output_tokens": 10},
                                     cost_usd=0.001)
        async with t.lock(agent_id="shared", holder=rid, ttl=30, wait=60) as held:
            await t.track_request(f"{rid}-critical", agent_id="shared-log",
                                  metadata={"token": held.token})
            await t.fail_request(f"{rid}-critical", error="marker", kind="marker")

async def main():
    async with Tracker.open(sys.argv[1], owner=name) as t:
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                tg.start_soon(agent_loop, t, f"{name}-a{a}")
    print("done")

anyio.run(main)
"""


RELAY = """
import pathlib, sys, anyio
from tracker import CURRENT, Tracker
async def main():
    db, name, turns, procs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    async with Tracker.open(db) as t:
        pathlib.Path(f"{db}.ready-{name}").touch()  # start together
        while len(list(pathlib.Path(db).parent.glob("*.ready-*"))) < procs:
            await anyio.sleep(0.01)
        for k in range(turns):
            rid = f"{name}-{k}"
            await t.track_request(rid, agent_id="conv", session_id=CURRENT, lock=True,
                                  lock_wait=60)
            await t.update_request_session(rid, f"S-{rid}")  # an old CLI: a new id each time
            await anyio.sleep(0.01)  # the CLI runs
            await t.complete_request(rid)
            await anyio.sleep(0.03)  # the orchestrator reads the answer
    print("done")
anyio.run(main)
"""


@pytest.mark.slow
async def test_processes_taking_turns_on_one_agent_grow_one_line(db_path: Path) -> None:
    """Each turn resumes the session the turn before it was given, whichever process
    ran that turn: the session to resume is read under the lock, from fresh state."""
    async with Tracker.open(db_path):
        pass
    procs, turns = 3, 10
    children = [
        start_python(RELAY, str(db_path), f"p{i}", str(turns), str(procs)) for i in range(procs)
    ]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert (child.returncode, out.strip()) == (0, "done"), err
    async with Tracker.open(db_path) as t:
        chain = await t.get_chain("conv")
    assert len(chain) == procs * turns
    assert [s.parent_session_id for s in chain] == [None] + [s.session_id for s in chain[:-1]]
    runs = [s.session_id.split("-")[1] for s in chain]  # the process of each turn
    assert sum(a != b for a, b in itertools.pairwise(runs)) > procs - 1  # they took turns


@pytest.mark.slow
async def test_four_processes_share_one_file(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass  # create it once, as an orchestrator deployment would
    procs, agents, turns = 4, 5, 20
    total = procs * agents * turns
    reader = start_python(READER, str(db_path), str(2 * total))
    children = [
        start_python(WORKER, str(db_path), f"p{i}", str(agents), str(turns)) for i in range(procs)
    ]
    for child in children:
        out, err = child.communicate(timeout=240)
        assert child.returncode == 0, err
        assert "locked" not in err
        assert out.strip() == "done"
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out.split()[1]) > 0  # it read while the writers wrote
    async with Tracker.open(db_path) as t:
        stats = await t.stats()
        assert stats.requests == 2 * total  # each turn + its critical-section marker
        assert (stats.completed, stats.failed) == (total * 9 // 10, total // 10 + total)
        assert stats.input_tokens == 100 * total * 9 // 10
        assert (stats.pending, stats.active) == (0, 0)
        assert stats.agents == procs * agents + 1  # + "shared-log"; a lock alone is no agent
        report = await t.verify()
        assert report.ok, report
    seqs = [s for (s,) in rows(db_path, "SELECT seq FROM events ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    _assert_one_holder_at_a_time(db_path)


@pytest.mark.slow
async def test_a_rebuild_while_another_process_appends_loses_nothing(db_path: Path) -> None:
    agents, turns = 5, 20
    async with Tracker.open(db_path) as t:
        child = start_python(WORKER, str(db_path), "w", str(agents), str(turns))
        rebuilds = 0
        while child.poll() is None or rebuilds < 2:
            await t.rebuild()  # each swap replaces every row the child reads and writes
            rebuilds += 1
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.strip() == "done"
        stats = await t.stats()
        total = agents * turns
        assert stats.requests == 2 * total
        assert (stats.completed, stats.failed, stats.pending, stats.active) == (
            total * 9 // 10,
            total // 10 + total,
            0,
            0,
        )
        assert (await t.verify()).ok
    _assert_one_holder_at_a_time(db_path, total)


def _assert_one_holder_at_a_time(db_path: Path, acquisitions: int = 4 * 5 * 20) -> None:
    """On the shared lock, acquisitions and releases alternate, tokens rising."""
    holder: str | None = None
    tokens: list[int] = []
    lock_events = rows(
        db_path,
        "SELECT seq, type, json_extract(payload, '$.holder') FROM events "
        "WHERE agent_id = 'shared' AND type LIKE 'Lock%' ORDER BY seq",
    )
    for seq, type_, who in lock_events:
        if type_ == "LockAcquired":
            assert holder is None, f"seq {seq}: {who} acquired while {holder} held it"
            holder = who
            tokens.append(seq)
        else:
            assert (type_, who) == ("LockReleased", holder), (seq, type_, who)
            holder = None
    assert tokens == sorted(tokens)
    assert len(tokens) == acquisitions
    in_sections = [
        t
        for (t,) in rows(
            db_path,
            "SELECT json_extract(payload, '$.metadata.token') "
            "FROM events WHERE agent_id = 'shared-log' AND "
            "type = 'RequestTracked' ORDER BY seq",
        )
    ]
    assert in_sections == tokens  # each critical section ran under the newest token


NEWER_RELEASE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute(f"PRAGMA user_version = {int(sys.argv[2])}")  # what its upgrade commits
conn.close()
"""


async def test_a_writer_stops_when_another_process_upgrades_the_file(db_path: Path) -> None:
    async with Tracker.open(db_path) as t:
        await t.track_request("r1", agent_id="a1")
        done = run_python(NEWER_RELEASE, str(db_path), str(SCHEMA_VERSION + 1))
        assert done.returncode == 0, done.stderr
        before = rows(db_path, "SELECT count(*) FROM events")
        with pytest.raises(
            SchemaVersionError, match=f"upgraded to schema version {SCHEMA_VERSION + 1}"
        ):
            await t.track_request("r2", agent_id="a1")
        with pytest.raises(SchemaVersionError):  # and it stays stopped
            await t.update_request_session("r1", "s1")
    assert rows(db_path, "SELECT count(*) FROM events") == before


WRITE_LOCK_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")  # as an upgrade of a long log in another process does
print("held", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


def hold_write_lock(db_path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process holding the file's write lock for ``seconds``, from now on."""
    holder = start_python(WRITE_LOCK_HOLDER, str(db_path), str(seconds))
    assert holder.stdout is not None
    assert holder.stdout.readline() == "held\n", holder.communicate()
    return holder


def let_go(holder: subprocess.Popen[str]) -> None:
    assert holder.communicate()[1] == ""
    assert holder.returncode == 0


async def test_opening_a_file_to_upgrade_waits_while_another_process_writes_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with Tracker.open(db_path) as t:
        await t.track_request("r1", agent_id="a1")
    make_version(db_path, 7)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 100)  # SQLite gives up after 0.1 s, not 5
    holder, started = hold_write_lock(db_path, 1.5), time.monotonic()
    with anyio.move_on_after(0.3):  # a caller that gives up stops waiting
        async with Tracker.open(db_path):
            pytest.fail("upgraded while another process held the write lock")
    assert holder.poll() is None  # it stopped while the other process held on
    async with Tracker.open(db_path) as t:  # one that does not, waits its turn
        waited = time.monotonic() - started
        assert await t.get_request("r1") is not None
    assert waited > 1.0, waited
    let_go(holder)
    assert f"needs an upgrade to schema version {SCHEMA_VERSION}" in caplog.text
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_a_writer_kept_out_past_its_deadline_gets_database_busy(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 100)
    monkeypatch.setattr(store, "BUSY_DEADLINE_S", 0.3)  # not 60 s
    async with Tracker.open(db_path) as t:
        holder = hold_write_lock(db_path, 1.5)
        with pytest.raises(DatabaseBusy, match="stayed locked by other writers"):
            await t.track_request("r1", agent_id="a1")
        assert holder.poll() is None  # it gave up while the other process held on
        let_go(holder)
        await t.track_request("r1", agent_id="a1")  # the same call, once it let go
    assert rows(db_path, "SELECT request_id FROM events") == [("r1",)]


HOLDER = """
import sys, time, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1], owner="orch-1") as t:
        await t.track_request("in-flight", agent_id="a1", lock=True)
        print("ready", flush=True)
        time.sleep(60)
anyio.run(main)
"""


async def test_an_owner_is_taken_over_only_from_a_dead_process(db_path: Path) -> None:
    """Opening with an owner fails its unfinished requests as abandoned: right after a
    crash, wrong while the process that tracked them is alive."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)], cwd=ROOT, stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == b"ready\n"
            with pytest.raises(OwnerInUse, match="owner 'orch-1' is in use by another tracker"):
                async with Tracker.open(db_path, owner="orch-1"):
                    pass
            async with Tracker.open(db_path, owner="orch-2") as other:  # another owner: fine
                request = await other.get_request("in-flight")
                assert request is not None
                assert request.status == "pending"
        finally:
            holder.kill()
            holder.stdout.close()
    async with Tracker.open(db_path, owner="orch-1") as t:
        request = await t.get_request("in-flight")
        assert request is not None
        assert (request.status, request.error_kind) == ("failed", "abandoned")
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]
