"""A backup of a live database: one consistent snapshot of the whole file, log and
projections, taken while other processes write, as a new self-contained file.

SQLite's ``VACUUM INTO`` writes it from one read transaction (a WAL reader does not
stop writers), compacted: free pages are left out. It is written beside the target,
checked (``quick_check``, its head read back), synced, and renamed over the target, so
an interrupted backup (Ctrl-C, a crash) leaves the target as it was.

An update brings an earlier backup up to date at the cost of what is new, not of the
database's size: the log is append-only and hash-chained, so when the backup's last
event is this database's event of the same seq (same hash), the backup is this log's
prefix, and the events after it are appended and applied to its projections, as
replay would, in one transaction of the backup file (a rollback journal, synced with
its directory: an interrupted update leaves it as it was).
"""

from __future__ import annotations

import os
import resource
import sqlite3
import stat
import time
from pathlib import Path

from tracker import db, maintenance
from tracker.errors import (
    DiskFull,
    IntegrityError,
    InvalidInput,
    NotATrackerDatabase,
    SchemaVersionError,
)
from tracker.models import BackupReport
from tracker.schema import SCHEMA_VERSION
from tracker.scratch import COMPANIONS, replacing, unwritable
from tracker.transfer import Progress

PROGRESS_EVERY = 200_000  # SQLite instructions between progress reports (and stop points)


def backup_file(path: Path, out: Path, progress: Progress | None = None) -> BackupReport:
    """Write a backup of the database ``path`` to ``out``, replacing a file there (but
    a database in use: one with its ``-wal`` or ``-shm`` beside it). ``progress`` gets
    the pages written so far."""
    _check_target(path, out)
    started = time.perf_counter()
    try:
        with replacing(out) as partial:
            _vacuum_into(path, partial, out, progress)
            events, head = _read_back(partial)
            size = partial.stat().st_size
    except OSError as exc:
        raise unwritable("backup", out, exc) from None
    return BackupReport(
        path=str(out),
        events=events,
        head_hash=head,
        bytes=size,
        seconds=time.perf_counter() - started,
        added=events,
        whole=True,
    )


