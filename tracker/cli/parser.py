"""The argument parser of ``tracker``: every command, its options, help and example."""

from __future__ import annotations

import argparse
import platform
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tracker.cli import commands as c
from tracker.cli.commands import Handler
from tracker.cli.serve import TOKEN_VARIABLE, cmd_serve
from tracker.schema import SCHEMA_VERSION

DISTRIBUTION = "agent-session-tracker"  # pyproject.toml's project name

COMMANDS: dict[str, tuple[Handler, str, str]] = {
    "init": (c.cmd_init, "create the database (schema included)", "tracker init --db run.db"),
    "events": (
        c.cmd_events,
        "the log, filtered; --follow tails new events live",
        "tracker events --agent a1 --type RequestFailed\n  tracker events --last 20 --follow\n"
        "  tracker events --type RequestFailed --after 1h",
    ),
    "audit": (
        c.cmd_audit,
        "the timeline of one request, session or agent, and its state",
        "tracker audit request req-42",
    ),
    "agents": (
        c.cmd_agents,
        "the agents by id: where each one's next request continues, its totals",
        "tracker agents\n  tracker agents --after agent-099 --limit 100 --json",
    ),
    "chain": (
        c.cmd_chain,
        "an agent's session chain (a tree when forked)",
        "tracker chain a1 --tree",
    ),
    "history": (
        c.cmd_history,
        "a conversation's turns so far (prompts and responses as kept), oldest first",
        "tracker history agent a1\n  tracker history session 4f1c --json\n"
        "  tracker history request req-42  # what the model was given",
    ),
    "stats": (
        c.cmd_stats,
        "counts, tokens, cost, durations, failure rate",
        "tracker stats --by day\n  tracker stats --agent a1\n"
        "  tracker stats --by session --limit 10",
    ),
    "replay": (
        c.cmd_replay,
        "rebuild the projections, or the state as of a point into a file",
        "tracker replay\n  tracker replay --at 2026-11-21T08:00:00Z --into then.db",
    ),
    "verify": (
        c.cmd_verify,
        "check the hash chain and that projections equal a replay",
        "tracker verify",
    ),
    "cleanup": (
        c.cmd_cleanup,
        "retire idle sessions, abandon stuck requests, expire locks",
        "tracker cleanup --idle 7d --stale 1h --dry-run\n  tracker cleanup --max-sessions 5000",
    ),
    "export": (c.cmd_export, "the log as JSON lines", "tracker export --out log.jsonl"),
    "backup": (
        c.cmd_backup,
        "a copy of the whole database, consistent while others write, checked",
        "tracker backup /backups/tracker.db\n  tracker backup /backups/tracker.db --update",
    ),
    "import": (
        c.cmd_import,
        "create a database from exported JSON lines",
        "tracker import log.jsonl --db copy.db\n"
        "  gunzip -c log.jsonl.gz | tracker import - --db copy.db",
    ),
    "query": (
        c.cmd_query,
        "read-only SQL (the connection cannot write)",
        'tracker query "SELECT * FROM agent_usage ORDER BY cost_usd DESC LIMIT 5"',
    ),
    "claude": (
        c.cmd_claude,
        "the Claude CLI's transcripts: validate one, import them all",
        "tracker claude validate 4f1c2d9e-7a3b-4c55-9e21-0b6d8a7f3c10 --cwd ~/work/api\n"
        "  tracker claude import ~/.claude/projects",
    ),
    "health": (c.cmd_health, "schema version, integrity, projection lag, sizes", "tracker health"),
    "serve": (
        cmd_serve,
        "the HTTP view: sessions (list, get, patch, delete), agents, requests, stats, the log "
        "(a long poll tails it), as JSON; /metrics for Prometheus",
        "tracker serve --port 8765\n  curl -s 'localhost:8765/sessions?limit=5'\n"
        f"  {TOKEN_VARIABLE}=... tracker serve --host 0.0.0.0 --read-only",
    ),
}


def _common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--db",
        default=default,
        metavar="PATH",
        help="database file (default: $TRACKER_DB, else ./tracker.db)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="JSON output for scripts (JSON lines for streams)",
    )


