"""The Export API emulator, driven with plain ``requests``."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from shillelagh_amplitude.sample.emulator import (
    EXPORT_PATH,
    INVALID_API_KEY,
    NO_DATA,
    TIMEOUT,
    TOO_LARGE,
    ExportEmulator,
    RequestRecord,
)
from shillelagh_amplitude.sample.generator import generate_dataset, make_event, write_events

DAY = datetime(2024, 3, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 10, tzinfo=UTC)
AUTH = ("test-key", "test-secret")
#: Events per upload hour of the fixture: hours 5, 6 and 7 (three parts in hour 7), and one on the next day.
EVENTS_PER_HOUR = {5: 2, 6: 1, 7: 5}


def uploaded_at(hour: datetime, minute: int) -> dict:
    return make_event(server_upload_time=hour + timedelta(minutes=minute))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    events = [
        uploaded_at(DAY + timedelta(hours=hour), minute)
        for hour, count in EVENTS_PER_HOUR.items()
        for minute in range(count)
    ]
    late = make_event(
        client_event_time=DAY + timedelta(hours=2), server_upload_time=DAY + timedelta(hours=6, minutes=30)
    )
    write_events(
        tmp_path, [*events, late, uploaded_at(DAY + timedelta(days=1, hours=3), 0)], events_per_part=2
    )
    return tmp_path


@pytest.fixture
def emulator(data_dir: Path):
    with ExportEmulator(data_dir, now=lambda: NOW) as running:
        yield running


def export(
    emulator: ExportEmulator, start: str | None, end: str | None, auth=AUTH, **kwargs
) -> requests.Response:
    params = {name: value for name, value in (("start", start), ("end", end)) if value is not None}
    return requests.get(f"{emulator.base_url}{EXPORT_PATH}", params=params, auth=auth, timeout=10, **kwargs)


def unzip(body: bytes) -> dict[str, list[dict]]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        return {
            info.filename: [json.loads(line) for line in gzip.decompress(archive.read(info)).splitlines()]
            for info in archive.infolist()
        }


def test_window_is_inclusive_and_selects_by_upload_hour(emulator):
    response = export(emulator, "20240301T05", "20240301T06")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/zip"
    assert int(response.headers["Content-Length"]) == len(response.content)
    members = unzip(response.content)
    assert list(members) == ["187520/187520_2024-03-01_5#0.json.gz", "187520/187520_2024-03-01_6#0.json.gz"]
    assert sum(map(len, members.values())) == 2 + 1 + 1  # hour 6 holds the late upload from hour 2
    assert any(event["client_event_time"].startswith("2024-03-01 02:") for event in members[list(members)[1]])


def test_one_hour_window_and_several_parts_per_hour(emulator):
    response = export(emulator, "20240301T07", "20240301T07")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert [info.filename.rsplit("_", 1)[1] for info in archive.infolist()] == [
            "7#0.json.gz",
            "7#1.json.gz",
            "7#2.json.gz",
        ]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist())
    assert sum(map(len, unzip(response.content).values())) == 5


def test_empty_window_is_404(emulator):
    response = export(emulator, "20240301T08", "20240302T02")
    assert (response.status_code, response.text) == (404, NO_DATA)


def test_wrong_or_missing_credentials_are_403(emulator):
    for auth in (("test-key", "wrong"), ("other", "test-secret"), None):
        response = export(emulator, "20240301T05", "20240301T06", auth=auth)
        assert (response.status_code, response.text) == (403, INVALID_API_KEY)
    assert [record.authorized for record in emulator.requests] == [False, False, False]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, "20240301T06"),
        ("20240301T05", None),
        ("2024030105", "20240301T06"),
        ("20240301T5", "20240301T06"),
        ("20240301T24", "20240302T00"),
        ("20240230T00", "20240301T00"),
        ("2024-03-01T05", "20240301T06"),
        ("20240301T06", "20240301T05"),
        ("20230101T00", "20240101T01"),
    ],
)
def test_bad_parameters_are_400(emulator, start, end):
    response = export(emulator, start, end)
    assert response.status_code == 400
    assert response.text and len(response.text) < 120


def test_a_365_day_window_is_allowed(emulator):
    assert export(emulator, "20230302T06", "20240301T05").status_code == 200


def test_other_paths_are_404(emulator):
    for path in ("/api/2/events", "/2/events", "/api/2/export/x", "/"):
        response = requests.get(emulator.base_url + path, auth=AUTH, timeout=10)
        assert response.status_code == 404


def test_recent_hours_are_held_back_by_the_export_latency(data_dir):
    # Hour 5 is exportable from 08:00 (5 + 1 + 2 h of latency); hour 6 from 09:00.
    clock = {"now": DAY + timedelta(hours=8, minutes=30)}
    with ExportEmulator(data_dir, now=lambda: clock["now"]) as emulator:
        assert list(unzip(export(emulator, "20240301T05", "20240301T07").content)) == [
            "187520/187520_2024-03-01_5#0.json.gz"
        ]
        assert export(emulator, "20240301T06", "20240301T07").status_code == 404
        clock["now"] = DAY + timedelta(hours=9)
        assert len(unzip(export(emulator, "20240301T06", "20240301T07").content)) == 1


def test_max_window_and_too_large_hours_give_the_documented_400(emulator):
    emulator.max_window_hours = 2
    response = export(emulator, "20240301T05", "20240301T07")
    assert (response.status_code, response.text) == (400, TOO_LARGE)
    assert export(emulator, "20240301T05", "20240301T06").status_code == 200
    emulator.too_large_hours = {DAY + timedelta(hours=6)}
    assert export(emulator, "20240301T06", "20240301T06").text == TOO_LARGE
    assert export(emulator, "20240301T05", "20240301T05").status_code == 200


def test_long_windows_time_out_with_504(emulator):
    emulator.timeout_window_hours = 24
    response = export(emulator, "20240301T00", "20240302T00")
    assert (response.status_code, response.text) == (504, TIMEOUT)
    assert export(emulator, "20240301T00", "20240301T23").status_code == 200


def test_status_fault_with_retry_after_for_n_requests(emulator):
    emulator.add_fault("status", times=2, status=429, retry_after=3)
    for _ in range(2):
        response = export(emulator, "20240301T05", "20240301T05")
        assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert export(emulator, "20240301T05", "20240301T05").status_code == 200
    emulator.add_fault("status", status=503)
    response = export(emulator, "20240301T05", "20240301T05")
    assert (response.status_code, response.text, response.headers.get("Retry-After")) == (
        503,
        "Service Unavailable",
        None,
    )


def test_faults_can_target_hours(emulator):
    emulator.add_fault("status", status=502, hours=(DAY + timedelta(hours=7), DAY + timedelta(hours=7)))
    assert export(emulator, "20240301T05", "20240301T06").status_code == 200
    assert export(emulator, "20240301T06", "20240301T07").status_code == 502
    assert export(emulator, "20240301T07", "20240301T07").status_code == 200
    assert emulator.pending_faults == []


def test_not_zip_fault(emulator):
    emulator.add_fault("not_zip")
    response = export(emulator, "20240301T05", "20240301T05")
    assert response.status_code == 200 and not response.content.startswith(b"PK")
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(response.content))


def test_truncated_fault_breaks_the_connection(emulator):
    emulator.add_fault("truncated")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        export(emulator, "20240301T05", "20240301T07")
    assert export(emulator, "20240301T05", "20240301T07").status_code == 200


def test_short_body_fault_is_half_a_zip(emulator):
    full = export(emulator, "20240301T05", "20240301T07").content
    emulator.add_fault("short_body")
    response = export(emulator, "20240301T05", "20240301T07")
    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(response.content) == len(full) // 2
    assert response.content == full[: len(full) // 2]
    with pytest.raises(zipfile.BadZipFile):
        zipfile.ZipFile(io.BytesIO(response.content))


def test_corrupt_gzip_fault(emulator):
    emulator.add_fault("corrupt_gzip")
    response = export(emulator, "20240301T05", "20240301T07")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        *good, bad = archive.infolist()
        assert all(gzip.decompress(archive.read(info)) for info in good)
        with pytest.raises((EOFError, gzip.BadGzipFile)):
            gzip.decompress(archive.read(bad))


def test_bad_json_fault(emulator):
    emulator.add_fault("bad_json")
    response = export(emulator, "20240301T07", "20240301T07")
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        lines = gzip.decompress(archive.read(archive.infolist()[-1])).splitlines()
    with pytest.raises(json.JSONDecodeError):
        [json.loads(line) for line in lines]
    assert sum(1 for line in lines if line.startswith(b"{") and line.endswith(b"}")) == 1


def test_zip_faults_wait_for_a_request_that_gets_a_zip(emulator):
    emulator.max_window_hours = 2
    emulator.add_fault("bad_json")
    emulator.add_fault("status", status=500)
    assert export(emulator, "20240301T10", "20240301T10").status_code == 500
    assert export(emulator, "20240301T10", "20240301T10").status_code == 404
    assert export(emulator, "20240301T05", "20240301T07").status_code == 400
    assert [fault.kind for fault in emulator.pending_faults] == ["bad_json"]
    emulator.clear_faults()
    assert unzip(export(emulator, "20240301T06", "20240301T06").content)


def test_slow_fault_delays_the_answer(emulator):
    emulator.add_fault("slow", delay=0.3)
    began = time.monotonic()
    assert export(emulator, "20240301T05", "20240301T05").status_code == 200
    assert time.monotonic() - began >= 0.3
    with pytest.raises(ValueError):
        emulator.add_fault("slow")
    with pytest.raises(ValueError):
        emulator.add_fault("teapot")


def test_request_log(emulator):
    export(emulator, "20240301T05", "20240301T06")
    export(emulator, "20240301T08", "20240301T08", auth=("x", "y"))
    requests.get(emulator.base_url + "/api/2/events", timeout=10)
    assert emulator.requests == [
        RequestRecord(EXPORT_PATH, "20240301T05", "20240301T06", 200, True),
        RequestRecord(EXPORT_PATH, "20240301T08", "20240301T08", 403, False),
        RequestRecord("/api/2/events", None, None, 404, False),
    ]
    emulator.clear_requests()
    assert emulator.requests == []


def test_streams_a_generated_dataset_and_stops_cleanly(tmp_path):
    summary = generate_dataset(
        tmp_path, DAY, DAY + timedelta(hours=6), events=1500, seed=2, events_per_part=100
    )
    emulator = ExportEmulator(tmp_path, api_key="k", secret_key="s", now=lambda: NOW)
    with emulator:
        response = export(emulator, "20240301T00", "20240305T00", auth=("k", "s"), stream=True)
        body = b"".join(response.iter_content(4096))
        base_url = emulator.base_url
    assert len(unzip(body)) == len(summary.files)
    assert sum(map(len, unzip(body).values())) == summary.events
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    with pytest.raises(requests.ConnectionError):
        requests.get(base_url + EXPORT_PATH, timeout=2)


def test_identified_requests_name_the_process_that_sent_them(data_dir):
    """With ``identify_clients``, each request is logged with its sender's pid: this process's for a request
    made here, a child's (its pid from the operating system, not from the request) for the child's."""
    child_code = (
        "import sys, urllib.request\n"
        "request = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Basic ' + sys.argv[2]})\n"
        "urllib.request.urlopen(request, timeout=10).read()\n"
    )
    with ExportEmulator(data_dir, now=lambda: NOW, identify_clients=True) as emulator:
        export(emulator, "20240301T05", "20240301T07")
        url = f"{emulator.base_url}{EXPORT_PATH}?start=20240301T05&end=20240301T05"
        child = subprocess.Popen([sys.executable, "-c", child_code, url,
                                  base64.b64encode(b"test-key:test-secret").decode()])
        assert child.wait(timeout=60) == 0
        assert [(r.start, r.status, r.client_pid) for r in emulator.requests] == [
            ("20240301T05", 200, os.getpid()), ("20240301T05", 200, child.pid)]


def test_requests_are_not_identified_unless_asked(emulator):
    export(emulator, "20240301T05", "20240301T07")
    assert [r.client_pid for r in emulator.requests] == [None]


def test_a_request_is_not_credited_to_another_process_using_the_same_local_port(data_dir):
    """Two connections may share a local port towards different servers: the sender is the owner of the socket
    whose both ends match, not another process that happens to use the same port (a child connected elsewhere)."""
    import socket

    elsewhere = socket.create_server(("127.0.0.1", 0))
    with ExportEmulator(data_dir, now=lambda: NOW, identify_clients=True) as emulator, elsewhere:
        mine = socket.socket()
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        mine.bind(("127.0.0.1", 0))
        port = mine.getsockname()[1]
        child = subprocess.Popen([sys.executable, "-c", (
            "import socket, sys\n"
            "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1', {port})); s.connect(('127.0.0.1', {elsewhere.getsockname()[1]}))\n"
            "print('connected', flush=True); sys.stdin.read()\n")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline() == "connected\n"
            mine.connect(("127.0.0.1", int(emulator.base_url.rsplit(":", 1)[1])))
            auth = base64.b64encode(b"test-key:test-secret").decode()
            mine.sendall(f"GET {EXPORT_PATH}?start=20240301T05&end=20240301T05 HTTP/1.1\r\nHost: x\r\n"
                         f"Authorization: Basic {auth}\r\nConnection: close\r\n\r\n".encode())
            assert mine.recv(12) == b"HTTP/1.1 200"
        finally:
            mine.close()
            child.communicate("", timeout=30)
    assert [r.client_pid for r in emulator.requests] == [os.getpid()]
