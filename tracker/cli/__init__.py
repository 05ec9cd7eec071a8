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
    """Run the command; Ctrl-C cancels it as a cancel scope, which long file work in a
    worker thread sees at its next batch (``db.stop_if_cancelled``): it stops, removes
    its partial files, and the command exits 130. (asyncio's own handler cancels the
    main task, which a worker thread never sees: it would run to the end.) A second
    Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # no signals there
        return int(await args.handler(args))
    code: int = INTERRUPTED  # unless the command returns
    previous = signal.getsignal(signal.SIGINT)
    try:
        async with task_group() as tg:
            await tg.start(_cancel_on_sigint, tg.cancel_scope)  # listening before it runs
            code = await args.handler(args)
            tg.cancel_scope.cancel()  # done: stop listening
    finally:
        signal.signal(signal.SIGINT, previous)  # whoever handled it before (embedding code)
    return code


async def _cancel_on_sigint(
    scope: CancelScope, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.open_signal_receiver(signal.SIGINT) as signals:
        task_status.started()
        async for _ in signals:
            scope.cancel()
            return  # leaving restores Python's handler: the next Ctrl-C raises at once
