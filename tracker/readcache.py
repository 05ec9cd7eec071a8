"""Point reads answered on the event loop's thread while the database is unchanged.

A read-only connection owned by the loop's thread probes ``PRAGMA
data_version`` (a few microseconds, no I/O: it reads the WAL index), which
changes whenever any other connection commits, this process's writer
included. While it is unchanged, cached answers are exact. An answer is
cached only if the version was the same before and after the query that
produced it, so nothing committed in between.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Hashable
from pathlib import Path
from typing import Any

from tracker import readonly

MAX_ENTRIES = 100_000
_MISSING = object()


class VerifiedCache:
    """A cache of read results, valid for one ``data_version`` of the database."""

    def __init__(self, path: Path) -> None:
        self._probe: sqlite3.Connection = readonly.connect(path, guard=False)
        self._version = -1
        self._entries: dict[Hashable, Any] = {}

    def _current(self) -> int:
        version = int(self._probe.execute("PRAGMA data_version").fetchone()[0])
        if version != self._version:
            self._version = version
            self._entries.clear()
        return version

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached answer for ``key``, or ``await load()`` (cached if nothing changed)."""
        before = self._current()
        value = self._entries.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = await load()
        if self._current() == before:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = value
        return value

    def close(self) -> None:
        self._probe.close()
