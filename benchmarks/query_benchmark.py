"""Dashboard and SQL Lab queries through ``amplitude://`` beside a plain SQLite table and DuckDB, at 1x and 3x data.

    python benchmarks/query_benchmark.py [--scales 1000000 3000000] [--repeat 5] [--work /tmp/amplitude-bench]
                                         [--query "user sessions: KPIs, 30 min" ...]   (default: every query)

For each scale it generates the dataset once (or reuses it) and fills a store with ``load_archive``, as an earlier
``amplitude-sync`` would. Every query then runs in a new process (``--worker``): its first run is "first in a new
process" (derived sessions and user sessions come from disk, the memory cache is empty; pandas is imported first,
as in a Superset process), the next ones "repeated" (median); the worker reports its peak RSS. One more worker runs
every query in turn, for the peak memory of a process answering them all. ``rep cpu`` is the repeated runs' CPU
time in that process (median), ``sq cpu`` the plain SQLite table's: on a shared machine wall times grow with the
load, CPU time much less.
Baselines, in this same command:
- a plain SQLite table holding the same rows (a file database built once, queried in its own process): the floor
  for anything built on SQLite;
- the same plain tables holding only the rows of the queries' range (``rng cpu``): the floor for a connector that,
  like ``amplitude://``, hands SQLite only the rows in range; what is left above it is the cost of the virtual
  table (SQLite's calls into Python);
- DuckDB over the same rows as in-memory Arrow tables.
Queries cover 25 of the 30 days.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import apsw
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from timing import time_query

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.hours import LOOKBACK, floor_hour, hour_range
from shillelagh_amplitude.sample.generator import generate_dataset, write_export_zip
from shillelagh_amplitude.sql.scan import sqlite_values
from shillelagh_amplitude.sql.sessions import EVENT_COLUMNS, build_sessions
from shillelagh_amplitude.sql.user_sessions import EVENT_COLUMNS as USER_EVENT_COLUMNS
from shillelagh_amplitude.sql.user_sessions import build_user_sessions
from shillelagh_amplitude.store.hour_store import HourStore

API_KEY = "bench-key"
SECRET = "bench-secret"
FIRST_DAY = datetime(2026, 9, 1, tzinfo=UTC)
#: The range every query covers (25 of the 30 days).
RANGE = (datetime(2026, 9, 3, tzinfo=UTC), datetime(2026, 9, 28, tzinfo=UTC))


def in_range_sql(column: str) -> str:
    """The SQL condition keeping ``column`` inside :data:`RANGE` (dates as literals, as Superset writes them)."""
    return f"{column} >= '{RANGE[0]:%Y-%m-%d}' AND {column} < '{RANGE[1]:%Y-%m-%d}'"


SESSIONS = f"FROM amplitude_sessions WHERE {in_range_sql('session_start')}"
EVENTS = f"FROM amplitude_events WHERE {in_range_sql('event_time')}"
ONE_DAY = "FROM amplitude_events WHERE event_time >= '2026-09-10' AND event_time < '2026-09-11'"
USER_SESSIONS = f"FROM amplitude_user_sessions WHERE {in_range_sql('session_start')} AND gap_minutes"
#: The gaps the user-session queries use (the dashboard's), and where their look-back starts.
GAPS = (30, 60)
SINCE = floor_hour(RANGE[0]) - LOOKBACK
#: The dashboard's "Session definition" dataset (Amplitude's sessions and user sessions at 30 and 60 minutes).
DEFINITIONS = yaml.safe_load((Path(__file__).resolve().parents[1] / "dashboards/session_length/datasets/"
                              "session_definitions.yaml").read_text())["sql"]
DEFINITIONS_RANGE = f"WHERE {in_range_sql('session_start')} GROUP BY 1"
#: The dashboard's Plan filter on the same range (Superset adds it to the outer WHERE).
FREE_PLAN_RANGE = DEFINITIONS_RANGE.replace(" GROUP BY", " AND plan IN ('free') GROUP BY")
MULTI = ("avg(CASE WHEN devices > 1 THEN 1.0 ELSE 0.0 END), "
         "avg(CASE WHEN amplitude_sessions > 1 THEN 1.0 ELSE 0.0 END)")
TABLES = ("amplitude_events", "amplitude_sessions", "amplitude_user_sessions")
#: name -> (SQLite SQL for amplitude:// and the plain table, DuckDB SQL)
QUERIES = {
    "sessions: KPIs": (
        f"SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) {SESSIONS}",
        f"SELECT count(*), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) {SESSIONS}",
    ),
    "sessions: per day": (
        f"SELECT date(session_start), avg(length_s), median(length_s), percentile(length_s, 95) {SESSIONS} "
        "GROUP BY 1",
        f"SELECT CAST(session_start AS DATE), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) "
        f"{SESSIONS} GROUP BY 1",
    ),
    "sessions: per plan": (
        f"SELECT json_extract(user_properties, '$.plan'), avg(length_s), median(length_s), "
        f"percentile(length_s, 95) {SESSIONS} GROUP BY 1",
        f"SELECT json_extract_string(user_properties, '$.plan'), avg(length_s), median(length_s), "
        f"quantile_cont(length_s, 0.95) {SESSIONS} GROUP BY 1",
    ),
    "sessions: length buckets": (
        f"SELECT length_bucket, count(*) {SESSIONS} GROUP BY 1",
        f"SELECT length_bucket, count(*) {SESSIONS} GROUP BY 1",
    ),
    "user sessions: KPIs, 30 min": (
        f"SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) {USER_SESSIONS} = 30",
        f"SELECT count(*), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) {USER_SESSIONS} = 30",
    ),
    "user sessions: 30 and 60 min": (
        f"SELECT gap_minutes, avg(length_s), median(length_s), percentile(length_s, 95), "
        f"count(*) * 1.0 / count(DISTINCT amplitude_id) {USER_SESSIONS} IN (30, 60) GROUP BY 1",
        f"SELECT gap_minutes, avg(length_s), median(length_s), quantile_cont(length_s, 0.95), "
        f"count(*) * 1.0 / count(DISTINCT amplitude_id) {USER_SESSIONS} IN (30, 60) GROUP BY 1",
    ),
    "user sessions: multi-device": (f"SELECT {MULTI} {USER_SESSIONS} = 30", f"SELECT {MULTI} {USER_SESSIONS} = 30"),
    "definitions: length by definition": (
        f"SELECT definition, avg(length_s), median(length_s), percentile(length_s, 95) FROM ({DEFINITIONS}) "
        f"{DEFINITIONS_RANGE}",
        f"SELECT definition, avg(length_s), median(length_s), quantile_cont(length_s, 0.95) FROM ({DEFINITIONS}) "
        f"{DEFINITIONS_RANGE}",
    ),
    "definitions: median per day": (
        f"SELECT definition, date(session_start), median(length_s) FROM ({DEFINITIONS}) {DEFINITIONS_RANGE}, 2",
        f"SELECT definition, CAST(session_start AS DATE), median(length_s) FROM ({DEFINITIONS}) "
        f"{DEFINITIONS_RANGE}, 2",
    ),
    "definitions: sessions per user per day": (
        f"SELECT definition, count(*) * 1.0 / count(DISTINCT amplitude_id || ' ' || date(session_start)) "
        f"FROM ({DEFINITIONS}) {DEFINITIONS_RANGE}",
        f"SELECT definition, count(*) * 1.0 / count(DISTINCT CAST(amplitude_id AS VARCHAR) || ' ' || "
        f"CAST(CAST(session_start AS DATE) AS VARCHAR)) FROM ({DEFINITIONS}) {DEFINITIONS_RANGE}",
    ),
    "definitions: multi-device and merged": (
        f"SELECT definition, {MULTI} FROM ({DEFINITIONS}) {DEFINITIONS_RANGE}",
        f"SELECT definition, {MULTI} FROM ({DEFINITIONS}) {DEFINITIONS_RANGE}",
    ),
    "definitions: median per day, plan": (
        f"SELECT definition, date(session_start), median(length_s) FROM ({DEFINITIONS}) {FREE_PLAN_RANGE}, 2",
        f"SELECT definition, CAST(session_start AS DATE), median(length_s) FROM ({DEFINITIONS}) "
        f"{FREE_PLAN_RANGE}, 2",
    ),
    "events: count(*)": (f"SELECT count(*) {EVENTS}", f"SELECT count(*) {EVENTS}"),
    "events: per event_type": (
        f"SELECT event_type, count(*) {EVENTS} GROUP BY 1",
        f"SELECT event_type, count(*) {EVENTS} GROUP BY 1",
    ),
    "events: daily distinct users": (
        f"SELECT date(event_time), count(DISTINCT amplitude_id) {EVENTS} GROUP BY 1",
        f"SELECT CAST(event_time AS DATE), count(DISTINCT amplitude_id) {EVENTS} GROUP BY 1",
    ),
    "events: SELECT * one day": (f"SELECT * {ONE_DAY}", f"SELECT * {ONE_DAY}"),
}


def prepare(work: Path, events: int, days: int) -> Path:
    """Generate (once) and load the dataset; returns the cache dir."""
    zip_path = work / f"export-{events}-{days}.zip"
    if not zip_path.exists():
        summary = generate_dataset(work / f"data-{events}-{days}", FIRST_DAY, FIRST_DAY + timedelta(days=days),
                                   events=events)
        write_export_zip(work / f"data-{events}-{days}", zip_path)
        print(f"generated {summary.events} events, {summary.sessions} sessions")
    cache_dir = work / f"cache-{events}-{days}"
    store = HourStore(cache_dir, "https://amplitude.com", API_KEY)
    if not store.files([FIRST_DAY], datetime.now(UTC)):
        loaded = load_archive(store, zip_path)
        store.remember_secret(SECRET)
        print(f"loaded {loaded} events into the store")
    return cache_dir


def all_rows(cache_dir: Path, days: int) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Every stored event, the sessions and the user sessions (each gap of ``GAPS``) built from them, as the
    baselines hold them."""
    store = HourStore(cache_dir, "https://amplitude.com", API_KEY)
    hours = list(hour_range(FIRST_DAY - timedelta(hours=1), FIRST_DAY + timedelta(days=days + 3)))
    events = store.read(hours, datetime.now(UTC))
    user_events = events.select(list(USER_EVENT_COLUMNS))
    user_sessions = pa.concat_tables([build_user_sessions(user_events, gap, SINCE) for gap in GAPS])
    return events, build_sessions(events.select(list(EVENT_COLUMNS))), user_sessions


