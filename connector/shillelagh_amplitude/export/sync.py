"""Keeping a project's hour store current: what the Celery task and ``amplitude-sync --days`` run.

A sync fills from the newest stored final hour (on the first run: ``default_days`` back, and the look-back of
user sessions before them) through the newest
exportable hour, and re-reads the recent hours that are not final yet (Amplitude may still add late uploads to
them). It downloads under the store's lock: two syncs of one project started at once download each hour once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..hours import CLOCK_SKEW, HOUR, LOOKBACK, floor_hour, format_hour, newest_exportable_hour, whole_days_end
from ..settings import refuse_unknown
from ..store.hour_store import HourStore
from .client import ExportClient, resolve_base_url
from .loader import fill

_logger = logging.getLogger(__name__)

#: How far back a store that fell behind is caught up (the Export API's limit per request, too).
MAX_CATCH_UP = timedelta(days=365)


@dataclass
class SyncResult:
    """What one sync did (no credentials in it)."""

    project: str
    host: str
    first: datetime
    last: datetime
    hours_wanted: int
    hours_downloaded: int
    requests: int
    events: int

    def summary(self) -> str:
        return (f"project {self.project} at {self.host}: upload hours {format_hour(self.first)}.."
                f"{format_hour(self.last)} ({self.hours_wanted} hours) current; {self.hours_downloaded} hours "
                f"downloaded in {self.requests} requests, {self.events} events stored")


def days_range(now: datetime, days: int) -> tuple[datetime, datetime]:
    """The upload hours of the ``days`` whole UTC days before :func:`whole_days_end`, and of the ``LOOKBACK`` and
    the hour before them (user sessions look back; devices' clocks run ahead), through the newest exportable hour.
    Whole days, because the dashboard's default range is made of them: it is then stored entirely."""
    return whole_days_end(now) - timedelta(days=days) - LOOKBACK - CLOCK_SKEW, newest_exportable_hour(now)


def sync_range(
    store: HourStore, now: datetime, default_days: int, days: int | None = None
) -> tuple[datetime, datetime]:
    """The upload hours a sync covers: :func:`days_range` of ``days`` (else ``default_days``); further back,
    from the newest stored final hour, when the store fell behind."""
    first, last = days_range(now, days or default_days)
    newest = store.newest_final_hour()
    if days is None and newest is not None and newest + HOUR < first:
        first = max(newest + HOUR, floor_hour(now) - MAX_CATCH_UP)
    return first, last


def sync_project(
    api_key: str,
    secret_key: str,
    *,
    region: str = "us",
    base_url: str | None = None,
    cache_dir: str | None = None,
    window_hours: int = 24,
    default_days: int = 30,
    days: int | None = None,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    **other_settings: Any,
) -> SyncResult:
    """Bring one project's store current.

    ``other_settings``: the connection's settings that do not matter here (e.g. ``late_hours``); an unknown name
    (a typo) is refused, naming the accepted settings."""
    refuse_unknown(other_settings)
    now = now or datetime.now(UTC)
    host = resolve_base_url(region, base_url)
    store = HourStore(cache_dir, host, api_key)
    client = ExportClient(api_key, secret_key, base_url=host)
    first, last = sync_range(store, now, default_days, days)
    report = fill(store, client, first, last, now=now, window_hours=window_hours, progress=progress, refresh=True)
    if report.windows:  # Amplitude accepted the secret
        store.remember_secret(secret_key)
    result = SyncResult(store.root.name, host, first, last, report.hours_wanted, report.hours_downloaded,
                        len(report.windows), report.events)
    _logger.info("amplitude sync: %s", result.summary())
    return result
