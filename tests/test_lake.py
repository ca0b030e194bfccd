"""The lake published from a loaded store: layout, Parquet types, content (against raw records and amplitude://),
incremental runs and the engines' DDL."""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from shillelagh_amplitude.hours import HOUR, floor_hour, hour_range
from shillelagh_amplitude.lake import ddl
from shillelagh_amplitude.lake import publish as publish_module
from shillelagh_amplitude.lake.layout import EVENTS, PART_FILE, SESSIONS, STATUS, STATUS_SCHEMA, USER_SESSIONS
from shillelagh_amplitude.lake.pins import VIEWS_FILE, is_pin
from shillelagh_amplitude.lake.publish import (
    UPLOAD_HOUR,
    USER_SESSION_ROWS,
    _hour_number,
    _Partition,
    publish,
    user_sessions_of_day,
    user_sessions_of_days,
)
from shillelagh_amplitude.sql.adapter import AmplitudeAPI
from shillelagh_amplitude.sql.scan import TimeRange
from shillelagh_amplitude.sql.user_sessions import build_user_sessions
from shillelagh_amplitude.store.hour_store import HourStore
from shillelagh_amplitude.store.location import FileEntry

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import kpis, sessions_from_records
from .helpers import amplitude_sql, parse_ts
from .scripts import REPO

DAYS = [date(2026, 3, 1) + timedelta(days=offset) for offset in range(5)]


def _store(cache_dir: Path) -> HourStore:
    return HourStore(cache_dir, "https://amplitude.com", API_KEY)


@pytest.fixture(scope="module")
def folder_lake(loaded_cache, tmp_path_factory) -> Path:
    lake = tmp_path_factory.mktemp("lake")
    publish(_store(loaded_cache), lake)
    return lake


def _duckdb(lake: Path) -> duckdb.DuckDBPyConnection:
    connection = duckdb.connect()
    for statement in ddl.ddl(lake, "duckdb"):
        connection.execute(statement)
    return connection


def test_layout_one_file_per_partition_with_the_sql_types(folder_lake):
    days = sorted(path.name for path in (folder_lake / "amplitude_events").iterdir())
    assert days == [f"event_date={day}" for day in DAYS]
    for table in (EVENTS, SESSIONS, USER_SESSIONS):
        for folder in (folder_lake / table.name).iterdir():
            names = sorted(path.name for path in folder.iterdir())
            assert len(names) == 2 and names[1] == PART_FILE and is_pin(names[0])  # and its pin, for DuckDB
            assert (folder / names[0]).stat().st_ino == (folder / PART_FILE).stat().st_ino
            schema = pq.read_schema(folder / PART_FILE)
            assert schema == table.schema  # no partition column in the file; JSON as text
            arrow = pq.ParquetFile(folder / PART_FILE).schema_arrow
            assert arrow.field(table.time_column).type == pa.timestamp("us", tz="UTC")
            logical = pq.ParquetFile(folder / PART_FILE).schema.column(schema.get_field_index(table.time_column))
            kind = str(logical.logical_type)
            assert "isAdjustedToUTC=true" in kind and "timeUnit=microseconds" in kind
    events = pq.read_table(folder_lake / "amplitude_events" / "event_date=2026-03-02" / PART_FILE)
    assert all(t.date() == date(2026, 3, 2) for t in events["event_time"].to_pylist())
    for table in (SESSIONS, USER_SESSIONS):  # sorted by their start (events stay in the order they were read)
        starts = pq.read_table(folder_lake / table.file(date(2026, 3, 2)))["session_start"].to_pylist()
        assert len(starts) > 100 and starts == sorted(starts)
    assert events.schema.field("user_properties").type == pa.string()
    assert events.schema.field("paying").type == pa.bool_() and events.schema.field("app").type == pa.int64()


def test_every_event_once_in_its_event_date(dataset, folder_lake):
    expected = Counter(parse_ts(record["event_time"]).date() for record in dataset.records)
    rows = _duckdb(folder_lake).sql("SELECT event_date, count(*), count(DISTINCT uuid) FROM amplitude_events "
                                    "GROUP BY 1").fetchall()
    assert {day: count for day, count, _ in rows} == expected
    assert all(count == distinct for _, count, distinct in rows)  # no event twice