def in_range(name: str, table: pa.Table) -> pa.Table:
    """The rows of a baseline table inside :data:`RANGE` (events by ``event_time``, sessions by their start)."""
    column = table["event_time" if name == "amplitude_events" else "session_start"]
    start, end = (pa.scalar(bound, column.type) for bound in RANGE)
    return table.filter(pc.and_(pc.greater_equal(column, start), pc.less(column, end)))


def sqlite_baseline(path: Path, cache_dir: Path, days: int, ranged: bool = False) -> None:
    """A file database with plain tables holding the same rows as SQLite receives them from amplitude://
    (``ranged``: only those inside :data:`RANGE`)."""
    if path.exists():
        listed = apsw.Connection(str(path)).execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if {name for (name,) in listed} == set(TABLES):
            return
        path.unlink()  # made before a table was added
    connection = apsw.Connection(str(path))
    for name, table in zip(TABLES, all_rows(cache_dir, days), strict=True):
        table = in_range(name, table) if ranged else table
        types = {pa.types.is_integer: "INTEGER", pa.types.is_floating: "REAL", pa.types.is_boolean: "BOOLEAN"}
        columns = ", ".join(
            f'"{f.name}" ' + next((sql for test, sql in types.items() if test(f.type)),
                                  "TIMESTAMP" if pa.types.is_timestamp(f.type) else "TEXT")
            for f in table.schema
        )
        connection.execute(f"CREATE TABLE {name} ({columns})")
        marks = ", ".join("?" * table.num_columns)
        with connection:
            for batch in table.to_batches(50_000):
                values = [sqlite_values(column) for column in batch.columns]
                connection.executemany(f"INSERT INTO {name} VALUES ({marks})", zip(*values, strict=True))
    connection.close()


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory, this one's by default (``VmHWM``: unlike ``ru_maxrss``, not inherited
    across exec)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def run_worker(args: argparse.Namespace) -> None:
    """Run the given queries (first run, then ``repeat`` more) and print times and peak memory as JSON."""
    # A Superset process has pandas loaded; pyarrow imports it on its first conversion of a Python or numpy
    # sequence (0.3-0.7 s here), which would otherwise land in the first query's time.
    import pandas  # noqa: F401

    if args.sqlite:
        connection = apsw.Connection(args.sqlite)
        execute = lambda sql: connection.execute(sql).fetchall()  # noqa: E731
    else:
        from sqlalchemy import create_engine, text

        engine = create_engine(f"amplitude://{API_KEY}:{SECRET}@/?offline=true&cache_dir={quote(args.cache, safe='')}")

        def execute(sql: str) -> list:
            with engine.connect() as connection:  # a new connection per query, as Superset makes them
                return connection.execute(text(sql)).fetchall()
    results = {name: time_query(execute, QUERIES[name][0], args.repeat) for name in args.query}
    print(json.dumps({"results": results, "peak_rss_mb": peak_rss_mb()}))


