"""GET /events (tracker.web.feed): pages of the log against a model, and long polls woken
by commits of this process and of another, ended by a stopping server."""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.helpers import ROOT
from tests.webclient import Client, as_json, conversations, seeded, serving, start_serving
from tracker import Tracker, store
from tracker.events import StoredEvent
from tracker.store import Filter
from tracker.tasks import task_group
from tracker.web.feed import MAX_WAIT_S
from tracker.web.params import MAX_PAGE

FILTERS: dict[str, Any] = {
    "": lambda e: True,
    "agent=a1": lambda e: e.agent_id == "a1",
    "session=odd%2Fid%201": lambda e: e.session_id == "odd/id 1",
    "request=r3": lambda e: e.request_id == "r3",
    "type=RequestCompleted,SessionAssigned": lambda e: (
        e.type in ("RequestCompleted", "SessionAssigned")
    ),
    "agent=a1&type=LockAcquired": lambda e: e.agent_id == "a1" and e.type == "LockAcquired",
}


async def all_pages(client: Client, path: str) -> tuple[list[Any], str]:
    """Every event from following ``next`` until a page is empty, and the last ``next``."""
    seen: list[Any] = []
    while True:
        status, _, body = await client("GET", path)
        assert status == 200, body
        seen += body["events"]
        if not body["events"]:
            return seen, body["next"]
        path = body["next"]


async def test_pages_of_events_are_what_a_model_says(client: Client, tracker: Tracker) -> None:
    """Every filter from several starts, in pages of several sizes, gives the events a
    filter of the whole log gives, each once, in order."""
    async with tracker.lock(agent_id="a1", holder="h", ttl=30):
        pass
    log: list[StoredEvent] = [e async for e in tracker.events()]
    for (query, keep), since, limit in itertools.product(FILTERS.items(), (0, 7), (1, 4, 1000)):
        path = f"/events?{query}&since={since}&limit={limit}"
        got, last_next = await all_pages(client, path)
        expected = [e for e in log if e.seq > since and keep(e)]
        assert expected, path  # each case has events to page through
        assert got == as_json(expected), path
        assert f"since={expected[-1].seq}&" in last_next, path  # the tail goes on from there


async def test_a_page_up_to_until_ends_the_feed(client: Client, tracker: Tracker) -> None:
    head = (await tracker.stats()).events
    _, _, body = await client("GET", "/events?since=2&until=6&limit=3")
    assert ([e["seq"] for e in body["events"]], body["next"]) == (
        [3, 4, 5],
        "/events?since=5&until=6&limit=3",
    )
    _, _, body = await client("GET", body["next"])
    assert ([e["seq"] for e in body["events"]], body["next"]) == ([6], None)
    _, _, body = await client("GET", f"/events?until={head + 5}")
    assert (len(body["events"]), body["next"]) == (head, None)


async def test_last_starts_at_the_end_and_the_feed_goes_on_from_there(
    client: Client, tracker: Tracker
) -> None:
    completed = [e.seq async for e in tracker.events(types=["RequestCompleted"])]
    _, _, body = await client("GET", "/events?type=RequestCompleted&last=2")
    assert [e["seq"] for e in body["events"]] == completed[-2:]
    assert body["next"] == f"/events?since={completed[-1]}&type=RequestCompleted"


async def answer_later(client: Client, path: str, into: list[Any]) -> None:
    into.append(await client("GET", path))


async def test_a_long_poll_answers_once_an_event_is_committed(
    client: Client, tracker: Tracker
) -> None:
    """The client times out after 10 s: an answer means the commit woke the poll (else it
    would wait its 30 s)."""
    head = (await tracker.stats()).events
    replies: list[Any] = []
    async with task_group() as tg:
        tg.start_soon(answer_later, client, f"/events?since={head}&agent=a9&wait=30", replies)
        await anyio.sleep(0.3)  # the poll is waiting
        await tracker.track_request("r-other", agent_id="a2")  # not a9's: still waiting
        await anyio.sleep(0.3)
        assert not replies
        await tracker.track_request("r-new", agent_id="a9")
    [(status, _, body)] = replies
    assert status == 200
    assert [(e["type"], e["request_id"]) for e in body["events"]] == [("RequestTracked", "r-new")]
    assert body["next"] == f"/events?since={body['events'][0]['seq']}&agent=a9&wait=30"


async def test_a_long_poll_answers_an_empty_page_after_its_wait(
    client: Client, tracker: Tracker
) -> None:
    head = (await tracker.stats()).events
    await tracker.track_request("r-other", agent_id="a2")
    status, _, body = await client("GET", f"/events?since={head}&agent=a9&wait=0.3")
    assert (status, body) == (
        200,
        {"events": [], "next": f"/events?since={head}&agent=a9&wait=0.3"},
    )


