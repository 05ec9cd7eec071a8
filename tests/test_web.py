"""The HTTP view (tracker.web): a real uvicorn server on a loopback port, real HTTP
requests, a real database file; ``tracker serve`` as a real process, stopped by signals."""

from __future__ import annotations

import http.client
import itertools
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn

from tests.helpers import ROOT, event_count, tamper
from tests.webclient import Client, as_json, conversations, seeded, serving, start_serving
from tracker import InvalidInput, Tracker, UnknownSession, errors
from tracker.schema import SCHEMA_VERSION
from tracker.tasks import task_group
from tracker.web import server as web
from tracker.web.app import (
    MAX_BODY_BYTES,
    PREFLIGHT_MAX_AGE_S,
    ROUTES,
    SessionsApp,
    cors_origin,
    status_of,
)
from tracker.web.params import MAX_PAGE


async def test_the_index_lists_every_route(client: Client) -> None:
    status, _, body = await client("GET", "/")
    assert status == 200
    assert len(body["routes"]) == sum(len(methods) for methods in ROUTES.values())
    assert "PATCH /sessions/{id}" in body["routes"]


async def test_reads_answer_what_the_api_answers(client: Client, tracker: Tracker) -> None:
    expected = {
        "/sessions/s1": await tracker.get_session("s1"),
        "/sessions/s2/history": await tracker.history(session_id="s2"),
        "/agents/a1": await tracker.get_agent("a1"),
        "/agents/a1/chain": await tracker.get_chain("a1"),
        "/agents/a1/history": await tracker.history(agent_id="a1"),
        "/requests/r2": await tracker.get_request("r2"),
        "/requests/r2/history": await tracker.history(request_id="r2"),
        "/stats": await tracker.stats(),
        "/stats?agent=a2": await tracker.stats("a2"),
    }
    for path, value in expected.items():
        status, _, body = await client("GET", path)
        assert (status, body) == (200, as_json(value)), path


async def test_health_checks_integrity_only_when_asked(client: Client, db_path: Path) -> None:
    """A probe may poll /health: SQLite's quick_check reads the whole file."""
    _, _, quick = await client("GET", "/health")
    assert (quick["ok"], quick["integrity"], quick["lag"]) == (True, None, 0)
    assert quick["events"] == event_count(db_path)
    _, _, whole = await client("GET", "/health?integrity=1")
    assert (whole["ok"], whole["integrity"]) == (True, "ok")
    status, _, body = await client("GET", "/health?integrity=yes")
    assert (status, body["error"]) == (400, "InvalidInput")
    assert "'yes'" in body["message"]


async def test_ids_are_percent_decoded_path_segments(client: Client) -> None:
    status, _, body = await client("GET", "/sessions/odd%2Fid%201")
    assert (status, body["session_id"], body["agent_id"]) == (200, "odd/id 1", None)
    status, _, turns = await client("GET", "/sessions/odd%2Fid%201/history")
    assert (status, [turn["request_id"] for turn in turns]) == (200, ["r5"])


async def test_a_session_shows_its_lock(client: Client, tracker: Tracker) -> None:
    lock = await tracker.acquire_lock(agent_id="a1", holder="orchestrator", ttl=60)
    _, _, body = await client("GET", "/sessions/s3")  # a1's current session: the fork
    assert (body["lock"]["holder"], body["lock"]["token"]) == ("orchestrator", lock.token)


async def test_sessions_are_listed_newest_first_and_filtered(client: Client) -> None:
    _, _, body = await client("GET", "/sessions")
    assert [s["session_id"] for s in body["sessions"]] == ["odd/id 1", "s4", "s3", "s2", "s1"]
    assert body["next"] is None  # all of them fit
    _, _, body = await client("GET", "/sessions?agent=a1")
    assert [s["session_id"] for s in body["sessions"]] == ["s3", "s2", "s1"]
    await client("PATCH", "/sessions/s2", {"status": "expired"})
    _, _, body = await client("GET", "/sessions?status=expired")
    assert [s["session_id"] for s in body["sessions"]] == ["s2"]
    _, _, body = await client("GET", "/sessions?agent=a1&status=active")
    assert [s["session_id"] for s in body["sessions"]] == ["s3", "s1"]


