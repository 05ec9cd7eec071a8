"""Latency of the HTTP view's routes over a real loopback connection (keep-alive),
server and client in one process (the client in a worker thread, so the two share
the GIL: the figures are upper bounds; a client in another process sees less):

    python -m bench.web DB [--requests 500]

DB is any tracker database, e.g. W4's file (``python -m bench.scale --keep DB``).
Prints the median and p99 of each route, in milliseconds, then what idle long polls
of ``/events`` cost: the process's CPU while ``IDLE_POLLS`` of them wait at once.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sqlite3
import statistics
import time
from functools import partial
from pathlib import Path
from urllib.parse import quote

import anyio

from tracker import Tracker
from tracker.tasks import task_group
from tracker.web import server as web
from tracker.web.app import SessionsApp


def routes(path: Path, requests: int) -> dict[str, list[str]]:
    """Each route with the paths to time: point reads over random ids, pages as given."""
    conn = sqlite3.connect(path)
    try:
        ids = conn.execute(
            "SELECT session_id, agent_id FROM sessions WHERE agent_id IS NOT NULL "
            "ORDER BY random() LIMIT ?",
            (requests,),
        ).fetchall()
        head = conn.execute("SELECT max(seq) FROM event_log").fetchone()[0]
    finally:
        conn.close()
    sessions = [quote(session, safe="") for session, _ in ids]
    agent = quote(ids[0][1], safe="")
    few = max(requests // 50, 5)
    return {
        "GET /sessions/{id}": [f"/sessions/{s}" for s in sessions],
        "GET /sessions?limit=100": ["/sessions?limit=100"] * few,
        "GET /sessions?agent=A&limit=100": [f"/sessions?agent={agent}&limit=100"] * few,
        "GET /sessions?status=deleted": ["/sessions?status=deleted&limit=100"] * few,
        "GET /agents?limit=100": ["/agents?limit=100"] * few,
        "GET /agents?after=A&limit=100": [f"/agents?after={agent}&limit=100"] * few,
        "GET /agents/{id}/history": [f"/agents/{agent}/history"] * few,
        "GET /stats": ["/stats"] * few,
        "GET /metrics": ["/metrics"] * few,
        "GET /events?limit=100 (the log's first)": ["/events?limit=100"] * few,
        "GET /events?since=HEAD-100 (its last)": [f"/events?since={head - 100}"] * few,
        "GET /events?agent=A&limit=100": [f"/events?agent={agent}&limit=100"] * few,
    }


IDLE_POLLS = 100
IDLE_S = 5


def long_poll(port: int) -> None:
    """One long poll for events far past the log's end: it waits its whole ``IDLE_S``."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IDLE_S + 30)
    try:
        conn.request("GET", f"/events?since={2**62}&wait={IDLE_S}")
        assert b'"events":[]' in conn.getresponse().read()
    finally:
        conn.close()


async def idle_polls(port: int, count: int) -> None:
    limiter = anyio.CapacityLimiter(count)
    before, started = os.times(), time.perf_counter()
    async with task_group() as tg:
        for _ in range(count):
            tg.start_soon(partial(anyio.to_thread.run_sync, long_poll, port, limiter=limiter))
    after, wall = os.times(), time.perf_counter() - started
    cpu = after.user - before.user + after.system - before.system
    print(f"{count} idle long polls for {IDLE_S} s: {cpu / wall:.0%} of a core")


def timings(port: int, paths: list[str]) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        spent = []
        for path in paths:
            start = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            spent.append(time.perf_counter() - start)
            assert response.status == 200, (path, response.status)
        return spent
    finally:
        conn.close()


async def measure(path: Path, requests: int) -> None:
    plan = routes(path, requests)
    async with Tracker.open(path, create=False) as t:
        server, stop = web.server(SessionsApp(t)), anyio.Event()
        with web.listen("127.0.0.1", 0) as sock:
            async with task_group() as tg:
                tg.start_soon(web.serve, server, sock, stop)
                port = sock.getsockname()[1]
                await anyio.to_thread.run_sync(timings, port, plan["GET /sessions/{id}"][:50])
                for route, paths in plan.items():
                    spent = sorted(await anyio.to_thread.run_sync(timings, port, paths))
                    p99 = spent[min(len(spent) - 1, int(len(spent) * 0.99))]
                    print(
                        f"{route:42} median {statistics.median(spent) * 1e3:6.2f} ms"
                        f"  p99 {p99 * 1e3:6.2f} ms  ({len(spent)} requests)"
                    )
                for count in (1, IDLE_POLLS):
                    await idle_polls(port, count)
                stop.set()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    anyio.run(measure, args.db, args.requests)


if __name__ == "__main__":
    main()
