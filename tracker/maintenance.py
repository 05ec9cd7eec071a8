"""Rebuild, verify and point-in-time replay: projections built from the log in a scratch file.

Building happens on a connection of its own, reading the live log through a
read-only ATTACH, so writers are never blocked while events are replayed. A
rebuild then swaps the scratch tables in with one write transaction that also
catches up the events appended meanwhile; it copies every projection row, so
writers wait about 1.2 s per million events.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from projections import clear, replay, table_names
from projections.replay import EventRow, ReplayFailed
from tracker import chain, db
from tracker.errors import StorageError
from tracker.models import TableDiff
from tracker.schema import EVENT_COLUMNS, EVENT_ROWS
from tracker.scratch import Scratch

Progress = Callable[[int], None]


def _scratch(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, uri=True, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    db.create_schema(conn)
    return conn


def _drop_lookup_indexes(conn: sqlite3.Connection) -> list[str]:
    """Drop the indexes of the projection tables but their primary keys; return their SQL.

    Replay reads scratch rows by primary key only: a lookup index kept up at every flush
    would serve nothing (W2 about 6% faster without).
    """
    names = table_names()
    found = conn.execute(
        "SELECT name, sql FROM main.sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({', '.join('?' * len(names))})",
        names,
    ).fetchall()
    for name, _ in found:
        conn.execute(f"DROP INDEX {name}")
    return [sql for _, sql in found]


def scratch_beside(live: Path, purpose: str) -> Scratch:
    """A scratch file beside the database ``live`` (see tracker.scratch)."""
    try:
        return Scratch.beside(live, purpose)
    except OSError as exc:
        raise StorageError(
            f"cannot create the {purpose} scratch file beside {str(live)!r}: {exc.strerror}"
        ) from None


@contextmanager
def scratch_with_live(live: Path) -> Iterator[sqlite3.Connection]:
    """A scratch database beside ``live`` with ``live`` attached as ``live``; for a
    database that can only be read (``db.frozen``: a backup on read-only media) the
    scratch goes to the temporary folder instead, so it can still be verified."""
    near = Path(tempfile.gettempdir()) / live.name if db.frozen(live) else live
    with scratch_beside(near, "verify") as scratch:
        conn = _scratch(scratch.path)
        _drop_lookup_indexes(conn)  # verify reads the tables whole
        try:
            conn.execute("ATTACH DATABASE ? AS live", (db.uri(live, read_only=True),))
            yield conn
        finally:
            conn.close()


def build(
    conn: sqlite3.Connection, until: int | None = None, progress: Progress | None = None
) -> int:
    """Replay ``live.event_log`` (up to ``until``) into the scratch tables; return the last seq."""
    sql = EVENT_ROWS.format(db="live") + (" WHERE seq <= ?" if until is not None else "")
    rows = conn.execute(sql + " ORDER BY seq", () if until is None else (until,))
    return replay(conn, rows, progress=progress)


def compare(
    conn: sqlite3.Connection, progress: Progress | None = None
) -> tuple[chain.ChainReport, int, list[TableDiff]]:
    """Check the hash chain and replay the live log into scratch in one pass, then diff
    every projection table with the live one.

    Runs in one read transaction, so the chain, the log and the live tables are the
    same snapshot; rows are streamed, so memory does not grow with the log.
    """
    conn.execute("BEGIN")
    try:
        last = db.last_seq(conn, "live")
        checker = chain.Checker()
        rows = _checked(
            conn.execute(f"SELECT {EVENT_COLUMNS} FROM live.event_log ORDER BY seq"), checker
        )
        try:
            replay(conn, rows, progress=progress)
            diffs = [d for d in (_diff(conn, n) for n in (*table_names(), "checkpoints")) if d]
        except ReplayFailed as exc:  # a log that cannot be replayed: report, never crash
            for _ in rows:  # finish the chain check
                pass
            diffs = [TableDiff(table="(replay)", missing=0, unexpected=0, examples=[str(exc)])]
    finally:
        db.rollback(conn)
    return checker.report(), last, diffs


def _checked(rows: Iterable[Any], checker: chain.Checker) -> Iterator[EventRow]:
    """Feed full event rows to the chain checker; yield what replay needs."""
    for row in rows:
        checker.feed(row)
        yield row[0], *row[2:9]


def _diff(conn: sqlite3.Connection, table: str) -> TableDiff | None:
    missing = conn.execute(f"SELECT * FROM main.{table} EXCEPT SELECT * FROM live.{table}")
    missing_rows = missing.fetchall()
    unexpected = conn.execute(f"SELECT * FROM live.{table} EXCEPT SELECT * FROM main.{table}")
    unexpected_rows = unexpected.fetchall()
    if not missing_rows and not unexpected_rows:
        return None
    examples = [f"replay has {r[:3]}" for r in missing_rows[:3]]
    examples += [f"live has {r[:3]}" for r in unexpected_rows[:3]]
    return TableDiff(
        table=table, missing=len(missing_rows), unexpected=len(unexpected_rows), examples=examples
    )


def swap_in(conn: sqlite3.Connection, scratch: Path, built_seq: int) -> int:
    """Replace the live projections with the scratch ones, then catch up; return events applied.

    Runs on the writer connection, outside any transaction (ATTACH needs that).
    """
    conn.execute("ATTACH DATABASE ? AS scratch", (db.uri(scratch, read_only=True),))
    try:
        with db.immediate(conn):
            clear(conn)
            for table in (*table_names(), "checkpoints"):
                conn.execute(f"INSERT INTO main.{table} SELECT * FROM scratch.{table}")
            caught_up = replay_own_log(conn, after=built_seq)
    finally:
        conn.execute("DETACH DATABASE scratch")
    return caught_up - built_seq


def build_scratch(live: Path, scratch: Path, progress: Progress | None = None) -> int:
    """Build every projection of ``live`` into the file ``scratch``; return the last seq."""
    with scratch_build(live, scratch) as conn:
        return build(conn, progress=progress)


@contextmanager
def scratch_build(live: Path, scratch: Path) -> Iterator[sqlite3.Connection]:
    """A new database at ``scratch`` to fill in one transaction, with ``live`` attached
    read-only as ``live``: its projection tables have only their primary keys until the
    block ends, then their lookup indexes are built from the rows."""
    conn = _scratch(scratch)
    try:
        conn.execute("ATTACH DATABASE ? AS live", (db.uri(live, read_only=True),))
        with db.immediate(conn):
            lookups = _drop_lookup_indexes(conn)
            yield conn
            # Built once from the rows, before the swap: with the same indexes on both
            # sides, SQLite copies a table and its indexes record by record, unparsed
            # (its transfer optimization), while writers wait.
            for sql in lookups:
                conn.execute(sql)
    finally:
        conn.close()


def replay_into(
    live: Path, target: Path, until: int | None, progress: Progress | None = None
) -> int:
    """Write a tracker database at ``target`` holding the log up to seq ``until`` (None:
    all of it), and its projections as of that point; return the last seq."""
    with db.new_database(target, "replay") as conn:
        conn.execute("ATTACH DATABASE ? AS live", (db.uri(live, read_only=True),))
        with db.immediate(conn):
            last = copy_log(conn, until=until)
            replay_own_log(conn, progress=progress)
        conn.execute("DETACH DATABASE live")
        return last


def replay_own_log(
    conn: sqlite3.Connection, *, after: int = 0, progress: Progress | None = None
) -> int:
    """Apply the events of ``conn``'s own log after seq ``after`` to its projection
    tables, which are as of ``after`` (empty for 0: a new database written from a log,
    by replay into or import); return the last seq applied (``after`` if none)."""
    rows = conn.execute(EVENT_ROWS.format(db="main") + " WHERE seq > ? ORDER BY seq", (after,))
    return replay(conn, rows, progress=progress) or after


def copy_log(conn: sqlite3.Connection, *, after: int = 0, until: int | None = None) -> int:
    """Append the events of the attached database ``live`` with ``after < seq <= until``
    (None: to its end) to ``conn``'s log; return its last seq."""
    clause, params = "seq > ?", [after]
    if until is not None:  # a bound SQLite seeks to, where coalesce(?, seq) would not be
        clause, params = f"{clause} AND seq <= ?", [after, until]
    conn.execute(
        f"INSERT INTO main.event_log ({EVENT_COLUMNS}) "
        f"SELECT {EVENT_COLUMNS} FROM live.event_log WHERE {clause} ORDER BY seq",
        params,
    )
    return db.last_seq(conn)
