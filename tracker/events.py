"""What can happen: one frozen, tagged msgspec Struct per lifecycle fact.

Tags are explicit and stable (they are stored in every row). Schema evolution
follows msgspec's rules: new fields get defaults and go last, a field never
changes type, and a payload of an older ``VERSION`` is upcast in the codec.
Keys (``request_id``, ``agent_id``, ``session_id``) are fields of the event
and are copied to envelope columns for filtering.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec


class Usage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Token counts as the CLI reported them (cache reads and writes apart)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )

    @property
    def tokens(self) -> int:
        """All the tokens counted: input, output, cache reads and cache writes."""
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


NO_USAGE = Usage()


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """Base of every event; ``VERSION`` is the payload schema version, ``CODE`` the
    number the log stores for the type (logrow; never changed nor reused)."""

    VERSION: ClassVar[int] = 1
    CODE: ClassVar[int]


class RequestTracked(Event, frozen=True, tag="RequestTracked"):
    """A request was sent to the CLI (not yet answered).

    Version 2: version 1 named the resumed session ``session_id``, which read
    as "the session of this request"; the codec upcasts it.
    """

    VERSION: ClassVar[int] = 2
    CODE: ClassVar[int] = 1

    request_id: str
    agent_id: str | None = None
    resumed_session_id: str | None = None
    prompt: str | None = None
    prompt_chars: int = 0
    metadata: dict[str, Any] = {}
    owner: str | None = None
    digest: str = ""


class SessionAssigned(Event, frozen=True, tag="SessionAssigned"):
    """The CLI reported the session id of a request.

    ``superseded``: the agent had moved on before the CLI answered, so the
    session joins the agent's chain (a branch) without becoming its current
    session. Either the lock taken with the request had been taken over by
    another holder (the new holder's turn decides what the agent continues), or
    the agent was reset after the request was tracked (it starts over). Version 2
    added it; a version 1 payload reads as version 2 unchanged (none was before).
    """

    VERSION: ClassVar[int] = 2
    CODE: ClassVar[int] = 2

    request_id: str
    session_id: str
    agent_id: str | None = None
    parent_session_id: str | None = None
    superseded: bool = False


class RequestCompleted(Event, frozen=True, tag="RequestCompleted"):
    """The request finished with a response."""

    CODE: ClassVar[int] = 3

    request_id: str
    agent_id: str | None = None
    session_id: str | None = None
    response: str | None = None
    response_chars: int = 0
    usage: Usage = NO_USAGE
    cost_usd: float | None = None
    duration_ms: int | None = None
    metadata: dict[str, Any] = {}
    digest: str = ""


class RequestFailed(Event, frozen=True, tag="RequestFailed"):
    """The request failed (kind: cli_error, timeout, abandoned, ...)."""

    CODE: ClassVar[int] = 4

    request_id: str
    error: str
    kind: str = "error"
    agent_id: str | None = None
    session_id: str | None = None
    usage: Usage = NO_USAGE
    cost_usd: float | None = None
    duration_ms: int | None = None
    digest: str = ""


class LockEvent(Event, frozen=True, kw_only=True):
    """What every lock event names: the conversation (scope, target) and the holder.

    ``agent_id``/``session_id`` repeat the target as envelope keys, so an
    agent's lock events are found with its other events.

    Version 2: the stored payload leaves out the scope, target and holder when
    the key columns give them (the codec puts them back); a version 1 payload
    holds them all, and reads as version 2 unchanged.
    """

    VERSION: ClassVar[int] = 2

    scope: str  # "agent" or "session"
    target: str
    holder: str
    agent_id: str | None = None
    session_id: str | None = None


class LockAcquired(LockEvent, frozen=True, kw_only=True, tag="LockAcquired"):
    """A holder took a conversation lock; its fencing token is this event's seq."""

    CODE: ClassVar[int] = 5

    expires_at: datetime
    request_id: str | None = None
    waited_ms: int = 0


class LockRenewed(LockEvent, frozen=True, kw_only=True, tag="LockRenewed"):
    """The holder extended its lock."""

    CODE: ClassVar[int] = 6

    token: int
    expires_at: datetime


class LockReleased(LockEvent, frozen=True, kw_only=True, tag="LockReleased"):
    """The holder released its lock (or its request finished)."""

    CODE: ClassVar[int] = 7

    token: int
    request_id: str | None = None


class LockExpired(LockEvent, frozen=True, kw_only=True, tag="LockExpired"):
    """A lock outlived its TTL and was taken from its holder."""

    CODE: ClassVar[int] = 8

    token: int


class SessionMetadataUpdated(Event, frozen=True, tag="SessionMetadataUpdated"):
    """Metadata merged into a session (keys replaced, others kept)."""

    CODE: ClassVar[int] = 9

    session_id: str
    metadata: dict[str, Any]
    agent_id: str | None = None


class SessionExpired(Event, frozen=True, tag="SessionExpired"):
    """Cleanup retired an idle session (reason: idle, capacity, manual)."""

    CODE: ClassVar[int] = 10

    session_id: str
    reason: str
    agent_id: str | None = None


class SessionDeleted(Event, frozen=True, tag="SessionDeleted"):
    """An operator deleted a session (a tombstone: the log keeps its history)."""

    CODE: ClassVar[int] = 11

    session_id: str
    agent_id: str | None = None
    reason: str | None = None


class AgentReset(Event, frozen=True, tag="AgentReset"):
    """The agent starts over: no current session, a new chain begins."""

    CODE: ClassVar[int] = 12

    agent_id: str
    reason: str | None = None


AnyEvent = (
    RequestTracked
    | SessionAssigned
    | RequestCompleted
    | RequestFailed
    | LockAcquired
    | LockRenewed
    | LockReleased
    | LockExpired
    | SessionMetadataUpdated
    | SessionExpired
    | SessionDeleted
    | AgentReset
)

EVENT_TYPES: tuple[type[Event], ...] = (
    RequestTracked,
    SessionAssigned,
    RequestCompleted,
    RequestFailed,
    LockAcquired,
    LockRenewed,
    LockReleased,
    LockExpired,
    SessionMetadataUpdated,
    SessionExpired,
    SessionDeleted,
    AgentReset,
)

# The key fields: an event's values of these are its envelope columns, of the same names
# (codec.keys_of and codec._whole spell them out, in this order, on hot paths).
KEYS = ("request_id", "agent_id", "session_id")

BY_TAG: dict[str, type[Event]] = {str(cls.__struct_config__.tag): cls for cls in EVENT_TYPES}


def tag_of(event: Event) -> str:
    """Return the stable type name stored for ``event``."""
    return str(event.__struct_config__.tag)


class StoredEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event as the log holds it: envelope plus the typed payload."""

    seq: int
    id: str
    type: str
    version: int
    at: datetime
    request_id: str | None
    agent_id: str | None
    session_id: str | None
    event: AnyEvent
    hash: str
