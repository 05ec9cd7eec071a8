"""One of several processes sharing agents on one file, to be killed at random.

Usage: python tests/chaos_worker.py DB NAME AGENTS [rebuild]
Every process drives the same agents ("a0".."aN"), each turn continuing the
agent's current session (CURRENT) under its lock with a short TTL, so a killed
holder's lock lapses and another process takes it over. Now and then a turn
stalls past the TTL before the CLI answers (another process may take the lock
over: the late answer is superseded) or the user starts over (the agent is
reset while the answer is coming). Each process also runs cleanup (abandoning
the requests of a killed process, retiring idle sessions); with "rebuild" it
rebuilds the projections in a loop. Lines: "T rid", "C rid", "F rid", each
printed only once its call returned; "E Class" for a refused call.
"""

from __future__ import annotations

import random
import sys

import anyio

from tracker import CURRENT, LockHeld, Tracker, TrackerError

USAGE = {"input_tokens": 5, "output_tokens": 2}
LOCK_TTL = 0.5


def ack(*parts: str) -> None:
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()


async def turns(t: Tracker, name: str, agent: str) -> None:
    for k in range(1, 1_000_000):
        rid = f"{name}-{agent}-{k}-{random.getrandbits(32):x}"  # a restarted process differs
        try:
            request = await t.track_request(
                rid, agent_id=agent, session_id=CURRENT, lock=True, lock_ttl=LOCK_TTL
            )
        except LockHeld:
            await anyio.sleep(0.002)
            continue
        ack("T", rid)
        try:
            resumed = request.resumed_session_id
            answer = f"s-{rid}" if k % 2 or resumed is None else resumed
            await _meanwhile(t, agent)
            await t.update_request_session(rid, answer)
            if k % 7 == 0:
                await t.fail_request(rid, error="timeout", kind="timeout")
                ack("F", rid)
            else:
                await t.complete_request(rid, usage=USAGE, cost_usd=0.001)
                ack("C", rid)
        except TrackerError as exc:  # cleanup may abandon a slow request first
            ack("E", type(exc).__name__)


async def _meanwhile(t: Tracker, agent: str) -> None:
    """What may happen while the CLI runs: mostly nothing; sometimes the orchestrator
    stalls past the lock's TTL, or the user starts over."""
    luck = random.random()
    if luck < 0.03:
        await anyio.sleep(LOCK_TTL * 1.5)
    elif luck < 0.06:
        await t.reset_agent(agent, reason="start over")


async def maintain(t: Tracker) -> None:
    while True:
        await anyio.sleep(0.2)
        await t.cleanup(idle_for=0.3, stale_after=1.0)


async def rebuild(t: Tracker) -> None:
    while True:
        await anyio.sleep(0.3)
        await t.rebuild()


async def main(path: str, name: str, agents: int, extra: str) -> None:
    async with Tracker.open(path, owner=name) as t:
        ack("ready")
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                tg.start_soon(turns, t, name, f"a{a}")
            tg.start_soon(maintain, t)
            if extra == "rebuild":
                tg.start_soon(rebuild, t)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), (sys.argv[4:] or [""])[0])
