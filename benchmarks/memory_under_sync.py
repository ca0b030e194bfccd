"""A query process's memory while a background sync refreshes the fresh hours: one process, no Superset.

    python benchmarks/memory_under_sync.py [--days 30] [--events 1000000] [--threads 3] [--seconds 600]
                                           [--sync-interval-s 15] [--work /tmp/amplitude-memory]

A second process (this script with ``--sync-worker``) serves the generated events from the Export API emulator
and syncs the store from it, first the whole range, then every ``--sync-interval-s`` seconds (it re-publishes
the hours not final yet, as Celery beat's ``amplitude.sync_stores`` does). This process runs the dashboard's
chart queries (its virtual datasets under Superset's time filters) and SQL Lab's through ``amplitude://`` in
``--threads`` threads, and every ``--sample-s`` seconds prints: RSS, the table cache's accounted bytes and
tables, ``pyarrow.total_allocated_bytes()`` and the default pool's backend, the bytes in each of pyarrow's pools,
and the syncs done so far.
The web process of ``benchmarks/load_test.py`` should level off near the cache's bound; so should this one.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pyarrow as pa
import yaml
from sqlalchemy import create_engine, text

from shillelagh_amplitude.export.sync import sync_project
from shillelagh_amplitude.hours import floor_hour, whole_days_end
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.sql.scan import TABLE_CACHE

API_KEY, SECRET_KEY = "memory-key", "memory-secret"
DATASETS = Path(__file__).resolve().parents[1] / "dashboards" / "session_length" / "datasets"
MB = 1024 * 1024


def dataset_sql(name: str) -> str:
    return yaml.safe_load((DATASETS / f"{name}.yaml").read_text())["sql"]


def chart_queries(days: int) -> list[str]:
    """The dashboard's kind of chart queries (virtual dataset, time filter, metrics), for each of its time ranges."""
    end = whole_days_end(datetime.now(UTC))
    sessions, definitions = dataset_sql("sessions"), dataset_sql("session_definitions")
    ranges = [f"WHERE session_start >= '{end - timedelta(days=span):%Y-%m-%d %H:%M:%S}' "
              f"AND session_start < '{end:%Y-%m-%d %H:%M:%S}'" for span in sorted({1, min(7, days), days})]
    if days >= 30:
        ranges.append("WHERE 1 = 1")  # "No filter": the connection's default window
    queries = []
    for where in ranges:
        over_sessions = f"FROM ({sessions}) AS virtual_table {where}"
        over_definitions = f"FROM ({definitions}) AS virtual_table {where}"
        queries += [
            f"SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) {over_sessions} LIMIT 1",
            f"SELECT date(session_start), count(*), median(length_s) {over_sessions} GROUP BY 1 LIMIT 10000",
            f"SELECT plan, count(*), avg(length_s) {over_sessions} AND country = 'Germany' GROUP BY 1 LIMIT 100",
            f"SELECT length_bucket, count(*) {over_sessions} GROUP BY 1 LIMIT 100",
            f"SELECT avg(event_count) {over_sessions} AND contains_event IN ('search', 'purchase') LIMIT 1",
            f"SELECT definition, avg(length_s), median(length_s), percentile(length_s, 95) {over_definitions} "
            "GROUP BY 1 LIMIT 100",
            f"SELECT definition, date(session_start), median(length_s) {over_definitions} GROUP BY 1, 2 LIMIT 10000",
            f"SELECT definition, avg(CASE WHEN amplitude_sessions > 1 THEN 1.0 ELSE 0.0 END) {over_definitions} "
            "GROUP BY 1 LIMIT 100",
        ]
    day = f"event_time >= '{end - timedelta(days=1):%Y-%m-%d}' AND event_time < '{end:%Y-%m-%d}'"
    queries.append(f"SELECT event_type, count(*) FROM amplitude_events WHERE {day} GROUP BY 1 ORDER BY 2 DESC")
    return queries


