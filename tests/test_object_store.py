"""The hour store on object storage: a real S3-protocol server (moto) on 127.0.0.1, reached through pyarrow's S3
file system as in production, with a proxy in front that logs requests and injects faults (``object_store.py``).
The promises of sharing a bucket (a second process, two filling at once, no partial hour after SIGKILL or Ctrl-C)
run on GCS too (gcp-storage-emulator, through pyarrow's GCS file system); GCS's own checks: ``test_gcs_store.py``.

Processes are real processes with their own local caches (``XDG_CACHE_HOME``), sharing one bucket.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.feather as feather
import pytest
from shillelagh.exceptions import OperationalError, ProgrammingError

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.hours import hour_range, parse_hour
from shillelagh_amplitude.store.hot_cache import HotCache
from shillelagh_amplitude.store.hour_store import HourStore, project_key
from shillelagh_amplitude.store.location import StoreError, StoreLocation, redact

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import kpis, sessions_from_records
from .helpers import parse_ts
from .object_store import GcsProxy, S3Proxy

AWS = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-aws-secret-5150",
       "AWS_EC2_METADATA_DISABLED": "true"}
START, END = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
KPI_SQL = ("SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) FROM amplitude_sessions "
           "WHERE session_start >= '2026-03-02' AND session_start < '2026-03-03'")
QUERY_SCRIPT = """
import json, os, sys
from sqlalchemy import create_engine, text
cache_dir, base_url, sql = sys.argv[1:4]
engine = create_engine("amplitude://", api_key=os.environ["TEST_API_KEY"], secret_key=os.environ["TEST_SECRET"],
                       base_url=base_url, cache_dir=cache_dir)
with engine.connect() as connection:
    print(json.dumps([list(row) for row in connection.execute(text(sql))]))
"""


def new_bucket(proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """A new bucket's store URI; this process and those it starts get the server's credentials from the
    environment (AWS's variables, or ``GOOGLE_APPLICATION_CREDENTIALS``) and their own caches."""
    if isinstance(proxy, GcsProxy):
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(proxy.credentials))
    else:
        for name, value in AWS.items():
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-test"))
    name = f"amp-{uuid.uuid4().hex[:12]}"
    proxy.create_bucket(name)
    proxy.faults.throttle = proxy.faults.fail = 0
    proxy.clear_log()
    return proxy.uri(name, "store")


@pytest.fixture
def bucket(s3, monkeypatch, tmp_path) -> str:
    """A new bucket's store URI on S3."""
    return new_bucket(s3, monkeypatch, tmp_path)


@pytest.fixture(params=["s3", "gcs"])
def server_and_bucket(request, monkeypatch, tmp_path) -> tuple[S3Proxy, str]:
    """Each object store in turn (the same promises hold on S3 and GCS): its server and a new bucket's URI."""
    proxy = request.getfixturevalue(request.param)
    return proxy, new_bucket(proxy, monkeypatch, tmp_path)


def written(proxy: S3Proxy, contains: str = "") -> list[tuple[str, str, int]]:
    """The uploads the store received (S3 PUTs and multipart POSTs, GCS's POSTs) whose path has ``contains``."""
    return [entry for entry in proxy.requests_made() if entry[0] in ("POST", "PUT") and contains in entry[1]]


def bucket_of(uri: str) -> str:
    return uri.split("/")[2]


def process_env(xdg: Path) -> dict[str, str]:
    return {**os.environ, **AWS, "XDG_CACHE_HOME": str(xdg), "TEST_API_KEY": API_KEY, "TEST_SECRET": SECRET_KEY,
            "AMPLITUDE_SECRET_KEY": SECRET_KEY}


