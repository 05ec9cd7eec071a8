"""The benchmarks of ../shared/BENCH.md (``make bench``), and how their figures are judged."""

from __future__ import annotations

import statistics

from tracker.render import table

Figures = dict[str, float]  # one run of one workload: figure name -> value
Check = tuple[str, str, bool]  # the target, the figure it is judged on, whether it is met


def summary(samples: list[Figures], key: str) -> tuple[float, float, float]:
    """The median, min and max of figure ``key`` over runs."""
    values = [s[key] for s in samples]
    return statistics.median(values), min(values), max(values)


def median(samples: list[Figures], key: str) -> float:
    """The median of figure ``key`` over runs."""
    return summary(samples, key)[0]


def targets_table(checks: list[Check]) -> str:
    """The targets of issue 5 as a table: target, figure, met (yes or no)."""
    rows = [[what, figure, "yes" if met else "no"] for what, figure, met in checks]
    return table(["target (issue 5, 2-core machine)", "median", "met"], rows)
