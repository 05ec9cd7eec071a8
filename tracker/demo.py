"""``make demo``: a simulated orchestrator drives many agents against a real database file.

The fake CLI behaves like ``claude -p --resume``: it usually keeps the session
id, sometimes answers a new one, forks on ``--fork-session``, fails before or
after reporting a session, or hangs until the orchestrator's timeout. Agents
get concurrent messages, so requests contend for the agent's lock, and users
sometimes start over while an answer is coming. Then the demo prints what the
tracker saw.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import anyio

from tracker import CURRENT, LockHeld, Tracker
from tracker.events import LockAcquired, SessionAssigned
from tracker.render import dollars, duration, table, tree

TIMEOUT_S = 0.25


class CliError(Exception):
    """The fake CLI exited non-zero."""


@dataclass(frozen=True)
class Answer:
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cost_usd: float
    duration_ms: int


class FakeCli:
    """Answers like the Claude CLI, with its quirks, at random (seeded)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    async def start(self, resume: str | None, fork: bool) -> str:
        """Return the session id the CLI reports at start (its system/init message)."""
        await anyio.sleep(self.rng.uniform(0.001, 0.01))
        if resume and self.rng.random() < 0.02:
            raise CliError(f"No conversation found with session ID: {resume}")
        if resume is None or fork or self.rng.random() < 0.25:
            return str(uuid.uuid4())  # a new id: older CLIs, /clear, --fork-session
        return resume  # current CLIs keep the id

    async def finish(self) -> Answer:
        """Return the final result, or fail or hang after the session was reported."""
        roll = self.rng.random()
        if roll < 0.03:
            await anyio.sleep(10)  # hangs: the orchestrator times out
        await anyio.sleep(self.rng.uniform(0.002, 0.03))
        if roll < 0.07:
            raise CliError("error_max_turns: reached the maximum number of turns")
        tokens_in = self.rng.randint(200, 4000)
        return Answer(
            tokens_in,
            self.rng.randint(50, 900),
            self.rng.randint(0, 20000),
            round(tokens_in * 3e-6 + 0.0005, 6),
            self.rng.randint(800, 9000),
        )


class Orchestrator:
    def __init__(self, tracker: Tracker, cli: FakeCli, rng: random.Random) -> None:
        self.t, self.cli, self.rng = tracker, cli, rng
        self.seen: Counter[str] = Counter()

    async def agent(self, agent: str, turns: int) -> None:
        for k in range(turns):
            roll = self.rng.random()
            if roll < 0.06 and k > 0:
                await self.fork(agent, k)
            elif roll < 0.09 and k > 0:
                await self.start_over(agent, f"{agent}-t{k}")
            elif roll < 0.21:  # a second message arrives while a turn is in flight
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self.turn, agent, f"{agent}-t{k}")
                    tg.start_soon(self.turn, agent, f"{agent}-t{k}-followup", 0.5)
            else:
                await self.turn(agent, f"{agent}-t{k}")

    async def start_over(self, agent: str, rid: str) -> None:
        """The user starts over (/clear) while the CLI is answering: the late answer is
        superseded, and the agent's next turn begins a new conversation."""
        tracked = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.turn, agent, rid, 2.0, tracked)
            await tracked.wait()
            await self.t.reset_agent(agent, reason="the user started over")
        self.seen["started over mid-turn"] += 1

    async def turn(
        self, agent: str, rid: str, wait: float = 2.0, tracked: anyio.Event | None = None
    ) -> None:
        try:  # CURRENT: the session to resume is decided once the agent's lock is held
            request = await self.t.track_request(
                rid,
                agent_id=agent,
                session_id=CURRENT,
                lock=True,
                lock_wait=wait,
                prompt=f"turn {rid}: carry on",
            )
        except LockHeld:
            self.seen["refused: lock held"] += 1
            return
        finally:
            if tracked is not None:
                tracked.set()
        await self.run(rid, request.resumed_session_id, fork=False)

    async def fork(self, agent: str, k: int) -> None:
        """Explore two alternatives from the current session (--fork-session)."""
        resume = await self.t.get_agent_session(agent)
        self.seen["forks"] += 1
        async with anyio.create_task_group() as tg:
            for branch in ("a", "b"):
                rid = f"{agent}-t{k}-fork-{branch}"
                await self.t.track_request(
                    rid,
                    agent_id=agent,
                    session_id=resume,
                    metadata={"fork": branch},
                    prompt=f"try alternative {branch}",
                )
                tg.start_soon(self.run, rid, resume, True)

    async def run(self, rid: str, resume: str | None, fork: bool) -> None:
        try:
            session = await self.cli.start(resume, fork)
        except CliError as exc:
            await self.t.fail_request(rid, error=str(exc), kind="cli_error")
            self.seen["failed before a session"] += 1
            return
        if (await self.t.update_request_session(rid, session)).superseded:
            self.seen["answered once the user had started over"] += 1
        try:
            with anyio.fail_after(TIMEOUT_S):
                answer = await self.cli.finish()
        except TimeoutError:
            await self.t.fail_request(rid, error=f"no result within {TIMEOUT_S}s", kind="timeout")
            self.seen["timed out"] += 1
            return
        except CliError as exc:
            await self.t.fail_request(rid, error=str(exc), kind="cli_error")
            self.seen["failed after a session"] += 1
            return
        usage = {
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "cache_read_tokens": answer.cache_read_tokens,
        }
        await self.t.complete_request(
            rid,
            response=f"done: {rid}",
            usage=usage,
            cost_usd=answer.cost_usd,
            duration_ms=answer.duration_ms,
        )
        self.seen["completed"] += 1


