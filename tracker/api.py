"""The Tracker: the orchestrator's API. Calls become commands, commands become events.

Every write call is acknowledged only once its events are committed (group
commit: concurrent calls share one transaction). Reads go to a read-only
connection and see every acknowledged call.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import msgspec

from projections import Projector
from tracker import backup, codec, db, history, maintenance, queries, validate
from tracker.chain import ChainReport
from tracker.cleanup import AbandonOwned, Cleanup
from tracker.clock import Clock, Duration, iso
from tracker.commands import (
    Assign,
    Complete,
    Fail,
    ResetAgent,
    RetireSession,
    Track,
    UpdateSessionMetadata,
    undo_track,
)
from tracker.db import Durability
from tracker.errors import InvalidInput, LockHeld, LockNotHeld, OwnerInUse, TrackerError
from tracker.events import StoredEvent, Usage
from tracker.locking import AcquireLock, ReleaseLock, RenewLock, Tx, undo_acquire
from tracker.models import (
    SESSION_STATUSES,
    Agent,
    BackupReport,
    CleanupReport,
    Health,
    Lock,
    RebuildReport,
    Request,
    ResumedSession,
    Session,
    Stats,
    TableDiff,
    Turn,
    UsageGroup,
    VerifyReport,
)
from tracker.readcache import VerifiedCache
from tracker.scratch import Scratch
from tracker.store import EventStore, Filter
from tracker.tasks import task_group
from tracker.watch import LOOK_EVERY_S

T = TypeVar("T")
Content = Literal["full", "preview", "none"]
PREVIEW_CHARS = 200
log = logging.getLogger("tracker")
_digest_encoder = msgspec.json.Encoder(order="sorted")
WithMetadata = TypeVar("WithMetadata", Request, Session)


def _own_metadata(found: WithMetadata) -> WithMetadata:
    """A cached Request or Session with a metadata dict of its own, so a caller that
    changes what it was given changes nothing for the others."""
    return msgspec.structs.replace(
        found, metadata=msgspec.json.decode(codec.encode_value(found.metadata))
    )


_BACKGROUND = ("session_ttl", "request_timeout", "max_sessions")  # open's names for them


def _cleanup(
    idle_for: Duration | None,
    stale_after: Duration | None,
    max_sessions: int | None,
    *,
    expire_locks: bool = True,
    dry_run: bool = False,
    names: tuple[str, str, str] = ("idle_for", "stale_after", "max_sessions"),
) -> Cleanup:
    """A checked cleanup job (``names``: what errors call the first three arguments)."""
    idle, stale, most = names
    return Cleanup(
        None if idle_for is None else validate.age(idle_for, idle),
        None if stale_after is None else validate.age(stale_after, stale),
        validate.flag(expire_locks, "expire_locks"),
        validate.flag(dry_run, "dry_run"),
        validate.optional_count(max_sessions, most),
    )


def _maintenance(
    every: Duration | None,
    session_ttl: Duration | None,
    request_timeout: Duration | None,
    max_sessions: int | None,
) -> tuple[float, Cleanup] | None:
    """The background maintenance's period and cleanup job, checked up front: the
    background task could only log a bad value at every turn, and a policy without a
    period would never run."""
    job = _cleanup(session_ttl, request_timeout, max_sessions, names=_BACKGROUND)
    if every is None:
        policy = (session_ttl, request_timeout, max_sessions)
        for name, value in zip(_BACKGROUND, policy, strict=True):
            if value is not None:
                raise InvalidInput(
                    f"{name} is applied by the background maintenance: give maintenance_every"
                )
        return None
    return validate.interval(every, "maintenance_every"), job


@contextlib.contextmanager
def _owning(path: Path, owner: str | None) -> Iterator[None]:
    """Hold ``owner`` on ``path`` while the block runs: opening with an owner fails that
    owner's unfinished requests as abandoned, which only a dead process's may be."""
    if owner is None:
        yield
        return
    name = hashlib.blake2b(owner.encode(), digest_size=8).hexdigest()
    claim = Scratch.claim(path, "owner", name)
    if claim is None:
        raise OwnerInUse(
            f"owner {owner!r} is in use by another tracker open on {str(path)!r}: "
            "give each orchestrator process its own owner"
        )
    with claim:
        yield


def _renewal(agent_id: str | None, session_id: str | None, holder: str, ttl: Duration) -> RenewLock:
    """The renewal of a lock, its arguments checked."""
    scope, target = validate.one_of("the lock", agent_id=agent_id, session_id=session_id)
    return RenewLock(scope, target, validate.ident(holder, "holder"), validate.ttl(ttl))


def _digest(*parts: Any) -> str:
    """Fingerprint of a call's arguments: an exact repeat has the same one."""
    return hashlib.blake2b(_digest_encoder.encode(parts), digest_size=8).hexdigest()


