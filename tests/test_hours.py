"""Hour arithmetic: inclusive windows that tile a range exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shillelagh_amplitude.hours import (
    ceil_hour,
    contiguous_runs,
    floor_hour,
    format_hour,
    hour_range,
    parse_hour,
    tile_windows,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.mark.parametrize("hours,window", [(1, 24), (24, 24), (25, 24), (100, 7), (720, 24), (5, 1)])
def test_windows_tile_the_range_exactly_once(hours, window):
    last = T0 + timedelta(hours=hours - 1)
    windows = tile_windows(T0, last, window)
    covered = [hour for start, end in windows for hour in hour_range(start, end)]
    assert covered == list(hour_range(T0, last))
    assert len(covered) == hours
    assert all((end - start) / timedelta(hours=1) + 1 <= window for start, end in windows)


def test_export_hour_text_is_two_digit_and_utc():
    paris = timezone(timedelta(hours=1))
    assert format_hour(datetime(2026, 3, 1, 6, 30, tzinfo=paris)) == "20260301T05"
    assert format_hour(datetime(2026, 3, 1, 5)) == "20260301T05"  # naive = UTC
    assert parse_hour("20260301T05") == datetime(2026, 3, 1, 5, tzinfo=UTC)


def test_floor_ceil_and_runs():
    assert floor_hour(datetime(2026, 3, 1, 5, 59, 59)) == datetime(2026, 3, 1, 5, tzinfo=UTC)
    assert ceil_hour(datetime(2026, 3, 1, 5, 0, 1)) == datetime(2026, 3, 1, 6, tzinfo=UTC)
    assert ceil_hour(datetime(2026, 3, 1, 5)) == datetime(2026, 3, 1, 5, tzinfo=UTC)
    hours = [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=5)]
    assert contiguous_runs(hours) == [(T0, T0 + timedelta(hours=1)), (hours[2], hours[2])]
