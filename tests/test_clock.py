"""The stored time format: fixed width UTC text, whatever the moment's zone; durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker import InvalidInput
from tracker.clock import from_iso, iso, seconds

ZONES = st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=-7, minutes=-30))])
MOMENTS = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=ZONES
)


def _reference(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@given(MOMENTS)
def test_an_aware_moment_is_stored_as_fixed_width_utc(moment: datetime) -> None:
    text = iso(moment)
    assert text == _reference(moment)
    assert len(text) == 27
    assert from_iso(text) == moment


@given(st.integers(0, 999_999))
def test_a_naive_moment_is_taken_as_utc(micro: int) -> None:
    naive = datetime(2026, 11, 21, 7, 30, 5, micro)
    assert iso(naive) == iso(naive.replace(tzinfo=UTC)) == _reference(naive.replace(tzinfo=UTC))


def test_a_whole_second_keeps_its_six_zeros() -> None:
    assert iso(datetime(2026, 11, 21, tzinfo=UTC)) == "2026-11-21T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10", 10),
        (" 1.5 ", 1.5),
        ("500ms", 0.5),
        ("30s", 30),
        ("90m", 5400),
        ("1.5h", 5400),
        ("1 h", 3600),
        ("7d", 604800),
        ("2w", 1209600),
        ("1h30m", 5400),  # as systemd and Go write them
        ("1m30s", 90),
        ("2d 12h", 216000),
    ],
)
def test_a_duration_is_seconds_or_parts_with_units(text: str, expected: float) -> None:
    assert seconds(text, "idle_for") == expected


@pytest.mark.parametrize("text", ["", "soon", "h", "1h30", "1H", "P1D", "1..5h", "1h h", "-1h"])
def test_a_bad_duration_names_itself_and_the_option(text: str) -> None:
    message = re.escape(f"bad duration {text!r} for idle_for: use e.g.")
    with pytest.raises(InvalidInput, match=message):
        seconds(text, "idle_for")