def test_sessions_equal_an_independent_computation(dataset, folder_lake):
    sessions = sessions_from_records(dataset.records)
    connection = _duckdb(folder_lake)
    for day in DAYS:
        expected = [s for s in sessions if s.start.date() == day]
        row = connection.execute("SELECT count(*), avg(length_s), quantile_cont(length_s, 0.5), "
                                 "quantile_cont(length_s, 0.95) FROM amplitude_sessions WHERE session_date = ?",
                                 [day]).fetchone()
        if not expected:
            assert row[0] == 0
            continue
        assert row[0] == len(expected)
        assert row[1:] == pytest.approx(kpis(expected)[1:], rel=1e-9)


def test_the_same_numbers_as_amplitude_tables(loaded_cache, folder_lake):
    """Per day, the lake holds exactly what amplitude:// serves for that day (offline, it serves the days the store
    holds whole: not 2026-03-05)."""
    cursor = sql_connection(cache_dir=str(loaded_cache), offline=True).cursor()
    lake = _duckdb(folder_lake)
    for day in DAYS[:-1]:
        bounds = (f"{day}", f"{day + timedelta(days=1)}")
        served = cursor.execute("SELECT event_type, count(*) FROM amplitude_events WHERE event_time >= ? AND "
                                "event_time < ? GROUP BY 1", bounds).fetchall()
        published = lake.execute("SELECT event_type, count(*) FROM amplitude_events WHERE event_date = ? "
                                 "GROUP BY 1", [day]).fetchall()
        assert sorted(served) == sorted(published)
        served = cursor.execute("SELECT count(*), sum(length_s), sum(event_count) FROM amplitude_sessions "
                                "WHERE session_start >= ? AND session_start < ?", bounds).fetchone()
        published = lake.execute("SELECT count(*), sum(length_s), sum(event_count) FROM amplitude_sessions "
                                 "WHERE session_date = ?", [day]).fetchone()
        assert served[0] == published[0] and served[2] == published[2]
        assert served[1] == pytest.approx(published[1] or 0, rel=1e-12)


def test_user_sessions_are_amplitude_user_sessions_of_each_day(loaded_cache, folder_lake):
    """Each day's partition holds, row for row and column for column, what amplitude:// serves as that day's user
    sessions at the default 30-minute gap (built from the same hours, with the same 48 h look-back)."""
    run = amplitude_sql(loaded_cache, API_KEY, SECRET_KEY)
    names = USER_SESSIONS.schema.names
    for day in DAYS[:-1]:
        served = run(f"SELECT {', '.join(names)} FROM amplitude_user_sessions WHERE session_start >= '{day}' AND "
                     f"session_start < '{day + timedelta(days=1)}' AND gap_minutes = 30")
        published = pq.read_table(folder_lake / USER_SESSIONS.file(day)).to_pylist()
        assert len(served) > 100
        assert sorted(tuple(row[name] for name in names) for row in published) == sorted(served)


@pytest.mark.parametrize("table", [EVENTS, SESSIONS, USER_SESSIONS])
def test_source_hours_are_the_hours_amplitude_reads_for_the_day(table):
    adapter = AmplitudeAPI(table.name, api_key="k", late_hours=7)
    day = date(2026, 3, 2)
    start = datetime(2026, 3, 2, tzinfo=UTC)
    ranges = {table.time_column: TimeRange(start, start + timedelta(days=1))}
    assert table.source_hours(day, 7) == adapter._upload_hours(ranges, now=datetime(2030, 1, 1, tzinfo=UTC))[:2]


