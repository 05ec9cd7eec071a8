"""Hostile and bad input: a clear typed error, nothing changed; damaged files; a full disk."""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import EVERY_CALL, ROOT, event_count, first, public_calls, rows
from tracker import InvalidInput, StorageError, Tracker, TrackerError, codec
from tracker.cli import main
from tracker.errors import IntegrityError, SchemaVersionError

Call = Callable[[Tracker], Awaitable[Any]]


def deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"d": value}
    return value


BAD_CALLS: list[tuple[str, Call, str]] = [
    ("empty id", lambda t: t.track_request(""), "must not be empty"),
    ("blank id", lambda t: t.track_request("   "), "must not be empty"),
    ("1 MB id", lambda t: t.track_request("r" * 1_000_000), "at most 512"),
    ("newline in id", lambda t: t.track_request("r\n1"), "control"),
    ("NUL in agent", lambda t: t.track_request("r", agent_id="a\x00"), "control"),
    ("surrogate id", lambda t: t.track_request("r\udc80"), "surrogate"),
    ("int id", lambda t: t.track_request(7), "must be a string"),  # type: ignore[arg-type]
    ("bytes id", lambda t: t.track_request(b"r1"), "must be a string"),  # type: ignore[arg-type]
    (
        "list session",
        lambda t: t.track_request("r", session_id=["s"]),  # type: ignore[arg-type]
        "must be a string",
    ),
    ("10 MB prompt", lambda t: t.track_request("r", prompt="x" * 10_000_000), "at most"),
    ("surrogate prompt", lambda t: t.track_request("r", prompt="hi \ud83d"), "surrogates"),
    (
        "bytes prompt",
        lambda t: t.track_request("r", prompt=b"hi"),  # type: ignore[arg-type]
        "must be a string",
    ),
    (
        "list metadata",
        lambda t: t.track_request("r", metadata=[1]),  # type: ignore[arg-type]
        "JSON object",
    ),
    (
        "str metadata",
        lambda t: t.track_request("r", metadata="{}"),  # type: ignore[arg-type]
        "JSON object",
    ),
    (
        "int keys",
        lambda t: t.track_request("r", metadata={1: 2}),  # type: ignore[dict-item]
        "keys must be strings",
    ),
    ("10,000 deep", lambda t: t.track_request("r", metadata=deep(10_000)), "deeper"),
    ("object value", lambda t: t.track_request("r", metadata={"o": object()}), "JSON"),
    ("2 MB metadata", lambda t: t.track_request("r", metadata={"x": "y" * 2_000_000}), "at most"),
    (
        "surrogate in metadata",
        lambda t: t.track_request("r", metadata={"k": "\udc80"}),
        "not JSON-serialisable|UTF-8",
    ),
    ("negative ttl", lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=-1), "ttl"),
    ("zero ttl", lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=0), "ttl"),
    ("huge ttl", lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=1e12), "ttl"),
    ("nan ttl", lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=math.nan), "ttl"),
    ("inf wait", lambda t: t.acquire_lock(agent_id="a", holder="h", wait=math.inf), "wait"),
    ("bool ttl", lambda t: t.acquire_lock(agent_id="a", holder="h", ttl=True), "ttl"),
    ("negative age", lambda t: t.cleanup(idle_for=-5), "idle_for"),
    ("inf cost", lambda t: t.complete_request("r", cost_usd=math.inf), "cost_usd"),
    (
        "str usage",
        lambda t: t.complete_request("r", usage="lots"),  # type: ignore[arg-type]
        "usage",
    ),
    (
        "float tokens",
        lambda t: t.complete_request("r", usage={"input_tokens": 1.5}),  # type: ignore[dict-item]
        "whole number from 0 to",
    ),
    ("bad content", lambda t: t.stats(agent_id=5), "must be a string"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("name", "call", "needle"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_bad_input_is_refused_and_changes_nothing(
    tracker: Tracker, db_path: Path, name: str, call: Call, needle: str
) -> None:
    await tracker.track_request("existing", agent_id="a")
    before = event_count(db_path)
    with pytest.raises(InvalidInput, match=needle):
        await call(tracker)
    assert event_count(db_path) == before


async def test_a_10_mb_prompt_is_fine_when_not_kept(db_path: Path) -> None:
    async with Tracker.open(db_path, content="none") as t:
        with pytest.raises(InvalidInput):  # still bounded: the digest reads it all
            await t.track_request("r", prompt="x" * 10_000_000)
        await t.track_request("r", prompt="x" * 3_000_000)
    assert os.path.getsize(db_path) < 1_000_000


async def test_times_far_in_the_future_work(db_path: Path, tmp_path: Path) -> None:

    from tracker import ManualClock

    clock = ManualClock(datetime(2999, 12, 31, tzinfo=UTC))
    async with Tracker.open(db_path, clock=clock) as t:
        await t.track_request("r", agent_id="a", lock=True, lock_ttl=3600)
        clock.set(datetime(2026, 1, 1, tzinfo=UTC))
        await t.track_request("r2", agent_id="b")
        times = [e.at async for e in t.events()]
        assert times[-1].year == 2999  # the log never goes back in time
        assert await t.replay_into(tmp_path / "future.db", at=datetime(3000, 1, 1, tzinfo=UTC))


# -- damaged files ---------------------------------------------------------------


async def _filled(path: Path, requests: int = 300) -> None:
    async with Tracker.open(path) as t:
        for i in range(requests):
            await t.track_request(f"r{i}", agent_id=f"a{i % 7}", prompt="p" * 500)


def test_a_truncated_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.db"
    anyio.run(_filled, path)
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    code = main(["verify", "--db", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("tracker: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_damage_inside_the_log_is_a_clear_error_from_every_full_scan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.db"
    anyio.run(_filled, path)
    with contextlib.closing(
        sqlite3.connect(path)
    ) as conn:  # a middle page: opening and stats skip it
        leaves = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'event_log' AND pagetype = 'leaf' "
            "ORDER BY pageno"
        ).fetchall()
        (page,) = leaves[len(leaves) // 2]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    with path.open("r+b") as f:
        f.seek((page - 1) * page_size)
        f.write(b"\xff" * page_size)

    async def check(call: Callable[[Tracker], Awaitable[object]]) -> None:
        async with Tracker.open(path) as t:
            with pytest.raises(IntegrityError, match="malformed"):
                await call(t)

    for call in (Tracker.verify, Tracker.rebuild):  # the API raises a TrackerError, too
        anyio.run(check, call)
    commands = [["verify"], ["replay"], ["export", "--out", str(tmp_path / "out.jsonl")]]
    for command in commands:  # replay: rebuild the projections
        code = main([*command, "--db", str(path)])
        err = capsys.readouterr().err
        assert code == 1, command
        assert err.startswith("tracker: "), err
        assert "malformed" in err, err
        assert err.count("\n") == 1, err


def test_a_database_with_a_garbled_header_is_not_a_tracker_database(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    anyio.run(_filled, path, 10)
    with path.open("r+b") as f:
        f.write(b"garbage garbage!")

    async def open_it() -> None:
        async with Tracker.open(path):
            pass

    with pytest.raises(StorageError):
        anyio.run(open_it)


FULL_DISK_CHILD = """
import resource, signal, sys, anyio
from tracker import Tracker, DiskFull, TrackerError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing us
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        for i in range(100_000):
            try:
                await t.track_request(f"f{i}", agent_id="a", prompt="x" * 20_000)
            except DiskFull as exc:
                print("full", exc, flush=True)
                await t.get_request("f0")  # still usable for reads
                return
            print("ack", f"f{i}", flush=True)
anyio.run(main)
"""


def test_a_full_disk_is_a_typed_error_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "full.db"
    anyio.run(_filled, path, 1)
    limit = 3_000_000
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert any(line.startswith("full") for line in lines), (done.stdout[-500:], done.stderr)
    acknowledged = {line.split()[1] for line in lines if line.startswith("ack")}
    assert len(acknowledged) > 10

    async def check() -> None:
        async with Tracker.open(path) as t:
            assert (await t.verify()).ok
            for rid in acknowledged:
                assert await t.get_request(rid) is not None

    anyio.run(check)
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


FULL_MAINTENANCE_CHILD = """
import resource, signal, sys, anyio
from tracker import Tracker
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
async def main():
    async with Tracker.open(sys.argv[1]) as t:
        limit = int(sys.argv[2])  # room for the log's next writes, not for a scratch copy
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        for name, call in (
            ("rebuild", t.rebuild),
            ("verify", t.verify),
            ("replay_into", lambda: t.replay_into(sys.argv[3])),
            ("backup", lambda: t.backup(sys.argv[4])),
        ):
            try:
                await call()
                print(name, "done")
            except Exception as exc:
                print(name, type(exc).__name__, exc)
anyio.run(main)
"""


def test_maintenance_on_a_full_disk_says_so_and_leaves_nothing(tmp_path: Path) -> None:
    """SQLite ends the transaction itself when a write fails: the error must be the
    write's (DiskFull), not the failed ROLLBACK's, and the scratch files must go."""
    path, target, copy = tmp_path / "t.db", tmp_path / "past.db", tmp_path / "copy.db"
    anyio.run(_filled, path, 3000)
    done = subprocess.run(
        [sys.executable, "-c", FULL_MAINTENANCE_CHILD, str(path), "200000", str(target), str(copy)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    outcomes = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert outcomes.pop("verify") in ("done", outcomes["rebuild"])  # it may fit in its cache
    full = "disk I/O error (a write failed: is the disk, or the file size limit, full?)"
    assert outcomes == {  # each names the file it could not write
        "rebuild": f"DiskFull {str(path)!r}: {full}",  # its scratch is beside the database
        "replay_into": f"DiskFull {str(target)!r}: {full}",
        "backup": f"DiskFull {str(copy)!r}: {full}",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.db"]  # no scratch, no target
    anyio.run(_verified, path)


async def _verified(path: Path) -> None:
    async with Tracker.open(path) as t:
        assert (await t.verify()).ok


# -- fuzzing (bounded) ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    type_=st.sampled_from(["RequestTracked", "SessionAssigned", "LockAcquired", "Nope"]),
    version=st.integers(-2, 4),
    payload=st.text(max_size=200) | st.just("{}"),
    keys=st.tuples(*[st.none() | st.text(max_size=20)] * 3),
)
def test_the_codec_never_fails_untyped(
    type_: str, version: int, payload: str, keys: codec.Keys
) -> None:
    with contextlib.suppress(IntegrityError, SchemaVersionError):
        codec.decode(type_, version, payload, keys)


# Every number the API takes, each given anything a caller might pass: huge integers
# (beyond SQLite's 64 bits), infinities, NaN, bools, None, strings.
NumberCall = Callable[[Tracker, str, Any], Awaitable[Any]]
NUMBER_ARGUMENTS: dict[str, NumberCall] = {
    "usage": lambda t, r, n: t.complete_request(r, usage={"input_tokens": n}),
    "cost_usd": lambda t, r, n: t.complete_request(r, cost_usd=n),
    "duration_ms": lambda t, r, n: t.complete_request(r, duration_ms=n),
    "failed usage": lambda t, r, n: t.fail_request(r, error="e", usage={"output_tokens": n}),
    "ttl": lambda t, r, n: t.acquire_lock(agent_id=f"lock-{r}", holder=r, ttl=n),
    "wait": lambda t, r, n: t.acquire_lock(agent_id=f"lock-{r}", holder=r, wait=n),
    "lock_ttl": lambda t, r, n: t.track_request(f"{r}-2", agent_id=r, lock=True, lock_ttl=n),
    "since": lambda t, r, n: first(t.events(since=n)),
    "until": lambda t, r, n: first(t.events(until=n)),
    "last": lambda t, r, n: first(t.events(last=n)),
    "limit": lambda t, r, n: t.in_flight(limit=n),
    "idle_for": lambda t, r, n: t.cleanup(idle_for=n),
    "stale_after": lambda t, r, n: t.cleanup(stale_after=n),
    "max_sessions": lambda t, r, n: t.cleanup(max_sessions=n, dry_run=True),
}
NUMBER = (
    st.integers()
    | st.integers(min_value=2**40)
    | st.integers(max_value=-(2**40))
    | st.floats()
    | st.booleans()
    | st.none()
    | st.sampled_from(["7d", "1e400", "-1", "99999999999999d"])
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(argument=st.sampled_from(sorted(NUMBER_ARGUMENTS)), number=NUMBER)
def test_any_number_is_taken_or_a_typed_error(db_path: Path, argument: str, number: Any) -> None:
    """Never OverflowError or TypeError: a figure that cannot be stored, or added up, is
    refused up front, and the log is unchanged."""

    async def attempt() -> None:
        async with Tracker.open(db_path) as t:
            rid = f"r{event_count(db_path) if db_path.exists() else 0}"
            await t.track_request(rid, agent_id=rid)
            await t.update_request_session(rid, f"s-{rid}")
            before = event_count(db_path)
            try:
                await NUMBER_ARGUMENTS[argument](t, rid, number)
            except TrackerError:
                assert event_count(db_path) == before
            assert (await t.verify()).ok

    anyio.run(attempt)


WEIRD = [
    None, 5, -1, 1.5, math.nan, "", " ", "x" * 600, "a\x00", b"x", [], {}, ["RequestTracked"],
    {"a": 1}, object(), True, datetime(2020, 1, 1),
]  # fmt: skip


async def test_every_argument_given_anything_is_taken_or_a_typed_error(db_path: Path) -> None:
    """Each argument of each call in turn given each of WEIRD: a TrackerError or a result,
    never a TypeError or an AttributeError, and the log still verifies."""
    taken, refused = 0, 0
    async with Tracker.open(db_path) as t:
        await t.track_request("r0", agent_id="a")
        await t.update_request_session("r0", "S0")
        for name, (call, given) in EVERY_CALL.items():
            assert set(given) <= set(inspect.signature(getattr(Tracker, name)).parameters)
            for argument, weird in itertools.product(given, WEIRD):
                try:
                    with anyio.fail_after(5):  # events(follow=True) must not wait here
                        await call(t, **{**given, argument: weird})
                    taken += 1
                except TrackerError:
                    refused += 1
        assert (await t.verify()).ok
    assert taken > 30
    assert refused > 500


def test_the_weird_arguments_cover_every_call() -> None:
    # these take a path or nothing to fuzz
    assert public_calls() - set(EVERY_CALL) == {"verify", "rebuild", "replay_into", "backup"}


ARG = st.sampled_from(
    [
        "events",
        "audit",
        "chain",
        "stats",
        "replay",
        "verify",
        "cleanup",
        "export",
        "query",
        "health",
        "--db",
        "--json",
        "--since",
        "-5",
        "--agent",
        "--by",
        "week",
        "day",
        "--until",
        "--at",
        "x",
        "request",
        "--idle",
        "1h",
        "--stale",
        "soon",
        "--dry-run",
        "--follow",
        "--tree",
        "--into",
        "",
        "\x00",
        # odd values from a brute-force run of the CLI (not import, nor "-": stdin)
        "--out",
        "--limit",
        "--last",
        "--type",
        "--session",
        "--request",
        "x" * 300,  # a file name longer than the system takes
        "1e400",
        "99999999999999999999999",
        "é€😀",
        "2026-13-45",
    ]
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(argv=st.lists(ARG, max_size=6))
def test_the_cli_parser_never_fails_untyped(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "does-not-exist.db")
    argv = [*argv, "--db", missing] if "--follow" not in argv else ["--help"]
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse: --help or a usage error
        code = 0 if exit_.code == 0 else 2 if exit_.code == 2 else -1
    assert code in (0, 1, 2), argv
    err = capsys.readouterr().err
    if code:  # a mistake, of use (2) or of value (1): one line
        assert err.count("\n") == 1, (argv, err)
    assert not Path(missing).exists()  # nothing creates a database but init and import
