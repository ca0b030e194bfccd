"""The columnar cursor of ``amplitude://`` against shillelagh's generic row path (``shillelagh+safe://``).

Both paths answer the same queries with the same rows, apart from the documented difference: the generic path
hands INTEGER values to SQLite as text. Numbers are checked against sessions computed from the raw records.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pytest
import yaml
from shillelagh.backends.apsw.vt import VTCursor
from shillelagh.exceptions import OperationalError, ProgrammingError
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from shillelagh_amplitude.sql import columnar, scan
from shillelagh_amplitude.sql.columnar import ColumnarCursor
from shillelagh_amplitude.sql.connection import AmplitudeConnection
from shillelagh_amplitude.store.location import StoreError

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import sessions_from_records
from .helpers import parse_ts
from .scripts import REPO

DAY = "session_start >= '2026-03-02' AND session_start < '2026-03-03'"
DATASETS = REPO / "dashboards" / "session_length" / "datasets"
EVENTS_DAY = "event_time >= '2026-03-02 00:00:00' AND event_time < '2026-03-03 00:00:00'"

SAME_ON_BOTH_PATHS = [
    # sub-day ranges, literal forms
    "SELECT session_id, amplitude_id, length_s, session_start, event_count FROM amplitude_sessions "
    "WHERE session_start >= '2026-03-02 06:30:00' AND session_start < '2026-03-03T18:00:00Z' "
    "ORDER BY session_start, amplitude_id",
    # two time columns of events bounded at once
    f"SELECT count(*), count(DISTINCT amplitude_id), sum(event_id) FROM amplitude_events WHERE {EVENTS_DAY} "
    f"AND server_upload_time >= '2026-03-02 12:00:00'",
    # IN on a column SQLite filters, and GROUP BY
    f"SELECT platform, count(*), round(avg(length_s), 9) FROM amplitude_sessions WHERE {DAY} "
    f"AND platform IN ('iOS', 'Android', 'Web') GROUP BY 1 ORDER BY 1",
    # IN on the time column: one pushed-down equality, one scan, per value
    f"SELECT session_id, amplitude_id FROM amplitude_sessions WHERE session_start IN (SELECT session_start "
    f"FROM amplitude_sessions WHERE {DAY} ORDER BY session_start LIMIT 7 OFFSET 40) ORDER BY 1, 2",
    # a self-join: the inner table is scanned again for every outer row
    "SELECT a.session_id, count(b.session_id) FROM amplitude_sessions a JOIN amplitude_sessions b "
    "ON b.amplitude_id = a.amplitude_id AND b.session_start > a.session_start "
    "WHERE a.session_start >= '2026-03-02' AND a.session_start < '2026-03-02 03:00:00' "
    "AND b.session_start >= '2026-03-02' AND b.session_start < '2026-03-04' GROUP BY 1 ORDER BY 1",
    # a join of both tables
    "SELECT s.session_id, count(e.uuid), min(e.event_time) FROM amplitude_sessions s JOIN amplitude_events e "
    "ON e.amplitude_id = s.amplitude_id AND e.session_id = s.session_id "
    "WHERE s.session_start >= '2026-03-02 10:00:00' AND s.session_start < '2026-03-02 10:20:00' "
    "AND e.event_time >= '2026-03-02' AND e.event_time < '2026-03-03' GROUP BY 1 ORDER BY 1",
    # ORDER BY on a REAL column with LIMIT
    f"SELECT amplitude_id, session_id, length_s FROM amplitude_sessions WHERE {DAY} "
    f"ORDER BY length_s DESC, amplitude_id, session_id LIMIT 5",
    # rowid: numbered from 0 in time order on both paths
    f"SELECT rowid, session_id FROM amplitude_sessions WHERE {DAY} ORDER BY rowid LIMIT 5 OFFSET 100",
    f"SELECT min(rowid), max(rowid), count(*) FROM amplitude_sessions WHERE {DAY}",
    # text, booleans, NULL, timestamps as ISO text
    f"SELECT typeof(paying), paying, typeof(user_id), typeof(event_time), substr(event_time, 1, 40) "
    f"FROM amplitude_events WHERE {EVENTS_DAY} ORDER BY event_time, uuid LIMIT 20",
    f"SELECT count(*), sum(user_id IS NULL), sum(paying) FROM amplitude_events WHERE {EVENTS_DAY}",
    # empty: an impossible range, a range with no row
    "SELECT count(*) FROM amplitude_sessions WHERE session_start > '2026-03-03' AND session_start < '2026-03-02'",
    "SELECT * FROM amplitude_events WHERE event_time >= '2026-03-02 12:00:00.000001' "
    "AND event_time < '2026-03-02 12:00:00.000002'",
]


@pytest.fixture
def both(loaded_cache):
    """Run SQL through amplitude:// (columnar) and shillelagh+safe:// (generic rows) on the same store."""
    engine = create_engine("amplitude://?offline=true", api_key=API_KEY, secret_key=SECRET_KEY,
                           cache_dir=str(loaded_cache))
    generic = sql_connection(cache_dir=str(loaded_cache), offline=True)

    def run(sql: str) -> tuple[list[tuple], list[tuple]]:
        with engine.connect() as connection:
            fast = [tuple(row) for row in connection.execute(text(sql)).fetchall()]
        return fast, generic.cursor().execute(sql).fetchall()

    yield run
    generic.close()