def _arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "events":
        p.add_argument("--since", type=int, default=0, metavar="SEQ", help="after this seq")
        p.add_argument("--until", type=int, metavar="SEQ", help="up to this seq")
        p.add_argument(
            "--after",
            metavar="WHEN",
            help="at or after a time (ISO 8601) or an age ago (10m, 1h30m, 7d)",
        )
        p.add_argument("--before", metavar="WHEN", help="before a time, or an age ago")
        p.add_argument("--agent")
        p.add_argument("--session")
        p.add_argument("--request")
        p.add_argument("--type", action="append", metavar="TYPE", help="repeatable")
        p.add_argument(
            "--last",
            type=int,
            metavar="N",
            help="only the last N (then the new ones, with --follow)",
        )
        p.add_argument(
            "--limit",
            type=int,
            metavar="N",
            help="at most N: the first N from where --since or --last starts (a page); "
            "with --follow, stop after N",
        )
        p.add_argument("--follow", action="store_true", help="keep printing new events")
    elif name == "audit":
        p.add_argument("kind", choices=["request", "session", "agent"])
        p.add_argument("id")
    elif name == "history":
        p.add_argument("kind", choices=["agent", "session", "request"])
        p.add_argument("id")
    elif name == "agents":
        p.add_argument("--after", metavar="AGENT", help="those whose ids sort after AGENT")
        p.add_argument("--limit", type=int, metavar="N", help="at most N (all by default)")
    elif name == "chain":
        p.add_argument("agent")
        p.add_argument("--tree", action="store_true")
    elif name == "stats":
        p.add_argument("--agent")
        p.add_argument("--by", choices=["day", "agent", "session"])
        p.add_argument(
            "--limit",
            type=int,
            metavar="N",
            help="with --by: the N most expensive agents or sessions, or the N latest days",
        )
    elif name == "replay":
        point = p.add_mutually_exclusive_group()
        point.add_argument("--until", type=int, metavar="SEQ")
        point.add_argument("--at", metavar="TIME", help="ISO 8601, e.g. 2026-11-21T08:00:00Z")
        p.add_argument("--into", type=Path, metavar="FILE")
    elif name == "cleanup":
        p.add_argument("--idle", metavar="AGE", help="expire sessions idle this long, e.g. 7d")
        p.add_argument(
            "--stale",
            metavar="AGE",
            help="abandon requests older than this, e.g. 1h (not one holding an unexpired lock)",
        )
        p.add_argument(
            "--max-sessions",
            type=int,
            metavar="N",
            help="then expire the least recently active sessions beyond N active ones",
        )
        p.add_argument("--dry-run", action="store_true")
    elif name == "export":
        p.add_argument("--out", metavar="FILE")
    elif name == "backup":
        p.add_argument("out", metavar="FILE", help="the backup (a file there is replaced)")
        p.add_argument(
            "--update",
            action="store_true",
            help="FILE is an earlier backup of this database: append the events it lacks "
            "(a missing FILE gets a whole backup)",
        )
    elif name == "import":
        p.add_argument("file", help="an export, or - to read it from stdin (a pipe)")
    elif name == "query":
        p.add_argument("sql")
    elif name == "claude":
        _claude_arguments(p)
    elif name == "serve":
        p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
        p.add_argument("--port", type=int, default=8765, help="8765; 0: any free port")
        p.add_argument("--read-only", action="store_true", help="refuse PATCH and DELETE")
        p.add_argument("--access-log", action="store_true", help="log each request on stderr")
        p.add_argument(
            "--cors-origin",
            action="append",
            default=[],
            metavar="ORIGIN",
            help="let pages of ORIGIN (https://dash.example.com; *: any) call it; repeatable",
        )


def versions() -> str:
    """What ``tracker --version`` prints: the package's version and what the file format
    and behaviour depend on (the schema version, SQLite's, Python's)."""
    from importlib import metadata  # here, not at startup, where every command paid for it

    try:
        package = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        package = "(not installed)"
    return (
        f"tracker {package} (schema v{SCHEMA_VERSION}, SQLite {sqlite3.sqlite_version}, "
        f"Python {platform.python_version()})"
    )


class _Versions(argparse.Action):
    """--version: print ``versions()`` and exit (worked out only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the versions and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> NoReturn:
        print(versions())
        parser.exit()


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2) that points to the help,
    not the usage block followed by the error."""

    def error(self, message: str, prog: str | None = None) -> NoReturn:
        prog = prog or self.prog
        self.exit(2, f"{prog}: {message} (see {prog} --help)\n")

    def parse_command(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse ``argv``; an argument no command takes is blamed on the command given."""
        args, extra = self.parse_known_args(argv)
        if extra:
            words = (self.prog, args.command, getattr(args, "claude_command", None))
            prog = " ".join(w for w in words if w)
            self.error(f"unrecognized arguments: {' '.join(extra)}", prog)
        return args


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="tracker",
        description="Operate a session tracker database: the event log of agent "
        "conversations and its projections.",
        epilog="The database is --db PATH, else $TRACKER_DB, else ./tracker.db. "
        "Every command takes --json.",
    )
    _common(parser, suppress=False)
    parser.add_argument("--version", action=_Versions)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (handler, summary, example) in COMMANDS.items():
        sub = commands.add_parser(
            name,
            help=summary,
            description=summary,
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _common(sub, suppress=True)
        _arguments(name, sub)
        sub.set_defaults(handler=handler)
    return parser


def _claude_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="claude_command", metavar="ACTION", required=True)
    check = sub.add_parser(
        "validate",
        help="check a session's transcript: exists, readable, "
        "valid JSONL, messages, first/last time, size",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tracker claude validate 4f1c2d9e-7a3b-4c55-9e21-0b6d8a7f3c10 "
        "--cwd ~/work/api",
    )
    check.add_argument("session_id")
    check.add_argument("--cwd", help="the session's working directory (default: search all)")
    read = sub.add_parser(
        "import",
        help="import every transcript as a completed request (importing twice adds nothing)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  tracker claude import ~/.claude/projects --db tracker.db",
    )
    read.add_argument(
        "folder", nargs="?", help="a projects root or one project directory (default: the CLI's)"
    )
    for action in (check, read):
        _common(action, suppress=True)
        action.add_argument(
            "--root",
            help="transcript root (default: $CLAUDE_CONFIG_DIR/projects, else ~/.claude/projects)",
        )