def test_publishing_again_rewrites_only_the_partitions_whose_hours_changed(loaded_cache, tmp_path):
    """A store missing the hours of 2026-03-03 is published; once they are stored, the next run rewrites exactly
    the partitions whose window of upload hours holds one of them (for user sessions, in their 48 h look-back
    too)."""
    cache = tmp_path / "cache"
    shutil.copytree(loaded_cache, cache)
    store = _store(cache)
    held = tmp_path / "held"
    shutil.move(cache / store.project / "20260303", held)
    lake = tmp_path / "lake"
    first = publish(store, lake)
    assert first.written and first.hours_read > 0
    before = {path: path.stat().st_mtime_ns for path in lake.rglob(PART_FILE)}
    again = publish(store, lake)
    assert again.written == [] and again.hours_read == 0
    shutil.move(held, cache / store.project / "20260303")
    late_hours = 48
    added = list(hour_range(datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC)))
    expected = set()
    for day in [date(2026, 2, 26) + timedelta(days=offset) for offset in range(12)]:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for table, ahead, extra in ((EVENTS, 1, 0), (SESSIONS, 1, 24), (USER_SESSIONS, 49, 24)):
            window = (midnight - timedelta(hours=ahead), midnight + timedelta(hours=23 + late_hours + extra))
            has_rows = (lake / table.partition(day) / PART_FILE).exists() or day == date(2026, 3, 3)
            if any(window[0] <= hour <= window[1] for hour in added) and has_rows:
                expected.add(table.partition(day))
    report = publish(store, lake, late_hours=late_hours)
    # every partition of those windows is rebuilt; those whose bytes change are replaced, the others left alone
    assert set(report.written) <= expected and len(report.written) + report.identical == len(expected)
    assert {"amplitude_events/event_date=2026-03-03", "amplitude_sessions/session_date=2026-03-03",
            "amplitude_user_sessions/session_date=2026-03-03"} <= set(report.written)
    after = {path: path.stat().st_mtime_ns for path in lake.rglob(PART_FILE)}
    for path, mtime in before.items():
        rewritten = str(path.parent.relative_to(lake)) in report.written
        assert (after[path] != mtime) == rewritten
    assert publish(store, lake).written == []


def test_a_partition_rebuilt_into_the_same_bytes_is_not_replaced(loaded_cache, tmp_path):
    """New hour files with the same rows (a fresh hour become final, here a file touched) rebuild the partitions
    of their window, but a file whose bytes would not change is left alone: readers see no replacement."""
    cache = tmp_path / "cache"
    shutil.copytree(loaded_cache, cache)
    store, lake = _store(cache), tmp_path / "lake"
    publish(store, lake)
    part = lake / SESSIONS.file(date(2026, 3, 4))  # not final: its window runs past the stored hours
    inode, mtime = part.stat().st_ino, part.stat().st_mtime_ns
    hour_file = next((cache / store.project / "20260305").glob("1*.arrow"))
    os.utime(hour_file, ns=(hour_file.stat().st_atime_ns, hour_file.stat().st_mtime_ns + 10**9))
    report = publish(store, lake)
    assert report.written == [] and report.identical >= 1 and report.hours_read > 0
    assert (part.stat().st_ino, part.stat().st_mtime_ns) == (inode, mtime)
    assert publish(store, lake).hours_read == 0  # the new sources are recorded


def test_a_lake_holds_one_project(loaded_cache, tmp_path):
    lake = tmp_path / "lake"
    publish(_store(loaded_cache), lake)
    other = HourStore(loaded_cache, "https://amplitude.com", "another-key")
    with pytest.raises(Exception, match="holds another Amplitude project"):
        publish(other, lake)


def test_ddl_locations_carry_no_credentials():
    uri = "s3://AKIAEXAMPLE:s3cr3t@bucket/lake?endpoint_override=minio:9000&secret_key=s3cr3t"
    for engine in ddl.ENGINES:
        text = ddl.script(uri, engine)
        assert "s3cr3t" not in text and "AKIAEXAMPLE" not in text and "endpoint_override" not in text
    assert "LOCATION 's3a://bucket/lake/amplitude_events'" in ddl.script(uri, "spark")
    assert ddl.script(uri, "trino").startswith("-- trino: untested here")
    assert "MSCK REPAIR TABLE amplitude.amplitude_sessions SYNC PARTITIONS;" in ddl.script("/lake", "spark")


def _status(lake: Path) -> list[tuple]:
    """The lake's status as Superset's DuckDB connection reads it (the views file, read-only), as epoch ms."""
    with duckdb.connect(str(lake / VIEWS_FILE), read_only=True) as connection:
        return connection.execute(f"SELECT epoch_ms(data_complete_through) FROM {STATUS}").fetchall()


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_the_status_is_amplitudes_data_complete_through(loaded_cache, folder_lake):
    """The published status is the *Data complete through* tile of amplitude:// (its dataset and metric, on the same
    store): here the end of the last stored hour (an export loaded by hand is stored final)."""
    tile = yaml.safe_load((REPO / "dashboards/session_length/datasets/data_status.yaml").read_text())
    (expected,) = amplitude_sql(loaded_cache, API_KEY, SECRET_KEY)(
        f"SELECT {tile['metrics'][0]['expression']} FROM ({tile['sql']}) AS s")
    assert expected == (_ms(_store(loaded_cache).stored_span()[1] + HOUR),)
    assert _status(folder_lake) == [expected]
    status = pq.read_table(folder_lake / STATUS / PART_FILE)  # what Spark, Trino and Athena read
    assert status.schema == STATUS_SCHEMA and status.num_rows == 1
    assert [_ms(status["data_complete_through"][0].as_py())] == list(expected)
    names = sorted(path.name for path in (folder_lake / STATUS).iterdir())
    assert len(names) == 2 and is_pin(names[0]) and names[1] == PART_FILE


