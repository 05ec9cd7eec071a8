"""One encoder, one decoder, and the upcasters that read older payloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from tracker.errors import IntegrityError, SchemaVersionError
from tracker.events import BY_TAG, AnyEvent, Event

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


def encode(event: Event) -> bytes:
    """Return the JSON payload of ``event`` (its tag included)."""
    return _encoder.encode(event)


def encode_value(value: Any) -> bytes:
    """Return ``value`` as JSON with the shared encoder."""
    return _encoder.encode(value)


def decode(type_: str, version: int, payload: str | bytes) -> AnyEvent:
    """Decode a stored payload, upcasting it if it was written by an older version."""
    cls = BY_TAG.get(type_)
    if cls is None:
        raise IntegrityError(f"unknown event type {type_!r} in the log")
    try:
        if version == cls.VERSION:
            event: AnyEvent = _decoder.decode(payload)
            return event
        return _upcast(cls, type_, version, payload)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise IntegrityError(f"undecodable {type_} v{version} payload: {exc}") from exc


def _upcast(cls: type[Event], type_: str, version: int, payload: str | bytes) -> AnyEvent:
    if version > cls.VERSION or version < 1:
        raise SchemaVersionError(
            f"{type_} payload version {version} is newer than this tracker reads "
            f"(v{cls.VERSION}): upgrade the tracker package"
        )
    data = msgspec.json.decode(payload)
    if not isinstance(data, dict):
        raise IntegrityError(f"{type_} v{version} payload is not a JSON object")
    for step in range(version, cls.VERSION):
        data = UPCASTERS[(type_, step)](data)
    event: AnyEvent = msgspec.convert(data, AnyEvent)
    return event
