"""The CLI's transcripts on disk: find, summarize and validate session files.

Files live in ``<root>/<encoded cwd>/<session id>.jsonl`` (root:
``$CLAUDE_CONFIG_DIR/projects``, else ``~/.claude/projects``). Files are read
line by line with bounded memory: a line longer than MAX_LINE (snapshots can
be hundreds of MB) is skipped in chunks. A torn last line is tolerated,
unknown line types are ignored, and usage is de-duplicated by ``message.id`` +
``requestId``, keeping the copy with the most tokens. Subagent files
(``<session>/subagents/*.jsonl``) count toward their parent session.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from tracker.claude.result import number, usage_of
from tracker.errors import InvalidInput
from tracker.events import Usage

MAX_LINE = 8 << 20
NAME_LIMIT = 200
_decoder = msgspec.json.Decoder()


def projects_root() -> Path:
    """Where the CLI keeps transcripts: $CLAUDE_CONFIG_DIR/projects, else ~/.claude/projects."""
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(base) if base else Path.home() / ".claude") / "projects"


def project_dir_name(cwd: str) -> str:
    """The directory name of a working directory: every non-alphanumeric becomes '-'."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def project_dirs(root: Path, cwd: str) -> list[Path]:
    """The project directories of ``cwd`` (long names: the 200-character prefix plus '-')."""
    name = project_dir_name(cwd)
    if len(name) <= NAME_LIMIT:
        return [root / name] if (root / name).is_dir() else []
    prefix = name[:NAME_LIMIT] + "-"
    return sorted(d for d in root.glob(f"{glob_escape(prefix)}*") if d.is_dir())


def glob_escape(text: str) -> str:
    return re.sub(r"([\[\]*?])", r"[\1]", text)


def find_session(session_id: str, cwd: str | None = None, root: Path | None = None) -> Path | None:
    """The transcript file of ``session_id`` (in ``cwd``'s project, else anywhere); an id
    that is not a plain file name (``/``, ``..``) is InvalidInput, never a path elsewhere."""
    if session_id in ("", ".", "..") or "/" in session_id or "\0" in session_id:
        raise InvalidInput(f"session id {session_id!r} cannot name a transcript file")
    root = root or projects_root()
    folders = project_dirs(root, cwd) if cwd else sorted(d for d in root.glob("*") if d.is_dir())
    for folder in folders:
        path = folder / f"{session_id}.jsonl"
        if path.is_file():
            return path
    return None


def session_files(folder: Path) -> list[Path]:
    """Session transcripts under a projects root or one project directory."""
    direct = sorted(folder.glob("*.jsonl"))
    return direct or sorted(folder.glob("*/*.jsonl"))


class Summary(msgspec.Struct, kw_only=True):
    """What a transcript says about its session."""

    session_id: str  # the file's name: the session's identity
    path: str
    size_bytes: int
    lines: int = 0
    user_messages: int = 0
    assistant_messages: int = 0
    api_calls: int = 0
    bad_lines: int = 0
    first_bad_line: int | None = None  # its number in the file, from 1
    torn_last_line: bool = False
    skipped_long_lines: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    cwd: str | None = None
    models: list[str] = []
    aliases: list[str] = []  # other session ids seen: the ancestors of a fork
    subagent_files: int = 0
    usage: Usage = Usage()
    cost_usd: float | None = None  # only old CLIs wrote costUSD per line

    @property
    def messages(self) -> int:
        return self.user_messages + self.assistant_messages


