"""SQLite connections: pragmas, one thread hop per job, and error translation."""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite
import anyio

from tracker import errors
from tracker.schema import SCHEMA_VERSION, UPGRADES, UPGRADES_AFTER_SCHEMA, schema_sql
from tracker.scratch import Scratch

T = TypeVar("T")
Durability = Literal["full", "process"]
BUSY_TIMEOUT_MS = 5000
log = logging.getLogger("tracker")


async def in_thread(path: Path, fn: Callable[..., T], *args: Any) -> T:
    """Run file work ``fn(*args)`` (maintenance, export, import) in a worker thread;
    SQLite errors become TrackerErrors naming ``path``: a damaged file is reported,
    not a traceback. Cancelling the caller stops the work at its next batch
    (``stop_if_cancelled``)."""
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def stop_if_cancelled() -> None:
    """Where long file work stops once its caller is cancelled (Ctrl-C, a timeout): in
    a worker thread of ``in_thread`` the cancellation is raised there, so the work's
    scratch files are removed on the way out. Elsewhere it does nothing."""
    with contextlib.suppress(RuntimeError):  # not an anyio worker thread
        anyio.from_thread.check_cancelled()


def run(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> Any:
    """Run ``fn(*args)`` on the connection's own thread: one hop for a whole job.

    aiosqlite's public methods cost one hop per statement; ``_execute`` queues
    any callable on the same thread and resolves a future with its result.
    """
    return conn._execute(fn, *args)  # type: ignore[no-untyped-call]


def raw(conn: aiosqlite.Connection) -> sqlite3.Connection:
    """Return the sqlite3 connection behind ``conn`` (use only on its thread)."""
    return conn._conn


def stat_of(path: Path) -> os.stat_result | None:
    """``path``'s status, None when nothing is there; a path the system refuses (a name
    too long, a loop of links, no permission) is a StorageError naming it."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise errors.StorageError(f"cannot use {str(path)!r}: {exc.strerror}") from None


def present(path: Path) -> bool:
    """Whether a file is at ``path`` to open as a database. A folder there is a user
    mistake, named as such (SQLite would say "unable to open database file" or "disk I/O
    error"), as is a path the system refuses (``stat_of``)."""
    status = stat_of(path)
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise errors.NotATrackerDatabase(f"{str(path)!r} is a folder, not a tracker database")
    return status is not None


def create_file(path: Path, *, named: Path | None = None) -> None:
    """Create an empty database file readable by its owner only (0600); an error
    names ``named`` (the file ``path`` will become), else ``path``."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass
    except OSError as exc:
        raise cannot_create(named or path, exc) from exc


def cannot_create(target: Path, exc: OSError) -> errors.StorageError:
    """The error for a database file the system would not create: read-only only when
    the system says so (a missing folder is not), full when the disk is."""
    cls = _BY_ERRNO.get(exc.errno or 0, errors.StorageError)
    return cls(f"cannot create database {str(target)!r}: {exc.strerror}")


_BY_ERRNO: dict[int, type[errors.StorageError]] = {
    errno.EACCES: errors.ReadOnlyDatabase,
    errno.EPERM: errors.ReadOnlyDatabase,
    errno.EROFS: errors.ReadOnlyDatabase,
    errno.ENOSPC: errors.DiskFull,
    errno.EDQUOT: errors.DiskFull,
    errno.EFBIG: errors.DiskFull,
}


def uri(path: Path, *, read_only: bool = False, unchanging: bool | None = None) -> str:
    """The URI to open the database ``path`` by: read-only if asked, and as an unchanging
    file when it can be read no other way (``unchanging``: ``frozen(path)`` if not given)."""
    if frozen(path) if unchanging is None else unchanging:
        return f"{path.absolute().as_uri()}?mode=ro&immutable=1"
    return f"{path.absolute().as_uri()}?mode=ro" if read_only else path.absolute().as_uri()


def frozen(path: Path) -> bool:
    """Whether ``path`` is a database only an unchanging file can be read from: SQLite
    cannot create the WAL index (``-shm``) in its read-only folder (a snapshot, a
    read-only mount, another user's folder), and neither it nor a WAL with content is
    there, so no writer has the file open. Read otherwise, SQLite says "attempt to write
    a readonly database"."""
    folder = path.absolute().parent
    if os.access(folder, os.W_OK):
        return False
    wal = stat_of(path.with_name(path.name + "-wal"))
    shm = stat_of(path.with_name(path.name + "-shm"))
    return shm is None and (wal is None or wal.st_size == 0)


def prepare(path: Path, create: bool) -> None:
    """Create the schema in an empty file, or check the file's; switch it to WAL.

    Runs on a plain connection before the tracker's own are opened, so a bad
    file fails here, cleanly.
    """
    unchanging = frozen(path)
    conn = sqlite3.connect(uri(path, unchanging=unchanging), uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        check_schema(conn, path, create=create)
        if not unchanging:  # it cannot be switched, and was WAL when it was written
            conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


@contextmanager
def new_database(target: Path, purpose: str) -> Iterator[sqlite3.Connection]:
    """A connection to a new database that appears at ``target`` only once complete.

    It is written under a temporary name beside ``target`` (tracker.scratch) and linked
    into place (never over an existing file), so a crash leaves no half-written target;
    what a killed process left is removed by the next one writing beside ``target``.
    """
    if stat_of(target) is not None:
        raise errors.InvalidInput(f"{str(target)!r} exists: {purpose} writes a new database")
    try:
        partial = Scratch.beside(target, "partial")
    except OSError as exc:
        raise cannot_create(target, exc) from None
    conn = sqlite3.connect(partial.path, isolation_level=None, check_same_thread=False)
    try:
        create_schema(conn)
        yield conn
        conn.close()
        try:
            os.link(partial.path, target)
        except FileExistsError:
            raise errors.InvalidInput(
                f"{str(target)!r} appeared meanwhile: {purpose} writes a new database"
            ) from None
    except sqlite3.Error as exc:
        if class_of(exc) is errors.DiskFull:  # a write of the new file, not a file read
            raise translate(exc, target) from None
        raise
    finally:
        conn.close()
        partial.close()


def writer_connector(path: Path, durability: Durability) -> Callable[[], sqlite3.Connection]:
    """Return a function opening the read-write connection of one process."""

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(uri(path), uri=True, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous = {'FULL' if durability == 'full' else 'NORMAL'}")
        return conn

    return connect


def reader_connector(path: Path) -> Callable[[], sqlite3.Connection]:
    """Return a function opening a connection that cannot write."""

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            uri(path, read_only=True), uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
        return conn

    return connect


def check_schema(conn: sqlite3.Connection, path: Path, *, create: bool) -> None:
    """Create the schema in an empty file, or check the file's schema version."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == SCHEMA_VERSION and _has_events(conn):
        return
    if version in UPGRADES and _has_events(conn):
        _upgrade(conn, path)
        return
    if version not in (0, SCHEMA_VERSION):
        raise errors.SchemaVersionError(
            f"{str(path)!r} has schema version {version}; this tracker reads version "
            f"{SCHEMA_VERSION}: use the tracker release that wrote it, or export with it "
            f"and import with this one"
        )
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if tables or not create:
        raise errors.NotATrackerDatabase(
            f"{str(path)!r} is a SQLite file but not a tracker database"
        )
    create_schema(conn)


def check_still_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse to go on writing a file that another process has upgraded, since this one
    opened it, to a schema version this tracker does not know (its events and tables
    may mean something else now)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version != SCHEMA_VERSION:
        raise errors.SchemaVersionError(
            f"{str(path)!r} was upgraded to schema version {version} by another process "
            f"while this tracker (version {SCHEMA_VERSION}) had it open: restart with the "
            f"release that upgraded it"
        )


def _has_events(conn: sqlite3.Connection) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name IN ('event_log', 'events')"
    return conn.execute(sql).fetchone() is not None


def create_schema(conn: sqlite3.Connection) -> None:
    """Run schema.sql in one immediate transaction (idempotent)."""
    with immediate(conn):
        _run_schema(conn)


def _upgrade(conn: sqlite3.Connection, path: Path) -> None:
    """Bring a file of an older schema version to this one, in one transaction.

    Once per file; from version 4 the log is copied (17 s for 1M events).
    Another process may have upgraded it meanwhile: the version is read again.
    One step after the other: a step that copies a table runs schema.sql (idempotent)
    to create the new one first, so each step reads the tables as the steps before it
    left them (5 -> 6 counts in requests, which 7 -> 8 copies).
    """
    try:
        begin_waiting(conn, partial(_wait_to_upgrade, path))
        with committed(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for step in range(version, SCHEMA_VERSION):
                for statement in UPGRADES[step]:
                    conn.execute(statement)
                if step in UPGRADES_AFTER_SCHEMA:
                    _run_schema(conn)
                    for statement in UPGRADES_AFTER_SCHEMA[step]:
                        conn.execute(statement)
            _run_schema(conn)
    except sqlite3.OperationalError as exc:
        if primary_code(exc) != "SQLITE_READONLY":
            raise
        raise errors.ReadOnlyDatabase(
            f"{str(path)!r} has an older schema version: upgrading it to {SCHEMA_VERSION} "
            "needs write access"
        ) from exc


def _wait_to_upgrade(path: Path, turn: int, busy: sqlite3.Error) -> None:
    """How an upgrade waits for the write lock: as long as it takes (most likely another
    process opening the file is upgrading it, seconds on a long log), logging once, until
    its caller is cancelled."""
    if turn == 1:
        log.warning(
            "%r needs an upgrade to schema version %d and another connection is writing it "
            "(another process upgrading it?): waiting",
            str(path),
            SCHEMA_VERSION,
        )
    stop_if_cancelled()


def begin_waiting(
    conn: sqlite3.Connection, still_waiting: Callable[[int, sqlite3.Error], None]
) -> None:
    """BEGIN IMMEDIATE on ``conn``, trying again each time SQLite's busy timeout runs out
    while another connection writes. Before each new try, ``still_waiting(turn, busy)``
    (turn 1, 2, ...) decides how long: it raises to stop."""
    for turn in itertools.count(1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if primary_code(exc) != "SQLITE_BUSY":
                raise
            still_waiting(turn, exc)


def last_seq(conn: sqlite3.Connection, schema: str = "main") -> int:
    """The seq of the last event in the log of ``schema`` (0: none); seqs run from 1
    without gaps, so it is also how many events the log holds."""
    return int(conn.execute(f"SELECT coalesce(max(seq), 0) FROM {schema}.event_log").fetchone()[0])


def projected_seq(conn: sqlite3.Connection) -> int:
    """The seq the projections of ``conn``'s database are at (its checkpoint; 0: none)."""
    return int(conn.execute("SELECT coalesce(min(seq), 0) FROM checkpoints").fetchone()[0])


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction on ``conn``: committed if the block ends, else rolled back."""
    conn.execute("BEGIN IMMEDIATE")
    with committed(conn):
        yield


@contextmanager
def committed(conn: sqlite3.Connection) -> Iterator[None]:
    """Commit the transaction open on ``conn`` if the block ends, else roll it back."""
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if one is still open: SQLite ends it by itself on
    some errors (a full disk), and a ROLLBACK then would fail and hide the error."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _run_schema(conn: sqlite3.Connection) -> None:
    for statement in statements(schema_sql()):
        conn.execute(statement)


def statements(script: str) -> list[str]:
    """Split a SQL script into complete statements (comments stay attached)."""
    out: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            out.append(current)
            current = ""
    return out


_BY_CODE: dict[str, type[errors.TrackerError]] = {
    "SQLITE_BUSY": errors.DatabaseBusy,
    "SQLITE_LOCKED": errors.DatabaseBusy,
    "SQLITE_FULL": errors.DiskFull,
    "SQLITE_IOERR_WRITE": errors.DiskFull,
    "SQLITE_NOTADB": errors.NotATrackerDatabase,
    "SQLITE_CORRUPT": errors.IntegrityError,
    "SQLITE_CONSTRAINT_TRIGGER": errors.IntegrityError,
    "SQLITE_CANTOPEN": errors.ReadOnlyDatabase,
    "SQLITE_READONLY": errors.ReadOnlyDatabase,
}


def translate(exc: BaseException, path: Path) -> BaseException:
    """Return the TrackerError for a sqlite3 error (other exceptions unchanged)."""
    if isinstance(exc, errors.TrackerError) or not isinstance(exc, sqlite3.Error):
        return exc
    hint = _HINTS.get(error_name(exc))
    new = class_of(exc)(f"{str(path)!r}: {exc}" + (f" ({hint})" if hint else ""))
    new.__cause__ = exc
    return new


def class_of(exc: sqlite3.Error) -> type[errors.TrackerError]:
    """The TrackerError class ``translate`` gives ``exc``."""
    return _BY_CODE.get(error_name(exc)) or _BY_CODE.get(primary_code(exc)) or errors.StorageError


# What SQLite's own words leave out.
WRITE_FAILED = "a write failed: is the disk, or the file size limit, full?"
_HINTS = {"SQLITE_IOERR_WRITE": WRITE_FAILED}


def primary_code(exc: sqlite3.Error) -> str:
    """SQLite's primary result code of ``exc`` (SQLITE_READONLY for SQLITE_READONLY_DBMOVED)."""
    return "_".join(error_name(exc).split("_")[:2])


def error_name(exc: sqlite3.Error) -> str:
    """SQLite's (extended) result code of ``exc``, SQLITE_ERROR when it gives none."""
    return getattr(exc, "sqlite_errorname", None) or "SQLITE_ERROR"
