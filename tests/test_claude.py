"""The Claude CLI integration: result parsing, runs against a fake CLI, transcripts."""

from __future__ import annotations

import json
import shutil
import time
import tracemalloc
from functools import partial
from pathlib import Path

import anyio
import pytest

from bench.transcripts import generate
from tests.helpers import ROOT, rows
from tracker import CURRENT, InvalidInput, ManualClock, Tracker, Usage
from tracker.claude import (
    ClaudeOutputError,
    ClaudeRunner,
    import_transcripts,
    parse_output,
    project_dir_name,
    summarize,
    validate,
)
from tracker.claude import transcripts as transcripts_module
from tracker.claude.transcripts import find_session, project_dirs, projects_root
from tracker.cli import main
from tracker.models import ResumedSession

FIXTURES = ROOT / "tests" / "fixtures" / "claude"
PROJECTS = FIXTURES / "projects"
SESSION = "4f1c2d9e-7a3b-4c55-9e21-0b6d8a7f3c10"
FORK = "5a0e3f8b-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
LEGACY = "7d6c5b4a-3e2f-4a1b-9c8d-7e6f5a4b3c2d"
RESULT_USAGE = Usage(
    input_tokens=12, output_tokens=640, cache_read_tokens=31500, cache_write_tokens=8200
)


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


# -- parsing -----------------------------------------------------------------------


def test_a_successful_result() -> None:
    result = parse_output(fixture("result-success.json"))
    assert (result.ok, result.kind, result.session_id) == (True, "success", SESSION)
    assert result.usage == RESULT_USAGE
    assert (result.cost_usd, result.duration_ms, result.num_turns) == (0.049836, 18342, 3)
    assert result.text is not None
    assert result.text.startswith("Renamed")
    assert "claude-sonnet-4-5-20250929" in result.model_usage


def test_max_turns_is_classified_by_subtype() -> None:
    result = parse_output(fixture("result-max-turns.json"))
    assert (result.ok, result.kind) == (False, "max_turns")
    assert result.error == "Reached maximum number of turns (1)"
    assert result.usage.cache_write_tokens == 4100


def test_an_unknown_session_does_not_trust_the_envelope_id() -> None:
    result = parse_output(
        fixture("result-unknown-session.json"), fixture("result-unknown-session.stderr")
    )
    assert (result.kind, result.session_id) == ("unknown_session", None)
    assert "No conversation found" in (result.error or "")


def test_an_unknown_session_is_recognised_from_stderr_alone() -> None:
    data = json.loads(fixture("result-unknown-session.json"))
    del data["errors"]
    result = parse_output(json.dumps(data), fixture("result-unknown-session.stderr"))
    assert result.kind == "unknown_session"


def test_not_logged_in_is_an_error_despite_subtype_success() -> None:
    out = json.dumps(
        {
            "type": "result",
            "subtype": "success",
            "is_error": True,
            "result": "Invalid API key · Please run /login",
            "session_id": "s",
        }
    )
    result = parse_output(out)
    assert (result.ok, result.kind, result.error) == (
        False,
        "cli_error",
        "Invalid API key · Please run /login",
    )


def test_the_verbose_array_takes_the_last_result() -> None:
    result = parse_output(fixture("result-verbose-array.json"))
    assert (result.session_id, result.usage.output_tokens) == (SESSION, 640)


def test_stream_json_lines() -> None:
    result = parse_output(fixture("stream-success.jsonl"))
    assert result.usage.output_tokens == 640  # not the placeholders of assistant events


@pytest.mark.parametrize("key", ["cost_usd", "total_cost"])
def test_legacy_cost_keys(key: str) -> None:
    data = json.loads(fixture("result-success.json"))
    data[key] = data.pop("total_cost_usd")
    assert parse_output(json.dumps(data)).cost_usd == 0.049836