async def simulate(path: Path, agents: int, turns: int, seed: int) -> None:
    rng = random.Random(seed)
    async with Tracker.open(path, content="preview", owner="demo-orchestrator") as t:
        orchestrator = Orchestrator(t, FakeCli(rng), rng)
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                tg.start_soon(orchestrator.agent, f"agent-{a:02d}", turns)
        elapsed = time.perf_counter() - started
        await report(t, orchestrator, agents, elapsed)


async def report(t: Tracker, orch: Orchestrator, agents: int, elapsed: float) -> None:
    stats = await t.stats()
    print(
        f"\n{agents} agents ran concurrently for {elapsed:.2f} s against {t.path}: "
        f"{stats.events:,} events, each acknowledged (committed) before its call returned.\n"
    )
    print("What the orchestrator saw:")
    print(table(["outcome", "count"], sorted(orch.seen.items())))
    print("\nWhat the tracker recorded (tracker stats):")
    print(
        table(
            [
                "requests",
                "completed",
                "failed",
                "pending",
                "sessions",
                "tokens in/out",
                "cost",
                "avg duration",
                "failure rate",
                "lock waits",
            ],
            [
                [
                    stats.requests,
                    stats.completed,
                    stats.failed,
                    stats.pending,
                    stats.sessions,
                    f"{stats.input_tokens:,}/{stats.output_tokens:,}",
                    dollars(stats.cost_usd),
                    duration(stats.avg_duration_ms),
                    f"{(stats.failure_rate or 0):.1%}",
                    stats.lock_waits,
                ]
            ],
        )
    )
    superseded = [
        e.session_id
        async for e in t.events(types=["SessionAssigned"])
        if isinstance(e.event, SessionAssigned) and e.event.superseded
    ]
    print(
        f"\n{len(superseded)} answers came after their agent had started over: superseded, "
        "kept in its chain as branches, none its current session."
    )
    names = [f"agent-{a:02d}" for a in range(agents)]
    await show_chains(t, names)
    await show_history(t, names)
    await show_audit(t)
    verdict = await t.verify()
    health = await t.health()
    print(
        f"\nverify(): ok={verdict.ok} (hash chain over {verdict.events:,} events intact, "
        f"live projections equal a full replay)"
    )
    print(
        f"health(): schema v{health.schema_version}, integrity {health.integrity}, "
        f"lag {health.lag}, {health.file_bytes + health.wal_bytes:,} bytes on disk"
    )
    print(f"\nExplore it: sqlite3 {t.path} 'SELECT * FROM agent_usage LIMIT 5'")


async def show_chains(t: Tracker, names: list[str]) -> None:
    chains = [c for c in [await t.get_chain(name) for name in names] if c]
    forked = [c for c in chains if len({s.parent_session_id for s in c}) < len(c)]
    longest = max(chains, key=len) if chains else None
    for title, chain in (
        ("a forked chain", forked[0] if forked else None),
        ("the longest chain", longest),
    ):
        if not chain:
            continue
        current = await t.get_agent_session(chain[0].agent_id or "")
        print(f"\n{title}: {chain[0].agent_id} (current session marked *)")
        print(
            tree(
                [
                    (
                        s.session_id,
                        s.parent_session_id,
                        f"{s.session_id[:8]}{'*' if s.session_id == current else ''} "
                        f"{s.request_count} req, {dollars(s.cost_usd)}, {s.status}",
                    )
                    for s in chain
                ]
            )
        )


