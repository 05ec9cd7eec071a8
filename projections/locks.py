"""Locks: one row per conversation (scope, target), kept after release."""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from projections.table import Table
from tracker.clock import iso
from tracker.events import LockAcquired, LockExpired, LockReleased, LockRenewed

if TYPE_CHECKING:
    from projections.state import Handlers, State


class LockRow(msgspec.Struct):
    """A row of ``locks``; ``token`` is the seq of its LockAcquired event."""

    scope: str
    target: str
    holder: str
    token: int
    status: str
    acquired_at: str
    expires_at: str
    ended_at: str | None
    request_id: str | None
    last_seq: int

    def held_at(self, now: str) -> bool:
        """Whether the lock is held and unexpired at ``now`` (stored time text)."""
        return self.status == "held" and self.expires_at > now


def table(limit: int) -> Table[LockRow]:
    return Table("locks", LockRow, ("scope", "target"), limit)


def acquired(state: State, seq: int, at: str, ev: LockAcquired) -> None:
    state.locks.add(
        (ev.scope, ev.target),
        LockRow(
            ev.scope,
            ev.target,
            ev.holder,
            seq,
            "held",
            at,
            iso(ev.expires_at),
            None,
            ev.request_id,
            seq,
        ),
    )


def renewed(state: State, seq: int, at: str, ev: LockRenewed) -> None:
    row = state.locks.edit((ev.scope, ev.target))
    row.expires_at, row.last_seq = iso(ev.expires_at), seq


def released(state: State, seq: int, at: str, ev: LockReleased) -> None:
    _end(state, seq, at, (ev.scope, ev.target), "released")


def expired(state: State, seq: int, at: str, ev: LockExpired) -> None:
    _end(state, seq, at, (ev.scope, ev.target), "expired")


def _end(state: State, seq: int, at: str, key: tuple[str, str], status: str) -> None:
    row = state.locks.edit(key)
    row.status, row.ended_at, row.last_seq = status, at, seq


HANDLERS: Handlers = {
    LockAcquired: acquired,
    LockRenewed: renewed,
    LockReleased: released,
    LockExpired: expired,
}