async def test_pages_follow_next_to_the_end(client: Client) -> None:
    seen: list[str] = []
    path: str | None = "/sessions?limit=2"
    pages = 0
    while path is not None:
        status, _, body = await client("GET", path)
        assert status == 200
        seen += [s["session_id"] for s in body["sessions"]]
        path, pages = body["next"], pages + 1
    assert seen == ["odd/id 1", "s4", "s3", "s2", "s1"]
    assert pages == 3  # the last page, one session, ends it
    _, _, body = await client("GET", "/sessions?agent=a1&limit=1")
    assert body["next"] == "/sessions?agent=a1&limit=1&before=s3"  # the filters kept


@pytest.mark.parametrize(
    ("query", "status", "error", "named"),
    [
        ("limit=x", 400, "InvalidInput", "'x'"),
        ("limit=-1", 400, "InvalidInput", "'-1'"),
        (f"limit={MAX_PAGE + 1}", 400, "InvalidInput", str(MAX_PAGE + 1)),
        ("limit=" + "9" * 5000, 400, "InvalidInput", "'99999"),  # int() raised ValueError
        ("limit=%C2%B2", 400, "InvalidInput", "'²'"),  # a digit to isdigit, not to int
        ("agent=%FF", 400, "InvalidInput", "not UTF-8"),  # was agent '\ufffd'
        ("status=asleep", 400, "InvalidInput", "'asleep'"),
        ("agnt=a1", 400, "InvalidInput", "'agnt'"),
        ("agent=a1&agent=a2", 400, "InvalidInput", "'agent'"),
        ("before=s9", 404, "UnknownSession", "'s9'"),
    ],
)
async def test_a_bad_listing_is_a_json_error_naming_the_value(
    client: Client, query: str, status: int, error: str, named: str
) -> None:
    got, _, body = await client("GET", f"/sessions?{query}")
    assert (got, body["error"]) == (status, error)
    assert named in body["message"]


async def test_agents_are_listed_by_id_with_their_current_sessions(
    client: Client, tracker: Tracker
) -> None:
    _, _, body = await client("GET", "/agents")
    assert body == {"agents": as_json(await tracker.list_agents()), "next": None}
    assert [(a["agent_id"], a["current_session_id"]) for a in body["agents"]] == [
        ("a1", "s3"),
        ("a2", "s4"),
    ]
    _, _, body = await client("GET", "/agents?limit=1")
    assert (len(body["agents"]), body["next"]) == (1, "/agents?limit=1&after=a1")
    _, _, body = await client("GET", body["next"])
    assert ([a["agent_id"] for a in body["agents"]], body["next"]) == (
        ["a2"],
        "/agents?limit=1&after=a2",
    )
    _, _, body = await client("GET", body["next"])
    assert body == {"agents": [], "next": None}
    for query, named in [("limit=x", "'x'"), ("before=a1", "'before'"), ("after=", "''")]:
        status, _, body = await client("GET", f"/agents?{query}")
        assert (status, body["error"]) == (400, "InvalidInput"), query
        assert named in body["message"], query


