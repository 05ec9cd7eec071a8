"""W4 scale: a log of ~1M events (W1 rounds with fresh agents), then read latencies there.

Times the operator's commands as real subprocesses (``tracker stats``,
``tracker chain``, ``tracker events --agent``: interpreter start included) and
the API calls in process, as medians of 5, and ``rebuild()`` on a copy (how long
writers wait for its swap); then W1 alternately on an empty database and on a
copy of the big one (which stays as it was), ``--runs`` times.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from bench import Check, Figures, median, summary, targets_table
from bench.one import in_subprocess
from bench.workloads import USAGE
from tracker import Tracker
from tracker.render import table


async def prefill(path: Path, events: int, agents: int = 200, turns: int = 50) -> int:
    """Append W1 rounds (fresh agent names each round) until ``events`` are logged."""
    async with Tracker.open(path, durability="process") as t:
        round_no = 0
        while (await t.stats()).events < events:
            async with anyio.create_task_group() as tg:
                for a in range(agents):
                    tg.start_soon(_agent, t, f"round{round_no}-agent-{a}", turns)
            round_no += 1
            print(f"  prefill: {(await t.stats()).events:,} events", file=sys.stderr)
        return (await t.stats()).events


async def _agent(t: Tracker, agent: str, turns: int) -> None:
    current: str | None = None
    for k in range(turns):
        rid = f"{agent}-{k}"
        await t.track_request(rid, agent_id=agent, session_id=current, lock=True)
        current = str(uuid.uuid4()) if k % 2 or current is None else current
        await t.update_request_session(rid, current)
        if k % 10 == 9:
            await t.fail_request(rid, error="timeout", kind="timeout")
        else:
            await t.complete_request(rid, usage=USAGE, cost_usd=0.0042, duration_ms=1500)


def time_command(*argv: str, runs: int = 5) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tracker", *argv], check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


async def api_latency(path: Path, agents: list[str]) -> dict[str, float]:
    """Median seconds of each read, one run per agent of ``agents``: another agent each
    time, so ``get_chain`` is read from the database, not from the verified cache."""
    async with Tracker.open(path, create=False) as t:
        calls: dict[str, Callable[[str], Awaitable[object]]] = {
            "stats()": lambda _: t.stats(),
            "get_chain(agent)": t.get_chain,
            "events(agent_id=...)": lambda agent: _drain(t, agent),
            "history(agent_id=...)": lambda agent: t.history(agent_id=agent),
        }
        out = {}
        for name, call in calls.items():
            samples = []
            for agent in agents:
                started = time.perf_counter()
                await call(agent)
                samples.append(time.perf_counter() - started)
            out[name] = statistics.median(samples)
        return out


async def rebuild_times(path: Path, runs: int) -> list[Figures]:
    """``rebuild()`` ``runs`` times: its time, and its swap's (the write lock held: every
    writer waits)."""
    async with Tracker.open(path, create=False) as t:
        reports = [await t.rebuild() for _ in range(runs)]
    return [{"seconds": r.seconds, "swap_seconds": r.swap_seconds} for r in reports]


async def _drain(t: Tracker, agent: str) -> int:
    return len([e async for e in t.events(agent_id=agent)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, help="reuse or keep this database")
    parser.add_argument("--runs", type=int, default=5, help="W1 runs on each database")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--turns", type=int, default=50)
    args = parser.parse_args()
    report(args.db, args.events, args.runs, args.agents, args.turns)


def report(db: Path | None, events: int, runs: int, agents: int, turns: int) -> None:
    """Fill (or reuse) the big database ``db``, time the reads there and W1 on it; print."""
    with tempfile.TemporaryDirectory(prefix="tracker-scale-") as tmp:
        path = db or Path(tmp) / "scale.db"
        total = anyio.run(prefill, path, events, agents, turns)
        readers = [f"round0-agent-{n % agents}" for n in range(7, 12)]
        agent = readers[0]
        rows = [
            [f"tracker {' '.join(c)}", f"{time_command(*c, '--db', str(path)) * 1000:,.0f}"]
            for c in (["stats"], ["chain", agent], ["events", "--agent", agent])
        ]
        latency = anyio.run(api_latency, path, readers)
        rows += [[f"API {name}", f"{s * 1000:,.1f}"] for name, s in latency.items()]
        copy = Path(tmp) / "rebuilt.db"  # the big database stays as it was
        shutil.copyfile(path, copy)
        rebuilds = anyio.run(rebuild_times, copy, min(runs, 3))
        copy.unlink()
        for label, key in (("rebuild()", "seconds"), ("rebuild(): its swap", "swap_seconds")):
            rows.append([f"API {label}", f"{median(rebuilds, key) * 1000:,.0f}"])
        empty, full = w1_empty_and_full(path, Path(tmp), runs, agents, turns)
        print(f"\nW4 on {total:,} events ({path.stat().st_size / 1e6:,.0f} MB)")
        print(table(["operation", "median ms"], rows))
        print(f"\nW1 (events/s, median, min, max of {runs} runs, alternated)")
        print(
            table(
                ["database", "median", "min", "max", "peak RSS MB (median)"],
                [_w1_row("empty", empty), _w1_row(f"{total:,} events", full)],
            )
        )
        ratio = median(full, "events_per_s") / median(empty, "events_per_s")
        print(f"ratio of medians: {ratio:.0%}\n")
        print(targets_table(checks(ratio, latency, empty, full)))


def checks(
    ratio: float, latency: dict[str, float], empty: list[Figures], full: list[Figures]
) -> list[Check]:
    """W4's targets: W1 within 20% on the big log, stats and chain (in process) under
    100 ms, and W1's peak RSS flat (within 10%) as the log grows."""
    stats, chain = latency["stats()"] * 1000, latency["get_chain(agent)"] * 1000
    rss_empty, rss_full = median(empty, "peak_rss_mb"), median(full, "peak_rss_mb")
    return [
        ("W4: W1 >= 80% of its empty-database figure", f"{ratio:.0%}", ratio >= 0.8),
        ("W4: stats() < 100 ms", f"{stats:.1f} ms", stats < 100),
        ("W4: get_chain(agent) < 100 ms", f"{chain:.1f} ms", chain < 100),
        (
            "W4: W1 peak RSS flat as the log grows",
            f"{rss_full:.1f} MB (empty: {rss_empty:.1f})",
            rss_full <= rss_empty * 1.1,
        ),
    ]


def _w1_row(label: str, samples: list[Figures]) -> list[str]:
    spread = summary(samples, "events_per_s")
    return [label, *(f"{v:,.0f}" for v in spread), f"{median(samples, 'peak_rss_mb'):.1f}"]


def w1_empty_and_full(
    path: Path, tmp: Path, runs: int, agents: int, turns: int
) -> tuple[list[Figures], list[Figures]]:
    """W1 alternately on an empty database and on a copy of ``path`` (kept intact), each
    run in its own process (a clean peak RSS)."""
    empty, full = [], []
    for run in range(runs):
        fresh, copy = tmp / f"empty{run}.db", tmp / f"full{run}.db"
        empty.append(in_subprocess("w1", str(fresh), str(agents), str(turns)))
        shutil.copyfile(path, copy)
        full.append(in_subprocess("w1", str(copy), str(agents), str(turns), "none", "0", "w4-"))
        for db_file in (fresh, copy):
            db_file.unlink()
    return empty, full


if __name__ == "__main__":
    main()
