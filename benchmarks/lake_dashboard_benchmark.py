"""The bundled dashboard's chart queries over the lake, as Superset sends them: the chart's metrics over its dataset's
SQL (the engine's bundle), grouped by its x-axis (days for a time axis) and group-by columns, over the benchmarks'
25 days (every chart but the unfiltered *Data complete through*), through one engine or several:

- ``duckdb``: a new read-only connection to the publisher's views file per query (Superset's NullPool);
- ``spark``: Spark SQL local[2] over the tables of ``amplitude-lake ddl --engine spark``, one session for every
  chart, as the long-running Thrift Server that serves Superset (``spark_lake.spark_over_lake``).

    python benchmarks/lake_dashboard_benchmark.py LAKE [--engine duckdb spark] [--repeat 3]

LAKE is a lake published by ``lake_benchmark.py`` or ``amplitude-lake publish``. Each engine runs in a new process,
its charts one after the other (the first run, then the median of ``--repeat`` more), and reports its peak RSS
(Spark: the driver's JVM, and the Python process beside it). Charts of datasets the lake has no table for (the
*Session definition* section over a lake without ``amplitude_user_sessions``) are left out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_benchmark import in_range_sql, peak_rss_mb  # noqa: E402
from spark_lake import jvm_peak_rss_mb, spark_over_lake  # noqa: E402
from timing import time_query  # noqa: E402

from shillelagh_amplitude.lake.pins import VIEWS_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboards"))
import build  # noqa: E402

ENGINES = ("duckdb", "spark")
RANGE = in_range_sql("session_start")
#: The dashboard's target for a chart's query (issue 17), in seconds.
TARGET_S = 10.0


def chart_queries(engine: str, lake: Path) -> dict[str, str]:
    """Each chart's query over ``engine``'s bundle's datasets (charts reading a table the lake lacks left out)."""
    files = build.bundle_files(engine=engine)
    datasets = {config["table_name"].removesuffix(f"_{engine}"): config for path, config in files.items()
                if path.startswith("datasets/")}
    unfiltered = build.load(build.SOURCES / "dashboard.yaml")["unfiltered_charts"]
    missing = [table for table in ("amplitude_user_sessions",) if not (lake / table).is_dir()]
    queries = {}
    for path in sorted((build.SOURCES / "charts").glob("*.yaml")):
        chart = yaml.safe_load(path.read_text())
        dataset = datasets.get(chart["dataset"])
        if dataset is None or any(table in dataset["sql"] for table in missing):
            continue
        params = chart["params"]
        expressions = {metric["metric_name"]: metric["expression"] for metric in dataset["metrics"]}
        metrics = [expressions[name] for name in params.get("metrics", [params.get("metric")])]
        columns = [*([params["x_axis"]] if "x_axis" in params else []), *params.get("groupby", [])]
        columns = [f"date_trunc('day', {c})" if c == "session_start" else c for c in columns]
        where = "" if path.stem in unfiltered else f" WHERE {RANGE}"
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(columns)))}" if columns else ""
        queries[path.stem] = f"SELECT {', '.join([*columns, *metrics])} FROM ({dataset['sql']}) AS s{where}{group}"
    return queries


def run_worker(args: argparse.Namespace) -> None:
    """Every chart's query through ``args.worker``; prints the figures per chart and the peak RSS as JSON."""
    queries = chart_queries(args.worker, args.lake)
    if args.worker == "duckdb":
        views = args.lake / VIEWS_FILE

        def run(sql: str) -> list:
            with duckdb.connect(str(views), read_only=True) as connection:  # one per query, as Superset's NullPool
                return connection.execute(sql).fetchall()

        charts = {name: time_query(run, sql, args.repeat) for name, sql in queries.items()}
        print(json.dumps({"charts": charts, "peak_rss_mb": {"process": peak_rss_mb()}}))
        return
    with tempfile.TemporaryDirectory() as home:
        spark = spark_over_lake(args.lake, home, "lake-dashboard-benchmark")
        charts = {name: time_query(lambda sql: spark.sql(sql).collect(), sql, args.repeat)
                  for name, sql in queries.items()}
        memory = {"driver JVM": jvm_peak_rss_mb(spark), "Python": peak_rss_mb()}
        spark.stop()
    print(json.dumps({"charts": charts, "peak_rss_mb": memory}))


def run_engine(args: argparse.Namespace, engine: str) -> dict:
    """``engine``'s worker in a new process (its output on stderr passed through)."""
    command = [sys.executable, __file__, str(args.lake), "--worker", engine, "--repeat", str(args.repeat)]
    output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(output.splitlines()[-1])


def print_table(engines: dict[str, dict]) -> None:
    """One row per chart: each engine's first and repeated times (s) and rows, and with two engines or more the
    last one's repeated time over the first one's; then each engine's slowest time, charts over target, peak RSS."""
    names = list(engines)
    compared = f" | {names[-1]}/{names[0]}" if len(names) > 1 else ""
    print(f"{'chart':34s}" + "".join(f" | {name + ' first':>13s} {'repeated':>9s} {'rows':>5s}" for name in names)
          + compared)
    for chart in engines[names[0]]["charts"]:
        figures = [engines[name]["charts"][chart] for name in names]
        cells = "".join(f" | {f['first']:13.3f} {f['repeated']:9.3f} {f['rows']:5d}" for f in figures)
        ratio = f" | {figures[-1]['repeated'] / figures[0]['repeated']:{len(compared) - 4}.1f}x" if compared else ""
        print(f"{chart:34s}{cells}{ratio}")
    for name, figures in engines.items():
        times = [time for chart in figures["charts"].values() for time in (chart["first"], chart["repeated"])]
        over = [chart for chart, f in figures["charts"].items() if max(f["first"], f["repeated"]) > TARGET_S]
        memory = ", ".join(f"{part} {mb:.0f} MB" for part, mb in figures["peak_rss_mb"].items())
        print(f"{name}: slowest {max(times):.3f} s; over {TARGET_S:.0f} s: {', '.join(over) or 'none'}; "
              f"peak RSS {memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake", type=Path)
    parser.add_argument("--engine", nargs="+", choices=ENGINES, default=["duckdb"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.lake = args.lake.absolute()
    if args.worker:
        run_worker(args)
        return
    print_table({engine: run_engine(args, engine) for engine in args.engine})


if __name__ == "__main__":
    main()