def test_cache_writes_come_from_the_nested_breakdown() -> None:
    data = json.loads(fixture("result-success.json"))
    data["usage"]["cache_creation_input_tokens"] = 0  # one CLI version reported 0 here
    data["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] = 100
    assert parse_output(json.dumps(data)).usage.cache_write_tokens == 8300


@pytest.mark.parametrize(
    "output",
    ["", "   \n", "not json", "[1, 2]", '{"type": "assistant"}', "[{", '{"type": "result"'],
)
def test_malformed_output_is_a_clear_error(output: str) -> None:
    with pytest.raises(ClaudeOutputError):
        parse_output(output, "boom")


# -- running against a fake CLI ------------------------------------------------------


@pytest.fixture
def old_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_CLAUDE_OLD", "1")


async def test_a_new_conversation(tracker: Tracker, fake_claude: str) -> None:
    run = await ClaudeRunner(tracker, claude_bin=fake_claude).run("hello", agent_id="a1")
    assert run.request.status == "completed"
    assert run.request.session_id is not None
    assert (run.request.cost_usd, run.request.usage) == (0.049836, RESULT_USAGE)
    assert await tracker.get_agent_session("a1") == run.request.session_id
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert lock.status == "released"


async def test_a_resume_answering_the_same_id(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude)
    first = await runner.run("one", agent_id="a1")
    second = await runner.run("two", agent_id="a1")
    assert second.request.resumed_session_id == first.request.session_id
    assert second.request.session_id == first.request.session_id
    [session] = await tracker.get_chain("a1")
    assert session.request_count == 2


async def test_a_resume_answering_a_new_id(
    tracker: Tracker, fake_claude: str, old_cli: None
) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude)
    first = await runner.run("one", agent_id="a1")
    second = await runner.run("two", agent_id="a1")
    chain = await tracker.get_chain("a1")
    assert [s.parent_session_id for s in chain] == [None, first.request.session_id]
    assert await tracker.get_agent_session("a1") == second.request.session_id


async def test_runs_for_one_agent_at_once_continue_each_other(
    tracker: Tracker, fake_claude: str, old_cli: None
) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude)
    async with anyio.create_task_group() as tg:  # each resumes once it holds the lock
        for k in range(3):
            tg.start_soon(partial(runner.run, f"message {k}", agent_id="a1"))
    chain = await tracker.get_chain("a1")
    assert len(chain) == 3
    assert [s.parent_session_id for s in chain] == [None, chain[0].session_id, chain[1].session_id]


@pytest.mark.parametrize(
    ("agent_id", "resume"), [("a1", CURRENT), (None, SESSION)], ids=["agent", "session"]
)
async def test_a_run_outlasting_its_lock_ttl_keeps_the_lock(
    db_path: Path, fake_claude: str, agent_id: str | None, resume: ResumedSession
) -> None:
    async with Tracker.open(db_path) as t:  # the system clock: the TTL lapses in real time
        runner = ClaudeRunner(t, claude_bin=fake_claude, lock_ttl=0.4, lock_wait=10)
        run = partial(runner.run, agent_id=agent_id, resume=resume)  # the agent's or S's lock
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(run, "[slow] long", request_id="long"))
            await anyio.sleep(0.2)  # tracked, with the conversation's lock
            tg.start_soon(partial(run, "next", request_id="next"))
    held = rows(
        db_path,
        "SELECT type, request_id FROM events WHERE type IN "
        "('LockAcquired', 'LockExpired', 'LockReleased', 'RequestCompleted') ORDER BY seq",
    )
    assert held == [
        ("LockAcquired", "long"),
        ("RequestCompleted", "long"),  # 1.5 s later: no one took the lock over meanwhile
        ("LockReleased", "long"),
        ("LockAcquired", "next"),
        ("RequestCompleted", "next"),
        ("LockReleased", "next"),
    ]
    [(renewals,)] = rows(db_path, "SELECT count(*) FROM events WHERE type = 'LockRenewed'")
    assert renewals >= 3


@pytest.mark.parametrize("stream", [True, False])
async def test_a_run_whose_lock_was_taken_over_says_so_and_finishes(
    tracker: Tracker,
    fake_claude: str,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
    stream: bool,
) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude, lock_ttl=0.3, stream=stream)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(runner.run, "[slow] a long task", agent_id="a1", request_id="long"))
        await anyio.sleep(0.2)
        clock.advance(60)  # as if the orchestrator had stalled past the TTL
        await tracker.acquire_lock(agent_id="a1", holder="intruder")
    assert "lock renewal stopped: cannot renew agent 'a1': 'long' does not hold it" in caplog.text
    request = await tracker.get_request("long")
    assert request is not None
    assert request.status == "completed"
    lock = await tracker.get_lock(agent_id="a1")
    assert lock is not None
    assert (lock.holder, lock.status) == ("intruder", "held")  # its finish released nothing
    # stream-json reports the session before the takeover; json only with the result,
    # after it: then the session is a branch, and the agent does not go on from it
    current = await tracker.get_agent_session("a1")
    assert current == (request.session_id if stream else None)
    assert request.superseded is not stream


