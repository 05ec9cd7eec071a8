"""Run one workload in this process and print its figures as JSON (used by bench)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio

from bench import Figures, regroup, workloads


def in_subprocess(name: str, *args: str) -> Figures:
    """Run workload ``name`` in a fresh interpreter (a clean peak RSS); return its figures."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.one", name, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(f"bench {name} failed:\n{done.stderr}")
    figures: Figures = json.loads(done.stdout)
    return figures


async def run(name: str, args: list[str]) -> Figures:
    if name == "w1":  # path agents turns [content text_bytes [prefix]]
        defaults = ["none", "0", ""][len(args) - 3 :]
        path, agents, turns, content, text_bytes, prefix = [*args, *defaults]
        return await workloads.w1(
            Path(path), int(agents), int(turns), content, int(text_bytes), prefix
        )
    if name == "c1":
        return await workloads.c1(Path(args[0]), Path(args[1]))
    if name == "store":
        return await workloads.store_alone(Path(args[0]), Path(args[1]))
    if name == "w2":
        return await workloads.w2(Path(args[0]))
    if name == "w3":
        return await workloads.w3(Path(args[0]), int(args[1]), int(args[2]), *args[3:])
    raise SystemExit(f"unknown workload {name!r}")


def main() -> None:
    name, *args = sys.argv[1:]
    if name == "c0":
        figures = workloads.c0(Path(args[0]), Path(args[1]))
    elif name == "c2":
        figures = regroup.c2(Path(args[0]), Path(args[1]))
    else:
        figures = anyio.run(run, name, args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
