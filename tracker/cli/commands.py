"""The commands of ``tracker``: one small function each, over the API.

Output is a readable table by default and JSON with ``--json`` (JSON lines for
streams). A user mistake prints one line on stderr and exits 1; usage errors
exit 2; a bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec

from tracker import backup, db, readonly, transfer, validate
from tracker.api import Tracker
from tracker.cli.transcript import transcript
from tracker.clock import parse_time, seconds
from tracker.errors import DatabaseNotFound, InvalidInput, UnknownAgent
from tracker.events import StoredEvent
from tracker.models import Agent, Session, UsageGroup
from tracker.progress import Progress
from tracker.render import BLOCK, Aligned, cell, dollars, duration, table, table_lines, tree, when

Handler = Callable[[argparse.Namespace], Awaitable[int]]
_json = msgspec.json.Encoder()


def emit(value: Any) -> None:
    """Print one JSON document (a line) to stdout."""
    sys.stdout.write(_json.encode(value).decode() + "\n")  # structs encode as to_builtins


def database(args: argparse.Namespace) -> Path:
    """The database: --db, else $TRACKER_DB, else ./tracker.db; a leading ~ is the home
    folder (a shell does not expand it in an environment file or a quoted value). An empty
    --db (``--db "$UNSET"``) is a mistake, not the default."""
    if args.db == "":
        raise InvalidInput("--db is empty: name the database file")
    return Path(args.db or os.environ.get("TRACKER_DB") or "tracker.db").expanduser()


def existing(args: argparse.Namespace) -> AbstractAsyncContextManager[Tracker]:
    """Open the database, which must exist (only init and import create one)."""
    path = database(args)
    if not db.present(path):
        raise DatabaseNotFound(
            f"no database at {str(path)!r}: create it with `tracker init`, "
            f"or point --db or $TRACKER_DB at one"
        )
    return Tracker.open(path, create=False)


def key_values(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k.ljust(width)}  {cell(v)}" for k, v in pairs)


# -- commands --------------------------------------------------------------------


async def cmd_init(args: argparse.Namespace) -> int:
    path = database(args)
    existed = path.exists()
    async with Tracker.open(path) as t:
        version = (await t.health(integrity=False)).schema_version
    _say(
        args,
        {"db": str(path), "created": not existed, "schema_version": version},
        f"{'opened existing' if existed else 'created'} {path} (schema v{version})",
    )
    return 0


async def cmd_events(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        session = None if args.session is None else await _session_named(t, args.session)
        since, until = await _seq_range(t, args)
        stream = t.events(
            since,
            follow=args.follow,
            until=until,
            last=args.last,
            limit=args.limit,
            agent_id=args.agent,
            session_id=session,
            request_id=args.request,
            types=args.type or (),
        )
        if args.json:
            async for event in stream:
                emit(event)
                if args.follow:
                    sys.stdout.flush()
            return 0
        headers = ["seq", "at", "type", "request", "agent", "session", "detail"]
        rows = (_event_row(e) async for e in stream)
        await _print_table(headers, rows, 1 if args.follow else BLOCK)  # follow: each at once
    return 0


async def _seq_range(t: Tracker, args: argparse.Namespace) -> tuple[int, int | None]:
    """``--since``/``--until`` narrowed by ``--after``/``--before``: the seqs of the
    events at or after one time and before another."""
    since, until = args.since, args.until
    if args.after is not None:
        since = max(since, await t.seq_at(_just_before(args.after, "--after")))
    if args.before is not None:
        before = await t.seq_at(_just_before(args.before, "--before"))
        until = before if until is None else min(until, before)
    return since, until


def _just_before(given: str, option: str) -> datetime:
    """The last microsecond before ``given``: an ISO 8601 time, or an age meaning that
    long ago (the log's times have microseconds)."""
    try:
        moment = datetime.now(UTC) - timedelta(seconds=seconds(given, option))
    except InvalidInput:
        try:
            moment = parse_time(given)
        except InvalidInput:
            raise InvalidInput(
                f"bad time {given!r} for {option}: an ISO 8601 time "
                "(2026-11-21T08:00:00Z) or an age (10m, 1h30m, 7d)"
            ) from None
    return moment - timedelta(microseconds=1)


async def _print_table(headers: list[str], rows: AsyncIterator[list[Any]], block: int) -> None:
    """Print ``rows`` as a table as they come, ``block`` rows at a time (``Aligned``)."""
    aligned = Aligned(headers, block)
    async for row in rows:
        if lines := aligned.add(row):
            print("\n".join(lines), flush=True)
    if lines := aligned.end():
        print("\n".join(lines))


def _event_row(e: StoredEvent) -> list[Any]:
    return [e.seq, e.at, e.type, e.request_id, e.agent_id, e.session_id, _detail(e)]


def _detail(e: StoredEvent) -> str:
    data = msgspec.to_builtins(e.event)
    skip = {
        "type",
        "request_id",
        "agent_id",
        "session_id",
        "digest",
        "prompt",
        "response",
        "metadata",
        "usage",
    }
    text = " ".join(f"{k}={v}" for k, v in data.items() if k not in skip)
    return text if len(text) <= 70 else text[:67] + "..."


async def cmd_audit(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        named: str = await _session_named(t, args.id) if args.kind == "session" else args.id
        getter = {"request": t.get_request, "session": t.get_session, "agent": t.get_agent}
        state = await getter[args.kind](named)
        if state is None:
            raise InvalidInput(f"no {args.kind} {named!r}")
        key: dict[str, Any] = {f"{args.kind}_id": named}  # request_id=, session_id=, ...
        events = [e async for e in t.events(**key)]
    if args.json:
        emit({"state": state, "events": events})
        return 0
    print(f"{args.kind} {named}\n")
    print(key_values(list(msgspec.structs.asdict(state).items())))
    print(f"\ntimeline ({len(events)} events)")
    print(
        table(
            ["seq", "at", "type", "request", "session", "detail"],
            [[e.seq, e.at, e.type, e.request_id, e.session_id, _detail(e)] for e in events],
        )
    )
    return 0


async def cmd_history(args: argparse.Namespace) -> int:
    session: str | None = None  # an agent's current, or the session named
    async with existing(args) as t:
        if args.kind == "request":
            whose, turns = f"request {args.id}", await t.history(request_id=args.id)
        else:
            whose, session = await _conversation(t, args.kind, args.id)
            turns = await t.history(session_id=session) if session else []
    if args.json:
        emit(turns)
    elif args.kind == "agent" and not session:
        print(f"{whose} has no current session: its next request starts a new one")
    else:
        print(f"{whose}: {len(turns)} turn{'' if len(turns) == 1 else 's'}")
        if turns:
            print("\n" + transcript(turns))
    return 0


async def _conversation(t: Tracker, kind: str, given: str) -> tuple[str, str | None]:
    """Who ``tracker history agent|session ID`` names, and the session whose history it
    prints (an agent's current one: the header names the session read)."""
    if kind == "session":
        named = await _session_named(t, given)
        return f"session {named}", named
    await _known_agent(t, given)
    current = await t.get_agent_session(given)
    return f"agent {given}" + (f", session {current}" if current else ""), current


async def _session_named(t: Tracker, given: str) -> str:
    """The session id ``given``, or the one it is the start of (as the demo shows them);
    an unknown one comes back as it is."""
    if await t.get_session(given) is not None:
        return given
    found = await t.find_sessions(given, limit=6)
    if len(found) > 1:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise InvalidInput(f"{given!r} starts several sessions: {shown}")
    return found[0] if found else given


async def _known_agent(t: Tracker, agent_id: str) -> None:
    if await t.get_agent(agent_id) is None:
        raise UnknownAgent(f"no agent {agent_id!r}")


async def cmd_chain(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        await _known_agent(t, args.agent)
        chain = await t.get_chain(args.agent)
        current = await t.get_agent_session(args.agent)
    if args.json:
        emit(chain)
    elif args.tree:
        print(tree([(s.session_id, s.parent_session_id, _label(s, current)) for s in chain]))
    else:
        print(
            table(
                [
                    "#",
                    "session",
                    "parent",
                    "status",
                    "requests",
                    "cost",
                    "first seen",
                    "last activity",
                ],
                [
                    [
                        s.position,
                        _mark(s, current),
                        s.parent_session_id,
                        s.status,
                        s.request_count,
                        dollars(s.cost_usd),
                        s.first_seen,
                        s.last_activity,
                    ]
                    for s in chain
                ],
            )
        )
    return 0


async def cmd_agents(args: argparse.Namespace) -> int:
    limit = validate.optional_count(args.limit, "limit")
    async with existing(args) as t:
        agents = await _agents(t, args.after, limit)
    if args.json:
        emit(agents)
        return 0
    headers = ["agent", "current session", "chain", "requests", "failed", "cost", "last activity"]
    print(
        table(
            headers,
            [
                [
                    a.agent_id,
                    a.current_session_id,
                    a.chain_length,
                    a.request_count,
                    a.failed,
                    dollars(a.cost_usd),
                    a.last_activity,
                ]
                for a in agents
            ],
        )
    )
    return 0


AGENTS_PAGE = 1000  # agents read at a time by ``tracker agents``


async def _agents(t: Tracker, after: str | None, limit: int | None) -> list[Agent]:
    """The agents whose ids sort after ``after`` (None: all), at most ``limit`` (None: no
    bound), read a page at a time."""
    found: list[Agent] = []
    while limit is None or len(found) < limit:
        wanted = AGENTS_PAGE if limit is None else min(AGENTS_PAGE, limit - len(found))
        page = await t.list_agents(after=after, limit=wanted)
        found += page
        if len(page) < wanted:
            break
        after = page[-1].agent_id
    return found


def _mark(s: Session, current: str | None) -> str:
    return f"{s.session_id} *" if s.session_id == current else s.session_id


def _label(s: Session, current: str | None) -> str:
    return (
        f"{_mark(s, current)}  {s.status}, {s.request_count} "
        f"request{'' if s.request_count == 1 else 's'}, "
        f"{dollars(s.cost_usd)}, last {when(s.last_activity)}"
    )


async def cmd_stats(args: argparse.Namespace) -> int:
    if args.limit is not None and not args.by:
        raise InvalidInput(f"--limit {args.limit} needs --by day, agent or session")
    async with existing(args) as t:
        if args.agent is not None:
            await _known_agent(t, args.agent)
        if args.by:
            groups = await t.usage_by(args.by, args.agent, limit=args.limit)
            if args.json:
                emit(groups)
            else:
                print(_usage_table(args.by, groups))
            return 0
        stats = await t.stats(args.agent)
    if args.json:
        emit(stats)
        return 0
    values = msgspec.structs.asdict(stats)
    values["cost_usd"] = dollars(stats.cost_usd)
    values["avg_duration_ms"] = duration(stats.avg_duration_ms)
    values["failure_rate"] = _rate(stats.failure_rate)
    print(key_values(list(values.items())))
    return 0


_USAGE_COLUMNS = [
    "requests", "completed", "failed", "failure rate", "input tokens", "output tokens",
    "cache read", "cache write", "cost", "avg duration",
]  # fmt: skip


def _usage_table(by: str, groups: list[UsageGroup]) -> str:
    """``stats --by``: one row a day, agent or session."""
    return table(
        [by, *_USAGE_COLUMNS],
        [
            [
                g.key,
                g.requests,
                g.completed,
                g.failed,
                _rate(g.failure_rate),
                g.input_tokens,
                g.output_tokens,
                g.cache_read_tokens,
                g.cache_write_tokens,
                dollars(g.cost_usd),
                duration(g.avg_duration_ms),
            ]
            for g in groups
        ],
    )


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


async def cmd_replay(args: argparse.Namespace) -> int:
    if (args.until is not None or args.at) and not args.into:
        raise InvalidInput(
            "--until and --at need --into FILE: the live database always reflects the whole log"
        )
    async with existing(args) as t:
        total = (await t.stats()).events
        bar = Progress("replay", total)
        if args.into:
            at = parse_time(args.at) if args.at else None
            last = await t.replay_into(args.into, until=args.until, at=at, progress=bar)
            bar.close()
            _say(
                args,
                {"into": str(args.into), "last_seq": last},
                f"wrote {args.into}: the log up to seq {last:,} and its projections",
            )
            return 0
        report = await t.rebuild(progress=bar)
    bar.close()
    _say(
        args,
        report,
        f"rebuilt the projections from {report.events:,} events in {report.seconds:.2f} s "
        f"(writers waited {report.swap_seconds:.2f} s for the swap)",
    )
    return 0


def _say(args: argparse.Namespace, value: Any, text: str) -> None:
    emit(value) if args.json else print(text)


async def cmd_verify(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        bar = Progress("verify", (await t.stats()).events)
        report = await t.verify(progress=bar)
    bar.close()
    if args.json:
        emit(report)
    else:
        chain = (
            "intact"
            if report.chain_ok
            else (f"BROKEN at seq {report.first_bad_seq}: {report.chain_problem}")
        )
        print(f"hash chain   {chain} ({report.events:,} events, head {report.head_hash})")
        print(f"projections  {'equal to a full replay' if report.projections_ok else 'DIFFER'}")
        for diff in report.diffs:
            print(
                f"  {diff.table}: {diff.missing} rows only in the replay, "
                f"{diff.unexpected} only live; e.g. {'; '.join(diff.examples[:2])}"
            )
    if not report.ok:
        print(
            f"tracker: verify failed"
            f"{f': first bad seq {report.first_bad_seq}' if report.first_bad_seq else ''}",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


async def cmd_cleanup(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        report = await t.cleanup(
            idle_for=args.idle,
            stale_after=args.stale,
            max_sessions=args.max_sessions,
            dry_run=args.dry_run,
        )
    if args.json:
        emit(report)
        return 0
    capacity = [("sessions over capacity", "over capacity", report.over_capacity_sessions)]
    found = [
        ("stuck requests", "requests", report.abandoned_requests),
        ("idle sessions", "sessions", report.expired_sessions),
        *(capacity if args.max_sessions is not None else []),  # said only when asked
        ("locks", "locks", report.expired_locks),
    ]
    counts = ", ".join(f"{len(items):,} {what}" for what, _, items in found)
    print(f"{'would retire' if report.dry_run else 'retired'}: {counts}")
    for _, name, items in found:
        if items:
            more = f" ... and {len(items) - 20:,} more" if len(items) > 20 else ""
            print(f"  {name}: {', '.join(items[:20])}{more}")
    return 0


async def cmd_export(args: argparse.Namespace) -> int:
    path = database(args)
    async with existing(args) as t:  # open throughout: its close, the last, tidies the WAL
        total = (await t.stats()).events
        if args.out:
            bar = Progress("export", total)
            done = await db.in_thread(path, transfer.export_file, path, Path(args.out), bar)
            bar.close()
            print(f"exported {done.events:,} events to {args.out}{_head(done)}", file=sys.stderr)
        else:
            await db.in_thread(path, transfer.export_log, path, sys.stdout.buffer, None)
            sys.stdout.flush()
    return 0


async def cmd_backup(args: argparse.Namespace) -> int:
    path = database(args)
    async with existing(args) as t:
        if args.update:
            bar = Progress("backup (new events)", None)
        else:
            bar = Progress("backup (pages)", await db.in_thread(path, backup.pages, path))
        report = await t.backup(args.out, update=args.update, progress=bar)
    bar.close()
    new = f"{report.added:,} new event{'' if report.added == 1 else 's'}"
    done = (
        f"backed up {report.events:,} events to {report.path}"
        if report.whole
        else f"updated {report.path}: {new}, {report.events:,} in all"
    )
    checked = "checked" if report.whole else "head checked"
    _say(
        args,
        report,
        f"{done} ({report.bytes / 1e6:,.1f} MB, {checked}) in {report.seconds:.2f} s; "
        f"head {report.head_hash or '(none)'}",
    )
    return 0


async def cmd_import(args: argparse.Namespace) -> int:
    if args.file == "-" and sys.stdin.isatty():  # nothing piped: it would wait for typing
        raise InvalidInput("import - reads an export from a pipe, and stdin is a terminal")
    source, target = Path("/dev/stdin" if args.file == "-" else args.file), database(args)
    bar = Progress("import", await anyio.to_thread.run_sync(transfer.count_lines, source))
    done = await db.in_thread(target, transfer.import_file, source, target, bar)
    bar.close()
    _say(
        args,
        {"events": done.events, "db": str(target), "head_hash": done.head},
        f"imported {done.events:,} events into {target}{_head(done)}",
    )
    return 0


def _head(done: transfer.Transferred) -> str:
    """The head hash an export or import ends on, for comparing with the other side."""
    return f" (head {done.head})" if done.head else ""


async def cmd_query(args: argparse.Namespace) -> int:
    await anyio.to_thread.run_sync(_print_query, database(args), args.sql, args.json)
    return 0


def _print_query(path: Path, sql: str, as_json: bool) -> None:
    """Run ``sql`` read-only and print its rows as they come (ids and hashes in hex)."""
    with readonly.query(path, sql) as (columns, found):
        rows = ([v.hex() if isinstance(v, bytes) else v for v in row] for row in found)
        if as_json:
            for row in rows:
                emit(dict(zip(columns, row, strict=True)))
        else:
            for line in table_lines(columns, rows):
                print(line)


async def cmd_health(args: argparse.Namespace) -> int:
    async with existing(args) as t:
        health = await t.health()
    if args.json:
        emit(health)
    else:
        print(key_values(list(msgspec.structs.asdict(health).items())))
    return 0 if health.ok else 1


async def cmd_claude(args: argparse.Namespace) -> int:
    """``tracker claude validate|import``."""
    from tracker.claude import import_transcripts, projects_root, session_files, validate

    root = Path(args.root) if getattr(args, "root", None) else projects_root()
    if args.claude_command == "validate":
        check = await anyio.to_thread.run_sync(validate, args.session_id, args.cwd, root)
        if args.json:
            emit(check)
        else:
            print(key_values(list(msgspec.structs.asdict(check).items())))
        return 0 if check.ok else 1
    folder = Path(args.folder) if args.folder else root
    if not folder.is_dir():
        raise InvalidInput(f"no transcript directory {str(folder)!r}")
    async with existing(args) as t:
        bar = Progress("read", len(await anyio.to_thread.run_sync(session_files, folder)))
        report = await import_transcripts(t, folder, bar)
    bar.close()
    _say(
        args,
        report,
        f"{report.files} transcripts: {report.imported} imported, "
        f"{report.skipped} already known, {len(report.failed)} failed",
    )
    for failure in report.failed if not args.json else ():
        print(f"  {failure}", file=sys.stderr)
    return 0 if not report.failed else 1
