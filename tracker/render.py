"""Plain-text rendering shared by the demo and the command line."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

BLOCK = 1000  # rows a streamed table holds at a time


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns; numbers right-aligned, None shown as '-'."""
    return "\n".join(table_lines(headers, rows, block=max(len(rows), 1)))


def table_lines(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, block: int = BLOCK
) -> Iterator[str]:
    """The lines of ``table``, streamed ``block`` rows at a time (see ``Aligned``)."""
    aligned = Aligned(headers, block)
    for row in rows:
        yield from aligned.add(row)
    yield from aligned.end()


class Aligned:
    """Aligned columns given a block of rows at a time, so memory stays flat however
    many rows come; the header comes with the first block. Widths are those of the
    rows seen so far (a later block may widen a column); a column is numeric if the
    first block's values in it are numbers (Nones aside)."""

    def __init__(self, headers: Sequence[str], block: int = BLOCK) -> None:
        self.headers, self.block = list(headers), block
        self.widths = [width(h) for h in headers]
        self.numeric: list[bool] | None = None
        self._held: list[Sequence[Any]] = []

    def add(self, row: Sequence[Any]) -> list[str]:
        """Take one row; return the lines of a block it completes, else []."""
        self._held.append(row)
        return self._lines() if len(self._held) >= self.block else []

    def end(self) -> list[str]:
        """The lines of the rows still held (the header alone when no row ever came)."""
        return self._lines() if self._held or self.numeric is None else []

    def _lines(self) -> list[str]:
        rows, self._held = self._held, []
        cells = [[cell(v) for v in row] for row in rows]
        self.widths = [max([w, *(width(r[i]) for r in cells)]) for i, w in enumerate(self.widths)]
        lines = []
        if self.numeric is None:
            self.numeric = [_numeric([r[i] for r in rows]) for i in range(len(self.widths))]
            text = [False] * len(self.widths)
            lines += [
                self._join(self.headers, text),
                self._join(["-" * w for w in self.widths], text),
            ]
        return lines + [self._join(row, self.numeric) for row in cells]

    def _join(self, values: Sequence[str], numeric: Sequence[bool]) -> str:
        parts = [
            " " * (w - width(v)) + v if num else v + " " * (w - width(v))
            for v, w, num in zip(values, self.widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()


def width(text: str) -> int:
    """The columns ``text`` takes on a terminal: two for a wide or full-width character
    (CJK, most emoji), none for a combining mark, one for the rest."""
    if text.isascii():
        return len(text)
    return sum(_char_width(c) for c in text)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _numeric(column: list[Any]) -> bool:
    """Right-align a column of numbers (None allowed), if it holds any: a column of
    Nones alone says nothing (a later block may bring text)."""
    numbers = [v for v in column if v is not None]
    return bool(numbers) and all(_is_number(v) for v in numbers)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def when(moment: datetime) -> str:
    """A UTC time, to the millisecond."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def dollars(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f} ms"
    seconds = ms / 1000
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def tree(nodes: Sequence[tuple[str, str | None, str]]) -> str:
    """Draw (id, parent, label) nodes as a tree; roots are nodes without a known parent.

    A child goes on in its parent's column: the only child, or at a fork the last
    one (the newest), while its elder siblings branch off above it. So the width
    grows with forks of forks, not with the number of forks: a long-lived agent's
    chain, however often it forked, stays a column.
    """
    known = {node_id for node_id, _, _ in nodes}
    children: dict[str | None, list[tuple[str, str]]] = {}
    for node_id, parent, label in nodes:
        children.setdefault(parent if parent in known else None, []).append((node_id, label))
    lines: list[str] = []
    todo = _branches(children.get(None, []), "", closing=True)  # a stack: chains run long
    while todo:
        node_id, label, lead, below = todo.pop()
        lines.append(f"{lead}{label}")
        if kids := children.get(node_id):
            *elder, newest = kids
            todo.append((*newest, below, below))  # drawn after its elder siblings
            todo += _branches(elder, below, closing=False)
    return "\n".join(lines)


def _branches(
    kids: list[tuple[str, str]], indent: str, *, closing: bool
) -> list[tuple[str, str, str, str]]:
    """(id, label, its line's lead, its children's indent) of each kid, last kid first;
    ``closing``: nothing goes on in the column below them, so the last kid ends it."""
    drawn = []
    for i, (node_id, label) in enumerate(kids):
        last = closing and i == len(kids) - 1
        lead, below = ("└── ", "    ") if last else ("├── ", "│   ")
        drawn.append((node_id, label, indent + lead, indent + below))
    return drawn[::-1]
