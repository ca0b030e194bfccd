"""User sessions (``amplitude_user_sessions``): each rule on hand-built events, the range boundaries, the gap chosen
in SQL, and the rows of an independent DuckDB implementation for several gaps through both row paths."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.sql import adapter
from shillelagh_amplitude.sql.scan import TABLE_CACHE
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import USER_SESSION_COLUMNS, user_sessions
from .helpers import export_zip

DAY = datetime(2026, 3, 10, tzinfo=UTC)  # the queried day of the hand-built events
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


def _event(user: int, at: datetime, session_id: int | None = None, **extra) -> dict:
    """One event of ``user`` at ``at`` in session ``session_id`` (default: a session started at ``at``)."""
    session = int(at.timestamp() * 1000) if session_id is None else session_id
    return make_event(amplitude_id=user, user_id=f"u{user}", client_event_time=at, session_id=session, **extra)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def _rules() -> list[dict]:
    """Hand-built events, one user per rule."""
    t = DAY + timedelta(hours=9)
    phone, laptop = _ms(t), _ms(t + MINUTE)
    closed = t + timedelta(minutes=3)
    return [
        # 1: two devices interleaved in one user session (phone and laptop sessions, 4 events)
        _event(1, t, phone, device_id="phone", platform="iOS", event_type="open"),
        _event(1, t + MINUTE, laptop, device_id="laptop", platform="Web"),
        _event(1, t + 2 * MINUTE, phone, device_id="phone"),
        _event(1, t + 4 * MINUTE, laptop, device_id="laptop", event_type="close"),
        # 2: pauses of 29 min (same session) and then 31 min (a new one), with a 30-minute gap
        _event(2, t), _event(2, t + 29 * MINUTE), _event(2, t + 60 * MINUTE),
        # 3: a force-close 10 s after the last event: a new session id, merged back
        _event(3, t, device_id="d3"), _event(3, closed - timedelta(seconds=10), _ms(t), device_id="d3"),
        _event(3, closed, device_id="d3"), _event(3, closed + 5 * MINUTE, _ms(closed), device_id="d3"),
        # 4: crossing midnight, dated by its start (the next day is outside the queried range)
        _event(4, DAY + timedelta(hours=23, minutes=50)), _event(4, DAY + timedelta(days=1, minutes=15)),
        # 5: 30 hours of activity every 20 minutes: split once at 24 h (the second part starts the next day)
        *[_event(5, DAY + n * 20 * MINUTE, _ms(DAY)) for n in range(91)],
        # 6: out-of-session events are ignored: they neither extend nor bridge a session
        _event(6, t), _event(6, t + 20 * MINUTE, -1), _event(6, t + 40 * MINUTE, -1), _event(6, t + 50 * MINUTE),
        # 7: a late upload (a day later) that fills the pause between two events: one session
        _event(7, t), _event(7, t + 50 * MINUTE),
        _event(7, t + 25 * MINUTE, server_upload_time=t + timedelta(hours=26)),
        # range boundaries (queried from DAY): 8 runs without a pause from 10 minutes before the range into it
        *[_event(8, DAY - 10 * MINUTE + n * 5 * MINUTE, _ms(DAY - 10 * MINUTE)) for n in range(5)],
        # 9: last event before the range 40 minutes before its first event inside the range
        _event(9, DAY - 30 * MINUTE), _event(9, DAY + 10 * MINUTE), _event(9, DAY + 12 * MINUTE),
    ]


@pytest.fixture(scope="module")
def rules_cache(tmp_path_factory) -> Path:
    """A store holding the hand-built events, loaded as covering 5 days around the queried one."""
    root = tmp_path_factory.mktemp("rules")
    store = HourStore(root / "cache", "https://amplitude.com", API_KEY)
    load_archive(store, export_zip(root, _rules()), DAY - timedelta(days=3), DAY + timedelta(days=3))
    store.remember_secret(SECRET_KEY)
    return root / "cache"


def _amplitude(cache: Path):
    return create_engine("amplitude://", api_key=API_KEY, secret_key=SECRET_KEY, cache_dir=str(cache), offline=True)


def _rows(cache: Path, where: str) -> dict[int, list[dict]]:
    """User sessions of the queried day by user, through amplitude://."""
    sql = (f"SELECT * FROM amplitude_user_sessions WHERE session_start >= '{DAY:%Y-%m-%d}' "
           f"AND session_start < '{DAY + timedelta(days=1):%Y-%m-%d}' {where} ORDER BY amplitude_id, session_start")
    with _amplitude(cache).connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(text(sql))]
    by_user: dict[int, list[dict]] = {}
    for row in rows:
        by_user.setdefault(row["amplitude_id"], []).append(row)
    return by_user


