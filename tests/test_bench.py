"""The benchmarks run end to end (tiny sizes: this checks they work, not how fast)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import disk, scale
from bench.__main__ import checks as main_checks
from bench.one import in_subprocess
from bench.workloads import POINT_READS
from tests.helpers import ROOT, rows


def _run(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_bench_prints_every_workload_with_its_ratios() -> None:
    tiny = ("--runs", "1", "--agents", "3", "--turns", "2", "--lookups", "50")
    out = _run("bench", *tiny, "--scale-events", "100")
    labels = ("W1 append (content=none)", "C0 sqlite3", "C1 aiosqlite", "C2 sqlite3", "W2 rebuild")
    for label in (*labels, "W3"):
        assert label in out, out
    assert "x C0 / x C1" in out
    assert re.search(r"W2 rebuild: \d+\.\d\d of C2, ", out), out
    for w4 in ("W4 on ", "API get_chain(agent)", "ratio of medians", "W4: stats() < 100 ms"):
        assert w4 in out, out
    assert "W1 >= 1/3 of C1" in out  # the targets, judged
    assert "W1: table or index" in out  # where the bytes go


def test_the_rebuild_ceiling_writes_the_requests_the_tracker_wrote(tmp_path: Path) -> None:
    w1, c2 = tmp_path / "w1.db", tmp_path / "c2.db"
    in_subprocess("w1", str(w1), "3", "12")  # turn 9 of each agent fails
    figures = in_subprocess("c2", str(w1), str(c2))
    assert figures["events"] == rows(w1, "SELECT count(*) FROM events")[0][0] == 3 * 12 * 5
    every_request = "SELECT * FROM requests ORDER BY request_id"
    assert rows(c2, every_request) == rows(w1, every_request)
    assert {status for (status,) in rows(c2, "SELECT status FROM requests")} == {
        "completed",
        "failed",
    }


def test_the_bytes_of_each_table_and_index_add_up_to_the_file(tmp_path: Path) -> None:
    db = tmp_path / "w1.db"
    in_subprocess("w1", str(db), "3", "4")
    space = disk.by_object(db)
    assert {"bytes_in:event_log", "bytes_in:events_by_agent", "bytes_in:requests"} <= set(space)
    events = rows(db, "SELECT count(*) FROM events")[0][0]
    pages, free, size = (
        rows(db, f"PRAGMA {name}")[0][0] for name in ("page_count", "freelist_count", "page_size")
    )
    assert round(sum(space.values()) * events) + free * size == pages * size


def test_each_target_is_judged_in_its_own_direction() -> None:
    w1 = {"events_per_s": 120_000.0, "peak_rss_mb": 81.0, "bytes_per_event": 299.0}
    results = {
        "W1 append (content=none)": [w1],
        "W2 rebuild": [{"events_per_s": 399_000.0}],
        "W3 point reads": [{"lookups_per_s": 100_000.0, "p99_us": 20.5}],
    }
    met = {what: ok for what, _, ok in main_checks(results, c1=300_000)}
    assert met == {
        "W1 >= 100,000 events/s": True,
        "W1 >= 1/3 of C1": True,
        "W2 >= 400,000 events/s": False,
        "W3 >= 100,000 lookups/s": True,
        "W3 p99 <= 20 us": False,
        "W1 peak RSS <= 80 MB": False,
        "W1 <= 300 bytes/event": True,
    }
    small, large = [{"peak_rss_mb": 40.0}], [{"peak_rss_mb": 45.0}]
    w4 = scale.checks(0.79, {"stats()": 0.099, "get_chain(agent)": 0.1}, small, large)
    assert [ok for _, _, ok in w4] == [False, True, False, False]


def test_the_scale_benchmark_leaves_the_big_database_as_it_was(tmp_path: Path) -> None:
    big = tmp_path / "big.db"
    args = ("--events", "200", "--runs", "2", "--agents", "3", "--turns", "4")
    contents = "SELECT (SELECT max(seq) FROM events), (SELECT count(*) FROM requests)"
    _run("bench.scale", "--db", str(big), *args)  # fills it
    before = rows(big, contents)
    out = _run("bench.scale", "--db", str(big), *args)  # reuses it: W1 ran on copies
    assert rows(big, contents) == before
    assert "tracker stats" in out
    assert "API rebuild(): its swap" in out  # how long writers wait
    assert "ratio of medians" in out
    assert "peak RSS MB" in out  # each W1 in its own process: memory as the log grows


def test_the_transcript_import_benchmark_runs() -> None:
    out = _run("bench.transcripts", "--files", "20", "--runs", "1")
    assert "files_per_s: median" in out, out  # it asserts every file was imported


def test_each_point_read_finds_the_keys_it_times(tmp_path: Path) -> None:
    db = str(tmp_path / "w1.db")
    in_subprocess("w1", db, "3", "2")
    for read in POINT_READS:  # w3 fails if a key it read is not in the database
        assert in_subprocess("w3", db, "30", "3", read)["lookups_per_s"] > 0
    with pytest.raises(SystemExit, match="nothing found for"):
        in_subprocess("w3", db, "30", "4", "agent")  # agent-3 never ran


def test_a_workload_reports_its_own_peak_rss_not_its_parents(tmp_path: Path) -> None:
    ballast = b"x" * (160 << 20)  # this process now holds 160 MB, written, so resident
    figures = in_subprocess("w1", str(tmp_path / "w1.db"), "2", "2")
    assert figures["peak_rss_mb"] < 120, figures
    assert len(ballast) == 160 << 20  # held until the child has finished


def test_the_followers_benchmark_runs() -> None:
    out = _run(
        "bench.followers", "--followers", "5", "--rate", "60", "--seconds", "0.3", "--runs", "1"
    )
    counts = [int(line.split()[0]) for line in out.splitlines()]
    assert counts == [0, 1, 5], out  # it asserts no follower was given an event
    assert all("of a core" in line and "reads a commit" in line for line in out.splitlines())
