"""Waiting for a commit, by this process or another, with one look for all waiters.

A waiter takes a ticket *before* it reads (or tries its write), then waits on it: a
commit after the ticket was taken ends the wait, however soon it came, so nothing
committed between the read and the wait is missed. Whatever the number of waiters,
one of them at a time (the poller) looks at the database's commit version
(``CommitProbe.version``: a memory read, no thread hop) every ``every`` seconds, and
at once when this process commits (``notify``); a change wakes every waiter. When
the poller leaves (its wait ended), the others are woken to hand polling over.

Tickets are rounds in a chain: each round ends once, as a change or as a hand-over,
and points to the next, so a waiter woken late walks the rounds it missed and sees
every change among them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anyio

LOOK_EVERY_S = 0.05  # how often a waiter looks for another process's commit, by default
_UNSEEN = object()  # no look yet


class Round:
    """One stretch of time between two looks that ended it: a waiter's ticket."""

    __slots__ = ("_ended", "changed", "next", "number")

    def __init__(self, number: int = 0) -> None:
        self.number = number  # rounds are numbered in order: a later ticket has a higher one
        self.changed = False  # it ended in a commit, not in a hand-over
        self.next: Round | None = None  # set once it ended
        self._ended: anyio.Event | None = None  # made by the first waiter: most have none

    async def ended(self) -> None:
        """Return once the round ended."""
        if self.next is None:
            if self._ended is None:
                self._ended = anyio.Event()
            await self._ended.wait()

    def end(self, changed: bool, following: Round) -> None:
        """End it (as a change or a hand-over) and wake its waiters; ``following`` is next."""
        self.changed, self.next = changed, following
        if self._ended is not None:
            self._ended.set()


class CommitWatch:
    """Commits seen by looking at ``version`` (a value that changes at every commit)."""

    def __init__(self, version: Callable[[], object]) -> None:
        self._version = version
        self._round = Round()
        self._seen: object = _UNSEEN
        self._polling = False
        self._intervals: Counter[float] = Counter()  # of the waiters there now
        self._poke = anyio.Event()

    def ticket(self) -> Round:
        """Take before reading: ``wait`` then ends on any commit from now on (a look
        first, so a commit made before is not taken for one made after)."""
        self._look()
        return self._round

    def notify(self) -> None:
        """This process committed: the poller looks now rather than at its next turn."""
        self._poke.set()

    async def wait(self, ticket: Round, within: float, every: float) -> bool:
        """Wait until a commit made after ``ticket`` was taken is seen (True), or for
        ``within`` seconds (False); another process's commit is looked for ``every``
        seconds (the shortest of every waiter's)."""
        self._intervals[every] += 1
        try:
            with anyio.move_on_after(within):
                await self._until_changed(ticket)
                return True
            return False
        finally:
            self._intervals[every] -= 1
            if not self._intervals[every]:
                del self._intervals[every]

    async def _until_changed(self, ticket: Round) -> None:
        while not ticket.changed:
            if ticket.next is not None:  # ended as a hand-over: on to the next round
                ticket = ticket.next
            elif self._polling:
                await ticket.ended()
            else:
                await self._poll(ticket)

    async def _poll(self, ticket: Round) -> None:
        """Look until ``ticket``'s round ends; if this waiter leaves first, hand over."""
        self._polling = True
        try:
            while ticket.next is None:
                self._look()
                if ticket.next is None:
                    with anyio.move_on_after(min(self._intervals)):
                        await self._poke.wait()
                    if self._poke.is_set():
                        self._poke = anyio.Event()
        finally:
            self._polling = False
            if ticket.next is None:  # cancelled or timed out: another waiter polls on
                self._end_round(changed=False)

    def _look(self) -> None:
        version = self._version()
        if version != self._seen:
            self._seen = version
            self._end_round(changed=True)

    def _end_round(self, changed: bool) -> None:
        ended, self._round = self._round, Round(self._round.number + 1)
        ended.end(changed, self._round)
        self._poke.set()  # a look by ``ticket`` may end the poller's round: it leaves now
