"""``GET /events``: a page of the log, filtered, and a long poll for new events, so a
program in any language can tail the log as ``tracker events --follow`` does.

    GET /events?since=SEQ &until= &last= &limit= &agent= &session= &request=
               &type=RequestFailed,LockExpired &wait=SECONDS

The answer is ``{"events": [...], "next": URL}``. ``next`` is the same query from the
last event given (``since=`` its seq); it is always there unless ``until=`` ends the
log's range, because the log grows. With ``wait=``, a page that would be empty waits
up to that long (at most ``MAX_WAIT_S``) for a matching event to be committed, by this
process or another, and then answers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import anyio
from anyio import CancelScope

from tracker.api import Tracker
from tracker.errors import InvalidInput
from tracker.events import StoredEvent
from tracker.tasks import task_group
from tracker.web.params import page_size, seconds, whole

MAX_WAIT_S = 30  # a long poll's longest wait: under the idle timeouts of usual proxies (60 s)
PARAMETERS = ("since", "until", "last", "limit", "agent", "session", "request", "type", "wait")


@dataclass(frozen=True)
class EventsQuery:
    """What ``GET /events`` asks, checked whole before anything is read."""

    since: int
    until: int | None
    last: int | None
    limit: int
    wait: float
    keys: dict[str, Any]  # the filters, as ``Tracker.events`` takes them

    @classmethod
    def parse(cls, query: dict[str, str]) -> EventsQuery:
        """Check every parameter (``PARAMETERS``); a bad one is an InvalidInput naming it."""
        until = _optional(query, "until", whole)
        wait = seconds(query.get("wait", "0"), "wait", MAX_WAIT_S)
        if wait and until is not None:
            raise InvalidInput(f"wait waits for new events: it takes no until ({until})")
        types = query.get("type")
        keys = {  # Tracker.events checks them before it reads
            "agent_id": query.get("agent"),
            "session_id": query.get("session"),
            "request_id": query.get("request"),
            "types": () if types is None else tuple(types.split(",")),
        }
        return cls(
            since=whole(query.get("since", "0"), "since"),
            until=until,
            last=_optional(query, "last", whole),
            limit=page_size(query.get("limit", "100")),
            wait=wait,
            keys=keys,
        )


async def events_page(
    tracker: Tracker, query: dict[str, str], stopping: anyio.Event | None
) -> dict[str, Any]:
    """The page ``query`` asks for (``EventsQuery``); a long poll ends early, with what
    it has, once ``stopping`` is set (the server is stopping)."""
    asked = EventsQuery.parse(query)
    page = await _page(tracker, asked, asked.last)
    if not page and asked.wait:
        await _first_new(tracker, asked, stopping)
        page = await _page(tracker, asked, None)
    return {"events": page, "next": _next(asked, query, page)}


async def _page(tracker: Tracker, asked: EventsQuery, last: int | None) -> list[StoredEvent]:
    stream = tracker.events(
        asked.since, until=asked.until, last=last, limit=asked.limit, **asked.keys
    )
    return [event async for event in stream]


async def _first_new(tracker: Tracker, asked: EventsQuery, stopping: anyio.Event | None) -> None:
    """Return once an event past ``since`` matches, after ``wait`` seconds, or once
    ``stopping`` is set."""
    with anyio.move_on_after(asked.wait):
        async with task_group() as tg:
            if stopping is not None:
                tg.start_soon(_cancel_when_set, stopping, tg.cancel_scope)
            async for _ in tracker.events(asked.since, follow=True, limit=1, **asked.keys):
                pass
            tg.cancel_scope.cancel()


async def _cancel_when_set(event: anyio.Event, scope: CancelScope) -> None:
    await event.wait()
    scope.cancel()


def _next(asked: EventsQuery, query: dict[str, str], page: list[StoredEvent]) -> str | None:
    """The same query from the page's last event (``last`` only chose where to start);
    none once ``until`` is reached."""
    if asked.until is not None and len(page) < asked.limit:
        return None
    since = page[-1].seq if page else asked.since
    rest = {name: value for name, value in query.items() if name not in ("since", "last")}
    return f"/events?{urlencode({'since': since} | rest, quote_via=quote)}"


def _optional(query: dict[str, str], name: str, parse: Callable[[str, str], int]) -> int | None:
    text = query.get(name)
    return None if text is None else parse(text, name)
