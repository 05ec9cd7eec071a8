"""Whether anything was committed to a database, told without a thread hop.

Whether anything was committed since the last look is told by the wal-index
header: two copies of a 48-byte header at the start of the ``-shm`` file, which
SQLite rewrites at every commit, in every process, before the commit returns
(https://sqlite.org/walformat.html, section 2.2). Comparing it with the last
one seen is a memory read (about 0.2 us); ``PRAGMA data_version``, which tells
the same, starts a read transaction and costs about 5 us of locking system
calls. Where there is no header to read or its copies differ (a commit is
being published), ``PRAGMA data_version`` answers.

The header is read in SQLite's own mapping of the file, found in
``/proc/self/maps`` (Linux). No file descriptor of ours touches the file:
closing one would drop every POSIX lock this process holds on it, SQLite's
included. The mapping lives while a connection of this process uses the
wal-index, so the probe connection is kept open until ``close``; and no process
truncates the file while another holds it (SQLite's own rule, which its readers
rely on too).
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import sys
from pathlib import Path

from tracker import readonly
from tracker.errors import TrackerClosed

_HEADER = 48  # one copy of the wal-index header
_WAL_INDEX_VERSION = (3007000).to_bytes(4, sys.byteorder)  # its iVersion field
_IS_INIT = 12  # offset of its isInit byte


class CommitProbe:
    """A value read on the caller's thread that changes whenever anything is committed
    to the database, by this process or another."""

    def __init__(self, path: Path) -> None:
        self._path = path
        probe = readonly.connect(path, guard=False)
        probe.execute("PRAGMA data_version").fetchone()  # maps the wal-index
        self._probe: sqlite3.Connection | None = probe
        address = wal_index_address(path)
        # (first copy, second copy), each read with one copy of SQLite's memory
        self._header = None if address is None else _copies(address)

    def version(self) -> object:
        """A value that changes whenever anything is committed to the database."""
        if self._header is not None:
            first, second = self._header
            # the first copy, then the second: SQLite writes them in the other order
            header = settled(first.raw, second.raw)
            if header is not None:
                return header
        if self._probe is None:
            raise TrackerClosed.on(self._path)
        return int(self._probe.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        """From now on ``version`` raises TrackerClosed."""
        self._header = None  # the mapping may go with the probe
        if self._probe is not None:
            self._probe.close()
            self._probe = None


def _copies(address: int) -> tuple[ctypes.Array[ctypes.c_char], ctypes.Array[ctypes.c_char]]:
    copy = ctypes.c_char * _HEADER
    return copy.from_address(address), copy.from_address(address + _HEADER)


def settled(first: bytes, second: bytes) -> bytes | None:
    """The wal-index header, if its two copies agree and it is initialised; None while a
    commit is rewriting it (second copy first) or before SQLite wrote one."""
    if first == second and first[_IS_INIT] == 1 and first[:4] == _WAL_INDEX_VERSION:
        return first
    return None


def wal_index_address(path: Path) -> int | None:
    """Where SQLite mapped the start of ``path``'s wal-index in this process, or None.

    The file is named after the database's real path (symbolic links resolved, as
    SQLite does); a file beside a link is never SQLite's, so never read.
    """
    shm = f"{os.path.realpath(path)}-shm"
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            # start-end perms offset dev inode path
            found = [line.split(maxsplit=5) for line in maps if line.endswith(f" {shm}\n")]
    except OSError:  # not Linux
        return None
    starts = [int(f[0].split("-")[0], 16) for f in found if len(f) == 6 and int(f[2], 16) == 0]
    return starts[0] if len(starts) == 1 else None