async def test_pages_of_agents_are_what_a_model_says(tracker: Tracker) -> None:
    """Ids sorted as SQLite and Python sort text (by code point), each agent with its
    current session and totals (as get_agent has it), paged from any name, an agent's
    or not."""
    names = ["b", "a10", "a9", "A", "é", "z", "ab", "a", "日本", "a b"]
    model: dict[str, tuple[str | None, int, int, float]] = {}  # session, completed, tokens, cost
    for n, name in enumerate(names):
        await tracker.track_request(f"r{n}", agent_id=name)
        model[name] = (None, 0, 0, 0.0)
        if n % 3:
            await tracker.update_request_session(f"r{n}", f"s{n}")
            await tracker.complete_request(f"r{n}", usage={"input_tokens": n}, cost_usd=n / 10)
            model[name] = (f"s{n}", 1, n, n / 10)
    await tracker.reset_agent("a9")  # its session is no longer current: none is
    model["a9"] = (None, *model["a9"][1:])
    agents = {name: await tracker.get_agent(name) for name in names}
    assert {
        name: (a.current_session_id, a.completed, a.input_tokens, a.cost_usd)
        for name, a in agents.items()
        if a is not None
    } == model
    for start, limit in itertools.product((None, "a", "a1", "ab", "zz"), (1, 3, 100)):
        got: list[Any] = []
        after = start
        while page := await tracker.list_agents(after=after, limit=limit):
            assert len(page) <= limit
            got += page
            after = page[-1].agent_id
        expected = sorted(name for name in names if start is None or name > start)
        assert got == [agents[name] for name in expected], (start, limit)
    with pytest.raises(InvalidInput, match="-1"):
        await tracker.list_agents(limit=-1)
    with pytest.raises(InvalidInput, match="after"):
        await tracker.list_agents(after=" ")


async def test_unknown_things_are_404s_naming_them(client: Client) -> None:
    for path, error, named in [
        ("/sessions/nope", "UnknownSession", "'nope'"),
        ("/sessions/nope/history", "UnknownSession", "'nope'"),
        ("/agents/nobody", "UnknownAgent", "'nobody'"),
        ("/agents/nobody/chain", "UnknownAgent", "'nobody'"),
        ("/requests/r9", "UnknownRequest", "'r9'"),
        ("/requests/r9/history", "UnknownRequest", "'r9'"),
        ("/nowhere", "NoRoute", "'/nowhere'"),
        ("/sessions/s1/chain", "NoRoute", "'/sessions/s1/chain'"),
    ]:
        status, _, body = await client("GET", path)
        assert (status, body["error"]) == (404, error), path
        assert named in body["message"], path


async def test_an_id_that_is_not_utf8_is_a_400(client: Client) -> None:
    """It named session '\ufffd\ufffd' (and 404'd) once the bad bytes were replaced."""
    status, _, body = await client("GET", "/sessions/%FF%FE")
    assert (status, body["error"]) == (400, "InvalidInput")
    assert "'%FF%FE'" in body["message"]


async def test_a_method_a_route_does_not_take_is_a_405_with_allow(client: Client) -> None:
    status, headers, body = await client("POST", "/sessions/s1")
    assert (status, headers["allow"], body["error"]) == (
        405,
        "GET, HEAD, PATCH, DELETE, OPTIONS",
        "MethodNotAllowed",
    )
    status, headers, _ = await client("DELETE", "/stats")
    assert (status, headers["allow"]) == (405, "GET, HEAD, OPTIONS")


async def test_head_answers_a_gets_headers_without_its_body(client: Client) -> None:
    for path in ["/sessions/s1", "/agents?limit=1", "/nowhere", "/sessions?limit=x"]:
        got, got_headers, _ = await client("GET", path)
        status, headers, nothing = await client("HEAD", path)
        assert (status, nothing) == (got, None), path
        assert headers["content-length"] == got_headers["content-length"] != "0", path
        assert headers["content-type"] == "application/json", path


