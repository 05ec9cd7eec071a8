"""Argument checks: each returns the clean value or raises InvalidInput naming it."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec

from tracker.clock import Clock, aware, parse_time, seconds
from tracker.errors import InvalidInput
from tracker.events import BY_TAG, NO_USAGE, Usage
from tracker.models import CURRENT

MAX_ID_CHARS = 512
MAX_TEXT_CHARS = 4_000_000
MAX_METADATA_BYTES = 1 << 20
MAX_METADATA_DEPTH = 32
MAX_TTL_S = 7 * 86400.0
MAX_AGE_S = 100 * 365 * 86400.0  # an age or interval: a century
MAX_COUNT = (1 << 63) - 1  # SQLite's largest integer: a seq, a number of events
# One request's figures. Sessions, agents and days add them up in 64-bit integers: at
# these bounds a sum overflows after some 9 million requests at the bound, never sooner.
MAX_TOKENS = 10**12
MAX_DURATION_MS = 10**12  # about 31 years
MAX_COST_USD = 1e9
_BAD_ID = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_USAGE_KEYS = frozenset(Usage.__struct_fields__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def ident(value: Any, name: str) -> str:
    """Return a valid id: a non-empty string without control characters."""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__} {_show(value)}")
    if not value.strip():
        raise InvalidInput(f"{name} must not be empty or blank, got {value!r}")
    if len(value) > MAX_ID_CHARS:
        raise InvalidInput(
            f"{name} has {len(value)} characters, at most {MAX_ID_CHARS}: {_show(value)}"
        )
    if _BAD_ID.search(value):
        raise InvalidInput(f"{name} {_show(value)} contains control or surrogate characters")
    return value


def optional_ident(value: Any, name: str) -> str | None:
    """Return None or a valid id."""
    return None if value is None else ident(value, name)


def resumed(value: Any, agent_id: str | None) -> tuple[str | None, bool]:
    """The session a request resumes, and whether it is the agent's current one
    (CURRENT: then the first is None, decided when the request is tracked)."""
    if value is not CURRENT:
        return optional_ident(value, "session_id"), False
    if agent_id is None:
        raise InvalidInput("session_id=CURRENT resumes an agent's current session: give agent_id")
    return None, True


def text(value: Any, name: str, *, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Return None or a string that UTF-8 can store."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise InvalidInput(f"{name} has {len(value):,} characters, at most {limit:,}")
    if _SURROGATE.search(value):
        raise InvalidInput(f"{name} contains lone surrogates (not valid UTF-8)")
    return value


def metadata(value: Any, name: str = "metadata") -> dict[str, Any]:
    """Return a JSON object (dict with string keys), bounded in depth and size."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{name} must be a JSON object (a mapping), got {type(value).__name__}")
    _check_shape(value, name)
    try:
        encoded = msgspec.json.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:  # ValueError: lone surrogates too
        raise InvalidInput(f"{name} is not JSON-serialisable: {exc}") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"{name} is {len(encoded):,} bytes as JSON, at most {MAX_METADATA_BYTES:,}"
        )
    decoded: dict[str, Any] = msgspec.json.decode(encoded)  # canonical: tuples become lists
    return decoded


def _check_shape(value: Any, name: str) -> None:
    """Refuse what JSON cannot hold as given: too deep, keys not strings, NaN or
    infinity (which the encoder would silently turn into null)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInput(f"{name} nests deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidInput(f"{name} holds {item!r}: JSON has no NaN or infinity")
        if isinstance(item, Mapping):
            if not all(isinstance(k, str) for k in item):
                raise InvalidInput(f"{name} keys must be strings")
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list | tuple):
            stack.extend((v, depth + 1) for v in item)


def usage(value: Any) -> Usage:
    """Return a Usage from a Usage, a mapping of token counts, or None."""
    if value is None:
        return NO_USAGE
    if isinstance(value, Usage):
        value = msgspec.structs.asdict(value)
    if not isinstance(value, Mapping):
        raise InvalidInput(
            f"usage must be a tracker.Usage or a mapping, got {type(value).__name__}"
        )
    unknown = set(value) - _USAGE_KEYS
    if unknown:
        raise InvalidInput(
            f"usage has unknown keys {sorted(unknown)}; known: {sorted(_USAGE_KEYS)}"
        )
    for key, count in value.items():
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_TOKENS:
            raise InvalidInput(
                f"usage {key} must be a whole number from 0 to {MAX_TOKENS:,}, got {_show(count)}"
            )
    return Usage(**value)


def cost(value: Any) -> float | None:
    """Return None or a finite, non-negative cost in USD."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"cost_usd must be a finite number, got {_show(value)}")
    if not 0 <= value <= MAX_COST_USD:
        raise InvalidInput(f"cost_usd must be between 0 and {MAX_COST_USD:,.0f}, got {value}")
    return float(value)


