"""``make demo`` is the main job: it must run, tell its story, and end verified."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, rows


def demo(db: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "tracker.demo", "--db", str(db), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_simulated_orchestrator(tmp_path: Path) -> None:
    out = demo(tmp_path / "demo.db", "--agents", "12", "--turns", "6")
    assert "12 agents ran concurrently" in out
    assert "a forked chain" in out
    assert "audit trail of" in out
    assert "verify(): ok=True" in out
    # a message that waited for the agent's lock continued its conversation: no agent
    # never reset has a second conversation, however its messages raced
    db = tmp_path / "demo.db"
    roots = rows(
        db,
        "SELECT count(*) FROM sessions JOIN agents USING (agent_id) "
        "WHERE parent_session_id IS NULL AND resets = 0 GROUP BY agent_id",
    )
    assert roots == [(1,)] * (12 - len(rows(db, "SELECT 1 FROM agents WHERE resets > 0")))
    # an answer that came after its user started over is no agent's current session
    superseded = rows(
        db,
        "SELECT session_id FROM events WHERE type = 'SessionAssigned' "
        "AND json_extract(payload, '$.superseded')",
    )
    assert f"{len(superseded)} answers came after their agent had started over" in out
    # what the orchestrator was told (its table has no row for none: about 1 run in 20,
    # as the agents' turns interleave differently each time)
    seen = [line for line in out.splitlines() if line.startswith("answered once the user")]
    assert [int(line.split()[-1]) for line in seen] == ([len(superseded)] if superseded else [])
    current = {sid for (sid,) in rows(db, "SELECT current_session_id FROM agents")}
    assert not current & {sid for (sid,) in superseded}
    check_the_history_shown(out, db)


def check_the_history_shown(out: str, db: Path) -> None:
    """The conversation shown holds answered requests of its agent, in the order asked."""
    lines = out.splitlines()
    [at] = [n for n, line in enumerate(lines) if line.startswith("the conversation agent-")]
    agent = lines[at].split()[2].removesuffix("'s")
    shown = [line.split()[1] for line in lines[at + 3 : at + 8]]
    assert len(shown) == 5  # the seeded run has a conversation of 5 turns or more
    found = rows(
        db,
        "SELECT request_id, status, agent_id FROM requests WHERE request_id IN (?,?,?,?,?) "
        "ORDER BY created_at, rowid",
        tuple(shown),
    )
    assert found == [(request_id, "completed", agent) for request_id in shown]


def test_the_demo_with_a_claude_binary(tmp_path: Path, fake_claude: str) -> None:
    out = demo(tmp_path / "demo.db", env={"CLAUDE_BIN": fake_claude})
    assert out.count(": completed in session") == 6  # 3 agents x 2 turns
    assert "verify(): ok=True" in out
