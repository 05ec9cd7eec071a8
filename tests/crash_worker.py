"""A process to kill: drives W1-style turns and prints each acknowledgement at once.

Usage: python tests/crash_worker.py DB PREFIX MODE   (MODE: w1, rebuild, cleanup)
Lines: "T rid" tracked (with the agent's lock), "A rid sid" assigned, "C rid"
completed, "F rid" failed; each is printed only after its call returned.
"""

from __future__ import annotations

import sys

import anyio

from tracker import Tracker, TrackerError

USAGE = {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 5000}


def ack(*parts: str) -> None:
    sys.stdout.write(" ".join(parts) + "\n")
    sys.stdout.flush()


async def agent(t: Tracker, prefix: str, a: int) -> None:
    current: str | None = None
    for k in range(10_000):
        rid, agent_id = f"{prefix}-{a}-{k}", f"{prefix}-a{a}"
        try:
            await t.track_request(rid, agent_id=agent_id, session_id=current, lock=True)
            ack("T", rid)
            session = f"{prefix}-s{a}-{k}" if k % 2 or current is None else current
            await t.update_request_session(rid, session)
            ack("A", rid, session)
            current = session
            if k % 10 == 9:
                await t.fail_request(rid, error="timeout", kind="timeout")
                ack("F", rid)
            else:
                await t.complete_request(rid, usage=USAGE, cost_usd=0.0042, duration_ms=1500)
                ack("C", rid)
        except TrackerError:  # cleanup mode abandons requests under our feet
            current = None


async def rebuild_forever(t: Tracker) -> None:
    while True:
        await t.rebuild()
        ack("R")


async def cleanup_forever(t: Tracker) -> None:
    while True:
        await t.cleanup(idle_for=0.01, stale_after=0.01)
        await anyio.sleep(0.005)


async def main(path: str, prefix: str, mode: str) -> None:
    async with Tracker.open(path) as t:
        ack("ready")
        async with anyio.create_task_group() as tg:
            for a in range(20):
                tg.start_soon(agent, t, prefix, a)
            if mode == "rebuild":
                tg.start_soon(rebuild_forever, t)
            elif mode == "cleanup":
                tg.start_soon(cleanup_forever, t)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
