"""The command line: every command, its output and exit code, and every user mistake."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import ROOT, Run, beside, rows, run_python, run_unprivileged, tamper
from tracker import ManualClock, Tracker, chain
from tracker.cli import COMMANDS, commands, main
from tracker.schema import SCHEMA_VERSION


async def _populate(path: Path) -> None:
    clock = ManualClock()
    async with Tracker.open(path, clock=clock) as t:
        for agent in ("a1", "a2"):
            current = None
            for k in range(3):
                rid = f"{agent}-r{k}"
                await t.track_request(
                    rid, agent_id=agent, session_id=current, lock=True, prompt="hello"
                )
                current = f"{agent}-S{k // 2}"
                await t.update_request_session(rid, current)
                await t.complete_request(
                    rid, usage={"input_tokens": 100}, cost_usd=0.5, duration_ms=1000
                )
                clock.advance(60)
        await t.track_request("stuck", agent_id="a3")
        await t.update_request_session("stuck", "a3-S0")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cli.db"
    anyio.run(_populate, path)
    return path


def _snapshot(path: Path) -> str:
    """A digest of every row of every table: equal digests, unchanged database."""
    names = [n for (n,) in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")]
    text = repr([(n, rows(path, f"SELECT * FROM {n} ORDER BY 1")) for n in sorted(names)])
    return hashlib.sha256(text.encode()).hexdigest()


# -- every command ---------------------------------------------------------------


def test_init_creates_and_reopens(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    assert run("init", "--db", str(path))[:2] == (0, f"created {path} (schema v{SCHEMA_VERSION})\n")
    assert run("--db", str(path), "init")[1].startswith("opened existing")
    assert json.loads(run("init", "--db", str(path), "--json")[1])["created"] is False


def test_events_table_filters_and_json(run: Run, db: Path) -> None:
    code, out, _ = run("events", "--db", str(db), "--agent", "a2", "--type", "SessionAssigned")
    assert code == 0
    assert out.count("SessionAssigned") == 3
    assert "a1-r" not in out
    code, out, _ = run("--db", str(db), "--json", "events", "--request", "a1-r0")
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["type"] for e in lines] == [
        "RequestTracked",
        "LockAcquired",
        "SessionAssigned",
        "RequestCompleted",
        "LockReleased",
    ]
    assert lines[0]["event"]["prompt"] == "hello"


def test_events_limit_gives_a_page_from_where_since_or_last_starts(run: Run, db: Path) -> None:
    def seqs(*options: str) -> list[int]:
        code, out, err = run("events", "--db", str(db), "--json", *options)
        assert code == 0, err
        return [json.loads(line)["seq"] for line in out.splitlines()]

    everything = seqs()
    assert seqs("--limit", "2") == everything[:2]
    assert seqs("--since", "3", "--limit", "2") == [4, 5]
    assert seqs("--last", "5", "--limit", "2") == everything[-5:-3]
    assert seqs("--limit", "0") == []
    assert seqs("--agent", "a2", "--limit", "1") == seqs("--agent", "a2")[:1]
    # with --follow it stops after N, rather than tailing for ever
    assert seqs("--follow", "--since", "10", "--limit", "3") == [11, 12, 13]


def test_events_last_shows_the_newest_matching_ones_in_every_form(run: Run, db: Path) -> None:
    everything = [
        json.loads(line)["seq"] for line in run("events", "--db", str(db), "--json")[1].splitlines()
    ]
    code, out, _ = run("events", "--db", str(db), "--json", "--last", "3")
    assert (code, [json.loads(line)["seq"] for line in out.splitlines()]) == (0, everything[-3:])
    code, out, _ = run(
        "events", "--db", str(db), "--last", "2", "--agent", "a1", "--type", "LockReleased"
    )
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()[2:]] == [
        str(e["seq"]) for e in _events(run, db, "a1") if e["type"] == "LockReleased"
    ][-2:]
    assert run("events", "--db", str(db), "--last", "0")[1].count("\n") == 2  # the header only


def _events(run: Run, db: Path, agent: str) -> list[dict[str, Any]]:
    out = run("events", "--db", str(db), "--json", "--agent", agent)[1]
    return [json.loads(line) for line in out.splitlines()]


def test_stats_of_one_agent_count_its_events(run: Run, db: Path) -> None:
    code, out, _ = run("stats", "--db", str(db), "--json", "--agent", "a2")
    assert code == 0
    assert json.loads(out)["events"] == len(_events(run, db, "a2"))
    assert json.loads(run("stats", "--db", str(db), "--json")[1])["events"] == len(
        run("events", "--db", str(db), "--json")[1].splitlines()
    )


def test_audit_shows_state_and_timeline(run: Run, db: Path) -> None:
    code, out, _ = run("audit", "request", "a1-r1", "--db", str(db))
    assert code == 0
    assert "status              completed" in out
    assert "timeline (5 events)" in out
    code, out, _ = run("audit", "agent", "a1", "--db", str(db), "--json")
    data = json.loads(out)
    assert data["state"]["chain_length"] == 2
    assert len(data["events"]) == 15
    assert run("audit", "session", "a2-S1", "--db", str(db))[0] == 0


def test_a_session_is_named_by_the_start_of_its_id(run: Run, db: Path) -> None:
    code, out, _ = run("audit", "session", "a3", "--db", str(db))
    assert (code, out.splitlines()[0]) == (0, "session a3-S0")
    code, out, _ = run("events", "--session", "a2-S", "--db", str(db), "--json")
    assert code == 1  # a2-S0 and a2-S1
    shown = run("events", "--session", "a2-S1", "--db", str(db), "--json")[1].splitlines()
    assert {json.loads(line)["session_id"] for line in shown} == {"a2-S1"}


def test_chain_as_table_and_tree(run: Run, db: Path) -> None:
    code, out, _ = run("chain", "a1", "--db", str(db))
    assert code == 0
    assert "a1-S1 *" in out
    code, out, _ = run("chain", "a1", "--tree", "--db", str(db))
    assert out.splitlines()[0].startswith("└── a1-S0  active, 2 requests, $1.0000")
    assert out.splitlines()[1].startswith("    a1-S1 *  active, 1 request, $0.5000")  # only child


@pytest.mark.parametrize("page", [1, 2, 1000])  # read a page at a time, however big
def test_agents_by_id_with_where_each_continues(
    run: Run, db: Path, page: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "AGENTS_PAGE", page)
    code, out, _ = run("agents", "--db", str(db))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["agent", "current", "session"]
    assert [line.split()[:2] for line in lines[2:]] == [
        ["a1", "a1-S1"],
        ["a2", "a2-S1"],
        ["a3", "a3-S0"],
    ]
    assert "$1.5000" in lines[2]
    _, out, _ = run("agents", "--db", str(db), "--json", "--after", "a1", "--limit", "1")
    (shown,) = json.loads(out)
    assert (shown["agent_id"], shown["request_count"], shown["cost_usd"]) == ("a2", 3, 1.5)
    _, out, _ = run("agents", "--db", str(db), "--json", "--limit", "2")
    assert [a["agent_id"] for a in json.loads(out)] == ["a1", "a2"]
    _, out, _ = run("agents", "--db", str(db), "--json", "--limit", "0")
    assert json.loads(out) == []


def test_stats_overall_by_group_and_json(run: Run, db: Path) -> None:
    code, out, _ = run("stats", "--db", str(db))
    assert code == 0
    assert "cost_usd            $3.0000" in out
    data = json.loads(run("stats", "--db", str(db), "--json", "--agent", "a1")[1])
    assert (data["requests"], data["completed"], data["cost_usd"]) == (3, 3, 1.5)
    for by in ("day", "agent", "session"):
        code, out, _ = run("stats", "--by", by, "--db", str(db))
        assert code == 0
        assert "failure rate" in out
    groups = json.loads(run("stats", "--by", "agent", "--db", str(db), "--json")[1])
    assert {g["key"]: g["requests"] for g in groups} == {"a1": 3, "a2": 3, "a3": 1}
    top = run("stats", "--by", "agent", "--limit", "2", "--db", str(db), "--json")[1]
    assert json.loads(top) == groups[:2]


def test_replay_rebuilds_and_writes_a_point_in_time_copy(
    run: Run, db: Path, tmp_path: Path
) -> None:
    before = _snapshot(db)
    code, out, _ = run("replay", "--db", str(db))
    assert (code, out.startswith("rebuilt the projections from 32 events")) == (0, True)
    assert "s for the swap)" in out  # how long writers waited
    assert _snapshot(db) == before
    target = tmp_path / "then.db"
    assert run("replay", "--until", "5", "--into", str(target), "--db", str(db))[0] == 0
    assert rows(target, "SELECT status FROM requests") == [("completed",)]
    at = tmp_path / "at.db"
    assert run("replay", "--at", "2026-01-01T00:01:00Z", "--into", str(at), "--db", str(db))[0] == 0
    assert rows(at, "SELECT request_id FROM requests ORDER BY 1") == [("a1-r0",), ("a1-r1",)]


def test_verify_passes_then_names_the_first_bad_seq(run: Run, db: Path) -> None:
    code, out, _ = run("verify", "--db", str(db))
    assert (code, "intact" in out, "equal to a full replay" in out) == (0, True, True)
    tamper(db, "UPDATE event_log SET payload = replace(payload, 'hello', 'HELLO') WHERE seq = 6")
    code, out, err = run("verify", "--db", str(db))
    assert code == 1
    assert "BROKEN at seq 6" in out
    assert err == "tracker: verify failed: first bad seq 6\n"


def test_cleanup_dry_run_then_real(run: Run, db: Path) -> None:
    before = _snapshot(db)
    code, out, _ = run("cleanup", "--stale", "1s", "--dry-run", "--db", str(db))
    assert (code, "would retire: 1 stuck requests" in out) == (0, True)
    assert _snapshot(db) == before
    report = json.loads(run("cleanup", "--stale", "1s", "--db", str(db), "--json")[1])
    assert report["abandoned_requests"] == ["stuck"]


def test_cleanup_names_twenty_and_counts_the_rest(run: Run, tmp_path: Path) -> None:
    async def sessions(path: Path) -> None:
        async with Tracker.open(path) as t:
            for k in range(25):
                await t.track_request(f"r{k}", agent_id=f"a{k}")
                await t.update_request_session(f"r{k}", f"s{k}")
                await t.complete_request(f"r{k}")

    path = tmp_path / "many.db"
    anyio.run(sessions, path)
    out = run("cleanup", "--idle", "0s", "--dry-run", "--db", str(path))[1].splitlines()
    assert out[0] == "would retire: 0 stuck requests, 25 idle sessions, 0 locks"
    assert out[1].startswith("  sessions: s")
    assert out[1].endswith(" ... and 5 more")
    assert out[1].count(", ") == 19
    out = run("cleanup", "--max-sessions", "22", "--db", str(path))[1].splitlines()
    assert out == [
        "retired: 0 stuck requests, 0 idle sessions, 3 sessions over capacity, 0 locks",
        "  over capacity: s0, s1, s2",
    ]
    report = json.loads(run("cleanup", "--max-sessions", "20", "--json", "--db", str(path))[1])
    assert report["over_capacity_sessions"] == ["s3", "s4"]


EXPORT_WITHIN = """
import resource, signal, sys
from tracker.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]),) * 2)
sys.exit(main(["export", "--db", sys.argv[1], "--out", sys.argv[2]]))
"""


def test_an_export_that_fails_midway_leaves_the_previous_file(tmp_path: Path) -> None:
    async def fill(path: Path) -> None:
        async with Tracker.open(path) as t:
            for k in range(300):
                await t.track_request(f"r{k}", agent_id=f"a{k % 9}", prompt="p" * 500)

    path, out = tmp_path / "big.db", tmp_path / "log.jsonl"
    anyio.run(fill, path)
    out.write_text("the previous export\n")
    done = run_python(EXPORT_WITHIN, str(path), str(out), str(100_000))  # the log: ~300 kB
    assert (done.returncode, done.stderr.count("\n")) == (1, 1), done.stderr
    assert f"no room for the export {str(out)!r}: File too large" in done.stderr  # DiskFull
    assert out.read_text() == "the previous export\n"
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]
    assert run_python(EXPORT_WITHIN, str(path), str(out), str(10**9)).returncode == 0
    assert len(out.read_text().splitlines()) == 300
    assert out.stat().st_mode & 0o777 == 0o600  # owner only, like the database it copies
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.db", "log.jsonl"]  # no WAL left


def head_of(path: Path) -> str:
    """The hash of the last event, as ``tracker verify`` shows it."""
    return str(rows(path, "SELECT lower(hex(hash)) FROM event_log ORDER BY seq DESC")[0][0])


def test_export_import_gives_an_identical_database(run: Run, db: Path, tmp_path: Path) -> None:
    """Both say the head hash they end on, so an operator can check a copy is whole."""
    dump, head = tmp_path / "log.jsonl", head_of(db)
    assert run("export", "--out", str(dump), "--db", str(db))[::2] == (
        0,
        f"exported 32 events to {dump} (head {head})\n",
    )
    assert len(dump.read_text().splitlines()) == 32
    copy = tmp_path / "copy.db"
    code, out, _ = run("import", str(dump), "--db", str(copy))
    assert (code, out) == (0, f"imported 32 events into {copy} (head {head})\n")
    assert _snapshot(copy) == _snapshot(db)
    assert run("verify", "--db", str(copy))[0] == 0
    copy.unlink()
    imported = json.loads(run("import", str(dump), "--db", str(copy), "--json")[1])
    assert imported == {"events": 32, "db": str(copy), "head_hash": head}
    verified = json.loads(run("verify", "--db", str(copy), "--json")[1])
    assert verified["head_hash"] == head


def test_export_into_a_pipe_writes_the_stream_and_leaves_the_pipe(
    run: Run, db: Path, tmp_path: Path
) -> None:
    """``--out /dev/stdout`` or a shell's ``>(gzip > log.gz)``: not a file to replace."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    code, _, err = run("export", "--out", str(fifo), "--db", str(db))
    reader.join(timeout=30)
    assert code == 0, err
    assert [json.loads(line)["seq"] for line in received[0].splitlines()] == list(range(1, 33))
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert beside(fifo) == []


