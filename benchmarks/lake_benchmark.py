"""The eight queries of ``query_benchmark.py`` through amplitude://, DuckDB over the lake and DuckDB over the same rows
in memory (the floor), plus the cost of publishing the lake against a cold sync; at each scale, in one run.

    python benchmarks/lake_benchmark.py [--scales 1000000 10000000] [--repeat 5] [--work /tmp/amplitude-lake-bench]
                                        [--engines "amplitude://" "duckdb lake" "spark lake"] [--publishing-only]

For each scale the dataset is generated once (``query_benchmark.prepare``). Then:
- a cold sync: a new process downloads every upload hour from the Export API emulator (serving the generated files)
  into an empty store, then publishes the lake from it; its times and peak RSS are the sync's, publishing included.
  The CPU time (user + system) of the sync process, its decode workers and the emulator (this process) during the
  sync, and of the publisher, say how much of the two cores each leaves free;
  A second run of the publisher (nothing changed) gives the cost of an incremental run with no new hours;
- bytes on disk: the hour store (Arrow IPC + zstd, one file per upload hour) and the lake (Parquet + zstd);
- queries: each engine runs each query in a new process (first run, then the median of ``--repeat`` more) and
  reports its peak RSS (Spark local[2]: a new Python process and its JVM, the peak RSS of both added; the tables
  of ``amplitude-lake ddl --engine spark``, the SQL of :data:`LAKE_QUERIES`); the floor runs
  in this process, over the same rows loaded into DuckDB's own in-memory tables.

Engines are the functions in :data:`ENGINES` (name -> function(args, cache_dir, lake, query names) -> figures per
query): another engine is added there and gets its columns in the table; ``--engines`` picks some.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_benchmark import API_KEY, EVENTS, FIRST_DAY, ONE_DAY, QUERIES, SECRET, SESSIONS, peak_rss_mb, prepare  # noqa: E402,I001
from query_benchmark import in_range_sql  # noqa: E402
from query_benchmark import worker as amplitude_worker  # noqa: E402
from spark_lake import jvm_peak_rss_mb, spark_over_lake  # noqa: E402
from timing import time_query  # noqa: E402

from shillelagh_amplitude.export.client import ExportClient  # noqa: E402
from shillelagh_amplitude.export.loader import fill  # noqa: E402
from shillelagh_amplitude.lake.ddl import ddl  # noqa: E402
from shillelagh_amplitude.lake.publish import publish  # noqa: E402
from shillelagh_amplitude.sample.emulator import ExportEmulator  # noqa: E402
from shillelagh_amplitude.store.hour_store import HourStore  # noqa: E402

#: Figures of one query: first run, median repeated run (s), peak RSS of its process (MB), rows returned.
Figures = dict[str, float]
#: The same range on the partition column, so engines read only the partitions of the range (a range on
#: ``event_time`` alone reads the column of every file to apply it).
DAYS = f"AND {in_range_sql('event_date')}"
#: The eight queries over the lake: name -> (DuckDB SQL, Spark SQL). The SQL a lake user writes: the events
#: queries add the same range on ``event_date`` and group days by it (``event_date`` is the UTC date of
#: ``event_time``); Spark's percentiles are exact (``percentile``), its dates in the session time zone, UTC.
LAKE_QUERIES = {
    "sessions: KPIs": (QUERIES["sessions: KPIs"][1],
                       f"SELECT count(*), avg(length_s), percentile(length_s, 0.5), percentile(length_s, 0.95) "
                       f"{SESSIONS}"),
    "sessions: per day": (QUERIES["sessions: per day"][1],
                          f"SELECT CAST(session_start AS DATE), avg(length_s), percentile(length_s, 0.5), "
                          f"percentile(length_s, 0.95) {SESSIONS} GROUP BY 1"),
    "sessions: per plan": (QUERIES["sessions: per plan"][1],
                           f"SELECT get_json_object(user_properties, '$.plan'), avg(length_s), "
                           f"percentile(length_s, 0.5), percentile(length_s, 0.95) {SESSIONS} GROUP BY 1"),
    "sessions: length buckets": (QUERIES["sessions: length buckets"][1],
                                 f"SELECT length_bucket, count(*) {SESSIONS} GROUP BY 1"),
    "events: count(*)": (f"SELECT count(*) {EVENTS} {DAYS}",) * 2,
    "events: per event_type": (f"SELECT event_type, count(*) {EVENTS} {DAYS} GROUP BY 1",) * 2,
    "events: daily distinct users": (f"SELECT event_date, count(DISTINCT amplitude_id) {EVENTS} {DAYS} GROUP BY 1",)
    * 2,
    "events: SELECT * one day": (f"SELECT * {ONE_DAY} AND event_date = '2026-09-10'",) * 2,
}


def _hours(days: int) -> tuple[datetime, datetime]:
    """The upload hours of the generated dataset (its late uploads included)."""
    return FIRST_DAY - timedelta(hours=1), FIRST_DAY + timedelta(days=days + 3)


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder``, each hard-linked file once (the lake's pins are hard links)."""
    files = {(stat.st_dev, stat.st_ino): stat.st_size for stat in (path.stat() for path in folder.rglob("*")
                                                                    if path.is_file())}
    return sum(files.values())