def test_the_status_covers_the_hours_published(loaded_cache, tmp_path):
    """A run over some hours publishes the status through the newest of them (all final here); a later run over
    older hours leaves it: the lake still holds the newer ones. Unchanged, its file is not replaced."""
    store, lake = _store(loaded_cache), tmp_path / "lake"
    first, last = store.stored_span()
    middle = first + 40 * HOUR
    assert publish(store, lake, first=first, last=middle).complete_through == middle + HOUR
    assert _status(lake) == [(_ms(middle + HOUR),)]
    assert publish(store, lake).complete_through == last + HOUR
    assert _status(lake) == [(_ms(last + HOUR),)]
    part = lake / STATUS / PART_FILE
    inode = part.stat().st_ino
    assert publish(store, lake, first=first, last=middle).complete_through == last + HOUR
    assert _status(lake) == [(_ms(last + HOUR),)] and part.stat().st_ino == inode


def test_the_status_is_rewritten_when_a_new_hour_becomes_final(loaded_cache, tmp_path):
    """The store's last two hour files held as fresh (renamed as a sync names a fresh hour): the status ends with
    the hour stored before them. Once the first of them is stored final, the next run replaces the status file (the
    old version's pin stays for DuckDB readers) and the views file shows the new value; a run with nothing new
    leaves it."""
    cache, lake = tmp_path / "cache", tmp_path / "lake"
    shutil.copytree(loaded_cache, cache)
    store = _store(cache)
    folder = cache / store.project / f"{store.stored_span()[1]:%Y%m%d}"
    files = sorted(folder.glob("*.arrow"))
    assert len(files) >= 3
    hours = [datetime.strptime(folder.name + path.name[:2], "%Y%m%d%H").replace(tzinfo=UTC) for path in files[-3:]]
    for path in files[-2:]:
        path.rename(folder / path.name.replace(".", ".fresh.", 1))
    assert publish(store, lake).complete_through == hours[0] + HOUR
    assert _status(lake) == [(_ms(hours[0] + HOUR),)]
    part = lake / STATUS / PART_FILE
    before = part.stat().st_ino
    (folder / files[-2].name.replace(".", ".fresh.", 1)).rename(files[-2])
    assert publish(store, lake).complete_through == hours[1] + HOUR
    assert _status(lake) == [(_ms(hours[1] + HOUR),)]
    pins = [path for path in (lake / STATUS).iterdir() if is_pin(path.name)]
    assert len(pins) == 2 and before in {pin.stat().st_ino for pin in pins}
    after = part.stat().st_ino
    assert after != before and after in {pin.stat().st_ino for pin in pins}
    again = publish(store, lake)
    assert again.complete_through == hours[1] + HOUR and again.written == [] and part.stat().st_ino == after


def _user_session_input() -> pa.Table:
    """User-session input rows tagged with their upload hour, in upload-hour order: random users plus users active
    without a pause across several look-backs (sessions across midnight) and events uploaded late."""
    rng = np.random.default_rng(7)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = []
    for user in range(300):
        times = start + np.sort(rng.integers(0, 9 * 86_400, size=int(rng.integers(1, 60)))) * timedelta(seconds=1)
        rows += [(user, at, int(rng.integers(-30, 200)) * HOUR) for at in times]
    for user in (1000, 1001):  # active every 10 minutes for five days: no 30-minute pause across any look-back
        rows += [(user, start + timedelta(minutes=10 * step + user - 995), HOUR) for step in range(720)]
    rows.append((1002, start + timedelta(days=4, hours=5), HOUR))
    rows.append((1002, start + timedelta(days=4, hours=5), HOUR))  # the same instant: the stored order decides
    records = [{"amplitude_id": user, "session_id": -1 if index % 17 == 0 else 1 + user, "client_event_time": at,
                "event_type": f"type {index % 5}", "device_id": f"device {index % 3}", "user_id": f"u{user}-{index}",
                "platform": "iOS", "country": "FR", "device_type": None, "user_creation_time": start,
                "user_properties": json.dumps({"n": index}), UPLOAD_HOUR: _hour_number(floor_hour(at + late))}
               for index, (user, at, late) in enumerate(rows)]
    records.sort(key=lambda record: record[UPLOAD_HOUR])  # read hour by hour, as the publisher reads the store
    return pa.Table.from_pylist(records, schema=USER_SESSION_ROWS)


