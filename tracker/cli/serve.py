"""``tracker serve``: the HTTP view of the database, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

import anyio
import anyio.lowlevel

from tracker.cli.commands import database, existing
from tracker.tasks import task_group
from tracker.web import server as web
from tracker.web.app import SessionsApp

TOKEN_VARIABLE = "TRACKER_HTTP_TOKEN"


async def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM cancels the command: the cancellation sets ``stop``,
    the server answers the requests under way, then the tracker closes (exit 130, 143)."""
    stop = anyio.Event()
    async with task_group() as tg:
        tg.start_soon(web.set_when_cancelled, stop)
        with anyio.CancelScope(shield=True):  # the tracker stays open until served
            await _serve(args, stop)
        await anyio.lowlevel.checkpoint()  # stopped by a signal: the cancellation lands here
        tg.cancel_scope.cancel()
    return 0


async def _serve(args: argparse.Namespace, stop: anyio.Event) -> None:
    token = os.environ.get(TOKEN_VARIABLE) or None
    async with existing(args) as t:
        app = SessionsApp(
            t, read_only=args.read_only, token=token, cors_origins=args.cors_origin, stopping=stop
        )
        server = web.server(app, access_log=args.access_log)
        with web.listen(args.host, args.port) as sock:
            host, port = sock.getsockname()[:2]
            _announce(database(args), host, port, args.read_only, token)
            await web.serve(server, sock, stop)


def _announce(path: object, host: str, port: int, read_only: bool, token: str | None) -> None:
    shown = f"[{host}]" if ":" in host else host
    mode = "read-only" if read_only else "read-write"
    print(f"serving {str(path)!r} ({mode}) on http://{shown}:{port}/ until Ctrl-C", flush=True)
    if token is None and not ipaddress.ip_address(host).is_loopback:
        print(
            f"tracker: warning: anyone who reaches {shown}:{port} can read"
            f"{'' if read_only else ' and change'} sessions: set ${TOKEN_VARIABLE}",
            file=sys.stderr,
            flush=True,
        )
