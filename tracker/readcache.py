"""Point reads answered on the event loop's thread while the database is unchanged.

Whether anything was committed since the last read is told by a ``CommitProbe``
(tracker.walindex: a memory read, no thread hop). While its answer is unchanged,
cached answers are exact. An answer is cached only if it was the same before and
after the query that produced it, so nothing committed in between.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Any

# Rows held at most, a list counting its items: a cached Request or Session takes about
# 1 KB, so about 20 MB. Full, the cache starts again empty; a longer list is not kept.
MAX_ROWS = 20_000
_MISSING = object()


class VerifiedCache:
    """A cache of read results, valid while nothing is committed to the database."""

    def __init__(self, version: Callable[[], object]) -> None:
        self._version_now = version  # changes whenever anything is committed
        self._version: object = None
        self._entries: dict[Hashable, Any] = {}
        self._rows = 0

    def _current(self) -> object:
        version = self._version_now()
        if version != self._version:
            self._version = version
            self._forget()
        return version

    async def get(self, key: Hashable, load: Callable[[], Awaitable[Any]]) -> Any:
        """The cached answer for ``key``, or ``await load()`` (cached if nothing changed)."""
        before = self._current()
        value = self._entries.get(key, _MISSING)
        if value is not _MISSING:
            return value
        value = await load()
        if self._current() == before:
            self._keep(key, value)
        return value

    def _keep(self, key: Hashable, value: Any) -> None:
        rows = len(value) + 1 if isinstance(value, list) else 1
        if rows > MAX_ROWS:
            return
        if self._rows + rows > MAX_ROWS:
            self._forget()
        self._entries[key] = value
        self._rows += rows

    def _forget(self) -> None:
        self._entries.clear()
        self._rows = 0

    def close(self) -> None:
        """Forget everything."""
        self._forget()
