"""The error tree: one base class, one subclass per failure a caller can act on.

    TrackerError
    ├── InvalidInput             a bad argument (wrong type, empty id, bad duration)
    ├── NotFound
    │   ├── UnknownRequest
    │   ├── UnknownSession
    │   └── UnknownAgent
    ├── DuplicateRequest         a request id reused with different arguments
    ├── InvalidTransition        a call impossible in the entity's current state
    ├── LockError
    │   ├── LockHeld             someone else holds the lock
    │   └── LockNotHeld          releasing or renewing a lock one does not hold
    ├── StorageError             the database file cannot serve the call
    │   ├── DatabaseNotFound
    │   ├── NotATrackerDatabase
    │   ├── SchemaVersionError
    │   ├── ReadOnlyDatabase
    │   ├── DatabaseBusy
    │   └── DiskFull
    ├── IntegrityError           the log or projections are not what they must be
    ├── OwnerInUse               another open tracker on the file has the same owner
    ├── MissingExtra             a feature's package is not installed (uvicorn: http)
    └── TrackerClosed

Every failed call appends nothing; messages name the offending value.
"""

from __future__ import annotations


class TrackerError(Exception):
    """Base of every error the tracker raises on purpose."""


class InvalidInput(TrackerError, ValueError):
    """An argument is malformed; nothing was changed."""


class NotFound(TrackerError, LookupError):
    """The named entity does not exist."""


class UnknownRequest(NotFound):
    """No request has this id."""


class UnknownSession(NotFound):
    """No session has this id."""


class UnknownAgent(NotFound):
    """No agent has this id."""


class DuplicateRequest(TrackerError):
    """The request id was already tracked with different arguments."""


class InvalidTransition(TrackerError):
    """The call is impossible in the entity's current state."""


class LockError(TrackerError):
    """Base of lock failures."""


class LockHeld(LockError):
    """The lock is held by another holder and has not expired."""


class LockNotHeld(LockError):
    """The caller does not hold the lock (never did, released, or it expired)."""


class StorageError(TrackerError):
    """The database file cannot serve the call."""


class DatabaseNotFound(StorageError, FileNotFoundError):
    """The database file does not exist and creating it was not asked for."""


class NotATrackerDatabase(StorageError):
    """The file is not SQLite, or not a tracker database."""


class SchemaVersionError(StorageError):
    """The database was written with another schema version."""


class ReadOnlyDatabase(StorageError):
    """The database file or its directory cannot be written."""


class DatabaseBusy(StorageError):
    """Other writers kept the database locked for longer than the busy timeout."""


class DiskFull(StorageError):
    """The disk or the file size limit is full; the transaction was rolled back."""


class IntegrityError(TrackerError):
    """The log or the projections are not what they must be."""


class OwnerInUse(TrackerError):
    """Another tracker open on the same file (in a live process) has the same ``owner``:
    opening would fail its unfinished requests as abandoned."""


class MissingExtra(TrackerError):
    """A feature needs a package the installation left out (an extra, such as ``http``)."""


class TrackerClosed(TrackerError):
    """The tracker was closed; open a new one."""

    @classmethod
    def on(cls, path: object) -> TrackerClosed:
        """The error for a call on the closed tracker of the database ``path``."""
        return cls(f"the tracker on {str(path)!r} is closed")
