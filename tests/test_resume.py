"""session_id=CURRENT: the agent's current session, decided when the request is tracked
(under the agent's lock with lock=True), so a request that waited for the lock continues
the session its predecessor was given; and the answer to a request whose lock was taken
over, or whose agent was reset since, does not move the agent on (it is superseded: its
session is a branch of the chain)."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from tests.helpers import event_count, rows
from tracker import CURRENT, InvalidInput, ManualClock, Request, Tracker


async def track_current(tracker: Tracker, request_id: str, agent_id: str = "a1") -> Request:
    return await tracker.track_request(
        request_id, agent_id=agent_id, session_id=CURRENT, lock=True, lock_wait=10
    )


async def first_turn(tracker: Tracker) -> None:
    """Agent a1's first request, r1, answered with session s1 and completed."""
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "s1")
    await tracker.complete_request("r1")


async def test_a_request_that_waited_for_the_lock_resumes_what_its_predecessor_got(
    tracker: Tracker, db_path: Path
) -> None:
    first = await track_current(tracker, "r1")
    assert first.resumed_session_id is None  # a new agent: a new conversation
    waited: list[Request] = []

    async def second() -> None:
        waited.append(await track_current(tracker, "r2"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.1)
        assert not waited  # the first still holds the agent's lock
        await tracker.update_request_session("r1", "s1")
        await tracker.complete_request("r1")
    assert waited[0].resumed_session_id == "s1"
    await tracker.update_request_session("r2", "s2")
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.parent_session_id) for s in chain] == [("s1", None), ("s2", "s1")]
    logged = rows(
        db_path,
        "SELECT json_extract(payload, '$.resumed_session_id') FROM events "
        "WHERE type = 'RequestTracked' AND request_id = 'r2'",
    )
    assert logged == [("s1",)]  # the log holds the session decided, not the marker


async def test_callers_racing_for_one_agent_grow_one_line(tracker: Tracker) -> None:
    rng = random.Random(5)

    async def turn(k: int) -> None:
        await anyio.sleep(rng.random() / 100)
        await track_current(tracker, f"r{k}")
        await anyio.sleep(rng.random() / 200)
        await tracker.update_request_session(f"r{k}", f"s{k}")  # an old CLI: a new id
        await tracker.complete_request(f"r{k}")

    async with anyio.create_task_group() as tg:
        for k in range(30):
            tg.start_soon(turn, k)
    chain = await tracker.get_chain("a1")
    assert len(chain) == 30
    parents = [s.parent_session_id for s in chain]
    assert parents == [None] + [s.session_id for s in chain[:-1]]  # no root twice, no fork
    assert await tracker.get_agent_session("a1") == chain[-1].session_id


async def test_without_a_lock_it_is_the_current_session_when_tracked(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "s1")
    request = await tracker.track_request("r2", agent_id="a1", session_id=CURRENT)
    assert request.resumed_session_id == "s1"
    other = await tracker.track_request("r3", agent_id="a2", session_id=CURRENT)
    assert other.resumed_session_id is None


@pytest.mark.parametrize("retire", ["expire", "delete", "reset"])
async def test_a_retired_session_is_not_resumed(tracker: Tracker, retire: str) -> None:
    await first_turn(tracker)
    if retire == "expire":
        await tracker.expire_session("s1")
    elif retire == "delete":
        await tracker.delete_session("s1")
    else:
        await tracker.reset_agent("a1")
    request = await track_current(tracker, "r2")
    assert request.resumed_session_id is None


async def test_a_retry_returns_the_request_as_first_tracked(
    tracker: Tracker, db_path: Path
) -> None:
    await track_current(tracker, "r1")
    await tracker.update_request_session("r1", "s1")
    await tracker.complete_request("r1")
    first = await track_current(tracker, "r2")
    await tracker.update_request_session("r2", "s2")  # a1's current session is now s2
    before = event_count(db_path)
    again = await track_current(tracker, "r2")
    assert again.resumed_session_id == first.resumed_session_id == "s1"
    assert event_count(db_path) == before


async def test_without_an_agent_it_is_refused(tracker: Tracker, db_path: Path) -> None:
    before = event_count(db_path)
    with pytest.raises(InvalidInput, match=r"session_id=CURRENT .* agent_id"):
        await tracker.track_request("r1", session_id=CURRENT)
    assert event_count(db_path) == before
    assert await tracker.get_request("r1") is None


async def superseded(tracker: Tracker, db_path: Path, request_id: str) -> bool:
    """Whether the request's answer came once the agent had moved on, as the log says;
    the request says the same."""
    sql = (
        "SELECT json_extract(payload, '$.superseded') FROM events "
        "WHERE type = 'SessionAssigned' AND request_id = ?"
    )
    [(flag,)] = rows(db_path, sql, (request_id,))
    request = await tracker.get_request(request_id)
    assert request is not None
    assert request.superseded is bool(flag)
    return bool(flag)


