"""The event catalogue and its codec: round trips, upcasting, bad payloads."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest

from tracker import codec
from tracker.errors import IntegrityError, SchemaVersionError
from tracker.events import (
    BY_TAG,
    EVENT_TYPES,
    KEYS,
    AgentReset,
    Event,
    LockAcquired,
    LockEvent,
    LockExpired,
    LockReleased,
    LockRenewed,
    RequestCompleted,
    RequestFailed,
    RequestTracked,
    SessionAssigned,
    SessionDeleted,
    SessionExpired,
    SessionMetadataUpdated,
    Usage,
    tag_of,
)

NO_KEYS: codec.Keys = (None, None, None)
WHEN = datetime(2026, 11, 21, 7, 30, 0, 123456, tzinfo=UTC)
USAGE = Usage(input_tokens=1200, output_tokens=300, cache_read_tokens=5000, cache_write_tokens=800)

SAMPLES: list[Event] = [
    RequestTracked(
        request_id="r1",
        agent_id="a1",
        resumed_session_id="s0",
        prompt="hi",
        prompt_chars=2,
        metadata={"model": "opus", "n": [1, 2]},
        owner="o1",
        digest="abcd",
    ),
    SessionAssigned(request_id="r1", session_id="s1", agent_id="a1", parent_session_id="s0"),
    RequestCompleted(
        request_id="r1",
        agent_id="a1",
        session_id="s1",
        response="hello",
        response_chars=5,
        usage=USAGE,
        cost_usd=0.0042,
        duration_ms=1500,
        metadata={"turns": 2},
        digest="ef01",
    ),
    RequestFailed(
        request_id="r2",
        error="timed out",
        kind="timeout",
        agent_id="a1",
        session_id=None,
        usage=USAGE,
        cost_usd=0.001,
        duration_ms=30000,
    ),
    LockAcquired(
        scope="agent",
        target="a1",
        holder="r1",
        expires_at=WHEN,
        agent_id="a1",
        request_id="r1",
        waited_ms=12,
    ),
    LockRenewed(scope="agent", target="a1", holder="r1", token=5, expires_at=WHEN, agent_id="a1"),
    LockReleased(
        scope="session", target="s1", holder="r1", token=5, session_id="s1", request_id="r1"
    ),
    LockExpired(scope="agent", target="a1", holder="r1", token=5, agent_id="a1"),
    SessionMetadataUpdated(session_id="s1", metadata={"mcp": ["fs"]}, agent_id="a1"),
    SessionExpired(session_id="s1", reason="idle", agent_id="a1"),
    SessionDeleted(session_id="s1", agent_id="a1", reason="gdpr"),
    AgentReset(agent_id="a1", reason="user asked"),
]


def stored(event: Event) -> bytes:
    """The payload the log stores for ``event``."""
    return codec.encode(event, codec.keys_of(event))


def test_samples_cover_every_event_type() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)
    assert set(BY_TAG) == {tag_of(e) for e in SAMPLES}


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_event_round_trips(event: Event) -> None:
    payload = stored(event).decode()
    decoded = codec.decode(tag_of(event), type(event).VERSION, payload, codec.keys_of(event))
    assert decoded == event
    assert type(decoded) is type(event)
    assert not {"type", *KEYS} & set(msgspec.json.decode(payload))  # columns hold them


@pytest.mark.parametrize("key", ['r"1', "a\\b", 'x","error":"forged', "é-💥", "s s", "t\tab"])
def test_keys_that_need_escaping_round_trip(key: str) -> None:
    event = SessionAssigned(request_id=key, session_id=key + "s", agent_id=key + "a")
    payload = stored(event).decode()
    assert codec.decode("SessionAssigned", 1, payload, codec.keys_of(event)) == event
    lock = LockReleased(
        scope="agent", target=key + "a", holder=key, token=1, agent_id=key + "a", request_id=key
    )
    payload = stored(lock).decode()
    assert payload == '{"token":1}'
    assert codec.decode("LockReleased", 1, payload, codec.keys_of(lock)) == lock


def test_a_payload_written_before_schema_3_is_decoded_as_stored() -> None:
    v2 = '{"type":"SessionAssigned","request_id":"r1","session_id":"s1","agent_id":"a1"}'
    event = codec.decode("SessionAssigned", 1, v2, ("r1", "a1", "s1"))
    assert event == SessionAssigned(request_id="r1", session_id="s1", agent_id="a1")
    # Not spliced with its key columns: that would repeat every key, and msgspec does not
    # promise to accept duplicate keys (it takes the last today, so decode alone cannot tell).
    assert codec._whole("SessionAssigned", v2, ("r1", "a1", "s1")) == v2


def test_a_missing_required_key_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError, match="request_id"):
        codec.decode("SessionAssigned", 1, "{}", (None, "a1", "s1"))


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: type(e).__name__)
def test_events_are_frozen(event: Event) -> None:
    with pytest.raises(AttributeError):
        setattr(event, event.__struct_fields__[0], "other")


def test_a_version_1_request_tracked_payload_is_upcast() -> None:
    # Hand-written as the seed prototype stored it: the resumed session was "session_id".
    v1 = '{"type":"RequestTracked","request_id":"r1","agent_id":"a1","session_id":"s0"}'
    event = codec.decode("RequestTracked", 1, v1, ("r1", "a1", "s0"))
    assert event == RequestTracked(request_id="r1", agent_id="a1", resumed_session_id="s0")


def test_a_version_1_payload_without_the_renamed_field_still_decodes() -> None:
    event = codec.decode(
        "RequestTracked", 1, '{"type":"RequestTracked","request_id":"r9"}', NO_KEYS
    )
    assert event == RequestTracked(request_id="r9")


def test_a_payload_from_a_newer_release_is_a_schema_version_error() -> None:
    with pytest.raises(SchemaVersionError, match="upgrade"):
        codec.decode("RequestTracked", 99, "{}", ("r1", None, None))


@pytest.mark.parametrize(
    ("type_", "payload"),
    [
        ("NoSuchEvent", "{}"),
        ("RequestTracked", "not json"),
        ("RequestTracked", "{"),
        *(("RequestTracked", not_an_object) for not_an_object in ("0", "[]", '"text"', "null")),
        ("RequestTracked", '{"type":"RequestTracked"}'),
        ("SessionAssigned", '{"type":"SessionAssigned","request_id":1,"session_id":"s"}'),
        ("SessionAssigned", '{"parent_session_id":2}'),
    ],
)
def test_undecodable_payloads_are_integrity_errors(type_: str, payload: str) -> None:
    version: Any = BY_TAG[type_].VERSION if type_ in BY_TAG else 1
    with pytest.raises(IntegrityError):
        codec.decode(type_, version, payload, ("r1", None, "s1"))


def test_defaults_tag_and_keys_are_left_out_to_keep_the_log_small() -> None:
    assert stored(SessionAssigned(request_id="r1", session_id="s1")) == b"{}"
    assigned = SessionAssigned(request_id="r1", session_id="s1", parent_session_id="s0")
    assert stored(assigned) == b'{"parent_session_id":"s0"}'
    assert stored(AgentReset(agent_id="a1", reason="x")) == b'{"reason":"x"}'


def test_a_lock_event_leaves_out_what_its_keys_say() -> None:
    taken = LockAcquired(
        scope="agent", target="a1", holder="r1", expires_at=WHEN, agent_id="a1", request_id="r1"
    )
    assert stored(taken) == b'{"expires_at":"2026-11-21T07:30:00.123456Z"}'
    released = LockReleased(
        scope="session", target="s1", holder="r1", token=5, session_id="s1", request_id="r1"
    )
    assert stored(released) == b'{"token":5}'
    renewed = LockRenewed(scope="agent", target="a1", holder="r1", token=5, expires_at=WHEN)
    assert b'"holder":"r1"' in stored(renewed)  # no request_id column to say it


UNDERIVABLE = [  # fields the key columns do not give: kept, and they win at decode
    LockAcquired(scope="agent", target="a1", holder="h", expires_at=WHEN, agent_id="a2"),
    LockReleased(scope="agent", target="a1", holder="h", token=1, agent_id="a1", session_id="s1"),
    LockExpired(scope="session", target="s1", holder="r1", token=1, agent_id="a1"),
    LockReleased(scope="agent", target="a1", holder='x","scope":"session', token=1, agent_id="a1"),
    LockAcquired(
        scope="agent", target="a1", holder="h", expires_at=WHEN, agent_id="a1", request_id="r1"
    ),
]


@pytest.mark.parametrize("event", UNDERIVABLE, ids=repr)
def test_lock_fields_the_keys_do_not_give_are_kept(event: LockEvent) -> None:
    payload = stored(event).decode()
    assert codec.decode(tag_of(event), event.VERSION, payload, codec.keys_of(event)) == event


def test_lock_payloads_are_version_2_and_a_later_one_is_refused() -> None:
    assert {c.VERSION for c in EVENT_TYPES if issubclass(c, LockEvent)} == {2}
    assert ("LockReleased", 1) in codec._AS_IS  # version 1 reads as 2: no dict, no convert
    with pytest.raises(SchemaVersionError, match="LockReleased payload version 3"):
        codec.decode("LockReleased", 3, '{"token":1}', ("r1", "a1", None))


def test_a_version_1_session_assigned_reads_as_not_superseded() -> None:
    v1 = '{"parent_session_id":"s0"}'  # as stored before ``superseded`` existed
    event = codec.decode("SessionAssigned", 1, v1, ("r1", "a1", "s1"))
    assert event == SessionAssigned(
        request_id="r1", session_id="s1", agent_id="a1", parent_session_id="s0"
    )
    assert not event.superseded
    assert ("SessionAssigned", 1) in codec._AS_IS  # no dict, no convert: replay's fast path
    with pytest.raises(SchemaVersionError, match="SessionAssigned payload version 3"):
        codec.decode("SessionAssigned", 3, v1, ("r1", "a1", "s1"))


def test_a_superseded_assignment_is_stored_and_read_back() -> None:
    event = SessionAssigned(request_id="r1", session_id="s1", agent_id="a1", superseded=True)
    payload = stored(event)
    assert payload == b'{"superseded":true}'
    assert codec.decode("SessionAssigned", 2, payload.decode(), ("r1", "a1", "s1")) == event


def test_a_lock_payload_written_before_schema_4_decodes_as_stored() -> None:
    v3 = '{"scope":"agent","target":"a1","holder":"h9","token":5}'
    event = codec.decode("LockReleased", 1, v3, ("r1", "a1", None))
    assert event == LockReleased(
        scope="agent", target="a1", holder="h9", token=5, agent_id="a1", request_id="r1"
    )
    whole = codec._whole("LockReleased", v3, ("r1", "a1", None))
    assert [whole.count(f'"{field}"') for field in ("scope", "target", "holder")] == [1, 1, 1]


FLAT = (mi.StrType, mi.IntType, mi.FloatType, mi.BoolType, mi.DateTimeType, mi.NoneType)


def _flat(kind: mi.Type) -> bool:
    if isinstance(kind, mi.UnionType):
        return all(_flat(member) for member in kind.types)
    return isinstance(kind, FLAT)


@pytest.mark.parametrize("cls", [c for c in EVENT_TYPES if issubclass(c, LockEvent)])
def test_a_lock_payload_holds_no_nested_object(cls: type[Event]) -> None:
    """codec._lock_fields tells a left-out field by its key in the payload's text: right
    only while no lock field can hold an object with keys of its own."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    assert [f.name for f in info.fields if not _flat(f.type)] == []
