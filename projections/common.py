"""Helpers shared by projection handlers."""

from __future__ import annotations

from typing import Protocol

import msgspec

from tracker import codec
from tracker.events import Usage


class HasTokens(Protocol):
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


def add_usage(row: HasTokens, usage: Usage, cost_usd: float | None) -> None:
    """Add a request's tokens and cost to a row's totals."""
    row.input_tokens += usage.input_tokens
    row.output_tokens += usage.output_tokens
    row.cache_read_tokens += usage.cache_read_tokens
    row.cache_write_tokens += usage.cache_write_tokens
    row.cost_usd += cost_usd or 0.0


def merge_json(current: str, changes: dict[str, object]) -> str:
    """Return the JSON object ``current`` with the keys of ``changes`` replaced."""
    merged = msgspec.json.decode(current)
    merged.update(changes)
    return codec.encode_value(merged).decode()
