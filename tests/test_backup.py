"""Backups (tracker.backup): a checked copy of the whole file, consistent while another
process writes; a cancelled or killed backup leaves the previous one as it was."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, Run, beside, rows, tamper
from tests.test_interrupt import cancelled_at_first_report, projections
from tests.test_maintenance import conversation
from tracker import InvalidInput, Tracker, VerifyReport, backup


async def verified(path: Path) -> VerifyReport:
    """``verify`` of the database at ``path`` (a backup)."""
    async with Tracker.open(path, create=False) as copy:
        return await copy.verify()


def content(path: Path) -> list[list[tuple[object, ...]]]:
    """The log and every projection, as stored."""
    return [rows(path, "SELECT * FROM event_log ORDER BY seq"), *projections(path)]


async def test_a_backup_is_the_whole_database_checked(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    await conversation(tracker)
    tamper(db_path, "CREATE TABLE junk AS SELECT randomblob(100000) FROM event_log LIMIT 20")
    tamper(db_path, "DROP TABLE junk")  # its pages are free now
    out = tmp_path / "backup.db"
    report = await tracker.backup(out)
    assert content(out) == content(db_path)
    free = "PRAGMA freelist_count"
    assert (rows(db_path, free)[0][0] > 0, rows(out, free)) == (True, [(0,)])  # left out
    assert (report.path, report.events, report.bytes) == (
        str(out),
        rows(db_path, "SELECT count(*) FROM event_log")[0][0],
        out.stat().st_size,
    )
    assert beside(out) == []  # no partial file left
    assert out.stat().st_mode & 0o777 == 0o600  # it holds the prompts, as the database does
    checked = await verified(out)
    assert (checked.ok, checked.head_hash) == (True, report.head_hash)


@pytest.mark.parametrize("update", [False, True])
async def test_backups_taken_while_another_process_writes_are_each_consistent(
    db_path: Path, tmp_path: Path, update: bool
) -> None:
    """Each is a snapshot of one moment: its hash chain is whole and its projections equal
    a replay of its log, though the writer commits all along; so is each update of one
    backup (the first of them writes it whole)."""
    async with Tracker.open(db_path):
        pass
    writer = subprocess.Popen(
        [sys.executable, "tests/chaos_worker.py", str(db_path), "w", "4"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        counts = [0]
        async with Tracker.open(db_path) as t:
            for k in range(3):
                await written_past(t, counts[-1])
                out = tmp_path / ("backup.db" if update else f"b{k}.db")
                report = await t.backup(out, update=update)
                assert report.whole == (k == 0 or not update)
                counts.append(report.events)
                checked = await verified(out)
                assert (checked.ok, checked.events) == (True, report.events), checked
    finally:
        writer.kill()
        writer.communicate()
    assert 0 < counts[1] < counts[2] < counts[3], counts  # taken while the log grew


async def written_past(t: Tracker, seq: int) -> None:
    """Wait until another process has committed events past ``seq``."""
    with anyio.fail_after(30):
        while (await t.stats()).events <= seq:
            await anyio.sleep(0.05)


async def test_a_backup_replaces_the_previous_one(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "backup.db"
    await conversation(tracker)
    first = await tracker.backup(out)
    await tracker.track_request("r-later", agent_id="a9")
    second = await tracker.backup(out)
    assert second.events == first.events + 1
    assert content(out) == content(db_path)


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("db", "is the database itself"),
        ("db-wal", "is the database's own -wal file"),
        ("folder", "is a folder"),
        ("in-use.db", "looks like a database in use (its -wal"),
        ("missing/backup.db", "No such file or directory"),
    ],
)
async def test_a_bad_target_is_refused_and_left_as_it_was(
    tracker: Tracker, db_path: Path, tmp_path: Path, target: str, named: str
) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "in-use.db").write_bytes(b"someone's database")
    (tmp_path / "in-use.db-wal").write_bytes(b"")
    await conversation(tracker)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    out = {"db": db_path, "db-wal": Path(f"{db_path}-wal")}.get(target, tmp_path / target)
    with pytest.raises(InvalidInput, match=re.escape(named)):
        await tracker.backup(out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.fixture
def small_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backup, "PROGRESS_EVERY", 100)


@pytest.mark.usefixtures("small_steps")
async def test_a_cancelled_backup_leaves_the_previous_one(tracker: Tracker, tmp_path: Path) -> None:
    out = tmp_path / "backup.db"
    await conversation(tracker)
    await tracker.backup(out)
    previous = out.read_bytes()
    await tracker.track_request("r-later", agent_id="a9")
    reports = await cancelled_at_first_report(lambda p: tracker.backup(out, progress=p))
    assert len(reports) == 1  # it stopped at its first report
    assert (out.read_bytes(), beside(out)) == (previous, [])


KILLED_AT_FIRST_REPORT = """
import os, signal, sys, anyio
from tracker import Tracker, backup
backup.PROGRESS_EVERY = 100
def die(pages):
    os.kill(os.getpid(), signal.SIGKILL)
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.backup(sys.argv[2], progress=die)
anyio.run(main)
"""


async def test_a_backup_killed_midway_leaves_the_previous_one(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    """kill -9 while SQLite writes the copy: the previous backup stays whole, and the next
    backup removes what the dead one left."""
    out = tmp_path / "backup.db"
    await conversation(tracker)
    await tracker.backup(out)
    previous = out.read_bytes()
    await tracker.track_request("r-later", agent_id="a9")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AT_FIRST_REPORT, str(db_path), str(out)], cwd=ROOT
    )
    assert killed.returncode == -signal.SIGKILL
    assert out.read_bytes() == previous
    assert [name.split("-")[0] for name in beside(out)] == [".backup.db.partial"]
    report = await tracker.backup(out)
    assert (beside(out), report.events) == ([], len(content(db_path)[0]))


def test_the_command_says_what_it_wrote(db_path: Path, tmp_path: Path, run: Run) -> None:
    anyio.run(seeded, db_path)
    out = tmp_path / "backup.db"
    code, printed, err = run("backup", str(out), "--db", str(db_path))
    events = len(content(db_path)[0])
    assert (code, err) == (0, "")
    assert printed.startswith(f"backed up {events:,} events to {out} (")
    assert "checked" in printed
    code, printed, _ = run("backup", str(out), "--db", str(db_path), "--json")
    assert (code, json.loads(printed)["events"]) == (0, events)
    code, printed, err = run("backup", str(db_path), "--db", str(db_path))
    assert (code, printed) == (1, "")
    assert err == f"tracker: {str(db_path)!r} is the database itself: back up to another file\n"


async def seeded(path: Path) -> None:
    async with Tracker.open(path) as t:
        await conversation(t)
