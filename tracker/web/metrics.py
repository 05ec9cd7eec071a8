"""``GET /metrics``: the tracker's figures in Prometheus's text format (version 0.0.4).

What a scraper needs to graph a fleet and alert on it: the counts and totals of
``Tracker.stats`` (requests in flight and finished, tokens, cost, lock waits and
expiries, events) and the sizes, lag and schema of ``Tracker.health`` without its
integrity check (which reads the whole file). Totals that only grow are counters
(``_total``); they read afresh from the database, so a rebuild never moves them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tracker.models import Health, Stats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TOKEN_KINDS = ("input", "output", "cache_read", "cache_write")

Sample = tuple[dict[str, str], float]  # labels, value


@dataclass(frozen=True)
class Family:
    """One metric: its name, ``counter``, ``gauge`` or ``summary``, its help line and
    its samples (a summary's are named with ``suffixes``: its ``_sum`` and ``_count``)."""

    name: str
    kind: str
    help: str
    samples: list[Sample]
    suffixes: tuple[str, ...] = ()


def families(stats: Stats, health: Health) -> list[Family]:
    """Every metric ``GET /metrics`` shows, from one ``stats`` and one ``health``."""
    tokens = [({"kind": kind}, getattr(stats, f"{kind}_tokens")) for kind in TOKEN_KINDS]
    return [
        _one("tracker_events_total", "counter", "Events in the log.", stats.events),
        _one("tracker_agents", "gauge", "Agents the log knows.", stats.agents),
        _one(
            "tracker_sessions", "gauge", "Sessions the log knows, of every status.", stats.sessions
        ),
        Family(
            "tracker_requests_in_flight",
            "gauge",
            "Requests not finished: pending (no session yet) or active.",
            [({"status": "pending"}, stats.pending), ({"status": "active"}, stats.active)],
        ),
        Family(
            "tracker_requests_finished_total",
            "counter",
            "Requests finished, by outcome.",
            [({"outcome": "completed"}, stats.completed), ({"outcome": "failed"}, stats.failed)],
        ),
        Family("tracker_tokens_total", "counter", "Tokens the requests reported.", tokens),
        _one("tracker_cost_usd_total", "counter", "Cost the requests reported.", stats.cost_usd),
        Family(
            "tracker_request_duration_seconds",
            "summary",
            "Durations the finished requests reported (count: those that reported one).",
            [({}, stats.duration_ms / 1000), ({}, stats.timed_requests)],
            ("_sum", "_count"),
        ),
        _one("tracker_lock_acquisitions_total", "counter", "Locks taken.", stats.lock_acquisitions),
        _one("tracker_lock_waits_total", "counter", "Locks taken after a wait.", stats.lock_waits),
        _one(
            "tracker_lock_wait_seconds_total",
            "counter",
            "Time spent waiting for locks.",
            stats.lock_wait_ms / 1000,
        ),
        _one("tracker_lock_expiries_total", "counter", "Locks that expired.", stats.lock_expiries),
        _one(
            "tracker_projection_lag_events",
            "gauge",
            "Events the projections have not applied.",
            health.lag,
        ),
        Family(
            "tracker_database_bytes",
            "gauge",
            "Size of the database's files.",
            [({"file": "database"}, health.file_bytes), ({"file": "wal"}, health.wal_bytes)],
        ),
        _one(
            "tracker_schema_version",
            "gauge",
            "The database's schema version.",
            health.schema_version,
        ),
    ]


def exposition(found: list[Family]) -> str:
    """``found`` in the text format: HELP and TYPE lines, then the samples."""
    lines = []
    for family in found:
        lines += [f"# HELP {family.name} {family.help}", f"# TYPE {family.name} {family.kind}"]
        names = [family.name + suffix for suffix in family.suffixes or ("",) * len(family.samples)]
        lines += [
            f"{name}{_labels(labels)} {v}"
            for name, (labels, v) in zip(names, family.samples, strict=True)
        ]
    return "\n".join(lines) + "\n"


def _one(name: str, kind: str, help: str, value: float) -> Family:
    return Family(name, kind, help, [({}, value)])


def _labels(labels: dict[str, str]) -> str:
    """``{name="value",...}``: the values are this module's own words (nothing to escape)."""
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{value}"' for name, value in labels.items()) + "}"
