"""Recovery, cleanup, background maintenance, follow, rebuild, verify, replay."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import count_commits, event_count, rows, run_python, tamper
from tracker import (
    IntegrityError,
    InvalidInput,
    ManualClock,
    OwnerInUse,
    StoredEvent,
    Tracker,
    maintenance,
)
from tracker.schema import SCHEMA_VERSION


async def conversation(t: Tracker, agents: int = 3, turns: int = 4) -> None:
    for k in range(turns):
        for a in range(agents):
            agent, rid = f"a{a}", f"r{a}-{k}"
            await t.track_request(
                rid, agent_id=agent, session_id=await t.get_agent_session(agent), lock=True
            )
            await t.update_request_session(rid, f"S{a}-{k // 2}")
            if k == 3:
                await t.fail_request(rid, error="timeout", kind="timeout")
            else:
                await t.complete_request(rid, usage={"input_tokens": 10}, cost_usd=0.25)


# -- restart and recovery ------------------------------------------------------------


async def test_an_owner_open_twice_at_once_is_refused_and_the_first_goes_on(
    db_path: Path,
) -> None:
    async with Tracker.open(db_path, owner="orch-1") as t:
        await t.track_request("r1", agent_id="a1", lock=True)
        before = event_count(db_path)
        with pytest.raises(OwnerInUse, match="'orch-1' is in use"):
            async with Tracker.open(db_path, owner="orch-1"):
                pass
        assert event_count(db_path) == before
        await t.update_request_session("r1", "S1")
        await t.complete_request("r1")
    async with Tracker.open(db_path, owner="orch-1"):  # closed: free again
        pass


async def test_reopening_with_the_same_owner_abandons_its_unfinished_requests(
    db_path: Path,
) -> None:
    async with Tracker.open(db_path, owner="orch-1") as t:
        await t.track_request("r1", agent_id="a1", lock=True)
        await t.update_request_session("r1", "S1")
        await t.track_request("r2", agent_id="a2")
    async with Tracker.open(db_path, owner="orch-2") as t:
        await t.track_request("x1", agent_id="a3")
    async with Tracker.open(db_path, owner="orch-1") as t:
        for rid in ("r1", "r2"):
            request = await t.get_request(rid)
            assert request is not None
            assert (request.status, request.error_kind) == ("failed", "abandoned")
        other = await t.get_request("x1")
        assert other is not None
        assert other.status == "pending"  # another owner's request is not ours to abandon
        lock = await t.get_lock(agent_id="a1")
        assert lock is not None
        assert lock.status == "released"
        assert await t.get_agent_session("a1") == "S1"


# -- cleanup ---------------------------------------------------------------------


async def test_cleanup_retires_idle_sessions_stale_requests_and_lapsed_locks(
    tracker: Tracker, clock: ManualClock
) -> None:
    await tracker.track_request("old", agent_id="a1")
    await tracker.update_request_session("old", "S1")
    await tracker.complete_request("old")
    await tracker.track_request("stuck", agent_id="a2", lock=True, lock_ttl=60)
    await tracker.acquire_lock(agent_id="a3", holder="h", ttl=60)
    clock.advance(timedelta(hours=2))
    await tracker.track_request("fresh", agent_id="a4")

    preview = await tracker.cleanup(idle_for="1h", stale_after="1h", dry_run=True)
    assert preview.dry_run
    assert await tracker.get_agent_session("a1") == "S1"  # dry run changed nothing

    report = await tracker.cleanup(idle_for="1h", stale_after="1h")
    assert report.abandoned_requests == ["stuck"]
    assert report.expired_sessions == ["S1"]
    assert report.expired_locks == ["agent:a3"]  # a2's lock went with its request
    assert (preview.abandoned_requests, preview.expired_sessions, preview.expired_locks) == (
        report.abandoned_requests,
        report.expired_sessions,
        report.expired_locks,
    )
    assert await tracker.get_agent_session("a1") is None
    session = await tracker.get_session("S1")
    assert session is not None
    assert (session.status, session.status_reason) == ("expired", "idle")
    fresh = await tracker.get_request("fresh")
    assert fresh is not None
    assert fresh.status == "pending"
    assert (await tracker.cleanup(idle_for="1h", stale_after="1h")).total == 0


async def test_cleanup_spares_a_request_whose_lock_is_kept_alive(
    tracker: Tracker, clock: ManualClock
) -> None:
    await tracker.track_request("long", agent_id="a1", lock=True, lock_ttl=600)
    await tracker.acquire_lock(agent_id="a2", holder="by-hand", ttl=600)  # t.lock()'s way
    await tracker.track_request("by-hand", agent_id="a2")
    await tracker.track_request("stuck", agent_id="a3")
    clock.advance(500)
    for agent, holder in (("a1", "long"), ("a2", "by-hand")):
        await tracker.renew_lock(agent_id=agent, holder=holder, ttl=600)  # its CLI still runs
    clock.advance(500)  # all three are 1,000 s old; the two locks hold until 1,100 s
    report = await tracker.cleanup(stale_after=900)
    assert report.abandoned_requests == ["stuck"]
    clock.advance(200)  # no one renewed them: their orchestrator is gone
    report = await tracker.cleanup(stale_after=900)
    assert sorted(report.abandoned_requests) == ["by-hand", "long"]


async def test_cleanup_keeps_a_session_with_a_request_in_flight(
    tracker: Tracker, clock: ManualClock
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    await tracker.complete_request("r1")
    clock.advance(7200)
    await tracker.track_request("r2", agent_id="a1", session_id="S1")
    report = await tracker.cleanup(idle_for=3600)
    assert report.expired_sessions == []


async def finished_turn(t: Tracker, agent: str, session: str, clock: ManualClock) -> None:
    """One request of ``agent`` answered with ``session`` and completed; a minute passes."""
    rid = f"{agent}-{clock.now():%j%H%M}"  # the clock moves on: a new request each time
    await t.track_request(rid, agent_id=agent)
    await t.update_request_session(rid, session)
    await t.complete_request(rid)
    clock.advance(60)


async def test_cleanup_retires_the_least_recently_active_sessions_beyond_max_sessions(
    tracker: Tracker, clock: ManualClock
) -> None:
    await tracker.track_request("busy", agent_id="a9")  # the oldest, but in use: kept
    await tracker.update_request_session("busy", "S9")
    clock.advance(60)
    for k in range(5):
        await finished_turn(tracker, f"a{k}", f"S{k}", clock)
    await finished_turn(tracker, "a0", "S0", clock)  # S0 active again: now the most recent

    preview = await tracker.cleanup(max_sessions=3, dry_run=True)
    assert preview.over_capacity_sessions == ["S1", "S2", "S3"]  # 6 active, 3 too many
    report = await tracker.cleanup(max_sessions=3)
    assert (report.over_capacity_sessions, report.expired_sessions, report.total) == (
        ["S1", "S2", "S3"],
        [],
        3,
    )
    for k in (1, 2, 3):
        session = await tracker.get_session(f"S{k}")
        assert session is not None
        assert (session.status, session.status_reason) == ("expired", "capacity")
        assert await tracker.get_agent_session(f"a{k}") is None
    assert [await tracker.get_agent_session(a) for a in ("a0", "a4", "a9")] == ["S0", "S4", "S9"]
    assert (await tracker.cleanup(max_sessions=3)).total == 0
    assert (await tracker.verify()).ok


async def test_idle_sessions_retired_in_the_same_cleanup_count_toward_capacity(
    tracker: Tracker, clock: ManualClock
) -> None:
    for k in range(4):
        await finished_turn(tracker, f"a{k}", f"S{k}", clock)
    clock.advance(3600)
    await finished_turn(tracker, "a4", "S4", clock)
    report = await tracker.cleanup(idle_for=3600, max_sessions=1)
    assert (report.expired_sessions, report.over_capacity_sessions) == (
        ["S0", "S1", "S2", "S3"],
        [],
    )
    report = await tracker.cleanup(max_sessions=0)
    assert report.over_capacity_sessions == ["S4"]


async def test_capacity_counts_sessions_assigned_earlier_in_the_same_batch(
    tracker: Tracker, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in range(3):
        await finished_turn(tracker, f"a{k}", f"S{k}", clock)
    await tracker.track_request("new", agent_id="a3")
    reports = []

    async def clean() -> None:
        reports.append(await tracker.cleanup(max_sessions=3))

    commits = count_commits(tracker._store, monkeypatch)
    async with anyio.create_task_group() as tg:  # both queued before the writer wakes
        tg.start_soon(tracker.update_request_session, "new", "S3")
        tg.start_soon(clean)
    assert commits == [1]  # one transaction: the same batch
    assert reports[0].over_capacity_sessions == ["S0"]  # S3 counted: 4 active


async def test_background_maintenance_runs_cleanup(db_path: Path, clock: ManualClock) -> None:
    async with Tracker.open(
        db_path, clock=clock, maintenance_every=0.05, session_ttl=60, request_timeout=60
    ) as t:
        await t.track_request("r1", agent_id="a1")
        clock.advance(120)
        with anyio.fail_after(5):
            while (request := await t.get_request("r1")) is None or request.status != "failed":
                await anyio.sleep(0.02)
        assert request.error_kind == "abandoned"


async def test_background_maintenance_keeps_max_sessions(db_path: Path, clock: ManualClock) -> None:
    async with Tracker.open(db_path, clock=clock, maintenance_every=0.05, max_sessions=1) as t:
        for k in range(3):
            await finished_turn(t, f"a{k}", f"S{k}", clock)
        with anyio.fail_after(5):
            while await t.get_agent_session("a1") is not None:
                await anyio.sleep(0.02)
        assert [await t.get_agent_session(f"a{k}") for k in range(3)] == [None, None, "S2"]


# -- events and follow ---------------------------------------------------------------


async def followed(
    tracker: Tracker, count: int, writes: Callable[[], Awaitable[object]], **options: Any
) -> list[StoredEvent]:
    """The first ``count`` events ``tracker.events(follow=True, **options)`` yields while
    ``writes()`` runs."""
    seen: list[StoredEvent] = []

    async def follower() -> None:
        async for event in tracker.events(follow=True, poll=0.05, **options):
            seen.append(event)
            if len(seen) == count:
                return

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            await anyio.sleep(0.05)
            await writes()
    return seen


async def test_follow_sees_events_of_this_process(tracker: Tracker) -> None:
    async def writes() -> None:
        await tracker.track_request("r1", agent_id="a1")
        await tracker.track_request("x", agent_id="other")
        await tracker.update_request_session("r1", "S1")

    seen = await followed(tracker, 2, writes, agent_id="a1")
    assert [e.type for e in seen] == ["RequestTracked", "SessionAssigned"]


async def test_follow_from_the_last_n_then_the_new_ones(tracker: Tracker) -> None:
    for k in range(4):
        await tracker.track_request(f"r{k}", agent_id="a1")
        await tracker.track_request(f"x{k}", agent_id="other")
    seen = await followed(
        tracker, 3, lambda: tracker.track_request("r4", agent_id="a1"), last=2, agent_id="a1"
    )
    assert [e.request_id for e in seen] == ["r2", "r3", "r4"]


APPEND_FROM_CHILD = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.track_request("child-1", agent_id="child")
anyio.run(main)
"""


