"""The hash chain: each event's hash covers the previous hash, its envelope and payload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import msgspec

GENESIS = bytes(16)
Row = tuple[int, str, str, int, str, str | None, str | None, str | None, str, bytes]
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


def check(rows: Iterable[Row]) -> ChainReport:
    """Recompute the chain over rows in seq order and report the first break."""
    prev, expected, count = GENESIS, 1, 0
    for seq, event_id, type_, version, at, rid, aid, sid, payload, stored in rows:
        problem = _problem(
            seq, expected, prev, event_id, type_, version, at, (rid, aid, sid), payload, stored
        )
        if problem:
            return ChainReport(
                ok=False,
                events=count,
                head_seq=expected - 1,
                head_hash=prev.hex(),
                first_bad_seq=min(seq, expected),
                problem=problem,
            )
        prev, expected, count = stored, seq + 1, count + 1
    return ChainReport(ok=True, events=count, head_seq=expected - 1, head_hash=prev.hex())


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
