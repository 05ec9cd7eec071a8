"""One encoder, one decoder, and the upcasters that read older payloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tracker.errors import IntegrityError, SchemaVersionError
from tracker.events import BY_TAG, EVENT_TYPES, KEYS, AnyEvent, Event

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def _request_tracked_v1(data: Payload) -> Payload:
    """v1 -> v2: the resumed session was stored as ``session_id``."""
    data = dict(data)
    if "session_id" in data:
        data["resumed_session_id"] = data.pop("session_id")
    return data


# (type, version it reads) -> function producing version + 1.
UPCASTERS: dict[tuple[str, int], Upcaster] = {
    ("RequestTracked", 1): _request_tracked_v1,
}


# Per event type: its key fields set to UNSET (left out when encoding), and the length
# of the tag the encoding starts with ('{"type":"SessionAssigned"').
_UNKEYED = {
    cls: {key: msgspec.UNSET for key in KEYS if key in cls.__struct_fields__} for cls in EVENT_TYPES
}
_TAG_LENGTH = {
    cls: len(b'{"type":' + _encoder.encode(cls.__struct_config__.tag)) for cls in EVENT_TYPES
}


Keys = tuple[str | None, str | None, str | None]  # request_id, agent_id, session_id


def keys_of(event: Event) -> Keys:
    """The values of ``event``'s key fields (None where it has none): its key columns."""
    return (
        getattr(event, "request_id", None),
        getattr(event, "agent_id", None),
        getattr(event, "session_id", None),
    )


def encode(event: Event) -> bytes:
    """Return the stored payload of ``event``: a JSON object of its fields but its tag and
    keys, which the log keeps in columns (``decode`` puts them back)."""
    cls = type(event)
    data = _encoder.encode(msgspec.structs.replace(event, **_UNKEYED[cls]))
    cut = _TAG_LENGTH[cls] + 1  # past the tag and the ',' or '}' after it
    return b"{" + data[cut:] if len(data) > cut else b"{}"


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
        if version == cls.VERSION:
            event: AnyEvent = _decoder.decode(whole)
            return event
        return _upcast(cls, type_, version, whole)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IntegrityError(f"undecodable {type_} v{version} payload: {exc}") from exc


def _whole(type_: str, payload: str, keys: Keys) -> str:
    """The event's JSON with its tag and keys put back: every key, null when its column
    is (a type without such a field ignores it). A payload written before schema 3
    holds them already."""
    if payload.startswith('{"type":'):
        return payload
    r, a, s = keys
    text = f"{r}{a}{s}"
    if '"' in text or "\\" in text or not text.isprintable():  # not in ids the API accepts
        return _whole_escaped(type_, payload, keys)
    r = "null" if r is None else f'"{r}"'  # inline, not a function: replay's hot path
    a = "null" if a is None else f'"{a}"'
    s = "null" if s is None else f'"{s}"'
    rest = "}" if payload == "{}" else f",{payload[1:]}"
    return f'{{"type":"{type_}","request_id":{r},"agent_id":{a},"session_id":{s}{rest}'


def _whole_escaped(type_: str, payload: str, keys: Keys) -> str:
    data = dict(zip(KEYS, keys, strict=True))
    head = _encoder.encode({"type": type_, **data}).decode()  # ends with '}'
    return head if payload == "{}" else f"{head[:-1]},{payload[1:]}"


def _upcast(cls: type[Event], type_: str, version: int, payload: str) -> AnyEvent:
    if version > cls.VERSION or version < 1:
        raise SchemaVersionError(
            f"{type_} payload version {version} is newer than this tracker reads "
            f"(v{cls.VERSION}): upgrade the tracker package"
        )
    data: Payload = msgspec.json.decode(payload)  # an object: _whole made or checked it
    for step in range(version, cls.VERSION):
        data = UPCASTERS[(type_, step)](data)
    event: AnyEvent = msgspec.convert(data, AnyEvent)
    return event
