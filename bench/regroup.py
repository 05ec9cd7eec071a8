"""C2, W2's ceiling: SQLite alone rebuilds one projection from W1's log.

One ``INSERT ... SELECT ... GROUP BY request_id`` writes the ``requests`` table
(the largest of the five) into a fresh file with the rebuild's settings
(journal and sync off, lookup indexes built after the rows), reading every
field out of the JSON payloads in SQL. It is a generous ceiling for W2: one
table of five, and no Python per event (reading W1's rows into Python alone
costs about a third of its time). W1's logs only: metadata is not merged,
events are not upcast (a test checks the rows equal the tracker's own). It reads
the log as stored (type codes, times in microseconds: tracker/logrow.py) and formats
only the times it keeps.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from bench import Figures
from tracker import maintenance, readonly
from tracker.logrow import TYPE_CODES

TRACKED, ASSIGNED, COMPLETED, FAILED, LOCKED = (
    TYPE_CODES[name]
    for name in (
        "RequestTracked",
        "SessionAssigned",
        "RequestCompleted",
        "RequestFailed",
        "LockAcquired",
    )
)
_FINISH = f"type IN ({COMPLETED}, {FAILED})"


def _of(types: str, value: str) -> str:
    """The value from the request's one event of ``types`` (a SQL condition)."""
    return f"max(CASE WHEN {types} THEN {value} END)"


def _usage(name: str) -> str:
    tokens = _of(_FINISH, f"json_extract(payload, '$.usage.{name}')")
    return f"coalesce({tokens}, 0)"


def _at(types: str) -> str:
    """The time of the request's one event of ``types``, as text (the view events' way)."""
    micros = _of(types, "at")
    seconds = f"strftime('%Y-%m-%dT%H:%M:%S', {micros} / 1000000, 'unixepoch')"
    return f"{seconds} || printf('.%06dZ', {micros} % 1000000)"


_TRACKED, _ASSIGNED, _FAILED = f"type = {TRACKED}", f"type = {ASSIGNED}", f"type = {FAILED}"
REGROUP = f"""
INSERT INTO main.requests
SELECT request_id, max(agent_id),
  {_of(_TRACKED, "json_extract(payload, '$.resumed_session_id')")},
  {_of(_ASSIGNED, "session_id")},
  coalesce({_of(_ASSIGNED, "json_extract(payload, '$.superseded')")}, 0),
  coalesce({_of(_FINISH, f"CASE type WHEN {FAILED} THEN 'failed' ELSE 'completed' END")},
           {_of(_ASSIGNED, "'active'")}, 'pending'),
  {_of(_TRACKED, "json_extract(payload, '$.owner')")},
  {_at(_TRACKED)}, {_at(_ASSIGNED)}, {_at(_FINISH)},
  {_of(_FAILED, "json_extract(payload, '$.error')")},
  {_of(_FAILED, "json_extract(payload, '$.kind')")},
  {_usage("input_tokens")}, {_usage("output_tokens")},
  {_usage("cache_read_tokens")}, {_usage("cache_write_tokens")},
  {_of(_FINISH, "json_extract(payload, '$.cost_usd')")},
  {_of(_FINISH, "json_extract(payload, '$.duration_ms')")},
  coalesce({_of(_TRACKED, "json_extract(payload, '$.metadata')")}, '{{}}'),
  {_of(f"type = {LOCKED}", "seq")},
  {_of(_TRACKED, "json_extract(payload, '$.digest')")},
  {_of(_FINISH, "json_extract(payload, '$.digest')")},
  max(seq)
FROM live.event_log
WHERE request_id IS NOT NULL AND type IN ({TRACKED}, {ASSIGNED}, {COMPLETED}, {FAILED}, {LOCKED})
GROUP BY request_id ORDER BY min(seq)"""


def c2(source: Path, path: Path) -> Figures:
    """C2: the ``requests`` table rebuilt from ``source``'s log by SQLite alone, into ``path``."""
    with closing(readonly.connect(source)) as log:
        events = log.execute("SELECT count(*) FROM event_log").fetchone()[0]
    started = time.perf_counter()
    with maintenance.scratch_build(source, path) as conn:  # as the rebuild sets it up
        conn.execute(REGROUP)
    elapsed = time.perf_counter() - started
    return {"events_per_s": events / elapsed, "seconds": elapsed, "events": events}
