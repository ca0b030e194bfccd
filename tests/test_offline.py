"""Offline, a query is answered from its whole range or refused: hours missing inside the stored span are named,
and fresh hours (which nothing refreshes offline) are served however old, as the stored span counts them."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from shillelagh.exceptions import ProgrammingError

from shillelagh_amplitude.export.loader import load_archive, stage_archive
from shillelagh_amplitude.hours import HOUR, whole_days_end
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .helpers import export_zip

DAY = timedelta(days=1)
START = datetime(2026, 3, 1, tzinfo=UTC)


def events_every_hour(first: datetime, hours: int) -> list[dict]:
    """Two events uploaded in each of ``hours`` hours from ``first``."""
    return [make_event(amplitude_id=n, server_upload_time=first + n // 2 * HOUR + timedelta(minutes=n % 2 * 20))
            for n in range(2 * hours)]


def test_hours_missing_inside_the_stored_span_are_named(tmp_path):
    """Two loads with a day between them: the span's two ends are stored, the day between them is not."""
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    for day in (START, START + 2 * DAY):
        load_archive(store, export_zip(tmp_path, events_every_hour(day, 24), f"{day:%d}.zip"), day, day + 23 * HOUR)
    cursor = sql_connection(cache_dir=str(tmp_path), offline=True).cursor()
    with pytest.raises(ProgrammingError) as error:
        cursor.execute("SELECT count(*) FROM amplitude_events "
                       "WHERE server_upload_time >= '2026-03-01' AND server_upload_time < '2026-03-04'")
    assert str(error.value) == (
        "This connection is offline and its store is missing 24 of the upload hours 2026-03-01T00:00 to "
        "2026-03-03T23:00 UTC that this query (server_upload_time from 2026-03-01 to 2026-03-04 UTC) needs: "
        "2026-03-02T00:00 to 2026-03-02T23:00 UTC. It is not answered from the stored part. Load the missing hours "
        "(amplitude-load --start … --end … records the hours without events as stored; or amplitude-sync on a "
        "connection that is not offline), or narrow the time range.")
    # the stored days themselves are answered, and so is the range once the day between them is loaded
    assert cursor.execute("SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2026-03-03' "
                          "AND server_upload_time < '2026-03-04'").fetchall() == [(48,)]
    load_archive(store, export_zip(tmp_path, events_every_hour(START + DAY, 24), "02.zip"), START + DAY,
                 START + DAY + 23 * HOUR)
    assert cursor.execute("SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2026-03-01' "
                          "AND server_upload_time < '2026-03-04'").fetchall() == [(144,)]


