"""The lake through real engines: Spark SQL (a local Thrift Server, through PyHive) and DuckDB run the dashboard's
per-engine dataset SQL (``dashboards/engines/``) and give the numbers ``amplitude://`` gives on the same data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import jinja2
import pytest

from shillelagh_amplitude.lake.ddl import ddl, refresh_statements
from shillelagh_amplitude.lake.pins import VIEWS_FILE
from shillelagh_amplitude.lake.publish import publish
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, DATASET_START, SECRET_KEY, Dataset
from .expected import sessions_from_records
from .helpers import amplitude_sql as amplitude_runner
from .scripts import load_script
from .spark_server import ThriftServer

build = load_script("dashboards/build.py")

START, END = "2026-03-01 00:00:00", "2026-03-04 00:00:00"
IN_RANGE = f"session_start >= '{START}' AND session_start < '{END}'"
Run = Callable[[str], list[tuple]]


@pytest.fixture(scope="module")
def lake(loaded_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test store published as a folder lake (the lake's own publisher)."""
    folder = tmp_path_factory.mktemp("lake")
    publish(HourStore(loaded_cache, "https://amplitude.com", API_KEY), folder)
    return folder


@pytest.fixture(scope="module")
def dataset_records(dataset: Dataset) -> list[dict]:
    return dataset.records


@pytest.fixture(scope="module")
def spark(lake: Path, spark_server: ThriftServer) -> ThriftServer:
    """The session's Spark Thrift Server with the lake's tables in database ``amplitude``."""
    spark_server.run(*ddl(lake, "spark"))
    return spark_server


@pytest.fixture(scope="module")
def duckdb_file(lake: Path) -> Path:
    """The lake's DuckDB views file (the publisher keeps it), opened read-only as Superset opens it."""
    return lake / VIEWS_FILE


@pytest.fixture(params=["spark", "duckdb"])
def engine(request: pytest.FixtureRequest) -> Iterator[tuple[str, Run]]:
    """Each lake engine, with a function running SQL on it."""
    if request.param == "spark":
        server: ThriftServer = request.getfixturevalue("spark")
        cursor = server.cursor("amplitude")

        def run(sql: str) -> list[tuple]:
            cursor.execute(sql)
            return cursor.fetchall()

        yield "spark", run
        cursor.close()
    else:
        with duckdb.connect(str(request.getfixturevalue("duckdb_file")), read_only=True) as connection:
            yield "duckdb", lambda sql: connection.execute(sql).fetchall()


def where_in(values: list[str]) -> str:
    return "(" + ", ".join("'" + value.replace("'", "''") + "'" for value in values) + ")"


def dataset(engine: str, name: str, contains_event: list[str] | None = None) -> tuple[str, dict[str, str]]:
    """A bundled dataset's SQL for ``engine`` (its Jinja rendered as Superset would) and its metric expressions."""
    files = build.bundle_files(engine=engine, template_processing=True)
    (config,) = [c for path, c in files.items()
                 if path.startswith("datasets/") and c["table_name"] in (name, f"{name}_{engine}")]
    template = jinja2.Environment(autoescape=False)
    template.filters["where_in"] = where_in
    sql = template.from_string(config["sql"]).render(filter_values=lambda column, remove_filter: contains_event or [])
    return sql, {metric["metric_name"]: metric["expression"] for metric in config["metrics"]}


def kpis_sql(engine: str, contains_event: list[str] | None = None) -> str:
    sql, metrics = dataset(engine, "sessions", contains_event)
    names = ["sessions", "avg_length_s", "p50_length_s", "p95_length_s", "zero_length_share", "sessions_per_user",
             "events_per_session"]
    # amplitude://'s dataset needs no Jinja: the dashboard's filter is a condition on its contains_event column
    event_filter = (f" AND contains_event IN ({', '.join(repr(e) for e in contains_event)})"
                    if engine == "amplitude" and contains_event else "")
    return f"SELECT {', '.join(metrics[n] for n in names)} FROM ({sql}) AS s WHERE {IN_RANGE}{event_filter}"


