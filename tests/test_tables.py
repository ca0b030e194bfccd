"""The SQL tables through shillelagh, on a store loaded from a generated export (no network)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from shillelagh.exceptions import ProgrammingError
from sqlalchemy import create_engine, inspect

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.sql import adapter
from shillelagh_amplitude.sql.scan import TABLE_CACHE
from shillelagh_amplitude.sql.sessions import LENGTH_BUCKETS
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import kpis, percentile, sessions_from_records, user_property
from .helpers import export_zip, parse_ts

RANGE_START = datetime(2026, 3, 2, tzinfo=UTC)
RANGE_END = datetime(2026, 3, 4, tzinfo=UTC)


def _in(start, end):
    return lambda when: start <= when < end


def test_tables_and_column_types(loaded_cache):
    engine = create_engine(
        "shillelagh+safe://",
        adapters=["amplitude"],
        adapter_kwargs={"amplitude": {"api_key": API_KEY, "secret_key": SECRET_KEY,
                                      "cache_dir": str(loaded_cache), "offline": True}},
    )
    inspector = inspect(engine)
    sessions = {c["name"]: str(c["type"]) for c in inspector.get_columns("amplitude_sessions")}
    assert sessions["session_start"] == "TIMESTAMP" and sessions["user_creation_time"] == "TIMESTAMP"
    assert sessions["length_s"] == "REAL" and sessions["event_count"] == "INTEGER"
    assert sessions["user_properties"] == "TEXT" and sessions["length_bucket"] == "TEXT"
    events = {c["name"]: str(c["type"]) for c in inspector.get_columns("amplitude_events")}
    assert len(events) == 55 and "insert_id" in events and "$insert_id" not in events
    for name in ("event_time", "client_event_time", "server_upload_time", "server_received_time",
                 "client_upload_time", "processed_time", "user_creation_time"):
        assert events[name] == "TIMESTAMP"
    assert events["amplitude_id"] == events["session_id"] == events["event_id"] == "INTEGER"
    assert events["user_properties"] == events["event_properties"] == events["data"] == "TEXT"


def test_session_kpis_equal_an_independent_computation(dataset, offline_sql):
    expected = kpis([s for s in sessions_from_records(dataset.records) if RANGE_START <= s.start < RANGE_END])
    (row,) = offline_sql(
        "SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) FROM amplitude_sessions "
        "WHERE session_start >= '2026-03-02' AND session_start < '2026-03-04'"
    )
    assert row[0] == expected[0]
    assert row[1:] == pytest.approx(expected[1:], rel=1e-9)


def test_per_plan_segments(dataset, offline_sql):
    sessions = [s for s in sessions_from_records(dataset.records) if RANGE_START <= s.start < RANGE_END]
    rows = offline_sql(
        "SELECT json_extract(user_properties, '$.plan') AS plan, count(*), median(length_s), "
        "percentile(length_s, 95) FROM amplitude_sessions "
        "WHERE session_start >= '2026-03-02 00:00:00' AND session_start < '2026-03-04 00:00:00' GROUP BY 1"
    )
    plans = {user_property(s, "plan") for s in sessions}
    assert {row[0] for row in rows} == plans and len(plans) >= 3
    for plan, count, median, p95 in rows:
        lengths = [s.length_s for s in sessions if user_property(s, "plan") == plan]
        assert count == len(lengths)
        assert median == pytest.approx(percentile(lengths, 50))
        assert p95 == pytest.approx(percentile(lengths, 95))


@pytest.mark.parametrize(
    "low,high",
    [
        ("2026-03-03 12:00:00", "2026-03-04 09:00:00"),  # Superset's literal form
        ("2026-03-03T12:00:00", "2026-03-04T09:00:00"),
        ("2026-03-03T13:30:00+01:00", "2026-03-04T09:00:00Z"),  # zones are converted to UTC
        ("2026-03-02 23:59:59.5", "2026-03-03 00:00:00.5"),
    ],
)
def test_sub_day_ranges_are_exact(dataset, offline_sql, low, high):
    start = datetime.fromisoformat(low.replace("Z", "+00:00"))
    end = datetime.fromisoformat(high.replace("Z", "+00:00"))
    start, end = (t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC) for t in (start, end))
    sessions = [s for s in sessions_from_records(dataset.records) if start <= s.start < end]
    rows = offline_sql(
        "SELECT session_id, amplitude_id FROM amplitude_sessions WHERE session_start >= ? AND session_start < ?",
        low, high,
    )
    assert sorted(rows) == sorted((s.session_id, s.amplitude_id) for s in sessions)
    events = [r for r in dataset.records if start <= parse_ts(r["event_time"]) < end]
    (count,) = offline_sql(
        f"SELECT count(*) FROM amplitude_events WHERE event_time >= '{low}' AND event_time < '{high}'"
    )[0]
    assert count == len(events)


def test_inclusive_and_exclusive_bounds(dataset, offline_sql):
    starts = sorted({s.start for s in sessions_from_records(dataset.records)})
    edge = starts[len(starts) // 2]
    literal = edge.strftime("%Y-%m-%d %H:%M:%S.%f")
    at_edge = sum(1 for s in sessions_from_records(dataset.records) if s.start == edge)
    assert offline_sql(f"SELECT count(*) FROM amplitude_sessions WHERE session_start = '{literal}'") == [(at_edge,)]
    both = offline_sql(
        f"SELECT count(*) FROM amplitude_sessions WHERE session_start >= '{literal}' AND session_start <= '{literal}'"
    )
    assert both == [(at_edge,)]
    assert offline_sql(
        f"SELECT count(*) FROM amplitude_sessions WHERE session_start > '{literal}' AND session_start < '{literal}'"
    ) == [(0,)]


def test_edge_cases_of_the_definition(dataset, offline_sql):
    records = dataset.records
    where = "WHERE session_start >= '2026-03-01' AND session_start < '2026-03-05'"
    # out-of-session events exist in the export and never form a session
    assert any(r["session_id"] == -1 for r in records)
    assert offline_sql(f"SELECT count(*) FROM amplitude_sessions {where} AND session_id = -1") == [(0,)]
    # one session_id used by two users gives two sessions
    shared = offline_sql(
        f"SELECT session_id FROM amplitude_sessions {where} GROUP BY session_id HAVING count(*) > 1"
    )
    assert shared
    # single-event sessions have length 0; sessions over a day are capped
    assert offline_sql(f"SELECT min(length_s), max(length_s) FROM amplitude_sessions {where}") == [(0.0, 86400.0)]
    assert offline_sql(f"SELECT count(*) FROM amplitude_sessions {where} AND event_count = 1 AND length_s > 0") == [
        (0,)
    ]
    # sessions across midnight are dated by their start
    crossing = offline_sql(
        f"SELECT count(*) FROM amplitude_sessions {where} AND date(session_start) < date(session_end)"
    )[0][0]
    assert crossing > 0
    # anonymous users: no user_id, still a device and an amplitude_id
    anonymous = offline_sql(
        f"SELECT count(*), count(device_id), count(amplitude_id) FROM amplitude_sessions {where} AND user_id IS NULL"
    )[0]
    assert anonymous[0] > 0 and anonymous[0] == anonymous[1] == anonymous[2]
    # no session twice
    assert offline_sql(
        f"SELECT count(*) FROM (SELECT amplitude_id, session_id FROM amplitude_sessions {where} "
        "GROUP BY 1, 2 HAVING count(*) > 1)"
    ) == [(0,)]


def test_buckets_and_event_types(dataset, offline_sql):
    sessions = [s for s in sessions_from_records(dataset.records) if RANGE_START <= s.start < RANGE_END]
    where = "WHERE session_start >= '2026-03-02' AND session_start < '2026-03-04'"
    rows = dict(offline_sql(f"SELECT length_bucket, count(*) FROM amplitude_sessions {where} GROUP BY 1 ORDER BY 1"))
    expected: dict[str, int] = {}
    for session in sessions:
        label = [label for lower, label in LENGTH_BUCKETS if session.length_s >= lower][-1]
        expected[label] = expected.get(label, 0) + 1
    assert rows == expected
    with_search = offline_sql(
        f"SELECT count(*) FROM amplitude_sessions {where} "
        "AND EXISTS (SELECT 1 FROM json_each(event_types) WHERE value = 'search')"
    )
    assert with_search == [(sum(1 for s in sessions if "search" in s.event_types),)]
    (types,) = offline_sql(f"SELECT event_types FROM amplitude_sessions {where} LIMIT 1")[0]
    assert isinstance(json.loads(types), list)


def test_contradictory_range_returns_nothing(offline_sql):
    assert offline_sql(
        "SELECT count(*) FROM amplitude_sessions WHERE session_start > '2026-03-05' AND session_start < '2026-03-01'"
    ) == [(0,)]


def test_readable_errors(loaded_cache):
    cursor = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    with pytest.raises(ProgrammingError, match="over 365 days"):
        cursor.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2024-01-01'")
    wrong = sql_connection(cache_dir=str(loaded_cache), offline=True, secret_key="not-the-secret").cursor()
    with pytest.raises(ProgrammingError, match="secret key does not match") as error:
        wrong.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-03-02' "
                      "AND session_start < '2026-03-03'")
    assert "not-the-secret" not in str(error.value)
    with pytest.raises(ProgrammingError, match="Unknown region"):
        sql_connection(region="mars").cursor().execute("SELECT count(*) FROM amplitude_sessions")


def test_no_predicate_reads_the_last_default_days(tmp_path):
    """Sessions started 1, 5 and 20 days ago: the default window decides which are read."""
    now = datetime.now(UTC).replace(microsecond=0)
    starts = [now - timedelta(days=days, hours=1) for days in (1, 5, 20)]
    events = [make_event(amplitude_id=n, session_id=int(start.timestamp() * 1000), client_event_time=start,
                         server_upload_time=start + timedelta(minutes=1)) for n, start in enumerate(starts)]
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    # loaded as covering the last 32 days (hours without events recorded as empty): offline, every default
    # window below lies within what the store holds (before 02:00 UTC its whole days end at yesterday's midnight)
    load_archive(store, export_zip(tmp_path, events), now - timedelta(days=32), now)
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    counts = {}
    for days in (3, 10, 30):
        cursor = sql_connection(cache_dir=str(tmp_path), offline=True, default_days=days).cursor()
        counts[days] = cursor.execute("SELECT count(*) FROM amplitude_sessions").fetchone()[0]
    assert counts == {3: 1, 10: 2, 30: 3}


def test_offline_without_any_stored_hour_says_so(loaded_cache, dataset):
    recent = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    with pytest.raises(ProgrammingError, match=r"offline and its store holds none of the upload hours .*amplitude-lo"):
        recent.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-06-01' "
                       "AND session_start < '2026-06-02'")
    # a range partly stored is not answered from the part: the error names the stored span
    span = HourStore(loaded_cache, "https://amplitude.com", API_KEY).stored_span()
    with pytest.raises(ProgrammingError) as error:
        recent.execute("SELECT count(*) FROM amplitude_sessions "
                       "WHERE session_start >= '2026-03-04' AND session_start < '2026-03-20'")
    assert (f"offline and its store holds upload hours {span[0]:%Y-%m-%dT%H:00} to {span[1]:%Y-%m-%dT%H:00} UTC only, "
            "but this query asks for session_start from 2026-03-04 to 2026-03-20 UTC, which needs upload hours "
            "2026-03-04T00:00 to 2026-03-19T23:00") in str(error.value)
    # no upper bound: the error names the range as the query wrote it, open end included
    with pytest.raises(ProgrammingError) as error:
        recent.execute("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-03-04'")
    assert "but this query asks for session_start from 2026-03-04 UTC on, which needs upload hours 2026-03-04T00:00 " \
        "to " in str(error.value)
    first_upload = min(parse_ts(r["server_upload_time"]) for r in dataset.records)
    assert span[0] == first_upload.replace(minute=0, second=0, microsecond=0)
    # the stored part itself is answered
    assert recent.execute("SELECT count(*) FROM amplitude_sessions "
                          "WHERE session_start >= '2026-03-04' AND session_start < '2026-03-05'").fetchall()[0][0] > 0


def test_built_sessions_are_kept_for_other_processes(loaded_cache, offline_sql, monkeypatch):
    sql = ("SELECT count(*), sum(length_s) FROM amplitude_sessions "
           "WHERE session_start >= '2026-03-02' AND session_start < '2026-03-05'")
    first = offline_sql(sql)
    derived = set(Path(loaded_cache).glob("*/derived/*.arrow"))
    assert derived
    TABLE_CACHE.clear()  # as in a new process
    monkeypatch.setattr(adapter, "build_sessions", lambda *_: pytest.fail("sessions built twice"))
    assert offline_sql(sql) == first
    assert set(Path(loaded_cache).glob("*/derived/*.arrow")) == derived


@pytest.mark.parametrize("column", ["server_upload_time", "event_time"])
def test_an_inclusive_end_on_the_hour_reads_the_hour_that_starts_there(tmp_path, column):
    """``BETWEEN '2026-03-01' AND '2026-03-02'`` includes 2026-03-02 00:00:00: that upload hour is read too."""
    at = datetime(2026, 3, 2, tzinfo=UTC)
    times = {n: at + timedelta(minutes=n) for n in (0, 1)}  # on the boundary, and a minute after it (outside)
    events = [make_event(amplitude_id=n, client_event_time=t, server_upload_time=t) for n, t in times.items()]
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    load_archive(store, export_zip(tmp_path, events), at - timedelta(days=2), at + timedelta(days=2))
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    cursor = sql_connection(cache_dir=str(tmp_path), offline=True, late_hours=0).cursor()
    rows = cursor.execute(f"SELECT amplitude_id FROM amplitude_events "
                          f"WHERE {column} BETWEEN '2026-03-01' AND '2026-03-02'").fetchall()
    assert rows == [(0,)]


def test_offline_with_none_of_the_hours_lists_each_day_once(loaded_cache, monkeypatch):
    """The "holds none of the upload hours" check lists a day folder once, not once per hour (a LIST request
    each on object storage)."""
    from shillelagh_amplitude.store.location import StoreLocation

    listed: list[tuple[str, ...]] = []
    original = StoreLocation.list
    monkeypatch.setattr(StoreLocation, "list", lambda self, *names: listed.append(names) or original(self, *names))
    cursor = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    with pytest.raises(ProgrammingError, match="holds none of the upload hours"):
        cursor.execute("SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2025-06-01' "
                       "AND server_upload_time < '2025-07-01'")
    june = [names[-1] for names in listed if names[-1].startswith("202506")]
    assert sorted(june) == [f"202506{day:02}" for day in range(1, 31)]  # June's 30 days, each listed once