def query_in_new_process(uri: str, base_url: str, sql: str, xdg: Path) -> list[list]:
    result = subprocess.run([sys.executable, "-c", QUERY_SCRIPT, uri, base_url, sql], env=process_env(xdg),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def sync_process(uri: str, base_url: str, xdg: Path, start: str, end: str) -> subprocess.Popen:
    # SIGINT as a terminal gives it (Ctrl-C: KeyboardInterrupt), even when this run was started in the background
    # by a shell, which starts it with SIGINT ignored, inherited by every process it starts
    command = [sys.executable, "-c", "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
               "from shillelagh_amplitude.cli import sync_main; raise SystemExit(sync_main())",
               "--start", start, "--end", end, "--api-key", API_KEY, "--base-url", base_url,
               "--cache-dir", uri, "--window-hours", "6"]
    return subprocess.Popen(command, env=process_env(xdg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def requested_hours(emulator) -> Counter:
    """How often each upload hour was asked of the Export API (successful requests)."""
    hours: Counter = Counter()
    for request in emulator.requests:
        if request.authorized and request.start:
            hours.update(hour_range(parse_hour(request.start), parse_hour(request.end)))
    return hours


def events_per_hour(records: list[dict]) -> Counter:
    return Counter(parse_ts(r["server_upload_time"]).replace(minute=0, second=0, microsecond=0) for r in records)


def hour_objects(s3: S3Proxy, uri: str) -> dict[datetime, list[tuple[str, int]]]:
    """The stored objects of each hour: (key, size)."""
    objects: dict[datetime, list[tuple[str, int]]] = {}
    for key, size in s3.keys(bucket_of(uri)).items():
        day, name = key.split("/")[-2:]
        if day.isdigit():
            hour = datetime.strptime(day + name[:2], "%Y%m%d%H").replace(tzinfo=UTC)
            objects.setdefault(hour, []).append((key, size))
    return objects


def test_a_second_process_reads_what_the_first_downloaded(server_and_bucket, dataset, emulator, tmp_path):
    proxy, bucket = server_and_bucket
    expected = kpis([s for s in sessions_from_records(dataset.records) if START <= s.start < END])
    first = query_in_new_process(bucket, emulator.base_url, KPI_SQL, tmp_path / "host-a")
    once = requested_hours(emulator)
    assert once and max(once.values()) == 1  # each upload hour downloaded once
    assert written(proxy, "derived")  # the first process built the sessions and shared them
    emulator.clear_requests()
    proxy.clear_log()
    second = query_in_new_process(bucket, emulator.base_url, KPI_SQL, tmp_path / "host-b")
    assert emulator.requests == []  # nothing asked of Amplitude: final and empty hours are known
    assert written(proxy) == [] and proxy.requests_made("GET", "derived")  # sessions read, not rebuilt
    assert first == second
    assert first[0][0] == expected[0] and first[0][1:] == pytest.approx(expected[1:], rel=1e-9)
    empty_hours = [hour for hour, objects in hour_objects(proxy, bucket).items() if objects[0][0].endswith(".empty")]
    assert empty_hours  # hours with no events are remembered too
    if isinstance(proxy, GcsProxy):
        assert proxy.token_requests > 0  # credentials came from GOOGLE_APPLICATION_CREDENTIALS


def test_two_processes_filling_at_once_store_each_hour_once_complete(server_and_bucket, dataset, emulator, tmp_path):
    proxy, bucket = server_and_bucket
    processes = [sync_process(bucket, emulator.base_url, tmp_path / f"host-{n}", "2026-03-01T06", "2026-03-02T17")
                 for n in range(2)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    wanted = list(hour_range(datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 3, 2, 17, tzinfo=UTC)))
    counts = requested_hours(emulator)
    assert set(counts) == set(wanted) and max(counts.values()) <= 2
    objects = hour_objects(proxy, bucket)
    assert sorted(objects) == wanted
    assert all(len(stored) == 1 for stored in objects.values()), objects  # no duplicate, no leftover variant
    assert whole_hours(proxy, bucket, dataset.records) == wanted


def test_a_process_killed_while_publishing_leaves_no_partial_hour(server_and_bucket, dataset, emulator, tmp_path):
    proxy, bucket = server_and_bucket
    proxy.faults.hold_puts = True
    proxy.faults.held.clear()
    proxy.faults.release.clear()
    process = sync_process(bucket, emulator.base_url, tmp_path / "host-a", "2026-03-02T00", "2026-03-02T05")
    try:
        assert proxy.faults.held.wait(120), "no hour was published"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        proxy.faults.hold_puts = False
        proxy.faults.release.set()
    assert all(key.endswith(".empty") for objects in hour_objects(proxy, bucket).values() for key, _ in objects)
    retry = sync_process(bucket, emulator.base_url, tmp_path / "host-b", "2026-03-02T00", "2026-03-02T05")
    assert retry.wait(300) == 0
    whole_hours(proxy, bucket, dataset.records)


def interrupt_while_publishing(proxy: S3Proxy, uri: str, base_url: str, xdg: Path) -> subprocess.CompletedProcess:
    """A sync of 2026-03-02T00..05 interrupted with Ctrl-C (SIGINT) while the upload of its first hour file is
    open: the request that opens it is held until the signal has been sent."""
    proxy.faults.paused.clear()
    proxy.faults.resume.clear()
    proxy.faults.pause_uploads = True
    process = sync_process(uri, base_url, xdg, "2026-03-02T00", "2026-03-02T05")
    try:
        assert proxy.faults.paused.wait(120), "no hour file was uploaded"
        process.send_signal(signal.SIGINT)
    finally:
        proxy.faults.pause_uploads = False
        proxy.faults.resume.set()
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def whole_hours(proxy: S3Proxy, uri: str, records: list[dict]) -> list[datetime]:
    """The hours stored, each asserted whole: one object, holding exactly the hour's events (an empty marker for
    an hour without any)."""
    per_hour = events_per_hour(records)
    for hour, stored in hour_objects(proxy, uri).items():
        (key, size), = stored
        if key.endswith(".empty"):
            assert size == 0 and per_hour[hour] == 0, key
        else:
            assert feather.read_table(io.BytesIO(proxy.get_object(bucket_of(uri), key))).num_rows == per_hour[hour]
    return sorted(hour_objects(proxy, uri))


def test_a_sync_interrupted_while_uploading_leaves_whole_hours_and_the_next_fill_completes(
        server_and_bucket, dataset, emulator, tmp_path):
    proxy, bucket = server_and_bucket
    interrupted = interrupt_while_publishing(proxy, bucket, emulator.base_url, tmp_path / "host-a")
    assert interrupted.returncode != 0 and "KeyboardInterrupt" in interrupted.stderr
    whole_hours(proxy, bucket, dataset.records)
    retry = sync_process(bucket, emulator.base_url, tmp_path / "host-b", "2026-03-02T00", "2026-03-02T05")
    assert retry.wait(300) == 0
    assert whole_hours(proxy, bucket, dataset.records) == list(
        hour_range(datetime(2026, 3, 2, 0, tzinfo=UTC), datetime(2026, 3, 2, 5, tzinfo=UTC)))


@pytest.fixture
def filled(bucket, dataset) -> str:
    """A bucket store holding the dataset, loaded by hand."""
    store = HourStore(bucket, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path)
    store.remember_secret(SECRET_KEY)
    return bucket


def offline_kpis(uri: str) -> tuple:
    (row,) = sql_connection(cache_dir=uri, offline=True).cursor().execute(KPI_SQL).fetchall()
    return row


def test_throttling_and_errors_are_readable_and_a_retry_answers_exactly(s3, filled, dataset, monkeypatch, tmp_path):
    expected = kpis([s for s in sessions_from_records(dataset.records) if START <= s.start < END])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-1"))
    s3.faults.throttle = 2  # pyarrow's S3 client retries SlowDown
    row = offline_kpis(filled)
    assert row[0] == expected[0] and [status for *_, status in s3.requests_made()].count(503) == 2
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-2"))
    s3.faults.fail = 10_000
    with pytest.raises(OperationalError) as failure:  # a fault, not the query's mistake
        offline_kpis(filled)
    message = str(failure.value)
    assert message.startswith(f"The hour store {filled} could not be")
    assert AWS["AWS_SECRET_ACCESS_KEY"] not in message and SECRET_KEY not in message
    s3.faults.fail = 0
    assert offline_kpis(filled)[0] == expected[0]


def test_an_unreachable_store_names_its_uri_without_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    uri = "s3://AKIAEXAMPLE:wJalrSecretExample@no-bucket/store?endpoint_override=127.0.0.1:9&scheme=http"
    shown = redact(uri)
    assert "wJalrSecretExample" not in shown and "AKIAEXAMPLE" not in shown
    with pytest.raises(OperationalError) as failure:
        sql_connection(cache_dir=uri, offline=True).cursor().execute(KPI_SQL)
    assert f"The hour store {shown} could not be" in str(failure.value)
    assert "wJalrSecretExample" not in str(failure.value)


def test_warm_reads_come_from_the_bounded_local_copy(s3, filled, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AMPLITUDE_HOT_CACHE_MB", "1")
    store = HourStore(filled, "https://amplitude.com", API_KEY)
    now = datetime.now(UTC)
    day_one = list(hour_range(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 1, 23, tzinfo=UTC)))
    day_two = [hour + timedelta(days=1) for hour in day_one]
    first = store.read(day_one, now)
    s3.clear_log()
    assert store.read(day_one, now).equals(first)
    assert s3.requests_made("GET") == [] or all("list-type" in path for _, path, _ in s3.requests_made("GET"))
    store.read(day_two, now)
    copies = {path.name.split(".")[0] for path in (store.root / "hot").glob("*/*")}
    assert {path.parent.name for path in (store.root / "hot").glob("*/*")} == {"20260302"}  # day one trimmed
    assert len(copies) == len(store.files(day_two, now))


def lose_copies(monkeypatch: pytest.MonkeyPatch, on_fetches: set[int]) -> list[int]:
    """Make the hot cache's copies vanish right after the fetches numbered ``on_fetches`` (1 = the first), as if
    another process trimmed them before they were read; returns the number of copies of each fetch."""
    fetches: list[int] = []
    fetch = HotCache.fetch

    def fetch_then_lose(cache, location, entries):
        copies = fetch(cache, location, entries)
        fetches.append(len(copies))
        if len(fetches) in on_fetches:
            for copy in copies:
                copy.unlink()
        return copies

    monkeypatch.setattr(HotCache, "fetch", fetch_then_lose)
    return fetches


def test_copies_trimmed_by_another_process_before_they_are_read_are_fetched_again(s3, filled, dataset, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # another process trims the folder right before the first read of each column
    fetches = lose_copies(monkeypatch, on_fetches={1, 3})
    s3.clear_log()
    rows = sql_connection(cache_dir=filled, offline=True).cursor().execute(
        "SELECT event_type, count(*) FROM amplitude_events "
        "WHERE event_time >= '2026-03-02' AND event_time < '2026-03-03' GROUP BY 1 ORDER BY 1").fetchall()
    expected = Counter(r["event_type"] for r in dataset.records if START <= parse_ts(r["event_time"]) < END)
    assert rows == sorted(expected.items())
    assert len(fetches) == 4 and len(set(fetches)) == 1  # event_time, once more, event_type, once more
    downloads = Counter(path for method, path, _ in s3.requests_made("GET") if ".arrow" in path)
    assert set(downloads.values()) == {3}  # every hour file: downloaded on first use, then again after each loss


def test_secret_verifier_and_projects_on_object_storage(s3, filled, monkeypatch):
    with pytest.raises(ProgrammingError, match="secret key does not match"):
        sql_connection(cache_dir=filled, offline=True, secret_key="wrong-secret").cursor().execute(KPI_SQL)
    other = HourStore(filled, "https://amplitude.com", "another-key")
    assert other.files(list(hour_range(START, END)), datetime.now(UTC)) == []
    projects = {key.split("/")[1] for key in s3.keys(bucket_of(filled))}
    assert projects == {project_key("https://amplitude.com", API_KEY)}
    verifier = s3.get_object(bucket_of(filled), f"store/{next(iter(projects))}/secret.verifier")
    assert SECRET_KEY.encode() not in verifier


def test_a_failed_delete_on_object_storage_says_it_was_a_delete(s3, bucket):
    location = StoreLocation.open(bucket)
    path = location.path("project", "20260301", "05.fresh.empty")
    location.publish_bytes(path, b"")
    s3.clear_log()
    s3.faults.fail = 10_000
    try:
        with pytest.raises(StoreError) as failure:
            location.delete(path)
    finally:
        s3.faults.fail = 0
    assert str(failure.value).startswith(f"The hour store {bucket} could not be deleted: ")
    key = "store/project/20260301/05.fresh.empty"
    assert set(s3.requests_made()) == {("HEAD", f"/{bucket_of(bucket)}/{key}", 500)}  # pyarrow looks before it deletes
    assert list(s3.keys(bucket_of(bucket))) == [key]


def test_local_paths_and_file_uris_stay_local(tmp_path):
    for where in (tmp_path / "a", f"file://{tmp_path / 'b'}"):
        location = StoreLocation.open(where)
        assert location.local and Path(location.root).is_dir()


def test_sessions_built_from_copies_trimmed_before_they_are_read(s3, filled, dataset, monkeypatch, tmp_path):
    """Sessions are built from the hours in one read: a copy another process trimmed meanwhile is fetched again."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    fetches = lose_copies(monkeypatch, on_fetches={1})
    low, high = datetime(2026, 3, 2, 6, tzinfo=UTC), datetime(2026, 3, 2, 18, tzinfo=UTC)  # a range no other test reads
    rows = sql_connection(cache_dir=filled, offline=True).cursor().execute(
        f"SELECT count(*) FROM amplitude_sessions WHERE session_start >= '{low:%Y-%m-%d %H:%M:%S}' "
        f"AND session_start < '{high:%Y-%m-%d %H:%M:%S}'").fetchall()
    assert rows == [(sum(1 for s in sessions_from_records(dataset.records) if low <= s.start < high),)]
    # the hours, lost, then once more; then the sessions kept beside them, one column at a time (one copy each)
    assert fetches[0] == fetches[1] > 1 and set(fetches[2:]) == {1}
