"""The orchestrator's flows (SPEC section 2), each checked against state and the log."""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import textwrap
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from tests.helpers import (
    EVERY_CALL,
    durations_some_unreported,
    event_count,
    first,
    public_calls,
    readme_block,
    rows,
)
from tracker import (
    DuplicateRequest,
    InvalidInput,
    InvalidTransition,
    ManualClock,
    StorageError,
    Tracker,
    TrackerClosed,
    UnknownAgent,
    UnknownRequest,
    UnknownSession,
    Usage,
    queries,
)
from tracker.clock import iso

USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_tokens": 5000,
    "cache_write_tokens": 800,
}


async def turn(t: Tracker, rid: str, agent: str, answer: str) -> None:
    """One conversation turn: resume the agent's current session, the CLI answers ``answer``."""
    await t.track_request(rid, agent_id=agent, session_id=await t.get_agent_session(agent))
    await t.update_request_session(rid, answer)
    await t.complete_request(rid, response="ok", usage=USAGE, cost_usd=0.0042, duration_ms=1500)


async def types(t: Tracker, **where: str) -> list[str]:
    return [e.type async for e in t.events(**where)]  # type: ignore[arg-type]


# -- new conversation, continuity ------------------------------------------------


async def test_a_new_conversation(tracker: Tracker) -> None:
    request = await tracker.track_request("r1", agent_id="a1", prompt="hello")
    assert (request.status, request.session_id, request.resumed_session_id) == (
        "pending",
        None,
        None,
    )
    assert await tracker.get_agent_session("a1") is None  # pending is not a session
    assert await tracker.get_session("None") is None
    active = await tracker.update_request_session("r1", "S1")
    assert (active.status, active.session_id) == ("active", "S1")
    done = await tracker.complete_request(
        "r1", response="hi", usage=USAGE, cost_usd=0.01, duration_ms=900
    )
    assert done.status == "completed"
    assert done.usage == Usage(**USAGE)
    assert (done.cost_usd, done.duration_ms) == (0.01, 900)
    assert await tracker.get_agent_session("a1") == "S1"
    session = await tracker.get_session("S1")
    assert session is not None
    assert (session.agent_id, session.parent_session_id, session.request_count) == ("a1", None, 1)
    assert (session.input_tokens, session.cost_usd) == (1200, 0.01)
    assert await types(tracker, request_id="r1") == [
        "RequestTracked",
        "SessionAssigned",
        "RequestCompleted",
    ]


async def test_continuing_with_a_new_id_grows_the_chain(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await turn(tracker, "r2", "a1", "S2")  # older CLIs: a resume answers a new id
    await turn(tracker, "r3", "a1", "S3")
    assert await tracker.get_agent_session("a1") == "S3"
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.parent_session_id, s.position) for s in chain] == [
        ("S1", None, 1),
        ("S2", "S1", 2),
        ("S3", "S2", 3),
    ]
    request = await tracker.get_request("r2")
    assert request is not None
    assert (request.resumed_session_id, request.session_id) == ("S1", "S2")


