"""Import the CLI's transcripts into the tracker: one completed request per session.

Each session file becomes request ``import:<session id>`` of agent
``claude:<cwd>``, resuming its ancestor when the file is a fork, assigned its
own id, completed with the de-duplicated usage (and the legacy per-line cost
when old CLIs wrote one). Sessions the tracker already knows are skipped, so
importing twice adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec

from tracker.api import Tracker
from tracker.claude.transcripts import Summary, session_files, summarize
from tracker.errors import TrackerError
from tracker.models import Session


class ImportReport(msgspec.Struct, kw_only=True):
    files: int
    imported: int
    skipped: int  # already known to the tracker
    failed: list[str]  # "<file>: <reason>"


async def import_transcripts(
    tracker: Tracker, folder: Path, progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Import every session file under ``folder`` (a projects root or one project)."""
    files = await anyio.to_thread.run_sync(session_files, folder)
    summaries, failed = [], []
    for done, path in enumerate(files, start=1):
        try:
            summaries.append(await anyio.to_thread.run_sync(summarize, path))
        except OSError as exc:  # a dangling link, a folder, no permission: said, not fatal
            failed.append(f"{path}: cannot read it: {exc.strerror}")
        if progress:
            progress(done)
    summaries.sort(key=lambda s: (s.first_timestamp or "", s.session_id))  # ancestors first
    imported, skipped = 0, 0
    for summary in summaries:
        try:
            if await _import_one(tracker, summary):
                imported += 1
            else:
                skipped += 1
        except TrackerError as exc:
            failed.append(f"{summary.path}: {exc}")
    return ImportReport(files=len(files), imported=imported, skipped=skipped, failed=failed)


async def _import_one(t: Tracker, s: Summary) -> bool:
    if await t.get_session(s.session_id) is not None:
        return False
    rid = f"import:{s.session_id}"
    parent = await _known_ancestor(t, s.aliases)
    agent = parent.agent_id if parent else f"claude:{s.cwd}" if s.cwd else None
    metadata = {
        "source": "claude transcript",
        "path": s.path,
        "models": s.models,
        "first_timestamp": s.first_timestamp,
        "last_timestamp": s.last_timestamp,
        "api_calls": s.api_calls,
        "messages": s.messages,
    }
    await t.track_request(
        rid, agent_id=agent, metadata=metadata, session_id=parent.session_id if parent else None
    )
    await t.update_request_session(rid, s.session_id)
    await t.complete_request(rid, usage=s.usage, cost_usd=s.cost_usd)
    return True


async def _known_ancestor(t: Tracker, aliases: list[str]) -> Session | None:
    """The session a fork continues: the first of its aliases the tracker knows."""
    for alias in aliases:
        if (session := await t.get_session(alias)) is not None:
            return session
    return None