def test_import_reads_a_pipe(run: Run, db: Path, tmp_path: Path) -> None:
    """``tracker export | tracker import -`` (or ``gunzip -c log.gz |``): read once, as it comes."""
    dump = run("export", "--db", str(db))[1].encode()
    copy = tmp_path / "piped.db"
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "import", "-", "--db", str(copy)],
        input=dump,
        capture_output=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"imported 32 events into {copy} (head {head_of(db)})\n".encode()
    assert _snapshot(copy) == _snapshot(db)


def test_import_from_a_terminal_is_refused_at_once(tmp_path: Path) -> None:
    """``tracker import -`` with nothing piped would sit waiting for an export to be typed."""
    controller, terminal = os.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tracker", "import", "-", "--db", str(tmp_path / "t.db")],
            stdin=terminal,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
            check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert (done.returncode, done.stderr) == (
        1,
        "tracker: import - reads an export from a pipe, and stdin is a terminal\n",
    )
    assert list(tmp_path.iterdir()) == []


def test_events_between_two_times_or_since_an_age(run: Run, db: Path) -> None:
    """The fixture's turns are a minute apart from 2026-01-01T00:00Z: a1's first three,
    then a2's, then one stuck request."""

    def requests(*options: str) -> list[str]:
        code, out, err = run("events", "--json", "--db", str(db), *options)
        assert code == 0, err
        return sorted({json.loads(line)["request_id"] for line in out.splitlines()})

    assert requests("--after", "2026-01-01T00:05:00Z") == ["a2-r2", "stuck"]
    assert requests("--before", "2026-01-01T00:01:00Z") == ["a1-r0"]
    assert requests("--after", "2026-01-01T00:01", "--before", "2026-01-01T00:02") == ["a1-r1"]
    assert requests("--after", "2026-01-01T00:01", "--until", "3") == []  # narrowed by both
    assert len(requests("--after", "100000d")) == 7  # an age: that long ago
    assert requests("--before", "100000d") == []