def worker(args: argparse.Namespace, names: list[str], xdg: str | None = None, **options: str) -> dict:
    """Run ``names`` in a new worker process (``xdg``: its per-user cache folder) and return its report."""
    command = [sys.executable, __file__, "--worker", "--repeat", str(args.repeat)]
    for name in names:
        command += ["--query", name]
    for option, value in options.items():
        command += [f"--{option}", value]
    env = {**os.environ, "XDG_CACHE_HOME": xdg} if xdg else None
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout)


def bench_scale(args: argparse.Namespace, events: int) -> dict[str, dict]:
    """Every query at one scale: amplitude:// (one process per query), the SQLite table, DuckDB."""
    cache_dir = prepare(args.work, events, args.days)
    sqlite_path = args.work / f"baseline-{events}-{args.days}.sqlite"
    sqlite_baseline(sqlite_path, cache_dir, args.days)
    ranged_path = args.work / f"baseline-in-range-{events}-{args.days}.sqlite"
    sqlite_baseline(ranged_path, cache_dir, args.days, ranged=True)
    memory = duckdb.connect()
    for name, table in zip(TABLES, all_rows(cache_dir, args.days), strict=True):
        memory.register(name, table)
    args_once = argparse.Namespace(**{**vars(args), "repeat": 0})
    # sessions and user sessions (both gaps) built and kept beside the hours
    worker(args_once, ["sessions: KPIs", "user sessions: 30 and 60 min"], cache=str(cache_dir))
    figures = {}
    names = args.query or list(QUERIES)
    for name in names:
        ours = worker(args, [name], cache=str(cache_dir))
        plain = worker(args, [name], sqlite=str(sqlite_path))
        ranged = worker(args, [name], sqlite=str(ranged_path))
        duck = time_query(lambda sql: memory.execute(sql).fetchall(), QUERIES[name][1], args.repeat)
        result = ours["results"][name]
        assert result["rows"] == plain["results"][name]["rows"] == ranged["results"][name]["rows"] == duck["rows"], name
        figures[name] = {**result, "sqlite": plain["results"][name]["repeated"],
                         "sqlite_cpu": plain["results"][name]["repeated_cpu"],
                         "in_range_cpu": ranged["results"][name]["repeated_cpu"],
                         "duckdb": duck["repeated"], "peak_rss_mb": ours["peak_rss_mb"]}
    together = worker(args, names, cache=str(cache_dir))
    figures["all queries, one process"] = {"peak_rss_mb": together["peak_rss_mb"]}
    return figures


