"""Kill -9 at random moments: acknowledged means durable, and state equals replay.

Trials are seeded (TRACKER_CRASH_SEED) and counted by TRACKER_CRASH_TRIALS
(default 20 for the w1 mode; ``make stress`` runs many more).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, beside, check_acknowledged, log_as_text, make_version_4, rows
from tracker import Tracker
from tracker.schema import SCHEMA_VERSION
from tracker.scratch import sweep

SEED = int(os.environ.get("TRACKER_CRASH_SEED", "20261121"))
TRIALS = int(os.environ.get("TRACKER_CRASH_TRIALS", "20"))
# Trials share a file, each checking it whole, so a long run starts a new file every
# TRIALS_PER_FILE trials: its time then grows with the trials, not with their square.
TRIALS_PER_FILE = 20
WORKER = str(ROOT / "tests" / "crash_worker.py")


def run_and_kill(db: Path, prefix: str, mode: str, rng: random.Random) -> list[list[str]]:
    """Start a worker, SIGKILL it at a random moment; return the acknowledgements it printed."""
    with subprocess.Popen(
        [sys.executable, WORKER, str(db), prefix, mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as worker:
        assert worker.stdout is not None
        assert worker.stdout.readline() == b"ready\n", worker.stderr.read() if worker.stderr else ""
        if mode == "rebuild":  # its first rebuild under way, however loaded the machine is
            deadline = time.monotonic() + 30
            while not beside(db) and time.monotonic() < deadline:
                time.sleep(0.005)
        time.sleep(rng.uniform(0.02, 0.6))
        worker.send_signal(signal.SIGKILL)
        out, _ = worker.communicate()
    lines = out.decode().split("\n")[:-1]  # the last, unterminated line may be torn
    return [line.split() for line in lines]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "trials"),
    [("w1", TRIALS), ("rebuild", max(TRIALS // 4, 3)), ("cleanup", max(TRIALS // 4, 3))],
)
def test_kill_9_loses_no_acknowledged_event(tmp_path: Path, mode: str, trials: int) -> None:
    rng = random.Random(f"{SEED}-{mode}")
    total, killed_mid_rebuild = 0, 0
    for trial in range(trials):
        db = tmp_path / f"crash{trial // TRIALS_PER_FILE}.db"
        acks = run_and_kill(db, f"t{trial}", mode, rng)
        total += len(acks)
        killed_mid_rebuild += bool(beside(db))
        anyio.run(check_acknowledged, db, acks)  # verify's scratch sweeps the dead one's
        assert beside(db) == []
    assert total > trials, "the workers never got going"
    assert killed_mid_rebuild or mode != "rebuild", "no kill landed during a rebuild"


@pytest.mark.slow
def test_kill_9_during_import_leaves_no_half_database(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    run_and_kill(source, "src", "w1", random.Random(SEED))
    dump = tmp_path / "log.jsonl"
    subprocess.run(
        [sys.executable, "-m", "tracker", "export", "--out", str(dump), "--db", str(source)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    expected = len(dump.read_text().splitlines())
    rng, killed_mid_import, trials = random.Random(SEED), 0, max(TRIALS // 4, 3)
    for trial in range(trials):
        target = tmp_path / f"copy{trial}.db"
        with subprocess.Popen(
            [sys.executable, "-m", "tracker", "import", str(dump), "--db", str(target)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as importer:
            _wait_for_partial(tmp_path, target.name)
            time.sleep(rng.uniform(0, 0.05))
            importer.send_signal(signal.SIGKILL)
            importer.wait()
        if target.exists():  # it finished before the kill: then it is whole
            assert rows(target, "SELECT count(*) FROM events") == [(expected,)]
            assert rows(target, "PRAGMA integrity_check") == [("ok",)]
        else:
            killed_mid_import += 1
            left = beside(target)
            assert [p.name for p in sweep(target)] == left[:1]  # the partial (then its journal)
        assert beside(target) == []
    assert killed_mid_import >= trials // 2, "the kills never landed during an import"


def _wait_for_partial(folder: Path, name: str) -> None:
    deadline = time.monotonic() + 10
    while not list(folder.glob(f".{name}.partial-*")):
        assert time.monotonic() < deadline, "the import never started writing"
        time.sleep(0.001)


UPGRADER = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1], create=False):
        pass
anyio.run(main)
"""


async def _fill(path: Path, agents: int, turns: int) -> None:
    """A log of agents * turns * 5 events, the agents running concurrently."""

    async def agent(a: int) -> None:
        for k in range(turns):
            rid = f"r{a}-{k}"
            await t.track_request(rid, agent_id=f"a{a}", lock=True)
            await t.update_request_session(rid, f"s{a}-{k}")
            await t.complete_request(rid)

    async with Tracker.open(path) as t, anyio.create_task_group() as tg:
        for a in range(agents):
            tg.start_soon(agent, a)


@pytest.mark.slow
def test_kill_9_during_an_upgrade_leaves_the_older_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    anyio.run(_fill, path, 100, 100)
    make_version_4(path)
    log, layout = log_as_text(path), rows(path, "SELECT name, sql FROM sqlite_master")
    wal = Path(f"{path}-wal")
    with subprocess.Popen([sys.executable, "-c", UPGRADER, str(path)], cwd=ROOT) as upgrader:
        deadline = time.monotonic() + 30
        while not (wal.exists() and wal.stat().st_size > 4 << 20):  # copying the log
            assert upgrader.poll() is None, "the upgrade ended before it was seen"
            assert time.monotonic() < deadline, "the upgrade never started"
            time.sleep(0.002)
        upgrader.send_signal(signal.SIGKILL)
    assert upgrader.returncode == -signal.SIGKILL
    assert rows(path, "PRAGMA user_version") == [(4,)]
    assert rows(path, "SELECT name, sql FROM sqlite_master") == layout
    assert log_as_text(path) == log
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    anyio.run(_upgrade_and_verify, path, log)


async def _upgrade_and_verify(path: Path, log: list[tuple[object, ...]]) -> None:
    async with Tracker.open(path, create=False) as t:
        assert (await t.verify()).ok
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert log_as_text(path) == log