def test_each_rule_on_hand_built_events(rules_cache):
    users = _rows(rules_cache, "")
    t = DAY + timedelta(hours=9)
    (devices,) = users[1]
    assert (devices["event_count"], devices["devices"], devices["amplitude_sessions"]) == (4, 2, 2)
    assert (devices["length_s"], devices["first_event_type"], devices["last_event_type"]) == (240.0, "open", "close")
    assert devices["platform"] == "iOS" and devices["gap_minutes"] == 30
    assert [(s["session_start"], s["event_count"], s["length_s"]) for s in users[2]] == [
        (t, 2, 29 * 60.0), (t + 60 * MINUTE, 1, 0.0)]
    (merged,) = users[3]
    assert (merged["event_count"], merged["amplitude_sessions"], merged["length_s"]) == (4, 2, 8 * 60.0)
    (midnight,) = users[4]
    assert midnight["session_start"] == DAY + timedelta(hours=23, minutes=50)
    assert midnight["session_end"] == DAY + timedelta(days=1, minutes=15) and midnight["length_s"] == 25 * 60.0
    (long,) = users[5]  # the second part starts at 24 h 20 min: the next day, outside the range
    assert (long["session_start"], long["length_s"], long["event_count"]) == (DAY, 86_400.0, 73)
    assert long["length_bucket"] == "9: 1-24 h"
    assert [(s["session_start"], s["event_count"]) for s in users[6]] == [(t, 1), (t + 50 * MINUTE, 1)]
    (late,) = users[7]
    assert (late["event_count"], late["length_s"]) == (3, 50 * 60.0)
    # the next day holds the rest of user 5's activity, from 24 h 20 min on
    with _amplitude(rules_cache).connect() as connection:
        (rest,) = connection.execute(text(
            "SELECT session_start, event_count FROM amplitude_user_sessions WHERE amplitude_id = 5 "
            f"AND session_start >= '{DAY + timedelta(days=1):%Y-%m-%d}' AND session_start < "
            f"'{DAY + timedelta(days=2):%Y-%m-%d}'")).fetchall()
    assert rest == (DAY + timedelta(hours=24, minutes=20), 18)


def test_range_boundaries(rules_cache):
    """The look-back sees where the range's first sessions begin (30-minute gap)."""
    users = _rows(rules_cache, "")
    assert 8 not in users  # active without a pause from 10 minutes before the range: dated before it
    (returned,) = users[9]  # back 40 minutes after the last event before the range: a new session
    assert (returned["session_start"], returned["event_count"]) == (DAY + 10 * MINUTE, 2)
    with _amplitude(rules_cache).connect() as connection:
        (before,) = connection.execute(text(
            "SELECT session_start, event_count FROM amplitude_user_sessions WHERE amplitude_id = 8 "
            f"AND session_start >= '{DAY - HOUR:%Y-%m-%d %H:%M:%S}' AND session_start < '{DAY:%Y-%m-%d}'")).all()
    assert before == (DAY - 10 * MINUTE, 5)


def test_the_gap_is_chosen_in_sql(rules_cache):
    t = DAY + timedelta(hours=9)
    assert len(_rows(rules_cache, "AND gap_minutes = 60")[2]) == 1  # the 31-minute pause no longer splits
    assert [s["event_count"] for s in _rows(rules_cache, "AND gap_minutes = 4")[3]] == [3, 1]  # 5 min > 4
    both = _rows(rules_cache, "AND gap_minutes IN (30, 60)")[2]
    assert sorted((s["gap_minutes"], s["session_start"], s["event_count"]) for s in both) == [
        (30, t, 2), (30, t + 60 * MINUTE, 1), (60, t, 3)]
    with _amplitude(rules_cache).connect() as connection:
        per_gap = connection.execute(text(
            "SELECT gap_minutes, count(*) FROM amplitude_user_sessions WHERE session_start >= '2026-03-10' "
            "AND session_start < '2026-03-11' AND gap_minutes IN (5, 30, 1440) GROUP BY 1 ORDER BY 1")).fetchall()
    assert [gap for gap, _ in per_gap] == [5, 30, 1440]
    assert per_gap[0][1] > per_gap[1][1] > per_gap[2][1]