def update_file(path: Path, out: Path, progress: Progress | None = None) -> BackupReport:
    """Bring ``out``, an earlier backup of the database ``path``, up to date: append the
    events it lacks and apply them to its projections (see the module's docstring); a
    missing ``out`` gets a whole backup. ``progress`` gets the events applied so far."""
    _check_target(path, out)
    if db.stat_of(out) is None:
        return backup_file(path, out)
    started = time.perf_counter()
    try:
        conn = _open_backup(out)
        try:
            added = _bring_up_to_date(conn, path, out, progress)
            events, head = _head(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        db.stop_if_cancelled()
        raise db.translate(exc, out) from None
    return BackupReport(
        path=str(out),
        events=events,
        head_hash=head,
        bytes=out.stat().st_size,
        seconds=time.perf_counter() - started,
        added=added,
        whole=False,
    )


def _open_backup(out: Path) -> sqlite3.Connection:
    """``out``, a tracker database of this schema version, for writing (a statement stops
    if the caller is cancelled)."""
    conn = sqlite3.connect(out, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {db.BUSY_TIMEOUT_MS}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            if not version:
                raise NotATrackerDatabase(f"{str(out)!r} is not a tracker database")
            raise SchemaVersionError(
                f"{str(out)!r} has schema version {version}, this database {SCHEMA_VERSION}: "
                "an update cannot bring it across; make a whole backup (without update)"
            )
        conn.set_progress_handler(_cancelled, PROGRESS_EVERY)
    except BaseException:
        conn.close()
        raise
    return conn


def _bring_up_to_date(
    conn: sqlite3.Connection, path: Path, out: Path, progress: Progress | None
) -> int:
    """In one transaction of the backup: append the events it lacks and apply them to
    its projections; return how many were appended. The backup is checked before it is
    changed at all, then written in rollback journal mode, its commit synced with its
    folder (one file, as a backup is)."""
    conn.execute("ATTACH DATABASE ? AS live", (db.uri(path, read_only=True),))
    _continued_by_live(conn, out)
    conn.execute("PRAGMA main.journal_mode = DELETE")
    conn.execute("PRAGMA main.synchronous = EXTRA")
    with db.immediate(conn):
        seq = _continued_by_live(conn, out)  # again: in the transaction
        last = maintenance.copy_log(conn, after=seq)
        maintenance.replay_own_log(conn, after=db.projected_seq(conn), progress=progress)
    conn.execute("DETACH DATABASE live")
    return last - seq


def _continued_by_live(conn: sqlite3.Connection, out: Path) -> int:
    """The last seq of the backup, once sure that its log is a prefix of ``live``'s: its
    last event is live's of the same seq (the hash chains all before it)."""
    seq, head = conn.execute(_LAST_EVENT.format(db="main")).fetchone() or (0, None)
    live_seq, _ = conn.execute(_LAST_EVENT.format(db="live")).fetchone() or (0, None)
    if seq > live_seq:
        raise InvalidInput(
            f"{str(out)!r} holds {seq:,} events, this database {live_seq:,}: "
            "it is not a backup of this one"
        )
    ours = conn.execute("SELECT hash FROM live.event_log WHERE seq = ?", (seq,)).fetchone()
    if seq and ours[0] != head:
        raise InvalidInput(
            f"{str(out)!r} is not an earlier backup of this database: their event {seq} differs"
        )
    return seq


def _head(conn: sqlite3.Connection) -> tuple[int, str]:
    seq, head = conn.execute(_LAST_EVENT.format(db="main")).fetchone() or (0, b"")
    return seq, bytes(head).hex()


def _cancelled() -> bool:
    """A progress handler: True (SQLite stops the statement) once the caller is cancelled."""
    try:
        db.stop_if_cancelled()
    except BaseException:
        return True
    return False


_LAST_EVENT = "SELECT seq, hash FROM {db}.event_log ORDER BY seq DESC LIMIT 1"


def pages(path: Path) -> int:
    """The pages of the database ``path`` (a backup writes at most that many)."""
    conn = _read_only(path)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


def _check_target(path: Path, out: Path) -> None:
    status = db.stat_of(out)
    if status is not None and stat.S_ISDIR(status.st_mode):
        raise InvalidInput(f"{str(out)!r} is a folder: name the backup file")
    if out.absolute() == path.absolute() or (status is not None and out.samefile(path)):
        raise InvalidInput(f"{str(out)!r} is the database itself: back up to another file")
    for companion in COMPANIONS:  # replacing one would lose what it holds
        if out.absolute() == path.absolute().with_name(path.name + companion):
            raise InvalidInput(f"{str(out)!r} is the database's own {companion} file")
    for companion in ("-wal", "-shm"):  # its writer would go on in the file replaced
        if db.stat_of(out.with_name(out.name + companion)) is not None:
            raise InvalidInput(
                f"{str(out)!r} looks like a database in use (its {companion} is beside it): "
                f"back up to another file"
            )


def _vacuum_into(path: Path, target: Path, out: Path, progress: Progress | None) -> None:
    """Copy ``path`` into the empty file ``target`` (to become ``out``); stop if the
    caller is cancelled."""
    conn = _read_only(path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]

    def report() -> bool:
        if progress is not None:
            progress(target.stat().st_size // page_size)
        return _cancelled()  # SQLite stops ("interrupted"), raised below

    conn.set_progress_handler(report, PROGRESS_EVERY)
    try:
        conn.execute("VACUUM INTO ?", (str(target),))
    except sqlite3.OperationalError as exc:
        db.stop_if_cancelled()
        if db.primary_code(exc) == "SQLITE_IOERR" and _out_of_room(target, path):
            raise DiskFull(f"{str(out)!r}: {exc} ({db.WRITE_FAILED})") from None
        raise
    finally:
        conn.close()


def _out_of_room(target: Path, source: Path) -> bool:
    """Whether a failed write of ``target`` wanted room: VACUUM INTO reports a full disk,
    or a file size limit reached, as a bare I/O error. Its disk has less room left than
    the database's size (what a backup needs at most), or the limit stops it (within a
    page: the largest is 64 KiB)."""
    free = os.statvfs(target.parent)
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    written = target.stat().st_size
    room = free.f_bavail * free.f_frsize
    return room < source.stat().st_size or (
        limit != resource.RLIM_INFINITY and written + 65536 > limit
    )


def _read_back(target: Path) -> tuple[int, str]:
    """Check the backup as SQLite reads it; return its events and head hash (the seq and
    hash of its last event: seq has no gaps)."""
    conn = _read_only(target)
    try:
        verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
        if verdict != "ok":
            raise IntegrityError(f"the backup failed SQLite's quick_check: {verdict}")
        return _head(conn)
    finally:
        conn.close()


def _read_only(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db.uri(path, read_only=True), uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {db.BUSY_TIMEOUT_MS}")
    return conn