class _Reader:
    """Accumulates one session's lines (its own file and its subagents')."""

    def __init__(self, summary: Summary) -> None:
        self.s = summary
        self.calls: dict[tuple[str, str], Usage] = {}
        self.models: set[str] = set()
        self.aliases: set[str] = set()

    def line(self, data: Any, own: bool) -> None:
        """Take one decoded line; a subagent's (``own`` False) adds usage only."""
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if own:
            self._stamp(data)
            self.s.user_messages += kind == "user"
            self.s.assistant_messages += kind == "assistant"
        if kind == "assistant":
            self._assistant(data)

    def _stamp(self, data: dict[str, Any]) -> None:
        stamp = data.get("timestamp")
        if isinstance(stamp, str):
            if self.s.first_timestamp is None or stamp < self.s.first_timestamp:
                self.s.first_timestamp = stamp
            if self.s.last_timestamp is None or stamp > self.s.last_timestamp:
                self.s.last_timestamp = stamp
        if self.s.cwd is None and isinstance(data.get("cwd"), str):
            self.s.cwd = data["cwd"]
        sid = data.get("sessionId")
        if isinstance(sid, str) and sid != self.s.session_id:
            self.aliases.add(sid)

    def _assistant(self, data: dict[str, Any]) -> None:
        message = data.get("message")
        if not isinstance(message, dict):
            message = {}
        if isinstance(message.get("model"), str):
            self.models.add(message["model"])
        usage = usage_of(message.get("usage") or {})
        key = (str(message.get("id")), str(data.get("requestId")))
        kept = self.calls.get(key)
        if kept is None or usage.tokens > kept.tokens:
            self.calls[key] = usage
        if (cost := number(data.get("costUSD"))) is not None:
            self.s.cost_usd = (self.s.cost_usd or 0.0) + cost

    def finish(self) -> Summary:
        self.s.usage, self.s.api_calls = sum(self.calls.values(), Usage()), len(self.calls)
        self.s.models, self.s.aliases = sorted(self.models), sorted(self.aliases)
        return self.s


def summarize(path: Path) -> Summary:
    """Read a session file (and its subagents') line by line into a Summary."""
    reader = _Reader(Summary(session_id=path.stem, path=str(path), size_bytes=path.stat().st_size))
    _read(path, reader, own=True)
    for sub in sorted(path.with_suffix("").glob("subagents/*.jsonl")):
        reader.s.subagent_files += 1
        _read(sub, reader, own=False)
    return reader.finish()


def _read(path: Path, reader: _Reader, *, own: bool) -> None:
    with path.open("rb") as stream:
        for number, line, complete in _lines(stream, reader.s if own else None):
            if own:
                reader.s.lines += 1
            try:
                reader.line(_decoder.decode(line), own)
            except msgspec.DecodeError:
                if not complete:
                    reader.s.torn_last_line = reader.s.torn_last_line or own
                elif own:
                    reader.s.bad_lines += 1
                    reader.s.first_bad_line = reader.s.first_bad_line or number


def _lines(stream: BinaryIO, summary: Summary | None) -> Iterator[tuple[int, bytes, bool]]:
    """(line number, line, ends with a newline) for each line that is not blank; lines
    over MAX_LINE are skipped in chunks."""
    number = 0
    while line := stream.readline(MAX_LINE):
        number += 1
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            if summary is not None:
                summary.skipped_long_lines += 1
            continue
        if line.strip():
            yield number, line, line.endswith(b"\n")


class Validation(msgspec.Struct, kw_only=True):
    """The seed's validator: does the transcript exist, read, and parse?"""

    session_id: str
    ok: bool
    path: str | None = None
    exists: bool = False
    readable: bool = False
    valid_jsonl: bool = False
    messages: int = 0
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    size_bytes: int = 0
    problems: list[str] = []


def _bad_lines(count: int, first: int | None) -> str:
    if count == 1:
        return f"line {first} is not JSON"
    return f"{count:,} lines are not JSON, the first is line {first}"


def validate(session_id: str, cwd: str | None = None, root: Path | None = None) -> Validation:
    """Check that a session's transcript exists, is readable and is valid JSON lines."""
    path = find_session(session_id, cwd, root)
    if path is None:
        where = f"the project of {cwd!r}" if cwd else str(root or projects_root())
        problem = f"no transcript {session_id}.jsonl in {where}"
        return Validation(session_id=session_id, ok=False, problems=[problem])
    try:
        summary = summarize(path)
    except OSError as exc:
        return Validation(
            session_id=session_id, ok=False, path=str(path), exists=True, problems=[str(exc)]
        )
    problems = [_bad_lines(summary.bad_lines, summary.first_bad_line)] if summary.bad_lines else []
    if summary.torn_last_line:
        problems.append("the last line is torn (tolerated: the CLI was writing)")
    valid = not summary.bad_lines
    return Validation(
        session_id=session_id,
        ok=valid,
        path=str(path),
        exists=True,
        readable=True,
        valid_jsonl=valid,
        messages=summary.messages,
        first_timestamp=summary.first_timestamp,
        last_timestamp=summary.last_timestamp,
        size_bytes=summary.size_bytes,
        problems=problems,
    )
