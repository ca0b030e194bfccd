"""The table cache under a background sync: tables of re-published hours are dropped, a table is made once
however many threads want it, and pyarrow's pool gives freed memory back (issue 18: a web process's RSS grew to
4-5 times the cache's bound while beat re-published the fresh hours every minute)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.feather as feather
from sqlalchemy import create_engine, text

from shillelagh_amplitude import memory
from shillelagh_amplitude.schema import EVENT_SCHEMA
from shillelagh_amplitude.sql import scan
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY

HOUR = timedelta(hours=1)
T0 = datetime(2026, 3, 1, 5, tzinfo=UTC)
ROWS = 100


def _table(sources: dict, rows: int = ROWS) -> scan.ScanTable:
    stamps = pa.array(range(rows), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return scan.ScanTable.of(pa.table({"t": stamps}), "t") if not sources else scan.ScanTable(
        None, "t", {"t": pa.chunked_array([stamps])}, sources=sources)


def test_a_table_of_a_replaced_file_version_is_dropped_when_the_new_one_is_put() -> None:
    """Every table reading a refreshed hour is rebuilt under a new key; the old ones can never be asked for again
    and no longer hold the budget until they are the oldest."""
    cache = scan.TableCache(max_bytes=1 << 30)
    final_only = _table({"h1": 1})
    old_day, old_week = _table({"h1": 1, "h2": 10}), _table({"h1": 1, "h2": 10, "h3": 5})
    for key, table in (("final only", final_only), ("day", old_day), ("week", old_week)):
        cache.put((key, 1), table)
    assert len(cache) == 3
    new_day = _table({"h1": 1, "h2": 11})  # h2 re-published by a sync
    cache.put(("day", 2), new_day)
    assert cache.get(("day", 1)) is None and cache.get(("week", 1)) is None
    assert cache.get(("final only", 1)) is final_only and cache.get(("day", 2)) is new_day
    assert len(cache) == 2 and cache.total_bytes == final_only.nbytes + new_day.nbytes


def test_a_table_read_before_a_republication_another_query_saw_is_not_kept() -> None:
    """A query that listed the hours before a sync finishes after one that listed them after: its table served it,
    and is not kept."""
    cache = scan.TableCache(max_bytes=1 << 30)
    cache.put(("new",), _table({"h2": 11}))
    late = _table({"h2": 10})
    cache.put(("old",), late)
    cache.put(("old",), late)  # again after its columns were read (AmplitudeAPI.select)
    assert cache.get(("old",)) is None and len(cache) == 1


def test_a_table_wanted_by_several_threads_at_once_is_made_once() -> None:
    """After a sync every chart of a dashboard asks at once for the same new table: one thread builds it, the
    others wait for it (each building its own copy multiplied the memory of a build by the threads)."""
    cache = scan.TableCache(max_bytes=1 << 30)
    made, started, release = [], threading.Event(), threading.Event()

    def make() -> scan.ScanTable:
        made.append(threading.current_thread().name)
        started.set()
        release.wait(10)
        return _table({"h": 1})

    results: dict[str, scan.ScanTable] = {}
    threads = [threading.Thread(target=lambda n=n: results.update({n: cache.get_or_make(("k",), make)}), name=n)
               for n in ("first", "second", "third")]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.2)  # the others are waiting now (if not, they find the table: made once all the same)
    release.set()
    for thread in threads:
        thread.join(10)
    assert made == ["first"] and len({id(table) for table in results.values()}) == 1


def _publish(store: HourStore, hour: datetime, event_type: str, fresh_at: datetime | None, rows: int = 3) -> None:
    """Publish ``hour`` holding ``rows`` events of ``event_type``: fresh, fetched at ``fresh_at``, or final."""
    staging = store.staging()
    staging.add(hour, pa.RecordBatch.from_pylist(
        [{"uuid": f"{event_type}-{hour:%H}-{i}", "event_type": event_type, "server_upload_time": hour,
          "event_time": hour} for i in range(rows)], schema=EVENT_SCHEMA))
    staging.close()
    store.publish(staging.folder, [hour], None if fresh_at is None else hour + HOUR, published_at=fresh_at)


def test_refreshing_a_fresh_hour_leaves_one_table_per_query_in_the_cache(tmp_path) -> None:
    """Through amplitude://: a sync re-publishing the fresh hour (new modification time) makes the query build a
    new table; the cache then holds that one only, not both (it held one more after every sync)."""
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)
    _publish(store, T0 - HOUR, "final", None)
    refreshed_at = datetime.now(UTC) - timedelta(minutes=5)
    _publish(store, T0, "fresh", refreshed_at)
    engine = create_engine("amplitude://?offline=true", api_key=API_KEY, secret_key=SECRET_KEY,
                           cache_dir=str(tmp_path))
    sql = ("SELECT event_type, count(*) FROM amplitude_events "
           f"WHERE server_upload_time >= '{T0 - HOUR:%Y-%m-%d %H:%M}' "
           f"AND server_upload_time < '{T0 + HOUR:%Y-%m-%d %H:%M}' "
           "GROUP BY 1 ORDER BY 1")

    def run() -> list[tuple]:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]

    assert run() == [("final", 3), ("fresh", 3)]
    assert [entry.name for entry in store.files([T0 - HOUR, T0], datetime.now(UTC))] == ["04.arrow", "05.fresh.arrow"]
    assert len(scan.TABLE_CACHE) == 1
    for refresh in range(1, 4):  # three syncs, one with more events
        _publish(store, T0, "fresh", refreshed_at + refresh * timedelta(seconds=60), rows=3 + refresh)
        assert run() == [("final", 3), ("fresh", 3 + refresh)]
        assert len(scan.TABLE_CACHE) == 1


def test_the_pool_gives_freed_memory_back_unless_the_operator_chose_one(monkeypatch) -> None:
    """mimalloc, pyarrow's default on Linux, kept the pages of every evicted table and every build: the process
    stayed near its high-water mark."""
    chosen = pa.default_memory_pool()
    try:
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
        pa.set_memory_pool(pa.mimalloc_memory_pool())
        assert memory.use_returning_pool() == "jemalloc"
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
        pa.set_memory_pool(pa.system_memory_pool())
        assert memory.use_returning_pool() == "system"  # the operator's choice is kept
    finally:
        pa.set_memory_pool(chosen)


def test_stored_files_are_decompressed_into_the_pool_python_chose(tmp_path) -> None:
    """``feather.read_table`` decompresses into the C++ default pool, which ``pa.set_memory_pool`` does not change:
    the hours and derived tables, most of the memory, stayed in mimalloc."""
    stored = pa.table({"a": pa.array(range(100_000), pa.int64()), "b": pa.array([str(i) for i in range(100_000)])})
    path = tmp_path / "hour.arrow"
    feather.write_feather(stored, path, compression="zstd")
    chosen, system = pa.default_memory_pool(), pa.system_memory_pool()  # a singleton: outlives every buffer
    try:
        pa.set_memory_pool(system)
        before = system.bytes_allocated()
        table = memory.read_table(str(path), ["b", "a"])
        assert table.column_names == ["b", "a"] and table.equals(stored.select(["b", "a"]))
        assert system.bytes_allocated() - before >= stored.nbytes
        assert memory.read_table(path, ["a"]).nbytes == stored["a"].nbytes  # only those columns; a Path too
    finally:
        pa.set_memory_pool(chosen)
