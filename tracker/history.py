"""Conversation history: the turns a session's conversation holds, read from the log,
for backends that do not keep the conversation themselves (SPEC §9).

The CLI reads a session's transcript when it starts, so a request continues the
conversation of the session it resumed as it stood when the request was tracked:

- the context of an answered request r is the history of r's resumed session before
  r was tracked, then r's own turn (none before it when it resumed nothing);
- the history of a session S before a point is the context of the last request
  answered in S before that point; if S had no answer yet, it is what S was started
  from: the history of what the request that S was assigned to first resumed, before
  that request was tracked.

Each step moves the point back, so the walk ends. A fork and a late (superseded)
answer each keep their own line; two answers in one session whose requests ran at
the same time (no lock) are two lines too, and the session's history is the later
answer's, which is what its transcript continues. Failed requests are not turns.
"""

from __future__ import annotations

import sqlite3

from tracker import db, queries
from tracker.errors import UnknownRequest, UnknownSession
from tracker.events import (
    Event,
    RequestCompleted,
    RequestTracked,
    SessionAssigned,
    StoredEvent,
)
from tracker.models import Turn
from tracker.store import Filter
from tracker.transaction import stored_event


def of_agent(conn: sqlite3.Connection, agent_id: str) -> list[Turn]:
    """The history of the agent's current session (none: a new conversation)."""
    session_id = queries.agent_session(conn, agent_id)
    return [] if session_id is None else of_session(conn, session_id)


def of_session(conn: sqlite3.Connection, session_id: str) -> list[Turn]:
    """The turns of ``session_id``'s conversation, oldest first."""
    if not queries.known_session(conn, session_id):
        raise UnknownSession(f"no session {session_id!r}")
    log = _Log(conn)
    return _walk(log, session_id, log.head + 1)


def of_request(conn: sqlite3.Connection, request_id: str) -> list[Turn]:
    """The conversation ``request_id`` continued, then its own turn once answered."""
    log = _Log(conn)
    asked = log.last(request_id, RequestTracked, log.head)
    if asked is None:
        raise UnknownRequest(f"no request {request_id!r}")
    turns = _walk(log, _resumed(asked), asked.seq)
    if answer := log.last(request_id, RequestCompleted, log.head):
        turns.append(_turn(asked, answer))
    return turns


def _walk(log: _Log, session: str | None, before: int) -> list[Turn]:
    """The history of ``session`` before seq ``before`` (none: nothing), oldest first."""
    turns: list[Turn] = []
    while session is not None:
        answer = log.last_answer(session, before)
        asked = log.asking(answer) if answer else log.start(session, before)
        if asked is None:
            break
        if answer is not None:
            turns.append(_turn(asked, answer))
        session, before = _resumed(asked), asked.seq
    turns.reverse()
    return turns


class _Log:
    """The events the walk reads: each one found through a key index from the end
    down, so a step reads the few index buckets between it and the step before."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.head = db.last_seq(conn)  # later commits are not read

    def last_answer(self, session_id: str, before: int) -> StoredEvent | None:
        """The last RequestCompleted of ``session_id`` before seq ``before``."""
        where = Filter(session_id=session_id, types=(RequestCompleted.__name__,))
        return self._last(where, before - 1)

    def asking(self, later: StoredEvent) -> StoredEvent | None:
        """The RequestTracked of the request of ``later`` (its answer, its assignment)."""
        assert later.request_id is not None
        return self.last(later.request_id, RequestTracked, later.seq - 1)

    def last(self, request_id: str, type_: type[Event], until: int) -> StoredEvent | None:
        """The request's last event of type ``type_`` up to seq ``until``."""
        return self._last(Filter(request_id=request_id, types=(type_.__name__,)), until)

    def start(self, session_id: str, before: int) -> StoredEvent | None:
        """The RequestTracked of the first request assigned ``session_id`` before seq
        ``before`` (what the session was started from)."""
        where = Filter(session_id=session_id, types=(SessionAssigned.__name__,))
        first = self.conn.execute(*where.select(0, before - 1, 1)).fetchone()
        return None if first is None else self.asking(stored_event(first))

    def _last(self, where: Filter, until: int) -> StoredEvent | None:
        found = self.conn.execute(*where.select_last(until)).fetchone()
        return None if found is None else stored_event(found)


def _resumed(asked: StoredEvent) -> str | None:
    assert isinstance(asked.event, RequestTracked)
    return asked.event.resumed_session_id


def _turn(asked: StoredEvent, answer: StoredEvent) -> Turn:
    question, reply = asked.event, answer.event
    assert isinstance(question, RequestTracked)
    assert isinstance(reply, RequestCompleted)
    assert reply.session_id is not None  # read through the session index
    return Turn(
        request_id=reply.request_id,
        session_id=reply.session_id,
        prompt=question.prompt,
        response=reply.response,
        prompt_chars=question.prompt_chars,
        response_chars=reply.response_chars,
        asked_at=asked.at,
        answered_at=answer.at,
    )
