"""What following the log costs while another process writes:

    python -m bench.followers [--followers 100] [--rate 300] [--seconds 5] [--runs 3]

One process follows (``Tracker.events(follow=True, agent_id=...)``), each follower on
an agent of its own that no event names, so every commit wakes followers that then
find nothing; another process commits ``--rate`` times a second (conversation turns
of other agents) for ``--seconds``. Prints the following process's CPU, in % of a
core, with no follower, one, and ``--followers``, and the reads of the log it made
for each commit (medians of ``--runs``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

from tracker import CURRENT, Tracker
from tracker.tasks import task_group

WRITER = """
import sys, time, anyio
from tracker import CURRENT, Tracker
async def main(path, rate, seconds):
    async with Tracker.open(path) as t:
        print("ready", flush=True)
        sys.stdin.readline()
        start, n = time.monotonic(), 0
        while time.monotonic() - start < seconds:
            agent, request = f"writer-{n % 10}", f"r{n}"
            await t.track_request(request, agent_id=agent, session_id=CURRENT)
            await t.update_request_session(request, f"s{n // 2}-{agent}")
            await t.complete_request(request)
            n += 1
            await anyio.sleep(max(0.0, start + n * 3 / rate - time.monotonic()))
        print(n * 3, flush=True)
anyio.run(main, sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
"""


async def run(path: Path, followers: int, rate: float, seconds: float) -> tuple[float, float]:
    """Follow with ``followers`` while a writer commits; return (CPU share, reads per commit)."""
    async with Tracker.open(path) as t:
        await t.track_request("first", agent_id="writer-0", session_id=CURRENT)  # a WAL
        reads = [0]
        read_with = t._store.read_with

        async def counted(fn: object) -> object:
            reads[0] += 1
            return await read_with(fn)  # type: ignore[arg-type]

        t._store.read_with = counted  # type: ignore[assignment,method-assign]

        async def follow(agent: str) -> None:
            async for _ in t.events(follow=True, agent_id=agent, since=2):
                raise AssertionError("no event names this agent")

        async with task_group() as tg:
            for i in range(followers):
                tg.start_soon(follow, f"follower-{i}")
            await anyio.sleep(0.2)  # each has read what there is, and waits
            cpu, commits, wall, counted_reads = await _while_writing(path, rate, seconds, reads)
            tg.cancel_scope.cancel()
    return cpu / wall, counted_reads / commits


async def _while_writing(
    path: Path, rate: float, seconds: float, reads: list[int]
) -> tuple[float, int, float, int]:
    writer = await anyio.open_process(
        [sys.executable, "-c", WRITER, str(path), str(rate), str(seconds)]
    )
    assert writer.stdin is not None
    assert writer.stdout is not None
    lines = BufferedByteReceiveStream(writer.stdout)
    assert await lines.receive_until(b"\n", 100) == b"ready"
    before, start, reads_before = os.times(), time.perf_counter(), reads[0]
    await writer.stdin.send(b"go\n")
    commits = int(await lines.receive_until(b"\n", 100))
    after, wall = os.times(), time.perf_counter() - start
    await writer.wait()
    cpu = after.user - before.user + after.system - before.system
    return cpu, commits, wall, reads[0] - reads_before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--followers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=300, help="the writer's commits a second")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        for count in (0, 1, args.followers):
            samples = []
            for run_no in range(args.runs):
                path = Path(tmp) / f"f{count}-{run_no}.db"
                samples.append(anyio.run(run, path, count, args.rate, args.seconds))
            share = statistics.median(s[0] for s in samples)
            per_commit = statistics.median(s[1] for s in samples)
            print(
                f"{count:4} followers, another process committing {args.rate:.0f}/s: "
                f"{share:6.1%} of a core, {per_commit:.2f} reads a commit"
            )


if __name__ == "__main__":
    main()