def test_export_to_stdout(run: Run, db: Path) -> None:
    code, out, _ = run("export", "--db", str(db))
    assert code == 0
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(1, 33))


def test_query_reads(run: Run, db: Path) -> None:
    code, out, _ = run(
        "query", "SELECT agent_id, requests FROM agent_usage ORDER BY 1", "--db", str(db)
    )
    assert code == 0
    assert out.splitlines()[2].split() == ["a1", "3"]
    out = run("query", "SELECT count(*) AS n FROM events", "--db", str(db), "--json")[1]
    assert json.loads(out) == {"n": 32}


ANALYST_READS = [
    ("SELECT count(*) FROM events e, json_each(e.payload) j WHERE j.key = 'digest'", "{digests}"),
    ('SELECT count(*) FROM json_tree(\'{"a": {"b": [1, 2]}}\')', "5"),
    ("SELECT name FROM pragma_table_info('requests') WHERE pk", "request_id"),
    ("SELECT count(*) > 0 FROM pragma_index_list('sessions')", "1"),
    ("SELECT name FROM pragma_index_info('requests_by_owner')", "owner"),
    ("SELECT count(*) > 0 FROM dbstat WHERE name = 'event_log'", "1"),
]


@pytest.mark.parametrize(("sql", "first"), ANALYST_READS, ids=[s for s, _ in ANALYST_READS])
def test_query_reads_with_table_valued_functions(run: Run, db: Path, sql: str, first: str) -> None:
    """json_each, json_tree, pragma_* and dbstat: built before the authorizer is set, since
    SQLite builds them on first use by what it reports as writing sqlite_master."""
    payloads = [json.loads(p) for (p,) in rows(db, "SELECT payload FROM event_log")]
    digests = sum("digest" in p for p in payloads)
    code, out, err = run("query", sql, "--db", str(db), "--json")
    assert code == 0, err
    assert str(next(iter(json.loads(out.splitlines()[0]).values()))) == first.format(
        digests=digests
    )


