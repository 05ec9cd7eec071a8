"""All projections together: their tables, the dispatch, and the store's hook."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from projections import agents, locks, requests, sessions, usage
from projections.table import Table
from tracker.events import EVENT_TYPES, AnyEvent

Handler = Callable[["State", int, str, Any], None]
Handlers = dict[type, Handler]

# Order matters where one view reads another: agents before sessions (see both).
MODULES = (requests, agents, sessions, locks, usage)
DISPATCH: dict[type, tuple[Handler, ...]] = {
    cls: tuple(m.HANDLERS[cls] for m in MODULES if cls in m.HANDLERS) for cls in EVENT_TYPES
}
# All projections are applied in the same transaction, so one checkpoint states them all.
CHECKPOINT = "INSERT OR REPLACE INTO checkpoints (projection, seq) VALUES ('projections', ?)"


class State:
    """The projection tables, as cached rows."""

    def __init__(self, limit: int = 50_000) -> None:
        self.requests = requests.table(limit)
        self.agents = agents.table(limit)
        self.sessions = sessions.table(limit)
        self.locks = locks.table(limit)
        self.usage = usage.table(limit)
        self.tables: tuple[Table[Any], ...] = (
            self.requests,
            self.agents,
            self.sessions,
            self.locks,
            self.usage,
        )

    def bind(self, conn: sqlite3.Connection) -> None:
        for table in self.tables:
            table.conn = conn

    def flush(self, conn: sqlite3.Connection) -> None:
        for table in self.tables:
            table.flush(conn)

    def reset(self) -> None:
        for table in self.tables:
            table.reset()

    def prefetch(self, jobs: Sequence[object]) -> None:
        """Read the rows ``jobs`` will look up first, one statement per table.

        On a table holding rows from before this process, each new request or
        session id would otherwise cost a SELECT of its own that finds nothing.
        """
        wanted: dict[str, list[Any]] = {t.name: [] for t in self.tables if not t.complete}
        if not wanted:  # a new database or a rebuild: every table answers its misses
            return
        for job in jobs:
            rows_read: Callable[[], Iterable[tuple[str, Any]]] | None
            if rows_read := getattr(job, "rows_read", None):
                for name, key in rows_read():
                    if name in wanted:
                        wanted[name].append(key)
        for table in self.tables:
            if wanted.get(table.name):
                table.prefetch(wanted[table.name])


class Projector:
    """Applies events to every projection; the store's hook (see ``store.Hook``)."""

    def __init__(self, limit: int = 50_000) -> None:
        self.state = State(limit)

    def begin(self, conn: sqlite3.Connection, stale: bool, jobs: Sequence[object]) -> None:
        if stale:
            for table in self.state.tables:
                table.reload(conn)
        else:
            self.state.bind(conn)
        self.state.prefetch(jobs)

    def apply(self, seq: int, at: str, event: AnyEvent) -> None:
        for handler in DISPATCH[type(event)]:
            handler(self.state, seq, at, event)

    def flush(self, conn: sqlite3.Connection, seq: int) -> None:
        self.state.flush(conn)
        conn.execute(CHECKPOINT, (seq,))

    def reset(self) -> None:
        self.state.reset()


def table_names() -> tuple[str, ...]:
    """The projection tables, in apply order."""
    return tuple(t.name for t in State(1).tables)
