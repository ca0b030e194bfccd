"""The hour store: final and fresh hours, separation of projects, secrets, atomic and concurrent writes; the hot
cache of a store on object storage; the scan tables read from a store and their cache."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import threading
import zipfile
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.schema import EVENT_SCHEMA
from shillelagh_amplitude.sql import scan
from shillelagh_amplitude.store.hot_cache import HotCache
from shillelagh_amplitude.store.hour_store import FRESH_TTL, HourStore, is_final
from shillelagh_amplitude.store.location import FileEntry, StoreLocation
from shillelagh_amplitude.store.staging import MAX_OPEN_WRITERS

from .helpers import export_zip

HOUR = timedelta(hours=1)
T0 = datetime(2026, 3, 1, 5, tzinfo=UTC)


def _batch(n: int, hour: datetime = T0) -> pa.RecordBatch:
    rows = [{"uuid": f"{hour:%H}-{i}", "server_upload_time": hour} for i in range(n)]
    return pa.RecordBatch.from_pylist(rows, schema=EVENT_SCHEMA)


def test_finality_follows_export_latency():
    assert not is_final(T0, T0 + 3 * HOUR)  # ends 06:00; latency 2 h + margin 1 h
    assert is_final(T0, T0 + 4 * HOUR)


def test_final_hour_is_kept_fresh_hour_expires(tmp_path):
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    now = T0 + 3 * HOUR + timedelta(minutes=30)  # T0 is fresh, T0 - 1 h final
    old = T0 - HOUR
    staging = store.staging()
    staging.add(old, _batch(3, old))
    staging.add(T0, _batch(2))
    assert staging.close() == [old, T0]
    store.publish(staging.folder, [old, T0], now)
    assert store.missing([old, T0], now) == []
    later = now + FRESH_TTL + timedelta(seconds=1)
    assert store.missing([old, T0], later) == [T0]
    assert store.read([old, T0], later).num_rows == 3
    assert store.newest_final_hour() == old


def test_newest_final_hour_through_a_bound(tmp_path):
    """The lake asks for the newest final hour among those it published (through the end of its run's span)."""
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    day_before = T0 - 6 * HOUR  # 23:00 the day before
    hours = [day_before, T0 - HOUR, T0]
    staging = store.staging()
    for hour in hours:
        staging.add(hour, _batch(1, hour))
    staging.close()
    store.publish(staging.folder, hours, T0 + 3 * HOUR + timedelta(minutes=30))  # T0 fresh, the others final
    assert store.newest_final_hour() == store.newest_final_hour(T0 + 10 * HOUR) == T0 - HOUR
    assert store.newest_final_hour(T0 - HOUR) == T0 - HOUR
    assert store.newest_final_hour(T0 - 2 * HOUR) == store.newest_final_hour(T0 - 5 * HOUR) == day_before
    assert store.newest_final_hour(day_before - HOUR) is None


def test_latest_names_each_hours_newest_file_whatever_its_age(tmp_path):
    """What the lake is built from: an expired fresh hour is still the best data stored (queries download it
    again; a copy of the store keeps it until a sync replaces it)."""
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    now = T0 + 3 * HOUR + timedelta(minutes=30)
    old, empty, absent = T0 - HOUR, T0 + HOUR, T0 + 2 * HOUR
    staging = store.staging()
    staging.add(old, _batch(3, old))
    staging.add(T0, _batch(2))
    staging.close()
    store.publish(staging.folder, [old, T0, empty], now)
    later = now + FRESH_TTL + timedelta(seconds=1)
    assert store.files([old, T0], later) == store.files([old], later)  # T0 expired for queries
    found = {hour: (entry.name if entry else None, final) for hour, entry, final in
             store.latest([old, T0, empty, absent])}
    assert found == {old: ("04.arrow", True), T0: ("05.fresh.arrow", False), empty: ("06.fresh.empty", False),
                     absent: (None, False)}


def test_hours_without_events_are_remembered_as_empty(tmp_path):
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    hours = list(hour_range(T0, T0 + 5 * HOUR))
    store.publish(store.staging().folder, hours, T0 + 30 * HOUR)
    assert store.missing(hours, T0 + 30 * HOUR) == []
    assert store.read(hours, T0 + 30 * HOUR).num_rows == 0
    assert store.files(hours, T0 + 30 * HOUR) == []


def test_projects_never_share_data_and_no_secret_on_disk(tmp_path):
    secret = "s3cr3t-value-never-on-disk"
    first = HourStore(tmp_path, "https://amplitude.com", "key-a")
    other_key = HourStore(tmp_path, "https://amplitude.com", "key-b")
    other_region = HourStore(tmp_path, "https://analytics.eu.amplitude.com", "key-a")
    load_archive(first, export_zip(tmp_path / "z", [make_event(server_upload_time=T0) for _ in range(4)]))
    first.remember_secret(secret)
    assert first.read([T0], T0 + 30 * HOUR).num_rows == 4
    assert other_key.read([T0], T0 + 30 * HOUR).num_rows == 0
    assert other_region.read([T0], T0 + 30 * HOUR).num_rows == 0
    assert len({first.root, other_key.root, other_region.root}) == 3
    for path in tmp_path.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert secret.encode() not in content and b"key-a" not in content
    assert first.secret_status(secret) is True
    assert first.secret_status("wrong") is False
    assert other_key.secret_status(secret) is None


def _fail_writing(table: pa.Table, path: str, **kwargs: object) -> None:
    with open(path, "wb") as partial:
        partial.write(b"ARROW1")
    raise OSError(28, "No space left on device")


def test_a_failed_derived_table_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    table = pa.table({"n": [1, 2, 3]})
    (store.root / "derived").write_text("a file where the folder belongs")
    with pytest.raises(OSError, match="exists"):
        store.write_derived("k1", table)
    (store.root / "derived").unlink()
    monkeypatch.setattr(feather, "write_feather", _fail_writing)
    with pytest.raises(OSError, match="No space left on device"):
        store.write_derived("k2", table)
    assert sorted(p.name for p in store.root.iterdir()) == []
    monkeypatch.undo()
    store.write_derived("k3", table)
    assert store.read_derived("k3").equals(table)
    assert sorted(p.name for p in store.root.rglob("*")) == ["derived", "k3.arrow"]


def test_discarded_staging_leaves_nothing(tmp_path):
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    staging = store.staging()
    staging.add(T0, _batch(5))
    staging.discard()
    assert store.missing([T0], T0 + 30 * HOUR) == [T0]
    assert [p.name for p in store.root.iterdir()] == []


def _write_same_hour(root: str, rows: int, barrier) -> None:
    store = HourStore(root, "https://amplitude.com", "key")
    staging = store.staging()
    staging.add(T0, _batch(rows))
    staging.close()
    barrier.wait()
    store.publish(staging.folder, [T0], T0 + 30 * HOUR)


def test_concurrent_writers_leave_one_complete_copy(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    workers = [context.Process(target=_write_same_hour, args=(str(tmp_path), 5000, barrier)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    table = store.read([T0], T0 + 30 * HOUR)
    assert table.num_rows == 5000  # not doubled, not partial
    assert len(store.files([T0], T0 + 30 * HOUR)) == 1
    assert not list(store.root.glob(".staging-*"))


def _source_files(tmp_path: Path, count: int, size: int) -> tuple[StoreLocation, list[FileEntry]]:
    """``count`` stored files of ``size`` random bytes in a local location (read through a hot cache in tests)."""
    location = StoreLocation.open(tmp_path / "store")
    for number in range(count):
        location.publish_bytes(location.path("project", f"202603{number // 24 + 1:02}", f"{number % 24:02}.arrow"),
                               os.urandom(size))
    entries = [entry for day in location.folders("project") for entry in location.list("project", day).values()]
    return location, entries


def test_trimming_leaves_other_processes_downloads_alone(tmp_path):
    location, entries = _source_files(tmp_path, 4, 1000)
    cache = HotCache(tmp_path / "hot", max_bytes=2500)
    in_progress = tmp_path / "hot" / "20260301" / ".tmp-another-process"
    in_progress.parent.mkdir(parents=True)
    in_progress.write_bytes(b"x" * 5000)
    os.utime(in_progress, (0, 0))  # the oldest file of all, and far over budget
    copies = cache.fetch(location, entries[:2])
    cache.fetch(location, entries[2:])
    assert in_progress.read_bytes() == b"x" * 5000
    assert not any(copy.exists() for copy in copies)  # the least recently used copies made room


def _fetch_repeatedly(location: StoreLocation, entries: list[FileEntry], folder: Path, seed: int, answer) -> None:
    """In a child process: fetch random sets of files through a hot cache too small for two of them at once."""
    chance = random.Random(seed)
    cache = HotCache(folder, max_bytes=6 * 16_384)
    contents = {entry.path: Path(entry.path).read_bytes() for entry in entries}
    problems = []
    for _ in range(150):
        chosen = chance.sample(entries, 4)
        try:
            copies = cache.fetch(location, chosen)
        except OSError as exc:
            problems.append(repr(exc))
            continue
        for entry, copy in zip(chosen, copies, strict=True):
            with suppress(FileNotFoundError):  # trimmed by another process since: a reader fetches it again
                if copy.read_bytes() != contents[entry.path]:
                    problems.append(f"{copy} differs from {entry.path}")
    answer.put(problems)


def test_processes_sharing_a_hot_cache_never_trip_over_each_other(tmp_path):
    location, entries = _source_files(tmp_path, 40, 16_384)
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    workers = [context.Process(target=_fetch_repeatedly, args=(location, entries, tmp_path / "hot", seed, answer))
               for seed in range(4)]
    for worker in workers:
        worker.start()
    problems = [answer.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert problems == [[]] * 4
    assert not list((tmp_path / "hot").glob("*/.tmp-*"))


def _int_table(rows: int) -> pa.Table:
    stamps = pa.array(range(rows), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return pa.table({"t": stamps, "x": pa.array(range(rows), pa.int64()), "y": pa.array(range(rows), pa.int64())})


def test_a_slow_column_read_holds_up_no_other_query():
    """One query reads a column from a slow store; meanwhile every other use of the cache answers at once."""
    stored = _int_table(1_000)
    reading, release = threading.Event(), threading.Event()

    def slow_read(names: list[str]) -> pa.Table:
        if names == ["x"]:
            reading.set()
            release.wait(30)
        return stored.select(names)

    slow, other = scan.ScanTable(slow_read, "t"), scan.ScanTable.of(stored, "t")
    cache = scan.TableCache(max_bytes=10 * 8 * 1_000)
    slow.columns(["y"])
    cache.put("slow", slow)
    reader = threading.Thread(target=slow.columns, args=(["x"],))
    reader.start()
    assert reading.wait(30)
    answers: list[object] = []

    def other_query() -> None:
        cache.put("other", other)
        answers.extend([cache.get("slow"), cache.get("other"), slow.nbytes])
        answers.append(slow.columns(["y"])["y"].equals(stored["y"]))

    try:
        worker = threading.Thread(target=other_query)
        worker.start()
        worker.join(5)
        assert not worker.is_alive() and not release.is_set()  # done within 5 s, while the read still goes on
        assert answers == [slow, other, 2 * 8 * 1_000, True]
    finally:
        release.set()
        reader.join(30)
    assert slow.nbytes == 3 * 8 * 1_000  # the sort keys, y and x


def test_the_cache_counts_growth_when_a_table_reports_it():
    stored = _int_table(1_000)
    lazy, whole = scan.ScanTable(stored.select, "t"), scan.ScanTable.of(stored, "t")  # 8 KB, 32 KB
    cache = scan.TableCache(max_bytes=5 * 8 * 1_000)
    cache.put("lazy", lazy)
    lazy.columns(["x", "y"])  # grows to 24 KB, counted without another put of it
    cache.put("whole", whole)  # 56 KB in all: the least recent goes
    assert cache.get("lazy") is None and cache.get("whole") is whole
    cache.put("lazy", lazy)  # 24 KB + 32 KB: over budget again, the least recent goes
    assert cache.get("whole") is None and cache.get("lazy") is lazy


def test_only_timestamp_values_are_iso_timestamps():
    """The generic row path wraps TIMESTAMP text as IsoTimestamp; other text, even ISO-like, stays plain str."""
    table = pa.table({
        "event_time": pa.array([T0, None, T0 + HOUR], EVENT_SCHEMA.field("event_time").type),
        "user_id": ["2026-03-01T05:00:00+00:00", None, "user-7"],
        "event_type": ["search", "view", None],
    })
    rows = list(scan.ScanTable.of(table, "event_time").select({}).rows(["event_time", "user_id", "event_type"]))
    assert rows == [
        {"event_time": "2026-03-01T05:00:00.000000+00:00", "user_id": "2026-03-01T05:00:00+00:00",
         "event_type": "search", "rowid": 0},
        {"event_time": "2026-03-01T06:00:00.000000+00:00", "user_id": "user-7", "event_type": None, "rowid": 1},
        {"event_time": None, "user_id": None, "event_type": "view", "rowid": 2},
    ]
    assert [[type(value).__name__ for value in row.values()] for row in rows] == [
        ["IsoTimestamp", "str", "str", "int"], ["IsoTimestamp", "str", "NoneType", "int"],
        ["NoneType", "NoneType", "str", "int"]]


OPEN_FILES_LIMIT = 128


def _limit_open_files() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES_LIMIT, OPEN_FILES_LIMIT))


def test_an_archive_of_more_hours_than_open_files_allowed_loads_exactly(tmp_path):
    """amplitude-load under ``ulimit -n 128``: 300 hours in hour order, then late uploads to hours long closed."""
    assert MAX_OPEN_WRITERS < OPEN_FILES_LIMIT - 20 < 300
    start = datetime(2026, 1, 1, tzinfo=UTC)
    hours = list(hour_range(start, start + 299 * HOUR))
    members = {f"{hour:%Y%m%d%H}.json.gz": [make_event(server_upload_time=hour + timedelta(minutes=n))
                                            for n in range(1 + i % 4)] for i, hour in enumerate(hours)}
    members["late.json.gz"] = [make_event(server_upload_time=hour + timedelta(minutes=59)) for hour in hours[:40]]
    members["late-again.json.gz"] = [make_event(server_upload_time=hour) for hour in hours[::7]]
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, events in members.items():
            out.writestr(name, gzip.compress(b"".join(json.dumps(e).encode() + b"\n" for e in events)))
    events = [event for batch in members.values() for event in batch]
    expected = Counter(datetime.fromisoformat(e["server_upload_time"]).replace(minute=0, tzinfo=UTC) for e in events)
    assert len(expected) == 300 and expected[hours[0]] == 3 and expected[hours[299]] == 4

    load = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "amplitude-load"), str(archive), "--api-key", "key",
         "--cache-dir", str(tmp_path / "store")], env={**os.environ, "AMPLITUDE_SECRET_KEY": "the-secret"},
        preexec_fn=_limit_open_files, capture_output=True, text=True, timeout=120, check=False)
    assert load.returncode == 0, load.stderr
    assert load.stdout.startswith(f"{len(events)} events loaded into ")
    store = HourStore(tmp_path / "store", "https://amplitude.com", "key")
    table = store.read(hours, start + 1000 * HOUR, ["uuid", "server_upload_time"])
    stored = Counter(t.replace(minute=0, second=0, microsecond=0) for t in table["server_upload_time"].to_pylist())
    assert stored == expected
    assert sorted(table["uuid"].to_pylist()) == sorted(e["uuid"] for e in events)
    assert len(store.files(hours, start + 1000 * HOUR)) == 300


def test_cleaning_stale_staging_tolerates_a_folder_gone_meanwhile(tmp_path, monkeypatch):
    """Another process may publish (remove) its staging folder between the listing and the look at its age."""
    from shillelagh_amplitude.store.hour_store import clean_stale_staging

    store = HourStore(tmp_path, "https://amplitude.com", "key")
    stale = store.root / ".staging-stale"
    stale.mkdir()
    os.utime(stale, (0, 0))
    listed = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [store.root / ".staging-gone", *listed(self, pattern)])
    clean_stale_staging(store)
    assert not stale.exists()


