"""Run ``claude -p`` and drive the tracker with what it reports.

One run: track the request (taking the agent's lock), start the CLI, assign
the session as soon as it is known (stream-json's ``system/init``, so a crash
mid-run still records it), then complete with the usage and cost the CLI
reported, or fail with its error kind. The lock is renewed while the CLI runs,
however long: its TTL only bounds how long a crashed orchestrator's lock
outlives it. A timeout kills the process. Runs across agents share a
concurrency limit.
"""

from __future__ import annotations

import logging
import os
import subprocess
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import msgspec
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from tracker.api import Tracker
from tracker.claude.result import ClaudeOutputError, ClaudeResult, parse_output, parse_result
from tracker.locking import conversation
from tracker.models import CURRENT, Request, ResumedSession

MAX_LINE = 64 << 20
MAX_STDERR = 1 << 20
STREAM_TAIL = 50  # stream-json lines kept
log = logging.getLogger("tracker")


@dataclass(frozen=True)
class Run:
    """A finished run: the request as tracked, and the CLI's result if it gave one."""

    request: Request
    result: ClaudeResult | None


class ClaudeRunner:
    """Runs the Claude CLI for agents and records every run in ``tracker``."""

    def __init__(
        self,
        tracker: Tracker,
        *,
        claude_bin: str | None = None,
        concurrency: int = 4,
        timeout: float = 600,
        lock_wait: float = 60,
        lock_ttl: float = 120,
        stream: bool = True,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.tracker, self.timeout, self.lock_wait = tracker, timeout, lock_wait
        self.lock_ttl = lock_ttl
        self.claude_bin = claude_bin or os.environ.get("CLAUDE_BIN") or "claude"
        self.stream, self.extra_args = stream, tuple(extra_args)
        self._limit = anyio.CapacityLimiter(concurrency)

    def command(
        self,
        prompt: str,
        *,
        resume: str | None = None,
        fork: bool = False,
        session_id: str | None = None,
        model: str | None = None,
    ) -> list[str]:
        """The command line of one run."""
        output = ["stream-json", "--verbose"] if self.stream else ["json"]
        argv = [self.claude_bin, "-p", prompt, "--output-format", *output]
        if resume:
            argv += ["--resume", resume]
        if fork:
            argv.append("--fork-session")
        if session_id:
            argv += ["--session-id", session_id]
        if model:
            argv += ["--model", model]
        return [*argv, *self.extra_args]

    async def run(
        self,
        prompt: str,
        *,
        agent_id: str | None = None,
        request_id: str | None = None,
        resume: ResumedSession = CURRENT,
        fork: bool = False,
        session_id: str | None = None,
        model: str | None = None,
        cwd: str | Path | None = None,
    ) -> Run:
        """Run the CLI once for ``agent_id``, resuming by default its current session as of
        when the run holds the agent's lock (a run that waited for it continues the session
        the run before it was given)."""
        async with self._limit:
            rid = request_id or f"claude-{uuid.uuid4()}"
            if resume is CURRENT and agent_id is None:
                resume = None
            lock = not fork and (agent_id is not None or resume is not None)
            request = await self.tracker.track_request(
                rid,
                agent_id=agent_id,
                session_id=resume,
                prompt=prompt,
                lock=lock,
                lock_ttl=self.lock_ttl,
                lock_wait=self.lock_wait,
                metadata={"cli": "claude", "fork": fork, "model": model},
            )
            argv = self.command(
                prompt,
                resume=request.resumed_session_id,
                fork=fork,
                session_id=session_id,
                model=model,
            )
            keep = self._keeping(request) if lock else None
            execution = _Execution(self.tracker, rid, self.timeout, self.stream, keep)
            return await execution.run(argv, cwd)

    def _keeping(self, request: Request) -> Callable[[], Awaitable[None]]:
        """The renewal of the lock a run took with its request: the agent's, or else the
        resumed session's."""
        found = conversation(request.agent_id, request.resumed_session_id)
        assert found is not None, "a run locks only with an agent or a session to resume"
        scope, target = found
        return partial(
            self.tracker.keep_lock,
            agent_id=target if scope == "agent" else None,
            session_id=target if scope == "session" else None,
            holder=request.request_id,
            ttl=self.lock_ttl,
        )


class _Execution:
    """One process, and the tracker calls its output leads to."""

    def __init__(
        self,
        tracker: Tracker,
        request_id: str,
        timeout: float,
        stream: bool,
        keep_lock: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self.t, self.rid, self.timeout, self.stream = tracker, request_id, timeout, stream
        self.keep_lock = keep_lock
        self.assigned: str | None = None
        self.result: ClaudeResult | None = None
        # json output is one document, kept whole; stream-json lines are read as they
        # come, so only the last few are kept (for an error when no result came)
        self.stdout: deque[bytes] = deque(maxlen=STREAM_TAIL if stream else None)
        self.stderr = bytearray()

    async def run(self, argv: list[str], cwd: str | Path | None) -> Run:
        try:
            returncode = await self._process(argv, cwd)
        except TimeoutError:
            return await self._fail(
                f"no result within {self.timeout:g}s: the CLI was killed", "timeout"
            )
        except OSError as exc:
            return await self._fail(f"cannot run {argv[0]!r}: {exc.strerror}", "cli_error")
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._fail("the orchestrator cancelled the run", "cancelled")
            raise
        return await self._finish(returncode)

    async def _process(self, argv: list[str], cwd: str | Path | None) -> int:
        async with await anyio.open_process(argv, cwd=cwd, stdin=subprocess.DEVNULL) as proc:
            try:
                with anyio.fail_after(self.timeout):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(self._read_stderr, proc)
                        renewing = anyio.CancelScope()
                        if self.keep_lock is not None:
                            tg.start_soon(self._renew, renewing, self.keep_lock)
                        await self._read_stdout(proc)
                        renewing.cancel()  # the CLI is done: its request finishes next
                    return await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with anyio.CancelScope(shield=True):
                        await proc.wait()

    @staticmethod
    async def _renew(scope: anyio.CancelScope, keep_lock: Callable[[], Awaitable[None]]) -> None:
        """Renew the run's lock until ``scope`` is cancelled, leaving the group that reads
        stderr running (the CLI's error is at its end)."""
        with scope:
            await keep_lock()

    async def _read_stderr(self, proc: Process) -> None:
        """Keep the end of what the CLI says on stderr (where its error is), at most
        MAX_STDERR bytes however much it writes."""
        assert proc.stderr is not None
        async for chunk in proc.stderr:
            self.stderr += chunk
            del self.stderr[:-MAX_STDERR]

    async def _read_stdout(self, proc: Process) -> None:
        assert proc.stdout is not None
        reader = BufferedByteReceiveStream(proc.stdout)
        while True:
            try:
                line = await reader.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                rest = reader.buffer
                if rest.strip():
                    await self._line(bytes(rest))
                return
            await self._line(line)

    async def _line(self, line: bytes) -> None:
        self.stdout.append(line)
        if not self.stream:
            return
        try:
            message: Any = msgspec.json.decode(line)
        except msgspec.DecodeError:
            return  # not a stream line (json mode output is parsed at the end)
        if not isinstance(message, dict):
            return
        if message.get("type") == "system" and message.get("subtype") == "init":
            await self._assign(message.get("session_id"))
        elif message.get("type") == "result":
            self.result = parse_result(message, self.stderr.decode(errors="replace"))

    async def _assign(self, session_id: Any) -> None:
        if isinstance(session_id, str) and session_id and self.assigned is None:
            await self.t.update_request_session(self.rid, session_id)
            self.assigned = session_id

    async def _finish(self, returncode: int) -> Run:
        stderr = self.stderr.decode(errors="replace")
        if self.result is None:
            try:
                self.result = parse_output(b"\n".join(self.stdout), stderr)
            except ClaudeOutputError as exc:
                kind = "crashed" if self.assigned else "cli_error"
                return await self._fail(f"exit code {returncode}: {exc}", kind)
        result = self.result
        if result.session_id and result.kind != "unknown_session":
            await self._assign(result.session_id)
        if result.ok and not self.assigned:
            return await self._fail("the CLI reported success but no session id", "cli_error")
        if result.ok:
            request = await self.t.complete_request(
                self.rid,
                response=result.text,
                usage=result.usage,
                cost_usd=result.cost_usd,
                duration_ms=result.duration_ms,
                metadata={"num_turns": result.num_turns},
            )
            return Run(request, result)
        return await self._fail(result.error or "the CLI reported an error", result.kind)

    async def _fail(self, error: str, kind: str) -> Run:
        result = self.result
        request = await self.t.fail_request(
            self.rid,
            error=error,
            kind=kind,
            usage=result.usage if result else None,
            cost_usd=result.cost_usd if result else None,
            duration_ms=result.duration_ms if result else None,
        )
        return Run(request, result)
