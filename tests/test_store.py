"""The event store: append/read contract, group commit, hash chain, cancellation, open errors."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

import anyio
import msgspec
import pytest

from tests.helpers import (
    ROOT,
    count_commits,
    event_count,
    rows,
    run_python,
    run_unprivileged,
    tamper,
)
from tracker import db
from tracker.errors import (
    DatabaseNotFound,
    NotATrackerDatabase,
    ReadOnlyDatabase,
    SchemaVersionError,
    StorageError,
)
from tracker.events import KEYS, AgentReset, AnyEvent, RequestTracked, SessionAssigned, StoredEvent
from tracker.schema import SCHEMA_VERSION
from tracker.store import EventStore, Filter, NoProjections

Appender = Callable[[Path, list[AnyEvent]], Awaitable[list[int]]]

CHILD_APPEND = """
import sys, anyio, msgspec
from tracker.events import AnyEvent
from tracker.store import EventStore, NoProjections
async def main():
    events = msgspec.json.decode(sys.stdin.buffer.read(), type=list[AnyEvent])
    async with EventStore.open(sys.argv[1], NoProjections()) as store:
        stored = await store.append(events)
    print(msgspec.json.encode([e.seq for e in stored]).decode())
anyio.run(main)
"""


async def append_here(path: Path, events: list[AnyEvent]) -> list[int]:
    async with EventStore.open(path, NoProjections()) as store:
        return [e.seq for e in await store.append(events)]


async def append_in_child(path: Path, events: list[AnyEvent]) -> list[int]:
    done = await anyio.run_process(
        [sys.executable, "-c", CHILD_APPEND, str(path)], input=msgspec.json.encode(events), cwd=ROOT
    )
    return msgspec.json.decode(done.stdout, type=list[int])


@pytest.fixture(params=[append_here, append_in_child], ids=["file+wal", "second-process"])
def appender(request: pytest.FixtureRequest) -> Appender:
    return request.param  # type: ignore[no-any-return]


def batch(n: int, agent: str = "a1") -> list[AnyEvent]:
    return [RequestTracked(request_id=f"{agent}-r{i}", agent_id=agent) for i in range(n)]


# -- the contract, over both configurations ---------------------------------------


async def test_appended_events_read_back_in_order(db_path: Path, appender: Appender) -> None:
    first = await appender(db_path, batch(3, "a1"))
    second = await appender(db_path, batch(2, "a2"))
    assert first == [1, 2, 3]
    assert second == [4, 5]
    async with EventStore.open(db_path, NoProjections()) as store:
        stored = await store.read(0)
        assert [e.seq for e in stored] == [1, 2, 3, 4, 5]
        assert [e.event for e in stored] == batch(3, "a1") + batch(2, "a2")
        assert [e.agent_id for e in stored] == ["a1"] * 3 + ["a2"] * 2
        assert (await store.verify_chain()).ok


async def test_filters_and_ranges(db_path: Path, appender: Appender) -> None:
    events: list[AnyEvent] = [
        RequestTracked(request_id="r1", agent_id="a1"),
        SessionAssigned(request_id="r1", session_id="s1", agent_id="a1"),
        RequestTracked(request_id="r2", agent_id="a2"),
        AgentReset(agent_id="a1"),
    ]
    await appender(db_path, events)
    async with EventStore.open(db_path, NoProjections()) as store:
        assert [e.seq for e in await store.read(0, where=Filter(agent_id="a1"))] == [1, 2, 4]
        assert [e.seq for e in await store.read(0, where=Filter(request_id="r1"))] == [1, 2]
        assert [e.seq for e in await store.read(0, where=Filter(session_id="s1"))] == [2]
        only = Filter(types=("AgentReset", "SessionAssigned"))
        assert [e.seq for e in await store.read(0, where=only)] == [2, 4]
        assert [e.seq for e in await store.read(1, until=3)] == [2, 3]
        assert [e.seq for e in await store.read(0, limit=2)] == [1, 2]


def spread_events(n: int) -> list[AnyEvent]:
    """``n`` events whose keys recur all over the log (many index buckets)."""
    return [
        SessionAssigned(request_id=f"r{i % 97}", session_id=f"s{i % 31}", agent_id=f"a{i % 7}")
        if i % 3
        else AgentReset(agent_id=f"a{i % 7}")
        for i in range(n)
    ]


KEY_FILTERS = [
    Filter(agent_id="a3"),
    Filter(request_id="r5"),
    Filter(session_id="s30"),
    Filter(agent_id="a1", types=("AgentReset",)),
    Filter(agent_id="a2", session_id="s4"),
]


SPANS = ((0, None), (4000, None), (100, 9000), (5000, 5000))


def matching(events: list[StoredEvent], where: Filter, since: int, until: int | None) -> list[int]:
    """The seqs of ``events`` that ``where`` selects in ``since < seq <= until``, by a scan."""
    return [
        e.seq
        for e in events
        if since < e.seq <= (until or events[-1].seq)
        and all(getattr(where, k) in (None, getattr(e, k)) for k in KEYS)
        and (not where.types or e.type in where.types)
    ]


@pytest.mark.parametrize("where", KEY_FILTERS, ids=repr)
async def test_key_filters_over_many_buckets_match_a_scan(db_path: Path, where: Filter) -> None:
    n = 3 * 4096 + 500  # four buckets of the key indexes
    log = spread_events(n)
    async with EventStore.open(db_path, NoProjections()) as store:
        for start in range(0, n, 2000):
            await store.append(log[start : start + 2000])
        everything = await store.read(0, limit=n)
        buckets_seen: set[int] = set()
        for since, until in SPANS:
            expected = matching(everything, where, since, until)
            got, last = [], since
            while page := await store.read(last, until=until, where=where, limit=100):
                got += [e.seq for e in page]
                last = page[-1].seq
            assert got == expected, (since, until)
            buckets_seen.update(seq >> 12 for seq in got)
        assert len(buckets_seen) == 4  # the reads crossed every bucket boundary


@pytest.mark.parametrize("where", [*KEY_FILTERS, Filter(), Filter(types=("AgentReset",))], ids=repr)
async def test_the_last_n_and_the_count_match_a_scan(db_path: Path, where: Filter) -> None:
    n = 3 * 4096 + 500
    async with EventStore.open(db_path, NoProjections()) as store:
        await store.append(spread_events(n))
        everything = await store.read(0, limit=n)
        for since, until in SPANS:
            expected = matching(everything, where, since, until)
            count_sql, params = where.select_count(since, until)
            assert await store.read_sql(lambda r: r[0][0], count_sql, params) == len(expected)
            for last in (0, 1, 7, max(0, len(expected) - 1), len(expected), n):
                start = await store.start_of_last(last, since, until=until, where=where)
                got = [e.seq for e in await store.read(start, until=until, where=where, limit=n)]
                assert got == expected[max(0, len(expected) - last) :], (since, until, last)


@pytest.mark.parametrize("where", KEY_FILTERS, ids=repr)
def test_key_filters_seek_their_index_without_sorting(db_path: Path, where: Filter) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        db.create_schema(conn)
        plans = [
            " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in (
                where.select(10, 9000, 100),
                where.select_from_end(10, 9000, 5),
                where.select_count(10, 9000),
            )
        ]
    for plan in plans:
        assert "SEARCH event_log USING " in plan, plan
        assert "INDEX events_by_" in plan, plan
        assert "(<expr>=? AND" in plan, plan  # a seek on bucket and key, not a range scan
        assert "TEMP B-TREE" not in plan, plan


def wal_pages_by_owner(path: Path) -> dict[str, int]:
    """How many pages the WAL holds of each table and index (frame headers, then dbstat)."""
    wal = Path(f"{path}-wal").read_bytes()
    page_size = int.from_bytes(wal[8:12], "big")
    frames = range(32, len(wal) - 24 - page_size + 1, 24 + page_size)
    pages = {int.from_bytes(wal[at : at + 4], "big") for at in frames}
    owners = dict(rows(path, "SELECT pageno, name FROM dbstat"))
    counted: dict[str, int] = {}
    for page in pages:
        counted[owners[page]] = counted.get(owners[page], 0) + 1
    return counted


async def test_an_append_rewrites_few_key_index_pages_however_many_keys(db_path: Path) -> None:
    """The README's claim: a commit touches only the current bucket of each key index
    (keyed by the id alone, 200 agents spread over the index were 43 pages of it)."""

    def keyed(first: int, count: int) -> list[AnyEvent]:
        return [
            SessionAssigned(
                request_id=f"r{i}", session_id=f"s{i * 7919 % 5000}", agent_id=f"a{i * 31 % 2000}"
            )
            for i in range(first, first + count)
        ]

    async with EventStore.open(db_path, NoProjections()) as store:
        for start in range(0, 3 * 4096, 2048):
            await store.append(keyed(start, 2048))
        with closing(sqlite3.connect(db_path)) as other:
            assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
        await store.append(keyed(3 * 4096, 200))  # 200 agents, requests and sessions
        pages = wal_pages_by_owner(db_path)
    index_pages = {name: n for name, n in pages.items() if name.startswith("events_by_")}
    assert set(index_pages) == {"events_by_agent", "events_by_request", "events_by_session"}
    assert max(index_pages.values()) <= 8, pages  # keyed by id alone: 43 for the agents


async def test_every_appended_event_is_committed_before_the_call_returns(
    db_path: Path, appender: Appender
) -> None:
    await appender(db_path, batch(4))
    # another connection, no tracker involved, sees them all
    assert event_count(db_path) == 4


# -- group commit ------------------------------------------------------------------


async def test_200_concurrent_appenders_get_gapless_increasing_seqs(db_path: Path) -> None:
    seqs: list[int] = []
    async with EventStore.open(db_path, NoProjections()) as store:

        async def one(i: int) -> None:
            stored = await store.append(batch(2, f"agent{i}"))
            seqs.extend(e.seq for e in stored)
            assert stored[1].seq == stored[0].seq + 1  # a caller's events stay together

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(one, i)
        assert (await store.verify_chain()).ok
    assert sorted(seqs) == list(range(1, 401))
    assert [r[0] for r in rows(db_path, "SELECT seq FROM events ORDER BY seq")] == seqs.__class__(
        range(1, 401)
    )


async def test_concurrent_appends_share_transactions(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with EventStore.open(db_path, NoProjections()) as store:
        commits = count_commits(store, monkeypatch)
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(store.append, batch(1, f"agent{i}"))
    assert event_count(db_path) == 200
    assert commits[0] < 50, f"{commits[0]} transactions for 200 concurrent appends"


async def test_a_cancelled_caller_leaves_no_partial_batch(db_path: Path) -> None:
    async with EventStore.open(db_path, NoProjections()) as store:
        with anyio.move_on_after(0.05):
            async with anyio.create_task_group() as tg:
                for i in range(300):
                    tg.start_soon(store.append, batch(3, f"agent{i}"))
        # the store is still usable after its callers were cancelled
        after = await store.append(batch(1, "after"))
        assert after[0].seq == event_count(db_path)
        assert (await store.verify_chain()).ok
    per_agent = rows(db_path, "SELECT agent_id, count(*) FROM events GROUP BY agent_id")
    assert all(n == 3 for agent, n in per_agent if agent != "after"), per_agent


# -- the log is append-only and tamper-evident ----------------------------------------


@pytest.mark.parametrize("table", ["event_log", "events"])
async def test_update_and_delete_on_events_are_refused_by_the_database(
    db_path: Path, table: str
) -> None:
    await append_here(db_path, batch(2))
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"UPDATE {table} SET agent_id = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute(f"DELETE FROM {table} WHERE seq = 2")
    conn.close()
    assert rows(db_path, "SELECT agent_id FROM events") == [("a1",), ("a1",)]


async def test_the_view_events_refuses_inserts(db_path: Path) -> None:
    await append_here(db_path, batch(2))
    conn = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError, match="INSERT refused"):
        conn.execute("INSERT INTO events SELECT * FROM events")  # the tracker appends
    conn.close()
    assert event_count(db_path) == 2


COLUMNS = ["id", "type", "version", "at", "request_id", "agent_id", "session_id", "payload", "hash"]


@pytest.mark.parametrize("column", COLUMNS)
async def test_one_changed_byte_in_any_column_is_found(db_path: Path, column: str) -> None:
    await append_here(db_path, batch(5))
    (value,) = rows(db_path, f"SELECT {column} FROM event_log WHERE seq = 3")[0]
    tamper(db_path, f"UPDATE event_log SET {column} = ? WHERE seq = 3", (_flip_one_byte(value),))
    async with EventStore.open(db_path, NoProjections()) as store:
        report = await store.verify_chain()
    assert not report.ok
    assert report.first_bad_seq == 3


def _flip_one_byte(value: object) -> object:
    if isinstance(value, int):
        return value + 1
    raw = bytearray(value if isinstance(value, bytes) else str(value).encode())
    raw[-2] ^= 0x01
    return bytes(raw) if isinstance(value, bytes) else raw.decode(errors="replace")


async def test_a_deleted_row_is_found(db_path: Path) -> None:
    await append_here(db_path, batch(5))
    tamper(db_path, "DELETE FROM event_log WHERE seq = 2")
    async with EventStore.open(db_path, NoProjections()) as store:
        report = await store.verify_chain()
    assert (report.ok, report.first_bad_seq) == (False, 2)
    assert "missing" in (report.problem or "")


# -- opening --------------------------------------------------------------------------


async def test_a_new_file_is_private_to_its_owner(db_path: Path) -> None:
    async with EventStore.open(db_path, NoProjections()) as store:
        await store.append(batch(1))
        for suffix in ("", "-wal", "-shm"):  # SQLite gives its files the database's mode
            assert os.stat(f"{db_path}{suffix}").st_mode & 0o777 == 0o600, suffix


async def test_another_schema_version_says_what_to_do(db_path: Path) -> None:
    await append_here(db_path, batch(1))
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    newer = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match=rf"schema version {newer}.*export"):
        await append_here(db_path, batch(1))


async def test_a_file_that_is_not_sqlite(db_path: Path) -> None:
    db_path.write_bytes(b"this is a text file, not a database\n" * 100)
    with pytest.raises(NotATrackerDatabase):
        await append_here(db_path, batch(1))
    assert db_path.read_bytes().startswith(b"this is a text file")


async def test_a_sqlite_file_of_another_application(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE notes (x)")
    conn.close()
    with pytest.raises(NotATrackerDatabase, match="not a tracker database"):
        await append_here(db_path, batch(1))


async def test_a_missing_file_is_not_created_unless_asked(db_path: Path) -> None:
    with pytest.raises(DatabaseNotFound):
        async with EventStore.open(db_path, NoProjections(), create=False):
            pass
    assert not db_path.exists()


async def test_an_empty_file_is_not_made_a_database_unless_asked(db_path: Path) -> None:
    db_path.touch()
    with pytest.raises(NotATrackerDatabase):
        async with EventStore.open(db_path, NoProjections(), create=False):
            pass
    assert db_path.stat().st_size == 0


READ_ONLY_CHILD = """
import sys, anyio
from tracker.errors import ReadOnlyDatabase
from tracker.events import RequestTracked
from tracker.store import EventStore, NoProjections
async def main():
    try:
        async with EventStore.open(sys.argv[1], NoProjections()) as store:
            await store.append([RequestTracked(request_id="x")])
    except ReadOnlyDatabase as exc:
        print("ReadOnlyDatabase:", exc)
