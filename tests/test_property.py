"""Random call sequences against a simple in-memory model of the rules (SPEC section 2),
with the agents' locks: taken with requests, lapsing as the clock moves, taken over; an
answer to a request whose lock was taken over, or whose agent was reset since it was
tracked, does not move the agent on.

After every step: an invalid call appended nothing, the agent -> session
mapping and the chains match the model, and (every few steps and at the end)
the live projections equal a full rebuild.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tests.helpers import event_count
from tracker import ManualClock, Tracker, TrackerError, errors

AGENTS = st.sampled_from(["a1", "a2", "a3"])
REQUESTS = st.sampled_from([f"r{i}" for i in range(8)])  # r0, r2... take the agent's lock
LOCK_TTL = 30
SESSIONS = st.sampled_from([f"S{i}" for i in range(6)])


@dataclass
class ModelRequest:
    agent: str
    resumed: str | None
    session: str | None = None
    status: str = "pending"
    outcome: tuple[Any, ...] | None = None
    token: int | None = None  # of the lock taken with it
    tracked: int = 0  # when, in the model's order of tracks and resets
    superseded: bool = False  # answered once the agent had moved on


@dataclass
class ModelLock:
    token: int
    expires: float
    held: bool = True


@dataclass
class ModelSession:
    agent: str
    parent: str | None
    status: str = "active"
    count: int = 1


@dataclass
class Model:
    """The rules, as plainly as they can be written."""

    requests: dict[str, ModelRequest] = field(default_factory=dict)
    sessions: dict[str, ModelSession] = field(default_factory=dict)
    current: dict[str, str | None] = field(default_factory=dict)
    chains: dict[str, list[str]] = field(default_factory=dict)
    locks: dict[str, ModelLock] = field(default_factory=dict)
    tokens: int = 0
    now: float = 0.0
    order: int = 0  # tracks and resets so far
    last_reset: dict[str, int] = field(default_factory=dict)

    def track(
        self, rid: str, agent: str, resumed: str | None, lock: bool
    ) -> type[TrackerError] | None:
        if rid in self.requests:
            same = (self.requests[rid].agent, self.requests[rid].resumed) == (agent, resumed)
            return None if same else errors.DuplicateRequest
        session = self.sessions.get(resumed) if resumed else None
        if session and (session.status == "deleted" or session.agent != agent):
            return errors.InvalidTransition
        token = None
        if lock:
            held = self.locks.get(agent)
            if held and held.held and held.expires > self.now:
                return errors.LockHeld
            self.tokens = token = self.tokens + 1
            self.locks[agent] = ModelLock(token, self.now + LOCK_TTL)
        self.order += 1
        self.requests[rid] = ModelRequest(agent, resumed, token=token, tracked=self.order)
        self.current.setdefault(agent, None)
        return None

    def assign(self, rid: str, sid: str) -> type[TrackerError] | None:
        request = self.requests.get(rid)
        if request is None:
            return errors.UnknownRequest
        if request.session == sid:
            return None
        if request.session is not None or request.status != "pending":
            return errors.InvalidTransition
        session = self.sessions.get(sid)
        if session and (session.status == "deleted" or session.agent != request.agent):
            return errors.InvalidTransition
        if session:
            session.count += 1
            session.status = "active"
        else:
            parent = request.resumed if request.resumed != sid else None
            self.sessions[sid] = ModelSession(request.agent, parent)
            self.chains.setdefault(request.agent, []).append(sid)
        request.session, request.status = sid, "active"
        request.superseded = self.taken_over(request) or self.reset_since(request)
        if not request.superseded:
            self.current[request.agent] = sid
        return None

    def reset_since(self, request: ModelRequest) -> bool:
        """Whether the request's agent was reset after it was tracked."""
        return self.last_reset.get(request.agent, 0) > request.tracked

    def taken_over(self, request: ModelRequest) -> bool:
        """Whether someone took the agent's lock after the request did."""
        return request.token is not None and self.locks[request.agent].token != request.token

    def finish(self, rid: str, status: str, outcome: tuple[Any, ...]) -> type[TrackerError] | None:
        request = self.requests.get(rid)
        if request is None:
            return errors.UnknownRequest
        if request.status in ("completed", "failed"):
            return None if request.outcome == outcome else errors.InvalidTransition
        if status == "completed" and request.status == "pending":
            return errors.InvalidTransition
        request.status, request.outcome = status, outcome
        if request.token is not None and not self.taken_over(request):
            self.locks[request.agent].held = False
        return None

    def retire(self, sid: str, status: str) -> type[TrackerError] | None:
        session = self.sessions.get(sid)
        if session is None:
            return errors.UnknownSession
        if session.status == "deleted" or session.status == status:
            return None
        session.status = status
        if self.current.get(session.agent) == sid:
            self.current[session.agent] = None
        return None

    def in_use(self) -> set[str | None]:
        """Sessions an unfinished request continues or was answered with."""
        unfinished = [r for r in self.requests.values() if r.status in ("pending", "active")]
        return {r.session for r in unfinished} | {r.resumed for r in unfinished}

    def reset(self, agent: str) -> type[TrackerError] | None:
        if agent not in self.current:
            return errors.UnknownAgent
        self.current[agent] = None
        self.order += 1
        self.last_reset[agent] = self.order
        return None


class TrackerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "t.db"
        self.portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.clock = ManualClock()
        self.tracker_cm = self.portal.wrap_async_context_manager(
            Tracker.open(self.path, durability="process", clock=self.clock)
        )
        self.tracker: Tracker = self.tracker_cm.__enter__()
        self.model = Model()
        self.steps = 0

    def teardown(self) -> None:
        try:
            self.check_projections_equal_a_rebuild()
        finally:
            self.tracker_cm.__exit__(None, None, None)
            self.portal_cm.__exit__(None, None, None)
            self.tmp.cleanup()

    def call(
        self, expected: type[TrackerError] | None, make: Callable[[], Coroutine[Any, Any, Any]]
    ) -> None:
        """Run one API call; it must fail exactly when the model says, appending nothing."""
        before = event_count(self.path)
        try:
            self.portal.call(make)
        except TrackerError as exc:
            if expected is None or not isinstance(exc, expected):
                raise AssertionError(f"got {exc!r}, the model expected {expected}") from exc
            assert event_count(self.path) == before, "a failed call appended events"
            return
        assert expected is None, f"expected {expected.__name__}"
        self.steps += 1

    @rule(
        rid=REQUESTS,
        agent=AGENTS,
        resume=st.sampled_from(["current", "none", "other"]),
        other=SESSIONS,
    )
    def track(self, rid: str, agent: str, resume: str, other: str) -> None:
        resumed = {"current": self.model.current.get(agent), "none": None, "other": other}[resume]
        if rid in self.model.requests:  # repeat with the original resumed id half the time
            resumed = self.model.requests[rid].resumed if resume == "current" else resumed
        lock = int(rid[1:]) % 2 == 0
        expected = self.model.track(rid, agent, resumed, lock)
        self.call(
            expected,
            lambda: self.tracker.track_request(
                rid, agent_id=agent, session_id=resumed, lock=lock, lock_ttl=LOCK_TTL
            ),
        )

    @rule(seconds=st.sampled_from([10, 31]))
    def advance(self, seconds: int) -> None:
        """Time passes: a lock lapses after LOCK_TTL, and the next request takes it over."""
        self.clock.advance(seconds)
        self.model.now += seconds

    @rule(rid=st.sampled_from(["r0", "r2", "r4", "r6"]), agent=AGENTS)
    def stall_then_take_over(self, rid: str, agent: str) -> None:
        """The holder of the agent's lock stalls past its TTL, and a request takes it over
        (a step of its own, so that runs often get to answer the stalled request late)."""
        self.advance(LOCK_TTL + 1)
        self.track(rid, agent, "current", "S0")

    @rule(rid=REQUESTS, sid=SESSIONS)
    def assign(self, rid: str, sid: str) -> None:
        expected = self.model.assign(rid, sid)
        self.call(expected, lambda: self.tracker.update_request_session(rid, sid))

    @rule(rid=REQUESTS, cost=st.sampled_from([0.5, 1.0]))
    def complete(self, rid: str, cost: float) -> None:
        expected = self.model.finish(rid, "completed", ("completed", cost))
        self.call(
            expected,
            lambda: self.tracker.complete_request(rid, usage={"input_tokens": 7}, cost_usd=cost),
        )

    @rule(rid=REQUESTS, kind=st.sampled_from(["timeout", "cli_error"]))
    def fail(self, rid: str, kind: str) -> None:
        expected = self.model.finish(rid, "failed", ("failed", kind))
        self.call(expected, lambda: self.tracker.fail_request(rid, error="x", kind=kind))

    @rule(sid=SESSIONS, delete=st.booleans())
    def retire(self, sid: str, delete: bool) -> None:
        expected = self.model.retire(sid, "deleted" if delete else "expired")
        if delete:
            self.call(expected, lambda: self.tracker.delete_session(sid))
        else:
            self.call(expected, lambda: self.tracker.expire_session(sid))

    @rule(most=st.integers(min_value=0, max_value=4))
    def keep_at_most(self, most: int) -> None:
        """cleanup(max_sessions=): which sessions is a matter of time; the model checks that
        none was in use, that enough went, and follows what the report says."""
        active = {sid for sid, s in self.model.sessions.items() if s.status == "active"}
        in_use = self.model.in_use()
        report = self.portal.call(lambda: self.tracker.cleanup(max_sessions=most))
        retired = set(report.over_capacity_sessions)
        assert retired <= active - in_use, (retired, active, in_use)
        assert len(retired) == min(max(len(active) - most, 0), len(active - in_use))
        for sid in retired:
            self.model.retire(sid, "expired")

    @rule(agent=AGENTS)
    def reset(self, agent: str) -> None:
        self.call(self.model.reset(agent), lambda: self.tracker.reset_agent(agent))

    @invariant()
    def requests_match_the_model(self) -> None:
        for rid, expected in self.model.requests.items():
            request = self.portal.call(self.tracker.get_request, rid)
            assert request is not None
            assert (request.session_id, request.status, request.superseded) == (
                expected.session,
                expected.status,
                expected.superseded,
            ), rid

    @invariant()
    def mapping_and_chains_match_the_model(self) -> None:
        for agent, current in self.model.current.items():
            assert self.portal.call(self.tracker.get_agent_session, agent) == current
            chain = self.portal.call(self.tracker.get_chain, agent)
            assert [s.session_id for s in chain] == self.model.chains.get(agent, [])
            for session in chain:
                expected = self.model.sessions[session.session_id]
                assert (session.parent_session_id, session.status, session.request_count) == (
                    expected.parent,
                    expected.status,
                    expected.count,
                )

    @precondition(lambda self: self.steps % 7 == 6)
    @invariant()
    def check_projections_equal_a_rebuild(self) -> None:
        report = self.portal.call(self.tracker.verify)
        assert report.ok, report


TrackerMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30, deadline=None)
test_tracker_matches_the_model = TrackerMachine.TestCase
