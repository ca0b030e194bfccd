"""The statements each engine needs to query the lake: ``amplitude-lake ddl --engine duckdb|spark|trino|athena``.

- DuckDB: views over ``read_parquet([…], hive_partitioning = true)`` listing each partition's current pin (an
  immutable name of its file, :mod:`.pins`): the publisher keeps them in ``<lake>/_amplitude_lake.duckdb``, which
  Superset opens read-only. On object storage, views over a glob of the partitions' files.
- Spark SQL: tables ``USING parquet`` partitioned by the date column; a running Thrift Server sees new partitions
  and replaced files only after :func:`refresh_statements` (``MSCK REPAIR TABLE … SYNC PARTITIONS`` and
  ``REFRESH TABLE``), which the syncs run after each publish when the server is named (:mod:`.refresh`).
- Every engine also gets ``amplitude_lake_status`` (:data:`.layout.STATUS`), one unpartitioned file of one row
  (Spark: ``REFRESH TABLE`` after each publish).
- Trino and Athena: external tables; **untested here** (no Trino or Athena server can run on these machines).

Locations never carry credentials or query parameters: engines take credentials from their own configuration.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from ..store.location import is_uri, redact
from .layout import MANIFEST, STATUS, STATUS_SCHEMA, TABLES

ENGINES = ("duckdb", "spark", "trino", "athena")
UNTESTED = ("trino", "athena")


def _sql_type(arrow_type: pa.DataType, engine: str) -> str:
    if pa.types.is_timestamp(arrow_type):
        return {"trino": "timestamp(6)", "athena": "timestamp"}.get(engine, "TIMESTAMP")
    if pa.types.is_integer(arrow_type):
        return "BIGINT"
    if pa.types.is_floating(arrow_type):
        return "DOUBLE"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    return {"trino": "varchar", "duckdb": "VARCHAR"}.get(engine, "STRING")


def table_location(lake: str | Path, name: str, engine: str) -> str:
    """Where an engine finds the folder of table ``name``: an absolute path (Spark: a ``file:`` URI) or the object
    storage URI without credentials or parameters (Spark reads S3 through ``s3a://``)."""
    if not is_uri(lake):
        folder = Path(str(lake).removeprefix("file://")).expanduser().absolute() / name
        return folder.as_uri() if engine == "spark" else folder.as_posix()
    base = redact(str(lake)).split("?", 1)[0].rstrip("/")
    if engine == "spark" and base.startswith("s3://"):
        base = "s3a://" + base.removeprefix("s3://")
    return f"{base}/{name}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _columns(schema: pa.Schema, engine: str, quote: str) -> list[str]:
    return [f"{quote}{f.name}{quote} {_sql_type(f.type, engine)}" for f in schema]


def ddl(lake: str | Path, engine: str, schema: str = "amplitude") -> list[str]:
    """The statements creating the lake's tables (:data:`.layout.TABLES`) and its status table for ``engine``."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    if engine == "duckdb":
        return duckdb_views(lake, _current_pins(lake))
    statements = []
    if engine == "spark":
        statements.append(f"CREATE DATABASE IF NOT EXISTS {schema}")
    for table in TABLES:
        location = table_location(lake, table.name, engine)
        key = table.partition_column
        if engine == "duckdb":
            continue
        if engine == "spark":
            columns = ",\n  ".join([*_columns(table.schema, engine, "`"), f"`{key}` DATE"])
            statements.append(f"CREATE TABLE IF NOT EXISTS {schema}.{table.name} (\n  {columns}\n) USING parquet "
                              f"PARTITIONED BY ({key}) LOCATION {_quote(location)}")
        elif engine == "trino":
            columns = ",\n  ".join([*_columns(table.schema, engine, '"'), f'"{key}" date'])
            statements.append(f"CREATE TABLE IF NOT EXISTS hive.{schema}.{table.name} (\n  {columns}\n) WITH "
                              f"(external_location = {_quote(location + '/')}, format = 'PARQUET', "
                              f"partitioned_by = ARRAY['{key}'])")
        else:
            columns = ",\n  ".join(_columns(table.schema, engine, "`"))
            statements.append(
                f"CREATE EXTERNAL TABLE IF NOT EXISTS {schema}.{table.name} (\n  {columns}\n) PARTITIONED BY "
                f"({key} string) STORED AS PARQUET LOCATION {_quote(location + '/')} TBLPROPERTIES ("
                f"'projection.enabled' = 'true', 'projection.{key}.type' = 'date', "
                f"'projection.{key}.format' = 'yyyy-MM-dd', 'projection.{key}.range' = '2020-01-01,NOW', "
                f"'projection.{key}.interval' = '1', 'projection.{key}.interval.unit' = 'DAYS', "
                f"'storage.location.template' = {_quote(location + '/' + key + '=${' + key + '}/')})"
            )
    return statements + [_status_table(lake, engine, schema)] + refresh_statements(engine, schema)


def _status_table(lake: str | Path, engine: str, schema: str) -> str:
    """The statement creating the status table (unpartitioned) on Spark, Trino or Athena."""
    location = table_location(lake, STATUS, engine)
    if engine == "spark":
        columns = ",\n  ".join(_columns(STATUS_SCHEMA, engine, "`"))
        return (f"CREATE TABLE IF NOT EXISTS {schema}.{STATUS} (\n  {columns}\n) USING parquet "
                f"LOCATION {_quote(location)}")
    if engine == "trino":
        columns = ",\n  ".join(_columns(STATUS_SCHEMA, engine, '"'))
        return (f"CREATE TABLE IF NOT EXISTS hive.{schema}.{STATUS} (\n  {columns}\n) WITH "
                f"(external_location = {_quote(location + '/')}, format = 'PARQUET')")
    columns = ",\n  ".join(_columns(STATUS_SCHEMA, engine, "`"))
    return (f"CREATE EXTERNAL TABLE IF NOT EXISTS {schema}.{STATUS} (\n  {columns}\n) STORED AS PARQUET "
            f"LOCATION {_quote(location + '/')}")


def duckdb_views(lake: str | Path, pins: dict[str, list[str]] | None) -> list[str]:
    """DuckDB's views: over the listed pins (``pins``: table -> pin paths relative to the lake, see :mod:`.pins`),
    else over a glob of the partitions' files (an object storage lake, or a table without pins)."""
    statements = []
    for table in TABLES:
        files = _duckdb_files(lake, table.name, pins, "*/*.parquet")
        statements.append(
            f"CREATE OR REPLACE VIEW {table.name} AS SELECT * FROM read_parquet({files}, hive_partitioning = true, "
            f"hive_types = {{'{table.partition_column}': DATE}}, union_by_name = true)"
        )
    files = _duckdb_files(lake, STATUS, pins, "*.parquet")
    return [*statements, f"CREATE OR REPLACE VIEW {STATUS} AS SELECT * FROM read_parquet({files})"]


def _duckdb_files(lake: str | Path, name: str, pins: dict[str, list[str]] | None, glob: str) -> str:
    """What DuckDB's view of table ``name`` reads: its listed pins, else ``glob`` under its folder."""
    location = table_location(lake, name, "duckdb")
    listed = (pins or {}).get(name)
    if not listed:
        return _quote(f"{location}/{glob}")
    root = location.removesuffix(name)  # the lake's folder, '/'-terminated
    return "[" + ", ".join(_quote(root + path) for path in listed) + "]"


def _current_pins(lake: str | Path) -> dict[str, list[str]] | None:
    """The pins the publisher's last run listed (the manifest's record), or None (object storage, none yet)."""
    if is_uri(lake):
        return None
    try:
        manifest = json.loads((Path(str(lake).removeprefix("file://")).expanduser() / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    return manifest.get("pins", {}).get("current")


def refresh_statements(engine: str, schema: str = "amplitude") -> list[str]:
    """What an engine must run after each publish to see new partitions and replaced files (none for DuckDB's
    views, nor for Athena's partition projection; the unpartitioned status table only needs Spark's refresh)."""
    if engine == "spark":
        return [statement for table in TABLES for statement in (
            f"MSCK REPAIR TABLE {schema}.{table.name} SYNC PARTITIONS", f"REFRESH TABLE {schema}.{table.name}")
        ] + [f"REFRESH TABLE {schema}.{STATUS}"]
    if engine == "trino":
        return [f"CALL hive.system.sync_partition_metadata(schema_name => '{schema}', table_name => '{table.name}', "
                "mode => 'FULL')" for table in TABLES]
    return []


def script(lake: str | Path, engine: str, schema: str = "amplitude") -> str:
    """The statements as one script, ``;``-terminated, with a header naming untested engines."""
    header = (f"-- {engine}: untested here (no {engine} server on the machines this project is tested on)\n"
              if engine in UNTESTED else "")
    return header + "".join(f"{statement};\n" for statement in ddl(lake, engine, schema))
