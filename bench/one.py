"""Run one workload in this process and print its figures as JSON (used by bench)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from bench import workloads


async def run(name: str, args: list[str]) -> workloads.Figures:
    if name == "w1":
        content, text_bytes = (args[3], int(args[4])) if len(args) > 4 else ("none", 0)
        return await workloads.w1(Path(args[0]), int(args[1]), int(args[2]), content, text_bytes)
    if name == "c1":
        return await workloads.c1(Path(args[0]), Path(args[1]))
    if name == "store":
        return await workloads.store_alone(Path(args[0]), Path(args[1]))
    if name == "w2":
        return await workloads.w2(Path(args[0]))
    if name == "w3":
        return await workloads.w3(Path(args[0]), int(args[1]), int(args[2]))
    raise SystemExit(f"unknown workload {name!r}")


def main() -> None:
    name, *args = sys.argv[1:]
    if name == "c0":
        figures = workloads.c0(Path(args[0]), Path(args[1]))
    else:
        figures = anyio.run(run, name, args)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
