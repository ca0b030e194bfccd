"""Publishing wired to the syncs: ``amplitude-sync --lake``, ``amplitude-lake``, and Superset's Celery task; each
refreshing the Spark Thrift Server serving the lake when one is configured."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from shillelagh_amplitude.cli import lake_main, sync_main
from shillelagh_amplitude.hours import LOOKBACK, floor_hour, hour_range
from shillelagh_amplitude.lake import ddl
from shillelagh_amplitude.lake.pins import VIEWS_FILE
from shillelagh_amplitude.superset import tasks

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .helpers import free_port, parse_ts
from .spark_server import ThriftServer

NOW = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)


def _expected_events(records: list[dict], hours: list[datetime], late_hours: int) -> Counter:
    """Events per event date that a lake built from ``hours`` holds: those uploaded from one hour before their day
    through ``late_hours`` after its last hour."""
    stored = set(hours)
    counts: Counter = Counter()
    for record in records:
        uploaded, happened = floor_hour(parse_ts(record["server_upload_time"])), parse_ts(record["event_time"])
        midnight = datetime.combine(happened.date(), datetime.min.time(), UTC)
        if uploaded in stored and midnight - timedelta(hours=1) <= uploaded <= midnight + timedelta(
                hours=23 + late_hours):
            counts[happened.date()] += 1
    return counts


def _lake_events(lake) -> Counter:
    connection = duckdb.connect()
    for statement in ddl.ddl(lake, "duckdb"):
        connection.execute(statement)
    return Counter(dict(connection.sql("SELECT event_date, count(*) FROM amplitude_events GROUP BY 1").fetchall()))


def test_sync_with_lake_publishes_the_days_its_hours_touch(tmp_path, dataset, emulator, monkeypatch, capsys):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    lake = tmp_path / "lake"
    code = sync_main(["--start", "2026-03-02", "--end", "2026-03-02", "--api-key", API_KEY, "--base-url",
                      emulator.base_url, "--cache-dir", str(tmp_path / "cache"), "--lake", str(lake),
                      "--late-hours", "6"])
    assert code == 0
    out = capsys.readouterr().out
    hours = list(hour_range(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 2, 23, tzinfo=UTC)))
    expected = _expected_events(dataset.records, hours, late_hours=6)
    assert _lake_events(lake) == expected and sum(expected.values()) > 0
    assert f"amplitude-sync: lake {lake}:" in out and "partitions written" in out
    assert SECRET_KEY not in out


def _spark_events(server: ThriftServer, schema: str) -> Counter:
    """Events per event date a running Thrift Server sees in the lake's table (through PyHive, hive://)."""
    rows = server.run(f"SELECT event_date, count(*) FROM {schema}.amplitude_events GROUP BY 1")
    return Counter({date.fromisoformat(str(day)): count for day, count in rows})


