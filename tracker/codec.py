"""One encoder, one decoder, and the upcasters that read older payloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from tracker.errors import IntegrityError, SchemaVersionError
from tracker.events import BY_TAG, EVENT_TYPES, KEYS, AnyEvent, Event, LockEvent

Payload = dict[str, Any]
T = TypeVar("T")
Upcaster = Callable[[Payload], Payload]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def _request_tracked_v1(data: Payload) -> Payload:
    """v1 -> v2: the resumed session was stored as ``session_id``."""
    data = dict(data)
    if "session_id" in data:
        data["resumed_session_id"] = data.pop("session_id")
    return data


# (type, version it reads) -> function producing version + 1, or None when a payload of
# that version reads as the next one unchanged (the next only allows more to be left out).
UPCASTERS: dict[tuple[str, int], Upcaster | None] = {
    ("RequestTracked", 1): _request_tracked_v1,
    ("SessionAssigned", 1): None,
    **{
        (str(cls.__struct_config__.tag), 1): None
        for cls in EVENT_TYPES
        if issubclass(cls, LockEvent)
    },
}
# (type, version) whose payloads the current struct reads as they are: no step changes them.
_AS_IS = frozenset(
    (tag, version)
    for tag, cls in BY_TAG.items()
    for version in range(1, cls.VERSION + 1)
    if all(
        (tag, step) in UPCASTERS and UPCASTERS[(tag, step)] is None
        for step in range(version, cls.VERSION)
    )
)


# Per event type: its key fields set to UNSET (left out when encoding), and the length
# of the tag the encoding starts with ('{"type":"SessionAssigned"').
_UNKEYED = {
    cls: {key: msgspec.UNSET for key in KEYS if key in cls.__struct_fields__} for cls in EVENT_TYPES
}
_TAG_LENGTH = {
    cls: len(b'{"type":' + _encoder.encode(cls.__struct_config__.tag)) for cls in EVENT_TYPES
}


_LOCK_TAGS = frozenset(tag for tag, cls in BY_TAG.items() if issubclass(cls, LockEvent))

Keys = tuple[str | None, str | None, str | None]  # request_id, agent_id, session_id


def keys_of(event: Event) -> Keys:
    """The values of ``event``'s key fields (None where it has none): its key columns."""
    return (
        getattr(event, "request_id", None),
        getattr(event, "agent_id", None),
        getattr(event, "session_id", None),
    )


def encode(event: Event, keys: Keys) -> bytes:
    """Return the stored payload of ``event``, whose key columns are ``keys``
    (``keys_of``): a JSON object of its fields, leaving out its tag, its keys and what a
    lock event's keys say (``decode`` puts them back)."""
    cls = type(event)
    left_out = _lock_left_out(event, keys) if isinstance(event, LockEvent) else _UNKEYED[cls]
    data = _encoder.encode(msgspec.structs.replace(event, **left_out))
    cut = _TAG_LENGTH[cls] + 1  # past the tag and the ',' or '}' after it
    return b"{" + data[cut:] if len(data) > cut else b"{}"


def _lock_left_out(event: LockEvent, keys: Keys) -> dict[str, Any]:
    """What ``encode`` leaves out of a lock event: its keys, its scope and target when
    its keys name its lock (``_lock_of``), and its holder when that is its request."""
    request_id, agent_id, session_id = keys
    named = (event.scope, event.target) == _lock_of(agent_id, session_id, None)
    held = request_id is not None and event.holder == request_id
    return _LOCK_LEFT_OUT[type(event), named, held]


def _lock_of(agent: T, session: T, absent: T) -> tuple[str, T]:
    """The lock a lock event's key columns name (``absent``: a column without a value):
    its session's if it has one (a lock taken for a request without an agent), else its
    agent's, as ``LockKey.fields`` sets them. The same rule reads raw keys (encode) and
    keys already JSON (decode), and the lock_events view spells it in SQL."""
    return ("session", session) if session != absent else ("agent", agent)


_LOCK_LEFT_OUT = {
    (cls, named, held): {
        **_UNKEYED[cls],
        **dict.fromkeys(("scope", "target") if named else (), msgspec.UNSET),
        **dict.fromkeys(("holder",) if held else (), msgspec.UNSET),
    }
    for cls in EVENT_TYPES
    if issubclass(cls, LockEvent)
    for named in (False, True)
    for held in (False, True)
}


def _lock_fields(payload: str, r: str, a: str, s: str) -> str:
    """The members a lock event's payload left out (``encode``), from its keys as JSON
    (``"..."`` or ``null``), each led by a comma.

    A lock payload holds no nested object and its strings escape every quote, so
    '"scope":' occurs in it only as that key.
    """
    fields = ""
    scope, target = _lock_of(a, s, "null")
    if '"scope":' not in payload and target != "null":
        fields = f',"scope":"{scope}","target":{target}'
    if r != "null" and '"holder":' not in payload:
        fields += f',"holder":{r}'
    return fields


def encode_value(value: Any) -> bytes:
    """Return ``value`` as JSON with the shared encoder."""
    return _encoder.encode(value)


def decode(type_: str, version: int, payload: str, keys: Keys) -> AnyEvent:
    """Decode a stored event from its payload and key columns, upcasting it if it was
    written by an older version."""
    cls = BY_TAG.get(type_)
    if cls is None:
        raise IntegrityError(f"unknown event type {type_!r} in the log")
    try:
        whole = _whole(type_, payload, keys)
        if (type_, version) in _AS_IS:
            event: AnyEvent = _decoder.decode(whole)
            return event
        return _upcast(cls, type_, version, whole)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IntegrityError(f"undecodable {type_} v{version} payload: {exc}") from exc


def _whole(type_: str, payload: str, keys: Keys) -> str:
    """The event's JSON with its tag and keys put back: every key, null when its column
    is (a type without such a field ignores it), and what a lock payload left out. A
    payload written before schema 3 holds them already."""
    if payload.startswith('{"type":'):
        return payload
    r, a, s = keys
    text = f"{r}{a}{s}"
    if '"' in text or "\\" in text or not text.isprintable():  # not in ids the API accepts
        r, a, s = (_encoder.encode(key).decode() for key in keys)
    else:
        r = "null" if r is None else f'"{r}"'  # inline, not a function: replay's hot path
        a = "null" if a is None else f'"{a}"'
        s = "null" if s is None else f'"{s}"'
    rest = "}" if payload == "{}" else f",{payload[1:]}"
    if type_ in _LOCK_TAGS:
        rest = _lock_fields(payload, r, a, s) + rest
    return f'{{"type":"{type_}","request_id":{r},"agent_id":{a},"session_id":{s}{rest}'


def _upcast(cls: type[Event], type_: str, version: int, payload: str) -> AnyEvent:
    if version > cls.VERSION or version < 1:
        raise SchemaVersionError(
            f"{type_} payload version {version} is newer than this tracker reads "
            f"(v{cls.VERSION}): upgrade the tracker package"
        )
    data: Payload = msgspec.json.decode(payload)  # an object: _whole made or checked it
    for step in range(version, cls.VERSION):
        upcast = UPCASTERS[(type_, step)]
        data = upcast(data) if upcast else data
    event: AnyEvent = msgspec.convert(data, AnyEvent)
    return event