async def asgi(app: SessionsApp, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages ``app`` sends for one request of ``scope`` with no body, called as an
    ASGI server calls it."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    await app(scope, receive, send)
    return sent


async def test_head_sends_no_body_whatever_the_server(tracker: Tracker) -> None:
    """uvicorn drops a HEAD response's body; an ASGI server need not."""
    scope = {"type": "http", "method": "HEAD", "path": "/stats", "query_string": b"", "headers": []}
    start, body = await asgi(SessionsApp(tracker), scope)
    assert (start["status"], body) == (200, {"type": "http.response.body", "body": b""})
    assert int(dict(start["headers"])[b"content-length"]) > 100


async def test_a_bug_is_a_500_whose_traceback_is_logged(
    tracker: Tracker, caplog: pytest.LogCaptureFixture
) -> None:
    """A request no mistake of the client's explains (here a server's scope without the
    query string ASGI requires) is an InternalError, and its traceback is logged."""
    scope = {"type": "http", "method": "GET", "path": "/stats", "headers": []}
    start, body = await asgi(SessionsApp(tracker), scope)
    assert start["status"] == 500
    assert json.loads(body["body"]) == {
        "error": "InternalError",
        "message": "see the server's log",
    }
    (record,) = [r for r in caplog.records if r.name == "tracker.web"]
    assert record.getMessage() == "GET /stats failed"
    assert record.exc_info is not None
    assert record.exc_info[0] is KeyError


async def test_options_says_what_a_route_takes(tracker: Tracker) -> None:
    """Without the token: a browser's preflight carries none."""
    async with serving(tracker, token="s3cret") as client:
        status, headers, body = await client("OPTIONS", "/sessions/s1")
        assert (status, headers["allow"], body) == (204, "GET, HEAD, PATCH, DELETE, OPTIONS", None)
        assert "content-length" not in headers
        assert "access-control-allow-origin" not in headers
        status, _, body = await client("OPTIONS", "/nowhere")
        assert (status, body["error"]) == (404, "NoRoute")
    async with serving(tracker, read_only=True) as client:
        _, headers, _ = await client("OPTIONS", "/sessions/s1")
        assert headers["allow"] == "GET, HEAD, OPTIONS"


DASHBOARD = "https://dash.example.com"


async def test_a_page_of_an_allowed_origin_may_call_the_view(tracker: Tracker) -> None:
    await conversations(tracker)
    async with serving(tracker, token="s3cret", cors_origins=[DASHBOARD]) as client:
        preflight = {"Origin": DASHBOARD, "Access-Control-Request-Method": "PATCH"}
        status, headers, _ = await client("OPTIONS", "/sessions/s1", headers=preflight)
        assert status == 204
        assert headers["access-control-allow-origin"] == DASHBOARD
        assert headers["access-control-allow-methods"] == "GET, HEAD, PATCH, DELETE, OPTIONS"
        assert headers["access-control-allow-headers"] == "authorization, content-type"
        assert headers["access-control-max-age"] == str(PREFLIGHT_MAX_AGE_S)
        assert headers["vary"] == "origin"
        signed = {"Origin": DASHBOARD, "Authorization": "Bearer s3cret"}
        status, headers, body = await client("GET", "/sessions/s1", headers=signed)
        assert (status, headers["access-control-allow-origin"]) == (200, DASHBOARD)
        status, headers, body = await client("GET", "/sessions/s1", headers={"Origin": DASHBOARD})
        assert (status, body["error"], headers["access-control-allow-origin"]) == (
            401,
            "Unauthorized",  # the page may read why
            DASHBOARD,
        )
        for other in [{"Origin": "https://evil.example"}, {}]:
            other |= {"Access-Control-Request-Method": "GET"}
            status, headers, _ = await client("OPTIONS", "/sessions/s1", headers=other)
            assert status == 204
            assert not [name for name in headers if name.startswith("access-control")], other
    async with serving(tracker, cors_origins=["*"]) as client:
        _, headers, _ = await client("GET", "/stats", headers={"Origin": "https://any.where"})
        assert headers["access-control-allow-origin"] == "*"
        assert "vary" not in headers


@pytest.mark.parametrize(
    "origin",
    [
        "https://dash.example.com/",
        "dash.example.com",
        "HTTPS://dash",
        "ftp://a",
        "https://u@a",
        "https://a:99999",
        "http://[::1",
        "",
    ],
)
def test_a_cors_origin_is_what_a_browser_sends(origin: str) -> None:
    with pytest.raises(InvalidInput, match="scheme://host"):
        cors_origin(origin)


def test_a_cors_origin_is_compared_lowercased() -> None:
    assert cors_origin("https://Dash.Example.com:8443") == "https://dash.example.com:8443"


async def test_patch_merges_metadata_and_expires(client: Client, tracker: Tracker) -> None:
    await tracker.update_session_metadata("s3", {"model": "opus", "keep": 1})
    status, _, body = await client("PATCH", "/sessions/s3", {"metadata": {"model": "sonnet"}})
    assert (status, body["metadata"]) == (200, {"model": "sonnet", "keep": 1})
    status, _, body = await client("PATCH", "/sessions/s3", {"status": "expired", "reason": "idle"})
    assert (status, body["status"], body["status_reason"]) == (200, "expired", "idle")
    assert await tracker.get_agent_session("a1") is None  # no longer a1's current session
    session = await tracker.get_session("s3")
    assert session is not None
    assert (session.status, session.metadata) == ("expired", {"model": "sonnet", "keep": 1})


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not JSON"),
        ([1, 2], "JSON object"),
        ({}, "JSON object"),
        ({"owner": "x"}, "'owner'"),
        ({"status": "active"}, "'active'"),
        ({"status": "deleted"}, "'deleted'"),
        ({"reason": "idle"}, "reason"),
        ({"metadata": "big"}, "'big'"),
        ({"metadata": {"model": "x"}, "status": "gone"}, "'gone'"),  # checked before any change
    ],
)
async def test_a_bad_patch_is_a_400_naming_it_and_changes_nothing(
    client: Client, tracker: Tracker, db_path: Path, body: Any, named: str
) -> None:
    before = event_count(db_path)
    status, _, reply = await client("PATCH", "/sessions/s1", body)
    assert (status, reply["error"]) == (400, "InvalidInput")
    assert named in reply["message"]
    assert event_count(db_path) == before


