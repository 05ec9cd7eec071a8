"""The log's newest events, read once for every follower that has caught up.

Followers that have read to the end of the log wait for a commit. When one comes,
each of them needs the events after the end it had reached, filtered its own way:
read one by one, a hundred followers make a hundred reads for each commit. Here the
first follower to ask reads the new events once, unfiltered, and adds them to the
*window*; the others filter theirs from it in memory. The window keeps the newest
events only, as many as one read gives at most, so a follower that fell further
behind reads on its own, with its filter, until it has caught up.

Freshness: a follower asks with the ticket it took before asking (``CommitWatch``),
and then waits on that ticket. So the window must hold every event committed before
the ticket was taken: the tail reads again unless its last read began after a ticket
of the same round or a later one (no commit was seen in between) and was complete.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import anyio

from tracker.events import StoredEvent
from tracker.watch import Round


class Matches(Protocol):
    """A follower's filter."""

    def matches(self, event: StoredEvent) -> bool: ...


@dataclass(frozen=True, slots=True)
class Taken:
    """What a follower gets: its events, how far it has now seen, whether to ask again
    before waiting (the read was full: there may be more)."""

    events: list[StoredEvent]
    upto: int  # every event with seq <= upto was considered
    more: bool


class SharedTail:
    """The window of new events that caught-up followers share (one per store).

    ``read_after(seq, limit)`` reads every event after ``seq``, in seq order, at most
    ``limit``; ``ticket()`` is the store's ``CommitWatch.ticket``.
    """

    def __init__(
        self,
        read_after: Callable[[int, int], Awaitable[list[StoredEvent]]],
        ticket: Callable[[], Round],
        size: int,
    ) -> None:
        self._read_after, self._ticket, self._size = read_after, ticket, size
        self._lock = anyio.Lock()
        self._events: list[StoredEvent] = []
        self._seqs: list[int] = []
        self._low = self._high = -1  # the window holds every event with low < seq <= high
        self._complete_as_of: Round | None = None  # the last read's ticket, if complete

    async def after(self, last: int, where: Matches, ticket: Round) -> Taken | None:
        """The events after ``last`` (a seq of the log a follower has read to) that
        ``where`` matches, up to a window fresh for ``ticket``; None when ``last`` is
        before the window (read on your own)."""
        async with self._lock:
            if last < self._low:
                return None
            if last > self._high:  # this follower is ahead of the window: restart it there
                self._restart_at(last)
            taken = self._matching(last, where)
            more = False
            if not self._fresh_for(ticket):
                seen = self._high
                more = await self._read_on()
                taken += self._matching(seen, where)
            return Taken(taken, self._high, more)

    def _matching(self, last: int, where: Matches) -> list[StoredEvent]:
        start = bisect_right(self._seqs, last)
        return [event for event in self._events[start:] if where.matches(event)]

    def _fresh_for(self, ticket: Round) -> bool:
        read = self._complete_as_of
        return read is not None and read.number >= ticket.number

    async def _read_on(self) -> bool:
        """Read the events after the window into it (it keeps the newest ``size``);
        return whether the read was full (there may be more)."""
        ticket = self._ticket()
        events = await self._read_after(self._high, self._size)
        if events:
            self._events += events
            self._seqs += [event.seq for event in events]
            self._high = events[-1].seq
            self._keep_last(self._size)
        full = len(events) == self._size
        self._complete_as_of = None if full else ticket
        return full

    def _keep_last(self, count: int) -> None:
        excess = len(self._events) - count
        if excess > 0:
            self._low = self._seqs[excess - 1]
            del self._events[:excess], self._seqs[:excess]

    def _restart_at(self, seq: int) -> None:
        self._events, self._seqs = [], []
        self._low = self._high = seq
        self._complete_as_of = None