async def test_a_seq_past_the_log_is_an_empty_page(client: Client) -> None:
    """Any seq SQLite can hold is a cursor (2**63 - 1 has 19 digits)."""
    status, _, body = await client("GET", f"/events?since={2**63 - 1}")
    assert (status, body) == (200, {"events": [], "next": f"/events?since={2**63 - 1}"})


async def test_a_long_poll_answers_what_was_there_at_once(client: Client, tracker: Tracker) -> None:
    status, _, body = await client("GET", "/events?since=1&limit=2&wait=30")
    assert (status, [e["seq"] for e in body["events"]]) == (200, [2, 3])


async def test_a_long_poll_is_woken_by_another_process(db_path: Path, tracker: Tracker) -> None:
    head = (await tracker.stats()).events
    script = (
        "import anyio, sys\nfrom tracker import Tracker\n"
        "async def main():\n"
        "    async with Tracker.open(sys.argv[1]) as t:\n"
        "        await t.track_request('r-elsewhere', agent_id='a9')\n"
        "anyio.run(main)\n"
    )
    replies: list[Any] = []
    async with serving(tracker) as client, task_group() as tg:
        tg.start_soon(answer_later, client, f"/events?since={head}&wait=30", replies)
        await anyio.sleep(0.3)
        subprocess.run([sys.executable, "-c", script, str(db_path)], cwd=ROOT, check=True)
    [(status, _, body)] = replies
    assert (status, [e["request_id"] for e in body["events"]]) == (200, ["r-elsewhere"])


async def test_a_stopping_server_ends_its_long_polls(tracker: Tracker) -> None:
    stopping = anyio.Event()
    replies: list[Any] = []
    async with serving(tracker, stopping=stopping) as client, task_group() as tg:
        tg.start_soon(answer_later, client, "/events?wait=30", replies)
        await anyio.sleep(0.3)
        stopping.set()
    assert replies == [(200, replies[0][1], {"events": [], "next": "/events?since=0&wait=30"})]


@pytest.mark.slow
async def test_serve_ends_a_long_poll_when_stopped(db_path: Path) -> None:
    """Without it, the poll would hold the stop for the whole grace period (10 s), and
    then be cut without an answer."""
    await seeded(db_path)
    child, port = start_serving(db_path)
    with child:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=8)
        conn.request("GET", "/events?since=1000&wait=30")
        await anyio.sleep(0.3)  # the poll is waiting
        child.send_signal(signal.SIGTERM)
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["events"]) == (200, [])
        conn.close()
        _, err = child.communicate(timeout=8)
    assert (child.returncode, err) == (143, "")


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("since=-1", "'-1'"),
        ("since=x", "'x'"),
        (f"since={2**63}", "since must be at most"),
        ("until=" + "9" * 20, "'" + "9" * 20),
        ("until=1.5", "'1.5'"),
        ("last=%D9%A3", "'\u0663'"),  # an Arabic-Indic 3: int() would take it
        (f"limit={MAX_PAGE + 1}", f"'{MAX_PAGE + 1}'"),
        (f"wait={MAX_WAIT_S + 1}", f"'{MAX_WAIT_S + 1}'"),
        ("wait=nan", "'nan'"),
        ("wait=1e3", "'1e3'"),
        ("wait=-1", "'-1'"),
        ("wait=1&until=5", "until (5)"),
        ("type=RequestDone", "'RequestDone'"),
        ("type=", "''"),
        ("agent=", "''"),
        ("color=red", "'color'"),
        ("since=1&since=2", "'since'"),
    ],
)
async def test_a_bad_query_is_a_400_naming_the_value(
    client: Client, query: str, named: str
) -> None:
    status, _, body = await client("GET", f"/events?{query}")
    assert (status, body["error"]) == (400, "InvalidInput"), body
    assert named in body["message"], body


@pytest.mark.parametrize("batch", [3, store.FOLLOW_BATCH])
async def test_the_api_pages_the_log_with_limit(
    tracker: Tracker, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    """Read ``batch`` events at a time (a page of a few reads, or of one)."""
    monkeypatch.setattr(store, "FOLLOW_BATCH", batch)
    await conversations(tracker)
    every = [e.seq async for e in tracker.events()]
    assert every == list(range(1, len(every) + 1))
    assert [e.seq async for e in tracker.events(agent_id="a1")] == [
        e.seq for e in await tracker._store.read(0, where=Filter(agent_id="a1"), limit=10**6)
    ]
    assert [e.seq async for e in tracker.events(2, limit=3)] == every[2:5]
    assert [e.seq async for e in tracker.events(limit=0)] == []
    assert [e.seq async for e in tracker.events(last=2, limit=1)] == every[-2:-1]
    assert len([e async for e in tracker.events(limit=len(every) + 1)]) == len(every)