USER_SESSION_DAYS = [date(2026, 3, 3) + timedelta(days=offset) for offset in range(5)]


def test_user_sessions_of_days_equal_each_days_own_build():
    """A chunk of days sessionised once gives each day exactly what its own build gives from its own input (the
    events of its window whose client day is from two days before to the day after), on random users plus users
    active without a pause across several look-backs and events uploaded outside some days' windows."""
    events = _user_session_input()
    windows = [(day, *USER_SESSIONS.source_hours(day, 48)) for day in USER_SESSION_DAYS]
    client_days = np.floor_divide(pc.cast(events["client_event_time"], pa.int64()).to_numpy(), 86_400_000_000)
    hours = events[UPLOAD_HOUR].to_numpy()
    naive = build_user_sessions(events.drop_columns([UPLOAD_HOUR]), 30, since=windows[0][1] + HOUR)
    differs = 0
    for (day, first, last), built in zip(windows, user_sessions_of_days(events, windows), strict=True):
        number = (day - date(1970, 1, 1)).days
        own = (client_days >= number - 2) & (client_days <= number + 1) & \
              (hours >= _hour_number(first)) & (hours <= _hour_number(last))
        expected = user_sessions_of_day(events.filter(pa.array(own)).drop_columns([UPLOAD_HOUR]), day)
        assert expected.num_rows > 100
        assert built.equals(expected)
        starts = np.floor_divide(pc.cast(naive["session_start"], pa.int64()).to_numpy(), 86_400_000_000)
        differs += not naive.filter(pa.array(starts == number)).equals(expected)
    assert differs  # the cases above are ones a single build over the chunk gets wrong


@pytest.mark.parametrize("hours", [0, 24 * 3, 24 * 4 + 5])
def test_user_sessions_starting_from_an_instant_are_those_of_the_whole_build(hours):
    """Building only the sessions starting from an instant (the events before it still split them) gives exactly
    the whole build's sessions from that instant on, column for column."""
    events = _user_session_input().drop_columns([UPLOAD_HOUR])
    since = datetime(2026, 3, 1, tzinfo=UTC)
    starting_from = since + hours * HOUR
    whole = build_user_sessions(events, 30, since=since)
    at = pa.scalar(starting_from, whole["session_start"].type)
    later = whole.filter(pc.greater_equal(whole["session_start"], at))
    built = build_user_sessions(events, 30, since=since, starting_from=starting_from)
    assert later.num_rows > 100 and (hours == 0 or later.num_rows < whole.num_rows)
    assert built.equals(later)


def test_user_session_days_are_chunked_while_their_hour_files_are_small(monkeypatch):
    """Consecutive dirty days are read together up to the day limit and the byte limit; a gap starts a new chunk;
    the other tables' partitions are left alone."""
    def part(table, day: date, size: int) -> _Partition:
        first, last = table.source_hours(day, 48)
        return _Partition(table, day, first, last, [(hour, FileEntry(f"{hour:%Y%m%d%H}.arrow", 0, size))
                                                    for hour in hour_range(first, last)])

    days = [date(2026, 3, 1) + timedelta(days=offset) for offset in (0, 1, 2, 3, 5)]
    events = part(EVENTS, days[0], 1)
    monkeypatch.setattr(publish_module, "USER_SESSION_CHUNK_BYTES", 10_000)
    monkeypatch.setattr(publish_module, "USER_SESSION_CHUNK_DAYS", 3)
    chunks = publish_module._chunks([events] + [part(USER_SESSIONS, day, 1) for day in days])
    assert chunks[0] is events
    assert [[member.day for member in chunk.members] for chunk in chunks[1:]] == [days[:3], days[3:4], days[4:]]
    assert chunks[1].first == chunks[1].members[0].first and chunks[1].last == chunks[1].members[-1].last
    assert len(chunks[1].sources) == len({hour for member in chunks[1].members for hour, _ in member.sources})
    large = publish_module._chunks([part(USER_SESSIONS, day, 100) for day in days])  # 145 hours: 14,500 bytes
    assert [[member.day for member in chunk.members] for chunk in large] == [[day] for day in days]