# --- workers (one new process each) --------------------------------------------------------------------------------
def run_sync_worker(args: argparse.Namespace) -> None:
    """A cold sync from the emulator into an empty store, then the lake published from it; times and peak RSS."""
    store = HourStore(args.cache, args.base_url, API_KEY)
    first, last = _hours(args.days)
    began = time.perf_counter()
    report = fill(store, ExportClient(API_KEY, SECRET, base_url=args.base_url), first, last, now=datetime.now(UTC))
    sync_s = time.perf_counter() - began
    sync_cpu_s = _cpu_s(resource.RUSAGE_SELF)
    published = publish(store, args.lake, first=first, last=last)
    publish_cpu_s = _cpu_s(resource.RUSAGE_SELF) - sync_cpu_s
    again = publish(store, args.lake, first=first, last=last)
    print(json.dumps({"sync_s": sync_s, "events": report.events, "publish_s": published.seconds,
                      "partitions": len(published.written), "republish_s": again.seconds,
                      "peak_rss_mb": peak_rss_mb(), "sync_cpu_s": sync_cpu_s,
                      "decode_cpu_s": _cpu_s(resource.RUSAGE_CHILDREN), "publish_cpu_s": publish_cpu_s}))


def _cpu_s(who: int) -> float:
    """User + system CPU seconds of this process (``RUSAGE_SELF``) or its ended children (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_lake_worker(args: argparse.Namespace) -> None:
    """The queries through one engine over the lake, with the statements of ``amplitude-lake ddl``: DuckDB's views
    in an in-memory database, or Spark SQL in local[2] (``spark_lake.spark_over_lake``)."""
    with tempfile.TemporaryDirectory() as home:
        if args.worker == "duckdb-lake":
            connection = duckdb.connect()
            for statement in ddl(args.lake, "duckdb"):
                connection.execute(statement)
            run, column, stop = (lambda sql: connection.execute(sql).fetchall()), 0, connection.close
        else:
            spark = spark_over_lake(args.lake, home, "lake-benchmark")
            run, column, stop = (lambda sql: spark.sql(sql).collect()), 1, spark.stop
        results = {name: time_query(run, LAKE_QUERIES[name][column], args.repeat) for name in args.query}
        jvm_mb = jvm_peak_rss_mb(spark) if column == 1 else 0.0  # the JVM's peak, beside this process's
        stop()
    print(json.dumps({"results": results, "peak_rss_mb": peak_rss_mb() + jvm_mb}))


def _worker(args: argparse.Namespace, mode: str, **options: str) -> dict:
    command = [sys.executable, __file__, "--worker", mode, "--repeat", str(args.repeat), "--days", str(args.days)]
    for option, value in options.items():
        if option == "query":
            for name in value:
                command += ["--query", name]
        else:
            command += [f"--{option.replace('_', '-')}", value]
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


# --- engines --------------------------------------------------------------------------------------------------------
def amplitude_engine(args: argparse.Namespace, cache_dir: Path, lake: Path, names: list[str]) -> dict[str, Figures]:
    """amplitude:// over the hour store (``query_benchmark``'s worker: one process per query)."""
    once = argparse.Namespace(**{**vars(args), "repeat": 0})
    amplitude_worker(once, [names[0]], cache=str(cache_dir))  # sessions built and kept beside the hours, as a sync
    figures = {}
    for name in names:
        report = amplitude_worker(args, [name], cache=str(cache_dir))
        figures[name] = {**report["results"][name], "peak_rss_mb": report["peak_rss_mb"]}
    return figures


def lake_engine(mode: str) -> Callable[[argparse.Namespace, Path, Path, list[str]], dict[str, Figures]]:
    """An engine over the lake's Parquet: ``mode``'s worker, one new process per query."""
    def engine(args: argparse.Namespace, cache_dir: Path, lake: Path, names: list[str]) -> dict[str, Figures]:
        figures = {}
        for name in names:
            report = _worker(args, mode, lake=str(lake), query=[name])
            figures[name] = {**report["results"][name], "peak_rss_mb": report["peak_rss_mb"]}
        return figures
    return engine


#: name -> function(args, hour store, lake, query names) -> figures per query. Add engines here.
ENGINES: dict[str, Callable[[argparse.Namespace, Path, Path, list[str]], dict[str, Figures]]] = {
    "amplitude://": amplitude_engine,
    "duckdb lake": lake_engine("duckdb-lake"),  # DuckDB's views
    "spark lake": lake_engine("spark-lake"),  # Spark SQL local[2], a new JVM per query
}