def duration_ms(value: Any) -> int | None:
    """Return None or a non-negative whole number of milliseconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"duration_ms must be a number, got {_show(value)}")
    if not 0 <= value <= MAX_DURATION_MS:
        raise InvalidInput(f"duration_ms must be between 0 and {MAX_DURATION_MS:,}, got {value}")
    return round(value)


def count(value: Any, name: str) -> int:
    """Return a whole number that is not negative (an event seq, a number of events)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be a whole number, got {_show(value)}")
    if value < 0:
        raise InvalidInput(f"{name} must not be negative, got {value}")
    if value > MAX_COUNT:
        raise InvalidInput(f"{name} must be at most {MAX_COUNT:,} (2**63 - 1), got {value}")
    return value


def optional_count(value: Any, name: str) -> int | None:
    """Return None or a whole number that is not negative."""
    return None if value is None else count(value, name)


def event_types(value: Any) -> tuple[str, ...]:
    """Return event type names the catalogue knows (one name alone is one type)."""
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Iterable):
        raise InvalidInput(f"types must be event type names, got {_show(value)}")
    names = tuple(value)
    for name in names:
        if name not in BY_TAG:
            raise InvalidInput(f"unknown event type {_show(name)}: one of {', '.join(BY_TAG)}")
    return names


def ttl(value: Any, name: str = "ttl") -> float:
    """Return a lock TTL in seconds: more than 0, at most 7 days."""
    return _positive(value, name, MAX_TTL_S)


def wait(value: Any, name: str = "wait") -> float:
    """Return a wait in seconds: 0 (do not wait) up to 1 day."""
    result = _duration(value, name)
    if not 0 <= result <= 86400:
        raise InvalidInput(f"{name} must be between 0 and 86400 s, got {value!r}")
    return result


def poll(value: Any) -> float:
    """Return a polling interval in seconds: more than 0, at most 1 hour."""
    return _positive(value, "poll", 3600)


def _positive(value: Any, name: str, most: float) -> float:
    result = _duration(value, name)
    if not 0 < result <= most:
        raise InvalidInput(f"{name} must be more than 0 and at most {most:.0f} s, got {value!r}")
    return result


def flag(value: Any, name: str) -> bool:
    """Return a bool given as one: 1 or "no" is a mistake, not a flag ("no" is true)."""
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be True or False, got {_show(value)}")
    return value


def path(value: Any, name: str = "path") -> Path:
    """Return a file path given as text or a path-like object."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise InvalidInput(f"{name} must be a file path (str or os.PathLike), got {_show(value)}")
    return Path(value)


def clock(value: Any) -> Clock | None:
    """Return ``value`` if it can serve as a clock (a ``now()`` method that gives a
    datetime), or None."""
    if value is None:
        return None
    if not callable(getattr(value, "now", None)):
        raise InvalidInput(
            f"clock must have a now() method (see tracker.Clock), got {_show(value)}"
        )
    if not isinstance(now := value.now(), datetime):
        raise InvalidInput(f"clock.now() must give a datetime, got {_show(now)}")
    checked: Clock = value
    return checked


def moment(value: Any, name: str) -> datetime:
    """Return a point in time given as a datetime or ISO 8601 text (naive means UTC)."""
    if isinstance(value, str):
        return parse_time(value)
    if not isinstance(value, datetime):
        raise InvalidInput(f"{name} must be a datetime or ISO 8601 text, got {_show(value)}")
    return aware(value)


def interval(value: Any, name: str) -> float:
    """Return a period in seconds: more than 0, at most a century."""
    return _positive(value, name, MAX_AGE_S)


def age(value: Any, name: str) -> float:
    """Return an age threshold in seconds (not negative, at most a century)."""
    result = _duration(value, name)
    if result < 0:
        raise InvalidInput(f"{name} must not be negative, got {value!r}")
    if result > MAX_AGE_S:
        raise InvalidInput(f"{name} must be at most {MAX_AGE_S:.0f} s (a century), got {value!r}")
    return result


def _duration(value: Any, name: str) -> float:
    if not isinstance(value, int | float | timedelta | str) or isinstance(value, bool):
        raise InvalidInput(f"{name} must be seconds or a timedelta, got {_show(value)}")
    result = seconds(value, name)
    if not math.isfinite(result):
        raise InvalidInput(f"{name} must be finite, got {value!r}")
    return result


def choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``."""
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}; got {_show(value)}")
    return str(value)


def one_of(what: str, **ids: Any) -> tuple[str, str]:
    """Return (kind, id) for ``what`` (a lock, a conversation) named by exactly one of
    ``ids`` (``agent_id=...``, ``session_id=...``): the kind is its name without "_id"."""
    given = [(name, value) for name, value in ids.items() if value is not None]
    if len(given) != 1:
        *names, last = [f"{name}=" for name in ids]
        raise InvalidInput(f"name {what} by exactly one of {', '.join(names)} or {last}")
    name, value = given[0]
    return name.removesuffix("_id"), ident(value, name)
