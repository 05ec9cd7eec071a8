"""Long file work (rebuild, verify, replay into, export, import) stops at its next batch
once its caller is cancelled (Ctrl-C, a timeout), and leaves nothing behind."""

from __future__ import annotations

import contextlib
import importlib
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, beside, rows
from tests.test_maintenance import conversation
from tracker import Tracker, db, transfer
from tracker.events import RequestTracked
from tracker.store import EventStore, NoProjections

Work = Callable[[Callable[[int], None]], Awaitable[object]]
REPLAY = importlib.import_module("projections.replay")  # the package's name is its function
TABLES = ("requests", "sessions", "agents", "locks", "usage_daily", "checkpoints")


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(REPLAY, "FLUSH_EVERY", 5)
    monkeypatch.setattr(transfer, "BATCH", 5)


async def cancelled_at_first_report(work: Work) -> list[int]:
    """Run ``work(progress)``, cancelling its caller at its first progress report (which
    comes from the worker thread); return every report it made."""
    reports: list[int] = []
    with anyio.CancelScope() as scope:

        def progress(done: int) -> None:
            reports.append(done)
            anyio.from_thread.run_sync(scope.cancel)

        await work(progress)
    assert scope.cancelled_caught
    return reports


def projections(path: Path) -> list[list[tuple[object, ...]]]:
    return [rows(path, f"SELECT * FROM {t} ORDER BY 1, 2") for t in TABLES]


async def test_a_cancelled_rebuild_stops_and_changes_nothing(
    tracker: Tracker, db_path: Path
) -> None:
    await conversation(tracker)
    before = projections(db_path)
    assert await cancelled_at_first_report(tracker.rebuild) == [5]
    assert beside(db_path) == []  # the scratch database is gone
    assert projections(db_path) == before
    await tracker.track_request("after", agent_id="a0")  # the tracker goes on
    assert (await tracker.verify()).ok


async def test_a_cancelled_verify_stops(tracker: Tracker, db_path: Path) -> None:
    await conversation(tracker)
    assert await cancelled_at_first_report(tracker.verify) == [5]
    assert beside(db_path) == []
    assert (await tracker.verify()).ok


async def test_a_cancelled_replay_into_leaves_no_file(tracker: Tracker, tmp_path: Path) -> None:
    await conversation(tracker)
    target = tmp_path / "past.db"
    reports = await cancelled_at_first_report(
        lambda progress: tracker.replay_into(target, progress=progress)
    )
    assert reports == [5]
    assert (target.exists(), beside(target)) == (False, [])


async def test_a_cancelled_export_and_import_leave_no_file(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    await conversation(tracker)
    out, dump, copy = tmp_path / "cut.jsonl", tmp_path / "log.jsonl", tmp_path / "copy.db"
    reports = await cancelled_at_first_report(
        lambda progress: db.in_thread(db_path, transfer.export_file, db_path, out, progress)
    )
    assert reports == [5]
    assert (out.exists(), beside(out)) == (False, [])
    transfer.export_file(db_path, dump)
    reports = await cancelled_at_first_report(
        lambda progress: db.in_thread(copy, transfer.import_file, dump, copy, progress)
    )
    assert reports == [5]
    assert (copy.exists(), beside(copy)) == (False, [])


def test_outside_a_worker_thread_the_stop_point_does_nothing() -> None:
    db.stop_if_cancelled()  # plain code, or a connection's own thread: no anyio worker


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_a_signal_stops_an_import_at_its_next_batch_and_leaves_nothing(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """A real process and a real SIGINT (Ctrl-C) or SIGTERM (a service manager's stop):
    ``tracker import -`` reads a pipe, so the test
    holds it between two batches (5,000 lines each) while the signal lands. (The signal
    can end the worker's blocked read as if the input had ended: the import must not
    then complete with the lines it had.)"""
    source, dump, copy = tmp_path / "source.db", tmp_path / "log.jsonl", tmp_path / "copy.db"
    async with EventStore.open(source, NoProjections()) as store:
        await store.append([RequestTracked(request_id=f"r{i}") for i in range(12_000)])
    transfer.export_file(source, dump)
    lines = dump.read_bytes().splitlines(keepends=True)
    with subprocess.Popen(
        [sys.executable, "-m", "tracker", "import", "-", "--db", str(copy)],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # nothing held back to flush into a closed pipe
        cwd=ROOT,
    ) as child:
        assert child.stdin is not None
        assert child.stderr is not None
        child.stdin.write(b"".join(lines[:6_000]))  # the first batch, and a part of the next
        with anyio.fail_after(30):
            while not beside(copy):  # the partial database: the import is under way
                await anyio.sleep(0.02)
        child.send_signal(stop)
        await anyio.sleep(0.3)
        with contextlib.suppress(BrokenPipeError):  # it may have stopped reading already
            child.stdin.write(b"".join(lines[6_000:]))  # what would complete it
        with contextlib.suppress(BrokenPipeError):
            child.stdin.close()
        assert child.wait(timeout=30) == code
        assert child.stderr.read() == b""  # no traceback
    assert (copy.exists(), beside(copy)) == (False, [])


STUBBORN = """
import anyio
from tracker.cli import COMMANDS, main

async def stubborn(args):
    print("started", flush=True)
    with anyio.CancelScope(shield=True):  # work that does not stop at the first Ctrl-C
        await anyio.sleep(60)
    return 0

COMMANDS["stats"] = (stubborn, *COMMANDS["stats"][1:])
raise SystemExit(main(["stats"]))
"""


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    """The first Ctrl-C cancels the command (which the CLI listens for before the command
    starts); work that does not stop then is interrupted by the second."""
    with subprocess.Popen(
        [sys.executable, "-c", STUBBORN],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == "started\n"
        child.send_signal(signal.SIGINT)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)  # the first: a cancellation the shielded work ignores
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=10)  # not the 60 s of the work
    assert (child.returncode, err) == (130, "")
