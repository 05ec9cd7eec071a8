"""The stored form of the envelope: codes and microseconds in event_log, text in the view
events, and the SQL of the upgrade from schema 4 agreeing with the tracker's own."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import rows
from tests.test_codec import SAMPLES
from tracker import db, logrow
from tracker.clock import iso
from tracker.events import BY_TAG, AnyEvent
from tracker.schema import STORED_AT_SQL, STORED_TYPE_SQL, UPGRADES_AFTER_SCHEMA
from tracker.store import EventStore, NoProjections

LAST_MICROSECOND = 253402300799999999  # 9999-12-31T23:59:59.999999Z


def test_every_event_type_has_a_code_of_its_own() -> None:
    # the view events in schema.sql pins each code: the test below reads them through it
    assert sorted(logrow.TYPE_CODES.values()) == list(range(1, len(BY_TAG) + 1))


async def test_the_view_shows_every_type_and_time_as_the_api_does(db_path: Path) -> None:
    async with EventStore.open(db_path, NoProjections()) as store:
        stored = await store.append(cast(list[AnyEvent], SAMPLES))
    shown = [(e.seq, e.id, e.type, e.version, iso(e.at)) for e in stored]
    assert rows(db_path, "SELECT seq, id, type, version, at FROM events ORDER BY seq") == shown
    kept = rows(db_path, "SELECT type, at FROM event_log ORDER BY seq")
    assert [t for t, _ in kept] == [logrow.TYPE_CODES[e.type] for e in stored]
    assert all(isinstance(at, int) for _, at in kept)


@given(st.lists(st.integers(0, LAST_MICROSECOND), min_size=1, max_size=50))
def test_a_time_in_microseconds_reads_back_the_same_in_python_and_in_the_view(
    micros: list[int],
) -> None:
    conn = sqlite3.connect(":memory:")
    db.create_schema(conn)
    conn.executemany(
        "INSERT INTO event_log (seq, id, type, version, at, payload, hash) "
        "VALUES (?, x'00', 1, 1, ?, '{}', x'00')",
        list(enumerate(micros, start=1)),
    )
    shown = [at for (at,) in conn.execute("SELECT at FROM events ORDER BY seq")]
    assert shown == [logrow.at_text(m) for m in micros]
    assert [logrow.stored_at(text) for text in shown] == micros
    conn.close()


def test_a_time_the_tracker_writes_is_stored_as_microseconds() -> None:
    now = datetime(2026, 11, 21, 7, 21, 31, 123456, tzinfo=UTC)
    assert logrow.stored_at(iso(now)) == 1795245691123456
    assert logrow.stored_at(iso(now.replace(microsecond=0))) == 1795245691000000


ODD_TIMES = [
    "2026-11-21T07:21:31Z",  # no microseconds
    "2026-11-21T07:21:31.123Z",  # milliseconds
    "2026-11-21 07:21:31.123456Z",
    "2026-11-21T07:21:31.123456+00:00",
    "2026-02-30T07:21:31.123456Z",  # no such day
    "2026-13-01T07:21:31.123456Z",
    "1969-12-31T23:59:59.999999Z",  # before the epoch
    "not a time",
    "",
]


@pytest.mark.parametrize("text", ODD_TIMES)
def test_a_time_in_another_form_is_stored_as_its_text(text: str) -> None:
    assert logrow.stored_at(text) == text
    assert logrow.at_text(text) == text


@pytest.mark.parametrize(
    "text", [*ODD_TIMES, "2026-11-21T07:21:31.123456Z", "1970-01-01T00:00:00.000000Z"]
)
def test_the_upgrade_stores_a_time_as_the_tracker_does(text: str) -> None:
    assert STORED_AT_SQL in UPGRADES_AFTER_SCHEMA[4][0]
    assert _in_sql(STORED_AT_SQL, "at", text) == logrow.stored_at(text)


@pytest.mark.parametrize("name", [*BY_TAG, "SomethingNew"])
def test_the_upgrade_stores_a_type_as_the_tracker_does(name: str) -> None:
    assert STORED_TYPE_SQL in UPGRADES_AFTER_SCHEMA[4][0]
    assert _in_sql(STORED_TYPE_SQL, "type", name) == logrow.stored_type(name)


def _in_sql(expression: str, column: str, value: str) -> object:
    conn = sqlite3.connect(":memory:")
    try:
        return conn.execute(
            f"SELECT {expression} FROM (SELECT ? AS {column})", (value,)
        ).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("text", "stored"),
    [("0123456789abcdef0123456789abcdef", bytes.fromhex("0123456789abcdef0123456789abcdef"))]
    + [(text, text) for text in ("evt-1", "0123456789ABCDEF0123456789ABCDEF", "01234")],
)
def test_an_event_id_is_stored_as_16_bytes_only_when_it_reads_back_the_same(
    text: str, stored: str | bytes
) -> None:
    assert logrow.stored_id(text) == stored
    assert logrow.id_text(stored) == text


def test_a_type_this_release_does_not_know_is_stored_as_its_name() -> None:
    assert logrow.stored_type("SomethingNew") == "SomethingNew"
    assert logrow.type_text("SomethingNew") == "SomethingNew"
    assert logrow.type_text(logrow.stored_type("RequestFailed")) == "RequestFailed"
