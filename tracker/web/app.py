"""The HTTP view of a tracker: an ASGI application serving JSON (SPEC §9).

    GET    /                          the routes below
    GET    /sessions                  ?agent= &status= &before= &limit= : newest first
    GET    /sessions/{id}             a session, with its lock
    PATCH  /sessions/{id}             {"metadata": {...}} merged, {"status": "expired"}
    DELETE /sessions/{id}             ?reason= : a tombstone (its history stays in the log)
    GET    /sessions/{id}/history     the turns of its conversation
    GET    /agents                    ?after= &limit= : by id, with their current sessions
    GET    /agents/{id}               an agent; /chain its sessions, /history its turns
    GET    /requests/{id}             a request; /history the turns it continued and its own
    GET    /events                    ?since= &agent= &type= &wait= ... : the log (feed.py)
    GET    /stats                     ?agent= : counts, tokens, cost, failure rate
    GET    /health                    ?integrity=1 : schema version, lag, sizes (integrity)
    GET    /metrics                   the figures of /stats and /health for Prometheus

HEAD takes every GET route, and OPTIONS says what a route takes, with the CORS
preflight answer for the origins allowed (``cors_origins``), whose pages may then
call the view from a browser. Any ASGI server runs it (``tracker serve`` runs
uvicorn), or an application mounts it. A mistake is a JSON error, ``{"error":
"InvalidInput", "message": "..."}``, with the status its kind calls for; a bug is a
500 whose traceback is logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

import anyio
import msgspec

from tracker import errors
from tracker.api import Tracker
from tracker.errors import InvalidInput, TrackerError
from tracker.web import feed, metrics
from tracker.web.params import page_size

T = TypeVar("T")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY_BYTES = 2 << 20  # a metadata update is at most 1 MiB as JSON
PREFLIGHT_MAX_AGE_S = 600  # how long a browser may reuse a CORS preflight's answer
log = logging.getLogger("tracker.web")
_json = msgspec.json.Encoder()

# Kinds of mistake and their status, the first that matches wins.
_STATUS: tuple[tuple[type[TrackerError], int], ...] = (
    (errors.NotFound, 404),
    (errors.InvalidInput, 400),
    (errors.InvalidTransition, 409),
    (errors.DuplicateRequest, 409),
    (errors.LockError, 409),
    (errors.ReadOnlyDatabase, 403),
    (errors.DatabaseBusy, 503),  # for longer than the busy timeout: try again
    (errors.DiskFull, 503),
    (errors.TrackerClosed, 503),  # the server is stopping
)


class HttpError(TrackerError):
    """A request the HTTP view refuses before it reaches the tracker."""

    def __init__(
        self, status: int, kind: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, dict(headers or {})


@dataclass(frozen=True)
class Text:
    """A body sent as it is, not as JSON."""

    text: str
    content_type: str


@dataclass
class Response:
    status: int
    body: Any  # sent as JSON, but a Text
    headers: dict[str, str] = field(default_factory=dict)

    async def send(self, send: Send, *, head: bool = False) -> None:
        """Send it; ``head``: the headers only, as a GET would have them."""
        content, headers = b"", {"cache-control": "no-store"}
        if self.status != 204:  # no content: no body, nor its headers
            content, kind = _encoded(self.body)
            headers |= {"content-type": kind, "content-length": str(len(content))}
        raw = [
            (name.encode(), value.encode("latin-1"))
            for name, value in (headers | self.headers).items()
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if head else content})


def _encoded(body: Any) -> tuple[bytes, str]:
    if isinstance(body, Text):
        return body.text.encode(), body.content_type
    return _json.encode(body), "application/json"


@dataclass(frozen=True)
class Call:
    """What a handler reads of an HTTP request: the id in its path, its query, its body."""

    ident: str
    query: dict[str, str]
    body: Any

    def take(self, *names: str) -> dict[str, str]:
        """The query parameters, which must be among ``names``."""
        unknown = sorted(set(self.query) - set(names))
        if unknown:
            allowed = ", ".join(names) or "none"
            raise InvalidInput(f"unknown query parameter {unknown[0]!r} (allowed: {allowed})")
        return self.query


Handler = Callable[["SessionsApp", Call], Awaitable[Any]]


class SessionsApp:
    """The ASGI application over an open ``Tracker``. ``read_only``: PATCH and DELETE
    are refused; ``token``: every request must send ``Authorization: Bearer <token>``
    (but OPTIONS: a browser's preflight carries none); ``cors_origins``: the origins
    ("https://dash.example.com", or "*": any) whose pages may call it; ``stopping``:
    once set, long polls (``/events?wait=``) answer at once (the server is stopping)."""

    def __init__(
        self,
        tracker: Tracker,
        *,
        read_only: bool = False,
        token: str | None = None,
        cors_origins: Iterable[str] = (),
        stopping: anyio.Event | None = None,
    ):
        self.tracker = tracker
        self.read_only = read_only
        self.token = token
        self.cors_origins = frozenset(cors_origin(origin) for origin in cors_origins)
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """HTTP only: a server's lifespan scope returns at once, which ASGI servers take
        as "no lifespan" (nothing to start or stop: whoever opened the tracker closes it)."""
        if scope["type"] == "http":
            response = await self._respond(scope, receive)
            response.headers |= self._cors(scope)
            await response.send(send, head=scope["method"] == "HEAD")

    async def _respond(self, scope: Scope, receive: Receive) -> Response:
        try:
            if scope["method"] == "OPTIONS":
                return self._options(scope)
            self._check_token(scope)
            handler, call = await self._route(scope, receive)
            return Response(200, await handler(self, call))
        except HttpError as exc:
            return _error(exc.status, exc.kind, exc, exc.headers)
        except TrackerError as exc:
            return _error(status_of(exc), type(exc).__name__, exc)
        except Exception:
            log.exception("%s %s failed", scope["method"], scope["path"])
            return Response(500, {"error": "InternalError", "message": "see the server's log"})

    def _check_token(self, scope: Scope) -> None:
        if self.token is None:
            return
        given = (_header(scope, b"authorization") or "").encode("latin-1")
        if not hmac.compare_digest(given, b"Bearer " + self.token.encode()):
            raise HttpError(
                401,
                "Unauthorized",
                "send the server's token: Authorization: Bearer <token>",
                {"www-authenticate": "Bearer"},
            )

    async def _route(self, scope: Scope, receive: Receive) -> tuple[Handler, Call]:
        parts, methods = _route_of(scope)
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        if method not in self._allowed(methods):
            why = "this server is read-only" if method in methods else "not allowed here"
            raise HttpError(
                405,
                "MethodNotAllowed",
                f"{scope['method']} {scope['path']}: {why}",
                {"allow": self._allow(methods)},
            )
        body = await _body(receive) if method == "PATCH" else None
        return methods[method], Call(parts[1] if len(parts) > 1 else "", _query(scope), body)

    def _allowed(self, methods: dict[str, Handler]) -> list[str]:
        return [method for method in methods if method == "GET" or not self.read_only]

    def _allow(self, methods: dict[str, Handler]) -> str:
        """The methods a route takes, as an Allow header says them."""
        allowed = self._allowed(methods)
        return ", ".join([*allowed[:1], "HEAD", *allowed[1:], "OPTIONS"])

    def _options(self, scope: Scope) -> Response:
        """OPTIONS: what the route takes, and a CORS preflight's answer for an allowed
        origin (the request's own CORS headers come with every response: ``_cors``)."""
        _, methods = _route_of(scope)
        headers = {"allow": self._allow(methods)}
        if _header(scope, b"access-control-request-method") and self._cors(scope):
            headers |= {
                "access-control-allow-methods": headers["allow"],
                "access-control-allow-headers": "authorization, content-type",
                "access-control-max-age": str(PREFLIGHT_MAX_AGE_S),
            }
        return Response(204, None, headers)

    def _cors(self, scope: Scope) -> dict[str, str]:
        """The CORS headers for a request from an allowed origin (none for others, whose
        pages the browser then keeps from reading the answer)."""
        origin = _header(scope, b"origin")
        if origin is None:
            return {}
        if "*" in self.cors_origins:
            return {"access-control-allow-origin": "*"}
        if origin.lower() in self.cors_origins:
            return {"access-control-allow-origin": origin, "vary": "origin"}
        return {}

    # -- handlers --------------------------------------------------------------

    async def index(self, call: Call) -> Any:
        call.take()
        return {
            "routes": [
                f"{method} /{'/'.join(shape)}"
                for shape, methods in ROUTES.items()
                for method in self._allowed(methods)
            ]
        }

    async def list_sessions(self, call: Call) -> Any:
        query = call.take("agent", "status", "before", "limit")
        limit = page_size(query.get("limit", "100"))
        page = await self.tracker.list_sessions(
            agent_id=query.get("agent"),
            status=query.get("status"),
            before=query.get("before"),
            limit=limit,
        )
        return _paged("sessions", page, limit, query, before=page[-1].session_id if page else "")

    async def list_agents(self, call: Call) -> Any:
        query = call.take("after", "limit")
        limit = page_size(query.get("limit", "100"))
        page = await self.tracker.list_agents(after=query.get("after"), limit=limit)
        return _paged("agents", page, limit, query, after=page[-1].agent_id if page else "")

    async def get_session(self, call: Call) -> Any:
        call.take()
        return await self._session(call)

    async def patch_session(self, call: Call) -> Any:
        call.take()
        change = _patch(call.body)
        if "metadata" in change:
            await self.tracker.update_session_metadata(call.ident, change["metadata"])
        if "status" in change:
            await self.tracker.expire_session(call.ident, reason=change.get("reason", "manual"))
        return await self._session(call)

    async def delete_session(self, call: Call) -> Any:
        reason = call.take("reason").get("reason")
        await self.tracker.delete_session(call.ident, reason=reason)
        return await self._session(call)

    async def session_history(self, call: Call) -> Any:
        call.take()
        return await self.tracker.history(session_id=call.ident)

    async def get_agent(self, call: Call) -> Any:
        call.take()
        return _known(await self.tracker.get_agent(call.ident), errors.UnknownAgent, call)

    async def agent_chain(self, call: Call) -> Any:
        await self.get_agent(call)
        return await self.tracker.get_chain(call.ident)

    async def agent_history(self, call: Call) -> Any:
        await self.get_agent(call)
        return await self.tracker.history(agent_id=call.ident)

    async def get_request(self, call: Call) -> Any:
        call.take()
        return _known(await self.tracker.get_request(call.ident), errors.UnknownRequest, call)

    async def request_history(self, call: Call) -> Any:
        call.take()
        return await self.tracker.history(request_id=call.ident)

    async def events(self, call: Call) -> Any:
        return await feed.events_page(self.tracker, call.take(*feed.PARAMETERS), self.stopping)

    async def stats(self, call: Call) -> Any:
        return await self.tracker.stats(call.take("agent").get("agent"))

    async def health(self, call: Call) -> Any:
        """Cheap unless ``?integrity=1``: a probe may poll it."""
        checked = call.take("integrity").get("integrity", "0")
        if checked not in ("0", "1"):
            raise InvalidInput(f"integrity must be 0 or 1, got {checked!r}")
        return await self.tracker.health(integrity=checked == "1")

    async def metrics(self, call: Call) -> Any:
        call.take()
        stats, health = await self.tracker.stats(), await self.tracker.health(integrity=False)
        return Text(metrics.exposition(metrics.families(stats, health)), metrics.CONTENT_TYPE)

    async def _session(self, call: Call) -> Any:
        return _known(await self.tracker.get_session(call.ident), errors.UnknownSession, call)


ROUTES: dict[tuple[str, ...], dict[str, Handler]] = {
    (): {"GET": SessionsApp.index},
    ("sessions",): {"GET": SessionsApp.list_sessions},
    ("sessions", "{id}"): {
        "GET": SessionsApp.get_session,
        "PATCH": SessionsApp.patch_session,
        "DELETE": SessionsApp.delete_session,
    },
    ("sessions", "{id}", "history"): {"GET": SessionsApp.session_history},
    ("agents",): {"GET": SessionsApp.list_agents},
    ("agents", "{id}"): {"GET": SessionsApp.get_agent},
    ("agents", "{id}", "chain"): {"GET": SessionsApp.agent_chain},
    ("agents", "{id}", "history"): {"GET": SessionsApp.agent_history},
    ("requests", "{id}"): {"GET": SessionsApp.get_request},
    ("requests", "{id}", "history"): {"GET": SessionsApp.request_history},
    ("events",): {"GET": SessionsApp.events},
    ("stats",): {"GET": SessionsApp.stats},
    ("health",): {"GET": SessionsApp.health},
    ("metrics",): {"GET": SessionsApp.metrics},
}

_PATCHABLE = ("metadata", "status", "reason")


def _patch(body: Any) -> dict[str, Any]:
    """The change a PATCH asks for, checked whole before anything is changed."""
    if not isinstance(body, dict) or not body:
        raise InvalidInput(f"a PATCH body is a JSON object with {', '.join(_PATCHABLE)}")
    unknown = sorted(set(body) - set(_PATCHABLE))
    if unknown:
        raise InvalidInput(f"cannot PATCH {unknown[0]!r}: only {', '.join(_PATCHABLE)}")
    if "status" in body and body["status"] != "expired":
        raise InvalidInput(
            f"status can only become 'expired', not {body['status']!r} (DELETE deletes; a "
            f"session is active again when the CLI resumes it)"
        )
    if "reason" in body and "status" not in body:
        raise InvalidInput("a reason goes with a status")
    if "metadata" in body and not isinstance(body["metadata"], dict):
        raise InvalidInput(f"metadata must be a JSON object, got {body['metadata']!r}")
    return body


def _route_of(scope: Scope) -> tuple[list[str], dict[str, Handler]]:
    """The path's segments and what its route's methods run."""
    parts = _segments(scope)
    shape = tuple("{id}" if i == 1 else part for i, part in enumerate(parts))
    methods = ROUTES.get(shape)
    if methods is None:
        raise HttpError(404, "NoRoute", f"no route {scope['path']!r}: GET / lists them")
    return parts, methods


def _paged(name: str, page: list[Any], limit: int, query: dict[str, str], **cursor: str) -> Any:
    """A page of ``name`` and the URL of the next: the same query, but the ``cursor``
    parameter at the page's last item; none after a short page, the last."""
    following = None
    if page and len(page) == limit:
        following = f"/{name}?{urlencode(query | cursor, quote_via=quote)}"
    return {name: page, "next": following}


def cors_origin(text: str) -> str:
    """An origin as a browser sends it, ``scheme://host[:port]`` (lowercased), or "*"."""
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError when out of range)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.username is not None
        or f"{parts.scheme}://{parts.netloc}" != text
    ):
        raise InvalidInput(
            f"a CORS origin is scheme://host[:port] as a browser sends it (no path, not "
            f"even '/'), e.g. 'https://dash.example.com', or '*': got {text!r}"
        )
    return text.lower()


