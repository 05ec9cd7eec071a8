"""Scratch files beside their target: locked while written, swept once their writer died."""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, beside
from tests.test_maintenance import conversation
from tracker import Tracker
from tracker.scratch import Scratch, sweep

HOLDER = """
import sys, time
from pathlib import Path
from tracker.scratch import Scratch
scratch = Scratch.beside(Path(sys.argv[1]), sys.argv[2])
Path(f"{scratch.path}-journal").write_text("as SQLite leaves it")
print(scratch.path, flush=True)
time.sleep(60)
"""


def hold(target: Path, purpose: str) -> subprocess.Popen[str]:
    """Start a process holding a scratch beside ``target``; it has printed the path."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target), purpose],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    with holder.stdout:
        path = holder.stdout.readline()
    assert path.startswith(str(target.parent / f".{target.name}.{purpose}-")), path
    return holder


def test_a_scratch_is_private_beside_its_target_and_removed_with_its_companions(
    tmp_path: Path,
) -> None:
    target = tmp_path / "t.db"
    with Scratch.beside(target, "rebuild") as scratch:
        assert scratch.path.parent == tmp_path
        assert scratch.path.name.startswith(".t.db.rebuild-")
        assert scratch.path.stat().st_mode & 0o777 == 0o600
        Path(f"{scratch.path}-journal").touch()
        assert sweep(target) == []  # held: not swept, even by its own process
    assert beside(target) == []


def test_the_file_of_a_killed_process_is_swept_and_a_live_ones_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "t.db"
    killed, alive = hold(target, "rebuild"), hold(target, "partial")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert len(beside(target)) == 4  # two files, each with its journal
        with Scratch.beside(target, "verify") as mine:
            left = beside(target)
            assert [n.split("-")[0] for n in left] == [".t.db.partial"] * 2 + [".t.db.verify"]
            assert mine.path.name in left
    finally:
        alive.kill()
        alive.wait()
    assert [p.name.split("-")[0] for p in sweep(target)] == [".t.db.partial"]
    assert beside(target) == []


def test_on_a_filesystem_without_flock_a_scratch_works_and_is_never_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_locks(fd: int, operation: int) -> None:  # what some network filesystems answer
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    target = tmp_path / "t.db"
    with Scratch.beside(target, "partial") as scratch:
        scratch.path.write_text("written")
        assert sweep(target) == []
        assert scratch.path.read_text() == "written"
    assert beside(target) == []


def test_other_files_beside_the_target_are_never_swept(tmp_path: Path) -> None:
    target = tmp_path / "t.db"
    kept = [
        tmp_path / n
        for n in (
            ".t.db.notes",
            ".t.db.rebuild",
            "t.db.rebuild-x",
            ".u.db.verify-x",
            ".t.db.owner-x",
        )
    ]
    for path in kept:
        path.write_text("mine")
    assert sweep(target) == []
    assert all(p.exists() for p in kept)


@pytest.mark.parametrize("name", ["t[1].db", "t*.db", "what?.db"])
def test_a_target_name_with_glob_characters_sweeps_only_its_own(tmp_path: Path, name: str) -> None:
    other = tmp_path / ".t1.db.rebuild-abc"  # what t[1].db, t*.db would match as patterns
    other.write_text("not ours")
    holder = hold(tmp_path / name, "rebuild")
    holder.kill()
    holder.wait()
    assert len(sweep(tmp_path / name)) == 1
    assert other.exists()


async def test_rebuild_and_verify_write_beside_the_database_not_in_tmp_and_leave_nothing(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(system_tmp))
    seen: list[tuple[list[str], list[Path]]] = []

    def look(_: int) -> None:  # called while the scratch is written
        seen.append(([n.split("-")[0] for n in beside(db_path)], list(system_tmp.iterdir())))

    async with Tracker.open(db_path) as t:
        await conversation(t)
        await t.rebuild(progress=look)
        assert (await t.verify(progress=look)).ok
        await t.replay_into(tmp_path / "copy.db")
    assert seen
    assert {(tuple(names), tuple(tmp)) for names, tmp in seen} == {
        ((".tracker.db.rebuild",), ()),
        ((".tracker.db.verify",), ()),
    }
    assert beside(db_path) == []
    assert beside(tmp_path / "copy.db") == []
    assert list(system_tmp.iterdir()) == []


def test_a_rebuild_sweeps_what_a_killed_one_left(db_path: Path) -> None:
    anyio.run(_fill, db_path)
    holder = hold(db_path, "rebuild")
    holder.kill()
    holder.wait()
    assert len(beside(db_path)) == 2
    anyio.run(_rebuild, db_path)
    assert beside(db_path) == []


async def _fill(path: Path) -> None:
    async with Tracker.open(path) as t:
        await conversation(t)


async def _rebuild(path: Path) -> None:
    async with Tracker.open(path) as t:
        await t.rebuild()


async def test_a_database_named_with_uri_and_glob_characters_rebuilds_and_verifies(
    tmp_path: Path,
) -> None:
    """The scratch's name starts with the database's; it is opened and ATTACHed by URI."""
    path = tmp_path / "we?ird #1%20[x].db"
    async with Tracker.open(path) as t:
        await conversation(t)
        report = await t.rebuild()
        assert report.events == (await t.stats()).events
        assert (await t.verify()).ok
        await t.replay_into(tmp_path / "co?py #2.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["co?py #2.db", path.name]
