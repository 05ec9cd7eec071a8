"""Conversation locks: contention, TTL and takeover, fencing tokens, waiting, release."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import event_count, rows
from tracker import LockHeld, LockNotHeld, ManualClock, Tracker
from tracker.clock import from_iso
from tracker.events import LockAcquired, LockEvent, LockExpired, LockReleased, LockRenewed


async def test_a_second_holder_is_refused_while_the_lock_is_held(
    tracker: Tracker, db_path: Path
) -> None:
    lock = await tracker.acquire_lock(agent_id="a1", holder="req-1", ttl=30)
    assert (lock.scope, lock.target, lock.holder, lock.status) == ("agent", "a1", "req-1", "held")
    before = event_count(db_path)
    with pytest.raises(LockHeld, match="'req-1'"):
        await tracker.acquire_lock(agent_id="a1", holder="req-2")
    with pytest.raises(LockHeld):
        await tracker.track_request("req-2", agent_id="a1", lock=True)
    assert await tracker.get_request("req-2") is None  # atomic: no request without its lock
    assert event_count(db_path) == before


async def test_the_holder_acquiring_again_gets_the_same_lock(tracker: Tracker) -> None:
    first = await tracker.acquire_lock(agent_id="a1", holder="req-1")
    assert await tracker.acquire_lock(agent_id="a1", holder="req-1") == first


async def test_an_expired_lock_is_taken_over_with_a_higher_token(
    tracker: Tracker, clock: ManualClock
) -> None:
    old = await tracker.acquire_lock(agent_id="a1", holder="req-1", ttl=30)
    clock.advance(31)
    new = await tracker.acquire_lock(agent_id="a1", holder="req-2", ttl=30)
    assert new.token > old.token
    assert new.holder == "req-2"
    types = [e.type async for e in tracker.events(agent_id="a1")]
    assert types[-2:] == ["LockExpired", "LockAcquired"]
    with pytest.raises(LockNotHeld, match="'req-1' does not hold it"):
        await tracker.release_lock(agent_id="a1", holder="req-1")
    stats = await tracker.stats()
    assert stats.lock_expiries == 1


async def test_fencing_tokens_strictly_increase_across_all_locks(tracker: Tracker) -> None:
    tokens = []
    for i in range(3):
        for agent in ("a1", "a2"):
            lock = await tracker.acquire_lock(agent_id=agent, holder=f"h{i}")
            tokens.append(lock.token)
            await tracker.release_lock(agent_id=agent, holder=f"h{i}")
    assert tokens == sorted(set(tokens))


async def test_completion_releases_the_request_lock_but_not_a_successor(
    tracker: Tracker, clock: ManualClock
) -> None:
    await tracker.track_request("r1", agent_id="a1", lock=True, lock_ttl=10)
    await tracker.update_request_session("r1", "S1")
    clock.advance(11)  # r1's lock expired; r2 takes the conversation over
    await tracker.track_request("r2", agent_id="a1", session_id="S1", lock=True)
    await tracker.complete_request("r1")  # late: must not release r2's lock
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert (lock.holder, lock.status) == ("r2", "held")


async def test_release_twice_is_a_retry_but_releasing_anothers_lock_is_refused(
    tracker: Tracker,
) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1")
    await tracker.release_lock(agent_id="a1", holder="h1")
    await tracker.release_lock(agent_id="a1", holder="h1")
    with pytest.raises(LockNotHeld):
        await tracker.release_lock(agent_id="a1", holder="h2")
    with pytest.raises(LockNotHeld):
        await tracker.release_lock(agent_id="never", holder="h1")


async def test_renewal_extends_the_lock_and_keeps_its_token(
    tracker: Tracker, clock: ManualClock
) -> None:
    lock = await tracker.acquire_lock(agent_id="a1", holder="h1", ttl=10)
    clock.advance(8)
    renewed = await tracker.renew_lock(agent_id="a1", holder="h1", ttl=10)
    assert renewed.token == lock.token
    assert renewed.expires_at > lock.expires_at
    clock.advance(8)  # past the first expiry, within the renewed one
    with pytest.raises(LockHeld):
        await tracker.acquire_lock(agent_id="a1", holder="h2")
    with pytest.raises(LockNotHeld):
        await tracker.renew_lock(agent_id="a1", holder="h2")


async def test_waiting_gets_the_lock_when_the_holder_releases(tracker: Tracker) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1")
    got = []

    async def waiter() -> None:
        got.append(await tracker.acquire_lock(agent_id="a1", holder="h2", wait=5))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        assert not got
        await tracker.release_lock(agent_id="a1", holder="h1")
    assert got[0].holder == "h2"
    stats = await tracker.stats()
    assert stats.lock_waits == 1
    assert stats.lock_wait_ms >= 50


async def test_a_free_lock_taken_with_wait_is_not_counted_as_contended(tracker: Tracker) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1", wait=5)
    await tracker.track_request("r1", agent_id="a2", lock=True, lock_wait=5)
    stats = await tracker.stats()
    assert (stats.lock_acquisitions, stats.lock_waits, stats.lock_wait_ms) == (2, 0, 0)


async def test_an_uncontended_lock_with_wait_costs_no_read(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_reader() -> None:
        raise AssertionError("the first attempt must not cross to the reader's thread")

    monkeypatch.setattr(tracker._store, "_reader_conn", no_reader)
    assert tracker._store._probe is not None
    statements: list[str] = []
    tracker._store._probe._probe.set_trace_callback(statements.append)  # type: ignore[union-attr]
    await tracker.acquire_lock(agent_id="a1", holder="h1", wait=5)
    await tracker.track_request("r1", agent_id="a2", lock=True, lock_wait=5)
    assert statements == []  # its look for commits read the wal-index header, not SQL


async def test_a_waiter_does_not_spin_while_the_lock_stays_held(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1")
    attempts = 0
    original = tracker._store.submit

    async def counting(job: Any, **kwargs: Any) -> Any:
        nonlocal attempts
        attempts += 1
        return await original(job, **kwargs)

    monkeypatch.setattr(tracker._store, "submit", counting)
    with pytest.raises(LockHeld):
        await tracker.acquire_lock(agent_id="a1", holder="h2", wait=0.6)
    assert attempts <= 5  # about one per 0.25 s poll, not one per transaction


async def test_waiting_gives_up_after_wait(tracker: Tracker) -> None:
    await tracker.acquire_lock(agent_id="a1", holder="h1")
    with anyio.fail_after(3), pytest.raises(LockHeld):
        await tracker.acquire_lock(agent_id="a1", holder="h2", wait=0.2)


async def test_lock_context_manager_releases_on_exit_and_on_error(tracker: Tracker) -> None:
    async with tracker.lock(agent_id="a1", holder="h1") as lock:
        assert lock.status == "held"
    with pytest.raises(RuntimeError):
        async with tracker.lock(agent_id="a1", holder="h2"):
            raise RuntimeError("boom")
    current = await tracker.get_lock(agent_id="a1")
    assert current is not None
    assert (current.holder, current.status) == ("h2", "released")


async def test_lock_context_manager_reports_a_lost_lock(
    tracker: Tracker, clock: ManualClock
) -> None:
    with pytest.raises(LockNotHeld):
        async with tracker.lock(agent_id="a1", holder="h1", ttl=5):
            clock.advance(6)
            await tracker.acquire_lock(agent_id="a1", holder="h2")


async def test_lock_context_manager_keeps_the_lock_while_the_block_outlasts_its_ttl(
    db_path: Path,
) -> None:
    async with Tracker.open(db_path) as t:  # the system clock: the lease must really lapse
        async with t.lock(agent_id="a1", holder="h1", ttl=0.3):
            await anyio.sleep(1.0)
            with pytest.raises(LockHeld, match="'h1'"):
                await t.acquire_lock(agent_id="a1", holder="h2")
        with pytest.raises(LockNotHeld):  # not renewed: the block outlasts it, h2 takes it
            async with t.lock(agent_id="a2", holder="h1", ttl=0.3, renew=False):
                await anyio.sleep(0.5)
                await t.acquire_lock(agent_id="a2", holder="h2")
        types = [e.type async for e in t.events(agent_id="a1")]
    assert types[0] == "LockAcquired"
    assert types[-1] == "LockReleased"
    assert types.count("LockRenewed") >= 2  # every 0.1 s for 1 s, on a slow machine too
    assert set(types[1:-1]) == {"LockRenewed"}


async def test_a_cancelled_block_gives_its_lock_back(tracker: Tracker) -> None:
    with anyio.move_on_after(0.2) as scope:
        async with tracker.lock(agent_id="a1", holder="h1"):  # renewing, in a task group
            await anyio.sleep(10)
    assert scope.cancelled_caught
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert (lock.holder, lock.status) == ("h1", "released")


async def test_keep_lock_stops_by_itself_once_the_lock_is_gone(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with Tracker.open(db_path) as t:
        await t.acquire_lock(session_id="S1", holder="h1", ttl=0.3)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(t.keep_lock, session_id="S1", holder="h1", ttl=0.3))
                await anyio.sleep(0.5)
                lock = await t.get_lock(session_id="S1")
                assert lock is not None
                assert (lock.holder, lock.status) == ("h1", "held")
                assert lock.expires_at > datetime.now(UTC)  # renewed
                await t.release_lock(session_id="S1", holder="h1")
    assert "lock renewal stopped: cannot renew session 'S1': 'h1' does not hold it" in caplog.text


async def test_session_shows_the_lock_of_its_conversation(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    await tracker.complete_request("r1")
    await tracker.track_request("r2", agent_id="a1", session_id="S1", lock=True)
    session = await tracker.get_session("S1")
    assert session is not None
    assert session.lock is not None
    assert session.lock.holder == "r2"


async def test_concurrent_requests_of_one_agent_contend(tracker: Tracker) -> None:
    winners, losers = [], []

    async def attempt(i: int) -> None:
        try:
            await tracker.track_request(f"r{i}", agent_id="a1", lock=True)
            winners.append(i)
        except LockHeld:
            losers.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(attempt, i)
    assert len(winners) == 1
    assert len(losers) == 19


async def _lock_history(tracker: Tracker) -> list[tuple[Any, ...]]:
    """Every lock event as the tracker decodes it, in the columns of the lock_events view."""
    history = []
    async for stored in tracker.events():
        event = stored.event
        if isinstance(event, LockEvent):
            token = event.token if isinstance(event, Ended | LockRenewed) else stored.seq
            expires = event.expires_at if isinstance(event, LockAcquired | LockRenewed) else None
            lock = (event.scope, event.target, event.holder, token, expires)
            history.append((stored.seq, stored.type, *lock, stored.request_id, stored.agent_id))
    return history


Ended = LockReleased | LockExpired


async def test_lock_payloads_leave_out_what_the_keys_say_and_the_view_puts_it_back(
    tracker: Tracker, clock: ManualClock, db_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1", lock=True, lock_ttl=10)  # holder: r1
    await tracker.update_request_session("r1", "S1")
    await tracker.track_request("r5")  # no agent: its conversation is locked by session
    await tracker.update_request_session("r5", "S5")
    await tracker.complete_request("r5")
    await tracker.acquire_lock(session_id="S5", holder="worker-1", ttl=5)
    await tracker.renew_lock(session_id="S5", holder="worker-1", ttl=5)
    clock.advance(11)
    await tracker.acquire_lock(agent_id="a1", holder="h2")  # r1's lock expires
    await tracker.complete_request("r1")
    await tracker.track_request("r9", session_id="S5", lock=True)  # worker-1's expires
    await tracker.fail_request("r9", error="boom")
    history = await _lock_history(tracker)
    assert {row[1] for row in history} == {
        "LockAcquired",
        "LockRenewed",
        "LockReleased",
        "LockExpired",
    }
    assert {(row[2], row[4]) for row in history} == {
        ("agent", "r1"),
        ("agent", "h2"),
        ("session", "worker-1"),
        ("session", "r9"),
    }
    view = "SELECT seq, type, scope, target, holder, token, expires_at, request_id, agent_id"
    in_view = rows(db_path, f"{view} FROM lock_events ORDER BY seq")
    assert [(*r[:6], r[6] and from_iso(r[6]), *r[7:]) for r in in_view] == history
    stored = rows(db_path, "SELECT type, payload FROM events WHERE type LIKE 'Lock%'")
    assert not any('"scope"' in p or '"target"' in p for _, p in stored)  # the keys say it
    # Not a request: kept in its acquisition, renewal and expiry.
    assert sum('"holder":"worker-1"' in p for _, p in stored) == 3
    # A request holding the lock is the request_id column, but in a LockExpired (none).
    assert {t for t, p in stored if '"holder":"r' in p} == {"LockExpired"}
