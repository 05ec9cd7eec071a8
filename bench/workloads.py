"""The workloads of ../shared/BENCH.md, each returning its figures as a dict.

W1 lifecycle append through the public API; W2 rebuild; W3 point reads; the
store alone (group commit, no projections); and the ceilings C0 (stdlib
sqlite3 executemany in one transaction) and C1 (aiosqlite group-commit loop,
no projections), fed the same event rows as W1. W2's ceiling, C2, is in
``bench.regroup``.
"""

from __future__ import annotations

import random
import resource
import sqlite3
import statistics
import time
import uuid
from pathlib import Path

import aiosqlite
import anyio

from bench import Figures
from tracker import Tracker
from tracker.codec import Keys, decode
from tracker.events import AnyEvent
from tracker.store import EventStore, NoProjections

USAGE = {
    "input_tokens": 1200,
    "output_tokens": 300,
    "cache_read_tokens": 5000,
    "cache_write_tokens": 800,
}
CALL_SHAPE = (2, 1, 2)  # events per awaited call in one W1 turn: track+lock, assign, finish+release


def peak_rss_mb() -> float:
    """This process's peak resident set, in MB.

    Linux's VmHWM starts afresh at exec; ``ru_maxrss`` does not: a child started by
    a process that had grown to 95 MB reports 95 MB whatever it uses itself.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def disk_bytes(path: Path) -> int:
    return sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )


async def w1(
    path: Path,
    agents: int,
    turns: int,
    content: str = "none",
    text_bytes: int = 0,
    prefix: str = "",
) -> Figures:
    """W1: A agents x T turns through the public API, every call acknowledged
    (``prefix`` names agents and requests apart from those already in ``path``)."""
    text = "x" * text_bytes if text_bytes else None

    async def agent(t: Tracker, a: int) -> None:
        current: str | None = None
        for k in range(turns):
            rid = f"{prefix}r-{a}-{k}"
            await t.track_request(
                rid,
                agent_id=f"{prefix}agent-{a}",
                session_id=current,
                lock=True,
                lock_ttl=30,
                prompt=text,
            )
            current = str(uuid.uuid4()) if k % 2 or current is None else current
            await t.update_request_session(rid, current)
            if k % 10 == 9:
                await t.fail_request(rid, error="timeout", kind="timeout")
            else:
                await t.complete_request(
                    rid, response=text, usage=USAGE, cost_usd=0.0042, duration_ms=1500
                )

    async with Tracker.open(path, content=content) as t:  # type: ignore[arg-type]
        before = (await t.stats()).events  # W4 runs W1 on a full database
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for a in range(agents):
                tg.start_soon(agent, t, a)
        elapsed = time.perf_counter() - started
        events = (await t.stats()).events - before
    return {
        "turns_per_s": agents * turns / elapsed,
        "events_per_s": events / elapsed,
        "seconds": elapsed,
        "events": events,
        "bytes_per_event": disk_bytes(path) / (events + before),
        "peak_rss_mb": peak_rss_mb(),
    }


Row = tuple[str, str, Keys]  # type, stored payload, keys


def event_calls(path: Path) -> list[list[list[Row]]]:
    """W1's rows as (type, payload, keys), per agent, cut into the API calls that wrote them."""
    conn = sqlite3.connect(path)
    per_agent: dict[str, list[Row]] = {}
    for type_, payload, *keys in conn.execute(
        "SELECT type, payload, request_id, agent_id, session_id FROM events ORDER BY seq"
    ):
        per_agent.setdefault(keys[1], []).append((type_, payload, (keys[0], keys[1], keys[2])))
    conn.close()
    calls = []
    for rows in per_agent.values():
        mine, i, shape = [], 0, 0
        while i < len(rows):
            size = CALL_SHAPE[shape % 3]
            mine.append(rows[i : i + size])
            i, shape = i + size, shape + 1
        calls.append(mine)
    return calls


CEILING_SCHEMA = "CREATE TABLE events (seq INTEGER PRIMARY KEY, type TEXT, payload TEXT)"
CEILING_INSERT = "INSERT INTO events (seq, type, payload) VALUES (?, ?, ?)"