def test_sync_with_spark_refreshes_the_running_thrift_server(tmp_path, emulator, spark_server, monkeypatch, capsys):
    """``--spark``: after each publish the already-running server sees every day the lake holds, with no refresh by
    hand; without it, a new day stays invisible; with the server's port closed, the sync succeeds (the lake is
    published) with a one-line warning naming host:port, and the next sync refreshes again."""
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    for variable in ("AMPLITUDE_LAKE", "AMPLITUDE_LAKE_SPARK"):
        monkeypatch.delenv(variable, raising=False)
    lake, schema = tmp_path / "lake", "cli_fresh"

    def sync(day: str, *spark: str) -> int:
        return sync_main(["--start", day, "--end", day, "--api-key", API_KEY, "--base-url", emulator.base_url,
                          "--cache-dir", str(tmp_path / "cache"), "--lake", str(lake), *spark])

    assert sync("2026-03-01") == 0
    spark_server.run(*ddl.ddl(lake, "spark", schema))  # the tables, created once
    assert date(2026, 3, 2) not in _spark_events(spark_server, schema)
    assert sync("2026-03-02", "--spark", spark_server.uri(schema)) == 0
    assert f"amplitude-sync: Spark Thrift Server 127.0.0.1:{spark_server.port}: {schema}'s tables refreshed" in \
        capsys.readouterr().out
    seen = _spark_events(spark_server, schema)
    assert seen == _lake_events(lake) and seen[date(2026, 3, 2)] > 0

    assert sync("2026-03-04") == 0  # no --spark: the server does not see the new day
    new_day = f"SELECT count(*) FROM {schema}.amplitude_events WHERE event_date = DATE '2026-03-04'"
    assert _lake_events(lake)[date(2026, 3, 4)] > 0 and spark_server.run(new_day) == [(0,)]

    closed = free_port()
    password = "spark-pw-3b1e"
    assert sync("2026-03-03", "--spark", f"hive://hive:{password}@127.0.0.1:{closed}/{schema}?auth=LDAP") == 0
    captured = capsys.readouterr()
    (warning,) = [line for line in captured.err.split("\n") if line and not line.startswith("\rupload hours")]
    assert warning.startswith(f"amplitude-sync: warning: Spark Thrift Server 127.0.0.1:{closed} not refreshed "
                              "([Errno 111] Connection refused)")
    assert "the next sync refreshes it again" in warning and password not in captured.err + captured.out
    assert _lake_events(lake)[date(2026, 3, 3)] > 0 and "partitions written" in captured.out  # published all the same

    assert sync("2026-03-03", "--spark", spark_server.uri(schema)) == 0  # nothing new to publish: refreshed anyway
    assert _spark_events(spark_server, schema) == _lake_events(lake)
    with pytest.raises(SystemExit):
        sync_main(["--days", "1", "--api-key", API_KEY, "--spark", spark_server.uri(schema)])  # no lake to refresh


def test_amplitude_lake_publishes_the_store_and_prints_ddl(loaded_cache, tmp_path, capsys):
    lake = tmp_path / "lake"
    assert lake_main(["publish", "--api-key", API_KEY, "--cache-dir", str(loaded_cache), str(lake)]) == 0
    assert "13 partitions written" in capsys.readouterr().out  # 5 days of events, 4 of sessions and user sessions
    for table in ("amplitude_sessions", "amplitude_user_sessions"):
        assert sorted(path.parent.name for path in lake.glob(f"{table}/*/part-0.parquet")) == [
            f"session_date=2026-03-0{day}" for day in range(1, 5)]
    assert lake_main(["ddl", "--engine", "duckdb", str(lake)]) == 0
    script = capsys.readouterr().out
    connection = duckdb.connect()
    connection.execute(script)
    assert connection.execute("SELECT count(*) FROM amplitude_sessions WHERE session_date = DATE '2026-03-02'"
                              ).fetchone()[0] > 0


def test_the_celery_sync_publishes_the_operators_lake_and_rewrites_provisional_days(tmp_path, dataset, emulator,
                                                                                     monkeypatch):
    lake = tmp_path / "lake"
    settings = {"base_url": emulator.base_url, "default_days": 1, "api_key": API_KEY, "secret_key": SECRET_KEY,
                "cache_dir": str(tmp_path / "cache"), "lake": str(lake), "late_hours": 12}
    monkeypatch.setattr(tasks, "amplitude_projects", lambda: [("Project", {**settings, "now": NOW}, None)])
    (first,) = tasks.sync_amplitude_stores.run()
    assert first["ok"] and first["partitions_written"] > 0 and first["lake"].startswith(f"lake {lake}:")
    # one day from its clock-skew hour, and the 48 h look-back of user sessions before it
    synced = list(hour_range(datetime(2026, 3, 2, 23, tzinfo=UTC) - LOOKBACK, datetime(2026, 3, 4, 9, tzinfo=UTC)))
    assert _lake_events(lake) == _expected_events(dataset.records, synced, late_hours=12)
    later = NOW + timedelta(hours=10)
    monkeypatch.setattr(tasks, "amplitude_projects", lambda: [("Project", {**settings, "now": later}, None)])
    (second,) = tasks.sync_amplitude_stores.run()
    synced = list(hour_range(synced[0], datetime(2026, 3, 4, 19, tzinfo=UTC)))
    expected = _expected_events(dataset.records, synced, late_hours=12)
    assert _lake_events(lake) == expected and expected[date(2026, 3, 4)] > 0
    assert second["partitions_written"] > 0


