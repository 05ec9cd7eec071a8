"""How the log stores an event's envelope, and reads it back as the API shows it.

Since schema 5 the table ``event_log`` stores an event id the tracker minted (32 hex
digits) as its 16 bytes, the type as a small code (TYPE_CODES) and the time as integer
microseconds since the Unix epoch: 36 bytes an event fewer than their text. The view
``events`` of schema.sql shows them as text again, as the hash chain, the API and exports
see them. A value in any other form (an id not minted here, a time not in the fixed-width
form, a type this release does not know) is stored, and read back, as the text it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from tracker.clock import iso
from tracker.events import BY_TAG

# The stored code of each event type (Event.CODE).
TYPE_CODES: dict[str, int] = {tag: cls.CODE for tag, cls in BY_TAG.items()}
_TYPE_NAMES: dict[int, str] = {code: name for name, code in TYPE_CODES.items()}

_HEX_ID = re.compile(r"[0-9a-f]{32}")
_FIXED_WIDTH = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# A row of the log: seq, id, type, version, at, request_id, agent_id, session_id,
# payload, hash (schema.EVENT_COLUMNS), stored or as text.
Row = tuple[Any, ...]


def stored_id(text: str) -> str | bytes:
    """The form the log stores the event id ``text`` in (``id_text`` reads it back)."""
    return bytes.fromhex(text) if _HEX_ID.fullmatch(text) else text


def id_text(stored: str | bytes) -> str:
    """An event id as the API, exports and the chain see it."""
    return stored if isinstance(stored, str) else stored.hex()


def stored_type(name: str) -> int | str:
    """The form the log stores the event type ``name`` in."""
    return TYPE_CODES.get(name, name)


def type_text(stored: int | str) -> str:
    """An event type as its name (a name stored as text is itself)."""
    return stored if isinstance(stored, str) else _TYPE_NAMES.get(stored, str(stored))


def stored_at(text: str) -> int | str:
    """The form the log stores the time ``text`` in: microseconds since the epoch when
    ``at_text`` gives ``text`` back exactly, else the text."""
    if not _FIXED_WIDTH.fullmatch(text):
        return text
    try:
        micros = (datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND
    except ValueError:  # the right shape, not a real time (month 13...)
        return text
    return micros if micros >= 0 and at_text(micros) == text else text


@lru_cache(maxsize=1024)  # the events of a transaction share their time
def at_text(stored: int | str) -> str:
    """A stored time as the fixed-width UTC text of clock.iso."""
    if isinstance(stored, str):
        return stored
    return iso(_EPOCH + stored * _MICROSECOND)


def stored_row(row: Sequence[Any]) -> Row:
    """A row of the log, given as text, in the form the log stores it."""
    seq, id_, type_, version, at, *rest = row
    return (seq, stored_id(id_), stored_type(type_), version, stored_at(at), *rest)


def text_row(row: Sequence[Any]) -> Row:
    """A row of the log as stored, with its id, type and time as text."""
    seq, id_, type_, version, at, *rest = row
    return (seq, id_text(id_), type_text(type_), version, at_text(at), *rest)
