"""The event store: append with group commit and a hash chain, read, follow.

Concurrent callers' jobs are queued; one writer task runs a whole batch of
jobs in ONE transaction on the connection's thread (one hop), and each caller
awaits its own outcome. A job gets a ``Transaction``: it decides (raising a
TrackerError appends nothing) and appends events, which the projection hook
applies in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiosqlite
import anyio

from tracker import chain, db, logrow
from tracker.clock import Clock, SystemClock
from tracker.errors import DatabaseBusy, DatabaseNotFound, TrackerClosed, TrackerError
from tracker.events import KEYS, AnyEvent, StoredEvent
from tracker.schema import EVENT_COLUMNS, INSERT_EVENT, KEY_BUCKET_BITS
from tracker.tail import SharedTail, Taken
from tracker.tasks import task_group
from tracker.transaction import H, Head, Hook, Job, NoProjections, Transaction, stored_event
from tracker.walindex import CommitProbe
from tracker.watch import LOOK_EVERY_S, CommitWatch

__all__ = ["EventStore", "Filter", "Hook", "NoProjections", "Transaction", "stored_event"]

T = TypeVar("T")
MAX_BATCH = 512
FOLLOW_BATCH = 1000
BUSY_DEADLINE_S = 60.0


class _PartialJob(Exception):
    """A job appended events and then failed: the batch must be redone job by job."""


_PENDING: Any = object()


@dataclass(slots=True, eq=False)  # compared by identity: a caller withdraws its own
class _Queued:
    job: Callable[[Any], Any]
    future: asyncio.Future[Any]  # its caller awaits it; cancelling the caller cancels it
    exclusive: bool = False  # maintenance: runs alone, on the raw connection
    outcome: Any = _PENDING  # the job's result or exception, once its batch ran


@dataclass(frozen=True, slots=True)
class Filter:
    """Which events to read (all None: every event)."""

    request_id: str | None = None
    agent_id: str | None = None
    session_id: str | None = None
    types: tuple[str, ...] = ()

    @property
    def keyed(self) -> bool:
        """Whether it names a request, agent or session (read through their indexes)."""
        return any(getattr(self, key) is not None for key in KEYS)

    def matches(self, event: StoredEvent) -> bool:
        """Whether ``event`` is one ``select`` would read (the same test, in memory)."""
        return (
            (self.request_id is None or event.request_id == self.request_id)
            and (self.agent_id is None or event.agent_id == self.agent_id)
            and (self.session_id is None or event.session_id == self.session_id)
            and (not self.types or event.type in self.types)
        )

    def select(self, since: int, until: int | None, limit: int) -> tuple[str, list[Any]]:
        """The query for matching events with ``since < seq <= until``, in seq order.

        A key filter reads its index bucket by bucket, from the bucket of ``since``
        to the last one (see schema.sql), so SQLite seeks instead of scanning and
        the rows come in seq order without a sort.
        """
        where, params = self._where(since, until)
        if not self.keyed:
            sql = f"SELECT {EVENT_COLUMNS} FROM event_log WHERE {where} ORDER BY seq LIMIT ?"
            return sql, [*params, limit]
        return _BY_KEY.format(where=where), [since, until, *params, limit]

    def select_count(self, since: int = 0, until: int | None = None) -> tuple[str, list[Any]]:
        """The query for the number of matching events with ``since < seq <= until``."""
        where, params = self._where(since, until)
        if not self.keyed:
            return f"SELECT count(*) FROM event_log WHERE {where}", params
        return _COUNT_BY_KEY.format(where=where), [since, until, *params]

    def select_from_end(self, since: int, until: int | None, count: int) -> tuple[str, list[Any]]:
        """The query for the seq of the ``count``-th matching event from the end (1: the
        last) with ``since < seq <= until``: no row when fewer match. A key filter seeks
        its index bucket by bucket from the last one down, an index read only."""
        where, params = self._where(since, until)
        if not self.keyed:
            sql = f"SELECT seq FROM event_log WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET ?"
            return sql, [*params, count - 1]
        return _BY_KEY_FROM_END.format(where=where), [until, since, *params, count - 1]

    def select_last(self, until: int) -> tuple[str, list[Any]]:
        """The query for the last matching event with ``seq <= until`` (no row: none),
        read from the end down as ``select_from_end`` does; a key filter is required."""
        assert self.keyed, "select_last seeks a key's index"
        where, params = self._where(0, until)
        return _LAST_BY_KEY.format(where=where), [until, 0, *params]

    def _where(self, since: int, until: int | None) -> tuple[str, list[Any]]:
        clauses, params = ["seq > ?"], list[Any]([since])
        for column in KEYS:
            if (value := getattr(self, column)) is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if self.types:
            clauses.append(f"type IN ({','.join('?' * len(self.types))})")
            params.extend(logrow.stored_type(t) for t in self.types)
        if until is not None:
            clauses.append("seq <= ?")
            params.append(until)
        return " AND ".join(clauses), params


# Events of a key: its index seeks one bucket after the other (parameters: since and
# until or None for the buckets, then the WHERE clause's, then the limit if any).
_BUCKET = f"seq >> {KEY_BUCKET_BITS}"
_BUCKETS_UP = (
    "WITH RECURSIVE bucket(n) AS ("
    f"SELECT ? >> {KEY_BUCKET_BITS} UNION ALL SELECT n + 1 FROM bucket "
    f"WHERE n < coalesce(?, (SELECT max(seq) FROM event_log)) >> {KEY_BUCKET_BITS}) "
)
_BY_KEY = (
    f"{_BUCKETS_UP}SELECT {EVENT_COLUMNS} FROM event_log WHERE ({_BUCKET}) IN bucket AND "
    f"{{where}} ORDER BY {_BUCKET}, seq LIMIT ?"
)
_COUNT_BY_KEY = (
    f"{_BUCKETS_UP}SELECT count(*) FROM event_log WHERE ({_BUCKET}) IN bucket AND {{where}}"
)
# The same from the end, newest first (parameters: until or None, since, the WHERE
# clause's, then the offset).
_BUCKETS_DOWN = (
    "WITH RECURSIVE bucket(n) AS ("
    f"SELECT coalesce(?, (SELECT max(seq) FROM event_log)) >> {KEY_BUCKET_BITS} "
    f"UNION ALL SELECT n - 1 FROM bucket WHERE n > ? >> {KEY_BUCKET_BITS}) "
)
_FROM_END = (
    f"FROM event_log WHERE ({_BUCKET}) IN bucket AND {{where}} ORDER BY {_BUCKET} DESC, seq DESC"
)
_BY_KEY_FROM_END = f"{_BUCKETS_DOWN}SELECT seq {_FROM_END} LIMIT 1 OFFSET ?"
# The last matching event, whole (parameters: until, since, then the WHERE clause's).
_LAST_BY_KEY = f"{_BUCKETS_DOWN}SELECT {EVENT_COLUMNS} {_FROM_END} LIMIT 1"


class EventStore(Generic[H]):
    """Append-only event log on one SQLite file (one writer connection per process)."""

    def __init__(self, path: Path, hook: H, clock: Clock, durability: db.Durability) -> None:
        self.path, self.hook, self.clock, self.durability = path, hook, clock, durability
        self._queue: list[_Queued] = []
        self._wake = anyio.Event()
        self._committed = anyio.Event()
        self._closing = False
        self._head = Head()
        self._data_version = -1
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._probe: CommitProbe | None = None
        self.changes = CommitWatch(self.version)  # waits for commits: follow, lock waits
        self.tail = SharedTail(self._read_after, self.changes.ticket, FOLLOW_BATCH)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | Path,
        hook: H,
        *,
        clock: Clock | None = None,
        durability: db.Durability = "full",
        create: bool = True,
    ) -> AsyncIterator[EventStore[H]]:
        """Open (creating if asked) the log at ``path`` until the block exits."""
        store = cls(Path(path), hook, clock or SystemClock(), durability)
        await store._connect(create)
        try:
            async with task_group() as tg:
                tg.start_soon(store._write_loop)
                try:
                    yield store
                finally:
                    store._closing = True
                    store._wake.set()
        finally:
            with anyio.CancelScope(shield=True):
                await store._disconnect()

    # -- connections ---------------------------------------------------------

    async def _connect(self, create: bool) -> None:
        if not db.present(self.path):
            if not create:
                raise DatabaseNotFound(f"no database at {str(self.path)!r}")
            db.create_file(self.path)
        try:
            await anyio.to_thread.run_sync(db.prepare, self.path, create)
            self._writer = await _connected(db.writer_connector(self.path, self.durability))
            self._reader = await _connected(db.reader_connector(self.path))
            self._probe = CommitProbe(self.path)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._disconnect()
            raise db.translate(exc, self.path) from None

    async def _disconnect(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    def _writer_conn(self) -> aiosqlite.Connection:
        if self._writer is None or self._closing:
            raise TrackerClosed.on(self.path)
        return self._writer

    def ensure_open(self) -> None:
        """Raise TrackerClosed once the store is closed (for work on connections of its own)."""
        self._reader_conn()

    def version(self) -> object:
        """A value that changes whenever anything is committed to the database, by
        this process or another (read on the caller's thread: no hop)."""
        if self._probe is None:
            raise TrackerClosed.on(self.path)
        return self._probe.version()

    def _reader_conn(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise TrackerClosed.on(self.path)
        return self._reader

    # -- writing -------------------------------------------------------------

    async def submit(
        self, job: Job[H, T], *, undo: Callable[[T], Job[H, Any] | None] | None = None
    ) -> T:
        """Run ``job`` in the next group-commit transaction; return once committed.

        A caller cancelled while its job is still queued withdraws it. Once the
        job runs it completes regardless; if it committed and ``undo`` is given,
        ``undo(result)`` is committed too, so a cancelled caller leaves nothing
        behind it did not know about (a lock it would never release).
        """
        return await self._enqueue(job, exclusive=False, undo=undo)  # type: ignore[no-any-return]

    async def append(self, events: Sequence[AnyEvent]) -> list[StoredEvent]:
        """Append ``events`` atomically; return them as stored, once committed."""
        return await self.submit(lambda tx: tx.append_stored(events))

    async def run_exclusive(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` alone on the writer thread, between batches.

        For maintenance that manages its own transaction (rebuild). Cached
        projection state and the head are reloaded afterwards.
        """
        return await self._enqueue(fn, exclusive=True)  # type: ignore[no-any-return]

    async def _enqueue(
        self,
        job: Callable[[Any], Any],
        *,
        exclusive: bool,
        undo: Callable[[Any], Callable[[Any], Any] | None] | None = None,
    ) -> Any:
        self._writer_conn()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        queued = _Queued(job, future, exclusive)
        self._queue.append(queued)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            if queued in self._queue:  # not started: withdraw it
                self._queue.remove(queued)
                raise
            with anyio.CancelScope(shield=True):
                await self._settle(queued, undo)
            raise

    async def _settle(
        self,
        queued: _Queued,
        undo: Callable[[Any], Callable[[Any], Any] | None] | None,
    ) -> None:
        """Wait for a cancelled caller's running job; undo it if it committed."""
        while queued.outcome is _PENDING:
            await self._committed.wait()
        if isinstance(queued.outcome, BaseException):
            return  # it failed: nothing to undo
        compensation = undo(queued.outcome) if undo is not None else None
        if compensation is not None:
            with contextlib.suppress(TrackerError):
                await self._enqueue(compensation, exclusive=False)

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            batch = self._take_batch()
            if batch:
                with anyio.CancelScope(shield=True):
                    await self._commit(batch)

    def _take_batch(self) -> list[_Queued]:
        """Take queued jobs up to the next exclusive one (which goes alone)."""
        queue = self._queue
        end = 1 if queue[0].exclusive else 0
        while end < min(len(queue), MAX_BATCH) and not queue[end].exclusive:
            end += 1
        batch = queue[:end]  # a cancelled caller already withdrew its job from the queue
        del queue[:end]
        return batch

    async def _commit(self, batch: list[_Queued]) -> None:
        writer = self._writer
        assert writer is not None
        try:
            outcomes = await db.run(writer, self._run_batch, db.raw(writer), batch)
        except BaseException as exc:  # the thread itself failed (connection closed...)
            outcomes = [db.translate(exc, self.path)] * len(batch)
        for queued, outcome in zip(batch, outcomes, strict=True):
            queued.outcome = outcome
            if queued.future.done():  # its caller was cancelled: _settle reads the outcome
                continue
            if isinstance(outcome, BaseException):
                queued.future.set_exception(outcome)
            else:
                queued.future.set_result(outcome)
        self._committed.set()
        self._committed = anyio.Event()
        self.changes.notify()

    # -- the transaction (runs on the writer thread) ---------------------------

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Queued]) -> list[Any]:
        if batch[0].exclusive:
            return [self._run_exclusive(conn, batch[0].job)]
        try:
            return self._transact(conn, [q.job for q in batch])
        except _PartialJob:
            self._rollback(conn)
            return [self._run_batch(conn, [q])[0] for q in batch]
        except BaseException as exc:
            self._rollback(conn)
            if len(batch) > 1 and not isinstance(db.translate(exc, self.path), TrackerError):
                return [self._run_batch(conn, [q])[0] for q in batch]  # isolate the culprit
            return [db.translate(exc, self.path)] * len(batch)

    def _run_exclusive(self, conn: sqlite3.Connection, fn: Callable[[Any], Any]) -> Any:
        try:
            return fn(conn)
        except BaseException as exc:
            db.rollback(conn)
            return db.translate(exc, self.path)
        finally:  # maintenance may have rewritten projections: reload everything
            self.hook.reset()
            self._data_version = -1

    def _transact(self, conn: sqlite3.Connection, jobs: list[Job[H, Any]]) -> list[Any]:
        self._begin(conn)
        stale = self._sync(conn)
        self.hook.begin(conn, stale, jobs)
        tx = Transaction(conn, self.hook, self._head, self.clock)
        outcomes = [self._run_job(tx, job, len(jobs) > 1) for job in jobs]
        if tx.rows:
            conn.executemany(INSERT_EVENT, tx.rows)
            self.hook.flush(conn, tx.head.seq)
        conn.execute("COMMIT")
        self._head = tx.head
        return outcomes

    def _run_job(self, tx: Transaction[H], job: Job[H, Any], shared: bool) -> Any:
        before = len(tx.rows)
        try:
            return job(tx)
        except TrackerError as exc:
            if len(tx.rows) != before:
                if shared:
                    raise _PartialJob from exc
                raise
            return exc

    def _begin(self, conn: sqlite3.Connection) -> None:
        deadline = time.monotonic() + BUSY_DEADLINE_S

        def still_waiting(turn: int, busy: sqlite3.Error) -> None:
            if time.monotonic() > deadline:
                raise DatabaseBusy(
                    f"{str(self.path)!r} stayed locked by other writers for {BUSY_DEADLINE_S:.0f}s"
                ) from busy

        db.begin_waiting(conn, still_waiting)

    def _sync(self, conn: sqlite3.Connection) -> bool:
        """Reload the head if another connection committed; return whether one did."""
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return False
        db.check_still_ours(conn, self.path)  # that commit may have been an upgrade
        self._data_version = version
        self._read_head(conn)
        return True

    def _rollback(self, conn: sqlite3.Connection) -> None:
        db.rollback(conn)
        self.hook.reset()
        self._data_version = -1  # re-read the head before the next batch

    def _read_head(self, conn: sqlite3.Connection) -> None:
        sql = "SELECT seq, hash, at FROM event_log ORDER BY seq DESC LIMIT 1"
        row = conn.execute(sql).fetchone()
        self._head = Head(row[0], row[1], logrow.at_text(row[2])) if row else Head()

    # -- reading -------------------------------------------------------------

    async def read(
        self,
        since: int = 0,
        *,
        until: int | None = None,
        where: Filter = Filter(),
        limit: int = 1000,
    ) -> list[StoredEvent]:
        """Return stored events with ``seq > since`` matching ``where``, in seq order."""
        sql, params = where.select(since, until, limit)
        return await self.read_sql(_decode_rows, sql, params)

    async def _read_after(self, since: int, limit: int) -> list[StoredEvent]:
        return await self.read(since, limit=limit)

    async def stream(
        self,
        since: int = 0,
        *,
        until: int | None = None,
        where: Filter = Filter(),
        wanted: int | None = None,
    ) -> AsyncGenerator[StoredEvent, None]:
        """Yield every event ``read`` would return, reading them ``FOLLOW_BATCH`` at a
        time, or ``wanted`` when fewer are (the caller stops once it has them)."""
        size = min(wanted or FOLLOW_BATCH, FOLLOW_BATCH)
        while batch := await self.read(since, until=until, where=where, limit=size):
            for event in batch:
                yield event
            if len(batch) < size:
                return
            since = batch[-1].seq

    async def start_of_last(
        self, count: int, since: int = 0, *, until: int | None = None, where: Filter = Filter()
    ) -> int:
        """Return where reading must start (a ``since``) to get only the last ``count``
        events with ``since < seq <= until`` matching ``where``."""
        if count == 0:  # none of the past ones: start at the end
            head = await self.read_with(db.last_seq)
            return max(since, head if until is None else min(head, until))
        first = await self.read_sql(_first_value, *where.select_from_end(since, until, count))
        return since if first is None else int(first) - 1

    async def read_sql(
        self, convert: Callable[[list[Any]], T], sql: str, params: Sequence[Any] = ()
    ) -> T:
        """Run one read query on the reader thread and convert its rows there."""
        return await self.read_with(lambda conn: convert(conn.execute(sql, params).fetchall()))

    async def read_with(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` on the read-only connection's thread (one hop)."""
        reader = self._reader_conn()
        try:
            return await db.run(reader, fn, db.raw(reader))  # type: ignore[no-any-return]
        except sqlite3.Error as exc:
            raise db.translate(exc, self.path) from None

    async def follow(
        self, since: int = 0, *, where: Filter = Filter(), poll: float = LOOK_EVERY_S
    ) -> AsyncGenerator[StoredEvent, None]:
        """Yield matching events forever, including other processes' commits (looked
        for every ``poll`` seconds; this process's are seen at once).

        A follower's first read is its own, with its filter; it leaves the follower at
        the log's end, a seq of the log even when ``since`` is past it (only events
        after ``since`` are given). From there it shares the reads of new events
        (``tail``), and reads on its own again only when it falls behind them."""
        ticket = self.changes.ticket()
        taken = await self._catch_up(since, where)
        while True:
            for event in taken.events:
                if event.seq > since:
                    yield event
            if not taken.more:
                await self.changes.wait(ticket, math.inf, poll)
            ticket = self.changes.ticket()
            shared = await self.tail.after(taken.upto, where, ticket)
            taken = shared if shared is not None else await self._catch_up(taken.upto, where)

    async def _catch_up(self, since: int, where: Filter) -> Taken:
        """A follower's own read: its events after ``since`` up to the log's end
        (FOLLOW_BATCH at most), read with its filter."""

        def read(conn: sqlite3.Connection) -> Taken:
            end = db.last_seq(conn)
            sql, params = where.select(since, end, FOLLOW_BATCH)
            events = _decode_rows(conn.execute(sql, params).fetchall())
            if len(events) == FOLLOW_BATCH:
                return Taken(events, events[-1].seq, more=True)
            return Taken(events, end, more=False)

        return await self.read_with(read)

    async def verify_chain(self) -> chain.ChainReport:
        """Recompute the hash chain over the whole log; report the first broken seq."""
        sql = f"SELECT {EVENT_COLUMNS} FROM event_log ORDER BY seq"
        return await self.read_with(lambda conn: chain.check(conn.execute(sql)))  # streamed


async def _connected(connector: Callable[[], sqlite3.Connection]) -> aiosqlite.Connection:
    """Open an aiosqlite connection; if that fails, wait for its thread to end.

    aiosqlite stops the thread of a failed connection without waiting for it,
    and the thread may then report to an event loop that has closed.
    """
    conn = aiosqlite.Connection(connector, 64)
    try:
        return await conn
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(conn._thread.join)
        raise


def _first_value(rows: list[Any]) -> Any:
    return rows[0][0] if rows else None


def _decode_rows(rows: list[Any]) -> list[StoredEvent]:
    return [stored_event(row) for row in rows]
