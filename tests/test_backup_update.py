"""Updating a backup (``backup(update=True)``, ``tracker backup --update``): the events
an earlier backup lacks are appended and applied to its projections, so it equals a
whole backup; a file that is not an earlier backup of this database is refused and
left as it was; a killed or cancelled update leaves the backup as it was."""

from __future__ import annotations

import importlib
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, Run, make_version, rows
from tests.test_backup import content, verified
from tests.test_interrupt import cancelled_at_first_report
from tests.test_maintenance import conversation
from tracker import (
    CURRENT,
    InvalidInput,
    NotATrackerDatabase,
    SchemaVersionError,
    Tracker,
    TrackerError,
)


async def later_day(t: Tracker) -> None:
    """What happens after the first backup: new turns, an expired session, a reset agent,
    a lock taken and released, so every projection changes."""
    for a in range(4):
        request = f"later-{a}"
        await t.track_request(request, agent_id=f"a{a}", session_id=CURRENT, lock=True)
        await t.update_request_session(request, f"L{a}")
        await t.complete_request(request, usage={"output_tokens": 5}, cost_usd=0.5)
    await t.expire_session("S1-0")
    await t.reset_agent("a2")
    async with t.lock(agent_id="a3", holder="h1", ttl=30):
        await t.update_session_metadata("S0-0", {"model": "m2"})


async def test_an_update_appends_what_is_new_and_equals_a_whole_backup(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    out, whole = tmp_path / "backup.db", tmp_path / "whole.db"
    await conversation(tracker)
    first = await tracker.backup(out)
    await later_day(tracker)
    applied: list[int] = []
    report = await tracker.backup(out, update=True, progress=applied.append)
    events = len(content(db_path)[0])
    assert (report.whole, report.added, report.events) == (False, events - first.events, events)
    assert applied == [report.added]  # what replay applied
    assert content(out) == content(db_path)
    whole_report = await tracker.backup(whole)
    assert (content(out), report.head_hash) == (content(whole), whole_report.head_hash)
    checked = await verified(out)
    assert (checked.ok, checked.events) == (True, events)
    again = await tracker.backup(out, update=True)
    assert (again.added, again.events, content(out)) == (0, events, content(db_path))
    assert rows(out, "PRAGMA journal_mode") == [("delete",)]  # one file, as a backup is


async def test_an_update_of_a_missing_file_writes_a_whole_backup(
    tracker: Tracker, tmp_path: Path
) -> None:
    await conversation(tracker)
    report = await tracker.backup(tmp_path / "new.db", update=True)
    assert (report.whole, report.added) == (True, report.events)
    checked = await verified(tmp_path / "new.db")
    assert (checked.ok, checked.events) == (True, report.events)


async def other_database(path: Path) -> None:
    async with Tracker.open(path) as t:
        await t.track_request("elsewhere", agent_id="b1")


@pytest.mark.parametrize(
    ("target", "error", "named"),
    [
        ("other", InvalidInput, "is not an earlier backup of this database: their event 1 differs"),
        ("ahead", InvalidInput, r"holds \d+ events, this database \d+: it is not a backup of"),
        ("plain", NotATrackerDatabase, "is not a tracker database"),
        ("garbage", NotATrackerDatabase, "file is not a database"),
        ("older", SchemaVersionError, "an update cannot bring it across; make a whole backup"),
    ],
)
async def test_a_file_that_is_not_an_earlier_backup_is_refused_and_left_as_it_was(
    db_path: Path, tmp_path: Path, target: str, error: type[TrackerError], named: str
) -> None:
    out = tmp_path / f"{target}.db"
    async with Tracker.open(db_path) as t:
        await conversation(t)
        await t.backup(tmp_path / "older.db")
    make_version(tmp_path / "older.db", 8)
    await other_database(tmp_path / "other.db")
    shutil.copy(db_path, tmp_path / "ahead-source.db")
    async with Tracker.open(tmp_path / "ahead-source.db") as t:
        await t.track_request("only-there", agent_id="a1")
        await t.backup(tmp_path / "ahead.db")
    sqlite3.connect(tmp_path / "plain.db").execute("CREATE TABLE t (x)").connection.close()
    (tmp_path / "garbage.db").write_bytes(b"not SQLite at all" * 100)
    before = out.read_bytes()
    async with Tracker.open(db_path) as t:
        with pytest.raises(error, match=named):
            await t.backup(out, update=True)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f"{target}.db-")] == []


KILLED_MIDWAY = """
import importlib, os, signal, sys, anyio
from tracker import Tracker
importlib.import_module("projections.replay").FLUSH_EVERY = 5  # a report (death) early on
def die(done):
    os.kill(os.getpid(), signal.SIGKILL)
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.backup(sys.argv[2], update=True, progress=die)
anyio.run(main)
"""


async def test_an_update_killed_midway_leaves_the_backup_as_it_was(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    """kill -9 once the new events are appended and half applied: the backup's journal
    gives it back as it was, and the next update brings it up to date."""
    out = tmp_path / "backup.db"
    await conversation(tracker)
    await tracker.backup(out)
    previous = content(out)
    await later_day(tracker)
    killed = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(db_path), str(out)], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert Path(f"{out}-journal").exists()  # the transaction it died in
    assert content(out) == previous  # a reader rolls it back
    report = await tracker.backup(out, update=True)
    assert (report.added, content(out)) == (
        len(content(db_path)[0]) - len(previous[0]),
        content(db_path),
    )
    checked = await verified(out)
    assert (checked.ok, checked.events) == (True, report.events)


async def test_a_cancelled_update_leaves_the_backup_as_it_was(
    tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.import_module("projections.replay"), "FLUSH_EVERY", 5)
    out = tmp_path / "backup.db"
    await conversation(tracker)
    await tracker.backup(out)
    previous = content(out)
    await later_day(tracker)
    reports = await cancelled_at_first_report(
        lambda p: tracker.backup(out, update=True, progress=p)
    )
    assert reports == [5]
    assert content(out) == previous


def test_the_command_updates_and_says_what_it_added(
    db_path: Path, tmp_path: Path, run: Run
) -> None:
    out = tmp_path / "backup.db"

    async def start() -> None:
        async with Tracker.open(db_path) as t:
            await conversation(t)
            await t.backup(out)
            await t.track_request("r-later", agent_id="a9")

    anyio.run(start)
    events = len(content(db_path)[0])
    code, printed, err = run("backup", str(out), "--update", "--db", str(db_path))
    assert (code, err) == (0, "")
    assert printed.startswith(f"updated {out}: 1 new event, {events:,} in all (")
    assert "head checked" in printed
    other = tmp_path / "other.db"
    anyio.run(other_database, other)
    code, printed, err = run("backup", str(other), "--update", "--db", str(db_path))
    assert (code, printed) == (1, "")
    assert err == (
        f"tracker: {str(other)!r} is not an earlier backup of this database: "
        "their event 1 differs\n"
    )
