"""One write transaction: stamping, chaining and projecting appended events.

A ``Transaction`` is shared by the jobs of one group-commit batch and lives on
the writer's thread. ``Hook`` is what the store asks of projections.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from tracker import chain, codec, logrow
from tracker.clock import Clock, from_iso, iso
from tracker.events import AnyEvent, StoredEvent, tag_of

T = TypeVar("T")


class Hook(Protocol):
    """What the store calls so projections apply events in the append transaction."""

    def begin(self, conn: sqlite3.Connection, stale: bool, jobs: Sequence[object]) -> None:
        """Start a transaction for ``jobs``; ``stale``: another connection committed since
        the last."""

    def apply(self, seq: int, at: str, event: AnyEvent) -> None:
        """Apply one appended event."""

    def flush(self, conn: sqlite3.Connection, seq: int) -> None:
        """Write what the applied events changed, and the checkpoint ``seq``."""

    def reset(self) -> None:
        """Forget cached state (the transaction was rolled back)."""


H = TypeVar("H", bound=Hook)


class NoProjections:
    """A hook that projects nothing (the store on its own)."""

    def begin(self, conn: sqlite3.Connection, stale: bool, jobs: Sequence[object]) -> None:
        pass

    def apply(self, seq: int, at: str, event: AnyEvent) -> None:
        pass

    def flush(self, conn: sqlite3.Connection, seq: int) -> None:
        pass

    def reset(self) -> None:
        pass


@dataclass(slots=True)
class Head:
    """The last committed event: where the next one chains on."""

    seq: int = 0
    hash: bytes = chain.GENESIS
    at: str = ""


class Transaction(Generic[H]):
    """One write transaction, shared by the jobs of a batch (runs on the db thread)."""

    def __init__(self, conn: sqlite3.Connection, hook: H, head: Head, clock: Clock) -> None:
        self.conn = conn
        self.hook = hook
        self.head = Head(head.seq, head.hash, head.at)
        now = clock.now()
        self.at = max(iso(now), head.at)  # the log's time never goes backwards
        self.now = from_iso(self.at)
        self._stored_at = logrow.stored_at(self.at)
        self.rows: list[logrow.Row] = []
        self._ids = EventIds(now)

    def append(self, events: Sequence[AnyEvent]) -> None:
        """Stamp, chain and apply ``events``; they commit with the transaction."""
        for event in events:
            self._append_one(event)

    def append_stored(self, events: Sequence[AnyEvent]) -> list[StoredEvent]:
        """Like ``append``, and return the events as they will be stored."""
        first = len(self.rows)
        self.append(events)
        return [stored_event(r, e) for r, e in zip(self.rows[first:], events, strict=True)]

    def _append_one(self, event: AnyEvent) -> None:
        head, type_ = self.head, tag_of(event)
        keys = codec.keys_of(event)
        seq, payload = head.seq + 1, codec.encode(event, keys)
        event_id, stored_id = self._ids.next()
        digest = chain.link(head.hash, seq, event_id, type_, event.VERSION, self.at, keys, payload)
        self.rows.append(
            (
                seq,
                stored_id,
                event.CODE,
                event.VERSION,
                self._stored_at,
                *keys,
                payload.decode(),
                digest,
            )
        )
        self.head = Head(seq, digest, self.at)
        self.hook.apply(seq, self.at, event)


def stored_event(row: Sequence[Any], event: AnyEvent | None = None) -> StoredEvent:
    """A StoredEvent from a row of the log as stored; the payload is decoded unless
    ``event`` is given."""
    seq, event_id, type_, version, at, rid, aid, sid, payload, digest = logrow.text_row(row)
    return StoredEvent(
        seq=seq,
        id=event_id,
        type=type_,
        version=version,
        at=from_iso(at),
        request_id=rid,
        agent_id=aid,
        session_id=sid,
        event=event
        if event is not None
        else codec.decode(type_, version, payload, (rid, aid, sid)),
        hash=bytes(digest).hex(),
    )


class EventIds:
    """Unique, time-ordered event ids in the UUIDv7 layout (48-bit ms time, version 7,
    then 75 random bits); one ``urandom`` call serves a whole transaction."""

    def __init__(self, now: datetime) -> None:
        self._high = (int(now.timestamp() * 1000) & 0xFFFFFFFFFFFF) << 80 | 7 << 76
        self._random = int.from_bytes(os.urandom(10), "big") >> 5  # 75 random bits
        self._count = 0

    def next(self) -> tuple[str, bytes]:
        """The next id, as text (32 hex digits) and as the 16 bytes the log stores."""
        self._count += 1
        value = self._high | (self._random + self._count) & (1 << 75) - 1
        return f"{value:032x}", value.to_bytes(16, "big")


Job = Callable[[Transaction[H]], T]
