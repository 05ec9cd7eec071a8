"""Files written beside their target until they are done: a partial export, import or
replay copy, the scratch database of a rebuild or a verify; and the claim of an owner
name by the tracker that opened a database with it.

Each is ``.NAME.PURPOSE-XXXXXXXX`` beside ``NAME`` (a database or an output file), owner
only, and held under an exclusive ``flock`` while its process writes it. The kernel drops
that lock when the process ends, however it ends, so a file whose lock is free was left
by a process that died (kill -9, power loss): the next scratch beside the same ``NAME``
removes it, with SQLite's companion files. An owner's claim (``.NAME.owner-DIGEST``) is
held the same way but never swept: the next claim of that owner takes over the file a
dead holder left.

Beside the target, not in the system temp directory: a rebuild's scratch holds every
projection, and /tmp may be a small tmpfs; the target's disk is the one sized for it.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from tracker.errors import DiskFull, InvalidInput, TrackerError

PURPOSES = ("partial", "rebuild", "verify")  # swept once their writer died
# Held, never swept: a sweep holding one for a moment would make its claim fail. The next
# claim of the same name takes over what a dead holder left.
CLAIMS = ("owner",)
COMPANIONS = ("-journal", "-wal", "-shm")


class Scratch:
    """A file beside ``target``, locked until ``close`` removes it.

    Create it with ``Scratch.beside`` (a new name) or ``Scratch.claim`` (a fixed one);
    use it as a context manager.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def beside(cls, target: Path, purpose: str) -> Scratch:
        """Remove what dead processes left beside ``target``, then create a scratch file
        for ``purpose``; an ``OSError`` (a read-only folder...) is the caller's to word."""
        assert purpose in PURPOSES, purpose
        sweep(target)
        while True:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.{purpose}-", dir=target.parent)
            try:
                _lock(fd)  # waits only while a sweep looks at it
                if _names(fd, Path(name)):
                    return cls(Path(name), fd)
            except BaseException:
                _remove(Path(name))
                os.close(fd)
                raise
            os.close(fd)  # a sweep took it for a dead process's file: take another name

    @classmethod
    def claim(cls, target: Path, purpose: str, name: str) -> Scratch | None:
        """The file ``.NAME.PURPOSE-name`` beside ``target``, locked, or None while a live
        process (this one included) holds it."""
        assert purpose in CLAIMS, purpose
        path = target.with_name(f".{target.name}.{purpose}-{name}")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                _lock(fd, fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            if _names(fd, path):
                return cls(path, fd)
            os.close(fd)  # its holder removed it as we opened it: claim it afresh

    def close(self) -> None:
        """Remove the file (if still there: it may have been renamed into place), then
        release the lock."""
        if self._fd < 0:
            return
        try:
            _remove(self.path)
        finally:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Scratch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A new file beside ``target`` (owner only) for the block to write. Once the block is
    done, the file is synced and renamed over ``target``, and the rename synced; if it
    fails (or the process dies), ``target`` stays as it was."""
    with Scratch.beside(target, "partial") as partial:
        yield partial.path
        sync(partial.path)
        partial.path.replace(target)
        sync(target.parent)


def unwritable(what: str, target: Path, exc: OSError) -> TrackerError:
    """The error for ``what`` (an export, a backup) that could not be written to
    ``target``: DiskFull when the disk or the file size limit is, else the user's to fix."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return DiskFull(f"no room for the {what} {str(target)!r}: {exc.strerror}")
    return InvalidInput(f"cannot write the {what} to {str(target)!r}: {exc.strerror}")


def sync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep(target: Path) -> list[Path]:
    """Remove the scratch files beside ``target`` whose lock is free; return them."""
    removed = []
    for purpose in PURPOSES:
        for path in target.parent.glob(f".{glob.escape(target.name)}.{purpose}-*"):
            if not path.name.endswith(COMPANIONS) and _take_abandoned(path):
                removed.append(path)
    return removed


def _take_abandoned(path: Path) -> bool:
    """Remove ``path`` if no process holds its lock (then it was left by a dead one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # gone meanwhile, or not ours to read
        return False
    try:
        try:  # not _lock: where flock fails, no file can be told abandoned
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live process is writing it (or the filesystem has no locks)
            return False
        if not _names(fd, path):  # removed and created again meanwhile
            return False
        _remove(path)
        return True
    finally:
        os.close(fd)


def _lock(fd: int, flags: int = 0) -> None:
    """Lock ``fd``: BlockingIOError if ``flags`` has LOCK_NB and another holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | flags)
    except BlockingIOError:
        raise
    except OSError as exc:  # a filesystem without flock: sweeps cannot lock it either
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise


def _names(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    for suffix in ("", *COMPANIONS):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
