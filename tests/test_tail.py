"""Followers share the reads of new events: one read per commit for all that have
caught up, and none missed or given twice, however commits and followers interleave."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import start_python
from tracker import CURRENT, Tracker
from tracker.events import StoredEvent
from tracker.store import Filter
from tracker.tail import SharedTail

Key = tuple[str | None, str | None, tuple[str, ...]]  # agent, session, types


def count_reads(tracker: Tracker) -> list[int]:
    """Count the reader's hops from now on (shared reads and followers' own)."""
    store, reads = tracker._store, [0]
    read_with = store.read_with

    async def counted(fn: Callable[[Any], Any]) -> Any:
        reads[0] += 1
        return await read_with(fn)

    store.read_with = counted  # type: ignore[method-assign]
    return reads


async def until(condition: Callable[[], bool], within: float = 10) -> bool:
    """Wait until ``condition()`` holds (True) or ``within`` seconds have passed (False)."""
    with anyio.move_on_after(within):
        while not condition():
            await anyio.sleep(0.002)
        return True
    return False


async def turn(t: Tracker, agent: str, n: int, fails: bool = False) -> None:
    """One conversation turn of ``agent``: three commits."""
    await t.track_request(f"{agent}-r{n}", agent_id=agent, session_id=CURRENT)
    await t.update_request_session(f"{agent}-r{n}", f"{agent}-s{n // 2}")
    if fails:
        await t.fail_request(f"{agent}-r{n}", error="timeout", kind="timeout")
    else:
        await t.complete_request(f"{agent}-r{n}")


async def test_idle_followers_read_nothing_until_a_commit_then_share_its_read(
    tracker: Tracker,
) -> None:
    reads = count_reads(tracker)
    seen: list[str] = []

    async def follower() -> None:
        async for event in tracker.events(follow=True, limit=1):
            seen.append(event.type)

    with anyio.fail_after(10):  # a follower that missed the commit would wait forever
        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(follower)
            assert await until(lambda: reads[0] >= 20)  # each has read once, on its own
            await anyio.sleep(0.3)  # six looks' worth of time
            assert reads[0] == 20  # nothing since
            await tracker.track_request("r1", agent_id="a1")
    assert seen == ["RequestTracked"] * 20
    assert reads[0] == 21  # the commit's new event was read once for the twenty


async def test_followers_of_many_agents_read_once_per_commit_not_once_each(
    tracker: Tracker,
) -> None:
    got: dict[str, list[int]] = {f"a{i}": [] for i in range(50)}
    reads = count_reads(tracker)

    async def follower(agent: str) -> None:
        async for event in tracker.events(follow=True, agent_id=agent):
            got[agent].append(event.seq)

    async with anyio.create_task_group() as tg:
        for agent in got:
            tg.start_soon(follower, agent)
        assert await until(lambda: reads[0] >= 50)  # each has read once, on its own
        await anyio.sleep(0.05)
        before = reads[0]
        for n in range(10):
            await turn(tracker, f"a{n}", n)
        commits = 30
        assert await until(lambda: all(len(got[f"a{n}"]) == 3 for n in range(10)))
        tg.cancel_scope.cancel()
    assert reads[0] - before <= commits  # one for each commit
    # (each follower reading on its own: 50 reads a commit, 1,500)
    for agent, seqs in got.items():
        expected = [e.seq async for e in tracker.events(agent_id=agent)]
        assert seqs == expected, agent


def filters() -> list[Key]:
    agents: list[str | None] = [None, "a0", "a1", "a3"]
    sessions: list[str | None] = [None, "a1-s1", "a2-s0"]
    types: list[tuple[str, ...]] = [(), ("RequestFailed",), ("RequestTracked", "SessionAssigned")]
    return list(itertools.product(agents, sessions, types))


WRITER = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        for n in range(int(sys.argv[2])):
            r = f"child-r{n}"
            await t.track_request(r, agent_id="a3")
            await t.update_request_session(r, f"child-s{n}")
            await t.fail_request(r, error="timeout", kind="timeout")
anyio.run(main)
"""