def floor(args: argparse.Namespace, lake: Path) -> dict[str, Figures]:
    """DuckDB over the same rows loaded into its own in-memory tables, in this process (at 10M events the rows as
    Arrow tables would not fit beside the other engines on this machine; DuckDB's tables are compressed)."""
    connection = duckdb.connect()
    for statement in ddl(lake, "duckdb"):
        connection.execute(statement.replace("CREATE OR REPLACE VIEW", "CREATE TABLE"))
    run = lambda sql: connection.execute(sql).fetchall()  # noqa: E731
    figures = {name: time_query(run, sql, args.repeat) for name, (sql, _) in LAKE_QUERIES.items()}
    return figures


def bench_scale(args: argparse.Namespace, events: int) -> dict:
    cache_dir = prepare(args.work, events, args.days)
    synced, lake = args.work / f"sync-cache-{events}-{args.days}", args.work / f"lake-{events}-{args.days}"
    shutil.rmtree(synced, ignore_errors=True)
    shutil.rmtree(lake, ignore_errors=True)
    with ExportEmulator(args.work / f"data-{events}-{args.days}", api_key=API_KEY, secret_key=SECRET) as emulator:
        before = os.times()
        sync = _worker(args, "sync", cache=str(synced), lake=str(lake), base_url=emulator.base_url)
        after = os.times()
    sync["emulator_cpu_s"] = after.user - before.user + after.system - before.system
    sync["store_mb"] = folder_bytes(synced) / 1e6
    sync["lake_mb"] = folder_bytes(lake) / 1e6
    shutil.rmtree(synced, ignore_errors=True)
    if args.publishing_only:
        return {"sync": sync, "engines": {}}
    names = list(LAKE_QUERIES)
    engines = {engine: ENGINES[engine](args, cache_dir, lake, names) for engine in args.engines}
    engines["duckdb memory"] = floor(args, lake)
    for name in names:
        rows = {engine: figures[name]["rows"] for engine, figures in engines.items()}
        assert len(set(rows.values())) == 1, (name, rows)
    return {"sync": sync, "engines": engines}


def print_scale(events: int, days: int, figures: dict) -> None:
    sync = figures["sync"]
    print(f"\n{events:,} events generated ({sync['events']:,} synced), {days} days; times in seconds")
    print(f"cold sync {sync['sync_s']:.1f} s, publishing the lake {sync['publish_s']:.1f} s "
          f"({sync['publish_s'] / sync['sync_s']:.0%} of the sync; {sync['partitions']} partitions), republishing "
          f"with no new hours {sync['republish_s']:.2f} s; peak RSS of the sync process {sync['peak_rss_mb']:.0f} MB")
    sync_cpu = sync["sync_cpu_s"] + sync["decode_cpu_s"] + sync["emulator_cpu_s"]
    print(f"CPU: the sync {sync_cpu:.0f} s (sync process {sync['sync_cpu_s']:.1f}, decode workers "
          f"{sync['decode_cpu_s']:.1f}, emulator {sync['emulator_cpu_s']:.1f}: {sync_cpu / sync['sync_s']:.2f} cores "
          f"busy of {os.cpu_count()}), publishing {sync['publish_cpu_s']:.0f} s "
          f"({sync['publish_cpu_s'] / sync['publish_s']:.2f} cores)")
    print(f"on disk: hour store {sync['store_mb']:.0f} MB, lake {sync['lake_mb']:.0f} MB")
    if not figures["engines"]:
        return
    engines = figures["engines"]
    measured = [engine for engine in engines if engine != "duckdb memory"]
    print(f"{'query':30s}" + "".join(f" | {engine:>24s}" for engine in measured) +
          f" | {'duckdb memory':>13s} | {'lake/floor':>10s}")
    print(f"{'':30s}" + f" | {'first':>7s} {'rep':>7s} {'MB':>8s}" * len(measured) + f" | {'rep':>13s} |")
    for name in LAKE_QUERIES:
        cells = "".join(f" | {engines[e][name]['first']:7.3f} {engines[e][name]['repeated']:7.3f} "
                        f"{engines[e][name]['peak_rss_mb']:8.0f}" for e in measured)
        floor_ = engines["duckdb memory"][name]["repeated"]
        ratio = f"{engines['duckdb lake'][name]['repeated'] / floor_:9.1f}x" if "duckdb lake" in engines else "-"
        print(f"{name:30s}{cells} | {floor_:13.3f} | {ratio:>10s}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/amplitude-lake-bench"))
    parser.add_argument("--engines", nargs="+", choices=list(ENGINES), default=list(ENGINES))
    parser.add_argument("--publishing-only", action="store_true", help="the cold sync and publishing, no queries")
    parser.add_argument("--worker", choices=["sync", "duckdb-lake", "spark-lake"], help=argparse.SUPPRESS)
    parser.add_argument("--query", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "sync":
        run_sync_worker(args)
        return
    if args.worker in ("duckdb-lake", "spark-lake"):
        run_lake_worker(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    for events in args.scales:
        print_scale(events, args.days, bench_scale(args, events))


if __name__ == "__main__":
    main()
