"""Replay: build every projection from event rows, in batches."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from projections.state import Projector, table_names
from tracker import codec, db
from tracker.errors import IntegrityError
from tracker.logrow import at_text, type_text

# seq, type, version, at, request_id, agent_id, session_id, payload, as stored
# (schema.EVENT_ROWS; logrow reads type and at back)
EventRow = tuple[int, int | str, int, int | str, str | None, str | None, str | None, str]
FLUSH_EVERY = 20_000


class ReplayFailed(IntegrityError):
    """The log cannot be replayed: an event contradicts the ones before it."""

    def __init__(self, seq: int, cause: Exception) -> None:
        super().__init__(f"replay stopped at seq {seq}: {cause}")
        self.seq = seq


def clear(conn: sqlite3.Connection) -> None:
    """Empty every projection table and its checkpoint (inside the caller's transaction)."""
    for name in table_names():
        conn.execute(f"DELETE FROM {name}")
    conn.execute("DELETE FROM checkpoints")


def replay(
    conn: sqlite3.Connection,
    rows: Iterable[EventRow],
    *,
    projector: Projector | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Apply ``rows`` to the projection tables of ``conn``; return the last seq applied.

    Rows are written every FLUSH_EVERY events, so memory stays bounded.
    """
    projector = projector or Projector()
    projector.begin(conn, stale=True, jobs=())
    last, count = 0, 0
    for seq, type_, version, at, request_id, agent_id, session_id, payload in rows:
        try:
            keys = (request_id, agent_id, session_id)
            event = codec.decode(type_text(type_), version, payload, keys)
            projector.apply(seq, at_text(at), event)
        except IntegrityError as exc:
            raise ReplayFailed(seq, exc) from exc
        last, count = seq, count + 1
        if count % FLUSH_EVERY == 0:
            projector.flush(conn, last)
            db.stop_if_cancelled()
            if progress:
                progress(count)
    if count:
        projector.flush(conn, last)
    if progress:
        progress(count)
    return last
