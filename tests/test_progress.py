"""Progress bars: drawn on a terminal, nothing at all when piped."""

from __future__ import annotations

import io

from tracker.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_ending_in_a_newline() -> None:
    stream = Terminal()
    bar = Progress("replay", 200, stream)
    bar(200)
    bar.close()
    assert stream.getvalue() == f"\rreplay [{'#' * 30}] 100% 200/200\n"


def test_a_pipe_gets_nothing() -> None:
    stream = io.StringIO()
    bar = Progress("replay", 200, stream)
    bar(100)
    bar(200)
    bar.close()
    assert stream.getvalue() == ""


def test_without_a_total_a_terminal_gets_the_count() -> None:
    stream = Terminal()
    bar = Progress("import", None, stream)
    bar(12_345)
    bar.close()
    assert stream.getvalue() == "\rimport 12,345\n"
