"""The Export API client and the store filler against the live emulator: every fault ends complete or clearly."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import billiard
import pytest

from shillelagh_amplitude.export.client import (
    AmplitudeError,
    AuthenticationError,
    ExportClient,
    ExportTooLargeError,
    resolve_base_url,
)
from shillelagh_amplitude.export.loader import DownloadBudgetExceeded, fill
from shillelagh_amplitude.hours import format_hour, hour_range, parse_hour
from shillelagh_amplitude.store.hour_store import FRESH_TTL, HourStore

from .conftest import API_KEY, SECRET_KEY, client_for
from .helpers import parse_ts

FIRST = datetime(2026, 3, 2, tzinfo=UTC)
LAST = datetime(2026, 3, 3, 23, tzinfo=UTC)
NOW = datetime.now(UTC)


def _expected_by_hour(records, first=FIRST, last=LAST) -> Counter:
    counts = Counter()
    for record in records:
        hour = parse_ts(record["server_upload_time"]).replace(minute=0, second=0, microsecond=0)
        if first <= hour <= last:
            counts[hour] += 1
    return counts


def _stored_by_hour(store: HourStore, first=FIRST, last=LAST) -> Counter:
    table = store.read(hour_range(first, last), NOW, ["server_upload_time", "uuid"])
    assert len(set(table["uuid"].to_pylist())) == table.num_rows  # nothing stored twice
    return Counter(t.replace(minute=0, second=0, microsecond=0) for t in table["server_upload_time"].to_pylist())


def _windows(emulator) -> list[tuple[str, str, int]]:
    return [(r.start, r.end, r.status) for r in emulator.requests]


def _assert_tiles(emulator, first=FIRST, last=LAST) -> None:
    """Successful requests cover every hour of the range exactly once."""
    hours = [h for start, end, status in _windows(emulator) if status in (200, 404)
             for h in hour_range(parse_hour(start), parse_hour(end))]
    assert sorted(hours) == list(hour_range(first, last))


def test_fill_tiles_windows_and_stores_every_event(tmp_path, dataset, emulator):
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    report = fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert _windows(emulator) == [("20260302T00", "20260302T23", 200), ("20260303T00", "20260303T23", 200)]
    assert _stored_by_hour(store) == _expected_by_hour(dataset.records)
    assert report.hours_downloaded == 48
    emulator.clear_requests()
    again = fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert emulator.requests == [] and again.hours_downloaded == 0


def _fill_in_this_process(cache_dir: str, base_url: str, results) -> None:
    """Run in a daemonic child: a fill of several windows with two decode workers; its report, or its error."""
    try:
        client = ExportClient(API_KEY, SECRET_KEY, base_url=base_url, backoff=0.01)
        report = fill(HourStore(cache_dir, base_url, API_KEY), client, FIRST, LAST, now=NOW, window_hours=12,
                      decode_workers=2)
        results.put((len(report.windows), report.hours_downloaded, report.events))
    except BaseException as exc:  # reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("context", [multiprocessing.get_context("fork"), billiard.get_context("fork")],
                         ids=["multiprocessing", "billiard"])
def test_fill_inside_a_daemonic_process_decodes_every_window(tmp_path, dataset, emulator, context):
    """A Celery prefork worker (billiard) is daemonic: it may not start decode processes, yet fills completely."""
    results = context.Queue()
    child = context.Process(target=_fill_in_this_process, args=(str(tmp_path), emulator.base_url, results),
                            daemon=True)
    child.start()
    outcome = results.get(timeout=120)
    child.join(timeout=30)
    expected = _expected_by_hour(dataset.records)
    assert outcome == (4, 48, sum(expected.values()))
    assert child.exitcode == 0
    assert _stored_by_hour(HourStore(tmp_path, emulator.base_url, API_KEY)) == expected
    _assert_tiles(emulator)


def test_fresh_hours_are_valid_for_their_ttl_from_publication(tmp_path, emulator):
    """A download that took long publishes its fresh hours valid for FRESH_TTL from then, not from its start."""
    now = datetime(2026, 3, 3, 12, 30, tzinfo=UTC)  # the newest exportable hour, 09:00, is final at 13:00
    final, fresh = datetime(2026, 3, 3, 8, tzinfo=UTC), datetime(2026, 3, 3, 9, tzinfo=UTC)
    store = HourStore(tmp_path, emulator.base_url, API_KEY)
    delay = 1.5
    emulator.add_fault("slow", delay=delay)
    started = time.monotonic()
    report = fill(store, client_for(emulator), final, fresh, now=now)
    took = time.monotonic() - started
    assert report.hours_downloaded == 2 and _windows(emulator) == [("20260303T08", "20260303T09", 200)]
    assert delay <= took < delay + 5
    # when hours stamped with the fill's start would have expired, these are valid: published >= 1.5 s later
    assert store.missing([final, fresh], now + FRESH_TTL + timedelta(seconds=delay / 2)) == []
    # FRESH_TTL after the fill ended, the fresh hour is due again; the final one never
    assert store.missing([final, fresh], now + FRESH_TTL + timedelta(seconds=took + 0.1)) == [fresh]


def test_only_missing_hours_are_fetched(tmp_path, emulator):
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    fill(store, client_for(emulator), FIRST + timedelta(hours=5), FIRST + timedelta(hours=9), now=NOW)
    emulator.clear_requests()
    fill(store, client_for(emulator), FIRST, FIRST + timedelta(hours=30), now=NOW, window_hours=12)
    assert _windows(emulator) == [
        ("20260302T00", "20260302T04", 200),
        ("20260302T10", "20260302T21", 200),
        ("20260302T22", "20260303T06", 200),
    ]


def test_empty_window_is_404_and_remembered(tmp_path, emulator):
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    empty_first, empty_last = datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, 23, tzinfo=UTC)
    fill(store, client_for(emulator), empty_first, empty_last, now=NOW)
    assert _windows(emulator) == [("20250101T00", "20250101T23", 404)]
    assert store.missing(hour_range(empty_first, empty_last), NOW) == []
    emulator.clear_requests()
    fill(store, client_for(emulator), empty_first, empty_last, now=NOW)
    assert emulator.requests == []


def test_too_large_windows_are_halved(tmp_path, dataset, emulator):
    emulator.max_window_hours = 5
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    statuses = Counter(status for _, _, status in _windows(emulator))
    assert statuses[400] > 0 and set(statuses) == {200, 400}
    assert _windows(emulator)[:3] == [
        ("20260302T00", "20260302T23", 400),
        ("20260302T00", "20260302T11", 400),
        ("20260302T00", "20260302T05", 400),
    ]
    _assert_tiles(emulator)
    assert _stored_by_hour(store) == _expected_by_hour(dataset.records)


def test_504_windows_are_halved(tmp_path, dataset, emulator):
    emulator.timeout_window_hours = 12
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert [status for _, _, status in _windows(emulator)] == [504, 200, 200, 504, 200, 200]
    assert _stored_by_hour(store) == _expected_by_hour(dataset.records)


def test_an_hour_too_large_alone_fails_clearly_and_stores_nothing_partial(tmp_path, dataset, emulator):
    bad = FIRST + timedelta(hours=7)
    emulator.too_large_hours = {bad}
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    with pytest.raises(ExportTooLargeError, match=r"upload hour 20260302T07 .* Amazon S3 export .*amplitude-load"):
        fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert bad in store.missing([bad], NOW)
    stored = _stored_by_hour(store)
    expected = _expected_by_hour(dataset.records)
    assert all(stored[hour] == expected[hour] for hour in stored)  # every stored hour is complete


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_transient_statuses_are_retried(tmp_path, dataset, emulator, status):
    emulator.add_fault("status", status=status, retry_after=1 if status == 429 else None, times=2)
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert [s for _, _, s in _windows(emulator)] == [status, status, 200, 200]
    assert _stored_by_hour(store) == _expected_by_hour(dataset.records)


def test_retries_are_bounded(tmp_path, emulator):
    emulator.add_fault("status", status=429, retry_after=1, times=50)
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    with pytest.raises(AmplitudeError, match="kept answering 429"):
        fill(store, client_for(emulator, retries=3), FIRST, LAST, now=NOW)
    assert len(emulator.requests) == 4
    assert store.missing(hour_range(FIRST, LAST), NOW) == list(hour_range(FIRST, LAST))


def test_retry_after_is_honoured(tmp_path, emulator):
    emulator.add_fault("status", status=429, retry_after=1, times=1)
    started = datetime.now(UTC)
    fill(HourStore(tmp_path, emulator.base_url, "k"), client_for(emulator), FIRST, FIRST, now=NOW)
    assert datetime.now(UTC) - started >= timedelta(seconds=1)


def test_a_long_retry_after_is_capped_on_every_retry(tmp_path, emulator):
    """``max_retry_after`` holds for the second and third 429 too (urllib3 copies its retry at each attempt)."""
    emulator.add_fault("status", status=429, retry_after=30, times=3)
    started = time.monotonic()
    fill(HourStore(tmp_path, emulator.base_url, "k"), client_for(emulator, max_retry_after=0.5), FIRST, FIRST, now=NOW)
    assert 1.5 <= time.monotonic() - started < 10
    assert [r.status for r in emulator.requests] == [429, 429, 429, 200]


@pytest.mark.parametrize(("fault", "backoff"), [
    ({"kind": "slow", "delay": 4.0}, 0.01),  # answered after 4 s
    ({"kind": "status", "status": 429, "retry_after": 4}, 0.01),  # "retry in 4 s"
    ({"kind": "status", "status": 503}, 4.0),  # retried after a 4 s, 8 s, ... backoff
])
def test_the_deadline_stops_a_slow_or_throttled_request(tmp_path, emulator, fault, backoff):
    """With a deadline 1 s away, a request Amplitude answers late, or retries that would wait past it, are dropped
    at the deadline: the fill says how far it got, and nothing of that window is stored."""
    emulator.add_fault(times=10, **fault)
    store = HourStore(tmp_path, emulator.base_url, "k")
    started = time.monotonic()
    with pytest.raises(DownloadBudgetExceeded) as error:
        fill(store, client_for(emulator, max_retry_after=10.0, backoff=backoff), FIRST, LAST, now=NOW,
             window_hours=12, deadline=started + 1.0)
    assert 1.0 <= time.monotonic() - started < 2.5
    assert (error.value.stored, error.value.wanted) == (0, 48)
    assert store.missing(list(hour_range(FIRST, LAST)), NOW) == list(hour_range(FIRST, LAST))


@pytest.mark.parametrize("kind", ["not_zip", "truncated", "short_body", "corrupt_gzip", "bad_json"])
def test_broken_bodies_are_downloaded_again(tmp_path, dataset, emulator, kind):
    emulator.add_fault(kind, times=2)
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert [s for _, _, s in _windows(emulator)] == [200, 200, 200, 200]
    assert _stored_by_hour(store) == _expected_by_hour(dataset.records)


@pytest.mark.parametrize("kind", ["not_zip", "truncated", "short_body", "corrupt_gzip", "bad_json"])
def test_broken_bodies_fail_clearly_and_store_nothing(tmp_path, emulator, kind):
    emulator.add_fault(kind, times=10)
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    with pytest.raises(AmplitudeError, match=r"20260302T00\.\.20260302T23 .*(unreadable|broke off) 3 times"):
        fill(store, client_for(emulator), FIRST, LAST, now=NOW, window_hours=24)
    assert store.missing(hour_range(FIRST, LAST), NOW) == list(hour_range(FIRST, LAST))
    assert not [p for p in store.root.rglob("*") if p.is_file() and p.name != ".download.lock"]  # the lock stays


def test_wrong_credentials_explain_key_and_region_without_the_secret(tmp_path, emulator):
    store = HourStore(tmp_path, emulator.base_url, "test-key")
    wrong = "wrong-secret-123"
    with pytest.raises(AuthenticationError) as error:
        fill(store, client_for(emulator, secret_key=wrong), FIRST, LAST, now=NOW)
    message = str(error.value)
    assert "403" in message and "Invalid API Key" in message and "region" in message
    assert wrong not in message and SECRET_KEY not in message
    assert [(r.status, r.authorized) for r in emulator.requests] == [(403, False)]


def test_newest_hours_are_not_requested_before_amplitude_can_export_them(tmp_path, emulator):
    now = datetime(2026, 3, 3, 10, 30, tzinfo=UTC)
    fill(HourStore(tmp_path, emulator.base_url, "k"), client_for(emulator), FIRST, now, now=now)
    assert max(end for _, end, _ in _windows(emulator)) == format_hour(datetime(2026, 3, 3, 7, tzinfo=UTC))


def test_region_hosts():
    assert resolve_base_url("us") == "https://amplitude.com"
    assert resolve_base_url("EU") == "https://analytics.eu.amplitude.com"
    assert resolve_base_url("eu", "http://proxy.local/") == "http://proxy.local"
    with pytest.raises(AmplitudeError, match="Unknown region"):
        resolve_base_url("apac")


def test_the_connection_test_does_not_read_the_hour_it_asks_for(tmp_path):
    """Amplitude answers 200 with a whole hour of events (here 1 GB announced, sent slowly): the connection test
    takes the status and leaves at once, instead of downloading the hour inside a web request."""
    import http.server
    import threading
    import time

    from shillelagh_amplitude.export.probe import READ_TIMEOUT_S, check_connection

    sent: list[int] = []

    class Hour(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server name
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(1 << 30))
            self.end_headers()
            try:
                for _ in range(int(READ_TIMEOUT_S * 4)):
                    self.wfile.write(b"PK" + bytes(4094))
                    self.wfile.flush()
                    sent.append(4096)
                    time.sleep(0.5)
            except OSError:
                pass  # the client left

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hour)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        result = check_connection("key", SECRET_KEY, base_url=f"http://127.0.0.1:{server.server_address[1]}",
                                   cache_dir=str(tmp_path))
        took = time.monotonic() - started
    finally:
        server.shutdown()
    assert result.startswith("Amplitude at http://127.0.0.1:") and "accepted the keys" in result
    assert took < READ_TIMEOUT_S / 2, took  # reading the body would take READ_TIMEOUT_S at least
    assert sum(sent) < 1 << 20
