"""A projection table seen through a cache of its rows.

Handlers read rows (loading them by primary key on a miss), change them in
memory and mark them dirty; ``flush`` writes every dirty row with one
``executemany``. The cache is only touched on the writer's thread, and is
dropped whenever another connection may have changed the tables.
"""

from __future__ import annotations

import sqlite3
from itertools import islice
from typing import Any, Generic, TypeVar

import msgspec

R = TypeVar("R", bound=msgspec.Struct)


class MissingRow(Exception):
    """A handler expected a row the decisions guarantee; the log and tables disagree."""


class Table(Generic[R]):
    """Rows of one projection table, keyed by primary key (a value or a tuple)."""

    def __init__(self, name: str, row_type: type[R], key: tuple[str, ...], limit: int) -> None:
        columns = row_type.__struct_fields__
        self.name, self.row_type, self.columns, self.limit = name, row_type, columns, limit
        self.select_sql = f"SELECT {', '.join(columns)} FROM {name}"
        self._by_key = self.select_sql + " WHERE " + " AND ".join(f"{k} = ?" for k in key)
        self._upsert = (
            f"INSERT OR REPLACE INTO {name} ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})"
        )
        self._compound = len(key) > 1
        self._cache: dict[Any, R | None] = {}
        self._dirty: dict[Any, R] = {}
        self.conn: sqlite3.Connection | None = None

    def get(self, key: Any) -> R | None:
        """Return the row with ``key``, or None."""
        try:
            return self._cache[key]
        except KeyError:
            pass
        assert self.conn is not None, "bind a connection before reading"
        found = self.conn.execute(self._by_key, key if self._compound else (key,)).fetchone()
        row = self.row_type(*found) if found else None
        self._cache[key] = row
        return row

    def add(self, key: Any, row: R) -> R:
        """Insert or replace the row with ``key``."""
        self._cache[key] = self._dirty[key] = row
        return row

    def edit(self, key: Any) -> R:
        """Return the row with ``key`` for changing in place (it will be written)."""
        row = self.get(key)
        if row is None:
            raise MissingRow(f"{self.name} has no row {key!r}")
        self._dirty[key] = row
        return row

    def flush(self, conn: sqlite3.Connection) -> None:
        """Write the dirty rows; keep the cache under its limit."""
        if self._dirty:
            conn.executemany(
                self._upsert, [msgspec.structs.astuple(r) for r in self._dirty.values()]
            )
            self._dirty.clear()
        if len(self._cache) > self.limit:
            for key in list(islice(self._cache, len(self._cache) - self.limit // 2)):
                del self._cache[key]

    def reset(self) -> None:
        """Forget every cached and dirty row."""
        self._cache.clear()
        self._dirty.clear()
