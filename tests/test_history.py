"""history(): a conversation's turns, read from the log, as the CLI's transcripts hold
them: a request continues its resumed session as it stood when it was tracked."""

from __future__ import annotations

import json
import random
from pathlib import Path

import anyio
import pytest

from tests.helpers import Run
from tracker import (
    CURRENT,
    InvalidInput,
    ManualClock,
    Tracker,
    Turn,
    UnknownRequest,
    UnknownSession,
)


async def turn(
    t: Tracker, request_id: str, session_id: str, *, resume: str | None = None, agent: str = "a1"
) -> None:
    """One answered request: asked "p-<request_id>", answered "a-<request_id>"."""
    await ask(t, request_id, resume=resume, agent=agent)
    await t.update_request_session(request_id, session_id)
    await t.complete_request(request_id, response=f"a-{request_id}")


async def ask(t: Tracker, request_id: str, *, resume: str | None = None, agent: str = "a1") -> None:
    await t.track_request(request_id, agent_id=agent, session_id=resume, prompt=f"p-{request_id}")


def asked(turns: list[Turn]) -> list[str]:
    """The request ids of ``turns``, checking each one's texts on the way."""
    for each in turns:
        assert (each.prompt, each.response) == (f"p-{each.request_id}", f"a-{each.request_id}")
        assert each.whole
    return [each.request_id for each in turns]


