"""The bundled dashboard's chart queries over the lake through DuckDB, as Superset sends them: a new read-only
connection to the publisher's views file per query, the chart's metrics over its dataset's SQL (the DuckDB
bundle's), grouped by its x-axis (days for a time axis) and group-by columns, over the benchmarks' 25 days.

    python benchmarks/lake_dashboard_benchmark.py LAKE [--repeat 3]

LAKE is a lake published by ``lake_benchmark.py`` (e.g. /tmp/amplitude-lake-bench/lake-10000000-30). Charts of
datasets the lake bundle has not (the *Session definition* section) are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import time_query  # noqa: E402

from shillelagh_amplitude.lake.pins import VIEWS_FILE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboards"))
import build  # noqa: E402

RANGE = "session_start >= '2026-09-03' AND session_start < '2026-09-28'"


def chart_queries() -> dict[str, str]:
    """Each chart's query over the DuckDB bundle's datasets."""
    files = build.bundle_files(engine="duckdb")
    datasets = {config["table_name"].removesuffix("_duckdb"): config for path, config in files.items()
                if path.startswith("datasets/")}
    queries = {}
    for path in sorted((ROOT / "dashboards/session_length/charts").glob("*.yaml")):
        chart = yaml.safe_load(path.read_text())
        dataset = datasets.get(chart["dataset"])
        if dataset is None:
            continue
        params = chart["params"]
        expressions = {metric["metric_name"]: metric["expression"] for metric in dataset["metrics"]}
        metrics = [expressions[name] for name in params.get("metrics", [params.get("metric")])]
        columns = [*([params["x_axis"]] if "x_axis" in params else []), *params.get("groupby", [])]
        columns = [f"date_trunc('day', {c})" if c == "session_start" else c for c in columns]
        where = f" WHERE {RANGE}" if chart["dataset"] == "sessions" else ""
        group = f" GROUP BY {', '.join(str(i + 1) for i in range(len(columns)))}" if columns else ""
        queries[path.stem] = f"SELECT {', '.join([*columns, *metrics])} FROM ({dataset['sql']}) AS s{where}{group}"
    return queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("lake", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    views = args.lake / VIEWS_FILE

    def run(sql: str) -> list:
        with duckdb.connect(str(views), read_only=True) as connection:  # one per query, as Superset's NullPool
            return connection.execute(sql).fetchall()

    print(f"{'chart':34s} {'first':>7s} {'repeated':>9s} {'rows':>5s}")
    slowest = 0.0
    for name, sql in chart_queries().items():
        figures = time_query(run, sql, args.repeat)
        slowest = max(slowest, figures["first"], figures["repeated"])
        print(f"{name:34s} {figures['first']:7.3f} {figures['repeated']:9.3f} {figures['rows']:5d}")
    print(f"slowest: {slowest:.3f} s")


if __name__ == "__main__":
    main()
