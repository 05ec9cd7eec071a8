"""Where a database's bytes go: each table and index, in bytes per event (dbstat)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench import Figures, median
from tracker import readonly
from tracker.render import table

PREFIX = "bytes_in:"  # W1's figures of the bytes per event of each table and index
SHOWN = 1.0  # objects under this many bytes per event are summed as "other"


def by_object(path: Path) -> Figures:
    """The bytes per event of each table and index of ``path`` (its B-tree pages, used
    or not), as figures named PREFIX + object; none when SQLite was built without the
    dbstat table."""
    conn = readonly.connect(path, guard=False)
    try:
        events = conn.execute("SELECT count(*) FROM event_log").fetchone()[0]
        sizes = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:  # no such table: dbstat
        return {}
    finally:
        conn.close()
    return {f"{PREFIX}{name}": size / max(events, 1) for name, size in sizes}


def report(samples: list[Figures]) -> str:
    """W1's bytes per event by table and index (medians over runs), largest first."""
    names = [key for key in samples[0] if key.startswith(PREFIX)]
    if not names:
        return "(this SQLite has no dbstat table: no breakdown of the bytes)"
    sizes = sorted(((median(samples, key), key[len(PREFIX) :]) for key in names), reverse=True)
    rows = [[name, f"{size:.1f}"] for size, name in sizes if size >= SHOWN]
    rows.append(["other", f"{sum(size for size, _ in sizes if size < SHOWN):.1f}"])
    return table(["W1: table or index", "bytes/event (median)"], rows)