async def test_a_body_over_the_bound_is_a_413(client: Client, db_path: Path) -> None:
    before = event_count(db_path)
    huge = b'{"metadata": {"x": "' + b"y" * MAX_BODY_BYTES + b'"}}'
    status, _, body = await client("PATCH", "/sessions/s1", huge)
    assert (status, body["error"], event_count(db_path)) == (413, "BodyTooLarge", before)


async def test_delete_leaves_a_tombstone(client: Client, tracker: Tracker) -> None:
    status, _, body = await client("DELETE", "/sessions/s4?reason=gdpr")
    assert (status, body["status"], body["status_reason"]) == (200, "deleted", "gdpr")
    assert await tracker.get_agent_session("a2") is None
    status, _, body = await client("PATCH", "/sessions/s4", {"metadata": {"a": 1}})
    assert (status, body["error"]) == (409, "InvalidTransition")
    status, _, turns = await client("GET", "/sessions/s4/history")  # its history stays
    assert (status, [turn["response"] for turn in turns]) == (200, ["answer r4"])


async def test_a_read_only_server_refuses_changes(tracker: Tracker, db_path: Path) -> None:
    await conversations(tracker)
    before = event_count(db_path)
    async with serving(tracker, read_only=True) as client:
        for method, body in [("PATCH", {"metadata": {"a": 1}}), ("DELETE", None)]:
            status, headers, reply = await client(method, "/sessions/s1", body)
            assert (status, headers["allow"], reply["error"]) == (
                405,
                "GET, HEAD, OPTIONS",
                "MethodNotAllowed",
            )
            assert "read-only" in reply["message"]
        assert (await client("GET", "/sessions/s1"))[0] == 200
        _, _, index = await client("GET", "/")
        assert all(route.startswith("GET ") for route in index["routes"])
    assert event_count(db_path) == before


async def test_a_token_guards_every_route(tracker: Tracker) -> None:
    await conversations(tracker)
    async with serving(tracker, token="s3cret") as client:
        for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
            status, got, body = await client("GET", "/health", headers=headers)
            assert (status, got["www-authenticate"], body["error"]) == (
                401,
                "Bearer",
                "Unauthorized",
            )
        status, _, body = await client("GET", "/health", headers={"Authorization": "Bearer s3cret"})
        assert (status, body["schema_version"]) == (200, SCHEMA_VERSION)