anyio.run(main)
"""


async def test_a_read_only_file_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "t.db"
    await append_here(path, batch(1))
    for f in folder.iterdir():  # the folder too: SQLite cannot create the WAL files
        f.chmod(0o444)
    folder.chmod(0o555)
    tmp_path.chmod(0o755)
    done = run_unprivileged(READ_ONLY_CHILD, str(path))
    assert "ReadOnlyDatabase" in done.stdout, done.stderr
    folder.chmod(0o755)
    assert event_count(path) == 1


async def test_a_database_in_a_missing_folder_is_not_called_read_only(tmp_path: Path) -> None:
    for path in (tmp_path / "no" / "t.db", tmp_path / "file.txt" / "t.db"):
        (tmp_path / "file.txt").touch()
        with pytest.raises(StorageError, match=r"cannot create database .*t\.db': No") as caught:
            async with EventStore.open(path, NoProjections()):
                pass
        assert not isinstance(caught.value, ReadOnlyDatabase)
    with pytest.raises(StorageError, match="cannot create database") as caught:
        db.new_database(tmp_path / "no" / "t.db", "replay").__enter__()
    assert not isinstance(caught.value, ReadOnlyDatabase)


def test_errors_of_another_process_are_tracker_errors(db_path: Path) -> None:
    done = run_python(
        "import anyio, sys\n"
        "from tracker.store import EventStore, NoProjections\n"
        "async def main():\n"
        "    async with EventStore.open(sys.argv[1], NoProjections(), create=False): pass\n"
        "anyio.run(main)\n",
        str(db_path),
    )
    assert "DatabaseNotFound" in done.stderr


async def test_event_ids_are_unique_and_time_ordered(db_path: Path) -> None:
    async with EventStore.open(db_path, NoProjections()) as store, anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(store.append, batch(20, f"agent{i}"))
    stored = [i for (i,) in rows(db_path, "SELECT id FROM event_log ORDER BY seq")]
    assert all(isinstance(i, bytes) and len(i) == 16 for i in stored)  # 16 bytes, not 32 digits
    ids = [i.hex() for i in stored]
    assert len(set(ids)) == len(ids) == 2000
    assert all(i[12] == "7" for i in ids)  # UUIDv7 layout
    async with EventStore.open(db_path, NoProjections()) as store:
        assert [e.id for e in await store.read(limit=2000)] == ids  # the API shows hex
    stamps = [int(i[:12], 16) for i in ids]
    assert stamps == sorted(stamps)  # the millisecond prefix never goes back