async def test_forks(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude)
    root = await runner.run("start", agent_id="a1")
    async with anyio.create_task_group() as tg:
        for branch in ("a", "b"):
            tg.start_soon(partial(runner.run, f"try {branch}", agent_id="a1", fork=True))
    chain = await tracker.get_chain("a1")
    assert len(chain) == 3
    assert [s.parent_session_id for s in chain[1:]] == [root.request.session_id] * 2


async def test_an_unknown_session(tracker: Tracker, fake_claude: str) -> None:
    run = await ClaudeRunner(tracker, claude_bin=fake_claude).run(
        "continue", agent_id="a1", resume="11111111-2222-4333-8444-555555555555"
    )
    assert (run.request.status, run.request.error_kind, run.request.session_id) == (
        "failed",
        "unknown_session",
        None,
    )
    assert await tracker.get_session("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d") is None


async def test_not_logged_in(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude, stream=False)
    run = await runner.run("[not-logged-in]", agent_id="a1")
    assert (run.request.status, run.request.error_kind) == ("failed", "cli_error")
    assert "login" in (run.request.error or "")


async def test_max_turns_keeps_the_session_and_its_cost(tracker: Tracker, fake_claude: str) -> None:
    run = await ClaudeRunner(tracker, claude_bin=fake_claude).run("[max-turns]", agent_id="a1")
    assert (run.request.status, run.request.error_kind) == ("failed", "max_turns")
    assert run.request.session_id is not None
    assert run.request.cost_usd == 0.007171
    assert await tracker.get_agent_session("a1") == run.request.session_id


async def test_verbose_array_output(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude, stream=False, extra_args=["--verbose"])
    run = await runner.run("hello", agent_id="a1")
    assert (run.request.status, run.request.output_tokens) == ("completed", 640)


async def test_a_crash_after_init_still_records_the_session(
    tracker: Tracker, fake_claude: str
) -> None:
    run = await ClaudeRunner(tracker, claude_bin=fake_claude).run(
        "[crash-after-init]", agent_id="a1"
    )
    assert (run.request.status, run.request.error_kind) == ("failed", "crashed")
    assert run.request.session_id is not None
    assert await tracker.get_agent_session("a1") == run.request.session_id


async def test_a_timeout_kills_the_cli(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude, timeout=1)
    started = time.monotonic()
    run = await runner.run("[hang]", agent_id="a1")
    assert time.monotonic() - started < 10
    assert (run.request.status, run.request.error_kind) == ("failed", "timeout")
    assert run.request.session_id is not None  # init came before the hang


@pytest.mark.parametrize(
    ("prompt", "needle"), [("[bad-args]", "unknown option"), ("[garbage]", "not JSON")]
)
async def test_bad_arguments_and_garbage(
    tracker: Tracker, fake_claude: str, prompt: str, needle: str
) -> None:
    run = await ClaudeRunner(tracker, claude_bin=fake_claude).run(prompt, agent_id="a1")
    assert (run.request.status, run.request.error_kind) == ("failed", "cli_error")
    assert needle in (run.request.error or "")


