"""A misspelled connection setting is refused, naming the accepted ones, wherever settings are taken: the sync (the
Celery task and ``amplitude-sync --days``), the connection test and the ``amplitude://`` URL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import ArgumentError

from shillelagh_amplitude.errors import AmplitudeError
from shillelagh_amplitude.export.probe import check_connection
from shillelagh_amplitude.export.sync import sync_project
from shillelagh_amplitude.settings import SETTINGS
from shillelagh_amplitude.sql.dialect import url_kwargs

from .conftest import API_KEY, SECRET_KEY

ACCEPTED = ("the accepted settings are api_key, secret_key, region, base_url, cache_dir, lake, window_hours, "
            "late_hours, default_days, offline, download_budget_s, sync_interval_s.")


def test_the_sync_refuses_a_typo_before_asking_amplitude(tmp_path, emulator):
    with pytest.raises(AmplitudeError) as error:
        sync_project(API_KEY, SECRET_KEY, base_url=emulator.base_url, cache_dir=str(tmp_path), late_hour=72)
    assert str(error.value) == f"Unknown Amplitude connection setting 'late_hour'; {ACCEPTED}"
    with pytest.raises(AmplitudeError, match=r"^Unknown Amplitude connection settings 'cache', 'regoin'; "):
        sync_project(API_KEY, SECRET_KEY, base_url=emulator.base_url, regoin="eu", cache="/tmp")
    assert emulator.requests == []
    # the connection's other settings, which do not matter to a sync, are accepted
    result = sync_project(API_KEY, SECRET_KEY, base_url=emulator.base_url, cache_dir=str(tmp_path), default_days=1,
                          now=datetime(2026, 3, 4, 12, 30, tzinfo=UTC), late_hours=72, offline=False,
                          download_budget_s=20.0, window_hours=48)
    # one day, today's hours and the clock-skew hour (35), and the 48 h look-back of user sessions before them
    assert result.hours_downloaded == 35 + 48 and len(emulator.requests) == 2  # 48-hour windows


def test_the_connection_test_refuses_a_typo(loaded_cache):
    settings = {"base_url": "https://amplitude.com", "cache_dir": str(loaded_cache), "offline": True}
    with pytest.raises(AmplitudeError) as error:
        check_connection(API_KEY, SECRET_KEY, **settings, late_hour=72)
    assert str(error.value) == f"Unknown Amplitude connection setting 'late_hour'; {ACCEPTED}"
    assert check_connection(API_KEY, SECRET_KEY, **settings, late_hours=72, window_hours=24, default_days=30,
                            download_budget_s=20.0).startswith("offline store with upload hours ")


def test_the_url_refuses_a_typo_naming_the_same_settings():
    from sqlalchemy.engine.url import make_url

    with pytest.raises(ArgumentError, match=rf"'late_hour'; known: {', '.join(SETTINGS)}$"):
        url_kwargs(make_url("amplitude://?late_hour=72"))
