"""A stand-in for ``claude -p``: prints the fixture outputs, honours --resume.

Behaviour by flags: no --resume starts a new session (or --session-id's);
--resume keeps the id (current CLIs) unless --fork-session, or FAKE_CLAUDE_OLD=1
(CLIs up to 1.0.123: every resume answers a new id); a resumed id starting
with 11111111 is unknown. Markers in the prompt make it misbehave:
[max-turns] [not-logged-in] [crash-after-init] [hang] [bad-args] [garbage]
[noisy] (20 MB of stderr, then success) [chatty] (20 MB of stream messages first)
[slow] (1.5 s after reporting its session, then success).
Stdlib only: it runs as its own process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "claude"
FIXTURE_SESSION = "4f1c2d9e-7a3b-4c55-9e21-0b6d8a7f3c10"


def option(name: str) -> str | None:
    args = sys.argv[1:]
    return args[args.index(name) + 1] if name in args else None


def fixture(name: str, session: str) -> str:
    return (FIXTURES / name).read_text().replace(FIXTURE_SESSION, session)


def main() -> int:
    prompt = option("-p") or ""
    resume, stream = option("--resume"), option("--output-format") == "stream-json"
    if "[bad-args]" in prompt:
        print("error: unknown option '--frobnicate'", file=sys.stderr)
        return 1
    if "[noisy]" in prompt:
        for _ in range(20_000):
            sys.stderr.write("debug: " + "." * 1017 + "\n")
    if "[garbage]" in prompt:
        print("Welcome to Claude! this is not JSON")
        return 0
    if resume and resume.startswith("11111111"):
        print(fixture("result-unknown-session.json", "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"))
        print(f"No conversation found with session ID: {resume}", file=sys.stderr)
        return 1
    new = not resume or "--fork-session" in sys.argv or os.environ.get("FAKE_CLAUDE_OLD") == "1"
    session: str = (option("--session-id") or str(uuid.uuid4())) if new or not resume else resume
    lines = fixture("stream-success.jsonl", session).splitlines()
    if stream:
        print(lines[0], flush=True)  # system/init: the session id, first
        if "[chatty]" in prompt:  # a long agentic run: every message is a line
            message = {"type": "assistant", "session_id": session, "text": "." * 1000}
            for _ in range(20_000):
                print(json.dumps(message))
    if "[crash-after-init]" in prompt:
        os.kill(os.getpid(), signal.SIGKILL)
    if "[hang]" in prompt:
        time.sleep(60)
    if "[slow]" in prompt:
        time.sleep(1.5)
    if "[max-turns]" in prompt:
        print(
            fixture("result-max-turns.json", session)
            if not stream
            else json.dumps(json.loads(fixture("result-max-turns.json", session)))
        )
        return 1
    if "[not-logged-in]" in prompt:
        print(
            json.dumps(
                {
                    "type": "result",
                    "subtype": "success",
                    "is_error": True,
                    "result": "Invalid API key · Please run /login",
                    "session_id": session,
                    "total_cost_usd": 0,
                    "usage": {},
                }
            )
        )
        return 1
    if stream:
        print("\n".join(lines[1:]))
    elif "--verbose" in sys.argv:
        print(fixture("result-verbose-array.json", session))
    else:
        print(fixture("result-success.json", session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