@pytest.mark.parametrize("successor", ["running", "finished"])
async def test_a_request_whose_lock_was_taken_over_does_not_move_the_agent_on(
    tracker: Tracker, db_path: Path, clock: ManualClock, successor: str
) -> None:
    await first_turn(tracker)
    stalled = await tracker.track_request("r2", agent_id="a1", session_id=CURRENT, lock=True)
    clock.advance(31)  # r2's lock lapsed (its orchestrator stalled); r3 takes the agent over
    taker = await tracker.track_request("r3", agent_id="a1", session_id=CURRENT, lock=True)
    assert stalled.resumed_session_id == taker.resumed_session_id == "s1"
    await tracker.update_request_session("r3", "s3")
    if successor == "finished":
        await tracker.complete_request("r3")
    late = await tracker.update_request_session("r2", "s2")  # the stalled CLI answers at last
    assert (late.session_id, late.status, late.superseded) == ("s2", "active", True)
    assert await tracker.get_agent_session("a1") == "s3"  # the new holder's turn goes on
    chain = await tracker.get_chain("a1")
    assert {(s.session_id, s.parent_session_id) for s in chain} == {
        ("s1", None),
        ("s3", "s1"),
        ("s2", "s1"),  # kept, as a branch
    }
    assert await superseded(tracker, db_path, "r2")
    assert not await superseded(tracker, db_path, "r3")
    await tracker.complete_request("r2")
    after = await tracker.track_request("r4", agent_id="a1", session_id=CURRENT)
    assert after.resumed_session_id == "s3"
    assert (await tracker.verify()).ok  # the rebuilt agents table agrees


@pytest.mark.parametrize("recorded", [False, True])
async def test_a_lapsed_lock_nobody_took_still_moves_the_agent_on(
    tracker: Tracker, db_path: Path, clock: ManualClock, recorded: bool
) -> None:
    await tracker.track_request("r1", agent_id="a1", lock=True)
    clock.advance(31)
    if recorded:  # cleanup recorded the lapse (LockExpired): still nobody else's turn
        report = await tracker.cleanup()
        assert report.expired_locks == ["agent:a1"]
    await tracker.update_request_session("r1", "s1")
    assert await tracker.get_agent_session("a1") == "s1"
    assert not await superseded(tracker, db_path, "r1")


async def test_a_same_id_answer_after_a_takeover_leaves_the_new_holders_session(
    tracker: Tracker, db_path: Path, clock: ManualClock
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "s1")
    await tracker.track_request("r2", agent_id="a1", session_id=CURRENT, lock=True)
    clock.advance(31)
    await tracker.track_request("r3", agent_id="a1", session_id=CURRENT, lock=True)
    await tracker.update_request_session("r3", "s3")
    await tracker.update_request_session("r2", "s1")  # a current CLI: the same id, late
    assert await superseded(tracker, db_path, "r2")
    assert await tracker.get_agent_session("a1") == "s3"
    session = await tracker.get_session("s1")
    assert session is not None
    assert session.request_count == 2  # it did continue s1


async def test_an_answer_to_a_request_tracked_before_a_reset_does_not_undo_it(
    tracker: Tracker, db_path: Path
) -> None:
    await first_turn(tracker)
    await tracker.track_request("r2", agent_id="a1", session_id=CURRENT)  # in flight...
    await tracker.reset_agent("a1")  # ...when the user starts over
    fresh = await tracker.track_request("r3", agent_id="a1", session_id=CURRENT)
    assert fresh.resumed_session_id is None
    await tracker.update_request_session("r2", "s2")  # the old conversation answers late
    assert await superseded(tracker, db_path, "r2")
    assert await tracker.get_agent_session("a1") is None  # still starting over
    await tracker.update_request_session("r3", "s3")
    assert not await superseded(
        tracker, db_path, "r3"
    )  # tracked after the reset: it moves the agent on
    assert await tracker.get_agent_session("a1") == "s3"
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.parent_session_id) for s in chain] == [
        ("s1", None),
        ("s2", "s1"),  # kept, as a branch of the old chain
        ("s3", None),
    ]
    assert (await tracker.verify()).ok


async def test_a_reset_before_the_first_answer_still_starts_over(
    tracker: Tracker, db_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1", lock=True)
    await tracker.reset_agent("a1")  # no session yet, but one is coming
    before = event_count(db_path)
    await tracker.reset_agent("a1")  # a retry: nothing happened since
    assert event_count(db_path) == before
    await tracker.update_request_session("r1", "s1")
    assert await superseded(tracker, db_path, "r1")
    assert await tracker.get_agent_session("a1") is None