@pytest.mark.parametrize("batch", [1000, 3])
async def test_every_follower_gets_exactly_its_events_while_writers_race(
    db_path: Path, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followers with every kind of filter, started at different points, some slow;
    writers in this process and in another commit all the while. Once the writers
    are done, with no commit to wake anyone, each follower has every event its
    filter matches, in order, once. With a read size of 3 most reads are full:
    followers ask again, fall behind the shared window and catch up on their own."""
    monkeypatch.setattr("tracker.store.FOLLOW_BATCH", batch)
    rng = random.Random(7)
    async with Tracker.open(db_path) as tracker:
        got: dict[int, list[StoredEvent]] = {}
        keys = filters()

        async def follower(i: int, key: Key, since: int, slow: bool) -> None:
            agent, session, types = key
            stream = tracker.events(
                since, follow=True, agent_id=agent, session_id=session, types=types, poll=0.01
            )
            async for event in stream:
                got[i].append(event)
                if slow:
                    await anyio.sleep(0.003)

        async def writer(agent: str, turns: int) -> None:
            for n in range(turns):
                await turn(tracker, agent, n, fails=n % 4 == 0)
                await anyio.sleep(rng.random() / 500)

        child = start_python(WRITER, str(db_path), "15")
        starts: dict[int, int] = {}
        async with anyio.create_task_group() as tg:
            for agent in ("a0", "a1", "a2"):
                tg.start_soon(writer, agent, 12)
            for i, key in enumerate(keys * 2):
                await anyio.sleep(rng.random() / 200)  # joining as the log grows
                head = [e.seq async for e in tracker.events(last=1)]
                starts[i] = rng.choice([0, head[0] if head else 0])
                got[i] = []
                tg.start_soon(follower, i, key, starts[i], i % 5 == 0)
            await anyio.to_thread.run_sync(child.communicate)
            assert child.returncode == 0
            log = [e async for e in tracker.events()]

            def expected(i: int) -> list[int]:
                where = _filter(keys[i % len(keys)])
                return [e.seq for e in log if e.seq > starts[i] and where.matches(e)]

            await until(lambda: all([e.seq for e in got[i]] == expected(i) for i in got))
            tg.cancel_scope.cancel()
    assert len(log) == 3 * 12 * 3 + 3 * 15
    for i, events in got.items():
        assert [e.seq for e in events] == expected(i), (i, keys[i % len(keys)], starts[i])
    assert len({i for i in got if starts[i]}) > 5  # some joined late, some from the start


def _filter(key: Key) -> Filter:
    agent, session, types = key
    return Filter(agent_id=agent, session_id=session, types=types)


async def test_filter_matches_what_its_query_reads(tracker: Tracker) -> None:
    """The in-memory test that followers of the shared window use is the query's."""
    for agent, n in itertools.product(("a0", "a1", "a2", "a3"), range(4)):
        await turn(tracker, agent, n, fails=n == 3)
    await tracker.expire_session("a1-s1")
    store = tracker._store
    log = await store.read(0, limit=10_000)
    for key in filters():
        where = _filter(key)
        for requested in (None, "a1-r2"):
            where = Filter(
                request_id=requested,
                agent_id=where.agent_id,
                session_id=where.session_id,
                types=where.types,
            )
            read = await store.read(0, where=where, limit=10_000)
            assert [e.seq for e in log if where.matches(e)] == [e.seq for e in read], where


async def test_a_follower_ahead_of_the_log_gets_only_what_comes_after_its_since(
    tracker: Tracker,
) -> None:
    await turn(tracker, "a0", 0)
    got: list[int] = []

    async def follower(since: int) -> None:
        async for event in tracker.events(since, follow=True, limit=2):
            got.append(event.seq)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower, 4)  # the log ends at 3
            tg.start_soon(follower, 0)
            await anyio.sleep(0.05)
            await turn(tracker, "a1", 0)
    assert sorted(got) == [1, 2, 5, 6]


async def test_the_window_keeps_the_newest_reads_and_sends_followers_behind_it_away(
    tracker: Tracker,
) -> None:
    for n in range(4):
        await turn(tracker, "a0", n)  # 12 events
    store = tracker._store
    reads: list[int] = []

    async def read_after(since: int, limit: int) -> list[StoredEvent]:
        reads.append(since)
        return await store.read(since, limit=limit)

    tail = SharedTail(read_after, store.changes.ticket, 5)
    everything = Filter()

    async def after(last: int) -> tuple[list[int], int, bool] | None:
        taken = await tail.after(last, everything, store.changes.ticket())
        return None if taken is None else ([e.seq for e in taken.events], taken.upto, taken.more)

    assert await after(0) == ([1, 2, 3, 4, 5], 5, True)  # a full read: ask again
    assert await after(5) == ([6, 7, 8, 9, 10], 10, True)  # the window: 6-10
    assert await after(4) is None  # behind it: read on your own
    assert await after(7) == ([8, 9, 10, 11, 12], 12, False)  # window 8-12, complete
    assert await after(6) is None
    assert await after(9) == ([10, 11, 12], 12, False)  # no commit since: no read
    assert reads == [0, 5, 10]
    assert await after(20) == ([], 20, False)  # ahead of the log: the window starts there
    assert await after(12) is None


async def test_a_follower_far_past_the_log_does_not_take_the_window_from_the_others(
    tracker: Tracker,
) -> None:
    """A long poll for events past the log's end (``since`` beyond its last seq) is a
    follower like the others: it must not move the shared window past the log, where
    every other follower would be behind it and read on its own at every commit."""
    await turn(tracker, "a0", 0)
    reads = count_reads(tracker)
    got: dict[str, list[int]] = {f"a{i}": [] for i in range(10)}

    async def follower(agent: str, since: int) -> None:
        async for event in tracker.events(since, follow=True, agent_id=agent):
            got[agent].append(event.seq)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower, "a9", 2**62)
            for i in range(9):
                tg.start_soon(follower, f"a{i}", 3)
            assert await until(lambda: reads[0] >= 10)  # each has read once, on its own
            await anyio.sleep(0.05)
            before = reads[0]
            for n in range(1, 6):
                await turn(tracker, f"a{n}", n)
            assert await until(lambda: all(len(got[f"a{n}"]) == 3 for n in range(1, 6)))
            tg.cancel_scope.cancel()
    assert reads[0] - before <= 15  # one read a commit, shared by the ten
    assert got["a9"] == []
