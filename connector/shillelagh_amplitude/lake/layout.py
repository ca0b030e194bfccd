"""The lake's fixed layout: which tables, where their partitions and files live, their Arrow/Parquet schemas, and
which upload hours feed each partition.

``<lake>/amplitude_events/event_date=YYYY-MM-DD/part-0.parquet``: the events whose ``event_time`` falls on that UTC
day; ``<lake>/amplitude_sessions/session_date=YYYY-MM-DD/part-0.parquet``: the sessions that start on that UTC day;
``<lake>/amplitude_user_sessions/session_date=YYYY-MM-DD/part-0.parquet``: the user sessions at the default
30-minute gap that start on that UTC day.
Columns have the names and types of the SQL tables: TIMESTAMP as a Parquet timestamp in microseconds adjusted to
UTC, INTEGER as int64, REAL as double, BOOLEAN as boolean, JSON as UTF-8 text. The partition column is not stored
in the files (engines take it from the folder name). ``<lake>/amplitude_lake_status/part-0.parquet``: the lake's
status, one row, no partitions (:data:`STATUS_SCHEMA`). ``<lake>/_amplitude_lake.json`` is the publisher's manifest.

A partition is one file, always named ``part-0.parquet``, replaced whole: see :mod:`.publish` for why that is
atomic for every reader. Files being written are hidden (``.part-0.parquet.<id>.tmp``): Spark and Trino skip
names starting with ``.``, and no engine's ``*.parquet`` glob matches the ``.tmp`` ending (DuckDB skips nothing
by prefix). Each version is also linked under an immutable name for DuckDB (:mod:`.pins`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa

from ..hours import CLOCK_SKEW, HOUR, LOOKBACK
from ..schema import EVENT_SCHEMA, TIMESTAMP
from ..sql.sessions import MAX_LENGTH_S, SESSION_SCHEMA
from ..sql.user_sessions import USER_SESSION_SCHEMA

#: The one file of a partition.
PART_FILE = "part-0.parquet"
#: The publisher's manifest at the lake's root (a name starting with '_': no engine reads it as data).
MANIFEST = "_amplitude_lake.json"
#: Rows per Parquet row group: DuckDB parallelises per row group and is at its best from 100k rows on.
ROW_GROUP_ROWS = 128 * 1024
#: Timestamps are written in microseconds (pyarrow's default, nanoseconds, makes Spark refuse the table).
PARQUET_OPTIONS = {"compression": "zstd", "coerce_timestamps": "us", "allow_truncated_timestamps": False}


def parquet_options(schema: pa.Schema) -> dict:
    """The writer's options for a file of ``schema``: :data:`PARQUET_OPTIONS`; dictionary-encoding only the text
    columns (timestamps and numbers are nearly all distinct: their dictionaries were built then dropped, and plain
    values compress better; an events day at 1M events: 4.12 -> 3.59 MB, written in 20 % less time); statistics
    only for the other columns, which engines skip row groups by (a day's row group holds nearly every value of a
    text column; an events day at 1M events: written in 20 % less time, the same size)."""
    text = [field.name for field in schema if pa.types.is_string(field.type)]
    return {**PARQUET_OPTIONS, "use_dictionary": text,
            "write_statistics": [field.name for field in schema if field.name not in text]}


@dataclass(frozen=True)
class LakeTable:
    """One table of the lake: its folder, partition column, the time column dating a row, and its schema."""

    name: str
    partition_column: str
    time_column: str
    schema: pa.Schema
    #: How long after its day ends an upload hour can still add rows to a partition (besides ``late_hours``).
    reach: timedelta
    #: How long before its day (besides the clock skew) the upload hours a partition is built from begin.
    lookback: timedelta = timedelta(0)

    def partition(self, day: date) -> str:
        """``amplitude_events/event_date=2026-03-01``: the partition's folder, relative to the lake."""
        return f"{self.name}/{self.partition_column}={day.isoformat()}"

    def file(self, day: date) -> str:
        """The partition's file, relative to the lake."""
        return f"{self.partition(day)}/{PART_FILE}"

    def source_hours(self, day: date, late_hours: int) -> tuple[datetime, datetime]:
        """The first and last upload hour (inclusive) whose events can fall in the partition of ``day``.

        The same hours ``amplitude://`` reads for a query of that one day (``sql/adapter.py``, ``_upload_hours``):
        from one hour before the day (device clocks running ahead) through ``late_hours`` after its last hour,
        for sessions one more day (a session is dated by its start and lasts at most a day), and for user sessions
        from 48 h earlier (their look-back).
        """
        start = datetime.combine(day, time(), UTC)
        return start - CLOCK_SKEW - self.lookback, start + 23 * HOUR + timedelta(hours=late_hours) + self.reach


EVENTS = LakeTable("amplitude_events", "event_date", "event_time", EVENT_SCHEMA, timedelta(0))
SESSIONS = LakeTable("amplitude_sessions", "session_date", "session_start", SESSION_SCHEMA,
                     timedelta(seconds=MAX_LENGTH_S))
USER_SESSIONS = LakeTable("amplitude_user_sessions", "session_date", "session_start", USER_SESSION_SCHEMA,
                          timedelta(seconds=MAX_LENGTH_S), LOOKBACK)
TABLES = (EVENTS, SESSIONS, USER_SESSIONS)

#: The lake's status table: one file (``amplitude_lake_status/part-0.parquet``) of one row, replaced whole.
STATUS = "amplitude_lake_status"
#: ``data_complete_through``: the end of the newest upload hour the lake holds that the store holds as final
#: (:meth:`..store.hour_store.HourStore.newest_final_hour`, what ``amplitude://``'s metadata gives); NULL if none.
STATUS_SCHEMA = pa.schema([pa.field("data_complete_through", TIMESTAMP)])


def temp_name() -> str:
    """A hidden name for a partition file being written beside its place."""
    return f".{PART_FILE}.{uuid.uuid4().hex}.tmp"


def is_temp(name: str) -> bool:
    return name.startswith(f".{PART_FILE}.") and name.endswith(".tmp")


def days_between(first: date, last: date) -> list[date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + timedelta(days=offset) for offset in range((last - first).days + 1)]