async def test_a_damaged_file_is_a_500_and_a_closed_tracker_a_503(
    tracker: Tracker, db_path: Path
) -> None:
    await conversations(tracker)
    tamper(db_path, "DROP TABLE agents")
    async with serving(tracker) as client:
        status, _, body = await client("GET", "/agents/a1")
        assert (status, body["error"]) == (500, "StorageError")
        assert "no such table: agents" in body["message"]
    async with Tracker.open(db_path) as closed:
        pass
    async with serving(closed) as client:
        status, _, body = await client("GET", "/sessions/s1")
        assert (status, body["error"]) == (503, "TrackerClosed")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.UnknownAgent, 404),
        (errors.InvalidInput, 400),
        (errors.InvalidTransition, 409),
        (errors.DuplicateRequest, 409),
        (errors.LockHeld, 409),
        (errors.ReadOnlyDatabase, 403),
        (errors.DatabaseBusy, 503),
        (errors.DiskFull, 503),
        (errors.TrackerClosed, 503),
        (errors.StorageError, 500),
        (errors.IntegrityError, 500),
    ],
)
def test_each_kind_of_mistake_has_its_status(error: type[errors.TrackerError], status: int) -> None:
    """The kinds no request here can cause (a busy or full disk, a read-only file)."""
    assert status_of(error("x")) == status


async def test_a_server_that_runs_lifespan_gets_none(tracker: Tracker) -> None:
    """``uvicorn module:app`` runs the lifespan protocol: the app answers it with
    nothing (the tracker is opened and closed by whoever made the app), and serves."""
    config = uvicorn.Config(SessionsApp(tracker), lifespan="on", log_config=None)
    server, stop = uvicorn.Server(config), anyio.Event()
    with web.listen("127.0.0.1", 0) as sock:
        async with task_group() as tg:
            tg.start_soon(web.serve, server, sock, stop)
            status, _, body = await Client(sock.getsockname()[1])("GET", "/health")
            stop.set()
    assert (status, body["lag"]) == (200, 0)