def _publish_fresh(store: HourStore, event_type: str, now: datetime, when: float) -> None:
    """Publish hour T0 as fresh at ``now`` (its file keeps its name when refreshed), three events of
    ``event_type``, its file's modification time set to ``when``."""
    staging = store.staging()
    staging.add(T0, pa.RecordBatch.from_pylist(
        [{"uuid": f"{event_type}-{i}", "event_type": event_type, "server_upload_time": T0} for i in range(3)],
        schema=EVENT_SCHEMA))
    staging.close()
    store.publish(staging.folder, [T0], now)
    path = store.files([T0], now)[0].path
    os.utime(path, (when, when))


def test_a_column_read_after_its_hour_was_republished_is_refused(tmp_path):
    """A scan table reads its columns lazily: an hour re-published meanwhile under the same name (a fresh hour
    refreshed, same row count, other rows) must not be mixed with the columns read before."""
    import functools

    from shillelagh.exceptions import ProgrammingError

    store = HourStore(tmp_path, "https://amplitude.com", "key")
    now = T0 + HOUR
    _publish_fresh(store, "first", now, now.timestamp())
    entries = store.files([T0], now)
    table = scan.ScanTable(functools.partial(store.read_files, entries), "server_upload_time")
    _publish_fresh(store, "second", now, now.timestamp() + 1)
    assert store.files([T0], now)[0].path == entries[0].path  # the same name
    with pytest.raises(ProgrammingError, match="The hour store changed while this query read it"):
        table.columns(["event_type"])


def test_sessions_of_an_hour_republished_since_it_was_listed_are_refused(tmp_path):
    """Sessions are built from the files listed for the query (their key): a file re-published since is not read
    in their place, and the user is told to run the query again (not shown a raw FileNotFoundError)."""
    from shillelagh.exceptions import ProgrammingError

    from shillelagh_amplitude.sql.adapter import AmplitudeAPI
    from shillelagh_amplitude.sql.sessions import EVENT_COLUMNS, build_sessions

    store = HourStore(tmp_path, "https://amplitude.com", "key")
    now = T0 + HOUR
    _publish_fresh(store, "first", now, now.timestamp())
    entries = store.files([T0], now)
    _publish_fresh(store, "second", now, now.timestamp() + 1)
    with pytest.raises(ProgrammingError, match="The hour store changed while this query read it"):
        AmplitudeAPI("amplitude_sessions", api_key="key")._derived(
            store, entries, ("amplitude_sessions", "test", tuple(entries)), build_sessions, EVENT_COLUMNS)(
            ["session_start"])