def by_sql(engine: str, column: str) -> str:
    sql, metrics = dataset(engine, "sessions")
    return (f"SELECT {column}, {metrics['sessions']}, {metrics['p50_length_s']}, {metrics['p95_length_s']} "
            f"FROM ({sql}) AS s WHERE {IN_RANGE} GROUP BY {column} ORDER BY {column}")


def same(rows: list[tuple], expected: list[tuple]) -> None:
    """Equal rows, floats to 1e-9 relative."""
    assert len(rows) == len(expected) > 0
    for row, want in zip(rows, expected, strict=True):
        assert list(row) == [pytest.approx(value, rel=1e-9) if isinstance(value, float) else value for value in want]


def test_session_kpis(engine: tuple[str, Run], offline_sql: Run) -> None:
    name, run = engine
    expected = offline_sql(kpis_sql("amplitude"))
    assert expected[0][0] > 1000
    same(run(kpis_sql(name)), expected)


@pytest.mark.parametrize("column", ["plan", "user_type", "company_size", "signup_month", "platform", "country"])
def test_per_segment_percentiles(engine: tuple[str, Run], offline_sql: Run, column: str) -> None:
    name, run = engine
    expected = offline_sql(by_sql("amplitude", column))
    assert len(expected) > 1
    same(run(by_sql(name, column)), expected)


def definitions_sql(engine: str) -> str:
    sql, metrics = dataset(engine, "session_definitions")
    names = ["sessions", "avg_length_s", "p50_length_s", "p95_length_s", "sessions_per_user_day",
             "multi_device_share", "merged_share"]
    return (f"SELECT definition, {', '.join(metrics[n] for n in names)} FROM ({sql}) AS s WHERE {IN_RANGE} "
            "GROUP BY definition ORDER BY definition")


def test_session_definitions(engine: tuple[str, Run], amplitude_sql: Run) -> None:
    """The "Session definition" section's dataset: Amplitude's sessions and user sessions at the 30-minute gap,
    which the lake publishes (amplitude:// also has the 60-minute gap)."""
    name, run = engine
    expected = [row for row in amplitude_sql(definitions_sql("amplitude")) if "60-minute" not in row[0]]
    assert [row[0] for row in expected] == ["Amplitude session_id", "User, 30-minute gap"]
    assert 0 < expected[1][-2] < 1 and 0 < expected[1][-1] < 1  # some user sessions span devices, merge ids
    same(run(definitions_sql(name)), expected)


def test_user_sessions_table(engine: tuple[str, Run], amplitude_sql: Run) -> None:
    """The lake's amplitude_user_sessions against amplitude://'s at the default gap, over the range."""
    sql = ("SELECT COUNT(*), SUM(length_s), SUM(event_count), SUM(devices), SUM(amplitude_sessions), "
           f"COUNT(DISTINCT amplitude_id), MIN(gap_minutes), MAX(gap_minutes) FROM amplitude_user_sessions "
           f"WHERE {IN_RANGE}")
    name, run = engine
    expected = amplitude_sql(sql)
    assert expected[0][0] > 1000 and expected[0][-2:] == (30, 30)
    same(run(sql), expected)


@pytest.fixture
def amplitude_sql(loaded_cache: Path) -> Run:
    """SQL through amplitude:// (what the dashboard's connection is; its cursor applies contains_event)."""
    return amplitude_runner(loaded_cache, API_KEY, SECRET_KEY)


def test_sessions_that_contain_event(engine: tuple[str, Run], amplitude_sql: Run) -> None:
    name, run = engine
    wanted = ["invite_sent", "search"]
    expected = amplitude_sql(kpis_sql("amplitude", wanted))
    assert 0 < expected[0][0] < amplitude_sql(kpis_sql("amplitude"))[0][0]
    same(run(kpis_sql(name, wanted)), expected)