def test_fresh_hours_are_served_offline_however_old(tmp_path):
    """An hour stored fresh (by a sync shortly after it was uploaded) whose 10 minutes passed long ago: offline,
    where nothing refreshes it, it is served like the final hours around it, not silently left out."""
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    fresh = START + 5 * HOUR
    for first, last in ((START, fresh - HOUR), (fresh + HOUR, START + 11 * HOUR)):  # the hours around it: final
        archive = export_zip(tmp_path, events_every_hour(first, (last - first) // HOUR + 1), f"{first:%H}.zip")
        load_archive(store, archive, first, last)
    folder = store.staging().folder
    stage_archive(export_zip(tmp_path, events_every_hour(fresh, 1), "fresh.zip"), folder, fresh, fresh)
    store.publish(folder, [fresh], now=fresh + 2 * HOUR)  # then not final: kept as fresh
    [published] = (store.root / "20260301").glob("05.fresh.arrow")
    long_ago = (START + DAY).timestamp()
    os.utime(published, (long_ago, long_ago))
    cursor = sql_connection(cache_dir=str(tmp_path), offline=True).cursor()
    assert cursor.execute("SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2026-03-01' "
                          "AND server_upload_time < '2026-03-01T12:00'").fetchall() == [(24,)]


def test_the_default_window_is_answered_from_a_store_of_whole_days(tmp_path):
    """No time predicate (the dashboard's "No filter"): the default window reaches the present, which no offline
    store holds; a store of the window's whole days, as the demo loads it, answers it."""
    end = whole_days_end(datetime.now(UTC))
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    first = end - 3 * DAY
    load_archive(store, export_zip(tmp_path, events_every_hour(first, 72), "days.zip"), first, end - HOUR)
    cursor = sql_connection(cache_dir=str(tmp_path), offline=True, default_days=3).cursor()
    # every event but the first, which happened 2 s before the window (uploaded at its start); one session each
    assert cursor.execute("SELECT count(*) FROM amplitude_events").fetchall() == [(143,)]
    assert cursor.execute("SELECT count(*) FROM amplitude_sessions").fetchall() == [(143,)]



def _store_with_a_fresh_hour(tmp_path) -> tuple[HourStore, datetime]:
    """Hours 00..11 of START, two events each, hour 05 stored fresh (as a sync leaves a recent hour)."""
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)  # as amplitude-load leaves it
    fresh = START + 5 * HOUR
    events = events_every_hour(START, 12)
    load_archive(store, export_zip(tmp_path, events[:10], "early.zip"), START, fresh - HOUR)
    load_archive(store, export_zip(tmp_path, events[12:], "late.zip"), fresh + HOUR, START + 11 * HOUR)
    folder = store.staging().folder
    stage_archive(export_zip(tmp_path, events[10:12], "fresh.zip"), folder, fresh, fresh)
    store.publish(folder, [fresh], now=fresh + 2 * HOUR)  # not final then: kept as fresh, under another name
    assert [path.name for path in (store.root / "20260301").glob("05*.arrow")] == ["05.fresh.arrow"]
    return store, fresh


QUERIES = {
    "events": "SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '2026-03-01' "
              "AND server_upload_time < '2026-03-01T12:00'",
    "sessions": "SELECT count(*), sum(event_count) FROM amplitude_sessions WHERE session_start >= '2026-03-01' "
                "AND session_start < '2026-03-01T06:00'",
}


@pytest.mark.parametrize("table", QUERIES)
def test_an_hour_republished_between_listing_and_read_is_listed_again(tmp_path, monkeypatch, table):
    """The background sync re-publishes recent hours while web queries read them: a query whose listed file was
    replaced before its read lists the store again and answers as a query on the quiet store does."""
    from shillelagh_amplitude.sql import scan

    store, fresh = _store_with_a_fresh_hour(tmp_path)
    read_files, reads = HourStore.read_files, []

    def republish_first(self, entries, columns=None):
        reads.append([Path(entry.path).name for entry in entries if Path(entry.path).name.startswith("05")])
        if len(reads) == 1:  # hour 05 becomes final (05.arrow), as a sync publishes it, after the listing
            folder = store.staging().folder
            stage_archive(export_zip(tmp_path, events_every_hour(START, 12)[10:12], "final.zip"), folder, fresh,
                          fresh)
            store.publish(folder, [fresh], now=fresh + 4 * HOUR)
        return read_files(self, entries, columns)

    monkeypatch.setattr(HourStore, "read_files", republish_first)
    scan.TABLE_CACHE.clear()
    answer = sql_connection(cache_dir=str(tmp_path), offline=True).cursor().execute(QUERIES[table]).fetchall()
    assert reads[:2] == [["05.fresh.arrow"], ["05.arrow"]]  # read, refused, listed again
    monkeypatch.setattr(HourStore, "read_files", read_files)
    scan.TABLE_CACHE.clear()
    quiet = sql_connection(cache_dir=str(tmp_path), offline=True).cursor().execute(QUERIES[table]).fetchall()
    assert answer == quiet and answer[0][0] > 0
    if table == "events":
        assert answer == [(24,)]


def test_a_store_changing_at_every_listing_is_refused_after_the_last(tmp_path, monkeypatch):
    """A store re-published at every read: the query lists it ``LISTINGS`` times, then asks to be run again."""
    from shillelagh_amplitude.sql import scan
    from shillelagh_amplitude.sql.adapter import LISTINGS

    _store_with_a_fresh_hour(tmp_path)
    reads = []

    def gone(self, entries, columns=None):
        reads.append(len(entries))
        raise FileNotFoundError(entries[0].path)

    monkeypatch.setattr(HourStore, "read_files", gone)
    scan.TABLE_CACHE.clear()
    cursor = sql_connection(cache_dir=str(tmp_path), offline=True).cursor()
    with pytest.raises(ProgrammingError, match=r"^The hour store changed while this query read it; run the query "):
        cursor.execute(QUERIES["events"])
    assert len(reads) == LISTINGS == 3