COUNT_TO = "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < {}) "


def test_query_streams_many_rows_in_blocks(run: Run, db: Path) -> None:
    sql = COUNT_TO.format(2500) + "SELECT x, 'row ' || x AS label FROM n"
    code, out, _ = run("query", sql, "--db", str(db))
    lines = out.splitlines()
    assert (code, len(lines), lines[0].split()) == (0, 2 + 2500, ["x", "label"])
    assert [line.split() for line in lines[2:]] == [
        [f"{x:,}", "row", str(x)] for x in range(1, 2501)
    ]
    out = run("query", sql, "--db", str(db), "--json")[1]
    assert [json.loads(line)["x"] for line in out.splitlines()] == list(range(1, 2501))


def test_a_query_failing_after_some_rows_ends_with_one_line(run: Run, db: Path) -> None:
    overflow = "abs(-9223372036854775807 - 1)"
    sql = COUNT_TO.format(3000) + f"SELECT CASE WHEN x > 2500 THEN {overflow} ELSE x END FROM n"
    code, out, err = run("query", sql, "--db", str(db))
    assert (code, err) == (1, "tracker: query refused: integer overflow\n")
    assert 0 < len(out.splitlines()) <= 2 + 2500


def test_the_events_table_prints_what_it_read_before_a_bad_event(run: Run, tmp_path: Path) -> None:
    async def fill(path: Path) -> None:
        async with Tracker.open(path) as t:
            for k in range(1100):
                await t.track_request(f"r{k}")

    path = tmp_path / "long.db"
    anyio.run(fill, path)
    tamper(path, "UPDATE event_log SET payload = 'not json' WHERE seq = 1050")
    code, out, err = run("events", "--db", str(path))
    assert (code, err.count("\n")) == (1, 1), err
    assert "undecodable RequestTracked" in err
    lines = out.splitlines()  # printed as they were read: the first block, then the error
    assert (len(lines), lines[0].split()[0], lines[-1].split()[0]) == (2 + 1000, "seq", "1,000")