def _contents(lake: Path) -> dict[str, bytes]:
    return {str(path.relative_to(lake)): path.read_bytes() for path in sorted(lake.rglob(PART_FILE))}


def test_spilled_rows_build_the_same_files(loaded_cache, folder_lake, tmp_path, monkeypatch):
    """With almost no memory for pending rows, every partition's rows go through its spool file (read back by the
    builder thread), and the lake holds the same bytes; no spool file is left."""
    monkeypatch.setattr(publish_module, "PENDING_BYTES", 1)
    monkeypatch.setattr(publish_module, "SMALL_RUN_PENDING_BYTES", 1)
    spills = []
    spill = publish_module._spill
    monkeypatch.setattr(publish_module, "_spill", lambda folder, part: spills.append(part.key) or spill(folder, part))
    lake = tmp_path / "lake"
    publish(_store(loaded_cache), lake)
    assert {key.split("/")[0] for key in spills} == {EVENTS.name, SESSIONS.name, USER_SESSIONS.name}
    assert _contents(lake) == _contents(folder_lake)
    assert not list(loaded_cache.glob(".staging-lake-*"))


def test_a_failed_build_stops_the_run_and_the_next_run_completes_it(loaded_cache, folder_lake, tmp_path,
                                                                    monkeypatch):
    """A partition whose build fails in a builder thread fails the run (the pass hands over no further partition;
    a build already running beside it completes), leaves no spool file, and the next run publishes what was left
    without rewriting the partitions the failed run completed."""
    write = publish_module._write
    calls = []
    failing_day = EVENTS.partition(date(2026, 3, 2))

    def failing(location, manifest, part, *args):
        calls.append(part.key)
        if part.key == failing_day:
            raise OSError("disk full")
        return write(location, manifest, part, *args)

    monkeypatch.setattr(publish_module, "_write", failing)
    store, lake = _store(loaded_cache), tmp_path / "lake"
    with pytest.raises(OSError, match="disk full"):
        publish(store, lake)
    assert failing_day in calls and not (lake / failing_day).exists()
    assert not list(loaded_cache.glob(".staging-lake-*"))
    monkeypatch.setattr(publish_module, "_write", write)
    report = publish(store, lake)
    assert failing_day in report.written and not (set(calls) - {failing_day}) & set(report.written)
    assert _contents(lake) == _contents(folder_lake)


def test_one_builder_for_large_partitions_builds_the_same_files(loaded_cache, folder_lake, tmp_path, monkeypatch):
    """A run whose partitions read more hour-file bytes than :data:`PARALLEL_BUILD_BYTES` builds one partition at a
    time, in one builder thread, into the same files as the two builders of a small run."""
    monkeypatch.setattr(publish_module, "PARALLEL_BUILD_BYTES", 0)
    threads = set()
    finish = publish_module._finish
    monkeypatch.setattr(publish_module, "_finish",
                        lambda *args: threads.add(threading.current_thread().name) or finish(*args))
    lake = tmp_path / "lake"
    publish(_store(loaded_cache), lake)
    assert len(threads - {threading.current_thread().name}) == 1  # the pass builds sessions when the builder is busy
    assert _contents(lake) == _contents(folder_lake)