async def show_history(t: Tracker, names: list[str], shown: int = 5) -> None:
    """The longest conversation an agent's next turn would continue."""
    agent, turns = max(
        [(name, await t.history(agent_id=name)) for name in names], key=lambda h: len(h[1])
    )
    print(
        f"\nthe conversation {agent}'s next turn continues (history(): {len(turns)} turns, "
        f"the last {min(shown, len(turns))} shown; failed turns and other branches left out):"
    )
    print(
        table(
            ["#", "request", "session", "asked", "prompt", "response"],
            [
                [n, turn.request_id, turn.session_id[:8], turn.asked_at, turn.prompt, turn.response]
                for n, turn in enumerate(turns, 1)
            ][-shown:],
        )
    )


async def show_audit(t: Tracker) -> None:
    followups = [
        e
        async for e in t.events(types=["LockAcquired"])
        if isinstance(e.event, LockAcquired)
        and e.event.waited_ms  # it waited for the lock
        and e.request_id
        and e.request_id.endswith("followup")
    ]
    rid = followups[0].request_id if followups else "agent-00-t0"
    assert rid is not None
    print(
        f"\naudit trail of {rid} (a message that arrived while another held the lock: "
        "it waited, then resumed the session its predecessor was given):"
    )
    print(
        table(
            ["seq", "at", "event", "session", "detail"],
            [
                [e.seq, e.at, e.type, (e.session_id or "")[:8], _detail(e.event)]
                async for e in t.events(request_id=rid)
            ],
        )
    )


def _detail(event: object) -> str:
    for name in ("resumed_session_id", "waited_ms", "error", "cost_usd", "parent_session_id"):
        value = getattr(event, name, None)
        if value:
            return f"{name}={value[:8] if name.endswith('session_id') else value}"
    return ""


async def with_real_cli(path: Path, claude_bin: str, agents: int, turns: int) -> None:
    """Drive a few agents through the real CLI (``CLAUDE_BIN=claude make demo``)."""
    from tracker.claude import ClaudeRunner

    prompts = [
        "Reply with one word: a colour.",
        "Now a different colour, one word.",
        "And a third one, one word.",
    ]
    async with Tracker.open(path, content="preview", owner="demo-claude") as t:
        runner = ClaudeRunner(
            t,
            claude_bin=claude_bin,
            concurrency=agents,
            timeout=180,
            extra_args=["--max-turns", "1"],
        )

        async def agent(name: str) -> None:
            for k in range(turns):
                run = await runner.run(prompts[k % len(prompts)], agent_id=name)
                answer = run.result.text if run.result and run.result.text else run.request.error
                print(
                    f"{name} turn {k}: {run.request.status} in session "
                    f"{(run.request.session_id or '-')[:8]}: {answer!r}"
                )

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                tg.start_soon(agent, f"claude-agent-{a}")
        print(
            f"\n{claude_bin}: {agents} agents x {turns} turns in "
            f"{time.perf_counter() - started:.1f} s"
        )
        stats = await t.stats()
        print(
            table(
                ["requests", "completed", "failed", "sessions", "tokens in/out", "cost"],
                [
                    [
                        stats.requests,
                        stats.completed,
                        stats.failed,
                        stats.sessions,
                        f"{stats.input_tokens:,}/{stats.output_tokens:,}",
                        dollars(stats.cost_usd),
                    ]
                ],
            )
        )
        await show_chains(t, [f"claude-agent-{a}" for a in range(agents)])
        print(f"\nverify(): ok={(await t.verify()).ok}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--db", default="demo.db", type=Path)
    parser.add_argument("--agents", type=int, default=60)
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for suffix in ("", "-wal", "-shm"):  # every run tells the story from the start
        Path(f"{args.db}{suffix}").unlink(missing_ok=True)
    claude_bin = os.environ.get("CLAUDE_BIN")
    if claude_bin:
        anyio.run(with_real_cli, args.db, claude_bin, min(args.agents, 3), min(args.turns, 2))
    else:
        anyio.run(simulate, args.db, args.agents, args.turns, args.seed)


if __name__ == "__main__":
    main()
