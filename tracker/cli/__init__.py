"""The ``tracker`` command line: thin commands over the API, for operators.

Output is a readable table by default and JSON with ``--json`` (JSON lines for
streams). A user mistake prints one line on stderr and exits 1; a usage error
(an unknown option, a value of the wrong form) is one line too and exits 2; a bug
still shows its traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence

import anyio
from anyio import CancelScope
from anyio.abc import TaskStatus

from tracker.cli.parser import COMMANDS, build_parser
from tracker.errors import TrackerError
from tracker.tasks import task_group

INTERRUPTED = 130  # the shell's code for a command ended by SIGINT (128 + 2)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

__all__ = ["COMMANDS", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_command(argv)
    try:
        code = anyio.run(_interruptible, args)
    except TrackerError as exc:
        print(f"tracker: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `tracker events | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path the system refuses (a name too long...): the user's
        if exc.filename is None:
            raise
        print(f"tracker: {str(exc.filename)!r}: {exc.strerror}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED
    return code


async def _interruptible(args: argparse.Namespace) -> int:
    """Run the command; Ctrl-C or SIGTERM (a service manager's stop, ``kill``) cancels
    it as a cancel scope, which long file work in a worker thread sees at its next batch
    (``db.stop_if_cancelled``): it stops, removes its partial files, and the command
    exits 128 + the signal's number (130, 143) unless it returns a code of its own.
    (asyncio's own handler cancels the main task, which a worker thread never sees: it
    would run to the end.) A second signal interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # no signals there
        return int(await args.handler(args))
    received: list[int] = []
    code: int | None = None  # unless the command returns
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        async with task_group() as tg:
            await tg.start(_cancel_on_signal, tg.cancel_scope, received)  # before it runs
            code = await args.handler(args)
            tg.cancel_scope.cancel()  # done: stop listening
    finally:
        for sig, handler in previous.items():  # whoever handled them before (embedding code)
            if handler is not None:
                signal.signal(sig, handler)
    return code if code is not None else 128 + received[0]


async def _cancel_on_signal(
    scope: CancelScope,
    received: list[int],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            received.append(signum)
            scope.cancel()
            return  # leaving restores the defaults: the next signal ends it at once