@pytest.mark.parametrize("prompt", ["[noisy]", "[chatty]"])
async def test_a_cli_writing_megabytes_keeps_memory_flat(
    tracker: Tracker, fake_claude: str, prompt: str
) -> None:
    """20 MB on stderr, or 20 MB of stream-json messages before the result."""
    tracemalloc.start()
    try:
        run = await ClaudeRunner(tracker, claude_bin=fake_claude).run(prompt, agent_id="a1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert run.request.status == "completed"
    assert peak < 8 << 20, f"{peak:,} bytes for 20 MB of output"


async def test_a_missing_cli(tracker: Tracker, tmp_path: Path) -> None:
    runner = ClaudeRunner(tracker, claude_bin=str(tmp_path / "no-such-claude"))
    run = await runner.run("hello", agent_id="a1")
    assert (run.request.status, run.request.error_kind) == ("failed", "cli_error")


async def test_concurrency_is_limited(tracker: Tracker, fake_claude: str) -> None:
    runner = ClaudeRunner(tracker, claude_bin=fake_claude, concurrency=2)
    async with anyio.create_task_group() as tg:
        for a in range(6):
            tg.start_soon(partial(runner.run, "hi", agent_id=f"a{a}"))
    assert (await tracker.stats()).completed == 6


def test_the_command_line() -> None:
    runner = ClaudeRunner(None, claude_bin="claude", extra_args=["--max-turns", "3"])  # type: ignore[arg-type]
    assert runner.command("hi", resume="S", fork=True, model="opus") == [
        "claude",
        "-p",
        "hi",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        "S",
        "--fork-session",
        "--model",
        "opus",
        "--max-turns",
        "3",
    ]


# -- transcripts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cwd", "name"),
    [
        ("/home/dev/work/acme_api", "-home-dev-work-acme-api"),
        ("/Users/me/.claude", "-Users-me--claude"),
    ],
)
def test_project_directory_names(cwd: str, name: str) -> None:
    assert project_dir_name(cwd) == name


def test_long_project_names_match_on_their_prefix(tmp_path: Path) -> None:
    cwd = "/home/dev/" + "very_long_directory_name/" * 12
    folder = tmp_path / (project_dir_name(cwd)[:200] + "-1a2b3c")
    folder.mkdir()
    (folder / "s1.jsonl").write_text("{}\n")
    assert project_dirs(tmp_path, cwd) == [folder]
    assert find_session("s1", cwd, tmp_path) == folder / "s1.jsonl"


def test_the_root_moves_with_claude_config_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path))
    assert projects_root() == tmp_path / "projects"


def test_a_transcript_summary_matches_the_fixture_totals() -> None:
    summary = summarize(PROJECTS / "-home-dev-work-acme-api" / f"{SESSION}.jsonl")
    subagent = Usage(input_tokens=40, output_tokens=18, cache_write_tokens=2100)
    assert summary.usage == RESULT_USAGE + subagent  # de-duplicated, subagent attributed
    assert (summary.api_calls, summary.assistant_messages, summary.user_messages) == (3, 3, 2)
    assert (summary.torn_last_line, summary.bad_lines, summary.subagent_files) == (True, 0, 1)
    assert summary.cwd == "/home/dev/work/acme_api"


def test_a_fork_names_its_ancestor() -> None:
    summary = summarize(PROJECTS / "-home-dev-work-acme-api" / f"{FORK}.jsonl")
    assert summary.aliases == [SESSION]


def test_a_legacy_line_carries_its_cost() -> None:
    assert summarize(PROJECTS / "-Users-me-proj" / f"{LEGACY}.jsonl").cost_usd == 0.02031


def test_other_line_shapes_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(fixture("other-line-shapes.jsonl") + '{"type": "brand-new", "x": 1}\n')
    summary = summarize(path)
    assert (summary.lines, summary.bad_lines, summary.messages) == (5, 0, 0)


def test_a_repeated_api_call_counts_once_with_its_fullest_copy(tmp_path: Path) -> None:
    def line(output_tokens: int) -> str:
        usage = {"input_tokens": 3, "cache_read_input_tokens": 100, "output_tokens": output_tokens}
        message = {"id": "msg_1", "model": "m", "usage": usage}
        return json.dumps({"type": "assistant", "requestId": "req_1", "message": message})

    path = tmp_path / "s.jsonl"
    path.write_text(f"{line(96)}\n{line(2)}\n")  # the fuller copy first
    summary = summarize(path)
    assert (summary.api_calls, summary.assistant_messages) == (1, 2)
    assert summary.usage == Usage(input_tokens=3, output_tokens=96, cache_read_tokens=100)


def test_over_long_lines_are_skipped_with_bounded_memory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(transcripts_module, "MAX_LINE", 1024)
    path = tmp_path / "s.jsonl"
    snapshot = json.dumps({"type": "file-history-snapshot", "blob": "x" * 10_000})
    path.write_text(f'{snapshot}\n{{"type": "user", "timestamp": "2026-01-01T00:00:00Z"}}\n')
    summary = summarize(path)
    assert (summary.skipped_long_lines, summary.user_messages) == (1, 1)