@pytest.fixture
def fast_sql(loaded_cache):
    connection = AmplitudeConnection({"api_key": API_KEY, "secret_key": SECRET_KEY,
                                      "cache_dir": str(loaded_cache), "offline": True})
    yield lambda sql: connection.cursor().execute(sql).fetchall()
    connection.close()


@pytest.mark.parametrize("sql", SAME_ON_BOTH_PATHS)
def test_same_rows_on_both_paths(both, sql: str) -> None:
    fast, generic = both(sql)
    assert fast == generic


def test_queries_return_rows(both) -> None:
    """The comparison above is not vacuous: the non-empty queries do return rows."""
    for sql in SAME_ON_BOTH_PATHS[:-2]:
        fast, _ = both(sql)
        assert fast and any(value not in (None, 0) for row in fast for value in row), sql


def test_amplitude_urls_run_the_columnar_cursor(loaded_cache, monkeypatch) -> None:
    """A shillelagh upgrade that brought back the generic cursor for amplitude:// fails here."""
    calls = {"columnar": 0, "generic": 0}
    original = ColumnarCursor.Filter

    def counting(self, *args):
        calls["columnar"] += 1
        return original(self, *args)

    monkeypatch.setattr(ColumnarCursor, "Filter", counting)
    monkeypatch.setattr(VTCursor, "Filter", lambda *args: calls.__setitem__("generic", 1 / 0))
    engine = create_engine("amplitude://?offline=true", api_key=API_KEY, secret_key=SECRET_KEY,
                           cache_dir=str(loaded_cache))
    with engine.connect() as connection:
        assert isinstance(connection.connection.dbapi_connection, AmplitudeConnection)
        (row,) = connection.execute(text(f"SELECT typeof(event_count), count(*) FROM amplitude_sessions WHERE {DAY}"))
    assert row[0] == "integer" and row[1] > 0
    assert calls == {"columnar": 1, "generic": 0}


def test_integers_are_integers_on_the_fast_path_only(dataset, both) -> None:
    sessions = [s for s in sessions_from_records(dataset.records)
                if datetime(2026, 3, 2, tzinfo=UTC) <= s.start < datetime(2026, 3, 3, tzinfo=UTC)]
    counts = sorted((s.event_count for s in sessions), reverse=True)
    assert counts[0] >= 10  # two digits: text order would differ from numeric order
    fast, generic = both(f"SELECT max(event_count), typeof(event_count), typeof(length_s) FROM amplitude_sessions "
                         f"WHERE {DAY}")
    assert fast == [(counts[0], "integer", "real")]
    assert generic[0][1:] == ("text", "real")  # documented: the generic path hands integers over as text
    fast, _ = both(f"SELECT event_count FROM amplitude_sessions WHERE {DAY} ORDER BY event_count DESC LIMIT 3")
    assert [row[0] for row in fast] == counts[:3]
    fast, _ = both(f"SELECT DISTINCT typeof(amplitude_id), typeof(paying), paying, typeof(location_lat) "
                   f"FROM amplitude_events WHERE {EVENTS_DAY} AND paying IS NOT NULL")
    assert fast == [("integer", "integer", True, "null")]  # booleans reach SQLite as 0/1


def test_naive_and_zoned_literals_mix_in_one_range(dataset, both) -> None:
    expected = sum(1 for s in sessions_from_records(dataset.records)
                   if datetime(2026, 3, 2, 1, tzinfo=UTC) <= s.start < datetime(2026, 3, 3, 22, tzinfo=UTC))
    sql = ("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '2026-03-02 01:00:00' "
           "AND session_start < '2026-03-04T00:00:00+02:00'")
    fast, generic = both(sql)
    assert fast == generic == [(expected,)]


def test_timestamps_come_back_as_utc_datetimes(dataset, fast_sql) -> None:
    rows = fast_sql(f"SELECT event_time, client_event_time, uuid FROM amplitude_events WHERE {EVENTS_DAY} LIMIT 50")
    by_uuid = {record["uuid"]: record for record in dataset.records}
    for event_time, client_event_time, uuid in rows:
        assert event_time == parse_ts(by_uuid[uuid]["event_time"]) and event_time.tzinfo is not None
        assert client_event_time == parse_ts(by_uuid[uuid]["client_event_time"])