def _header(scope: Scope, name: bytes) -> str | None:
    found = dict(scope["headers"]).get(name)
    return None if found is None else found.decode("latin-1")


def _segments(scope: Scope) -> list[str]:
    """The path's segments, each percent-decoded on its own (an id may hold a "/")."""
    raw = scope.get("raw_path") or scope["path"].encode()
    path = raw.decode("latin-1").strip("/")
    return [_utf8(unquote, part, "the path") for part in path.split("/")] if path else []


def _known(found: Any, missing: type[errors.NotFound], call: Call) -> Any:
    """``found``, unless the id in the path named nothing (UnknownAgent: "no agent 'x'")."""
    if found is None:
        raise missing(f"no {missing.__name__.removeprefix('Unknown').lower()} {call.ident!r}")
    return found


def _query(scope: Scope) -> dict[str, str]:
    text = scope["query_string"].decode("latin-1")
    pairs = _utf8(partial(parse_qsl, keep_blank_values=True), text, "the query")
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise InvalidInput(f"query parameter {name!r} is given twice")
        query[name] = value
    return query


def _utf8(decode: Callable[..., T], text: str, what: str) -> T:
    """``decode(text)`` (percent-escapes), refusing bytes that are not UTF-8: an id
    or a filter must not silently become another (U+FFFD in place of each bad byte)."""
    try:
        return decode(text, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} is not UTF-8 once percent-decoded: {text[:80]!r}") from None


async def _body(receive: Receive) -> Any:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "Disconnected", "the client went away before sending its body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise HttpError(413, "BodyTooLarge", f"the body is over {MAX_BODY_BYTES:,} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    try:
        return msgspec.json.decode(b"".join(chunks))
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the body is not JSON: {exc}") from None


def status_of(exc: TrackerError) -> int:
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


def _error(
    status: int, kind: str, exc: Exception, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(status, {"error": kind, "message": str(exc)}, dict(headers or {}))
