"""Callers cancelled at every await point: no partial state, no leaked lock, still usable.

A clock whose ``now()`` sleeps holds the writer's transaction open (the writer
reads the clock when a transaction starts), so a cancellation can be aimed at
a job that is queued, running, or committed.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from tests.helpers import event_count, rows
from tracker import ManualClock, Tracker
from tracker.events import RequestTracked
from tracker.store import EventStore, NoProjections


class SlowClock(ManualClock):
    """A manual clock that takes ``delay`` seconds to answer (on the writer's thread)."""

    delay = 0.0

    def now(self) -> datetime:
        time.sleep(self.delay)
        return super().now()


@pytest.fixture
def slow() -> SlowClock:
    return SlowClock()


async def test_a_track_cancelled_while_queued_is_withdrawn(db_path: Path, slow: SlowClock) -> None:
    async with Tracker.open(db_path, clock=slow) as t:
        slow.delay = 0.1
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: t.track_request("blocker", agent_id="a0"))  # holds the writer
            await anyio.sleep(0.02)
            with anyio.move_on_after(0.02):
                await t.track_request("r1", agent_id="a1", lock=True)  # queued behind it
        slow.delay = 0.0
        assert await t.get_request("r1") is None
        assert await t.get_lock(agent_id="a1") is None
        assert (await t.verify()).ok


async def test_a_track_cancelled_while_running_is_undone(db_path: Path, slow: SlowClock) -> None:
    async with Tracker.open(db_path, clock=slow) as t:
        slow.delay = 0.05
        with anyio.move_on_after(0.01):
            await t.track_request("r1", agent_id="a1", lock=True)
        slow.delay = 0.0
        request = await t.get_request("r1")
        assert request is not None
        assert (request.status, request.error_kind) == ("failed", "cancelled")
        lock = await t.get_lock(agent_id="a1")
        assert lock is not None
        assert (lock.holder, lock.status) == ("r1", "released")
        await t.track_request("r2", agent_id="a1", lock=True)  # the conversation is free
        assert (await t.verify()).ok


async def test_a_call_cancelled_while_its_job_fails_undoes_nothing(
    db_path: Path, slow: SlowClock
) -> None:
    async with Tracker.open(db_path, clock=slow) as t:
        await t.track_request("r1", agent_id="a1")
        before = event_count(db_path)
        slow.delay = 0.05
        with anyio.move_on_after(0.01) as scope:  # the repeat with other arguments fails
            await t.track_request("r1", agent_id="a2", lock=True)
        slow.delay = 0.0
        assert scope.cancelled_caught  # cancelled, not the job's error nor an undo's
        assert event_count(db_path) == before
        request = await t.get_request("r1")
        assert request is not None
        assert (request.agent_id, request.status) == ("a1", "pending")
        assert (await t.verify()).ok


async def test_cancellation_at_every_moment_leaves_no_request_holding_a_lock(
    tracker: Tracker,
) -> None:
    for i, after in enumerate([0.0, 0.0001, 0.0003, 0.0007, 0.001, 0.002, 0.004, 0.008] * 2):
        rid = f"r{i}"
        with anyio.move_on_after(after):
            await tracker.track_request(rid, agent_id="a1", lock=True)
        request = await tracker.get_request(rid)
        lock = await tracker.get_lock(agent_id="a1")
        if lock is not None and lock.status == "held":
            assert lock.holder == rid
            assert request is not None
            assert request.status == "pending"  # it returned: the caller knows it holds it
            await tracker.fail_request(rid, error="done")
        else:
            assert request is None or request.error_kind == "cancelled", request
    assert (await tracker.verify()).ok


async def test_a_cancelled_acquire_gives_the_lock_back(db_path: Path, slow: SlowClock) -> None:
    async with Tracker.open(db_path, clock=slow) as t:
        slow.delay = 0.05
        with anyio.move_on_after(0.01):
            await t.acquire_lock(agent_id="a1", holder="h1")
        slow.delay = 0.0
        lock = await t.get_lock(agent_id="a1")
        assert lock is not None
        assert (lock.holder, lock.status) == ("h1", "released")
        taken = await t.acquire_lock(agent_id="a1", holder="h2")  # free at once
        assert taken.holder == "h2"


async def test_a_cancelled_retry_keeps_the_lock_it_already_held(
    db_path: Path, slow: SlowClock
) -> None:
    async with Tracker.open(db_path, clock=slow) as t:
        await t.acquire_lock(agent_id="a1", holder="h1")
        slow.delay = 0.05
        with anyio.move_on_after(0.01):
            await t.acquire_lock(agent_id="a1", holder="h1")  # a retry, then cancelled
        slow.delay = 0.0
        lock = await t.get_lock(agent_id="a1")
        assert lock is not None
        assert (lock.holder, lock.status) == ("h1", "held")


async def test_a_cancelled_waiter_never_gets_the_lock(tracker: Tracker) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1")
    with anyio.move_on_after(0.1):
        await tracker.acquire_lock(agent_id="a1", holder="h2", wait=10)
    await tracker.release_lock(agent_id="a1", holder="h1")
    await anyio.sleep(0.3)  # a leftover waiter would take it now
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert (lock.holder, lock.status) == ("h1", "released")
    taken = await tracker.acquire_lock(agent_id="a1", holder="h3")  # free: nobody took it
    assert taken.holder == "h3"


@pytest.mark.parametrize("after", [0.0, 0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02])
async def test_cancelled_appends_are_all_or_nothing(db_path: Path, after: float) -> None:
    async with EventStore.open(db_path, NoProjections()) as store:
        with anyio.move_on_after(after):
            async with anyio.create_task_group() as tg:
                for i in range(50):
                    events = [
                        RequestTracked(request_id=f"r{i}-{k}", agent_id=f"a{i}") for k in range(3)
                    ]
                    tg.start_soon(store.append, events)
        await store.append([RequestTracked(request_id="after")])
        assert (await store.verify_chain()).ok
    counts = rows(db_path, "SELECT agent_id, count(*) FROM events GROUP BY agent_id")
    assert all(n == 3 for agent, n in counts if agent is not None), counts
    assert event_count(db_path) == 3 * (len(counts) - 1) + 1


async def test_closing_while_calls_are_in_flight_loses_no_acknowledged_call(
    db_path: Path,
) -> None:
    acknowledged: list[str] = []
    async with Tracker.open(db_path) as t:

        async def caller(i: int) -> None:
            await t.track_request(f"r{i}", agent_id=f"a{i}")
            acknowledged.append(f"r{i}")

        with anyio.move_on_after(0.02):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(caller, i)
    tracked = {r for (r,) in rows(db_path, "SELECT request_id FROM requests")}
    assert set(acknowledged) <= tracked