def test_a_bad_date_literal_names_the_accepted_forms(fast_sql) -> None:
    with pytest.raises(ProgrammingError, match=r'Unable to parse "20/11/2026".*ISO 8601.*2026-11-20 13:45:00'):
        fast_sql("SELECT count(*) FROM amplitude_sessions WHERE session_start >= '20/11/2026'")


def test_errors_are_the_same_on_both_paths(both) -> None:
    for sql in ("SELECT lenght_s FROM amplitude_sessions", "SELECT * FROM amplitude_nothing"):
        with pytest.raises(DBAPIError) as fast:
            both(sql)
        with pytest.raises(ProgrammingError) as generic:
            sql_connection(offline=True).cursor().execute(sql)
        assert str(generic.value) in str(fast.value)


def test_values_are_made_per_chunk_for_the_selected_rows_only(fast_sql, monkeypatch) -> None:
    """Small chunks: rows cross chunk borders whole, and only the selected rows' values are made."""
    monkeypatch.setattr(scan, "CHUNK_ROWS", 100)
    converted: list[int] = []
    original = scan.sqlite_values
    monkeypatch.setattr(columnar, "sqlite_values", lambda part: converted.append(len(part)) or original(part))
    (count,) = fast_sql(f"SELECT count(*) FROM amplitude_sessions WHERE {DAY}")[0]
    assert count > 300 and converted == []  # COUNT(*) reads no value: the time range was consumed
    rows = fast_sql(f"SELECT rowid, session_id, platform FROM amplitude_sessions WHERE {DAY}")
    assert [row[0] for row in rows] == list(range(count))
    assert max(converted) == 100 and sum(converted) == 2 * count  # two columns, each value made once


def test_a_union_reads_only_the_columns_the_outer_query_uses(fast_sql, monkeypatch) -> None:
    """The "Session definition" dataset (a UNION ALL) under a chart's aggregate: SQLite names every column of each
    branch's select list as used, but computes NULL for those the outer query leaves out (not under a WITH, a
    DISTINCT or an ORDER BY); only the columns it asks a value of are read from the store: the time range
    re-checked outside and the measure, not the user properties."""
    definitions = yaml.safe_load((DATASETS / "session_definitions.yaml").read_text())["sql"]
    read: list[str] = []
    original = scan.ScanTable._read_missing
    monkeypatch.setattr(scan.ScanTable, "_read_missing",
                        lambda table, names: read.extend(names) or original(table, names))
    rows = fast_sql(f"SELECT DATETIME(session_start, 'start of day'), definition, median(length_s) "
                    f"FROM ({definitions}) AS virtual_table WHERE {DAY} GROUP BY 1, 2")
    assert len(rows) == 3 and set(read) == {"session_start", "length_s"}


def test_a_store_failing_at_a_columns_first_read_is_an_operational_error(fast_sql, monkeypatch) -> None:
    """Columns are read on SQLite's first request for a value, inside the scan: a store that fails then is a fault
    (OperationalError, as when it fails while the scan starts), not the query's mistake."""
    def failing(table: scan.ScanTable, names: list[str]) -> None:
        raise StoreError("The hour store /somewhere could not be read: connection reset")

    monkeypatch.setattr(scan.ScanTable, "_read_missing", failing)
    with pytest.raises(OperationalError, match="^The hour store /somewhere could not be read"):
        fast_sql(f"SELECT avg(length_s) FROM amplitude_sessions WHERE {DAY}")


def test_cache_is_bounded_by_the_bytes_its_tables_hold() -> None:
    """Scan tables count their Arrow buffers (8 bytes a row per int64 column), growing as columns are read."""
    rows = 1_000
    stamps = pa.array(range(rows), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    stored = pa.table({"t": stamps, "x": pa.array(range(rows), pa.int64()), "y": pa.array(range(rows), pa.int64())})
    reads: list[list[str]] = []
    lazy = scan.ScanTable(lambda names: reads.append(names) or stored.select(names), "t")
    assert lazy.nbytes == 8 * rows  # the sort keys only
    whole = scan.ScanTable.of(stored, "t")
    assert whole.nbytes == 8 * rows + stored.nbytes
    cache = scan.TableCache(max_bytes=5 * 8 * rows)
    cache.put("whole", whole)
    cache.put("lazy", lazy)
    assert cache.get("whole") is whole  # 8 + 32 KB: within budget
    lazy.columns(["x", "y"])
    assert reads == [["t"], ["x", "y"]] and lazy.nbytes == 3 * 8 * rows
    cache.put("lazy", lazy)  # grown to 24 KB: 56 KB in all, over the 40 KB budget
    assert cache.get("whole") is None and cache.get("lazy") is lazy