async def test_serving_leaves_signals_to_its_caller(tracker: Tracker) -> None:
    """An application embedding the server keeps its own Ctrl-C and SIGTERM handling
    (uvicorn's own server would take both while it serves)."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    async with serving(tracker) as client:
        assert (await client("GET", "/health"))[0] == 200  # serving by now
        assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_the_api_lists_sessions_and_checks_its_arguments(tracker: Tracker) -> None:
    await conversations(tracker)
    page = await tracker.list_sessions(agent_id="a1", limit=2)
    assert [s.session_id for s in page] == ["s3", "s2"]
    rest = await tracker.list_sessions(agent_id="a1", before=page[-1].session_id)
    assert [s.session_id for s in rest] == ["s1"]
    assert await tracker.list_sessions(limit=0) == []
    page[0].metadata["mine"] = True  # a caller's copy
    assert (await tracker.list_sessions(agent_id="a1"))[0].metadata == {}
    with pytest.raises(InvalidInput, match="'asleep'"):
        await tracker.list_sessions(status="asleep")
    with pytest.raises(InvalidInput, match="-1"):
        await tracker.list_sessions(limit=-1)
    with pytest.raises(UnknownSession, match="'s9'"):
        await tracker.list_sessions(before="s9")


async def test_every_filter_and_page_size_lists_what_a_model_says(tracker: Tracker) -> None:
    """30 sessions over 3 agents (and none), some expired or deleted: paging through
    every filter with every page size gives the matching sessions, newest first."""
    model: list[tuple[str, str | None, str]] = []  # (session, agent, status), oldest first
    for i in range(30):
        owner = None if i % 4 == 3 else f"a{i % 4}"
        await tracker.track_request(f"r{i}", agent_id=owner)
        await tracker.update_request_session(f"r{i}", f"s{i:02}")
        state = "active"
        if i % 5 == 1:
            await tracker.expire_session(f"s{i:02}")
            state = "expired"
        elif i % 7 == 2:
            await tracker.delete_session(f"s{i:02}")
            state = "deleted"
        model.append((f"s{i:02}", owner, state))
    for agent, status, limit in itertools.product(
        (None, "a0", "a1", "a2", "nobody"), (None, "active", "expired", "deleted"), (1, 2, 7, 100)
    ):
        expected = [
            s for s, a, st in reversed(model) if agent in (None, a) and status in (None, st)
        ]
        got: list[str] = []
        before = None
        while page := await tracker.list_sessions(
            agent_id=agent, status=status, before=before, limit=limit
        ):
            assert len(page) <= limit
            got += [session.session_id for session in page]
            before = page[-1].session_id
        assert got == expected, (agent, status, limit)


def test_the_listening_socket_names_tcp() -> None:
    """asyncio turns Nagle's algorithm off only on connections of a socket made with
    IPPROTO_TCP (socket.create_server leaves it 0): without, each response's body
    waited 40 ms for the delayed ACK of its headers (1 request in 44 ms, 0.7 ms so)."""
    with web.listen("127.0.0.1", 0) as sock:
        assert (sock.proto, sock.family) == (socket.IPPROTO_TCP, socket.AF_INET)


# -- tracker serve, a real process ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("stop", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
async def test_serve_answers_a_request_under_way_when_stopped(
    db_path: Path, stop: signal.Signals, code: int
) -> None:
    """The signal lands while a PATCH is half sent: it is answered, committed, then the
    process exits (128 + the signal, as every command: SIGTERM 143, Ctrl-C 130)."""
    await seeded(db_path)
    child, port = start_serving(db_path)
    with child:
        body = json.dumps({"metadata": {"stopped": "gracefully"}}).encode()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.putrequest("PATCH", "/sessions/s1")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body[:10])  # the headers and a part of the body
        await anyio.sleep(0.3)  # received: a request under way
        child.send_signal(stop)
        await anyio.sleep(0.3)
        conn.send(body[10:])
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())["metadata"]) == (
            200,
            {"stopped": "gracefully"},
        )
        conn.close()
        _, err = child.communicate(timeout=20)
    assert (child.returncode, err) == (code, "")
    async with Tracker.open(db_path) as t:  # acknowledged, so committed
        session = await t.get_session("s1")
        assert session is not None
        assert session.metadata == {"stopped": "gracefully"}


@pytest.mark.slow
async def test_serve_reads_what_another_process_writes(db_path: Path) -> None:
    await seeded(db_path)
    child, port = start_serving(db_path, "--read-only")
    with child:
        client = Client(port)
        async with Tracker.open(db_path) as t:
            await t.expire_session("s2", reason="idle")
            status, _, body = await client("GET", "/sessions/s2")
            assert (status, body["status"]) == (200, "expired")
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 143


def serve_mistake(db: Path, *options: str) -> str:
    """What ``tracker serve`` prints on stderr when it refuses to start: one line, exit 1."""
    done = subprocess.run(
        [sys.executable, "-m", "tracker", "--db", str(db), "serve", *options],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert (done.returncode, done.stderr.count("\n")) == (1, 1), done.stderr
    return done.stderr


@pytest.mark.slow
async def test_serve_mistakes_are_one_line(db_path: Path, tmp_path: Path) -> None:
    assert "no database" in serve_mistake(tmp_path / "no.db")
    await seeded(db_path)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = serve_mistake(db_path, "--port", str(port))
    assert f"cannot listen on 127.0.0.1:{port}" in busy
    assert "'a.b/'" in serve_mistake(db_path, "--cors-origin", "a.b/")


@pytest.mark.slow
async def test_serve_without_uvicorn_says_what_to_install(db_path: Path) -> None:
    await seeded(db_path)
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"
        "from tracker.cli import main\n"
        f"raise SystemExit(main(['--db', {str(db_path)!r}, 'serve', '--port', '0']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        "tracker: serving HTTP needs uvicorn: pip install 'agent-session-tracker[http]'\n"
    )


@pytest.mark.slow
async def test_serve_on_every_address_without_a_token_warns(db_path: Path) -> None:
    await seeded(db_path)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracker",
            "--db",
            str(db_path),
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    with child:
        assert child.stderr is not None
        warning = child.stderr.readline()
        child.send_signal(signal.SIGTERM)
        child.communicate(timeout=20)
    assert "can read and change sessions: set $TRACKER_HTTP_TOKEN" in warning
    assert child.returncode == 143