class Tracker:
    """Event-sourced tracker of agent conversations; open with ``Tracker.open(path)``."""

    def __init__(self, store: EventStore[Projector], content: Content, owner: str | None) -> None:
        self._store, self._content, self.owner = store, content, owner
        self._cache = VerifiedCache(store.version)

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str] = "tracker.db",
        *,
        clock: Clock | None = None,
        content: Content = "full",
        owner: str | None = None,
        durability: Durability = "full",
        create: bool = True,
        maintenance_every: Duration | None = None,
        session_ttl: Duration | None = None,
        request_timeout: Duration | None = None,
        max_sessions: int | None = None,
    ) -> AsyncIterator[Tracker]:
        """Open the database at ``path`` (creating it unless ``create=False``) until exit.

        ``owner`` names this orchestrator process: requests a previous run of the
        same owner left unfinished are failed as ``abandoned``. ``maintenance_every``
        runs ``cleanup`` in the background with ``session_ttl`` (``idle_for``),
        ``request_timeout`` (``stale_after``) and ``max_sessions``.
        """
        validate.choice(content, "content", ("full", "preview", "none"))
        validate.choice(durability, "durability", ("full", "process"))
        create = validate.flag(create, "create")
        owner = validate.optional_ident(owner, "owner")
        background = _maintenance(maintenance_every, session_ttl, request_timeout, max_sessions)
        async with contextlib.AsyncExitStack() as held:  # released last to first
            store = await held.enter_async_context(
                EventStore.open(
                    validate.path(path),
                    Projector(),
                    clock=validate.clock(clock),
                    durability=durability,
                    create=create,
                )
            )
            held.enter_context(_owning(store.path, owner))
            tracker = cls(store, content, owner)
            held.callback(tracker._cache.close)
            if owner is not None:
                await store.submit(AbandonOwned(owner))
            async with task_group() as tg:
                if background:
                    tg.start_soon(tracker._maintain, *background)
                try:
                    yield tracker
                finally:
                    tg.cancel_scope.cancel()

    @property
    def path(self) -> Path:
        return self._store.path

    # -- requests -------------------------------------------------------------

    async def track_request(
        self,
        request_id: str,
        *,
        agent_id: str | None = None,
        session_id: ResumedSession = None,
        prompt: str | None = None,
        metadata: dict[str, Any] | None = None,
        lock: bool = False,
        lock_ttl: Duration = 30,
        lock_wait: Duration = 0,
    ) -> Request:
        """Record a request sent to the CLI; ``session_id`` is the session it resumes.

        ``session_id=CURRENT`` resumes the agent's current session as of tracking
        (the returned request's ``resumed_session_id`` names it). With ``lock=True``
        the conversation's lock (the agent's, or the session's for agent-less
        requests) is taken atomically, waiting up to ``lock_wait``; completing or
        failing the request releases it.
        """
        request_id = validate.ident(request_id, "request_id")
        agent_id = validate.optional_ident(agent_id, "agent_id")
        resumed, current = validate.resumed(session_id, agent_id)
        prompt = validate.text(prompt, "prompt")
        meta = validate.metadata(metadata)
        ttl = validate.ttl(lock_ttl, "lock_ttl")
        lock = validate.flag(lock, "lock")
        # CURRENT is fingerprinted apart from any session id (one may be "current"); a
        # call without it keeps the fingerprint requests tracked before CURRENT have
        call = "track current" if current else "track"
        digest = _digest(call, agent_id, resumed, prompt, meta, lock, ttl)

        def command(waited_ms: int) -> Track:
            return Track(
                request_id,
                agent_id,
                resumed,
                current,
                self._retain(prompt),
                len(prompt or ""),
                meta,
                self.owner,
                digest,
                lock,
                ttl,
                waited_ms,
            )

        request, _ = await self._waiting(validate.wait(lock_wait, "lock_wait"), command, undo_track)
        return request

    async def update_request_session(self, request_id: str, session_id: str) -> Request:
        """Record the session id the CLI answered for a request (continuity, chain, forks)."""
        command = Assign(
            validate.ident(request_id, "request_id"), validate.ident(session_id, "session_id")
        )
        return await self._store.submit(command)

    async def complete_request(
        self,
        request_id: str,
        *,
        response: str | None = None,
        usage: Usage | dict[str, int] | None = None,
        cost_usd: float | None = None,
        duration_ms: float | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Request:
        """Record a request's response, usage and cost as the CLI reported them."""
        request_id = validate.ident(request_id, "request_id")
        response = validate.text(response, "response")
        used, cost = validate.usage(usage), validate.cost(cost_usd)
        duration, meta = validate.duration_ms(duration_ms), validate.metadata(metadata)
        digest = _digest("complete", response, used, cost, duration, meta)
        return await self._store.submit(
            Complete(
                request_id,
                self._retain(response),
                len(response or ""),
                used,
                cost,
                duration,
                meta,
                digest,
            )
        )

    async def fail_request(
        self,
        request_id: str,
        *,
        error: str,
        kind: str = "error",
        usage: Usage | dict[str, int] | None = None,
        cost_usd: float | None = None,
        duration_ms: float | None = None,
    ) -> Request:
        """Record that a request failed (``kind``: cli_error, timeout, ...)."""
        request_id = validate.ident(request_id, "request_id")
        error_text = validate.text(error, "error") or ""
        kind = validate.ident(kind, "kind")
        used, cost = validate.usage(usage), validate.cost(cost_usd)
        duration = validate.duration_ms(duration_ms)
        digest = _digest("fail", error_text, kind, used, cost, duration)
        return await self._store.submit(
            Fail(request_id, error_text, kind, used, cost, duration, digest)
        )

    def _retain(self, text: str | None) -> str | None:
        if text is None or self._content == "full":
            return text
        return text[:PREVIEW_CHARS] if self._content == "preview" else None

    # -- locks ----------------------------------------------------------------

    async def acquire_lock(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        holder: str,
        ttl: Duration = 30,
        wait: Duration = 0,
    ) -> Lock:
        """Take a conversation lock for ``holder``, waiting up to ``wait`` seconds.

        An expired lock is taken over (recorded as expired). Raises LockHeld.
        """
        scope, target = validate.one_of("the lock", agent_id=agent_id, session_id=session_id)
        holder, ttl_s = validate.ident(holder, "holder"), validate.ttl(ttl)
        lock, _ = await self._waiting(
            validate.wait(wait),
            lambda waited: AcquireLock(scope, target, holder, ttl_s, waited),
            undo_acquire,
        )
        return lock

    async def renew_lock(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        holder: str,
        ttl: Duration = 30,
    ) -> Lock:
        """Extend a lock ``holder`` holds to ``ttl`` seconds from now (same token)."""
        return await self._store.submit(_renewal(agent_id, session_id, holder, ttl))

    async def keep_lock(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        holder: str,
        ttl: Duration = 30,
    ) -> None:
        """Renew a lock ``holder`` holds to ``ttl`` every third of ``ttl`` until cancelled:
        run it in a task beside work that may outlast the TTL. It returns, logging why,
        once a renewal fails (the lock was taken over after this process stalled past
        its TTL, or released)."""
        command = _renewal(agent_id, session_id, holder, ttl)
        self._store.ensure_open()  # a closed tracker says so now, not a third of ttl later
        while True:
            await anyio.sleep(command.ttl / 3)
            try:
                await self._store.submit(command)
            except TrackerError as exc:
                log.warning("lock renewal stopped: %s", exc)  # names the lock and holder
                return

    async def release_lock(
        self, *, agent_id: str | None = None, session_id: str | None = None, holder: str
    ) -> None:
        """Release a lock ``holder`` holds. Raises LockNotHeld."""
        scope, target = validate.one_of("the lock", agent_id=agent_id, session_id=session_id)
        await self._store.submit(ReleaseLock(scope, target, validate.ident(holder, "holder")))

    @asynccontextmanager
    async def lock(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        holder: str,
        ttl: Duration = 30,
        wait: Duration = 0,
        renew: bool = True,
    ) -> AsyncIterator[Lock]:
        """Hold a lock for the block, renewed every third of ``ttl`` while it runs
        (``keep_lock``) unless ``renew=False``. Raises LockNotHeld at exit if it was lost
        meanwhile: taken over after this process stalled past the TTL, or, not renewed,
        outlasted by the block."""
        renew = validate.flag(renew, "renew")
        taken = await self.acquire_lock(
            agent_id=agent_id, session_id=session_id, holder=holder, ttl=ttl, wait=wait
        )
        release = ReleaseLock(taken.scope, taken.target, holder)
        try:
            async with task_group() as tg:  # the block's own error comes out as itself
                if renew:
                    tg.start_soon(
                        partial(
                            self.keep_lock,
                            agent_id=agent_id,
                            session_id=session_id,
                            holder=holder,
                            ttl=ttl,
                        )
                    )
                try:
                    yield taken
                finally:
                    tg.cancel_scope.cancel()
        except BaseException:
            with anyio.CancelScope(shield=True):
                with contextlib.suppress(LockNotHeld):  # the block's own error matters more
                    await self._store.submit(release)
            raise
        with anyio.CancelScope(shield=True):
            await self._store.submit(release)

    async def get_lock(
        self, *, agent_id: str | None = None, session_id: str | None = None
    ) -> Lock | None:
        """Return the lock row of a conversation (held, released or expired), or None."""
        scope, target = validate.one_of("the lock", agent_id=agent_id, session_id=session_id)
        return await self._cached(("lock", scope, target), lambda c: queries.lock(c, scope, target))

    async def _waiting(
        self,
        wait_s: float,
        command: Callable[[int], Callable[[Tx], T]],
        undo: Callable[[T], Callable[[Tx], Any] | None],
    ) -> T:
        """Submit ``command(waited_ms)``, retrying on LockHeld until ``wait_s`` has passed;
        a cancelled caller's lock is given back (``undo``)."""
        start, waited_ms = time.monotonic(), 0  # the first attempt did not wait
        while True:
            ticket = self._store.changes.ticket()  # no thread hop: most attempts succeed
            try:
                return await self._store.submit(command(waited_ms), undo=undo)
            except LockHeld:
                remaining = wait_s - (time.monotonic() - start)
                if remaining <= 0:
                    raise
                # a commit may have freed it (a release, even in the batch that refused
                # it); a lock that expires commits nothing: try again at least every 0.25 s
                await self._store.changes.wait(ticket, min(remaining, 0.25), LOOK_EVERY_S)
                waited_ms = max(round((time.monotonic() - start) * 1000), 1)

    # -- sessions and agents ----------------------------------------------------

    async def update_session_metadata(self, session_id: str, metadata: dict[str, Any]) -> None:
        """Merge ``metadata`` into a session's (keys replaced, others kept)."""
        command = UpdateSessionMetadata(
            validate.ident(session_id, "session_id"), validate.metadata(metadata)
        )
        await self._store.submit(command)

    async def expire_session(self, session_id: str, *, reason: str = "manual") -> None:
        """Retire a session: it stays in its chain but is no agent's current session."""
        command = RetireSession(
            validate.ident(session_id, "session_id"), validate.ident(reason, "reason"), delete=False
        )
        await self._store.submit(command)

    async def delete_session(self, session_id: str, *, reason: str | None = None) -> None:
        """Mark a session deleted (a tombstone: its history stays in the log)."""
        command = RetireSession(
            validate.ident(session_id, "session_id"),
            validate.optional_ident(reason, "reason") or "deleted",
            delete=True,
        )
        await self._store.submit(command)

    async def reset_agent(self, agent_id: str, *, reason: str | None = None) -> None:
        """Start the agent over: no current session; its next session begins a new chain."""
        await self._store.submit(
            ResetAgent(
                validate.ident(agent_id, "agent_id"), validate.optional_ident(reason, "reason")
            )
        )

    # -- reads ----------------------------------------------------------------

    async def get_request(self, request_id: str) -> Request | None:
        request_id = validate.ident(request_id, "request_id")
        found = await self._cached(
            ("request", request_id), lambda c: queries.request(c, request_id)
        )
        return None if found is None else _own_metadata(found)

    async def in_flight(
        self,
        *,
        agent_id: str | None = None,
        owner: str | None = None,
        limit: int | None = None,
    ) -> list[Request]:
        """The requests tracked and not yet finished (pending or active), oldest first;
        of one agent, or of one owner (an orchestrator process), if given."""
        agent_id = validate.optional_ident(agent_id, "agent_id")
        owner = validate.optional_ident(owner, "owner")
        limit = validate.optional_count(limit, "limit")
        return await self._store.read_with(lambda c: queries.in_flight(c, agent_id, owner, limit))

    async def get_session(self, session_id: str) -> Session | None:
        session_id = validate.ident(session_id, "session_id")
        found = await self._cached(
            ("session", session_id), lambda c: queries.session(c, session_id)
        )
        return None if found is None else _own_metadata(found)

    async def list_sessions(
        self,
        *,
        agent_id: str | None = None,
        status: str | None = None,
        before: str | None = None,
        limit: int = 100,
    ) -> list[Session]:
        """Sessions, the newest first (by when the CLI first reported them), without their
        locks (``get_session`` has it): an agent's, of a status ("active", "expired",
        "deleted"), at most ``limit``. ``before`` pages: the sessions first seen before
        that one (the last of the page before)."""
        agent_id = validate.optional_ident(agent_id, "agent_id")
        if status is not None:
            status = validate.choice(status, "status", SESSION_STATUSES)
        before = validate.optional_ident(before, "before")
        limit = validate.count(limit, "limit")
        page = await self._store.read_with(
            lambda c: queries.sessions_page(c, agent_id, status, before, limit)
        )
        return [_own_metadata(session) for session in page]

    async def list_agents(self, *, after: str | None = None, limit: int = 100) -> list[Agent]:
        """Agents in the order of their ids (as SQLite and Python sort text), each with
        its current session and totals, at most ``limit``. ``after`` pages: the agents
        whose id sorts after it (the last of the page before)."""
        after = validate.optional_ident(after, "after")
        limit = validate.count(limit, "limit")
        return await self._store.read_with(lambda c: queries.agents_page(c, after, limit))

    async def seq_at(self, moment: datetime | str) -> int:
        """The seq of the last event at or before ``moment`` (a datetime or ISO 8601 text;
        naive means UTC), 0 if none: a ``since`` or ``until`` for ``events`` by time."""
        at = iso(validate.moment(moment, "moment"))
        return await self._store.read_with(lambda c: queries.seq_at(c, at))

    async def find_sessions(self, prefix: str, *, limit: int = 10) -> list[str]:
        """The ids of sessions that start with ``prefix``, in order, at most ``limit``
        (the CLI's ids are long: a few characters name one)."""
        prefix = validate.ident(prefix, "prefix")
        limit = validate.count(limit, "limit")
        return await self._store.read_with(lambda c: queries.session_ids_from(c, prefix, limit))

    async def get_agent(self, agent_id: str) -> Agent | None:
        agent_id = validate.ident(agent_id, "agent_id")
        return await self._cached(("agent", agent_id), lambda c: queries.agent(c, agent_id))

    async def get_agent_session(self, agent_id: str) -> str | None:
        """The session the agent's next request continues (None: start a new one)."""
        agent_id = validate.ident(agent_id, "agent_id")
        return await self._cached(
            ("agent_session", agent_id), lambda c: queries.agent_session(c, agent_id)
        )

    async def _cached(self, key: Hashable, read: Callable[[sqlite3.Connection], T]) -> T:
        """``read`` on the reader's thread, or its answer from the verified cache if nothing
        was committed since. The answer is shared by every caller given it: what holds a
        metadata dict goes out through ``_own_metadata``."""
        loaded: T = await self._cache.get(key, lambda: self._store.read_with(read))
        return loaded

    async def get_chain(self, agent_id: str) -> list[Session]:
        """The agent's sessions in assignment order, with parent links (forks included)."""
        agent_id = validate.ident(agent_id, "agent_id")
        chain = await self._cached(("chain", agent_id), lambda c: queries.chain(c, agent_id))
        return [_own_metadata(session) for session in chain]

    async def history(
        self,
        *,
        agent_id: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
    ) -> list[Turn]:
        """The conversation so far, oldest turn first, for a backend that keeps none: each
        answered request's prompt and response, as ``content=`` kept them (see
        ``Turn.whole``), from the log. ``agent_id``: its current session's conversation
        (none: its next request starts a new one); ``session_id``: that session's;
        ``request_id``: the conversation the request continued, then its own turn once
        answered (what the model was given).

        A request continues its resumed session's conversation as it stood when the
        request was tracked, so a fork or a superseded answer has its own line, and
        failed requests are not turns (tracker/history.py says it in full).
        """
        kind, named = validate.one_of(
            "the conversation", agent_id=agent_id, session_id=session_id, request_id=request_id
        )
        read = {
            "agent": history.of_agent,
            "session": history.of_session,
            "request": history.of_request,
        }[kind]
        return await self._store.read_with(lambda c: read(c, named))

    async def stats(self, agent_id: str | None = None) -> Stats:
        agent_id = validate.optional_ident(agent_id, "agent_id")
        return await self._store.read_with(lambda c: queries.stats(c, agent_id))

    async def usage_by(
        self, by: str, agent_id: str | None = None, *, limit: int | None = None
    ) -> list[UsageGroup]:
        """Usage grouped by ``by``: "day", "agent" or "session" (optionally one agent's),
        most expensive first (days in order); ``limit``: only the most expensive groups,
        or the latest days."""
        by = validate.choice(by, "by", ("day", "agent", "session"))
        agent_id = validate.optional_ident(agent_id, "agent_id")
        limit = validate.optional_count(limit, "limit")
        return await self._store.read_with(lambda c: queries.usage_by(c, by, agent_id, limit))

    async def health(self, *, integrity: bool = True) -> Health:
        """Schema version, projection lag and sizes, and unless ``integrity=False`` the
        answer of SQLite's quick_check, which reads the whole file (0.5 s for 1M events
        cached, seconds from disk): a frequent liveness probe leaves it out."""
        integrity = validate.flag(integrity, "integrity")
        store = self._store
        return await store.read_with(
            lambda c: queries.health(c, store.path, store.durability, integrity)
        )

    async def events(
        self,
        since: int = 0,
        *,
        follow: bool = False,
        until: int | None = None,
        last: int | None = None,
        agent_id: str | None = None,
        session_id: str | None = None,
        request_id: str | None = None,
        types: Iterable[str] = (),
        poll: float = LOOK_EVERY_S,
        limit: int | None = None,
    ) -> AsyncIterator[StoredEvent]:
        """Yield stored events with ``since < seq <= until``, filtered, in seq order;
        ``last=N``: only the last N of them. With ``follow``, then wait for new ones:
        this process's commits are seen at once, another's within ``poll`` seconds.
        ``limit``: stop after that many (a page of the log; with ``follow``, once that
        many have come)."""
        since = validate.count(since, "since")
        until = validate.optional_count(until, "until")
        last = validate.optional_count(last, "last")
        limit = validate.optional_count(limit, "limit")
        poll = validate.poll(poll)
        follow = validate.flag(follow, "follow")
        if follow and until is not None:
            raise InvalidInput(f"follow waits for new events forever: it takes no until ({until})")
        where = Filter(
            request_id=validate.optional_ident(request_id, "request_id"),
            agent_id=validate.optional_ident(agent_id, "agent_id"),
            session_id=validate.optional_ident(session_id, "session_id"),
            types=validate.event_types(types),
        )
        if last is not None:
            since = await self._store.start_of_last(last, since, until=until, where=where)
        if limit == 0:
            return
        if follow:
            stream = self._store.follow(since, where=where, poll=poll)
        else:
            stream = self._store.stream(since, until=until, where=where, wanted=limit)
        count = 0
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event
                count += 1
                if count == limit:
                    return

    # -- maintenance ------------------------------------------------------------

    async def cleanup(
        self,
        *,
        idle_for: Duration | None = None,
        stale_after: Duration | None = None,
        max_sessions: int | None = None,
        expire_locks: bool = True,
        dry_run: bool = False,
    ) -> CleanupReport:
        """Abandon requests older than ``stale_after`` (not one holding an unexpired lock:
        it is running, its lock renewed), expire sessions idle for
        ``idle_for``, then the least recently active beyond ``max_sessions`` active
        sessions (reason ``capacity``), and record lapsed locks as expired (``dry_run``:
        only report). A session an unfinished request or a held lock uses is kept."""
        job = _cleanup(
            idle_for, stale_after, max_sessions, expire_locks=expire_locks, dry_run=dry_run
        )
        return await self._store.submit(job)

    async def _maintain(self, every: float, job: Cleanup) -> None:
        while True:
            await anyio.sleep(every)
            try:
                await self._store.submit(job)
            except Exception:  # keep maintaining; the caller's calls surface real errors
                log.exception("background cleanup failed")

    async def verify(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        """Check the hash chain and that live projections equal a fresh replay.

        Never repairs: call ``rebuild()`` to make projections match the log.
        """
        self._store.ensure_open()

        def compare() -> tuple[ChainReport, int, list[TableDiff]]:
            with maintenance.scratch_with_live(self.path) as conn:
                return maintenance.compare(conn, progress)

        chain, checked, diffs = await db.in_thread(self.path, compare)
        return VerifyReport(
            ok=chain.ok and not diffs,
            events=chain.events,
            head_hash=chain.head_hash,
            chain_ok=chain.ok,
            first_bad_seq=chain.first_bad_seq,
            chain_problem=chain.problem,
            projections_ok=not diffs,
            checked_seq=checked,
            diffs=diffs,
        )

    async def rebuild(self, progress: Callable[[int], None] | None = None) -> RebuildReport:
        """Drop and replay every projection: built aside, then swapped in atomically."""
        started = time.perf_counter()
        with maintenance.scratch_beside(self.path, "rebuild") as scratch:
            built = await db.in_thread(
                self.path, maintenance.build_scratch, self.path, scratch.path, progress
            )

            def swap(conn: sqlite3.Connection) -> tuple[int, float]:
                begun = time.perf_counter()
                return maintenance.swap_in(conn, scratch.path, built), time.perf_counter() - begun

            caught_up, swap_seconds = await self._store.run_exclusive(swap)
        return RebuildReport(
            events=built + caught_up,
            seconds=time.perf_counter() - started,
            swap_seconds=swap_seconds,
        )

    async def backup(
        self,
        target: str | os.PathLike[str],
        *,
        update: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> BackupReport:
        """Write a backup of the whole database (log and projections) to ``target``: one
        consistent snapshot, taken while this and other processes go on writing, checked
        and synced, then renamed over ``target`` (a file already there is replaced, but a
        database in use, or this one). ``progress`` gets the pages written so far.

        ``update=True``: ``target``, an earlier backup of this database, is brought up to
        date instead, at the cost of the events it lacks (appended and applied to its
        projections in one transaction; ``progress`` gets them); a missing ``target``
        gets a whole backup. A backup of another database, or ahead of this one, is
        refused as InvalidInput."""
        target = validate.path(target, "target")
        update = validate.flag(update, "update")
        self._store.ensure_open()
        write = backup.update_file if update else backup.backup_file
        return await db.in_thread(self.path, write, self.path, target, progress)

    async def replay_into(
        self,
        target: str | os.PathLike[str],
        *,
        until: int | None = None,
        at: datetime | str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write a new database with the log up to ``until`` (seq) or ``at`` (a datetime or
        ISO 8601 text; naive means UTC) and the projections as of that point; return its
        last seq."""
        until = validate.optional_count(until, "until")
        target = validate.path(target, "target")
        if at is not None:  # the last event at or before it (the log's times never go back)
            point = await self.seq_at(validate.moment(at, "at"))
            until = point if until is None else min(until, point)
        self._store.ensure_open()
        return await db.in_thread(
            self.path, maintenance.replay_into, self.path, target, until, progress
        )
