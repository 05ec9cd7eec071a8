"""The benchmarks run end to end (tiny sizes: this checks they work, not how fast)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_bench_prints_every_workload_with_its_ratios() -> None:
    tiny = ("--runs", "1", "--agents", "3", "--turns", "2", "--lookups", "50")
    out = _run("bench", *tiny, "--scale-events", "100")
    for label in ("W1 append (content=none)", "C0 sqlite3", "C1 aiosqlite", "W2 rebuild", "W3"):
        assert label in out, out
    assert "x C0 / x C1" in out
    for w4 in ("W4 on ", "API get_chain(agent)", "ratio of medians"):
        assert w4 in out, out


def test_the_scale_benchmark_leaves_the_big_database_as_it_was(tmp_path: Path) -> None:
    big = tmp_path / "big.db"
    args = ("--events", "200", "--runs", "2", "--agents", "3", "--turns", "4")
    _run("bench.scale", "--db", str(big), *args)  # fills it
    with sqlite3.connect(big) as conn:
        before = conn.execute(
            "SELECT (SELECT max(seq) FROM events), (SELECT count(*) FROM requests)"
        ).fetchone()
    out = _run("bench.scale", "--db", str(big), *args)  # reuses it: W1 ran on copies
    with sqlite3.connect(big) as conn:
        assert (
            conn.execute(
                "SELECT (SELECT max(seq) FROM events), (SELECT count(*) FROM requests)"
            ).fetchone()
            == before
        )
    assert "tracker stats" in out
    assert "ratio of medians" in out
    assert "peak RSS MB" in out  # each W1 in its own process: memory as the log grows


def test_the_transcript_import_benchmark_runs() -> None:
    out = _run("bench.transcripts", "--files", "20", "--runs", "1")
    assert "files_per_s: median" in out, out  # it asserts every file was imported
