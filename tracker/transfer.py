"""Export the log as JSON lines, and import it into a new database with the same hashes.

Each line holds the envelope and the payload exactly as stored (``msgspec.Raw``
keeps its bytes), so an import recomputes every hash and rebuilds identical
projections.
"""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO, NamedTuple

import msgspec

from tracker import chain, db, logrow, readonly
from tracker.errors import IntegrityError, InvalidInput
from tracker.maintenance import replay_own_log
from tracker.schema import EVENT_COLUMNS, INSERT_EVENT
from tracker.scratch import replacing, unwritable

Progress = Callable[[int], None]
BATCH = 5000


class Line(msgspec.Struct, kw_only=True):
    """One exported event."""

    seq: int
    id: str
    type: str
    version: int
    at: str
    request_id: str | None
    agent_id: str | None
    session_id: str | None
    payload: msgspec.Raw
    hash: str


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Line)


class Transferred(NamedTuple):
    """What an export or import carried: the events, and the hash of the last one (the
    head, as ``tracker verify`` shows it: compare the two sides; empty for no events)."""

    events: int
    head: str


def export_file(path: Path, out: Path, progress: Progress | None = None) -> Transferred:
    """Export the log of ``path`` into the file ``out``.

    A file is written beside ``out`` and renamed over it once complete and synced, so an
    export that fails (or a crash) leaves ``out`` as it was. Anything else already at
    ``out`` (a pipe, a terminal, /dev/stdout) is a stream: written in place, never replaced.
    """
    try:
        if _stream(out):
            with out.open("wb") as stream:
                return export_log(path, stream, progress)
        # owner only (Scratch), as the database: the export holds its prompts and responses
        with replacing(out) as partial, partial.open("wb") as f:
            done = export_log(path, f, progress)
    except OSError as exc:
        raise unwritable("export", out, exc) from None
    return done


def count_lines(source: Path) -> int | None:
    """The number of lines of an export file (for progress), None for a stream (a pipe,
    /dev/stdin: it can be read once only)."""
    if _stream(source):
        return None
    with _open_export(source) as stream:
        return sum(1 for _ in stream)


def import_file(source: Path, target: Path, progress: Progress | None = None) -> Transferred:
    """Import the export ``source`` (a file or a stream) into the new database ``target``."""
    with _open_export(source) as stream:
        return import_log(stream, target, progress)


def _stream(path: Path) -> bool:
    """Whether something other than a regular file is at ``path``: a pipe, a terminal,
    /dev/stdin or /dev/stdout, read or written once, in place."""
    status = db.stat_of(path)
    return status is not None and not stat.S_ISREG(status.st_mode)


def _open_export(source: Path) -> BinaryIO:
    """``source`` opened for reading; a missing or unreadable one is a user error."""
    try:
        return source.open("rb")
    except FileNotFoundError:
        raise InvalidInput(f"no file {str(source)!r} to import") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {str(source)!r}: {exc.strerror}") from None


def export_log(path: Path, out: BinaryIO, progress: Progress | None = None) -> Transferred:
    """Write every event of ``path`` to ``out``, one JSON object per line."""
    conn = readonly.connect(path, guard=False)
    try:
        conn.execute("BEGIN")  # one snapshot
        count, head = 0, ""
        for row in conn.execute(f"SELECT {EVENT_COLUMNS} FROM event_log ORDER BY seq"):
            seq, id_, type_, version, at, rid, aid, sid, payload, digest = logrow.text_row(row)
            head = bytes(digest).hex()
            out.write(
                _encoder.encode(
                    Line(
                        seq=seq,
                        id=id_,
                        type=type_,
                        version=version,
                        at=at,
                        request_id=rid,
                        agent_id=aid,
                        session_id=sid,
                        payload=msgspec.Raw(payload.encode()),
                        hash=head,
                    )
                )
                + b"\n"
            )
            count += 1
            if count % BATCH == 0:
                db.stop_if_cancelled()
                if progress:
                    progress(count)
        conn.execute("COMMIT")
    finally:
        conn.close()
    if progress:
        progress(count)
    return Transferred(count, head)


def import_log(
    source: Iterable[bytes], target: Path, progress: Progress | None = None
) -> Transferred:
    """Create ``target`` from exported lines, checking every hash.

    Nothing is left behind when a line is malformed or the chain is broken.
    """
    with db.new_database(target, "import") as conn, db.immediate(conn):
        done = _insert(conn, source, progress)
        replay_own_log(conn)
    return done


def _insert(
    conn: sqlite3.Connection, source: Iterable[bytes], progress: Progress | None
) -> Transferred:
    prev, count = chain.GENESIS, 0
    rows: list[tuple[object, ...]] = []
    for number, raw in enumerate(source, start=1):
        if not raw.strip():
            continue
        line = _parse(raw, number)
        payload = bytes(line.payload)  # decoded by the replay that follows, which names its seq
        digest = chain.link(
            prev,
            line.seq,
            line.id,
            line.type,
            line.version,
            line.at,
            (line.request_id, line.agent_id, line.session_id),
            payload,
        )
        if line.seq != count + 1 or digest.hex() != line.hash:
            raise IntegrityError(
                f"line {number}: seq {line.seq} breaks the hash chain "
                f"(expected seq {count + 1} with a matching hash)"
            )
        rows.append(
            logrow.stored_row(
                (
                    line.seq,
                    line.id,
                    line.type,
                    line.version,
                    line.at,
                    line.request_id,
                    line.agent_id,
                    line.session_id,
                    payload.decode(),
                    digest,
                )
            )
        )
        prev, count = digest, count + 1
        if len(rows) >= BATCH:
            _flush(conn, rows, count, progress)
    _flush(conn, rows, count, progress)
    return Transferred(count, prev.hex() if count else "")


def _parse(raw: bytes, number: int) -> Line:
    try:
        return _decoder.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"line {number} is not an exported event: {exc}") from None


def _flush(
    conn: sqlite3.Connection, rows: list[tuple[object, ...]], count: int, progress: Progress | None
) -> None:
    conn.executemany(INSERT_EVENT, rows)
    rows.clear()
    db.stop_if_cancelled()
    if progress:
        progress(count)