def test_the_celery_sync_refreshes_the_lakes_spark_and_warns_when_it_cannot(tmp_path, emulator, spark_server,
                                                                           monkeypatch, caplog):
    """The Thrift Server's port closed: the sync succeeds and publishes, one warning names host:port. The next run,
    a day later, the server up: it sees the new day that run published, as the lake holds it."""
    lake, schema = tmp_path / "lake", "celery_fresh"
    settings = {"base_url": emulator.base_url, "default_days": 1, "api_key": API_KEY, "secret_key": SECRET_KEY,
                "cache_dir": str(tmp_path / "cache"), "lake": str(lake)}
    closed = free_port()
    monkeypatch.setattr(tasks, "amplitude_projects",
                        lambda: [("Project", {**settings, "now": NOW - timedelta(days=1)},
                                  f"hive://hive@127.0.0.1:{closed}/{schema}")])
    caplog.set_level(logging.INFO)
    (first,) = tasks.sync_amplitude_stores.run()
    assert first["ok"] and first["partitions_written"] > 0 and "spark" not in first
    assert first["spark_error"].startswith(f"Spark Thrift Server 127.0.0.1:{closed} not refreshed (")
    (warning,) = [r for r in caplog.records if r.name == tasks.__name__ and r.levelname == "WARNING"]
    assert warning.getMessage() == f"amplitude sync: {first['spark_error']}" and "\n" not in warning.getMessage()

    spark_server.run(*ddl.ddl(lake, "spark", schema))
    before = _spark_events(spark_server, schema)
    assert before == _lake_events(lake) and date(2026, 3, 4) not in before
    monkeypatch.setattr(tasks, "amplitude_projects", lambda: [
        ("Project", {**settings, "now": NOW}, spark_server.uri(schema))])
    (second,) = tasks.sync_amplitude_stores.run()
    assert second["ok"] and "spark_error" not in second
    assert second["spark"].startswith(f"Spark Thrift Server 127.0.0.1:{spark_server.port}: {schema}'s tables")
    after = _spark_events(spark_server, schema)
    assert after == _lake_events(lake) and after[date(2026, 3, 4)] > 0


def test_the_spark_of_a_lake_is_the_one_the_operator_named():
    config = {"AMPLITUDE_LAKE": "/srv/lake", "AMPLITUDE_LAKE_SPARK": "hive://spark:10000/amplitude",
              "AMPLITUDE_LAKES_SPARK": {"Sales": "hive://sales-spark:10000/sales"}}
    assert tasks._spark_of("/srv/lake", config, None) == "hive://spark:10000/amplitude"
    assert tasks._spark_of("/srv/lake", config, "On the environment") == "hive://spark:10000/amplitude"
    assert tasks._spark_of("s3://bucket/sales-lake", config, "Sales") == "hive://sales-spark:10000/sales"
    assert tasks._spark_of("s3://bucket/other", config, "Other") is None  # another lake: not the environment's server
    assert tasks._spark_of(None, config, "Sales") is None  # no lake published, nothing to refresh
    assert tasks._spark_of("/srv/lake", {"AMPLITUDE_LAKE": "/srv/lake"}, None) is None


def _lake_status(lake) -> datetime:
    """The lake's ``data_complete_through``, through the DuckDB views file the publisher keeps."""
    with duckdb.connect(str(lake / VIEWS_FILE), read_only=True) as connection:
        ((through,),) = connection.execute("SELECT data_complete_through FROM amplitude_lake_status").fetchall()
    return through


