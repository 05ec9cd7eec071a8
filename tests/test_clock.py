"""The stored time format: fixed width UTC text, whatever the moment's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from tracker.clock import from_iso, iso

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
