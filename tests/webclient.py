"""A real HTTP client and server for the HTTP view's tests: uvicorn on a loopback port,
over a tracker with a few conversations."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec

from tests.helpers import ROOT
from tracker import Tracker
from tracker.tasks import task_group
from tracker.web import server as web
from tracker.web.app import SessionsApp

Reply = tuple[int, dict[str, str], Any]


class Client:
    """HTTP/1.1 to the server on ``port``, from a worker thread (http.client blocks)."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def __call__(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Reply:
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        status, got, raw = await self.raw(method, path, data, headers)
        return status, got, json.loads(raw) if raw else None  # none for HEAD, 204

    async def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """The answer's status, headers and body as sent."""
        return await anyio.to_thread.run_sync(self._fetch, method, path, body, headers or {})

    def _fetch(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@asynccontextmanager
async def serving(t: Tracker, **options: Any) -> AsyncIterator[Client]:
    server, stop = web.server(SessionsApp(t, **options)), anyio.Event()
    with web.listen("127.0.0.1", 0) as sock:  # listening: a client may connect at once
        async with task_group() as tg:
            tg.start_soon(web.serve, server, sock, stop)
            yield Client(sock.getsockname()[1])
            stop.set()


def as_json(value: Any) -> Any:
    """What the server sends for ``value``, an API result."""
    return json.loads(msgspec.json.encode(value))


async def conversations(t: Tracker) -> None:
    """a1: s1, then s2 resumed from it, and a fork s3 of s1; a2: s4; a request without
    an agent in session 'odd/id 1'."""
    turns: list[tuple[str, str | None, str | None, str]] = [
        ("r1", "a1", None, "s1"),
        ("r2", "a1", "s1", "s2"),
        ("r3", "a1", "s1", "s3"),
    ]
    turns += [("r4", "a2", None, "s4"), ("r5", None, None, "odd/id 1")]
    for request_id, agent_id, resumed, session_id in turns:
        await t.track_request(
            request_id, agent_id=agent_id, session_id=resumed, prompt=f"ask {request_id}"
        )
        await t.update_request_session(request_id, session_id)
        await t.complete_request(request_id, response=f"answer {request_id}", cost_usd=0.01)


def start_serving(db: Path, *options: str) -> tuple[subprocess.Popen[str], int]:
    """``tracker serve`` on a free port; returns once it says where it listens."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tracker", "--db", str(db), "serve", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.startswith(f"serving {str(db)!r}"), line
    return child, int(line.split("http://127.0.0.1:")[1].split("/")[0])


async def seeded(db: Path) -> None:
    async with Tracker.open(db) as t:
        await conversations(t)