async def test_continuing_with_the_same_id_grows_the_request_count(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await turn(tracker, "r2", "a1", "S1")  # current CLIs: the same id
    await turn(tracker, "r3", "a1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.request_count) for s in chain] == [("S1", 3)]
    assert chain[0].cost_usd == pytest.approx(3 * 0.0042)
    agent = await tracker.get_agent("a1")
    assert agent is not None
    assert (agent.chain_length, agent.request_count, agent.completed) == (1, 3, 3)


async def test_two_resumes_answering_different_ids_make_a_fork(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.track_request("r2", agent_id="a1", session_id="S1")
    await tracker.track_request("r3", agent_id="a1", session_id="S1")
    await tracker.update_request_session("r2", "S2")
    await tracker.update_request_session("r3", "S3")
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.parent_session_id) for s in chain] == [
        ("S1", None),
        ("S2", "S1"),
        ("S3", "S1"),
    ]
    assert await tracker.get_agent_session("a1") == "S3"  # the latest answer wins


async def test_sessions_are_found_by_the_start_of_their_id(tracker: Tracker) -> None:
    for k, answer in enumerate(["4f1c-aa", "4f1c-ab", "4f2", "x%_", "x%_y"]):
        await tracker.track_request(f"r{k}", agent_id=f"a{k}")
        await tracker.update_request_session(f"r{k}", answer)
    assert await tracker.find_sessions("4f1") == ["4f1c-aa", "4f1c-ab"]
    assert await tracker.find_sessions("4f", limit=2) == ["4f1c-aa", "4f1c-ab"]
    assert await tracker.find_sessions("4f1c-ab") == ["4f1c-ab"]
    assert await tracker.find_sessions("x%_") == ["x%_", "x%_y"]  # no LIKE wildcards
    assert await tracker.find_sessions("x%_y") == ["x%_y"]
    assert await tracker.find_sessions("5") == []
    with pytest.raises(InvalidInput, match="prefix"):
        await tracker.find_sessions("")


async def test_in_flight_lists_unfinished_requests_oldest_first(
    db_path: Path, clock: ManualClock
) -> None:
    async with Tracker.open(db_path, clock=clock, owner="orch-1") as t:
        await t.track_request("x1", agent_id="a")
        clock.advance(1)
        await t.track_request("b2", agent_id="b")
        await t.update_request_session("b2", "s-b")
        clock.advance(1)
        await t.track_request("a3", agent_id="a")
        await t.fail_request("a3", error="boom")
    async with Tracker.open(db_path, clock=clock) as t:  # no owner: nothing abandoned
        clock.advance(1)
        await t.track_request("m4", agent_id="a")
        await t.track_request("c5", agent_id="c")
        await t.update_request_session("c5", "s-c")
        await t.complete_request("c5")
        assert [(r.request_id, r.status) for r in await t.in_flight()] == [
            ("x1", "pending"),
            ("b2", "active"),
            ("m4", "pending"),
        ]
        assert [r.request_id for r in await t.in_flight(agent_id="a")] == ["x1", "m4"]
        assert [r.request_id for r in await t.in_flight(owner="orch-1")] == ["x1", "b2"]
        assert [r.request_id for r in await t.in_flight(agent_id="a", owner="orch-1")] == ["x1"]
        assert [r.request_id for r in await t.in_flight(limit=2)] == ["x1", "b2"]
        assert await t.in_flight(limit=0) == []
        assert await t.in_flight(agent_id="nobody") == []
        with pytest.raises(InvalidInput, match="limit must not be negative, got -1"):
            await t.in_flight(limit=-1)
        with pytest.raises(InvalidInput, match="owner"):
            await t.in_flight(owner="")


async def test_session_none_is_never_a_session(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1", session_id=None)
    stats = await tracker.stats()
    assert (stats.sessions, stats.pending) == (0, 1)


# -- failure -----------------------------------------------------------------------


async def test_failure_before_assignment_keeps_the_current_session(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.track_request("r2", agent_id="a1", session_id="S1", lock=True)
    failed = await tracker.fail_request("r2", error="CLI crashed", kind="cli_error")
    assert (failed.status, failed.error, failed.error_kind, failed.session_id) == (
        "failed",
        "CLI crashed",
        "cli_error",
        None,
    )
    assert await tracker.get_agent_session("a1") == "S1"
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert lock.status == "released"  # failing released the request's lock


async def test_failure_after_assignment_counts_usage_on_the_session(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    await tracker.fail_request(
        "r1",
        error="max turns",
        kind="error_max_turns",
        usage={"input_tokens": 10},
        cost_usd=0.5,
        duration_ms=100,
    )
    session = await tracker.get_session("S1")
    assert session is not None
    assert (session.input_tokens, session.cost_usd) == (10, 0.5)
    assert await tracker.get_agent_session("a1") == "S1"
    stats = await tracker.stats()
    assert (stats.failed, stats.failure_rate, stats.cost_usd) == (1, 1.0, 0.5)


# -- impossible transitions raise and append nothing -------------------------------


async def test_impossible_transitions_raise_and_append_nothing(
    tracker: Tracker, db_path: Path
) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.track_request("p", agent_id="a1", session_id="S1")
    before = event_count(db_path)
    cases = [
        (UnknownRequest, tracker.complete_request("nope")),
        (UnknownRequest, tracker.update_request_session("nope", "S9")),
        (UnknownRequest, tracker.fail_request("nope", error="x")),
        (InvalidTransition, tracker.update_request_session("r1", "S9")),  # finished
        (InvalidTransition, tracker.complete_request("p")),  # no session yet
        (InvalidTransition, tracker.complete_request("r1", response="other")),
        (InvalidTransition, tracker.fail_request("r1", error="late")),
        (UnknownSession, tracker.update_session_metadata("S9", {"a": 1})),
        (UnknownSession, tracker.delete_session("S9")),
        (UnknownAgent, tracker.reset_agent("nobody")),
        (DuplicateRequest, tracker.track_request("r1", agent_id="a2")),
        (InvalidTransition, tracker.track_request("x", agent_id="a2", session_id="S1")),
    ]
    for error, call in cases:
        with pytest.raises(error):
            await call
    assert event_count(db_path) == before


async def test_a_second_assignment_with_another_id_is_refused(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    with pytest.raises(InvalidTransition, match="already has session 'S1'"):
        await tracker.update_request_session("r1", "S2")


async def test_a_session_cannot_move_to_another_agent(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.track_request("r2", agent_id="a2")
    with pytest.raises(InvalidTransition, match="belongs to agent 'a1'"):
        await tracker.update_request_session("r2", "S1")


# -- retries are safe -------------------------------------------------------------


async def test_exact_repeats_are_no_ops_returning_the_same_result(
    tracker: Tracker, db_path: Path
) -> None:
    first = await tracker.track_request(
        "r1", agent_id="a1", prompt="hi", metadata={"k": 1}, lock=True
    )
    assigned = await tracker.update_request_session("r1", "S1")
    done = await tracker.complete_request("r1", response="yo", usage=USAGE, cost_usd=0.2)
    before = event_count(db_path)
    assert await tracker.complete_request("r1", response="yo", usage=USAGE, cost_usd=0.2) == done
    assert await tracker.update_request_session("r1", "S1") == done
    again = await tracker.track_request(
        "r1", agent_id="a1", prompt="hi", metadata={"k": 1}, lock=True
    )
    assert again.request_id == first.request_id == assigned.request_id
    await tracker.reset_agent("a1")
    await tracker.reset_agent("a1")
    assert event_count(db_path) == before + 1  # only the first reset


async def test_metadata_key_order_does_not_make_a_repeat_conflict(tracker: Tracker) -> None:
    await tracker.track_request("r1", metadata={"a": 1, "b": 2}, agent_id="a1")
    await tracker.track_request("r1", metadata={"b": 2, "a": 1}, agent_id="a1")


async def test_a_conflicting_repeat_raises(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1", prompt="hi")
    with pytest.raises(DuplicateRequest, match="'r1'"):
        await tracker.track_request("r1", agent_id="a1", prompt="something else")
    await tracker.fail_request("r1", error="boom")
    with pytest.raises(InvalidTransition, match="already failed"):
        await tracker.fail_request("r1", error="another error")


# -- sessions and agents ----------------------------------------------------------


async def test_session_metadata_is_merged(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.update_session_metadata("S1", {"model": "opus", "mcp": ["fs"]})
    await tracker.update_session_metadata("S1", {"model": "sonnet"})
    session = await tracker.get_session("S1")
    assert session is not None
    assert session.metadata == {"model": "sonnet", "mcp": ["fs"]}


async def test_merged_metadata_stays_within_the_bound_of_one_call(
    tracker: Tracker, db_path: Path
) -> None:
    """Each call's metadata is at most 1 MiB; merging calls must not grow past it."""
    half = "x" * 600_000
    await tracker.track_request("r1", agent_id="a1", metadata={"a": half})
    await tracker.update_request_session("r1", "S1")
    await tracker.update_session_metadata("S1", {"a": half})
    before = event_count(db_path)
    with pytest.raises(InvalidInput, match="the metadata of request 'r1' would be 1,200,0"):
        await tracker.complete_request("r1", metadata={"b": half})
    with pytest.raises(InvalidInput, match="the metadata of session 'S1' would be 1,200,0"):
        await tracker.update_session_metadata("S1", {"b": half})
    assert event_count(db_path) == before
    await tracker.update_session_metadata("S1", {"a": "small", "b": half})  # replaced: fits
    await tracker.complete_request("r1", metadata={"a": None, "b": half})
    request = await tracker.get_request("r1")
    assert request is not None
    assert request.metadata == {"a": None, "b": half}


async def test_repeating_a_metadata_update_appends_nothing(tracker: Tracker, db_path: Path) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.update_session_metadata("S1", {"model": "opus", "tools": ["a", "b"]})
    before = event_count(db_path)
    await tracker.update_session_metadata("S1", {"model": "opus", "tools": ["a", "b"]})
    await tracker.update_session_metadata("S1", {"model": "opus"})
    await tracker.update_session_metadata("S1", {})
    assert event_count(db_path) == before
    await tracker.update_session_metadata("S1", {"tools": ["a"]})
    assert event_count(db_path) == before + 1


async def test_a_deleted_session_stays_in_the_chain_but_is_not_current(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.delete_session("S1", reason="gdpr")
    assert await tracker.get_agent_session("a1") is None
    [session] = await tracker.get_chain("a1")
    assert (session.status, session.status_reason) == ("deleted", "gdpr")
    with pytest.raises(InvalidTransition, match="deleted"):
        await tracker.track_request("r2", agent_id="a1", session_id="S1")
    with pytest.raises(InvalidTransition, match="deleted"):
        await tracker.update_session_metadata("S1", {"a": 1})


async def test_an_expired_session_is_not_current_until_the_cli_resumes_it(
    tracker: Tracker,
) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.expire_session("S1")
    assert await tracker.get_agent_session("a1") is None
    await turn(tracker, "r2", "a1", "S2")  # the next request starts a new conversation
    assert [s.parent_session_id for s in await tracker.get_chain("a1")] == [None, None]
    await tracker.track_request("r3", agent_id="a1", session_id="S1")  # explicit resume
    await tracker.update_request_session("r3", "S1")
    session = await tracker.get_session("S1")
    assert session is not None
    assert (session.status, session.request_count) == ("active", 2)
    assert await tracker.get_agent_session("a1") == "S1"


async def test_reset_starts_a_new_chain(tracker: Tracker) -> None:
    await turn(tracker, "r1", "a1", "S1")
    await tracker.reset_agent("a1", reason="new task")
    assert await tracker.get_agent_session("a1") is None
    await turn(tracker, "r2", "a1", "S2")
    chain = await tracker.get_chain("a1")
    assert [(s.session_id, s.parent_session_id) for s in chain] == [("S1", None), ("S2", None)]
    agent = await tracker.get_agent("a1")
    assert agent is not None
    assert (agent.resets, agent.chain_length, agent.current_session_id) == (1, 2, "S2")


async def test_agentless_requests_track_sessions_without_an_agent(tracker: Tracker) -> None:
    await tracker.track_request("r1")
    await tracker.update_request_session("r1", "S1")
    await tracker.complete_request("r1")
    await tracker.track_request("r2", session_id="S1", lock=True)
    lock = await tracker.get_lock(session_id="S1")
    assert lock is not None
    assert (lock.holder, lock.status) == ("r2", "held")
    await tracker.update_request_session("r2", "S2")
    await tracker.complete_request("r2")
    session = await tracker.get_session("S2")
    assert session is not None
    assert (session.agent_id, session.parent_session_id) == (None, "S1")
    stats = await tracker.stats()
    assert (stats.agents, stats.sessions, stats.completed) == (0, 2, 2)


# -- content retention, clock, inputs ------------------------------------------------


@pytest.mark.parametrize(
    ("content", "stored"), [("full", "x" * 300), ("preview", "x" * 200), ("none", None)]
)
async def test_content_retention(db_path: Path, content: str, stored: str | None) -> None:
    async with Tracker.open(db_path, content=content) as t:  # type: ignore[arg-type]
        await t.track_request("r1", agent_id="a1", prompt="x" * 300)
        await t.update_request_session("r1", "S1")
        await t.complete_request("r1", response="x" * 300)
        events = [e.event async for e in t.events()]
    assert msgspec.structs.asdict(events[0])["prompt"] == stored
    assert msgspec.structs.asdict(events[0])["prompt_chars"] == 300
    assert msgspec.structs.asdict(events[2])["response"] == stored


async def test_the_injected_clock_stamps_events(tracker: Tracker, clock: ManualClock) -> None:
    await tracker.track_request("r1", agent_id="a1")
    clock.advance(90)
    await tracker.update_request_session("r1", "S1")
    request = await tracker.get_request("r1")
    assert request is not None
    assert request.assigned_at is not None
    assert (request.assigned_at - request.created_at).total_seconds() == 90


async def test_seq_at_finds_the_last_event_at_or_before_a_moment(
    tracker: Tracker, clock: ManualClock
) -> None:
    start = clock.now()
    for k in range(5):
        await turn(tracker, f"r{k}", "a1", f"S{k}")
        clock.advance(60)
    events = [e async for e in tracker.events()]
    moments = [start - timedelta(seconds=1), *(e.at for e in events), clock.now()]
    moments += [m + timedelta(seconds=30) for m in moments]
    for moment in moments:
        expected = max((e.seq for e in events if e.at <= moment), default=0)
        assert await tracker.seq_at(moment) == expected, moment
    assert await tracker.seq_at(start.isoformat()) == await tracker.seq_at(start)
    with pytest.raises(InvalidInput, match="bad time 'noon'"):
        await tracker.seq_at("noon")


async def test_seq_at_reads_a_logarithmic_number_of_events(
    tracker: Tracker, clock: ManualClock, db_path: Path
) -> None:
    """The README's "about 20 point reads on a million events": a binary search."""
    for k in range(100):
        await turn(tracker, f"r{k}", f"a{k % 7}", f"S{k}")
        clock.advance(1)
    events = [e async for e in tracker.events()]
    middle = events[len(events) // 2].at
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        reads: list[str] = []
        conn.set_trace_callback(reads.append)
        assert queries.seq_at(conn, iso(middle)) == max(e.seq for e in events if e.at == middle)
    points = [sql for sql in reads if "WHERE seq = " in sql]
    assert 0 < len(points) <= math.ceil(math.log2(event_count(db_path))) + 1, points
    assert len(reads) == len(points) + 1  # and the head


async def test_the_log_time_never_goes_backwards(tracker: Tracker, clock: ManualClock) -> None:
    await tracker.track_request("r1", agent_id="a1")
    clock.advance(-3600)
    await tracker.track_request("r2", agent_id="a1")
    times = [e.at async for e in tracker.events()]
    assert times == sorted(times)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda t: t.track_request(""), "request_id"),
        (lambda t: t.track_request(42), "request_id"),
        (lambda t: t.track_request("a\x00b"), "control"),
        (lambda t: t.track_request("r", agent_id="x" * 600), "agent_id"),
        (lambda t: t.track_request("r", metadata=[1, 2]), "metadata"),
        (lambda t: t.track_request("r", metadata={1: "a"}), "keys"),
        (lambda t: t.track_request("r", metadata={"x": [float("nan")]}), "holds nan"),
        (lambda t: t.update_session_metadata("s", {"x": -math.inf}), "holds -inf"),
        (lambda t: t.track_request("r", prompt="\ud800"), "surrogate"),
        (lambda t: t.track_request("r", agent_id="a", lock=True, lock_ttl=-1), "lock_ttl"),
        (lambda t: t.track_request("r", lock=True), "nothing to lock|no agent"),
        (lambda t: t.complete_request("r", usage={"tokens": 3}), "unknown keys"),
        (
            lambda t: t.complete_request("r", usage={"input_tokens": -1}),
            "from 0 to 1,000,000,000,000",
        ),
        (lambda t: t.complete_request("r", cost_usd=float("nan")), "cost_usd"),
        (lambda t: t.complete_request("r", duration_ms=-5), "duration_ms"),
        (lambda t: t.acquire_lock(holder="h"), "exactly one"),
        (lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=10**9), "ttl"),
        (lambda t: t.cleanup(idle_for="soon"), "idle_for"),
        (lambda t: first(t.events(since=-1)), "since must not be negative, got -1"),
        (lambda t: first(t.events(since=True)), "since must be a whole number, got True"),
        (lambda t: first(t.events(until=2.5)), "until must be a whole number, got 2.5"),
        (lambda t: first(t.events(last=-3)), "last must not be negative, got -3"),
        (lambda t: first(t.events(types=["RequestTracked", "Nope"])), "unknown event type 'Nope'"),
        (lambda t: first(t.events(types=7)), "types must be event type names, got 7"),
        (lambda t: first(t.events(follow=True, poll=0)), "poll must be more than 0"),
        (lambda t: first(t.events(follow=True, until=3)), "takes no until"),
        (lambda t: t.replay_into("elsewhere.db", until=-5), "until must not be negative"),
        # beyond what SQLite's 64-bit integers (or a sum of them) hold: typed, not OverflowError
        (
            lambda t: t.complete_request("r", usage={"output_tokens": 10**13}),
            "output_tokens must be a whole number from 0",
        ),
        (
            lambda t: t.fail_request("r", error="e", usage={"input_tokens": 2**70}),
            "from 0 to 1,000,",
        ),
        (lambda t: t.complete_request("r", duration_ms=10**30), "duration_ms must be between"),
        (lambda t: t.complete_request("r", cost_usd=1e308), "cost_usd must be between 0 and"),
        (lambda t: first(t.events(last=2**64)), "last must be at most 9,223,372,036,854,775,807"),
        (lambda t: first(t.events(since=2**63)), "since must be at most"),
        (lambda t: t.replay_into("elsewhere.db", until=2**70), "until must be at most"),
        (lambda t: t.in_flight(limit=2**64), "limit must be at most"),
        (lambda t: t.cleanup(idle_for=10**30), "idle_for must be at most 3153600000 s"),
        (lambda t: t.cleanup(stale_after="40000d"), "stale_after must be at most"),
        (lambda t: t.replay_into(5), "target must be a file path"),
        (lambda t: t.backup(b"x.db"), "target must be a file path"),
        (lambda t: t.track_request("r", agent_id="a", lock=1), "lock must be True or False"),
        (lambda t: t.cleanup(dry_run="yes"), "dry_run must be True or False, got 'yes'"),
        (lambda t: first(t.events(follow=1)), "follow must be True or False, got 1"),
        (lambda t: t.replay_into("x.db", at="yesterday"), "bad time 'yesterday'"),
        (lambda t: t.replay_into("x.db", at=1700000000), "at must be a datetime or ISO 8601"),
    ],
)
async def test_bad_input_is_a_clear_typed_error(
    tracker: Tracker, db_path: Path, call: object, needle: str
) -> None:
    before = event_count(db_path)
    with pytest.raises(InvalidInput, match=needle):
        await call(tracker)  # type: ignore[operator]
    assert event_count(db_path) == before


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"maintenance_every": 0}, "maintenance_every must be more than 0"),
        ({"maintenance_every": -1}, "maintenance_every must be more than 0"),
        ({"maintenance_every": "soon"}, "bad duration 'soon'"),
        ({"session_ttl": 3600}, "session_ttl is applied by the background maintenance"),
        ({"request_timeout": "1h"}, "request_timeout is applied by the background"),
        ({"maintenance_every": 1, "session_ttl": -5}, "session_ttl must not be negative"),
        ({"maintenance_every": 1, "request_timeout": 10**30}, "request_timeout must be at most"),
        ({"max_sessions": 100}, "max_sessions is applied by the background maintenance"),
        ({"maintenance_every": 1, "max_sessions": -1}, "max_sessions must not be negative"),
        ({"maintenance_every": 1, "max_sessions": 2.5}, "max_sessions must be a whole number"),
        ({"clock": 5}, "clock must have a now\\(\\) method"),
        ({"clock": SimpleNamespace(now=lambda: "noon")}, "clock.now\\(\\) must give a datetime"),
        ({"path": 5}, "path must be a file path"),
        ({"create": "no"}, "create must be True or False, got 'no'"),  # "no" is true
    ],
)
async def test_bad_open_options_are_refused_before_the_file_is_touched(
    db_path: Path, options: dict[str, Any], needle: str
) -> None:
    """The background task could only log a bad threshold at every turn, or never run."""
    with pytest.raises(InvalidInput, match=needle):
        async with Tracker.open(**{"path": db_path, **options}):
            pass
    assert not db_path.exists()


async def test_a_path_the_system_refuses_is_a_storage_error(tmp_path: Path) -> None:
    path = tmp_path / ("x" * 300)  # longer than a file name may be
    with pytest.raises(StorageError, match="File name too long"):
        async with Tracker.open(path):
            pass
    async with Tracker.open(tmp_path / "t.db") as t:
        with pytest.raises(StorageError, match="File name too long"):
            await t.replay_into(path)


async def test_errors_inside_the_open_block_surface_unwrapped(db_path: Path) -> None:
    with pytest.raises(UnknownRequest):
        async with Tracker.open(db_path) as t:
            await t.complete_request("nope")


# Every public call of a Tracker, made after its block ended: those of EVERY_CALL, and
# the ones that take a path or nothing.
AFTER_CLOSE: dict[str, Callable[[Tracker], Awaitable[Any]]] = {
    **{name: partial(call, **given) for name, (call, given) in EVERY_CALL.items()},
    "health": lambda t: t.health(),
    "verify": lambda t: t.verify(),
    "rebuild": lambda t: t.rebuild(),
    "replay_into": lambda t: t.replay_into(t.path.with_name("copy.db")),
    "backup": lambda t: t.backup(t.path.with_name("copy.db")),
}


def test_every_public_call_is_listed_for_after_close() -> None:
    assert public_calls() == set(AFTER_CLOSE)


@pytest.mark.parametrize("name", sorted(AFTER_CLOSE))
async def test_every_call_on_a_closed_tracker_raises_tracker_closed(
    db_path: Path, name: str
) -> None:
    async with Tracker.open(db_path) as t:
        await turn(t, "r0", "a", "S0")  # what EVERY_CALL's arguments name
        await t.get_agent("a")  # cached answers too
        await t.get_agent_session("a")
        await t.get_chain("a")
    before = event_count(db_path)
    with pytest.raises(TrackerClosed, match="is closed"):
        await AFTER_CLOSE[name](t)
    assert event_count(db_path) == before
    assert sorted(p.name for p in db_path.parent.iterdir()) == [db_path.name]


async def test_usage_by_a_limit_keeps_the_most_expensive_or_the_latest_days(
    tracker: Tracker, clock: ManualClock
) -> None:
    for day in range(4):
        for a, cost in enumerate((0.5, 2.0, 1.0)):
            rid = f"d{day}-a{a}"
            await tracker.track_request(rid, agent_id=f"a{a}")
            await tracker.update_request_session(rid, f"S{day}-{a}")
            await tracker.complete_request(rid, cost_usd=cost * (day + 1))
        clock.advance(86400)
    for by in ("agent", "session"):
        whole = await tracker.usage_by(by)
        assert [g.cost_usd for g in whole] == sorted((g.cost_usd for g in whole), reverse=True)
        assert await tracker.usage_by(by, limit=2) == whole[:2]
    days = await tracker.usage_by("day")
    assert len(days) == 4
    assert await tracker.usage_by("day", limit=2) == days[-2:]  # the latest, in order
    assert [g.key for g in await tracker.usage_by("agent", limit=1)] == ["a1"]
    assert await tracker.usage_by("session", "a0", limit=0) == []


async def test_the_mean_duration_leaves_out_the_requests_that_reported_none(
    tracker: Tracker, db_path: Path
) -> None:
    """Counted as 0 ms, the three requests without a duration would make the mean 800 ms."""
    await durations_some_unreported(tracker)
    stats = await tracker.stats()
    figures = (stats.completed + stats.failed, stats.duration_ms, stats.timed_requests)
    assert (*figures, stats.avg_duration_ms) == (5, 4000, 2, 2000)
    assert (await tracker.stats("a2")).avg_duration_ms is None
    means = {
        by: {g.key: (g.timed_requests, g.avg_duration_ms) for g in await tracker.usage_by(by)}
        for by in ("day", "agent", "session")
    }
    assert means == {
        "day": {"2026-01-01": (2, 2000)},
        "agent": {"a1": (2, 2000), "a2": (0, None)},
        "session": {"S1": (2, 2000)},
    }
    sql = "SELECT agent_id, avg_duration_ms FROM agent_usage ORDER BY agent_id"
    assert rows(db_path, sql) == [("a1", 2000.0), ("a2", None)]
    assert rows(db_path, "SELECT avg_duration_ms FROM daily_usage") == [(2000.0,)]
    assert rows(db_path, "SELECT avg(duration_ms) FROM requests") == [(2000.0,)]


@pytest.mark.parametrize(
    ("example", "printed"),
    [
        ("session_id=CURRENT, lock=True", r"Stats\(agents=1, .*completed=1, .*\) True"),
        ("ClaudeRunner(t,", r"completed [0-9a-f-]{36} 0\.049836"),  # the fake CLI's figures
    ],
    ids=["api", "claude"],
)
async def test_the_readme_python_examples_run(
    tmp_path: Path,
    fake_claude: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    example: str,
    printed: str,
) -> None:
    code = readme_block("python", example).replace('"tracker.db"', repr(str(tmp_path / "t.db")))
    monkeypatch.setenv("CLAUDE_BIN", fake_claude)
    namespace: dict[str, Any] = {}
    exec("async def example():\n" + textwrap.indent(code, "    "), namespace)
    await namespace["example"]()
    assert re.fullmatch(printed, capsys.readouterr().out.strip())
