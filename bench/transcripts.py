"""Time and peak memory of ``import_transcripts`` on a generated tree of session files.

Each file: a user prompt, two API calls written as three assistant lines (one
duplicate), and a tool result, like the CLI writes them. Prints medians of
--runs, each in a fresh process (clean peak RSS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from bench.workloads import peak_rss_mb
from tracker import Tracker
from tracker.claude import import_transcripts


def lines(session: str) -> str:
    def assistant(msg: str, out: int) -> dict[str, object]:
        return {
            "type": "assistant",
            "sessionId": session,
            "cwd": "/work/p",
            "timestamp": "2026-08-20T09:14:05Z",
            "requestId": f"req_{msg}",
            "message": {
                "id": msg,
                "model": "claude-sonnet-4-5",
                "usage": {
                    "input_tokens": 3,
                    "output_tokens": out,
                    "cache_read_input_tokens": 14000,
                    "cache_creation_input_tokens": 8200,
                },
            },
        }

    rows = [
        {
            "type": "user",
            "sessionId": session,
            "cwd": "/work/p",
            "timestamp": "2026-08-20T09:14:02Z",
            "message": {"role": "user", "content": "go"},
        },
        assistant("m1", 2),
        assistant("m1", 96),
        {"type": "user", "sessionId": session},
        assistant("m2", 544),
    ]
    return "".join(json.dumps(r) + "\n" for r in rows)


def generate(root: Path, files: int) -> None:
    for i in range(files):
        folder = root / f"-work-project-{i % 20}"
        folder.mkdir(parents=True, exist_ok=True)
        session = f"00000000-0000-4000-8000-{i:012d}"
        (folder / f"{session}.jsonl").write_text(lines(session))


async def one(files: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp) / "projects", files)
        async with Tracker.open(Path(tmp) / "t.db") as t:
            started = time.perf_counter()
            report = await import_transcripts(t, Path(tmp) / "projects")
            seconds = time.perf_counter() - started
    assert report.imported == files
    return {
        "seconds": seconds,
        "files_per_s": files / seconds,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(anyio.run(one, args.files)))
        return
    samples = [
        json.loads(
            subprocess.run(
                [sys.executable, "-m", "bench.transcripts", "--one", "--files", str(args.files)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        for _ in range(args.runs)
    ]
    for key in ("seconds", "files_per_s", "peak_rss_mb"):
        values = [s[key] for s in samples]
        print(
            f"{key}: median {statistics.median(values):,.2f} "
            f"(min {min(values):,.2f}, max {max(values):,.2f})"
        )


if __name__ == "__main__":
    main()