def sync_worker(work: Path, interval_s: float) -> None:
    """The emulator and a sync loop (prints ``base_url``, then ``synced <n>`` after each sync)."""
    with ExportEmulator(work / "export", api_key=API_KEY, secret_key=SECRET_KEY) as emulator:
        print(f"base_url {emulator.base_url}", flush=True)
        for number in itertools.count(1):
            started = time.monotonic()
            result = sync_project(API_KEY, SECRET_KEY, base_url=emulator.base_url, cache_dir=str(work / "store"))
            print(f"synced {number} {result.hours_downloaded} hours in {time.monotonic() - started:.1f} s", flush=True)
            time.sleep(interval_s)


def pools() -> str:
    """Bytes allocated in each of pyarrow's pools (Python's default may differ from the C++ one the IPC reader
    uses: ``pa.set_memory_pool`` changes only the former)."""
    made = {"jemalloc": pa.jemalloc_memory_pool, "mimalloc": pa.mimalloc_memory_pool, "system": pa.system_memory_pool}
    return ", ".join(f"{name} {made[name]().bytes_allocated() / MB:.0f} MB" for name in pa.supported_memory_backends())


def sample_line(started: float, syncs: int, queries: int, errors: int) -> str:
    return (f"{time.monotonic() - started:7.0f} s  rss {psutil.Process().memory_info().rss / MB:7.0f} MB  "
            f"cache {TABLE_CACHE.total_bytes / MB:6.0f} MB in {len(TABLE_CACHE):3d} tables  "
            f"arrow {pa.total_allocated_bytes() / MB:6.0f} MB (default {pa.default_memory_pool().backend_name}; "
            f"{pools()})  syncs {syncs}  queries {queries}  errors {errors}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-memory"))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--sync-interval-s", type=float, default=15)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--sync-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sync_worker:
        sync_worker(args.work, args.sync_interval_s)
        return 0
    marker = args.work / f"generated-{args.days}-{args.events}"
    end = floor_hour(datetime.now(UTC))
    if not marker.exists() or marker.read_text() != f"{end:%Y%m%d%H}":  # the newest hours must be the fresh ones
        print("generating the dataset ...", flush=True)
        subprocess.run(["rm", "-rf", str(args.work / "export"), str(args.work / "store")], check=True)
        generate_dataset(args.work / "export", whole_days_end(end) - timedelta(days=args.days, hours=49), end,
                         events=args.events, seed=18)
        marker.write_text(f"{end:%Y%m%d%H}")
    worker = subprocess.Popen([sys.executable, __file__, "--sync-worker", "--work", str(args.work),
                               "--sync-interval-s", str(args.sync_interval_s)], stdout=subprocess.PIPE, text=True)
    syncs, last_sync = 0, ""
    try:
        base_url = worker.stdout.readline().split()[1]
        first = worker.stdout.readline().strip()
        print(f"first sync: {first}", flush=True)

        def count_syncs() -> None:
            nonlocal syncs, last_sync
            for line in worker.stdout:
                syncs, last_sync = syncs + 1, line.split(" ", 2)[2].strip()

        threading.Thread(target=count_syncs, daemon=True).start()
        os.environ["AMPLITUDE_ALLOWED_BASE_URLS"] = base_url
        engine = create_engine("amplitude://", api_key=API_KEY, secret_key=SECRET_KEY, base_url=base_url,
                               cache_dir=str(args.work / "store"))
        queries = chart_queries(args.days)
        done, errors, stop = [0], [0], threading.Event()

        def user(number: int) -> None:
            for sql in itertools.cycle(queries[number:] + queries[:number]):
                if stop.is_set():
                    return
                try:
                    with engine.connect() as connection:
                        connection.execute(text(sql)).fetchall()
                except Exception as exc:  # noqa: BLE001 - counted and shown, the load goes on
                    errors[0] += 1
                    print(f"error: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
                done[0] += 1

        started = time.monotonic()
        users = [threading.Thread(target=user, args=(n,), daemon=True) for n in range(args.threads)]
        for thread in users:
            thread.start()
        while time.monotonic() - started < args.seconds:
            time.sleep(args.sample_s)
            print(f"{sample_line(started, syncs, done[0], errors[0])} (last: {last_sync})", flush=True)
        stop.set()
        for thread in users:
            thread.join()
    finally:
        worker.terminate()
        worker.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
