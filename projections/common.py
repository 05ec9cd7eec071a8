"""Helpers shared by projection handlers."""

from __future__ import annotations

from typing import Protocol

import msgspec

from tracker import codec
from tracker.events import RequestCompleted, RequestFailed


class HasTotals(Protocol):
    completed: int
    failed: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float
    duration_ms: int
    timed: int


def add_finished(row: HasTotals, ev: RequestCompleted | RequestFailed) -> None:
    """Add a finished request to a row's totals: its outcome, tokens, cost and duration
    (``timed`` counts the requests that reported one, so the mean leaves out the rest)."""
    if isinstance(ev, RequestCompleted):
        row.completed += 1
    else:
        row.failed += 1
    usage = ev.usage
    row.input_tokens += usage.input_tokens
    row.output_tokens += usage.output_tokens
    row.cache_read_tokens += usage.cache_read_tokens
    row.cache_write_tokens += usage.cache_write_tokens
    row.cost_usd += ev.cost_usd or 0.0
    if ev.duration_ms is not None:
        row.duration_ms += ev.duration_ms
        row.timed += 1


def merge_json(current: str, changes: dict[str, object]) -> str:
    """Return the JSON object ``current`` with the keys of ``changes`` replaced."""
    merged = msgspec.json.decode(current)
    merged.update(changes)
    return codec.encode_value(merged).decode()