def print_scale(events: int, figures: dict[str, dict]) -> None:
    print(f"\n{events:,} events generated; queries over 25 of 30 days; times in seconds (median of repeats)")
    print(f"{'query':40s} {'first':>6s} {'repeated':>9s} {'rep cpu':>8s} {'sqlite':>7s} {'sq cpu':>7s} "
          f"{'rng cpu':>7s} {'duckdb':>7s} {'rep/sqlite':>10s} {'rep/duckdb':>10s} {'peak MB':>8s} {'rows':>6s}")
    for name, f in figures.items():
        if "first" not in f:
            print(f"{name:40s} {'':87s} {f['peak_rss_mb']:8.0f}")
            continue
        print(f"{name:40s} {f['first']:6.3f} {f['repeated']:9.3f} {f['repeated_cpu']:8.3f} {f['sqlite']:7.3f} "
              f"{f['sqlite_cpu']:7.3f} {f['in_range_cpu']:7.3f} {f['duckdb']:7.3f} "
              f"{f['repeated'] / f['sqlite']:9.2f}x {f['repeated'] / f['duckdb']:9.1f}x {f['peak_rss_mb']:8.0f} "
              f"{f['rows']:6d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-bench"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--query", action="append", default=[], choices=list(QUERIES),
                        help="run only this query (repeatable)")
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--sqlite", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    curve = {}
    for events in args.scales:
        curve[events] = bench_scale(args, events)
        print_scale(events, curve[events])
    if len(args.scales) > 1:
        low, high = args.scales[0], args.scales[-1]
        print(f"\nscaling {high / low:.0f}x data: growth of each figure ({high:,} vs {low:,} events)")
        print(f"{'query':40s} {'first':>6s} {'repeated':>9s} {'peak MB':>8s}")
        for name, f in curve[high].items():
            base = curve[low][name]
            cells = [f"{f[k] / base[k]:5.2f}x" if k in f else "" for k in ("first", "repeated", "peak_rss_mb")]
            print(f"{name:40s} {cells[0]:>6s} {cells[1]:>9s} {cells[2]:>8s}")


if __name__ == "__main__":
    main()
