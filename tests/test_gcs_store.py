"""The hour store on GCS: gcp-storage-emulator on 127.0.0.1, reached through pyarrow's GCS file system as in
production (credentials from ``GOOGLE_APPLICATION_CREDENTIALS``), behind the proxy of ``object_store.py``. The same
promises as on S3 (``test_object_store.py``): two processes on one bucket, no partial hour, readable faults.
"""

from __future__ import annotations

import io
import signal
import uuid
from datetime import UTC, datetime

import pyarrow.feather as feather
import pytest
from shillelagh.exceptions import OperationalError

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY
from .expected import kpis, sessions_from_records
from .object_store import GcsProxy
from .test_object_store import (
    END,
    KPI_SQL,
    START,
    bucket_of,
    events_per_hour,
    hour_objects,
    interrupt_while_publishing,
    offline_kpis,
    query_in_new_process,
    requested_hours,
    sync_process,
    whole_hours,
)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory) -> GcsProxy:
    proxy = GcsProxy(tmp_path_factory.mktemp("gcs") / "credentials.json")
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture
def bucket(gcs, monkeypatch, tmp_path) -> str:
    """A new bucket's store URI; this process and those it starts get the credentials and their own caches."""
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(gcs.credentials))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-test"))
    name = f"amp-{uuid.uuid4().hex[:12]}"
    gcs.create_bucket(name)
    gcs.faults.throttle = gcs.faults.fail = 0
    gcs.clear_log()
    return gcs.uri(name, "store")


def test_a_second_process_reads_what_the_first_downloaded(gcs, bucket, dataset, emulator, tmp_path):
    expected = kpis([s for s in sessions_from_records(dataset.records) if START <= s.start < END])
    first = query_in_new_process(bucket, emulator.base_url, KPI_SQL, tmp_path / "host-a")
    once = requested_hours(emulator)
    assert once and max(once.values()) == 1  # each upload hour downloaded once
    assert any("derived" in path for method, path, _ in gcs.requests_made() if method in ("POST", "PUT"))
    emulator.clear_requests()
    gcs.clear_log()
    second = query_in_new_process(bucket, emulator.base_url, KPI_SQL, tmp_path / "host-b")
    assert emulator.requests == []  # nothing asked of Amplitude: final and empty hours are known
    assert not [entry for entry in gcs.requests_made() if entry[0] in ("POST", "PUT")]  # nothing written
    assert first == second
    assert first[0][0] == expected[0] and first[0][1:] == pytest.approx(expected[1:], rel=1e-9)
    assert gcs.token_requests > 0  # credentials came from GOOGLE_APPLICATION_CREDENTIALS


def test_two_processes_filling_at_once_store_each_hour_once_complete(gcs, bucket, dataset, emulator, tmp_path):
    processes = [sync_process(bucket, emulator.base_url, tmp_path / f"host-{n}", "2026-03-01T06", "2026-03-02T17")
                 for n in range(2)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
    wanted = list(hour_range(datetime(2026, 3, 1, 6, tzinfo=UTC), datetime(2026, 3, 2, 17, tzinfo=UTC)))
    counts = requested_hours(emulator)
    assert set(counts) == set(wanted) and max(counts.values()) <= 2
    objects = hour_objects(gcs, bucket)
    per_hour = events_per_hour(dataset.records)
    assert sorted(objects) == wanted
    for hour, stored in objects.items():
        assert len(stored) == 1, stored  # one object an hour: no duplicate, no leftover variant
        key, size = stored[0]
        if per_hour[hour]:
            table = feather.read_table(io.BytesIO(gcs.get_object(bucket_of(bucket), key)))
            assert table.num_rows == per_hour[hour]
        else:
            assert key.endswith(".empty") and size == 0


def test_a_process_killed_while_publishing_leaves_no_partial_hour(gcs, bucket, dataset, emulator, tmp_path):
    gcs.faults.hold_puts = True
    gcs.faults.held.clear()
    gcs.faults.release.clear()
    process = sync_process(bucket, emulator.base_url, tmp_path / "host-a", "2026-03-02T00", "2026-03-02T05")
    try:
        assert gcs.faults.held.wait(120), "no hour was published"
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        gcs.faults.hold_puts = False
        gcs.faults.release.set()
    assert all(key.endswith(".empty") for objects in hour_objects(gcs, bucket).values() for key, _ in objects)
    retry = sync_process(bucket, emulator.base_url, tmp_path / "host-b", "2026-03-02T00", "2026-03-02T05")
    assert retry.wait(300) == 0
    per_hour = events_per_hour(dataset.records)
    for hour, stored in hour_objects(gcs, bucket).items():
        (key, _), = stored
        if per_hour[hour]:
            table = feather.read_table(io.BytesIO(gcs.get_object(bucket_of(bucket), key)))
            assert table.num_rows == per_hour[hour]


def test_a_sync_interrupted_while_uploading_leaves_whole_hours_and_the_next_fill_completes(
        gcs, bucket, dataset, emulator, tmp_path):
    interrupted = interrupt_while_publishing(gcs, bucket, emulator.base_url, tmp_path / "host-a")
    assert interrupted.returncode != 0 and "KeyboardInterrupt" in interrupted.stderr
    whole_hours(gcs, bucket, dataset.records)
    retry = sync_process(bucket, emulator.base_url, tmp_path / "host-b", "2026-03-02T00", "2026-03-02T05")
    assert retry.wait(300) == 0
    assert whole_hours(gcs, bucket, dataset.records) == list(
        hour_range(datetime(2026, 3, 2, 0, tzinfo=UTC), datetime(2026, 3, 2, 5, tzinfo=UTC)))


def test_errors_are_readable_and_a_retry_answers_exactly(gcs, bucket, dataset, monkeypatch, tmp_path):
    store = HourStore(bucket, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path)
    store.remember_secret(SECRET_KEY)
    expected = kpis([s for s in sessions_from_records(dataset.records) if START <= s.start < END])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-1"))
    gcs.faults.fail = 1  # pyarrow's GCS client retries a 500 (within the URI's retry_limit_seconds)
    assert offline_kpis(bucket)[0] == expected[0]
    assert [status for *_, status in gcs.requests_made()].count(500) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-2"))
    gcs.faults.fail = 10_000
    with pytest.raises(OperationalError) as failure:  # a fault, not the query's mistake
        offline_kpis(bucket)
    assert str(failure.value).startswith(f"The hour store {bucket} could not be")
    gcs.faults.fail = 0
    assert offline_kpis(bucket)[0] == expected[0]


def test_the_stored_span_and_the_newest_final_hour_are_listed(gcs, bucket, dataset):
    """Day folders exist only as prefixes of the hour objects: they are listed all the same."""
    store = HourStore(bucket, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC))
    assert store.stored_span() == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC))
    assert store.newest_final_hour() == datetime(2026, 3, 3, 23, tzinfo=UTC)
