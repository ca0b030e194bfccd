"""TEMPORARY: a folder lake in the issue's fixed layout, written from an hour store, until the lake publisher
(branch ``lake``) is merged; then the engine tests publish with it and this module goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shillelagh_amplitude.sql.sessions import EVENT_COLUMNS, build_sessions
from shillelagh_amplitude.store.hour_store import HourStore


def _write_days(table: pa.Table, time_column: str, folder: Path, partition: str) -> None:
    """One Parquet file per UTC day of ``time_column``, the partition column in the path only."""
    days = pc.strftime(table[time_column], format="%Y-%m-%d")
    for day in sorted(set(days.to_pylist())):
        part = table.filter(pc.equal(days, day))
        target = folder / f"{partition}={day}"
        target.mkdir(parents=True)
        pq.write_table(part, target / "part-0.parquet", coerce_timestamps="us")


def write_lake(store: HourStore, lake: Path) -> None:
    """Every stored event and session of ``store`` into ``lake``."""
    first, last = store.stored_span()
    hours = [first + timedelta(hours=n) for n in range(int((last - first) / timedelta(hours=1)) + 1)]
    events = store.read(hours, datetime.now(UTC))
    _write_days(events, "event_time", lake / "amplitude_events", "event_date")
    _write_days(build_sessions(events.select(list(EVENT_COLUMNS))), "session_start", lake / "amplitude_sessions",
                "session_date")


def spark_ddl(lake: Path) -> list[str]:
    """Tables in database ``amplitude`` over the lake, their partitions registered."""
    statements = ["CREATE DATABASE IF NOT EXISTS amplitude"]
    for table in ("amplitude_events", "amplitude_sessions"):
        statements += [
            f"CREATE TABLE IF NOT EXISTS amplitude.{table} USING parquet "
            f"LOCATION '{(lake / table).as_uri()}'",
            f"MSCK REPAIR TABLE amplitude.{table} SYNC PARTITIONS",
            f"REFRESH TABLE amplitude.{table}",
        ]
    return statements


def duckdb_ddl(lake: Path) -> list[str]:
    """Views over the lake's Parquet files."""
    return [
        f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet('{lake / table}/*/*.parquet', "
        f"hive_partitioning = true, hive_types = {{'{key}': DATE}}, union_by_name = true)"
        for table, key in (("amplitude_events", "event_date"), ("amplitude_sessions", "session_date"))
    ]