def test_event_types_dataset(engine: tuple[str, Run], dataset_records: list[dict]) -> None:
    """Sessions per event type they contain, over the whole lake, as computed from the raw records."""
    expected: dict[str, int] = {}
    for session in sessions_from_records(dataset_records):
        for event_type in session.event_types:
            expected[event_type] = expected.get(event_type, 0) + 1
    name, run = engine
    source, metrics = dataset(name, "event_types")
    rows = run(f"SELECT contains_event, {metrics['sessions']} FROM ({source}) AS s GROUP BY contains_event")
    assert dict(rows) == expected and len(expected) > 5


def test_events_per_type(engine: tuple[str, Run], offline_sql: Run) -> None:
    name, run = engine
    sql = (f"SELECT event_type, COUNT(*) FROM amplitude_events WHERE event_time >= '{START}' "
           f"AND event_time < '{END}' GROUP BY event_type ORDER BY event_type")
    expected = offline_sql(sql)
    assert len(expected) > 5
    assert run(sql) == expected


def complete_through_sql(engine_name: str) -> str:
    """The *Data complete through* tile's query on ``engine_name``'s data_status dataset."""
    source, metrics = dataset(engine_name, "data_status")
    return f"SELECT {metrics['complete_through_ms']} FROM ({source}) AS s"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_data_complete_through(engine: tuple[str, Run], offline_sql: Run, loaded_cache: Path) -> None:
    """The engine's tile reads the lake's status: amplitude://'s tile on the same store, the end of its last hour
    (an export loaded by hand is stored final), whatever the clock."""
    name, run = engine
    expected = offline_sql(complete_through_sql("amplitude"))
    last = HourStore(loaded_cache, "https://amplitude.com", API_KEY).stored_span()[1]
    assert expected == [(epoch_ms(last + timedelta(hours=1)),)]
    assert run(complete_through_sql(name)) == expected


def test_a_running_spark_sees_a_publish_after_the_refresh_statements(
    spark: ThriftServer, loaded_cache: Path, tmp_path: Path
) -> None:
    """A lake published in two runs under a running Thrift Server: after the second run and
    ``refresh_statements``, Spark counts every event and session the lake holds (DuckDB's count, through the views
    of the second run), and reads the status the second run published (its file replaced)."""
    store = HourStore(loaded_cache, "https://amplitude.com", API_KEY)
    first_run_end = DATASET_START + timedelta(hours=12)
    publish(store, tmp_path, first=DATASET_START, last=first_run_end)
    spark.run(*ddl(tmp_path, "spark", schema="fresh"))
    counts = "SELECT (SELECT COUNT(*) FROM {0}amplitude_events), (SELECT COUNT(*) FROM {0}amplitude_sessions)"
    status = "SELECT date_format(data_complete_through, 'yyyy-MM-dd HH:mm') FROM fresh.amplitude_lake_status"
    before = spark.run(counts.format("fresh."))
    assert spark.run(status) == [(f"{first_run_end + timedelta(hours=1):%Y-%m-%d %H:%M}",)]
    publish(store, tmp_path)
    spark.run(*refresh_statements("spark", schema="fresh"))
    with duckdb.connect() as connection:
        for statement in ddl(tmp_path, "duckdb"):
            connection.execute(statement)
        after = connection.execute(counts.format("")).fetchall()
    assert spark.run(counts.format("fresh.")) == after
    assert 0 < before[0][0] < after[0][0] and 0 < before[0][1] < after[0][1]
    assert spark.run(status) == [(f"{store.stored_span()[1] + timedelta(hours=1):%Y-%m-%d %H:%M}",)]


def test_read_only_duckdb_file_is_not_locked_against_readers(duckdb_file: Path) -> None:
    """Two read-only openers at once (Superset's pool and a second process's)."""
    with duckdb.connect(str(duckdb_file), read_only=True) as first, \
            duckdb.connect(str(duckdb_file), read_only=True) as second:
        assert first.execute("SELECT COUNT(*) FROM amplitude_sessions").fetchall() == \
            second.execute("SELECT COUNT(*) FROM amplitude_sessions").fetchall()
