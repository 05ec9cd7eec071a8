"""Numbers in an HTTP query, checked as text: a bad one is an InvalidInput naming it."""

from __future__ import annotations

import re

from tracker.errors import InvalidInput

MAX_PAGE = 1000  # items in one page of a listing
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6})?")


def whole(text: str, name: str, most: int | None = None) -> int:
    """A query's whole number: ASCII digits (int() takes others, and refuses 4,300 of
    them with a ValueError), up to ``most``; up to 19 of them (2**63 - 1 has 19), so a
    seq too large for SQLite is refused by the API, naming its bound."""
    if (
        not (text.isascii() and text.isdigit())
        or len(text) > 19
        or (most is not None and int(text) > most)
    ):
        bound = "" if most is None else f" up to {most}"
        raise InvalidInput(f"{name} must be a whole number{bound}, got {text[:20]!r}")
    return int(text)


def page_size(text: str) -> int:
    """``limit``: items in a page, up to MAX_PAGE."""
    return whole(text, "limit", MAX_PAGE)


def seconds(text: str, name: str, most: float) -> float:
    """A query's duration: decimal seconds (``2``, ``0.5``), up to ``most``."""
    if not _SECONDS.fullmatch(text) or float(text) > most:
        raise InvalidInput(f"{name} must be seconds from 0 to {most} (e.g. 2.5), got {text[:20]!r}")
    return float(text)
