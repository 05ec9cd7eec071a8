"""``tracker history``'s readable form: a conversation's turns as a transcript."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from tracker.models import Turn
from tracker.render import when


def transcript(turns: Sequence[Turn]) -> str:
    """Each turn's request, session and times, then its prompt and response, their
    lines indented; a text kept in part or not at all says so."""
    return "\n\n".join("\n".join(_turn(n, turn)) for n, turn in enumerate(turns, 1))


def _turn(n: int, turn: Turn) -> Iterator[str]:
    yield (
        f"{n}. request {turn.request_id}, session {turn.session_id}: "
        f"asked {when(turn.asked_at)}, answered {when(turn.answered_at)}"
    )
    yield _labelled("prompt", _text(turn.prompt, turn.prompt_chars))
    yield _labelled("response", _text(turn.response, turn.response_chars))


def _labelled(label: str, text: str) -> str:
    """``text`` after its label, its further lines under its first."""
    lead = f"  {label:<10}"
    return lead + text.replace("\n", "\n" + " " * len(lead))


def _text(kept: str | None, chars: int) -> str:
    if kept is None:
        return f"(not kept: {chars:,} characters)" if chars else "(none)"
    if len(kept) == chars:
        return kept
    return f"{kept} ... (the first {len(kept):,} of {chars:,} characters)"
