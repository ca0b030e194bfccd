"""The one-command demo with credentials set: it syncs "the live project" (the Export API emulator on
loopback) and the same dashboard shows its numbers; a second run reuses everything; SIGTERM stops it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shillelagh_amplitude.hours import floor_hour
from shillelagh_amplitude.sample.emulator import ExportEmulator
from shillelagh_amplitude.sample.generator import generate_dataset

from ..expected import sessions_from_records
from ..helpers import read_dataset
from .conftest import OUTPUT, REPO, demo, free_port, whole_days_end

pytestmark = pytest.mark.e2e

API_KEY, SECRET_KEY = "live-key", "live-secret-7c1d"
READY_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def live_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExportEmulator]:
    """Three days of events, ending yesterday, behind an emulated Export API."""
    data = tmp_path_factory.mktemp("live-project")
    end = floor_hour(datetime.now(UTC)) - timedelta(days=1)
    generate_dataset(data, end - timedelta(days=3), end, events=4000, seed=11)
    with ExportEmulator(data, api_key=API_KEY, secret_key=SECRET_KEY) as emulator:
        yield emulator


def run_demo(var: Path, port: int, emulator: ExportEmulator) -> tuple[subprocess.Popen, str, float]:
    """Start ``scripts/demo.py`` with live credentials; return it, its output so far and seconds to ready."""
    env = {
        **os.environ,
        "AMPLITUDE_API_KEY": API_KEY,
        "AMPLITUDE_SECRET_KEY": SECRET_KEY,
        "AMPLITUDE_BASE_URL": emulator.base_url,
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--var", str(var), "--port", str(port), "--days", "5"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("Ready in") or time.monotonic() - started > READY_TIMEOUT_S:
            break
    return process, "".join(output), time.monotonic() - started


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


def test_demo_serves_the_live_project_then_reruns(tmp_path: Path, live_project: ExportEmulator) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    process, output, first_run_s = run_demo(tmp_path / "var", port, live_project)
    try:
        assert "Ready in" in output, output[-3000:]
        assert "Syncing the last 5 days of the live Amplitude project" in output
        layout = demo.Layout(tmp_path / "var")
        session = demo.api_session(base, "admin", layout.password_file.read_text())
        charts = session.get(f"{base}/api/v1/dashboard/session-length/charts").json()["result"]
        chart = next(c for c in charts if c["slice_name"] == "Sessions")
        result = session.get(f"{base}/api/v1/chart/{chart['id']}/data/?force=true").json()["result"][0]
    finally:
        assert stop(process) == 0
    assert not demo.port_in_use("127.0.0.1", port)  # the server went with it

    # the chart carries no time range: the connection's default window, the last 30 days (live, no override)
    assert (result["from_dttm"], result["to_dttm"]) == (None, None)
    start = whole_days_end() - timedelta(days=30)  # whole days: those whose 23:00 is exportable
    expected = [s for s in sessions_from_records(read_dataset(live_project.data_dir)) if start <= s.start]
    assert result["data"] == [{"sessions": len(expected)}] and expected
    assert live_project.requests and {r.status for r in live_project.requests} <= {200, 404}
    assert not layout.sample.exists() and any(layout.live_store.iterdir())

    downloads = len(live_project.requests)
    process, output, second_run_s = run_demo(tmp_path / "var", port, live_project)
    try:
        assert "Ready in" in output, output[-3000:]
    finally:
        assert stop(process) == 0
    assert second_run_s < first_run_s
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "timings-live-demo.json").write_text(json.dumps({
        "first_run_to_ready_s": round(first_run_s, 1), "second_run_to_ready_s": round(second_run_s, 1),
        "export_requests_first_run": downloads, "export_requests_second_run": len(live_project.requests) - downloads,
    }, indent=2) + "\n")
    assert len(live_project.requests) - downloads <= 2  # only hours not yet final are asked again
