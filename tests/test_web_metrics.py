"""``GET /metrics``: the figures of /stats and /health, as Prometheus's own parser reads
them, over a real server."""

from __future__ import annotations

from typing import Any

import anyio
from prometheus_client.parser import text_string_to_metric_families

from tests.webclient import Client
from tracker import ManualClock, Tracker
from tracker.web.metrics import CONTENT_TYPE, TOKEN_KINDS

Scraped = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scraped(text: str) -> tuple[Scraped, dict[str, str]]:
    """Each sample by name and labels, and each family's type, as Prometheus reads them."""
    samples, kinds = {}, {}
    for family in text_string_to_metric_families(text):
        kinds[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, kinds


def expected(stats: Any, health: Any) -> Scraped:
    """What the metrics must say, read off the API's own answers."""
    one = {
        "tracker_events_total": stats.events,
        "tracker_agents": stats.agents,
        "tracker_sessions": stats.sessions,
        "tracker_cost_usd_total": stats.cost_usd,
        "tracker_request_duration_seconds_sum": stats.duration_ms / 1000,
        "tracker_request_duration_seconds_count": stats.timed_requests,
        "tracker_lock_acquisitions_total": stats.lock_acquisitions,
        "tracker_lock_waits_total": stats.lock_waits,
        "tracker_lock_wait_seconds_total": stats.lock_wait_ms / 1000,
        "tracker_lock_expiries_total": stats.lock_expiries,
        "tracker_projection_lag_events": health.lag,
        "tracker_schema_version": health.schema_version,
    }
    found: Scraped = {(name, ()): value for name, value in one.items()}
    labelled = [
        ("tracker_requests_in_flight", "status", "pending", stats.pending),
        ("tracker_requests_in_flight", "status", "active", stats.active),
        ("tracker_requests_finished_total", "outcome", "completed", stats.completed),
        ("tracker_requests_finished_total", "outcome", "failed", stats.failed),
        ("tracker_database_bytes", "file", "database", health.file_bytes),
        ("tracker_database_bytes", "file", "wal", health.wal_bytes),
    ]
    labelled += [
        ("tracker_tokens_total", "kind", kind, getattr(stats, f"{kind}_tokens"))
        for kind in TOKEN_KINDS
    ]
    found |= {(name, ((label, value),)): figure for name, label, value, figure in labelled}
    return found


async def busy_day(tracker: Tracker, clock: ManualClock) -> None:
    """Something for every figure: a failure, a request in flight, a lock waited for and
    one that expired, usage and durations."""
    await tracker.track_request("r9", agent_id="a3", lock=True, lock_ttl=30)
    await tracker.update_request_session("r9", "s9")
    await tracker.fail_request("r9", error="boom", kind="cli_error")
    await tracker.track_request("pending", agent_id="a4")
    await tracker.acquire_lock(agent_id="a5", holder="h1", ttl=30)

    async def release_soon() -> None:
        await anyio.sleep(0.2)
        await tracker.release_lock(agent_id="a5", holder="h1")

    async with anyio.create_task_group() as tg:
        tg.start_soon(release_soon)
        await tracker.acquire_lock(agent_id="a5", holder="h2", ttl=30, wait=10)
    await tracker.acquire_lock(agent_id="a6", holder="h3", ttl=1)
    clock.advance(5)
    await tracker.cleanup()  # expires a6's lock
    await tracker.track_request("r10", agent_id="a7")
    await tracker.update_request_session("r10", "s10")
    await tracker.complete_request(
        "r10", usage={f"{kind}_tokens": 7 for kind in TOKEN_KINDS}, cost_usd=0.25, duration_ms=1500
    )


async def test_metrics_are_the_figures_of_stats_and_health(
    client: Client, tracker: Tracker, clock: ManualClock
) -> None:
    await busy_day(tracker, clock)
    status, headers, body = await client.raw("GET", "/metrics")
    assert (status, headers["content-type"]) == (200, CONTENT_TYPE)
    samples, kinds = scraped(body.decode())
    stats, health = await tracker.stats(), await tracker.health(integrity=False)
    assert samples == expected(stats, health)
    moving = ("failed", "pending", "lock_waits", "lock_wait_ms", "lock_expiries", "duration_ms")
    assert all(getattr(stats, name) for name in (*moving, "cache_write_tokens"))  # none is 0
    assert stats.timed_requests == 1  # r10; r9 failed and reported no duration
    counters = {name for (name, _) in samples if name.endswith("_total")}
    assert {kinds[name.removesuffix("_total")] for name in counters} == {"counter"}
    summary = "tracker_request_duration_seconds"
    assert kinds[summary] == "summary"
    gauges = {name for (name, _) in samples} - counters - {f"{summary}_sum", f"{summary}_count"}
    assert {kinds[name] for name in gauges} == {"gauge"}


async def test_metrics_follow_the_log(client: Client, tracker: Tracker) -> None:
    before, _ = scraped((await client.raw("GET", "/metrics"))[2].decode())
    await tracker.track_request("more", agent_id="a1")
    after, _ = scraped((await client.raw("GET", "/metrics"))[2].decode())
    in_flight = ("tracker_requests_in_flight", (("status", "pending"),))
    assert after[in_flight] == before[in_flight] + 1
    events = ("tracker_events_total", ())
    assert after[events] == before[events] + 1


async def test_metrics_head_and_mistakes(client: Client) -> None:
    status, headers, body = await client.raw("GET", "/metrics")
    head = await client.raw("HEAD", "/metrics")
    assert head[0] == 200
    assert head[1]["content-length"] == headers["content-length"] == str(len(body))
    assert head[2] == b""
    status, _, refused = await client("GET", "/metrics?agent=a1")
    assert (status, refused["error"]) == (400, "InvalidInput")
    assert "unknown query parameter 'agent'" in refused["message"]
