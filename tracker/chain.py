"""The hash chain: each event's hash covers the previous hash, its envelope and payload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

from tracker.logrow import Row, text_row

GENESIS = bytes(16)
_envelope = msgspec.json.Encoder()


def link(
    prev: bytes,
    seq: int,
    event_id: str,
    type_: str,
    version: int,
    at: str,
    keys: tuple[str | None, str | None, str | None],
    payload: bytes,
) -> bytes:
    """Return the 16-byte hash of one event chained to ``prev``."""
    h = hashlib.blake2b(prev, digest_size=16)
    h.update(_envelope.encode((seq, event_id, type_, version, at, *keys)))
    h.update(b"\n")
    h.update(payload)
    return h.digest()


class ChainReport(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of checking the hash chain; ``first_bad_seq`` is None when intact."""

    ok: bool
    events: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None


class Checker:
    """Recomputes the chain one row at a time (seq order) and keeps the first break."""

    def __init__(self) -> None:
        self.prev, self.expected, self.count = GENESIS, 1, 0
        self.broken: ChainReport | None = None

    def feed(self, row: Row) -> None:
        """Check the next row of the log, as stored (the chain covers its text)."""
        if self.broken is not None:
            return
        seq, event_id, type_, version, at, rid, aid, sid, payload, stored = text_row(row)
        problem = _problem(
            seq,
            self.expected,
            self.prev,
            event_id,
            type_,
            version,
            at,
            (rid, aid, sid),
            payload,
            stored,
        )
        if problem:
            self.broken = ChainReport(
                ok=False,
                events=self.count,
                head_seq=self.expected - 1,
                head_hash=self.prev.hex(),
                first_bad_seq=min(seq, self.expected),
                problem=problem,
            )
            return
        self.prev, self.expected, self.count = stored, seq + 1, self.count + 1

    def report(self) -> ChainReport:
        return self.broken or ChainReport(
            ok=True, events=self.count, head_seq=self.expected - 1, head_hash=self.prev.hex()
        )


def check(rows: Iterable[Row]) -> ChainReport:
    """Recompute the chain over rows of the log in seq order, as stored, and report the
    first break."""
    checker = Checker()
    for row in rows:
        checker.feed(row)
        if checker.broken is not None:
            break
    return checker.report()


def _problem(
    seq: int,
    expected: int,
    prev: bytes,
    event_id: str,
    type_: str,
    version: int,
    at: str,
    keys: tuple[str | None, str | None, str | None],
    payload: str,
    stored: bytes,
) -> str | None:
    if seq != expected:
        return f"seq {expected} is missing (next row is seq {seq})"
    if link(prev, seq, event_id, type_, version, at, keys, payload.encode()) != stored:
        return f"seq {seq} does not match its hash (changed, reordered or inserted)"
    return None
