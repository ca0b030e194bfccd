"""UTC hour arithmetic for the Export API, whose ``start`` and ``end`` are inclusive ``YYYYMMDDTHH`` hours."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

HOUR = timedelta(hours=1)
EXPORT_HOUR_FORMAT = "%Y%m%dT%H"
#: How long after an upload hour ends the Export API can serve it (Amplitude: data is available to export "at a
#: minimum within 2 hours of when the servers received it").
EXPORT_LATENCY = timedelta(hours=2)
#: How far ahead of real time a device clock may run (client times, session ids) and still be read whole:
#: queries, and so the sync, read one upload hour before a range.
CLOCK_SKEW = HOUR
#: How far before a range user sessions read events, to see where its first sessions begin: queries read these
#: upload hours too, and so the sync keeps them.
LOOKBACK = timedelta(hours=48)


def to_utc(value: datetime) -> datetime:
    """An aware UTC datetime; naive values are taken to be UTC already (as Superset sends them)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def floor_hour(value: datetime) -> datetime:
    """The UTC hour that contains ``value``."""
    return to_utc(value).replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    """The first UTC hour boundary at or after ``value``."""
    floored = floor_hour(value)
    return floored if floored == to_utc(value) else floored + HOUR


def format_hour(hour: datetime) -> str:
    """``20260301T05`` for 2026-03-01 05:00 UTC (always two-digit hours)."""
    return to_utc(hour).strftime(EXPORT_HOUR_FORMAT)


def parse_hour(text: str) -> datetime:
    """Inverse of :func:`format_hour`."""
    return datetime.strptime(text, EXPORT_HOUR_FORMAT).replace(tzinfo=UTC)


def hour_range(first: datetime, last: datetime) -> Iterator[datetime]:
    """Every hour from ``first`` to ``last``, both included."""
    hour = floor_hour(first)
    last = floor_hour(last)
    while hour <= last:
        yield hour
        hour += HOUR


def hour_count(first: datetime, last: datetime) -> int:
    """How many hours ``first..last`` (inclusive) holds."""
    return int((floor_hour(last) - floor_hour(first)) / HOUR) + 1


def tile_windows(first: datetime, last: datetime, window_hours: int) -> list[tuple[datetime, datetime]]:
    """Consecutive inclusive windows of at most ``window_hours`` that cover ``first..last`` exactly once."""
    if window_hours < 1:
        raise ValueError("window_hours must be at least 1")
    windows = []
    start = floor_hour(first)
    last = floor_hour(last)
    while start <= last:
        end = min(start + (window_hours - 1) * HOUR, last)
        windows.append((start, end))
        start = end + HOUR
    return windows


def contiguous_runs(hours: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Group sorted hours into inclusive runs of consecutive hours."""
    runs: list[tuple[datetime, datetime]] = []
    for hour in hours:
        if runs and runs[-1][1] + HOUR == hour:
            runs[-1] = (runs[-1][0], hour)
        else:
            runs.append((hour, hour))
    return runs


def newest_exportable_hour(now: datetime) -> datetime:
    """The newest upload hour the Export API can serve at ``now`` (about 2 h behind)."""
    return floor_hour(to_utc(now) - EXPORT_LATENCY) - HOUR


def whole_days_end(now: datetime) -> datetime:
    """The end of the newest whole UTC day the Export API can serve at ``now``: the midnight at or before the end
    of its newest exportable hour (today's from 02:00 UTC, yesterday's before). The sample's days, the default
    window, the background sync and the dashboard's default range all count whole days back from it."""
    return (newest_exportable_hour(now) + HOUR).replace(hour=0)
