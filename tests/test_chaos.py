"""Three processes share agents on one file while one of them is killed every few
tenths of a second and started again: no acknowledged call is lost, a lock never
has two holders, every agent moves on as the log says it should, whichever
process decided, and the state still equals a replay.

Its length is TRACKER_CHAOS_SECONDS (default 8; ``make stress`` runs a minute).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from tests.helpers import ROOT, check_acknowledged, rows
from tracker import Tracker
from tracker.events import (
    AgentReset,
    LockAcquired,
    LockEvent,
    LockExpired,
    LockReleased,
    LockRenewed,
    RequestTracked,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
    StoredEvent,
)

SECONDS = float(os.environ.get("TRACKER_CHAOS_SECONDS", "8"))
SEED = int(os.environ.get("TRACKER_CRASH_SEED", "20261121"))
WORKER = str(ROOT / "tests" / "chaos_worker.py")
LOCK_EVENTS = ("LockAcquired", "LockRenewed", "LockReleased", "LockExpired")
CONTINUITY_EVENTS = (
    "LockAcquired",
    "RequestTracked",
    "SessionAssigned",
    "SessionExpired",
    "SessionDeleted",
    "AgentReset",
)


class Worker:
    """A running chaos worker and the acknowledgements it printed."""

    def __init__(self, db: Path, name: str, extra: str, acks: list[list[str]]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, str(db), name, "12", extra],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline() == "ready\n", self.proc.communicate()[1]
        self.reader = threading.Thread(target=self._read, args=(acks,))
        self.reader.start()

    def _read(self, acks: list[list[str]]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.endswith("\n"):  # the last line of a killed process may be torn
                acks.append(line.split())

    def kill(self) -> None:
        assert self.proc.poll() is None, self.proc.communicate()[1]  # it ran until now
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join()
        for stream in (self.proc.stdout, self.proc.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.slow
def test_killing_processes_that_share_agents_loses_nothing(db_path: Path) -> None:
    anyio.run(_create, db_path)
    rng, acks = random.Random(SEED), list[list[str]]()
    extras = {"p1": "", "p2": "", "p3": "rebuild"}
    workers = {name: Worker(db_path, name, extra, acks) for name, extra in extras.items()}
    kills, deadline = 0, time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.1, 0.5))
        name = rng.choice(sorted(workers))
        workers[name].kill()
        kills += 1
        workers[name] = Worker(db_path, name, extras[name], acks)  # reopens as the same owner
    for worker in workers.values():
        worker.kill()

    anyio.run(check_acknowledged, db_path, acks)
    assert sum(a[0] == "C" for a in acks) > 100  # they did work between kills
    lock_events = anyio.run(_lock_events, db_path)
    _assert_one_holder_per_lock(lock_events)
    # the chaos reached the paths it is for: a dead holder's lock taken over, and a
    # dead process's requests abandoned
    assert any(e.type == "LockExpired" for e in lock_events), kills
    assert rows(db_path, "SELECT count(*) FROM requests WHERE error_kind = 'abandoned'")[0][0]
    log = anyio.run(_continuity_events, db_path)
    moves = _Continuity().check(log)
    currents = dict(rows(db_path, "SELECT agent_id, current_session_id FROM agents"))
    assert currents == moves.current
    # late answers came both ways: after a takeover, and after the user started over
    assert moves.superseded["taken over"], moves.superseded
    assert moves.superseded["reset"], moves.superseded


async def _create(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass  # once, before the workers race to open it


async def _continuity_events(db_path: Path) -> list[StoredEvent]:
    async with Tracker.open(db_path, create=False) as t:
        return [e async for e in t.events(types=CONTINUITY_EVENTS)]


class _Continuity:
    """Where each agent goes on, worked out from the log alone: the session a request
    resumes (CURRENT, read under the lock in the transaction that tracks it) is the
    agent's current one then, and an answer moves the agent on unless its lock was
    taken over or the agent was reset since it was tracked."""

    def __init__(self) -> None:
        self.current: dict[str, str | None] = {}
        self.superseded: Counter[str] = Counter()
        self._token: dict[str, int] = {}  # the agent's lock, as last taken
        self._reset_at: dict[str, int] = {}
        self._turn: dict[str, tuple[int, int]] = {}  # request: (last seq tracking it, token)

    def check(self, log: list[StoredEvent]) -> _Continuity:
        for stored in log:
            self._apply(stored.seq, stored.event)
        return self

    def _apply(self, seq: int, event: object) -> None:
        if isinstance(event, LockAcquired) and event.scope == "agent":
            self._token[event.target] = seq
            if event.request_id is not None:
                self._turn[event.request_id] = (seq, seq)
        elif isinstance(event, RequestTracked) and event.agent_id is not None:
            assert event.resumed_session_id == self.current.get(event.agent_id), seq
            self.current.setdefault(event.agent_id, None)
        elif isinstance(event, SessionAssigned) and event.agent_id is not None:
            self._assigned(seq, event.agent_id, event)
        elif isinstance(event, SessionExpired | SessionDeleted) and event.agent_id is not None:
            if self.current.get(event.agent_id) == event.session_id:
                self.current[event.agent_id] = None
        elif isinstance(event, AgentReset):
            self.current[event.agent_id], self._reset_at[event.agent_id] = None, seq

    def _assigned(self, seq: int, agent: str, event: SessionAssigned) -> None:
        tracked, token = self._turn[event.request_id]
        taken_over = self._token[agent] != token
        reset = self._reset_at.get(agent, 0) > tracked
        assert event.superseded == (taken_over or reset), (seq, taken_over, reset)
        self.superseded.update({"taken over": taken_over, "reset": reset})
        if not event.superseded:
            self.current[agent] = event.session_id


async def _lock_events(db_path: Path) -> list[StoredEvent]:
    async with Tracker.open(db_path, create=False) as t:
        return [e async for e in t.events(types=LOCK_EVENTS)]


def _assert_one_holder_per_lock(lock_events: list[StoredEvent]) -> None:
    """On every lock, each event names the holder and token the one before left it with,
    and a lock is taken from its holder only once its lease has run out."""
    held: dict[tuple[str, str], tuple[str, int] | None] = {}
    lease_ends: dict[tuple[str, str], datetime] = {}
    for stored in lock_events:
        event = stored.event
        assert isinstance(event, LockEvent)
        key, now = (event.scope, event.target), held.get((event.scope, event.target))
        if isinstance(event, LockAcquired):
            assert now is None, f"seq {stored.seq}: {event.holder} took {key} from {now}"
            held[key], lease_ends[key] = (event.holder, stored.seq), event.expires_at
            continue
        assert isinstance(event, LockRenewed | LockReleased | LockExpired)
        assert now == (event.holder, event.token), (stored.seq, now)
        if isinstance(event, LockRenewed):
            lease_ends[key] = event.expires_at
            continue
        if isinstance(event, LockExpired):
            assert lease_ends[key] <= stored.at, f"seq {stored.seq}: {now} lost a live lease"
        held[key] = None
