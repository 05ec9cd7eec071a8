"""``make bench``: run the workloads of ../shared/BENCH.md and print figures and ratios.

Each run of each workload is a fresh subprocess (clean peak RSS); ceilings are
measured in the same run on the same rows: C0 and C1 for the appends, C2 for
the rebuild. Figures are medians of --runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench import Check, Figures, disk, median, scale, summary, targets_table
from bench.one import in_subprocess
from tracker.render import table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else "")
    parser.add_argument(
        "--runs", type=int, default=5, help="runs of each workload (shared machines are noisy)"
    )
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument(
        "--scale-events", type=int, default=1_000_000, help="W4's log size (0: skip W4)"
    )
    parser.add_argument("--scale-db", type=Path, help="W4: reuse or keep this big database")
    args = parser.parse_args()
    results: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="tracker-bench-") as tmp:
        for run in range(args.runs):
            base = Path(tmp) / f"run{run}"
            base.mkdir()
            w1_db = str(base / "w1.db")
            print(f"run {run + 1}/{args.runs} ...", file=sys.stderr)
            plan = [
                ("W1 append (content=none)", "w1", w1_db, str(args.agents), str(args.turns)),
                (
                    "W1 append (content=full, 1 KB)",
                    "w1",
                    str(base / "w1full.db"),
                    str(args.agents),
                    str(args.turns),
                    "full",
                    "1024",
                ),
                ("store alone (no projections)", "store", w1_db, str(base / "store.db")),
                ("C0 sqlite3 executemany", "c0", w1_db, str(base / "c0.db")),
                ("C1 aiosqlite group commit", "c1", w1_db, str(base / "c1.db")),
                ("C2 sqlite3 regroup (requests only)", "c2", w1_db, str(base / "c2.db")),
                ("W2 rebuild", "w2", w1_db),
                ("W3 point reads", "w3", w1_db, str(args.lookups), str(args.agents)),
            ]
            for label, name, *rest in plan:
                results.setdefault(label, []).append(in_subprocess(name, *rest))
                if rest[0] == w1_db and name == "w1":  # before W2 rebuilds its projections
                    results[label][-1].update(disk.by_object(Path(w1_db)))
    print_report(results)
    if args.scale_events:
        print(f"\nW4 scale: filling a log of {args.scale_events:,} events ...", file=sys.stderr)
        scale.report(args.scale_db, args.scale_events, args.runs, args.agents, args.turns)


def print_report(results: dict[str, list[Figures]]) -> None:
    c0 = median(results["C0 sqlite3 executemany"], "events_per_s")
    c1 = median(results["C1 aiosqlite group commit"], "events_per_s")
    rows = []
    for label, samples in results.items():
        key = "lookups_per_s" if "lookups_per_s" in samples[0] else "events_per_s"
        middle, low, high = summary(samples, key)
        extra = []
        for name in ("turns_per_s", "bytes_per_event", "peak_rss_mb", "p50_us", "p99_us"):
            if name in samples[0]:
                extra.append(f"{name}={median(samples, name):,.1f}")
        ratio = f"{middle / c0:.2f} / {middle / c1:.2f}" if key == "events_per_s" else "-"
        rows.append(
            [
                label,
                f"{middle:,.0f}",
                f"{low:,.0f}",
                f"{high:,.0f}",
                key.replace("_per_s", "/s"),
                ratio,
                " ".join(extra),
            ]
        )
    print(
        table(["workload", "median", "min", "max", "unit", "x C0 / x C1", "also (medians)"], rows)
    )
    c2 = median(results["C2 sqlite3 regroup (requests only)"], "events_per_s")
    w2 = median(results["W2 rebuild"], "events_per_s")
    print(
        f"\nW2 rebuild: {w2 / c2:.2f} of C2, SQLite alone rebuilding the requests table "
        "(one of the five) in one INSERT ... SELECT ... GROUP BY, no Python per event"
    )
    print()
    print(disk.report(results["W1 append (content=none)"]))
    print()
    print(targets_table(checks(results, c1)))


def checks(results: dict[str, list[Figures]], c1: float) -> list[Check]:
    """Each target of issue 5 on W1-W3, the median it is judged on, and whether it is met."""
    w1, w2, w3 = (
        results[label] for label in ("W1 append (content=none)", "W2 rebuild", "W3 point reads")
    )
    appends, rebuild = median(w1, "events_per_s"), median(w2, "events_per_s")
    lookups, p99 = median(w3, "lookups_per_s"), median(w3, "p99_us")
    rss, size = median(w1, "peak_rss_mb"), median(w1, "bytes_per_event")
    return [
        ("W1 >= 100,000 events/s", f"{appends:,.0f}", appends >= 100_000),
        ("W1 >= 1/3 of C1", f"{appends / c1:.2f}", appends / c1 >= 1 / 3),
        ("W2 >= 400,000 events/s", f"{rebuild:,.0f}", rebuild >= 400_000),
        ("W3 >= 100,000 lookups/s", f"{lookups:,.0f}", lookups >= 100_000),
        ("W3 p99 <= 20 us", f"{p99:.1f}", p99 <= 20),
        ("W1 peak RSS <= 80 MB", f"{rss:.1f}", rss <= 80),
        ("W1 <= 300 bytes/event", f"{size:.1f}", size <= 300),
    ]


if __name__ == "__main__":
    main()