def test_each_celery_sync_publishes_the_lakes_status(tmp_path, emulator, monkeypatch):
    """After each sync, the lake's status is what amplitude:// gives for the store (its metadata): the end of the
    newest hour final at the sync's clock, Amplitude's rule (an upload hour is final 3 h after it ends): 12:30 makes
    08:00 the newest final hour; 10 hours later, hours turned final are stored and the status moves to 19:00."""
    lake = tmp_path / "lake"
    settings = {"base_url": emulator.base_url, "default_days": 1, "api_key": API_KEY, "secret_key": SECRET_KEY,
                "cache_dir": str(tmp_path / "cache"), "lake": str(lake)}
    amplitude = sql_connection(base_url=emulator.base_url, cache_dir=settings["cache_dir"], offline=True).cursor()
    tile = "SELECT get_metadata('amplitude_sessions') ->> '$.extra.data_complete_through'"
    for now, through in ((NOW, datetime(2026, 3, 4, 9, tzinfo=UTC)),
                         (NOW + timedelta(hours=10), datetime(2026, 3, 4, 19, tzinfo=UTC))):
        monkeypatch.setattr(tasks, "amplitude_projects", lambda now=now: [("Project", {**settings, "now": now}, None)])
        (result,) = tasks.sync_amplitude_stores.run()
        assert result["ok"] and f"data complete through {through:%Y-%m-%d %H:%M} UTC" in result["lake"]
        assert _lake_status(lake) == through
        assert amplitude.execute(tile).fetchall() == [(through.isoformat(),)]


def test_the_lake_of_a_database_is_the_one_the_operator_mapped():
    config = {"AMPLITUDE_LAKE": "/srv/lake", "AMPLITUDE_LAKES": {"Sales": "s3://bucket/sales-lake"}}
    assert tasks._with_lake({"api_key": "k"}, config, None) == {"api_key": "k", "lake": "/srv/lake"}
    assert tasks._with_lake({"api_key": "k"}, config, "Sales") == {"api_key": "k", "lake": "s3://bucket/sales-lake"}
    given = {"api_key": "k", "lake": "/srv/lake"}  # the mutator's, for a database on the environment's project
    assert tasks._with_lake(given, config, "Other") == given
    assert tasks._with_lake({"api_key": "k"}, {}, None) == {"api_key": "k"}


def test_duckdb_over_the_lake_gives_the_numbers_of_amplitude_tables(tmp_path, emulator, monkeypatch):
    """The same emulator project, synced with ``--lake``: session KPIs, per-plan percentiles and events per type
    through amplitude:// (SQLite over the hour store) and through DuckDB over the lake's Parquet."""
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    cache, lake = tmp_path / "cache", tmp_path / "lake"
    assert sync_main(["--start", "2026-02-28", "--end", "2026-03-06", "--api-key", API_KEY, "--base-url",
                      emulator.base_url, "--cache-dir", str(cache), "--lake", str(lake)]) == 0
    amplitude = sql_connection(base_url=emulator.base_url, cache_dir=str(cache)).cursor()
    connection = duckdb.connect()
    for statement in ddl.ddl(lake, "duckdb"):
        connection.execute(statement)
    sessions = "FROM amplitude_sessions WHERE session_start >= '2026-03-02' AND session_start < '2026-03-05'"
    events = "FROM amplitude_events WHERE event_time >= '2026-03-02' AND event_time < '2026-03-05'"
    pairs = [
        (f"SELECT count(*), avg(length_s), median(length_s), percentile(length_s, 95) {sessions}",
         f"SELECT count(*), avg(length_s), median(length_s), quantile_cont(length_s, 0.95) {sessions}"),
        (f"SELECT json_extract(user_properties, '$.plan'), count(*), median(length_s), percentile(length_s, 90) "
         f"{sessions} GROUP BY 1 ORDER BY 1",
         f"SELECT json_extract_string(user_properties, '$.plan'), count(*), median(length_s), "
         f"quantile_cont(length_s, 0.9) {sessions} GROUP BY 1 ORDER BY 1 NULLS FIRST"),
        (f"SELECT event_type, count(*) {events} GROUP BY 1 ORDER BY 1",
         f"SELECT event_type, count(*) {events} GROUP BY 1 ORDER BY 1"),
    ]
    for sqlite_sql, duckdb_sql in pairs:
        served = amplitude.execute(sqlite_sql).fetchall()
        published = connection.execute(duckdb_sql).fetchall()
        assert len(served) == len(published) > 0
        for row, other in zip(served, published, strict=True):
            labels = [value for value in row if not isinstance(value, int | float)]  # plans (text or NULL)
            assert labels == [value for value in other if not isinstance(value, int | float)]
            assert [value for value in row if isinstance(value, int | float)] == pytest.approx(
                [value for value in other if isinstance(value, int | float)], rel=1e-9)
