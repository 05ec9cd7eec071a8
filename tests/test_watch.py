"""Waiting for commits: one look at the wal-index for every waiter, none missed."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import run_python
from tracker import Tracker
from tracker.events import RequestTracked
from tracker.store import EventStore
from tracker.transaction import NoProjections
from tracker.watch import CommitWatch

Store = EventStore[NoProjections]


@pytest.fixture
async def stores(db_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one file: the second's commits are another connection's."""
    async with (
        EventStore.open(db_path, NoProjections()) as first,
        EventStore.open(db_path, NoProjections()) as second,
    ):
        yield first, second


async def commit(store: Store, name: str) -> None:
    await store.append([RequestTracked(request_id=name, agent_id="a1")])


def commit_without_yielding(path: Path) -> None:
    """A commit by another connection that lets no other task run meanwhile."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {version}")  # rewrites page 1: a commit
    finally:
        conn.close()


async def until(condition: Any) -> None:
    with anyio.fail_after(10):
        while not condition():
            await anyio.sleep(0.001)


async def test_a_commit_after_the_ticket_ends_the_wait_and_one_before_does_not(
    stores: tuple[Store, Store],
) -> None:
    mine, other = stores
    ticket = mine.changes.ticket()
    await commit(other, "r1")
    assert await mine.changes.wait(ticket, within=10, every=0.01)
    ticket = mine.changes.ticket()  # after the commit: it was not made after this one
    assert not await mine.changes.wait(ticket, within=0.2, every=0.01)
    await commit(other, "r2")  # while nobody waits: no look saw it
    ticket = mine.changes.ticket()
    assert not await mine.changes.wait(ticket, within=0.2, every=0.01)


async def test_this_process_commit_wakes_a_waiter_at_once(stores: tuple[Store, Store]) -> None:
    mine, _ = stores
    woken = []

    async def waiter() -> None:
        woken.append(await mine.changes.wait(mine.changes.ticket(), within=5, every=3600))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(lambda: mine.changes._polling)
        await commit(mine, "r1")
    assert woken == [True]  # not after an hour's look, nor at the end of within


TRACK = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.track_request("from-child", agent_id="a9")
anyio.run(main)
"""


async def test_another_process_commit_wakes_a_waiter(db_path: Path) -> None:
    async with Tracker.open(db_path) as tracker:
        await tracker.track_request("r0", agent_id="a1")  # the file and its WAL exist
        watch = tracker._store.changes
        ticket = watch.ticket()
        async with anyio.create_task_group() as tg:
            woken: list[bool] = []

            async def waiter() -> None:
                woken.append(await watch.wait(ticket, within=60, every=0.02))

            tg.start_soon(waiter)
            done = await anyio.to_thread.run_sync(run_python, TRACK, str(db_path))
            assert done.returncode == 0, done.stderr
        assert woken == [True]
        assert await tracker.get_request("from-child") is not None


async def test_many_waiters_share_one_look(stores: tuple[Store, Store]) -> None:
    mine, _ = stores
    watch, looks = mine.changes, [0]
    version = watch._version

    def counted() -> object:
        looks[0] += 1
        return version()

    watch._version = counted
    tickets = [watch.ticket() for _ in range(50)]
    looks[0] = 0
    outcomes = []

    async def waiter(ticket: Any) -> None:
        outcomes.append(await watch.wait(ticket, within=0.5, every=0.02))

    async with anyio.create_task_group() as tg:
        for ticket in tickets:
            tg.start_soon(waiter, ticket)
    assert outcomes == [False] * 50
    # one poller: about 0.5 / 0.02 = 25 looks; 50 waiters looking each would be 1,250
    assert looks[0] <= 60, looks


async def test_a_leaving_poller_hands_polling_over(stores: tuple[Store, Store]) -> None:
    mine, other = stores
    watch, woken = mine.changes, []

    async def waiter(within: float) -> None:
        woken.append((within, await watch.wait(watch.ticket(), within=within, every=0.01)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter, 0.1)  # the poller, gone after 0.1 s
        await until(lambda: watch._polling)
        tg.start_soon(waiter, 5)
        await until(lambda: woken)
        await anyio.sleep(0.05)
        await commit(other, "r1")  # only a look finds it: another connection's
    assert woken == [(0.1, False), (5, True)]


async def test_a_waiter_woken_late_sees_a_change_in_a_round_it_missed(
    stores: tuple[Store, Store], db_path: Path
) -> None:
    mine, _ = stores
    watch: CommitWatch = mine.changes
    woken = []

    async def waiter() -> None:
        woken.append(await watch.wait(watch.ticket(), within=2, every=3600))

    watch._polling = True  # as if another waiter polled: this one only waits
    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await until(lambda: watch._intervals)
        # two rounds end before the waiter runs again: a hand-over, then a commit
        watch._end_round(changed=False)
        commit_without_yielding(db_path)
        watch.ticket()  # the look that sees it
        watch._polling = False
    assert woken == [True]


async def test_a_commit_seen_by_a_new_ticket_wakes_the_sleeping_poller(
    stores: tuple[Store, Store], db_path: Path
) -> None:
    watch, woken = stores[0].changes, []

    async def poller() -> None:
        woken.append(await watch.wait(watch.ticket(), within=5, every=3600))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poller)
        await until(lambda: watch._polling)
        commit_without_yielding(db_path)  # another connection: nothing notifies
        watch.ticket()  # another caller's look sees it before the poller's next one
    assert woken == [True]