async def test_resumes_with_the_same_id_make_one_growing_conversation(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await turn(tracker, "r2", "s1", resume="s1")
    await turn(tracker, "r3", "s1", resume="s1")
    assert asked(await tracker.history(session_id="s1")) == ["r1", "r2", "r3"]
    assert asked(await tracker.history(agent_id="a1")) == ["r1", "r2", "r3"]
    turns = await tracker.history(agent_id="a1")
    assert [t.session_id for t in turns] == ["s1"] * 3


async def test_a_turn_is_timed_by_its_tracking_and_its_answer(
    tracker: Tracker, clock: ManualClock
) -> None:
    asked_at = clock.advance(5)
    await ask(tracker, "r1")
    await tracker.update_request_session("r1", "s1")
    answered_at = clock.advance(7)
    await tracker.complete_request("r1", response="a-r1")
    (only,) = await tracker.history(session_id="s1")
    assert (only.asked_at, only.answered_at) == (asked_at, answered_at)


async def test_resumes_with_new_ids_carry_the_conversation_on(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await turn(tracker, "r2", "s2", resume="s1")
    await turn(tracker, "r3", "s3", resume="s2")
    turns = await tracker.history(agent_id="a1")
    assert asked(turns) == ["r1", "r2", "r3"]
    assert [t.session_id for t in turns] == ["s1", "s2", "s3"]
    assert asked(await tracker.history(session_id="s2")) == ["r1", "r2"]


async def test_a_fork_has_its_own_line_and_leaves_the_session_it_left_as_it_was(
    tracker: Tracker,
) -> None:
    await turn(tracker, "r1", "s1")
    await turn(tracker, "r2", "s1", resume="s1")
    await turn(tracker, "r3", "s1", resume="s1")
    # r4 resumes s1 and is answered with a new id: s2 goes on from s1 as it stood
    await turn(tracker, "r4", "s2", resume="s1")
    await turn(tracker, "r5", "s3", resume="s2")
    assert asked(await tracker.history(session_id="s3")) == ["r1", "r2", "r3", "r4", "r5"]
    assert asked(await tracker.history(session_id="s1")) == ["r1", "r2", "r3"]
    await turn(tracker, "r6", "s4", resume="s2")  # a second branch off s2
    assert asked(await tracker.history(session_id="s4")) == ["r1", "r2", "r3", "r4", "r6"]
    assert asked(await tracker.history(session_id="s3")) == ["r1", "r2", "r3", "r4", "r5"]


async def test_a_request_continues_its_session_as_it_stood_when_it_was_tracked(
    tracker: Tracker,
) -> None:
    await turn(tracker, "r1", "s1")
    await ask(tracker, "r2", resume="s1")  # asked before r3 was answered...
    await turn(tracker, "r3", "s1", resume="s1")
    await tracker.update_request_session("r2", "s2")
    await tracker.complete_request("r2", response="a-r2")
    assert asked(await tracker.history(session_id="s2")) == ["r1", "r2"]  # ...so no r3
    assert asked(await tracker.history(session_id="s1")) == ["r1", "r3"]


async def test_two_answers_at_once_in_one_session_keep_the_later_ones_line(
    tracker: Tracker,
) -> None:
    await turn(tracker, "r1", "s1")
    await ask(tracker, "r2", resume="s1")
    await ask(tracker, "r3", resume="s1")  # no lock: both run on s1 at once
    for request_id in ("r2", "r3"):
        await tracker.update_request_session(request_id, "s1")
    await tracker.complete_request("r3", response="a-r3")
    await tracker.complete_request("r2", response="a-r2")
    # the transcript goes on from the last answer, r2's, which never saw r3
    assert asked(await tracker.history(session_id="s1")) == ["r1", "r2"]


async def test_failed_and_unanswered_requests_are_not_turns(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await ask(tracker, "r2", resume="s1")
    await tracker.update_request_session("r2", "s2")
    await tracker.fail_request("r2", error="timeout", kind="timeout")
    # s2 holds what r2 resumed, not r2 itself
    assert asked(await tracker.history(session_id="s2")) == ["r1"]
    await turn(tracker, "r3", "s3", resume="s2")
    assert asked(await tracker.history(session_id="s3")) == ["r1", "r3"]
    await ask(tracker, "r4", resume="s3")
    await tracker.update_request_session("r4", "s4")  # in flight: the agent is on s4
    assert await tracker.get_agent_session("a1") == "s4"
    assert asked(await tracker.history(agent_id="a1")) == ["r1", "r3"]


async def test_an_agent_reset_starts_a_new_conversation(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await tracker.reset_agent("a1")
    assert await tracker.history(agent_id="a1") == []
    await turn(tracker, "r2", "s2")
    assert asked(await tracker.history(agent_id="a1")) == ["r2"]
    assert asked(await tracker.history(session_id="s1")) == ["r1"]


async def test_an_agent_whose_session_expired_starts_a_new_conversation(
    tracker: Tracker,
) -> None:
    await turn(tracker, "r1", "s1")
    await tracker.expire_session("s1")
    assert await tracker.history(agent_id="a1") == []
    assert asked(await tracker.history(session_id="s1")) == ["r1"]  # the log keeps it


async def test_an_answer_superseded_by_a_reset_keeps_its_own_line(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await ask(tracker, "r2", resume="s1")
    await tracker.reset_agent("a1")
    await tracker.update_request_session("r2", "s2")  # late: the agent started over
    await tracker.complete_request("r2", response="a-r2")
    assert (await tracker.get_request("r2")).superseded  # type: ignore[union-attr]
    assert await tracker.history(agent_id="a1") == []
    assert asked(await tracker.history(session_id="s2")) == ["r1", "r2"]


async def test_a_requests_history_is_what_it_was_given_then_its_turn(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    await ask(tracker, "r2", resume="s1")
    await turn(tracker, "r3", "s1", resume="s1")  # answered while r2 ran
    await tracker.update_request_session("r2", "s2")
    assert asked(await tracker.history(request_id="r2")) == ["r1"]  # not answered yet
    await tracker.complete_request("r2", response="a-r2")
    assert asked(await tracker.history(request_id="r2")) == ["r1", "r2"]
    assert asked(await tracker.history(request_id="r3")) == ["r1", "r3"]
    assert asked(await tracker.history(request_id="r1")) == ["r1"]
    await ask(tracker, "r4", resume="s2")
    await tracker.fail_request("r4", error="cli died")
    assert asked(await tracker.history(request_id="r4")) == ["r1", "r2"]
    with pytest.raises(UnknownRequest, match="'r9'"):
        await tracker.history(request_id="r9")


async def test_an_agent_without_requests_has_an_empty_history(tracker: Tracker) -> None:
    assert await tracker.history(agent_id="nobody") == []


async def test_an_unknown_session_is_an_error_naming_it(tracker: Tracker) -> None:
    await turn(tracker, "r1", "s1")
    with pytest.raises(UnknownSession, match="'s9'"):
        await tracker.history(session_id="s9")


@pytest.mark.parametrize(
    ("named", "message"),
    [
        ({}, "exactly one of agent_id=, session_id= or request_id="),
        ({"agent_id": "a1", "request_id": "r1"}, "exactly one of agent_id=, session_id= or"),
        ({"agent_id": ""}, "agent_id"),
        ({"session_id": 7}, "session_id"),
        ({"request_id": "r\n1"}, "request_id"),
    ],
)
async def test_a_conversation_must_be_named_once_and_well(
    tracker: Tracker, named: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await tracker.history(**named)  # type: ignore[arg-type]


@pytest.mark.parametrize("content", ["full", "preview", "none"])
async def test_turns_hold_the_text_as_kept(db_path: Path, clock: ManualClock, content: str) -> None:
    prompt, response = "q" * 500, "short answer"
    async with Tracker.open(db_path, clock=clock, content=content) as t:  # type: ignore[arg-type]
        await t.track_request("r1", agent_id="a1", prompt=prompt)
        await t.update_request_session("r1", "s1")
        await t.complete_request("r1", response=response)
        (only,) = await t.history(agent_id="a1")
    assert (only.prompt_chars, only.response_chars) == (500, len(response))
    kept = {
        "full": (prompt, response, True),
        "preview": (prompt[:200], response, False),
        "none": (None, None, False),
    }
    assert (only.prompt, only.response, only.whole) == kept[content]


async def test_history_is_read_from_the_file_by_another_tracker(
    db_path: Path, clock: ManualClock
) -> None:
    async with Tracker.open(db_path, clock=clock) as writer:
        await turn(writer, "r1", "s1")
        await turn(writer, "r2", "s2", resume="s1")
        async with Tracker.open(db_path, clock=clock) as reader:
            assert asked(await reader.history(agent_id="a1")) == ["r1", "r2"]
            await turn(writer, "r3", "s3", resume="s2")
            assert asked(await reader.history(agent_id="a1")) == ["r1", "r2", "r3"]


class Transcripts:
    """What a CLI that keeps transcripts holds, kept apart from the tracker: a request
    reads its resumed session's transcript when it starts; an answer writes the
    session's transcript as that plus its own turn; a session new to the CLI starts as
    what its first request read."""

    def __init__(self) -> None:
        self.of: dict[str, list[str]] = {}

    def read(self, resumed: str | None) -> list[str]:
        return list(self.of.get(resumed, [])) if resumed else []

    def assigned(self, session_id: str, context: list[str]) -> None:
        self.of.setdefault(session_id, context)

    def answered(self, session_id: str, context: list[str], request_id: str) -> None:
        self.of[session_id] = [*context, request_id]


class Orchestrator:
    """Drives random conversations without locks: requests overlap, resume current
    or older sessions, get the same or a new id, fail, and agents are reset."""

    AGENTS = ("a0", "a1", "a2")

    def __init__(self, t: Tracker, seed: int) -> None:
        self.t, self.rng, self.cli = t, random.Random(seed), Transcripts()
        self.in_flight: set[str] = set()
        self.resumed: dict[str, str | None] = {}
        self.assigned: dict[str, str] = {}
        self.agent_of: dict[str, str] = {}  # request or session -> its agent
        self.given: dict[str, list[str]] = {}  # request -> the conversation it read
        self.answered: set[str] = set()
        self.requests = 0

    async def step(self) -> None:
        roll = self.rng.random()
        if roll < 0.3 or not self.in_flight:
            await self.ask()
        elif roll < 0.6:
            await self.assign()
        elif roll < 0.88:
            await self.answer()
        elif roll < 0.97:
            await self.fail()
        elif known := sorted(set(self.agent_of.values())):
            await self.t.reset_agent(self.rng.choice(known))

    async def ask(self) -> None:
        self.requests += 1
        request_id, agent = f"r{self.requests}", self.rng.choice(self.AGENTS)
        own = [s for s, whose in self.agent_of.items() if whose == agent and s in self.cli.of]
        resume = self.rng.choice([CURRENT, CURRENT, None, *own[-3:]])
        request = await self.t.track_request(
            request_id, agent_id=agent, session_id=resume, prompt=f"p-{request_id}"
        )
        self.resumed[request_id] = request.resumed_session_id
        self.agent_of[request_id] = agent
        self.given[request_id] = self.cli.read(request.resumed_session_id)
        self.in_flight.add(request_id)

    async def assign(self) -> None:
        waiting = sorted(r for r in self.in_flight if r not in self.assigned)
        if not waiting:
            return
        request_id = self.rng.choice(waiting)
        session_id = self._answered_session(request_id)
        await self.t.update_request_session(request_id, session_id)
        self.assigned[request_id] = session_id
        self.agent_of[session_id] = self.agent_of[request_id]
        self.cli.assigned(session_id, self.given[request_id])

    def _answered_session(self, request_id: str) -> str:
        """Mostly the resumed session or a new one; now and then (a CLI gone odd)
        another of the agent's sessions."""
        resumed, roll = self.resumed[request_id], self.rng.random()
        if resumed is not None and roll < 0.4:
            return resumed
        agent = self.agent_of[request_id]
        others = [s for s in self.cli.of if self.agent_of[s] == agent and s != resumed]
        return self.rng.choice(others) if others and roll > 0.9 else f"s-{request_id}"

    async def answer(self) -> None:
        if not (ready := sorted(r for r in self.in_flight if r in self.assigned)):
            return
        request_id = self.rng.choice(ready)
        await self.t.complete_request(request_id, response=f"a-{request_id}")
        self.in_flight.remove(request_id)
        self.cli.answered(self.assigned[request_id], self.given[request_id], request_id)
        self.answered.add(request_id)

    async def fail(self) -> None:
        request_id = self.rng.choice(sorted(self.in_flight))
        await self.t.fail_request(request_id, error="cli died")
        self.in_flight.remove(request_id)

    async def check(self, t: Tracker) -> None:
        for session_id, transcript in self.cli.of.items():
            assert asked(await t.history(session_id=session_id)) == transcript, session_id
        for agent in self.AGENTS:
            current = await t.get_agent_session(agent)
            assert asked(await t.history(agent_id=agent)) == self.cli.read(current), agent
        for request_id, given in self.given.items():
            own = [request_id] if request_id in self.answered else []
            assert asked(await t.history(request_id=request_id)) == given + own, request_id


@pytest.mark.parametrize("seed", range(4))
async def test_histories_equal_the_transcripts_of_a_cli_that_keeps_them(
    db_path: Path, clock: ManualClock, seed: int
) -> None:
    async with Tracker.open(db_path, clock=clock) as t:
        orchestrator = Orchestrator(t, seed)
        for step in range(1, 301):
            await orchestrator.step()
            if step % 100 == 0:
                await orchestrator.check(t)
    assert max(len(s) for s in orchestrator.cli.of.values()) >= 5  # conversations grew
    async with Tracker.open(db_path, clock=clock) as reopened:
        await orchestrator.check(reopened)


# -- the command line ------------------------------------------------------------


async def _two_turns_kept_in_preview(db_path: Path) -> None:
    async with Tracker.open(db_path, content="preview") as t:
        await t.track_request("r1", agent_id="a1", prompt="line one\nline two")
        await t.update_request_session("r1", "4f1c2d9e-7a3b")
        await t.complete_request("r1", response="x" * 300)
        await turn(t, "r2", "4f1c2d9e-8888", resume="4f1c2d9e-7a3b")


def test_tracker_history_prints_the_transcript(db_path: Path, run: Run) -> None:
    anyio.run(_two_turns_kept_in_preview, db_path)
    code, out, err = run("--db", str(db_path), "history", "agent", "a1")
    assert (code, err) == (0, "")
    assert out.startswith("agent a1, session 4f1c2d9e-8888: 2 turns\n")
    assert "1. request r1, session 4f1c2d9e-7a3b: asked " in out
    assert "  prompt    line one\n            line two\n" in out  # lines under the text
    assert f"  response  {'x' * 200} ... (the first 200 of 300 characters)\n" in out
    assert "2. request r2, session 4f1c2d9e-8888" in out
    code, out, _ = run("--db", str(db_path), "history", "session", "4f1c2d9e-7", "--json")
    assert code == 0
    (only,) = json.loads(out)  # a session named by the start of its id
    assert (only["request_id"], only["prompt"]) == ("r1", "line one\nline two")
    code, out, _ = run("--db", str(db_path), "history", "request", "r2")
    assert code == 0
    assert out.startswith("request r2: 2 turns\n")


async def _kept_without_text(db_path: Path) -> None:
    async with Tracker.open(db_path, content="none") as t:
        await turn(t, "r1", "s1")
        await turn(t, "r2", "s2", agent="a2")
        await t.reset_agent("a2")


def test_tracker_history_says_what_it_cannot_show(db_path: Path, run: Run) -> None:
    anyio.run(_kept_without_text, db_path)
    code, out, _ = run("--db", str(db_path), "history", "session", "s1")
    assert code == 0
    assert "  prompt    (not kept: 4 characters)\n" in out
    code, out, _ = run("--db", str(db_path), "history", "agent", "a2")
    assert (code, out) == (
        0,
        "agent a2 has no current session: its next request starts a new one\n",
    )
    code, out, _ = run("--db", str(db_path), "history", "agent", "a2", "--json")
    assert (code, json.loads(out)) == (0, [])
    for kind, name in (("agent", "a9"), ("session", "s9"), ("request", "r9")):
        code, out, err = run("--db", str(db_path), "history", kind, name)
        assert (code, out, err) == (1, "", f"tracker: no {kind} {name!r}\n")
