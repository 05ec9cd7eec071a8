"""The public API is what tracker/__init__.py exports, and all of it."""

from __future__ import annotations

import tracker
from tracker import errors


def test_all_names_exist_and_are_exported() -> None:
    assert sorted(tracker.__all__) == sorted(set(tracker.__all__))
    for name in tracker.__all__:
        assert getattr(tracker, name).__module__.startswith("tracker"), name


def test_every_error_is_exported_and_derives_from_tracker_error() -> None:
    classes = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception)
    }
    assert classes <= set(tracker.__all__)
    for name in classes:
        assert issubclass(getattr(tracker, name), tracker.TrackerError)


def test_spec_errors_exist() -> None:
    for name in [
        "UnknownRequest",
        "DuplicateRequest",
        "InvalidTransition",
        "LockHeld",
        "LockNotHeld",
        "InvalidInput",
        "SchemaVersionError",
        "IntegrityError",
    ]:
        assert issubclass(getattr(tracker, name), tracker.TrackerError)
