"""Parse what ``claude -p --output-format json|stream-json`` printed into one result.

Accepts the single JSON object, the ``--verbose`` array (the last ``result``
element wins), and stream-json lines. Errors are classified on ``is_error``
first (a not-logged-in run says ``subtype: success`` with ``is_error: true``),
and an unknown ``--resume`` id is recognised from ``errors[]`` or stderr.
Unknown keys are ignored; a malformed output is a ``ClaudeOutputError``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from tracker.errors import InvalidInput
from tracker.events import Usage

UNKNOWN_SESSION = "No conversation found with session ID"


class ClaudeOutputError(InvalidInput):
    """The CLI printed something that is not a result."""


class ClaudeResult(msgspec.Struct, frozen=True, kw_only=True):
    """One CLI invocation's outcome, as the CLI reported it."""

    session_id: str | None  # None when the CLI's id cannot be trusted (unknown session)
    text: str | None
    is_error: bool
    subtype: str
    kind: str  # "success", or the error kind for fail_request
    error: str | None
    usage: Usage
    cost_usd: float | None
    duration_ms: int | None
    duration_api_ms: int | None
    num_turns: int | None
    model_usage: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return not self.is_error


def parse_output(stdout: str | bytes, stderr: str = "") -> ClaudeResult:
    """The result of one run from its whole stdout (json, verbose array or stream-json)."""
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    if not text.strip():
        raise ClaudeOutputError(f"the CLI printed nothing; stderr: {_tail(stderr)}")
    try:
        messages = _messages(text)
    except msgspec.DecodeError as exc:
        raise ClaudeOutputError(f"the CLI output is not JSON: {exc}") from None
    results = [m for m in messages if isinstance(m, dict) and m.get("type") == "result"]
    if not results:
        raise ClaudeOutputError(f"the CLI output has no result message; stderr: {_tail(stderr)}")
    return parse_result(results[-1], stderr)


def _messages(text: str) -> list[Any]:
    """One JSON document (object or --verbose array), else stream-json lines."""
    stripped = text.strip()
    try:
        document: Any = msgspec.json.decode(stripped)
    except msgspec.DecodeError:
        return [msgspec.json.decode(line) for line in stripped.splitlines() if line.strip()]
    return document if isinstance(document, list) else [document]


def parse_result(message: dict[str, Any], stderr: str = "") -> ClaudeResult:
    """Turn one ``result`` message into a ClaudeResult."""
    errors = [str(e) for e in message.get("errors") or []]
    is_error = bool(message.get("is_error", message.get("subtype") != "success"))
    unknown = any(UNKNOWN_SESSION in e for e in [*errors, stderr])
    kind = "success" if not is_error else _error_kind(str(message.get("subtype")), unknown)
    error = None
    if is_error:
        error = "; ".join(errors) or _string(message.get("result")) or _tail(stderr) or kind
    return ClaudeResult(
        session_id=None if unknown else _string(message.get("session_id")),
        text=_string(message.get("result")),
        is_error=is_error,
        subtype=str(message.get("subtype") or ""),
        kind=kind,
        error=error,
        usage=usage_of(message.get("usage") or {}),
        cost_usd=_cost(message),
        duration_ms=_int(message.get("duration_ms")),
        duration_api_ms=_int(message.get("duration_api_ms")),
        num_turns=_int(message.get("num_turns")),
        model_usage=message.get("modelUsage") or {},
    )


def _error_kind(subtype: str, unknown_session: bool) -> str:
    if unknown_session:
        return "unknown_session"
    if subtype == "error_max_turns":
        return "max_turns"
    if subtype in ("", "success", "None"):
        return "cli_error"  # e.g. not logged in: subtype success, is_error true
    return subtype


def usage_of(usage: dict[str, Any]) -> Usage:
    """Token counts; cache writes from the nested ``cache_creation`` when present."""
    nested = usage.get("cache_creation")
    if isinstance(nested, dict):
        cache_write = (_int(nested.get("ephemeral_5m_input_tokens")) or 0) + (
            _int(nested.get("ephemeral_1h_input_tokens")) or 0
        )
    else:
        cache_write = _int(usage.get("cache_creation_input_tokens")) or 0
    return Usage(
        input_tokens=_int(usage.get("input_tokens")) or 0,
        output_tokens=_int(usage.get("output_tokens")) or 0,
        cache_read_tokens=_int(usage.get("cache_read_input_tokens")) or 0,
        cache_write_tokens=cache_write,
    )


def _cost(message: dict[str, Any]) -> float | None:
    for key in ("total_cost_usd", "cost_usd", "total_cost"):  # newest first
        if (value := number(message.get(key))) is not None:
            return value
    return None


def number(value: Any) -> float | None:
    """A JSON number as a float (None for anything else, booleans included)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _tail(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]
