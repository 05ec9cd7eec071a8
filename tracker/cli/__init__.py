"""The ``tracker`` command line: thin commands over the API, for operators.

Output is a readable table by default and JSON with ``--json`` (JSON lines for
streams). A user mistake prints one line on stderr and exits 1; a usage error
(an unknown option, a value of the wrong form) is one line too and exits 2; a bug
still shows its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import anyio

from tracker.cli.parser import COMMANDS, build_parser
from tracker.errors import TrackerError

__all__ = ["COMMANDS", "build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_command(argv)
    try:
        code: int = anyio.run(args.handler, args)
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
        return 130
    return code