@pytest.mark.parametrize("value", ["0", "1441", "-5"])
def test_a_gap_outside_one_minute_to_a_day_is_refused(rules_cache, value):
    with _amplitude(rules_cache).connect() as connection, pytest.raises(DBAPIError) as error:
        connection.execute(text(f"SELECT count(*) FROM amplitude_user_sessions WHERE gap_minutes = {value}"))
    assert (f"gap_minutes must be a whole number of minutes from 1 to 1440 (24 h), not {value}: choose it with "
            "gap_minutes = 60 or gap_minutes IN (30, 60).") in str(error.value)


def test_a_gap_compared_with_text_is_refused(rules_cache):
    with _amplitude(rules_cache).connect() as connection, pytest.raises(DBAPIError) as error:
        connection.execute(text("SELECT count(*) FROM amplitude_user_sessions WHERE gap_minutes = 'an hour'"))
    assert "gap_minutes is compared with text: write a whole number of minutes, e.g. gap_minutes = 60." in str(
        error.value)


def test_a_gap_is_compared_as_sql_compares_it(rules_cache):
    """shillelagh hands the adapter 7.5 as 7: SQLite's own check keeps gap 7's rows out; '60' is 60."""
    where = "session_start >= '2026-03-10' AND session_start < '2026-03-11' AND"
    with _amplitude(rules_cache).connect() as connection:
        count = lambda gap: connection.execute(text(  # noqa: E731
            f"SELECT count(*) FROM amplitude_user_sessions WHERE {where} gap_minutes = {gap}")).scalar()
        assert count("7.5") == 0 and count("7") > 0
        assert count("'60'") == count("60.0") == count("60") > 0


def test_contradictory_gaps_and_ranges_read_nothing(rules_cache):
    with _amplitude(rules_cache).connect() as connection:
        for where in ("gap_minutes = 30 AND gap_minutes = 60",
                      "session_start > '2026-03-11' AND session_start < '2026-03-09'"):
            assert connection.execute(text(f"SELECT count(*) FROM amplitude_user_sessions WHERE {where}")).all() == [
                (0,)]


def test_user_sessions_are_kept_per_gap_for_other_processes(rules_cache, monkeypatch):
    where = "WHERE session_start >= '2026-03-10' AND session_start < '2026-03-11'"
    sql = f"SELECT gap_minutes, count(*), sum(length_s) FROM amplitude_user_sessions {where} AND gap_minutes = ?"
    derived = lambda: set(Path(rules_cache).glob("*/derived/*.arrow"))  # noqa: E731
    before = derived()
    cursor = sql_connection(cache_dir=str(rules_cache), offline=True).cursor()
    first = [cursor.execute(sql, (gap,)).fetchall() for gap in (45, 50)]
    built = derived() - before
    assert len(built) == 2  # one per gap
    TABLE_CACHE.clear()  # as in a new process
    monkeypatch.setattr(adapter, "build_user_sessions", lambda *_, **__: pytest.fail("user sessions built twice"))
    assert [cursor.execute(sql, (gap,)).fetchall() for gap in (45, 50)] == first
    assert derived() - before == built


# --- an independent implementation over generated data ------------------------------------------------------

def _through(run, start: datetime, end: datetime, gap: int) -> list[tuple]:
    """The compared columns, through ``run(sql)`` (a row path)."""
    sql = (f"SELECT {', '.join(USER_SESSION_COLUMNS)} FROM amplitude_user_sessions "
           f"WHERE session_start >= '{start:%Y-%m-%d}' AND session_start < '{end:%Y-%m-%d}' AND gap_minutes = {gap} "
           "ORDER BY session_start, amplitude_id")
    rows = run(sql)
    return [(*row[:14], json.loads(row[14]), json.loads(row[15]) if row[15] else None) for row in rows]


