"""Time predicates become exactly the upload hours a query needs, downloaded once (emulator request logs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from shillelagh.exceptions import ProgrammingError

from shillelagh_amplitude.hours import hour_range, parse_hour
from shillelagh_amplitude.sql import adapter
from shillelagh_amplitude.sql.scan import TABLE_CACHE

from .conftest import SECRET_KEY, sql_connection
from .expected import sessions_from_records
from .helpers import parse_ts


@pytest.fixture
def online(emulator, tmp_path, monkeypatch):
    """SQL through the adapter, downloading from the emulator into an empty store."""
    monkeypatch.setattr(adapter, "_VERIFIED_SECRETS", set())

    def connection(**kwargs):
        options = {"base_url": emulator.base_url, "cache_dir": str(tmp_path), "late_hours": 6, **kwargs}
        return sql_connection(**options).cursor()

    return connection


def _requested_hours(emulator) -> list[datetime]:
    return [h for r in emulator.requests if r.status in (200, 404)
            for h in hour_range(parse_hour(r.start), parse_hour(r.end))]


def _span(first: str, last: str) -> list[datetime]:
    """Every hour from ``first`` to ``last`` (``YYYYMMDDTHH``), both included."""
    return list(hour_range(parse_hour(first), parse_hour(last)))


def test_session_range_reads_range_plus_a_day_plus_late_hours_once(online, emulator, dataset):
    cursor = online(window_hours=24)
    sql = ("SELECT count(*) FROM amplitude_sessions "
           "WHERE session_start >= '2026-03-02 12:00:00' AND session_start < '2026-03-03 06:00:00'")
    (count,) = cursor.execute(sql).fetchone()
    # 1 h of clock skew before; the last hour of the range + 24 h + late_hours (6) after
    expected_hours = _span("20260302T11", "20260304T11")
    assert _requested_hours(emulator) == expected_hours  # each hour once, in order, nothing else
    assert [(r.start, r.end) for r in emulator.requests] == [
        ("20260302T11", "20260303T10"), ("20260303T11", "20260304T10"), ("20260304T11", "20260304T11")]
    start, end = datetime(2026, 3, 2, 12, tzinfo=UTC), datetime(2026, 3, 3, 6, tzinfo=UTC)
    assert count == sum(1 for s in sessions_from_records(dataset.records) if start <= s.start < end)

    emulator.clear_requests()
    TABLE_CACHE.clear()
    assert cursor.execute(sql).fetchone() == (count,)  # a new scan: from the store
    assert online().execute(sql).fetchone() == (count,)  # a new connection: from the store
    assert emulator.requests == []


def test_a_join_scans_twice_and_downloads_once(online, emulator, dataset):
    rows = online().execute(
        "SELECT count(*) FROM amplitude_sessions a JOIN amplitude_sessions b "
        "ON a.amplitude_id = b.amplitude_id AND a.session_id = b.session_id "
        "WHERE a.session_start >= '2026-03-02' AND a.session_start < '2026-03-03' "
        "AND b.session_start >= '2026-03-02' AND b.session_start < '2026-03-03'"
    ).fetchall()
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    assert rows == [(sum(1 for s in sessions_from_records(dataset.records) if start <= s.start < end),)]
    hours = _requested_hours(emulator)
    assert hours == sorted(set(hours))


def test_an_in_list_scans_once_per_value_and_downloads_each_hour_once(online, emulator, dataset):
    sessions = sorted(sessions_from_records(dataset.records), key=lambda s: s.start)
    chosen = [sessions[len(sessions) // 3].start, sessions[len(sessions) // 2].start]
    literals = ", ".join(f"'{when:%Y-%m-%d %H:%M:%S.%f}'" for when in chosen)
    rows = online().execute(f"SELECT count(*) FROM amplitude_sessions WHERE session_start IN ({literals})").fetchall()
    assert rows == [(sum(1 for s in sessions if s.start in chosen),)]
    hours = _requested_hours(emulator)
    assert len(hours) == len(set(hours))


def test_upload_time_range_fetches_exactly_its_hours(online, emulator, dataset):
    cursor = online(window_hours=6)
    (count,) = cursor.execute(
        "SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2026-03-02 03:00:00' "
        "AND server_upload_time < '2026-03-02 15:00:00'"
    ).fetchone()
    assert _requested_hours(emulator) == _span("20260302T03", "20260302T14")
    windows = [(r.start, r.end) for r in emulator.requests]
    assert windows == [("20260302T03", "20260302T08"), ("20260302T09", "20260302T14")]
    start, end = datetime(2026, 3, 2, 3, tzinfo=UTC), datetime(2026, 3, 2, 15, tzinfo=UTC)
    assert count == sum(1 for r in dataset.records if start <= parse_ts(r["server_upload_time"]) < end)


def test_event_time_range_reads_late_uploads(online, emulator, dataset):
    cursor = online(late_hours=36)
    (count,) = cursor.execute(
        "SELECT count(*) FROM amplitude_events WHERE event_time >= '2026-03-02 00:00:00' "
        "AND event_time < '2026-03-02 01:00:00'"
    ).fetchone()
    assert _requested_hours(emulator) == _span("20260301T23", "20260303T12")
    start, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 2, 1, tzinfo=UTC)
    expected = [r for r in dataset.records if start <= parse_ts(r["event_time"]) < end]
    assert any(parse_ts(r["server_upload_time"]) - parse_ts(r["event_time"]) > timedelta(hours=2) for r in expected)
    assert count == len(expected)


def test_both_event_ranges_intersect(online, emulator):
    online().execute(
        "SELECT count(*) FROM amplitude_events WHERE event_time >= '2026-03-02' AND event_time < '2026-03-03' "
        "AND server_upload_time >= '2026-03-02 20:00:00' AND server_upload_time < '2026-03-02 22:00:00'"
    ).fetchall()
    assert _requested_hours(emulator) == _span("20260302T20", "20260302T21")


def test_impossible_and_too_long_ranges_download_nothing(online, emulator):
    cursor = online()
    assert cursor.execute(
        "SELECT count(*) FROM amplitude_events WHERE event_time > '2026-03-03' AND event_time < '2026-03-02'"
    ).fetchall() == [(0,)]
    with pytest.raises(ProgrammingError, match="over 365 days"):
        cursor.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2025-01-01' "
                       "AND session_start < '2026-03-01'")
    assert emulator.requests == []


def test_a_wrong_secret_is_refused_even_when_every_hour_is_stored(online, emulator, monkeypatch):
    sql = ("SELECT count(*) FROM amplitude_sessions "
           "WHERE session_start >= '2026-03-02' AND session_start < '2026-03-02 06:00:00'")
    online().execute(sql).fetchall()
    emulator.clear_requests()
    monkeypatch.setattr(adapter, "_VERIFIED_SECRETS", set())
    with pytest.raises(ProgrammingError, match="rejected the credentials") as error:
        online(secret_key="wrong-secret-zz").execute(sql)
    assert "wrong-secret-zz" not in str(error.value) and SECRET_KEY not in str(error.value)
    assert [(r.status, r.authorized) for r in emulator.requests] == [(403, False)]
    emulator.clear_requests()
    online().execute(sql).fetchall()  # the right secret matches the store's verifier: no request
    assert emulator.requests == []


def test_sessions_split_across_upload_hours_and_windows_are_whole(online, emulator, dataset):
    start, end = datetime(2026, 3, 2, 6, tzinfo=UTC), datetime(2026, 3, 2, 12, tzinfo=UTC)
    expected = {(s.amplitude_id, s.session_id): (s.length_s, s.event_count)
                for s in sessions_from_records(dataset.records) if start <= s.start < end}
    uploads: dict[tuple, set] = {}
    for record in dataset.records:
        uploads.setdefault((record["amplitude_id"], record["session_id"]), set()).add(
            parse_ts(record["server_upload_time"]).replace(minute=0, second=0, microsecond=0))
    assert sum(1 for key in expected if len(uploads[key]) > 1) > 10  # sessions spread over several hours
    rows = online(window_hours=1, late_hours=36).execute(
        "SELECT amplitude_id, session_id, length_s, event_count FROM amplitude_sessions "
        "WHERE session_start >= '2026-03-02 06:00:00' AND session_start < '2026-03-02 12:00:00'"
    ).fetchall()
    assert all(r.end == r.start for r in emulator.requests)  # one window per upload hour
    assert {(a, s): (length, count) for a, s, length, count in rows} == expected
