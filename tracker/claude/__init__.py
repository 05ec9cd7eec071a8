"""The Claude Code CLI: parse its results, run it, and import its transcripts."""

from tracker.claude.importer import ImportReport, import_transcripts
from tracker.claude.result import ClaudeOutputError, ClaudeResult, parse_output, parse_result
from tracker.claude.runner import ClaudeRunner, Run
from tracker.claude.transcripts import (
    Summary,
    Validation,
    find_session,
    project_dir_name,
    projects_root,
    session_files,
    summarize,
    validate,
)

__all__ = [
    "ClaudeOutputError",
    "ClaudeResult",
    "ClaudeRunner",
    "ImportReport",
    "Run",
    "Summary",
    "Validation",
    "find_session",
    "import_transcripts",
    "parse_output",
    "parse_result",
    "project_dir_name",
    "projects_root",
    "session_files",
    "summarize",
    "validate",
]
