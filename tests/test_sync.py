"""Keeping a store current: the store lock, concurrent syncs, re-reading non-final hours, the download budget."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from shillelagh.exceptions import ProgrammingError

from shillelagh_amplitude.cli import sync_main
from shillelagh_amplitude.export.sync import sync_project, sync_range
from shillelagh_amplitude.hours import HOUR, floor_hour, format_hour, hour_range, newest_exportable_hour, parse_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset
from shillelagh_amplitude.store.hour_store import HourStore
from shillelagh_amplitude.store.lock import LockTimeout

from .conftest import API_KEY, SECRET_KEY, sql_connection
from .expected import sessions_from_records
from .helpers import parse_ts, read_dataset

HOLD_LOCK = """
import sys, time
from shillelagh_amplitude.store.hour_store import HourStore
HourStore(sys.argv[1], "https://amplitude.com", "k").lock().acquire()
print("held", flush=True)
time.sleep(600)
"""


def requested_hours(requests) -> list[datetime]:
    """Every upload hour the emulator was asked for (a window counts each of its hours)."""
    return [hour for r in requests if r.start for hour in hour_range(parse_hour(r.start), parse_hour(r.end))]


def test_store_lock_excludes_other_processes_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = HourStore(tmp_path, "https://amplitude.com", "k").lock()
        started = time.monotonic()
        with pytest.raises(LockTimeout, match=rf"being filled by process {holder.pid} on "):
            lock.acquire(timeout=0.5)
        assert 0.5 <= time.monotonic() - started < 2
        os.kill(holder.pid, signal.SIGKILL)  # a crashed holder: no clean-up of its own
        holder.wait()
        started = time.monotonic()
        lock.acquire(timeout=5)
        assert time.monotonic() - started < 1
        assert lock.holder()["pid"] == os.getpid()
        lock.release()
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture(scope="module")
def live_project(tmp_path_factory):
    """Two days of events through the current hour behind the emulator (latency 2 h, as Amplitude)."""
    data = tmp_path_factory.mktemp("recent")
    end = floor_hour(datetime.now(UTC))
    generate_dataset(data, end - timedelta(days=2), end, events=3000, seed=3)
    with ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as emulator:
        yield emulator


def run_sync(emulator: ExportEmulator, cache: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "amplitude-sync"), *args, "--api-key", API_KEY,
         "--base-url", emulator.base_url, "--cache-dir", cache],
        env={**os.environ, "AMPLITUDE_SECRET_KEY": SECRET_KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )


def test_two_syncs_at_once_download_each_hour_once_then_only_non_final_hours(tmp_path, live_project):
    live_project.clear_requests()
    live_project.add_fault("slow", times=3, delay=0.5)  # both processes are surely running at once
    syncs = [run_sync(live_project, str(tmp_path), "--days", "2") for _ in range(2)]
    outputs = [sync.communicate(timeout=120) for sync in syncs]
    assert [sync.returncode for sync in syncs] == [0, 0], outputs
    now = datetime.now(UTC)
    newest_exportable = floor_hour(now) - timedelta(hours=3)  # the emulator's: hour + 1 h + 2 h <= now
    midnight = floor_hour(now - timedelta(hours=2)).replace(hour=0)  # whole days: those whose 23:00 is exportable
    # the two days, the 48 h look-back of user sessions and the hour of clocks running ahead before them
    expected = list(hour_range(midnight - timedelta(days=2, hours=48) - HOUR, newest_exportable))
    hours = requested_hours(live_project.requests)
    assert Counter(hours) == Counter(expected)  # every hour once, none twice
    summaries = sorted(out for out, _ in outputs)
    assert re.search(rf"amplitude-sync: project \w+ at {re.escape(live_project.base_url)}: upload hours "
                     rf"{format_hour(expected[0])}..{format_hour(expected[-1])} \({len(expected)} hours\) current; "
                     rf"0 hours downloaded in 0 requests", summaries[0]), summaries
    assert f"{len(expected)} hours downloaded in" in summaries[1]
    # both progress bars end complete over the hours of the range, stored already or downloaded
    assert all(f" {len(expected)}/{len(expected)} " in err.strip().split("\r")[-1] for _, err in outputs), outputs

    # the store is current: a second sync re-reads only the hours that are not final yet (hour + 4 h > now)
    live_project.clear_requests()
    again = run_sync(live_project, str(tmp_path), "--days", "2")
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    non_final = [hour for hour in expected if hour + HOUR * 4 > datetime.now(UTC)]
    assert non_final and requested_hours(live_project.requests) == non_final
    assert f"{len(non_final)} hours downloaded in {len(live_project.requests)} requests" in out


#: A beat interval whose two runs (what a query lets the sync miss) are exactly one hour.
HALF_HOUR_S = 1800.0


def count_events(cache: Path, emulator: ExportEmulator, since: datetime, **settings) -> int:
    cursor = sql_connection(cache_dir=str(cache), base_url=emulator.base_url, **settings).cursor()
    return cursor.execute(f"SELECT count(*) FROM amplitude_events WHERE event_time >= '{since:%Y-%m-%dT%H:%M}'"
                          ).fetchall()[0][0]


def fresh_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*/*.fresh.*"))


def fresh_hours(cache: Path) -> list[datetime]:
    """The hours a store holds fresh (not final), from its file names (``<day>/<HH>.fresh.*``)."""
    return sorted(parse_hour(f"{path.parent.name}T{path.name[:2]}") for path in fresh_files(cache))


def test_queries_served_by_a_background_sync_leave_it_the_newest_hours(tmp_path, live_project):
    """With ``sync_interval_s`` (Superset with Celery beat), the hour that became exportable since the sync's last
    run, and the refresh of fresh hours that expired since, are the sync's to download: a query reads what the sync
    stored (the offline answer of the same store) and downloads only what the sync has missed for two runs."""
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 45:  # the test's hours and the queries' must be those of one hour
        time.sleep(20)
        now = datetime.now(UTC)
    since = floor_hour(now) - timedelta(hours=20)

    def synced(name: str, at: datetime) -> Path:
        cache = tmp_path / name
        sync_project(API_KEY, SECRET_KEY, base_url=live_project.base_url, cache_dir=str(cache), days=2, now=at)
        live_project.clear_requests()
        return cache

    # the store as the sync left it an hour ago: the hour exportable since then is not in it, and its fresh hours
    # were published an hour ago (expired for a query on its own: FRESH_TTL, 10 minutes)
    cache = synced("hour-ago", now - HOUR)
    stored = count_events(cache, live_project, since, offline=True)
    assert count_events(cache, live_project, since, sync_interval_s=HALF_HOUR_S) == stored
    assert live_project.requests == []
    # a query without a background sync downloads them itself
    expired = fresh_hours(cache)
    assert expired
    assert count_events(cache, live_project, since) > stored
    assert requested_hours(live_project.requests) == [*expired, newest_exportable_hour(now)]

    # a sync that missed two runs: the query refreshes its fresh hours and downloads the hour it missed, and
    # leaves it the newest
    cache = synced("two-hours-ago", now - 2 * HOUR)
    expired = fresh_hours(cache)
    count_events(cache, live_project, since, sync_interval_s=HALF_HOUR_S)
    assert requested_hours(live_project.requests) == [*expired, newest_exportable_hour(now) - HOUR]

    # fresh hours the sync stored 15 minutes ago
    cache = synced("current", now)
    assert fresh_files(cache)
    for path in fresh_files(cache):
        os.utime(path, (time.time() - 15 * 60,) * 2)
    stored = count_events(cache, live_project, since, offline=True)
    assert count_events(cache, live_project, since, sync_interval_s=HALF_HOUR_S) == stored
    assert live_project.requests == []
    count_events(cache, live_project, since)
    assert requested_hours(live_project.requests) == fresh_hours(cache)


def test_sync_failure_is_a_readable_message_and_exit_code(tmp_path, live_project, monkeypatch, capsys):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "not-the-secret-1234")
    assert sync_main(["--days", "1", "--api-key", API_KEY, "--base-url", live_project.base_url,
                      "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "amplitude-sync: error: Amplitude rejected the credentials (403" in err
    assert "not-the-secret-1234" not in err
    assert sync_main(["--days", "1", "--api-key", API_KEY, "--base-url", "http://127.0.0.1:9",
                      "--cache-dir", str(tmp_path)]) == 2
    assert "amplitude-sync: error: Could not reach Amplitude's Export API at http://127.0.0.1:9: the connection " \
           "was refused" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        sync_main(["--days", "1", "--start", "2026-03-01", "--api-key", API_KEY])
    assert "give either --days N or both --start and --end" in capsys.readouterr().err


BUDGET_S = 4.0


def test_over_budget_fails_keeps_complete_hours_then_sync_makes_it_exact(tmp_path, emulator, dataset, capsys):
    """A slow Export API: a query over 25 days fails within budget + 5 s, keeping only complete hours; after the
    amplitude-sync command it names, the same query is exact."""
    emulator.add_fault("slow", times=1000, delay=0.8)
    sql = ("SELECT count(*) FROM amplitude_sessions "
           "WHERE session_start >= '2026-02-10' AND session_start < '2026-03-07'")
    cursor = sql_connection(cache_dir=str(tmp_path), base_url=emulator.base_url, download_budget_s=BUDGET_S).cursor()
    started = time.monotonic()
    with pytest.raises(ProgrammingError) as error:
        cursor.execute(sql)
    elapsed = time.monotonic() - started
    assert BUDGET_S <= elapsed < BUDGET_S + 5
    message = str(error.value)
    store = HourStore(tmp_path, emulator.base_url, API_KEY)
    needed = list(hour_range(datetime(2026, 2, 9, 23, tzinfo=UTC), datetime(2026, 3, 9, 23, tzinfo=UTC)))
    stored = [hour for hour in needed if store.has(hour, datetime.now(UTC))]
    assert 0 < len(stored) < len(needed)
    assert (f"{len(stored)} of the {len(needed)} upload hours it needs (2026-02-09T23:00 to 2026-03-09T23:00 UTC) "
            "are stored, and this connection's download budget of 4 s ran out") in message
    assert "No partial answer is given. The background sync is filling the store" in message
    command = (f"amplitude-sync --start 2026-02-09T23:00 --end 2026-03-09T23:00 --base-url {emulator.base_url}")
    assert message.endswith(command) and SECRET_KEY not in message
    # only complete hours: each stored hour holds exactly the events Amplitude exported for it
    uploads = Counter(floor_hour(parse_ts(r["server_upload_time"])) for r in dataset.records)
    assert {hour: store.read([hour], datetime.now(UTC)).num_rows for hour in stored} == {
        hour: uploads.get(hour, 0) for hour in stored}
    requested = set(requested_hours(emulator.requests))
    assert set(stored) <= requested
    assert len(requested - set(stored)) <= 24  # the window being downloaded when the budget ran out is dropped

    # a retry continues where the last one stopped: nothing stored is asked again
    asked = len(emulator.requests)
    with pytest.raises(ProgrammingError, match="download budget of 4 s ran out"):
        cursor.execute(sql)
    assert not set(requested_hours(emulator.requests[asked:])) & set(stored)

    emulator.clear_faults()
    os.environ["AMPLITUDE_SECRET_KEY"] = SECRET_KEY
    try:
        args = command.split()[1:] + ["--api-key", API_KEY, "--cache-dir", str(tmp_path)]
        assert sync_main(args) == 0
    finally:
        del os.environ["AMPLITUDE_SECRET_KEY"]
    low, high = datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC)
    expected = sum(1 for s in sessions_from_records(read_dataset(dataset.data_dir)) if low <= s.start < high)
    asked = len(emulator.requests)
    assert cursor.execute(sql).fetchall() == [(expected,)] and expected > 1000
    assert len(emulator.requests) == asked  # answered from the store


@pytest.mark.parametrize(
    ("now", "first", "last"),
    [
        ("2026-12-01T14:10", "2026-11-26T23", "2026-12-01T11"),
        ("2026-12-01T02:00", "2026-11-26T23", "2026-11-30T23"),  # 11-30T23 exportable: 11-30 is a whole day
        ("2026-12-01T01:59", "2026-11-25T23", "2026-11-30T22"),  # not yet: the two days end on 11-30
    ],
)
def test_sync_range_covers_the_whole_days_the_export_holds(tmp_path, now, first, last):
    """Two days back from the end of the newest whole UTC day the Export API serves (hour H from H + 3 h), less
    the 48 h look-back of user sessions and the hour of devices whose clock runs ahead, through the newest
    exportable hour."""
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    span = sync_range(store, datetime.fromisoformat(now).replace(tzinfo=UTC), default_days=30, days=2)
    assert tuple(f"{hour:%Y-%m-%dT%H}" for hour in span) == (first, last)
