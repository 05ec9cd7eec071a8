"""schema.sql: shipped in the wheel, pinned for analysts, versioned."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, rows
from tracker import Tracker
from tracker.schema import SCHEMA_VERSION, schema_sql

# Analysts query these: renaming or dropping a column breaks their SQL.
PINNED: dict[str, list[str]] = {
    "events": [
        "seq",
        "id",
        "type",
        "version",
        "at",
        "request_id",
        "agent_id",
        "session_id",
        "payload",
        "hash",
    ],
    "checkpoints": ["projection", "seq"],
    "requests": [
        "request_id",
        "agent_id",
        "resumed_session_id",
        "session_id",
        "status",
        "owner",
        "created_at",
        "assigned_at",
        "finished_at",
        "error",
        "error_kind",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "metadata",
        "lock_token",
        "track_digest",
        "finish_digest",
        "last_seq",
    ],
    "sessions": [
        "session_id",
        "agent_id",
        "parent_session_id",
        "position",
        "status",
        "status_reason",
        "first_seen",
        "last_activity",
        "request_count",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "metadata",
        "last_seq",
    ],
    "agents": [
        "agent_id",
        "current_session_id",
        "chain_length",
        "request_count",
        "resets",
        "first_seen",
        "last_activity",
        "last_seq",
    ],
    "locks": [
        "scope",
        "target",
        "holder",
        "token",
        "status",
        "acquired_at",
        "expires_at",
        "ended_at",
        "request_id",
        "last_seq",
    ],
    "usage_daily": [
        "day",
        "agent_id",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "lock_acquisitions",
        "lock_waits",
        "lock_wait_ms",
        "lock_expiries",
    ],
    "current_agent_sessions": [
        "agent_id",
        "session_id",
        "first_seen",
        "last_activity",
        "request_count",
        "chain_length",
        "agent_requests",
    ],
    "session_chains": [
        "session_id",
        "agent_id",
        "parent_session_id",
        "root_session_id",
        "depth",
        "position",
        "status",
    ],
    "agent_usage": [
        "agent_id",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "failure_rate",
        "lock_acquisitions",
        "lock_waits",
        "lock_expiries",
    ],
    "daily_usage": [
        "day",
        "requests",
        "completed",
        "failed",
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "cost_usd",
        "duration_ms",
        "failure_rate",
    ],
    "stale_requests": [
        "request_id",
        "agent_id",
        "session_id",
        "status",
        "owner",
        "created_at",
        "age_seconds",
    ],
    "idle_sessions": ["session_id", "agent_id", "last_activity", "request_count", "idle_seconds"],
    "request_latency": ["agent_id", "bucket", "requests", "min_ms", "max_ms", "avg_ms"],
    "lock_contention": ["agent_id", "acquisitions", "waits", "wait_rate", "wait_ms", "expiries"],
    "expired_locks": [
        "scope",
        "target",
        "holder",
        "token",
        "acquired_at",
        "expires_at",
        "overdue_seconds",
    ],
}


async def test_tables_and_views_are_pinned(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass
    names = {
        n
        for (n,) in rows(
            db_path,
            "SELECT name FROM sqlite_master WHERE type IN "
            "('table', 'view') AND name NOT LIKE 'sqlite_%'",
        )
    }
    assert names == set(PINNED)
    for name, columns in PINNED.items():
        assert [r[1] for r in rows(db_path, f"PRAGMA table_info({name})")] == columns, name


async def test_the_schema_has_a_version(db_path: Path) -> None:
    async with Tracker.open(db_path):
        pass
    assert rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert f"PRAGMA user_version = {SCHEMA_VERSION};" in schema_sql()


def test_the_package_reads_the_top_level_schema() -> None:
    assert schema_sql() == (ROOT / "schema.sql").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_built_wheel_ships_schema_sql_equal_to_the_top_level_file(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("tracker/schema.sql").decode()
        assert "tracker/py.typed" in archive.namelist()
    assert shipped == (ROOT / "schema.sql").read_text(encoding="utf-8")