@pytest.mark.parametrize("gap", [5, 30, 60, 240])
@pytest.mark.parametrize("start,end", [(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)),
                                       (datetime(2026, 3, 4, tzinfo=UTC), datetime(2026, 3, 5, tzinfo=UTC))])
def test_an_independent_implementation_gives_the_same_rows(dataset, loaded_cache, gap, start, end):
    """From 03-04 on, the 48 h look-back also cuts the events of 03-01 out."""
    expected = user_sessions(dataset.records, start, end, gap)
    assert len(expected) > 100
    generic = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    assert _through(lambda sql: generic.execute(sql).fetchall(), start, end, gap) == expected
    with _amplitude(loaded_cache).connect() as connection:
        assert _through(lambda sql: connection.execute(text(sql)).fetchall(), start, end, gap) == expected


def test_the_dialect_lists_the_table_and_its_types(rules_cache):
    inspector = inspect(_amplitude(rules_cache))
    assert "amplitude_user_sessions" in inspector.get_table_names()
    assert inspector.has_table("amplitude_user_sessions")
    columns = {c["name"]: str(c["type"]) for c in inspector.get_columns("amplitude_user_sessions")}
    assert columns == {
        "session_start": "TIMESTAMP", "session_end": "TIMESTAMP", "length_s": "REAL", "length_bucket": "TEXT",
        "event_count": "INTEGER", "gap_minutes": "INTEGER", "amplitude_id": "INTEGER", "user_id": "TEXT",
        "devices": "INTEGER", "amplitude_sessions": "INTEGER", "first_event_type": "TEXT", "last_event_type": "TEXT",
        "event_types": "TEXT", "platform": "TEXT", "country": "TEXT", "device_type": "TEXT",
        "user_creation_time": "TIMESTAMP", "user_properties": "TEXT",
    }


def test_offline_the_look_back_may_lie_outside_the_stored_span(dataset, loaded_cache):
    """The store begins with the dataset (03-01): its first day is answered without the 48 h before it."""
    cursor = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)
    rows = _through(lambda sql: cursor.execute(sql).fetchall(), start, end, 30)
    assert rows == user_sessions(dataset.records, start, end, 30) and rows


@pytest.mark.parametrize("path", ["amplitude://", "shillelagh+safe://"])
def test_an_in_list_before_the_range_is_planned(rules_cache, path):
    """SQLite also plans an IN list as unusable; both row paths mark the used constraints at their own positions
    (shillelagh's numbering failed with "xBestIndex malfunction" when the IN list came first)."""
    if path == "amplitude://":
        engine = _amplitude(rules_cache)
    else:
        engine = create_engine("shillelagh+safe://", adapters=["amplitude"], adapter_kwargs={"amplitude": {
            "api_key": API_KEY, "secret_key": SECRET_KEY, "cache_dir": str(rules_cache), "offline": True}})
    with engine.connect() as connection:
        run = lambda where: [tuple(map(int, row)) for row in connection.execute(text(  # noqa: E731
            f"SELECT gap_minutes, count(*) FROM amplitude_user_sessions WHERE {where} GROUP BY 1"))]
        day = "session_start >= '2026-03-10' AND session_start < '2026-03-11'"
        first = run(f"gap_minutes IN (30, 60) AND {day}")
        assert first == run(f"{day} AND gap_minutes IN (30, 60)") and [gap for gap, _ in first] == [30, 60]
        union = connection.execute(text(
            "SELECT definition, count(*) FROM (SELECT 'amplitude' AS definition, session_start FROM amplitude_sessions "
            "UNION ALL SELECT 'gap ' || gap_minutes, session_start FROM amplitude_user_sessions "
            f"WHERE gap_minutes IN (30, 60)) WHERE {day} GROUP BY 1 ORDER BY 1")).all()
        assert union[1:] == [("gap 30", first[0][1]), ("gap 60", first[1][1])] and union[0][0] == "amplitude"
        assert run(f"gap_minutes IN (7.5, 30) AND {day}") == first[:1]  # 7.5 is no gap: no row
