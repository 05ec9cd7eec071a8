"""The commit probe: the wal-index header read in memory, PRAGMA data_version where
there is none to trust."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tracker.walindex import CommitProbe, settled


def test_without_wal_shared_memory_data_version_answers(tmp_path: Path) -> None:
    path = tmp_path / "rollback.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (n INTEGER)")  # journal_mode DELETE: no -shm file
    cache = CommitProbe(path)
    try:
        assert cache._header is None
        before = cache.version()
        assert cache.version() == before
        writer.execute("INSERT INTO t VALUES (1)")
        assert cache.version() != before
    finally:
        cache.close()
        writer.close()


def test_a_header_being_rewritten_or_never_written_is_not_trusted(db_path: Path) -> None:
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("CREATE TABLE t (n INTEGER)")
    cache = CommitProbe(db_path)
    try:
        assert cache._header is not None
        first = cache._header[0].raw
        assert settled(first, first) == first
        assert settled(first, first[:8] + b"\xff" + first[9:]) is None  # copies differ
        assert settled(first[:12] + b"\x00" + first[13:], first[:12] + b"\x00" + first[13:]) is None
        assert settled(bytes(48), bytes(48)) is None  # no header written yet
    finally:
        cache.close()
        writer.close()
