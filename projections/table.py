"""A projection table seen through a cache of its rows.

Handlers read rows (loading them by primary key on a miss), change them in
memory and mark them dirty; ``flush`` writes new rows with one INSERT
``executemany`` and changed rows with one UPDATE ``executemany``. An UPDATE
sets only the mutable columns, so indexes on the key and on immutable columns
are not rewritten (in WAL mode every page a commit dirties is written whole:
untouched index pages are the cheapest writes). The cache is only used on the
writer's thread, and is dropped whenever another connection may have changed
the tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from itertools import islice
from operator import itemgetter
from typing import Any, Generic, TypeVar

import msgspec

from tracker.errors import IntegrityError

R = TypeVar("R", bound=msgspec.Struct)
_MISSING: Any = object()


class MissingRow(IntegrityError):
    """A handler expected a row the decisions guarantee: the tables (or a replayed log)
    are not what the log says; ``tracker verify`` tells which."""


class Table(Generic[R]):
    """Rows of one projection table, keyed by primary key (a value or a tuple)."""

    def __init__(
        self,
        name: str,
        row_type: type[R],
        key: tuple[str, ...],
        limit: int,
        immutable: tuple[str, ...] = (),
    ) -> None:
        columns = row_type.__struct_fields__
        self.name, self.row_type, self.columns, self.limit = name, row_type, columns, limit
        self.select_sql = f"SELECT {', '.join(columns)} FROM {name}"
        where = " AND ".join(f"{k} = ?" for k in key)
        self._by_key = f"{self.select_sql} WHERE {where}"
        # rows of many keys, given as one JSON array (a single-column key only)
        self._by_keys = f"{self.select_sql} WHERE {key[0]} IN (SELECT value FROM json_each(?))"
        self._insert = (
            f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        mutable = [i for i, c in enumerate(columns) if c not in key + immutable]
        assert mutable, f"{name}: a table without mutable columns needs no UPDATE"
        # UPDATE parameters: the mutable columns, then the key (a tuple: at least two)
        self._update_params = itemgetter(*mutable, *(columns.index(k) for k in key))
        assignments = ", ".join(f"{columns[i]} = ?" for i in mutable)
        self._update = f"UPDATE {name} SET {assignments} WHERE {where}"
        self._compound = len(key) > 1
        self._key_column = key[0]
        self._cache: dict[Any, R | None] = {}
        self._dirty: dict[Any, R] = {}
        self._new: set[Any] = set()  # dirty keys not yet in the table
        self._complete = False  # every row is cached: a miss is an absent row
        self._any_row = f"SELECT 1 FROM {name} LIMIT 1"
        self.conn: sqlite3.Connection | None = None

    @property
    def complete(self) -> bool:
        """Every row is cached: a miss is an absent row, answered without reading."""
        return self._complete

    def get(self, key: Any) -> R | None:
        """Return the row with ``key``, or None."""
        row = self._cache.get(key, _MISSING)  # not KeyError: every new key misses once
        if row is not _MISSING:
            return row
        if self._complete:
            return None
        assert self.conn is not None, "bind a connection before reading"
        found = self.conn.execute(self._by_key, key if self._compound else (key,)).fetchone()
        row = self.row_type(*found) if found else None
        self._cache[key] = row
        return row

    def prefetch(self, keys: Iterable[Any]) -> None:
        """Cache the rows of ``keys`` (None for an absent one) with one statement,
        so the ``get`` calls that follow read no row on their own."""
        assert not self._compound, f"{self.name}: prefetch reads single-column keys"
        if self._complete:
            return
        missing = [key for key in keys if key not in self._cache]
        if not missing:
            return
        assert self.conn is not None, "bind a connection before reading"
        for found in self.conn.execute(self._by_keys, (msgspec.json.encode(missing),)):
            row = self.row_type(*found)
            self._cache[getattr(row, self._key_column)] = row
        for key in missing:
            self._cache.setdefault(key, None)

    def add(self, key: Any, row: R) -> R:
        """Insert the row with ``key``, or replace the one there."""
        if key not in self._new and self.get(key) is None:
            self._new.add(key)
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
            rows = [
                (key in self._new, msgspec.structs.astuple(r)) for key, r in self._dirty.items()
            ]
            if self._new:
                conn.executemany(self._insert, [values for new, values in rows if new])
            updates = [self._update_params(values) for new, values in rows if not new]
            if updates:
                conn.executemany(self._update, updates)
            self._dirty.clear()
            self._new.clear()
        if len(self._cache) > self.limit:
            self._complete = False
            for key in list(islice(self._cache, len(self._cache) - self.limit // 2)):
                del self._cache[key]

    def reload(self, conn: sqlite3.Connection) -> None:
        """Forget every cached row and read through ``conn`` from now on; an empty
        table is then wholly cached (a rebuild, a new database: no miss reads)."""
        self.reset()
        self.conn = conn
        self._complete = conn.execute(self._any_row).fetchone() is None

    def reset(self) -> None:
        """Forget every cached and dirty row."""
        self._complete = False
        self._cache.clear()
        self._dirty.clear()
        self._new.clear()