def test_validate_reports_a_session(tmp_path: Path) -> None:
    report = validate(SESSION, "/home/dev/work/acme_api", PROJECTS)
    assert (report.ok, report.messages, report.size_bytes) == (True, 5, 4272)
    assert report.first_timestamp == "2026-08-20T09:14:02.101Z"
    missing = validate("nope", None, PROJECTS)
    assert (missing.ok, missing.exists) == (False, False)
    bad = tmp_path / "p" / "bad.jsonl"
    bad.parent.mkdir()
    bad.write_text('{"type": "user"}\n\nnot json\n{"type": "user"}\n')
    report = validate("bad", None, tmp_path)
    assert (report.valid_jsonl, report.problems) == (False, ["line 3 is not JSON"])
    bad.write_text('{"type": "user"}\nnot json\n{"type": "user"}\n{oops\n{"type": "user"}')
    assert validate("bad", None, tmp_path).problems == ["2 lines are not JSON, the first is line 2"]


# -- import ----------------------------------------------------------------------------


async def test_import_of_the_fixtures_is_idempotent(tracker: Tracker) -> None:
    first = await import_transcripts(tracker, PROJECTS)
    assert (first.files, first.imported, first.failed) == (3, 3, [])
    session = await tracker.get_session(SESSION)
    assert session is not None
    assert (session.input_tokens, session.output_tokens) == (52, 658)
    fork = await tracker.get_session(FORK)
    assert fork is not None
    assert fork.parent_session_id == SESSION
    legacy = await tracker.get_request(f"import:{LEGACY}")
    assert legacy is not None
    assert legacy.cost_usd == 0.02031
    events = (await tracker.stats()).events
    again = await import_transcripts(tracker, PROJECTS)
    assert (again.imported, again.skipped) == (0, 3)
    assert (await tracker.stats()).events == events


async def test_import_of_a_thousand_files(tracker: Tracker, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(generate, tmp_path / "projects", 1000)  # the benchmark's tree
    report = await import_transcripts(tracker, tmp_path / "projects")
    assert (report.files, report.imported, report.failed) == (1000, 1000, [])
    stats = await tracker.stats()
    assert (stats.sessions, stats.output_tokens) == (1000, 640 * 1000)


async def test_a_transcript_that_cannot_be_read_is_reported_and_the_rest_imported(
    tracker: Tracker, tmp_path: Path
) -> None:
    project = tmp_path / "projects" / "-home-dev-work-acme-api"
    shutil.copytree(PROJECTS / project.name, project)
    (project / "gone.jsonl").symlink_to(tmp_path / "nowhere.jsonl")  # a dangling link
    (project / "folder.jsonl").mkdir()
    report = await import_transcripts(tracker, tmp_path / "projects")
    assert sorted(report.failed) == [
        f"{project / 'folder.jsonl'}: cannot read it: Is a directory",
        f"{project / 'gone.jsonl'}: cannot read it: No such file or directory",
    ]
    fixtures = len(list((PROJECTS / project.name).glob("*.jsonl")))
    assert (report.files, report.imported) == (fixtures + 2, fixtures)


# -- the command line ---------------------------------------------------------------------


@pytest.mark.parametrize("given", ["../../etc/passwd", "..", "", "a/b", "a\0b"])
def test_validate_refuses_an_id_that_is_not_a_file_name(given: str) -> None:
    with pytest.raises(InvalidInput, match="cannot name a transcript file"):
        validate(given, None, PROJECTS)


def test_cli_validate_and_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "t.db")
    assert main(["claude", "validate", SESSION, "--root", str(PROJECTS)]) == 0
    assert "valid_jsonl      True" in capsys.readouterr().out
    assert main(["claude", "validate", "nope", "--root", str(PROJECTS)]) == 1
    capsys.readouterr()
    assert main(["init", "--db", db]) == 0
    assert main(["claude", "import", str(PROJECTS), "--db", db]) == 0
    assert "3 imported" in capsys.readouterr().out
    assert main(["claude", "import", str(PROJECTS), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 3
    assert main(["claude", "import", str(tmp_path / "nowhere"), "--db", db]) == 1
    assert "no transcript directory" in capsys.readouterr().err


def test_cli_import_uses_claude_config_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(tmp_path / "config" / "projects", 3)
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "config"))
    db = str(tmp_path / "t.db")
    main(["init", "--db", db])
    assert main(["claude", "import", "--db", db]) == 0
    assert "3 imported" in capsys.readouterr().out