def test_partitions_queued_behind_a_build_are_spooled_and_the_pass_reads_on(loaded_cache, folder_lake, tmp_path,
                                                                             monkeypatch):
    """With one builder, held busy until the pass has read every hour, the pass hands each finished partition over
    at once and reads to the end: a sessions partition it builds itself, any other is queued, its rows moved to its
    spool file (no pending limit is reached here). The lake holds the same bytes."""
    monkeypatch.setattr(publish_module, "PARALLEL_BUILD_BYTES", 0)
    spills, held, builders = [], [], {}
    pass_done = threading.Event()
    spill, finish, read_hours = publish_module._spill, publish_module._finish, publish_module._read_hours
    monkeypatch.setattr(publish_module, "_spill", lambda folder, part: spills.append(part.key) or spill(folder, part))

    def held_until_the_pass_ends(location, manifest, part, *args):
        builders.setdefault(part.table.name, set()).add(threading.current_thread().name)
        if threading.current_thread() is not threading.main_thread():
            held.append(pass_done.wait(timeout=30))  # False: the pass waited for this build
        return finish(location, manifest, part, *args)

    monkeypatch.setattr(publish_module, "_finish", held_until_the_pass_ends)
    monkeypatch.setattr(publish_module, "_read_hours", lambda *args: read_hours(*args) or pass_done.set())
    lake = tmp_path / "lake"
    publish(_store(loaded_cache), lake)
    assert len(held) > 5 and all(held)
    assert len(spills) > 5 and len(set(spills)) == len(spills)
    assert not {key for key in spills if key.startswith(SESSIONS.name + "/")}
    pass_thread = threading.current_thread().name
    assert pass_thread in builders[SESSIONS.name]
    assert pass_thread not in builders[EVENTS.name] | builders[USER_SESSIONS.name]
    assert _contents(lake) == _contents(folder_lake)
    assert not list(loaded_cache.glob(".staging-lake-*"))


def test_a_small_run_reads_and_splits_hours_ahead_of_the_pass(loaded_cache, folder_lake, tmp_path, monkeypatch):
    """In a run of two builders, the hours are read and split by reader threads, up to ``READ_AHEAD`` hours
    ahead of the pass, which still takes them in order: while the pass takes an hour, the next hours' splits have
    started; the lake holds the same bytes."""
    split, take_order, ahead_of_pass = publish_module._split_hour, [], []
    started: list[datetime] = []
    lock = threading.Lock()

    def recorded_split(store, dirty, hour, entry):
        assert threading.current_thread().name.startswith("lake-read")
        with lock:
            started.append(hour)
        return split(store, dirty, hour, entry)

    monkeypatch.setattr(publish_module, "_split_hour", recorded_split)
    finish_part = publish_module._finish

    def finish(location, manifest, part, *args):
        with lock:
            take_order.append(part.sources[-1][0] if part.sources else None)
            ahead_of_pass.append(max(started) > part.sources[-1][0] if part.sources else False)
        return finish_part(location, manifest, part, *args)

    monkeypatch.setattr(publish_module, "_finish", finish)
    lake = tmp_path / "lake"
    report = publish(_store(loaded_cache), lake)
    assert sorted(started) == sorted(set(started)) and len(started) == report.hours_read
    handed_over = [hour for hour in take_order if hour is not None]
    assert handed_over and any(ahead_of_pass)  # a later hour's split had started when a partition was handed over
    assert _contents(lake) == _contents(folder_lake)


def test_the_manifest_is_written_at_most_every_few_seconds_and_at_the_end(loaded_cache, tmp_path, monkeypatch):
    """A run records its partitions in the manifest as it goes, but writes it at most every ``MANIFEST_SECONDS``
    (here: once, at the first partition) and once more at the end of the rebuild, however many partitions it
    wrote; the manifest then lists every partition, and a second run rewrites nothing."""
    monkeypatch.setattr(publish_module, "MANIFEST_SECONDS", 3600.0)
    writes, rebuilding = [], threading.Event()
    write, rebuild = publish_module.Manifest.write, publish_module._publish

    def counted(self, location, at_most_every=0.0):
        before = self.written_at
        write(self, location, at_most_every)
        if rebuilding.is_set() and self.written_at != before:
            writes.append(len(self.partitions))

    def watched(*args):
        rebuilding.set()
        try:
            return rebuild(*args)
        finally:
            rebuilding.clear()

    monkeypatch.setattr(publish_module.Manifest, "write", counted)
    monkeypatch.setattr(publish_module, "_publish", watched)
    lake = tmp_path / "lake"
    report = publish(_store(loaded_cache), lake)
    recorded = json.loads((lake / "_amplitude_lake.json").read_text())["partitions"]
    assert len(report.written) > 10 and set(report.written) <= set(recorded)
    assert writes == [1, len(recorded)]
    assert publish(_store(loaded_cache), lake).written == []
