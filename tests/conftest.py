"""Shared fixtures: real SQLite files in temporary directories, an injectable clock."""

from __future__ import annotations

import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, Run
from tests.webclient import Client, conversations, serving
from tracker import ManualClock, Tracker
from tracker.cli import main


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiosqlite runs on asyncio only


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tracker.db"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake_claude(tmp_path: Path) -> str:
    """An executable ``claude`` that runs tests/fake_claude.py."""
    script = tmp_path / "claude"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT}/tests/fake_claude.py" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.fixture
async def tracker(db_path: Path, clock: ManualClock) -> AsyncIterator[Tracker]:
    async with Tracker.open(db_path, clock=clock) as t:
        yield t


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """Run ``tracker`` in this process: (exit code, stdout, stderr)."""

    def call(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
async def client(tracker: Tracker) -> AsyncIterator[Client]:
    """A server of the HTTP view over ``tracker``, with a few conversations in it."""
    await conversations(tracker)
    async with serving(tracker) as served:
        yield served
