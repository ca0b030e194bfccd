"""The command line: amplitude-sync fills the store from the API, amplitude-load loads a zip by hand."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

from shillelagh_amplitude.cli import load_main, sync_main
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY


def test_sync_fills_the_range_with_a_progress_bar(tmp_path, emulator, monkeypatch, capsys):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", SECRET_KEY)
    code = sync_main(["--start", "2026-03-02", "--end", "2026-03-02", "--api-key", API_KEY,
                      "--base-url", emulator.base_url, "--cache-dir", str(tmp_path), "--window-hours", "12"])
    assert code == 0
    assert [(r.start, r.end) for r in emulator.requests] == [("20260302T00", "20260302T11"),
                                                             ("20260302T12", "20260302T23")]
    out, err = capsys.readouterr()
    assert "24 hours in range, 24 downloaded in 2 requests" in out
    assert "upload hours" in err  # tqdm's bar
    store = HourStore(tmp_path, emulator.base_url, API_KEY)
    day = list(hour_range(datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 2, 23, tzinfo=UTC)))
    assert store.missing(day, datetime.now(UTC)) == []
    assert store.secret_status(SECRET_KEY) is True


def test_sync_reports_errors_without_the_secret(tmp_path, emulator, monkeypatch, capsys):
    monkeypatch.setenv("AMPLITUDE_SECRET_KEY", "bad-secret-4242")
    code = sync_main(["--start", "2026-03-02", "--end", "2026-03-02T05:00", "--api-key", API_KEY,
                      "--base-url", emulator.base_url, "--cache-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "amplitude-sync: error: Amplitude rejected the credentials" in err and "bad-secret-4242" not in err


def test_load_reads_a_zip_downloaded_by_hand(tmp_path, dataset, capsys):
    code = load_main([str(dataset.zip_path), "--api-key", API_KEY, "--cache-dir", str(tmp_path)])
    assert code == 0
    assert f"{len(dataset.records)} events loaded" in capsys.readouterr().out
    not_a_zip = tmp_path / "page.zip"
    not_a_zip.write_text("<html>")
    assert load_main([str(not_a_zip), "--api-key", API_KEY, "--cache-dir", str(tmp_path)]) == 2
    assert "is not a readable Amplitude export: the response is not a zip archive" in capsys.readouterr().err


def test_entry_points_are_installed():
    for command in ("amplitude-sync", "amplitude-load", "amplitude-lake"):
        result = subprocess.run([sys.executable, "-c", f"from importlib.metadata import entry_points; "
                                 f"print([e.value for e in entry_points(group='console_scripts', name='{command}')])"],
                                capture_output=True, text=True, check=True)
        assert "shillelagh_amplitude.cli" in result.stdout
