"""The lake's guarantees under change: readers during rewrites, a publisher killed midway, object storage."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from shillelagh_amplitude.lake import pins
from shillelagh_amplitude.lake.ddl import ddl
from shillelagh_amplitude.lake.layout import EVENTS, MANIFEST, PART_FILE, SESSIONS, STATUS
from shillelagh_amplitude.lake.pins import VIEWS_FILE, is_pin
from shillelagh_amplitude.lake.publish import publish
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY
from .expected import sessions_from_records
from .helpers import parse_ts
from .object_store import S3Proxy

AWS = {"AWS_ACCESS_KEY_ID": "test-access-key", "AWS_SECRET_ACCESS_KEY": "test-aws-secret-5150",
       "AWS_EC2_METADATA_DISABLED": "true"}
#: Upload hours held back, then stored: they add late rows to the provisional days 2026-03-02..03-04.
HELD_HOURS = [f"{hour:02d}" for hour in range(8, 24)]
VIEWS_PER_PARTITION = (
    "SELECT 'e', event_date, count(*), count(DISTINCT uuid) FROM amplitude_events GROUP BY 1, 2 UNION ALL "
    "SELECT 's', session_date, count(*), count(DISTINCT (amplitude_id, session_id)) FROM amplitude_sessions "
    "GROUP BY 1, 2"
)
PER_PARTITION = (
    "SELECT 'e', event_date, count(*), count(DISTINCT uuid) FROM read_parquet('{lake}/amplitude_events/*/*.parquet', "
    "hive_partitioning = true) GROUP BY 1, 2 UNION ALL "
    "SELECT 's', session_date, count(*), count(DISTINCT (amplitude_id, session_id)) FROM "
    "read_parquet('{lake}/amplitude_sessions/*/*.parquet', hive_partitioning = true) GROUP BY 1, 2"
)


def _store(cache_dir: Path) -> HourStore:
    return HourStore(cache_dir, "https://amplitude.com", API_KEY)


def _hold(cache: Path, store: HourStore, held: Path) -> None:
    """Move the held-back hours of 2026-03-03 out of the store."""
    held.mkdir(exist_ok=True)
    for path in (cache / store.project / "20260303").iterdir():
        if path.name[:2] in HELD_HOURS:
            shutil.move(path, held / path.name)


def _restore(cache: Path, store: HourStore, held: Path) -> None:
    for path in held.iterdir():
        shutil.move(path, cache / store.project / "20260303" / path.name)


def _counts(lake: Path) -> dict[tuple[str, str], int]:
    rows = duckdb.connect().sql(PER_PARTITION.format(lake=lake)).fetchall()
    assert all(count == distinct for _, _, count, distinct in rows)  # every row once
    return {(table, str(day)): count for table, day, count, _ in rows}


def _file_counts(lake: Path) -> dict[tuple[str, str], int]:
    """Rows per partition, each visible file opened once (one handle: one version of the file)."""
    counts = {}
    for table, key in ((EVENTS, "e"), (SESSIONS, "s")):
        for folder in (lake / table.name).iterdir():
            visible = [path for path in folder.iterdir() if not path.name.startswith(".")]
            assert [path.name for path in visible] in ([], [PART_FILE]), visible
            for path in visible:
                with path.open("rb") as handle:
                    counts[key, folder.name.split("=")[1]] = pq.ParquetFile(handle).metadata.num_rows
    return counts


def _duckdb_counts(connection: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], int]:
    """Rows per partition through the lake's DuckDB views, each row once."""
    rows = connection.sql(VIEWS_PER_PARTITION).fetchall()
    assert all(count == distinct for _, _, count, distinct in rows)
    return {(table, str(day)): count for table, day, count, _ in rows}


def _views_file(lake: Path) -> dict[tuple[str, str], int]:
    """A new read-only connection to the views file per query, as Superset's duckdb-engine opens it."""
    with duckdb.connect(str(lake / VIEWS_FILE), read_only=True) as connection:
        return _duckdb_counts(connection)


def _printed_ddl(lake: Path) -> dict[tuple[str, str], int]:
    """The statements of ``amplitude-lake ddl --engine duckdb``, run into a new in-memory database per query."""
    with duckdb.connect() as connection:
        for statement in ddl(lake, "duckdb"):
            connection.execute(statement)
        return _duckdb_counts(connection)


