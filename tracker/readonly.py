"""A connection that cannot change anything: for ``tracker query``.

Three locks, each enough for most attacks: the file is opened read-only
(``mode=ro``), ``query_only`` is on, and an authorizer allows only reading,
so ATTACH (which can create files), VACUUM INTO (which attaches its target),
writing PRAGMAs, temporary tables and extension loading are refused.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tracker import db
from tracker.errors import DatabaseNotFound, InvalidInput

_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_RECURSIVE}
_DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}
# Introspection only; none of these is allowed with a value to set.
_READ_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "table_list",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
    "user_version",
    "page_count",
    "page_size",
    "freelist_count",
    "data_version",
    "schema_version",
    "compile_options",
}
_TABLE_PRAGMAS = {
    "table_info",
    "table_xinfo",
    "index_list",
    "index_info",
    "index_xinfo",
    "foreign_key_list",
}


# Table-valued functions an analyst reads with: SQLite builds each on its first use in a
# connection, which the authorizer is shown as writing sqlite_master, so they are built
# before it is set (dbstat may be compiled out).
_EPONYMOUS = ("json_each", "json_tree", "dbstat", *(f"pragma_{p}" for p in sorted(_READ_PRAGMAS)))


def _authorize(
    action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None
) -> int:
    if action in _ALLOWED:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_FUNCTION:
        return (
            sqlite3.SQLITE_DENY if (arg2 or "").lower() in _DENIED_FUNCTIONS else sqlite3.SQLITE_OK
        )
    if action == sqlite3.SQLITE_PRAGMA and (arg1 or "").lower() in _READ_PRAGMAS:
        read_only = arg2 is None or (arg1 or "").lower() in _TABLE_PRAGMAS
        return sqlite3.SQLITE_OK if read_only else sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_DENY


def connect(path: Path, *, guard: bool = True) -> sqlite3.Connection:
    """Open ``path`` read-only; with ``guard``, no statement can write to any file.

    Without ``guard`` (for the tracker's own reads, such as export) transactions
    are allowed, so a long read sees one snapshot.
    """
    if not db.present(path):
        raise DatabaseNotFound(f"no database at {str(path)!r}")
    conn = sqlite3.connect(db.uri(path, read_only=True), uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # not SQLite: fails here
        if guard:
            for name in _EPONYMOUS:
                with contextlib.suppress(sqlite3.OperationalError):
                    conn.execute(f"SELECT * FROM {name} LIMIT 0")
            conn.set_authorizer(_authorize)
    except sqlite3.Error as exc:
        conn.close()
        raise db.translate(exc, path) from None
    return conn


@contextmanager
def query(path: Path, sql: str) -> Iterator[tuple[list[str], Iterator[tuple[Any, ...]]]]:
    """Run one read-only statement; give its column names and its rows, fetched as
    they are iterated (inside the block). A statement that may not run, or fails,
    is InvalidInput."""
    conn = connect(path)
    try:
        with _refused(path):
            cursor = conn.execute(sql)
        yield [d[0] for d in cursor.description or ()], _fetched(cursor, path)
    finally:
        conn.close()


def _fetched(cursor: sqlite3.Cursor, path: Path) -> Iterator[tuple[Any, ...]]:
    with _refused(path):
        while chunk := cursor.fetchmany(1000):
            yield from chunk


# What a statement itself gets wrong (its text, a table it names, a write); anything
# else (a damaged file, an I/O error) is the database's fault and is said as such.
_QUERY_FAULTS = {"SQLITE_ERROR", "SQLITE_AUTH", "SQLITE_READONLY", "SQLITE_RANGE", "SQLITE_TOOBIG"}


@contextmanager
def _refused(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.ProgrammingError as exc:
        raise InvalidInput(f"query refused: {exc}") from None
    except sqlite3.Error as exc:
        if db.primary_code(exc) not in _QUERY_FAULTS:
            raise db.translate(exc, path) from None
        reason = "only reading is allowed" if "not authorized" in str(exc) else str(exc)
        raise InvalidInput(f"query refused: {reason}") from None