def c0(source: Path, path: Path) -> Figures:
    """C0: stdlib sqlite3, one thread, all rows with executemany in one transaction."""
    rows = [(None, t, p) for agent in event_calls(source) for call in agent for t, p, _ in call]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(CEILING_SCHEMA)
    started = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(CEILING_INSERT, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return {"events_per_s": len(rows) / elapsed, "seconds": elapsed, "events": len(rows)}


async def c1(source: Path, path: Path) -> Figures:
    """C1: aiosqlite, one task per agent, a plain group-commit loop, no projections."""
    calls = event_calls(source)
    queue: list[tuple[list[tuple[None, str, str]], anyio.Event]] = []
    wake = anyio.Event()
    done = False
    async with aiosqlite.connect(path, isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        await db.execute(CEILING_SCHEMA)

        async def writer() -> None:
            nonlocal wake
            while not (done and not queue):
                if not queue:
                    await wake.wait()
                    wake = anyio.Event()
                    continue
                batch = queue[:]
                del queue[:]
                await db.execute("BEGIN IMMEDIATE")
                await db.executemany(CEILING_INSERT, [r for rows, _ in batch for r in rows])
                await db.execute("COMMIT")
                for _, acked in batch:
                    acked.set()

        async def agent(mine: list[list[Row]]) -> None:
            for call in mine:
                acked = anyio.Event()
                queue.append(([(None, t, p) for t, p, _ in call], acked))
                wake.set()
                await acked.wait()

        async with anyio.create_task_group() as outer:
            outer.start_soon(writer)
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for mine in calls:
                    tg.start_soon(agent, mine)
            elapsed = time.perf_counter() - started
            done = True
            wake.set()
    events = sum(len(c) for mine in calls for c in mine)
    return {"events_per_s": events / elapsed, "seconds": elapsed, "events": events}


async def store_alone(source: Path, path: Path) -> Figures:
    """The store on its own: W1's events, one task per agent, group commit and hash chain."""
    calls: list[list[list[AnyEvent]]] = [
        [[decode(t, _version(t), p, keys) for t, p, keys in call] for call in mine]
        for mine in event_calls(source)
    ]
    async with EventStore.open(path, NoProjections()) as store:

        async def agent(mine: list[list[AnyEvent]]) -> None:
            for call in mine:
                await store.append(call)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for mine in calls:
                tg.start_soon(agent, mine)
        elapsed = time.perf_counter() - started
    events = sum(len(c) for mine in calls for c in mine)
    return {"events_per_s": events / elapsed, "seconds": elapsed, "events": events}


def _version(type_: str) -> int:
    from tracker.events import BY_TAG

    return BY_TAG[type_].VERSION


async def w2(source: Path) -> Figures:
    """W2: rebuild every projection from W1's log."""
    async with Tracker.open(source, create=False) as t:
        report = await t.rebuild()
    return {
        "events_per_s": report.events / report.seconds,
        "seconds": report.seconds,
        "events": report.events,
        "peak_rss_mb": peak_rss_mb(),
    }


# W3's read, and the others that answer from the verified cache: (its keys, the call)
POINT_READS = {
    "agent_session": (None, Tracker.get_agent_session),
    "agent": (None, Tracker.get_agent),
    "request": ("SELECT request_id FROM requests ORDER BY rowid", Tracker.get_request),
    "session": ("SELECT session_id FROM sessions ORDER BY rowid", Tracker.get_session),
    "chain": (None, Tracker.get_chain),
}


async def w3(source: Path, lookups: int, agents: int, read: str = "agent_session") -> Figures:
    """W3: get_agent_session(random agent), one at a time; ``read`` names another point
    read of ``POINT_READS`` (random request, session or agent of the W1 database)."""
    keys_sql, call = POINT_READS[read]
    if keys_sql is None:
        keys = [f"agent-{n}" for n in range(agents)]
    else:
        conn = sqlite3.connect(source)
        keys = [key for (key,) in conn.execute(keys_sql)]
        conn.close()
    rng = random.Random(3)
    names = [keys[rng.randrange(len(keys))] for _ in range(lookups)]
    latencies: list[float] = []
    async with Tracker.open(source, create=False) as t:
        started = time.perf_counter()
        for name in names:
            before = time.perf_counter()
            await call(t, name)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        unanswered = [name for name in set(names) if not await call(t, name)]
    if unanswered:  # the keys are not the W1 database's: the figures would time misses
        raise SystemExit(f"W3 {read}: nothing found for {sorted(unanswered)[:3]}")
    latencies.sort()
    return {
        "lookups_per_s": lookups / elapsed,
        "p50_us": statistics.median(latencies) * 1e6,
        "p99_us": latencies[int(len(latencies) * 0.99)] * 1e6,
    }