def test_readers_see_the_lake_before_or_after_a_rewrite_never_an_error_nor_a_mix(loaded_cache, tmp_path):
    """Publishes alternate between the store without and with late hours (each rewrites the provisional days)
    while readers loop over the whole lake. One opens each visible ``part-0.parquet`` once (as Spark and pyarrow
    read a file): per partition, the counts before or after. The DuckDB readers (through the publisher's views
    file, and through the printed DDL) read pins listed by the run that last finished: every read is the whole
    lake before or after, and none fails."""
    cache = tmp_path / "cache"
    shutil.copytree(loaded_cache, cache)
    store, held, lake = _store(cache), tmp_path / "held", tmp_path / "lake"
    # the lake of the store without the late hours as later runs leave it: the first publish with them back makes
    # 2026-03-02 final (every hour of its window stored, and final), and a final partition is never rebuilt, so
    # holding the hours again leaves it whole (the very first publish counted 12 fewer of its events, still late)
    for step in (_hold, _restore, _hold):
        step(cache, store, held)
        publish(store, lake)
    before = _counts(lake)
    _restore(cache, store, held)
    publish(store, lake)
    after = _counts(lake)
    assert _file_counts(lake) == after == _views_file(lake) == _printed_ddl(lake)
    changed = {key for key in after if before.get(key) != after[key]}
    assert len(changed) >= 3  # events and sessions of several days change
    readers = {"files": _file_counts, "views file": _views_file, "printed ddl": _printed_ddl}
    stop = threading.Event()
    reads: dict[str, list] = {name: [] for name in readers}
    failures = []

    def read_loop(name: str) -> None:
        while not stop.wait(0.01 if name == "files" else 0):  # the pure-Python reader leaves the publisher CPU
            try:
                reads[name].append(readers[name](lake))
            except Exception as exc:  # noqa: BLE001 - a failed read is a failure of the guarantee
                failures.append(f"{name}: {exc!r}")

    threads = [threading.Thread(target=read_loop, args=(name,)) for name in readers]
    for thread in threads:
        thread.start()
    rewrites = publishes = 0
    try:
        while publishes < 4 or min(len(seen) for seen in reads.values()) < 10:
            _hold(cache, store, held)
            rewrites += len(publish(store, lake).written)
            _restore(cache, store, held)
            rewrites += len(publish(store, lake).written)
            publishes += 2
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures[:3]
    mixed = [seen for seen in reads["files"] if any(seen.get(key) not in (before.get(key), after[key])
                                                    for key in after)]
    assert not mixed
    for name in ("views file", "printed ddl"):
        assert all(seen in (before, after) for seen in reads[name]), name
    split = {name: sum(seen == after for seen in reads[name]) for name in ("views file", "printed ddl")}
    print(f"\nlake atomicity: {publishes} publishes rewrote {rewrites} partitions ({len(changed)} changed); "
          + ", ".join(f"{len(seen)} reads {name}" for name, seen in reads.items())
          + f": 0 errors, 0 mixed; DuckDB reads of the state after: {split}")
    assert rewrites >= publishes * len(changed) // 2


def test_pins_superseded_stay_for_the_grace_then_go(loaded_cache, tmp_path, monkeypatch):
    """The views list one pin per partition, the hard link of its ``part-0.parquet``; a pin a run stopped listing
    stays (a DuckDB connection opened before may read it) until a run finds it retired for ``GRACE``."""
    cache = tmp_path / "cache"
    shutil.copytree(loaded_cache, cache)
    store, held, lake = _store(cache), tmp_path / "held", tmp_path / "lake"
    _hold(cache, store, held)
    publish(store, lake)
    first = set(lake.rglob("*.pin"))
    _restore(cache, store, held)
    report = publish(store, lake)
    listed = {lake / path for paths in json.loads((lake / MANIFEST).read_text())["pins"]["current"].values()
              for path in paths}
    parts = list(lake.rglob(PART_FILE))
    assert len(listed) == len(parts) and {(p.parent, p.stat().st_ino) for p in listed} == {
        (p.parent, p.stat().st_ino) for p in parts}  # each partition's pin is its file (a hard link)
    superseded = first - listed
    assert len(superseded) == len(report.written) > 0 and superseded <= set(lake.rglob("*.pin"))
    monkeypatch.setattr(pins, "GRACE", timedelta(0))
    publish(store, lake)  # nothing to rebuild: the retired pins are past a grace of 0
    assert set(lake.rglob("*.pin")) == listed


