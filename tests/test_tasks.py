"""Superset's Celery task: every project is synced, whatever happens to the others."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime

from shillelagh_amplitude.export import sync
from shillelagh_amplitude.export.client import UnreachableError
from shillelagh_amplitude.hours import floor_hour, hour_range
from shillelagh_amplitude.store.hour_store import HourStore
from shillelagh_amplitude.superset import tasks

from .conftest import API_KEY, SECRET_KEY
from .helpers import free_port, parse_ts

NOW = datetime(2026, 3, 4, 12, 30, tzinfo=UTC)
#: One whole day before 2026-03-04 00:00, the 48 h look-back of user sessions and the hour before them, through the
#: newest exportable hour (H + 3 h <= now).
SYNCED = list(hour_range(datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 4, 9, tzinfo=UTC)))
WRONG_SECRET = "wrong-secret-5c1d"


def test_a_failing_project_does_not_stop_the_next(tmp_path, dataset, emulator, monkeypatch, caplog):
    """An unexpected fault (a decode worker killed) and a refusal by Amplitude are logged; the third project syncs."""
    common = {"base_url": emulator.base_url, "now": NOW, "default_days": 1}
    projects = [
        ("Broken", {**common, "api_key": "broken-key", "secret_key": SECRET_KEY, "cache_dir": str(tmp_path / "a")},
         None),
        ("Wrong secret", {**common, "api_key": API_KEY, "secret_key": WRONG_SECRET, "cache_dir": str(tmp_path / "b")},
         None),
        ("Unreachable", {**common, "base_url": f"http://127.0.0.1:{free_port()}", "api_key": API_KEY,
                         "secret_key": SECRET_KEY, "cache_dir": str(tmp_path / "d")}, None),
        ("Good", {**common, "api_key": API_KEY, "secret_key": SECRET_KEY, "cache_dir": str(tmp_path / "c")}, None),
    ]
    real_sync = sync.sync_project

    def sync_project(**settings):
        if settings["api_key"] == "broken-key":
            raise BrokenProcessPool("A process in the process pool was terminated abruptly")
        return real_sync(**settings)

    monkeypatch.setattr(tasks, "amplitude_projects", lambda: projects)
    monkeypatch.setattr(tasks, "sync_project", sync_project)
    caplog.set_level(logging.INFO)
    results = tasks.sync_amplitude_stores.run()

    uploads = Counter(floor_hour(parse_ts(r["server_upload_time"])) for r in dataset.records)
    events = sum(uploads[hour] for hour in SYNCED)
    assert [(r["database"], r["ok"]) for r in results] == [
        ("Broken", False), ("Wrong secret", False), ("Unreachable", False), ("Good", True)]
    assert results[0]["error"] == "BrokenProcessPool: A process in the process pool was terminated abruptly"
    assert results[1]["error"].startswith("Amplitude rejected the credentials (403")
    assert "the connection was refused" in results[2]["error"]
    assert results[3]["hours_downloaded"] == len(SYNCED) == 83
    assert f"({len(SYNCED)} hours) current; 83 hours downloaded in 4 requests, {events} events stored" in \
        results[3]["summary"]
    store = HourStore(tmp_path / "c", emulator.base_url, API_KEY)
    assert store.missing(SYNCED, NOW) == []
    assert store.read(SYNCED, NOW).num_rows == events > 0

    failures = [r for r in caplog.records if r.name == tasks.__name__]
    assert [(r.levelname, r.getMessage()) for r in failures] == [
        ("ERROR", "Amplitude sync of Broken failed unexpectedly"),
        ("WARNING", f"Amplitude sync of Wrong secret failed: {results[1]['error']}"),
        ("ERROR", "Amplitude sync of Unreachable failed unexpectedly"),
    ]
    assert failures[0].exc_info[0] is BrokenProcessPool  # logged with its traceback
    assert failures[2].exc_info[0] is UnreachableError  # a fault, not a refusal: with its traceback too
    assert failures[1].exc_info is None and "\n" not in failures[1].getMessage()
    assert "amplitude sync: project" in caplog.text  # the good project's summary
    assert SECRET_KEY not in caplog.text + repr(results) and WRONG_SECRET not in caplog.text + repr(results)
