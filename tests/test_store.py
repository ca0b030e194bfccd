"""The hour store: final and fresh hours, separation of projects, secrets, atomic and concurrent writes."""

from __future__ import annotations

import gzip
import json
import multiprocessing
import os
import resource
import subprocess
import sys
import zipfile
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.feather as feather
import pytest

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.export.probe import check_connection
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.schema import EVENT_SCHEMA
from shillelagh_amplitude.store.hour_store import FRESH_TTL, MAX_OPEN_WRITERS, HourStore, is_final

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


@pytest.mark.parametrize("verifier", [b"not-hex:00ff", b"00ff:not-hex", b"00ff:\xc3\xa9\xc3\xa9", b"\xff\xfe:00",
                                      b"00:11:22", b"", b"00ff"])
def test_an_unreadable_secret_verifier_is_unknown(tmp_path, verifier):
    """Like a missing verifier: the secret is unknown (checked with Amplitude, then remembered anew)."""
    store = HourStore(tmp_path, "https://amplitude.com", "key")
    load_archive(store, export_zip(tmp_path / "z", [make_event(server_upload_time=T0)]))
    (store.root / "secret.verifier").write_bytes(verifier)
    assert store.secret_status("the-secret") is None
    assert check_connection("key", "the-secret", base_url="https://amplitude.com", cache_dir=str(tmp_path),
                            offline=True) == "offline store with upload hours 20260301T05..20260301T05"
    store.remember_secret("the-secret")
    assert store.secret_status("the-secret") is True
    assert store.secret_status("another") is False


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
         "--cache-dir", str(tmp_path / "store")],
        preexec_fn=_limit_open_files, capture_output=True, text=True, timeout=120, check=False)
    assert load.returncode == 0, load.stderr
    assert load.stdout.startswith(f"{len(events)} events loaded into ")
    store = HourStore(tmp_path / "store", "https://amplitude.com", "key")
    table = store.read(hours, start + 1000 * HOUR, ["uuid", "server_upload_time"])
    stored = Counter(t.replace(minute=0, second=0, microsecond=0) for t in table["server_upload_time"].to_pylist())
    assert stored == expected
    assert sorted(table["uuid"].to_pylist()) == sorted(e["uuid"] for e in events)
    assert len(store.files(hours, start + 1000 * HOUR)) == 300
