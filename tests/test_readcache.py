"""Point reads from the verified cache: exact, never stale, across processes too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import run_python
from tracker import Tracker


async def test_repeated_reads_of_an_unchanged_database_skip_the_thread_hop(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    hops = 0
    original = tracker._store.read_with

    async def counting(fn: Any) -> Any:
        nonlocal hops
        hops += 1
        return await original(fn)

    monkeypatch.setattr(tracker._store, "read_with", counting)
    assert [await tracker.get_agent_session("a1") for _ in range(5)] == ["S1"] * 5
    assert hops == 1


async def test_own_writes_are_seen_at_once(tracker: Tracker) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"
    await tracker.track_request("r2", agent_id="a1", session_id="S1")
    await tracker.update_request_session("r2", "S2")
    assert await tracker.get_agent_session("a1") == "S2"
    await tracker.reset_agent("a1")
    assert await tracker.get_agent_session("a1") is None


RESET_FROM_CHILD = """
import sys, anyio
from tracker import Tracker
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        await t.reset_agent("a1")
anyio.run(main)
"""


async def test_another_process_commit_is_seen_on_the_next_read(
    tracker: Tracker, db_path: Path
) -> None:
    await tracker.track_request("r1", agent_id="a1")
    await tracker.update_request_session("r1", "S1")
    assert await tracker.get_agent_session("a1") == "S1"  # now cached
    done = await anyio.to_thread.run_sync(run_python, RESET_FROM_CHILD, str(db_path))
    assert done.returncode == 0, done.stderr
    assert await tracker.get_agent_session("a1") is None
