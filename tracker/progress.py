"""A progress bar on stderr, shown only on a terminal (nothing when piped)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Call with the count done so far; ``close()`` ends the line. Without a total (a
    stream's length is not known ahead) it shows the count alone."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label, self.total = label, None if total is None else max(total, 1)
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if not self.enabled or (now - self._last < 0.1 and not finished):
            return
        self._last = now
        self.stream.write(f"\r{self.label} {self._state(done)}")
        self.stream.flush()

    def _state(self, done: int) -> str:
        if self.total is None:
            return f"{done:,}"
        share = min(done / self.total, 1.0)
        return f"[{'#' * int(share * 30):<30}] {share:4.0%} {done:,}/{self.total:,}"

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