async def test_follow_sees_commits_of_another_process(tracker: Tracker, db_path: Path) -> None:
    seen: list[str] = []

    async def follower() -> None:
        async for event in tracker.events(follow=True, poll=0.05):
            seen.append(event.request_id or "")
            return

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower)
            done = await anyio.to_thread.run_sync(run_python, APPEND_FROM_CHILD, str(db_path))
            assert done.returncode == 0, done.stderr
    assert seen == ["child-1"]


# -- rebuild, verify, replay ----------------------------------------------------------


async def test_rebuild_gives_identical_projections(tracker: Tracker, db_path: Path) -> None:
    await conversation(tracker)
    tables = ("requests", "sessions", "agents", "locks", "usage_daily", "checkpoints")
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    before = {t: rows(db_path, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    before_schema = rows(db_path, schema)
    report = await tracker.rebuild()
    assert report.events == event_count(db_path)
    assert 0 < report.swap_seconds < report.seconds  # the swap is the part writers wait for
    after = {t: rows(db_path, f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    assert after == before
    assert rows(db_path, schema) == before_schema  # the swap copies rows, nothing else
    assert rows(db_path, "PRAGMA integrity_check") == [("ok",)]
    verified = await tracker.verify()
    assert verified.ok
    assert verified.head_hash == (await anext(tracker.events(since=report.events - 1))).hash
    await tracker.track_request("after-rebuild", agent_id="a0")  # the write model reloaded
    assert (await tracker.verify()).ok


async def test_a_rebuild_builds_the_lookup_indexes_aside_before_the_swap(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    """The swap copies tables and indexes unparsed only if both sides have the same."""
    await conversation(tracker)
    indexes = "SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name"
    maintenance.build_scratch(db_path, tmp_path / "scratch.db")
    assert rows(tmp_path / "scratch.db", indexes) == rows(db_path, indexes)


async def test_verify_finds_projections_that_drifted_from_the_log(
    tracker: Tracker, db_path: Path
) -> None:
    await conversation(tracker)
    assert (await tracker.verify()).ok
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE sessions SET cost_usd = 99 WHERE session_id = 'S1-0'")
    conn.commit()
    conn.close()
    report = await tracker.verify()
    assert (report.ok, report.chain_ok, report.projections_ok) == (False, True, False)
    [diff] = report.diffs
    assert (diff.table, diff.missing, diff.unexpected) == ("sessions", 1, 1)
    assert (await tracker.verify()).ok is False  # verify never repairs
    await tracker.rebuild()
    assert (await tracker.verify()).ok


async def test_verify_reports_a_broken_chain(tracker: Tracker, db_path: Path) -> None:
    await conversation(tracker)
    tamper(db_path, "UPDATE event_log SET payload = replace(payload, '0.25', '0.26') WHERE seq = 4")
    report = await tracker.verify()
    assert (report.ok, report.chain_ok, report.first_bad_seq) == (False, False, 4)


async def test_replay_into_gives_the_state_as_of_a_seq(
    tracker: Tracker, db_path: Path, tmp_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    cut = event_count(db_path)
    await tracker.complete_request("r1")
    await tracker.track_request("r2", agent_id="a1", session_id="S1")
    target = tmp_path / "as-of.db"
    assert await tracker.replay_into(target, until=cut) == cut
    async with Tracker.open(target, create=False) as past:
        request = await past.get_request("r1")
        assert request is not None
        assert request.status == "active"
        assert await past.get_request("r2") is None
        assert (await past.verify()).ok
    with pytest.raises(InvalidInput, match="exists"):
        await tracker.replay_into(target, until=1)


async def test_replay_into_gives_the_state_as_of_a_time(
    tracker: Tracker, clock: ManualClock, tmp_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    moment = clock.now()
    clock.advance(60)
    await tracker.track_request("r2", agent_id="a1")
    target = tmp_path / "at.db"
    await tracker.replay_into(target, at=moment)
    async with Tracker.open(target, create=False) as past:
        assert (await past.stats()).requests == 1
    as_text = tmp_path / "at-text.db"  # ISO 8601 text, as the CLI takes it: the same point
    await tracker.replay_into(as_text, at=moment.isoformat())
    assert rows(as_text, "SELECT request_id FROM requests") == [("r1",)]


async def test_health_reports_version_lag_and_sizes(tracker: Tracker) -> None:
    await conversation(tracker, agents=1, turns=2)
    health = await tracker.health()
    assert (health.ok, health.schema_version, health.integrity, health.lag) == (
        True,
        SCHEMA_VERSION,
        "ok",
        0,
    )
    assert health.events == health.projection_seq > 0
    assert health.file_bytes > 0
    assert health.durability == "full"


async def test_rebuild_of_an_unreplayable_log_fails_cleanly(
    tracker: Tracker, db_path: Path
) -> None:
    await conversation(tracker, agents=1, turns=2)
    before = rows(db_path, "SELECT * FROM requests ORDER BY request_id")
    tamper(
        db_path,
        "UPDATE event_log SET type = 'SessionAssigned', version = 1, payload = replace(payload, "
        "'RequestTracked', 'SessionAssigned') WHERE seq = 1",
    )
    with pytest.raises(IntegrityError, match="replay stopped at seq 1"):
        await tracker.rebuild()
    assert rows(db_path, "SELECT * FROM requests ORDER BY request_id") == before
