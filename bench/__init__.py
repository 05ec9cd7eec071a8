"""The benchmarks of ../shared/BENCH.md (``make bench``), and how their figures are judged."""

from __future__ import annotations

from tracker.render import table

Check = tuple[str, str, bool]  # the target, the figure it is judged on, whether it is met


def targets_table(checks: list[Check]) -> str:
    """The targets of issue 5 as a table: target, figure, met (yes or no)."""
    rows = [[what, figure, "yes" if met else "no"] for what, figure, met in checks]
    return table(["target (issue 5, 2-core machine)", "median", "met"], rows)
