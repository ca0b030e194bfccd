"""Session-length queries on a warm store: through the adapter (SQLite) vs DuckDB over the same stored hours.

    python benchmarks/query_benchmark.py [--events 1000000] [--days 30] [--work /tmp/amplitude-bench]

Generates the dataset (or reuses it), loads it into a store with `load_archive`, then times each query:
- adapter, cold: reads the hours from the store and builds sessions (nothing cached anywhere);
- adapter, new process: the sessions built earlier are on disk beside the hours, the memory cache is empty;
- adapter, warm: the process-wide table cache holds them (other charts, refreshes of the same range);
- DuckDB: the same SQL over a sessions view computed from the same stored Arrow files.
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow.dataset as ds
from shillelagh.backends.apsw.db import connect

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.sample.generator import generate_dataset, write_export_zip
from shillelagh_amplitude.sql.scan import TABLE_CACHE
from shillelagh_amplitude.store.hour_store import HourStore

API_KEY = "bench-key"
SECRET = "bench-secret"
WHERE = "WHERE session_start >= '{start}' AND session_start < '{end}'"
QUERIES = {
    "KPIs (count, avg, median, p95)": (
        "SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) FROM amplitude_sessions {where}",
        "SELECT count(*), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) FROM sessions {where}",
    ),
    "per day avg/median/p95": (
        "SELECT date(session_start), avg(length_s), median(length_s), percentile(length_s, 95) "
        "FROM amplitude_sessions {where} GROUP BY 1",
        "SELECT CAST(session_start AS DATE), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) "
        "FROM sessions {where} GROUP BY 1",
    ),
    "per plan avg/median/p95": (
        "SELECT json_extract(user_properties, '$.plan'), avg(length_s), median(length_s), "
        "percentile(length_s, 95) FROM amplitude_sessions {where} GROUP BY 1",
        "SELECT json_extract_string(user_properties, '$.plan'), avg(length_s), median(length_s), "
        "quantile_cont(length_s, 0.95) FROM sessions {where} GROUP BY 1",
    ),
    "length-bucket distribution": (
        "SELECT length_bucket, count(*) FROM amplitude_sessions {where} GROUP BY 1",
        None,  # filled below: DuckDB computes the bucket in SQL
    ),
}
DUCKDB_SESSIONS = """
CREATE VIEW sessions AS
SELECT to_timestamp(session_id / 1000.0) AS session_start,
       least(epoch(max(client_event_time)) - epoch(min(client_event_time)), 86400) AS length_s,
       arg_min(user_properties, client_event_time) AS user_properties
FROM events WHERE session_id <> -1 AND amplitude_id IS NOT NULL
GROUP BY amplitude_id, session_id
"""
DUCKDB_BUCKETS = (
    "SELECT CASE WHEN length_s < 3 THEN 1 WHEN length_s < 10 THEN 2 WHEN length_s < 30 THEN 3 "
    "WHEN length_s < 60 THEN 4 WHEN length_s < 180 THEN 5 WHEN length_s < 600 THEN 6 WHEN length_s < 1800 THEN 7 "
    "WHEN length_s < 3600 THEN 8 ELSE 9 END, count(*) FROM sessions {where} GROUP BY 1"
)


def prepare(work: Path, events: int, days: int) -> tuple[Path, datetime, datetime]:
    """Generate (once) and load the dataset; returns the cache dir and the session range."""
    end = datetime(2026, 10, 1, tzinfo=UTC)
    start = end - timedelta(days=days)
    zip_path = work / f"export-{events}-{days}.zip"
    if not zip_path.exists():
        summary = generate_dataset(work / f"data-{events}-{days}", start, end, events=events)
        write_export_zip(work / f"data-{events}-{days}", zip_path)
        print(f"generated {summary.events} events, {summary.sessions} sessions")
    cache_dir = work / f"cache-{events}-{days}"
    store = HourStore(cache_dir, "https://amplitude.com", API_KEY)
    if not store.files([start], datetime.now(UTC)):
        began = time.perf_counter()
        loaded = load_archive(store, zip_path)
        store.remember_secret(SECRET)
        print(f"loaded {loaded} events into the store in {time.perf_counter() - began:.1f} s")
    return cache_dir, start, end


def timed(run) -> tuple[float, object]:
    began = time.perf_counter()
    result = run()
    return time.perf_counter() - began, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache_dir, start, end = prepare(args.work, args.events, args.days)
    where = WHERE.format(start=f"{start:%Y-%m-%d}", end=f"{end:%Y-%m-%d}")

    kwargs = {"api_key": API_KEY, "secret_key": SECRET, "cache_dir": str(cache_dir), "offline": True}
    cursor = connect(":memory:", adapters=["amplitude"], adapter_kwargs={"amplitude": kwargs}, safe=True).cursor()
    store_files = [str(p) for p in sorted(Path(cache_dir).rglob("*.arrow"))]
    duck = duckdb.connect()
    duck.register("events", ds.dataset(store_files, format="ipc"))
    duck.execute(DUCKDB_SESSIONS)

    derived = next(Path(cache_dir).iterdir()) / "derived"
    print(f"\n{'query':32s} {'cold':>7s} {'new process':>12s} {'warm':>7s} {'duckdb':>7s} {'warm/duckdb':>12s} rows")
    for name, (adapter_sql, duck_sql) in QUERIES.items():
        run = lambda sql=adapter_sql: cursor.execute(sql.format(where=where)).fetchall()  # noqa: E731
        shutil.rmtree(derived, ignore_errors=True)
        TABLE_CACHE.clear()
        cold, rows = timed(run)
        TABLE_CACHE.clear()
        new_process, _ = timed(run)
        warm, _ = timed(run)
        duck_time, duck_rows = timed(
            lambda sql=duck_sql or DUCKDB_BUCKETS: duck.execute(sql.format(where=where)).fetchall()
        )
        assert len(rows) == len(duck_rows), (name, len(rows), len(duck_rows))
        print(f"{name:32s} {cold:6.2f}s {new_process:11.2f}s {warm:6.2f}s {duck_time:6.2f}s {warm / duck_time:11.2f}x "
              f"{len(rows)}")


if __name__ == "__main__":
    main()