def test_query_shows_blobs_as_hex_like_the_events_command(run: Run, db: Path) -> None:
    event = json.loads(run("events", "--until", "1", "--db", str(db), "--json")[1])
    sql = "SELECT id, hash FROM events WHERE seq = 1"
    assert run("query", sql, "--db", str(db))[1].splitlines()[2].split() == [
        event["id"],
        event["hash"],
    ]
    shown = json.loads(run("query", sql, "--db", str(db), "--json")[1])
    assert shown == {"id": event["id"], "hash": event["hash"]}


def test_health(run: Run, db: Path) -> None:
    code, out, _ = run("health", "--db", str(db))
    assert (code, "integrity        ok" in out) == (0, True)
    assert json.loads(run("health", "--db", str(db), "--json")[1])["lag"] == 0


def test_db_from_the_environment(run: Run, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKER_DB", str(db))
    assert run("stats")[0] == 0


def test_an_empty_db_is_a_mistake_not_the_default(
    run: Run, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACKER_DB", str(db))  # what an empty --db fell back to
    for argv in (["stats"], ["init"], ["import", "x.jsonl"]):
        assert run(*argv, "--db", "") == (1, "", "tracker: --db is empty: name the database file\n")


def test_a_db_under_the_home_folder_unexpanded(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRACKER_DB=~/runs/t.db from an environment file: no shell expanded the ~."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TRACKER_DB", "~/t.db")
    assert run("init")[0] == 0
    assert (tmp_path / "t.db").exists()
    assert run("stats", "--db", "~/t.db")[0] == 0


# -- query cannot write ------------------------------------------------------------

ATTACKS = [
    "DELETE FROM events",
    "UPDATE requests SET status = 'x'",
    "INSERT INTO agents (agent_id, chain_length, request_count, resets, first_seen, "
    "last_activity, last_seq) VALUES ('x', 0, 0, 0, '', '', 0)",
    "DROP TABLE requests",
    "CREATE TABLE evil (x)",
    "CREATE TEMP TABLE evil (x)",
    "ALTER TABLE requests ADD COLUMN evil",
    "ATTACH DATABASE '{dir}/evil.db' AS evil",
    "VACUUM INTO '{dir}/evil.db'",
    "VACUUM",
    "PRAGMA user_version = 99",
    "PRAGMA journal_mode = DELETE",
    "PRAGMA writable_schema = ON",
    "SELECT load_extension('/tmp/evil.so')",
    "REINDEX",
    "ANALYZE",
    "BEGIN IMMEDIATE",
    "SELECT 1; DELETE FROM events",
    "WITH x AS (SELECT 1) DELETE FROM events",
    "UPDATE sqlite_master SET sql = '' WHERE name = 'events'",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_query_cannot_change_anything(run: Run, db: Path, attack: str) -> None:
    before = _snapshot(db)
    code, _, err = run("query", attack.format(dir=db.parent), "--db", str(db))
    assert code == 1
    assert err.startswith("tracker: query refused")
    assert err.count("\n") == 1
    assert _snapshot(db) == before
    assert not (db.parent / "evil.db").exists()


# -- user mistakes: one line, non-zero, nothing changed -------------------------------

MISTAKES = [
    (["events"], "no database at"),
    (["audit", "request", "nope"], "no request 'nope'"),
    (["audit", "agent", "nope"], "no agent 'nope'"),
    (["chain", "nope"], "no agent 'nope'"),
    (["replay", "--at", "yesterday", "--into", "{dir}/x.db"], "bad time 'yesterday'"),
    (["replay", "--until", "3"], "need --into"),
    (["replay", "--into", "{db}"], "exists"),
    (["cleanup", "--idle", "soon"], "bad duration 'soon'"),
    (["query", "SELEKT nonsense"], "query refused"),
    (["query", "SELECT * FROM no_such_table"], "no such table"),
    (["import", "{dir}/missing.jsonl"], "no file"),
    (["import", "{dir}"], "cannot read '"),  # a folder: "Is a directory"
    # a name longer than the file system takes (255 bytes): the system's word, one line
    (["import", "{dir}/" + "x" * 300], "File name too long"),
    (["replay", "--into", "{dir}/" + "x" * 300], "File name too long"),
    (["export", "--out", "{dir}/" + "x" * 300], "File name too long"),
    (["claude", "import", "{dir}/" + "x" * 300], "File name too long"),
    (["stats", "--agent", ""], "agent_id must not be empty"),
    (["agents", "--limit", "-1"], "limit must not be negative, got -1"),
    (["agents", "--after", " "], "after must not be empty or blank"),
    (["stats", "--agent", "nope"], "no agent 'nope'"),
    (["audit", "session", "a1-S"], "'a1-S' starts several sessions: a1-S0, a1-S1"),
    (["audit", "session", "b"], "no session 'b'"),
    (["stats", "--by", "day", "--agent", "nope"], "no agent 'nope'"),
    (["stats", "--limit", "3"], "--limit 3 needs --by day, agent or session"),
    (["stats", "--by", "session", "--limit", "-1"], "limit must not be negative, got -1"),
    (["replay", "--until", "-5", "--into", "{dir}/x.db"], "until must not be negative, got -5"),
    (["events", "--last", "-2"], "last must not be negative, got -2"),
    (["events", "--limit", "-3"], "limit must not be negative, got -3"),
    (["events", "--since", "-1"], "since must not be negative, got -1"),
    (["events", "--after", "soon"], "bad time 'soon' for --after: an ISO 8601 time"),
    (["events", "--before", "2026-13-01"], "bad time '2026-13-01' for --before"),
    (["events", "--last", str(2**64)], "last must be at most 9,223,372,036,854,775,807"),
    (["cleanup", "--idle", "99999999999d"], "idle_for must be at most"),
    (["events", "--type", "RequestFialed"], "unknown event type 'RequestFialed': one of"),
    (["events", "--follow", "--until", "5"], "takes no until (5)"),
    (["export", "--out", "{dir}/no/such/dir/x.jsonl"], "No such file or directory"),
    (["export", "--out", "{dir}"], "cannot write the export to"),
    (["replay", "--until", "3", "--into", "{dir}/no/x.db"], "cannot create database"),
]


@pytest.mark.parametrize(("argv", "needle"), MISTAKES)
def test_user_mistakes_are_one_line_and_change_nothing(
    run: Run, db: Path, argv: list[str], needle: str
) -> None:
    before = _snapshot(db)
    args = [a.format(dir=db.parent, db=db) for a in argv]
    db_args = ["--db", str(db.parent / "missing.db")] if argv == ["events"] else ["--db", str(db)]
    code, _, err = run(*args, *db_args)
    assert code == 1
    assert err.startswith("tracker: ")
    assert needle in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
    assert _snapshot(db) == before


@pytest.mark.parametrize(
    "argv",
    [["init"], ["stats"], ["events"], ["query", "SELECT 1"], ["health"], ["verify"], ["export"]],
    ids=" ".join,
)
def test_a_folder_given_as_the_database_is_one_line(
    run: Run, tmp_path: Path, argv: list[str]
) -> None:
    code, _, err = run(*argv, "--db", str(tmp_path))
    assert (code, err) == (1, f"tracker: {str(tmp_path)!r} is a folder, not a tracker database\n")
    assert list(tmp_path.iterdir()) == []


def test_a_database_name_too_long_is_one_line(run: Run, tmp_path: Path) -> None:
    for argv in (["stats"], ["init"], ["query", "SELECT 1"]):
        code, _, err = run(*argv, "--db", str(tmp_path / ("x" * 300)))
        assert (code, err.count("\n")) == (1, 1), err
        assert err.startswith("tracker: "), err
        assert err.endswith(": File name too long\n"), err
    assert list(tmp_path.iterdir()) == []


READERS = [["stats"], ["query", "SELECT 1"], ["events"], ["health"], ["verify"], ["export"]]


@pytest.mark.parametrize("argv", READERS, ids=lambda argv: argv[0])
def test_a_file_that_is_not_a_tracker_database(run: Run, tmp_path: Path, argv: list[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("shopping list\n" * 50)
    code, _, err = run(*argv, "--db", str(path))
    assert (code, err) == (1, f"tracker: {str(path)!r}: file is not a database\n")
    assert path.read_text() == "shopping list\n" * 50


@pytest.mark.parametrize("argv", READERS, ids=lambda argv: argv[0])
def test_a_damaged_database_is_one_line(
    run: Run, db: Path, tmp_path: Path, argv: list[str]
) -> None:
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(db.read_bytes()[:2000])  # the first page and half of the second
    code, _, err = run(*argv, "--db", str(damaged))
    assert (code, err) == (1, f"tracker: {str(damaged)!r}: database disk image is malformed\n")


READ_ONLY_MEDIA = """
import sys
from tracker.cli import main
for argv in (
    ["stats", "--json"],
    ["events", "--last", "1", "--json"],
    ["query", "SELECT count(*) AS n FROM events", "--json"],
    ["verify", "--json"],
    ["cleanup", "--idle", "0s"],
):
    code = main([*argv, "--db", sys.argv[1]])
    print("exit", argv[0], code, flush=True)
"""


def test_a_database_on_read_only_media_is_read_and_verified(db: Path, tmp_path: Path) -> None:
    """A backup in a folder nobody may write (a snapshot, a read-only mount): SQLite
    cannot create the WAL index beside it, so it is read as an unchanging file."""
    folder = tmp_path / "backup"
    folder.mkdir()
    copy = folder / "t.db"
    copy.write_bytes(db.read_bytes())
    copy.chmod(0o444)
    folder.chmod(0o555)
    try:
        done = run_unprivileged(READ_ONLY_MEDIA, str(copy))
    finally:
        folder.chmod(0o755)
    out = done.stdout.splitlines()
    assert [line for line in out if line.startswith("exit")] == [
        "exit stats 0",
        "exit events 0",
        "exit query 0",
        "exit verify 0",
        "exit cleanup 1",  # a write: refused
    ], done.stderr
    assert json.loads(out[0])["requests"] == 7
    assert json.loads(out[2])["seq"] == 32
    assert json.loads(out[4]) == {"n": 32}
    assert json.loads(out[6])["ok"] is True
    assert "attempt to write a readonly database" in done.stderr
    assert list(folder.iterdir()) == [copy]  # nothing written beside it


def test_importing_a_tampered_export_is_refused(run: Run, db: Path, tmp_path: Path) -> None:
    dump = tmp_path / "log.jsonl"
    run("export", "--out", str(dump), "--db", str(db))
    lines = dump.read_text().splitlines()
    lines[3] = lines[3].replace('"a1"', '"a9"')
    dump.write_text("\n".join(lines) + "\n")
    copy = tmp_path / "copy.db"
    code, _, err = run("import", str(dump), "--db", str(copy))
    assert (code, "line 4" in err, "hash chain" in err) == (1, True, True)
    assert not copy.exists()


Line = dict[str, Any]  # one exported event, parsed


def import_forged(
    run: Run, db: Path, tmp_path: Path, forge: Callable[[list[Line]], object]
) -> tuple[int, str, Path, list[Line]]:
    """Export ``db``, change its lines with ``forge``, recompute every hash (a forged
    export the chain accepts) and import it into a new file; return the import's exit
    code and stderr, the new file, and the lines it was given."""
    dump = tmp_path / "log.jsonl"
    run("export", "--out", str(dump), "--db", str(db))
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    forge(lines)
    prev = chain.GENESIS
    for line in lines:
        keys = (line["request_id"], line["agent_id"], line["session_id"])
        payload = json.dumps(line["payload"], separators=(",", ":")).encode()
        head = (line["seq"], line["id"], line["type"], line["version"], line["at"])
        prev = chain.link(prev, *head, keys, payload)
        line["hash"] = prev.hex()
    dump.write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    copy = tmp_path / "copy.db"
    code, _, err = run("import", str(dump), "--db", str(copy))
    return code, err, copy, lines


def test_an_import_stores_the_ids_the_tracker_mints_as_bytes_and_others_as_text(
    run: Run, db: Path, tmp_path: Path
) -> None:
    def other_ids(lines: list[Line]) -> None:
        lines[0]["id"] = "evt-1"  # another tool's ids, and the tracker's in capitals
        lines[1]["id"] = lines[1]["id"].upper()

    code, err, copy, lines = import_forged(run, db, tmp_path, other_ids)
    assert code == 0, err
    stored = [i for (i,) in rows(copy, "SELECT id FROM event_log ORDER BY seq")]
    assert stored[:2] == ["evt-1", lines[1]["id"]]
    assert all(isinstance(i, bytes) and len(i) == 16 for i in stored[2:])
    assert run("verify", "--db", str(copy))[0] == 0
    again = tmp_path / "again.jsonl"
    run("export", "--out", str(again), "--db", str(copy))
    assert [json.loads(line) for line in again.read_text().splitlines()] == lines


def test_importing_an_export_with_an_unknown_event_is_refused(
    run: Run, db: Path, tmp_path: Path
) -> None:
    def unknown(lines: list[Line]) -> None:
        lines[3]["type"] = "Unknown" + lines[3]["type"]

    code, err, copy, _ = import_forged(run, db, tmp_path, unknown)
    assert (code, err.count("\n")) == (1, 1), err
    assert "replay stopped at seq 4: unknown event type 'Unknown" in err, err
    assert not copy.exists()


def test_importing_an_export_from_a_newer_release_says_so(
    run: Run, db: Path, tmp_path: Path
) -> None:
    """What the README says of going down a version: the import stops with what to do."""

    def newer(lines: list[Line]) -> None:
        lines[1]["version"] = 99  # a payload version this release does not read yet

    code, err, copy, _ = import_forged(run, db, tmp_path, newer)
    assert (code, err.count("\n")) == (1, 1), err
    assert "payload version 99 is newer than this tracker reads" in err, err
    assert "upgrade the tracker package" in err, err
    assert not copy.exists()


USAGE_MISTAKES = [
    (["stats", "--by", "week"], "tracker stats: argument --by: invalid choice: 'week'"),
    (["events", "--since", "soon"], "tracker events: argument --since: invalid int value"),
    (["stats", "--since", "1"], "tracker stats: unrecognized arguments: --since 1"),
    (["claude", "validate"], "tracker claude validate: the following arguments are required"),
    (["claude", "validate", "s1", "--deep"], "tracker claude validate: unrecognized arguments"),
    (["replay", "--until", "1", "--at", "x"], "tracker replay: argument --at: not allowed with"),
    (["frobnicate"], "tracker: argument COMMAND: invalid choice: 'frobnicate'"),
    ([], "tracker: the following arguments are required: COMMAND"),
]


@pytest.mark.parametrize(("argv", "start"), USAGE_MISTAKES, ids=str)
def test_usage_errors_are_one_line_pointing_to_the_help(
    capsys: pytest.CaptureFixture[str], argv: list[str], start: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(start), err
    prog = start.split(":")[0]
    assert err.endswith(f" (see {prog} --help)\n"), err
    assert err.count("\n") == 1, err


# -- help -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[c] for c in sorted(COMMANDS)] + [["claude", "validate"], ["claude", "import"]],
    ids=" ".join,
)
def test_every_command_has_help_with_an_example(
    capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out
    assert f"tracker {' '.join(command)}" in out


def test_a_command_leaves_the_sigint_handler_it_found(run: Run, db: Path) -> None:
    """The CLI listens for Ctrl-C while a command runs; code embedding ``main`` gets its
    own handler back."""

    def mine(signum: int, frame: object) -> None:
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGINT, mine)
    try:
        assert run("stats", "--db", str(db))[0] == 0
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, previous)


def test_version_names_the_package_schema_sqlite_and_python(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    package = metadata.version("agent-session-tracker")
    assert out == (
        f"tracker {package} (schema v{SCHEMA_VERSION}, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()})\n"
    )


def test_python_dash_m_tracker_runs_the_cli(db: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "stats", "--db", str(db), "--json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    assert json.loads(done.stdout)["requests"] == 7


# -- follow across processes -------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "first_lines"),
    [(["--json", "--since", "32"], 0), (["--last", "1"], 3)],  # table: header, rule, row 32
    ids=["json", "table"],
)
def test_events_follow_sees_another_process(db: Path, options: list[str], first_lines: int) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tracker", "events", "--follow", *options, "--db", str(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"},  # it must flush
    ) as follower:
        watchdog = threading.Timer(20, follower.kill)  # a line never shown fails, not hangs
        watchdog.start()
        try:
            assert follower.stdout is not None
            shown = [follower.stdout.readline() for _ in range(first_lines)]  # flushed at once
            assert first_lines == 0 or shown[2].split()[0] == "32"
            time.sleep(1.0)  # the follower is tailing
            anyio.run(_append_one, db)
            line = follower.stdout.readline()
            assert "from-another-process" in (
                line if first_lines else json.loads(line)["request_id"]
            )
        finally:
            watchdog.cancel()
            follower.kill()


async def _append_one(path: Path) -> None:
    async with Tracker.open(path) as t:
        await t.track_request("from-another-process", agent_id="z")


TAMPERING = [
    ("a changed byte", "UPDATE event_log SET at = at + 1 WHERE seq = 7", 7),
    ("a deleted row", "DELETE FROM event_log WHERE seq = 9", 9),
    (
        "two rows reordered",
        "UPDATE event_log SET payload = CASE seq WHEN 11 THEN (SELECT payload FROM event_log "
        "WHERE seq = 12) ELSE (SELECT payload FROM event_log WHERE seq = 11) END "
        "WHERE seq IN (11, 12)",
        11,
    ),
    (
        "an inserted row",
        "INSERT INTO event_log SELECT 33, 'x', type, version, at, request_id, "
        "agent_id, session_id, payload, hash FROM event_log WHERE seq = 32",
        33,
    ),
]


@pytest.mark.parametrize(("what", "sql", "bad_seq"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_verify_names_the_first_tampered_seq(
    run: Run, db: Path, what: str, sql: str, bad_seq: int
) -> None:
    tamper(db, sql)
    code, out, err = run("verify", "--db", str(db))
    assert code == 1
    assert f"first bad seq {bad_seq}" in err
    assert f"BROKEN at seq {bad_seq}" in out