KILLED_PUBLISHER = """
import sys, time
import pyarrow.parquet as pq
from shillelagh_amplitude.lake import publish as module
from shillelagh_amplitude.store.hour_store import HourStore

class SlowWriter(pq.ParquetWriter):
    def write_table(self, table, *args, **kwargs):
        super().write_table(table, *args, **kwargs)
        if str(self.where).endswith('.tmp') and 'event_date=2026-03-03' in str(self.where):
            print('half-written', self.where, flush=True)
            time.sleep(60)

module.pq.ParquetWriter = SlowWriter
store = HourStore(sys.argv[1], "https://amplitude.com", sys.argv[2])
module.publish(store, sys.argv[3], progress=lambda key: print('published', key, flush=True))
"""


def test_a_publisher_killed_midway_leaves_the_lake_readable_and_the_next_run_completes_it(loaded_cache, tmp_path):
    reference = tmp_path / "reference"
    publish(_store(loaded_cache), reference)
    lake = tmp_path / "lake"
    child = subprocess.Popen([sys.executable, "-c", KILLED_PUBLISHER, str(loaded_cache), API_KEY, str(lake)],
                             stdout=subprocess.PIPE, text=True)
    lines = []
    for line in child.stdout:
        lines.append(line)
        if line.startswith("half-written"):
            child.send_signal(signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert any(line.startswith("published") for line in lines)  # killed after some partitions, in the middle of one
    temp = Path(lines[-1].split()[1])
    assert temp.exists() and temp.name.startswith(".")  # the half-written file: hidden, not *.parquet
    partial = _counts(lake)  # readable: every file listed is whole
    complete = _counts(reference)
    assert partial and all(complete[key] == count for key, count in partial.items())
    assert len(partial) < len(complete)
    report = publish(_store(loaded_cache), lake)
    assert report.written and _counts(lake) == complete
    assert not temp.exists() and not [path for path in lake.rglob(".*") if path.name != ".lock" and
                                      not is_pin(path.name)]
    for path in reference.rglob(PART_FILE):
        assert pq.read_table(lake / path.relative_to(reference)).equals(pq.read_table(path))


@pytest.fixture(scope="module")
def s3() -> S3Proxy:
    proxy = S3Proxy()
    proxy.start()
    yield proxy
    proxy.stop()


def test_the_lake_on_object_storage(s3, loaded_cache, dataset, monkeypatch, tmp_path):
    """Published to the S3 server, listed and read back through pyarrow's dataset API partition by partition, and
    the status; a second run puts nothing; no temporary object is ever created (one PUT per partition)."""
    for name, value in AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    s3.clear_log()
    uri = s3.uri(bucket, "lake")
    report = publish(_store(loaded_cache), uri)
    keys = s3.keys(bucket)
    parts = sorted(key for key in keys if key.endswith(".parquet"))
    assert parts == sorted(f"lake/{folder}/{PART_FILE}" for folder in [*report.written, STATUS])
    assert set(keys) == {*parts, "lake/_amplitude_lake.json"}
    puts = [path for _, path, _ in s3.requests_made("PUT") if ".parquet" in path]
    assert len(puts) == len(parts)  # each partition in one PUT, under its final key
    filesystem, root = __import__("pyarrow.fs", fromlist=["FileSystem"]).FileSystem.from_uri(uri)
    expected_events = Counter(str(parse_ts(r["event_time"]).date()) for r in dataset.records)
    expected_sessions = Counter(str(s.start.date()) for s in sessions_from_records(dataset.records))
    for table, expected in ((EVENTS, expected_events), (SESSIONS, expected_sessions)):
        dataset_ = ds.dataset(f"{root}/{table.name}", filesystem=filesystem, format="parquet", partitioning="hive")
        assert dataset_.schema.field(table.time_column).type == table.schema.field(table.time_column).type
        for fragment in dataset_.get_fragments():
            day = str(ds.get_partition_keys(fragment.partition_expression)[table.partition_column])
            assert fragment.count_rows() == expected[day], (table.name, day)
            assert fragment.path.endswith(f"{table.partition_column}={day}/{PART_FILE}")
        assert dataset_.count_rows() == sum(expected.values())
    status = ds.dataset(f"{root}/{STATUS}", filesystem=filesystem, format="parquet").to_table()
    through = _store(loaded_cache).stored_span()[1] + timedelta(hours=1)  # loaded by hand: every hour final
    assert status.to_pylist() == [{"data_complete_through": through}] and report.complete_through == through
    s3.clear_log()
    again = publish(_store(loaded_cache), uri)
    assert again.written == [] and not s3.requests_made("PUT")
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(s3.keys(bucket))
