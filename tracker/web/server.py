"""Serve the HTTP view with uvicorn (the ``http`` extra), stopping gracefully: requests
under way are answered before the tracker closes."""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

import anyio

from tracker.errors import InvalidInput, MissingExtra
from tracker.tasks import task_group

if TYPE_CHECKING:
    import uvicorn

    from tracker.web.app import SessionsApp

GRACE_S = 10  # how long a stop waits for requests under way
BACKLOG = 2048  # connections waiting to be accepted (uvicorn's default)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port`` (0: a free port; ``getsockname`` says).

    Made with the TCP protocol named (``socket.create_server`` leaves it 0), since
    asyncio turns Nagle's algorithm off only on such sockets' connections: without it,
    a response's body waited for the ACK of its headers, 40 ms of delayed ACK each."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def server(app: SessionsApp, *, access_log: bool = False) -> uvicorn.Server:
    """A uvicorn server for ``app`` that leaves signals to its caller."""
    try:
        import uvicorn
    except ImportError:
        raise MissingExtra(
            "serving HTTP needs uvicorn: pip install 'agent-session-tracker[http]'"
        ) from None

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the caller stops it (``serve``)
            yield

    if access_log:
        _log_to_stderr(logging.getLogger("uvicorn.access"))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=access_log,
        timeout_graceful_shutdown=GRACE_S,
        server_header=False,
    )
    return Server(config)


async def serve(server: uvicorn.Server, sock: socket.socket, stop: anyio.Event) -> None:
    """Serve on ``sock`` until ``stop`` is set, then stop taking requests and answer
    those under way (for up to ``GRACE_S``) first. The tracker the app reads must stay
    open meanwhile: a caller that stops when cancelled shields this, and the tracker's
    lifetime with it, and sets ``stop`` when cancelled (``set_when_cancelled``)."""
    async with task_group() as tg:
        tg.start_soon(_stop_on, stop, server)
        await server.serve(sockets=[sock])
        tg.cancel_scope.cancel()


async def set_when_cancelled(stop: anyio.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        stop.set()


def _log_to_stderr(logger: logging.Logger) -> None:
    logger.setLevel(logging.INFO)
    if not logger.handlers:  # once per process
        logger.addHandler(logging.StreamHandler(sys.stderr))


async def _stop_on(stop: anyio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
