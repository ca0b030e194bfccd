"""Filling the hour store: download the missing upload hours of a range, or load an export zip by hand.

A downloaded window is decoded completely into a staging folder before any of its hours is published, so a
corrupt or truncated archive never leaves a partial hour. A corrupt window is downloaded again
(``DECODE_ATTEMPTS`` times), then the error says which window failed and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .archive import ArchiveError, iter_batches, split_by_hour
from .client import AmplitudeError, ExportClient, Window
from .hours import HOUR, contiguous_runs, floor_hour, format_hour, hour_range, tile_windows, to_utc
from .store import EXPORT_LATENCY, HourStaging, HourStore, clean_stale_staging

_logger = logging.getLogger(__name__)

DECODE_ATTEMPTS = 3
Progress = Callable[[int], None]


@dataclass
class FillReport:
    """What a fill did: hours asked for, hours downloaded, windows requested, events stored."""

    hours_wanted: int = 0
    hours_downloaded: int = 0
    windows: list[str] = field(default_factory=list)
    events: int = 0


def newest_exportable_hour(now: datetime) -> datetime:
    """The newest upload hour the Export API can serve at ``now`` (about 2 h behind)."""
    return floor_hour(to_utc(now) - EXPORT_LATENCY) - HOUR


def _stage_archive(store: HourStore, path: Path, window: Window | None) -> tuple[HourStaging, int]:
    """Decode an archive into a new staging area; events outside ``window`` are dropped."""
    staging = store.staging()
    events = 0
    try:
        for batch in iter_batches(path):
            for hour, rows in split_by_hour(batch):
                if window is not None and not window.start <= hour <= window.end:
                    _logger.warning("Export %s holds events of upload hour %s; ignored", window, hour)
                    continue
                staging.add(hour, rows)
                events += rows.num_rows
    except BaseException:
        staging.discard()
        raise
    return staging, events


def store_window(store: HourStore, client: ExportClient, part: Window, now: datetime) -> int:
    """Decode and publish one downloaded window, downloading it again if the archive is corrupt."""
    problem = ""
    for attempt in range(DECODE_ATTEMPTS):
        if attempt:
            again = client.download(Window(part.start, part.end))
            if again is None:
                raise AmplitudeError(f"Amplitude now finds upload hours {part} too large to export.")
            part = again
        if part.path is None:
            store.staging().commit(hour_range(part.start, part.end), now)
            return 0
        try:
            staging, events = _stage_archive(store, part.path, part)
        except ArchiveError as exc:
            problem = str(exc)
            _logger.warning("Export %s unreadable (%s); downloading again", part, problem)
            continue
        finally:
            part.path.unlink(missing_ok=True)
        staging.commit(hour_range(part.start, part.end), now)
        return events
    raise AmplitudeError(
        f"Amplitude's export of upload hours {part} was unreadable {DECODE_ATTEMPTS} times ({problem}); "
        "nothing of it was stored. Try again later."
    )


def fill(
    store: HourStore,
    client: ExportClient,
    first: datetime,
    last: datetime,
    *,
    now: datetime,
    window_hours: int = 24,
    progress: Progress | None = None,
) -> FillReport:
    """Make every exportable upload hour of ``first..last`` available in the store."""
    last = min(floor_hour(last), newest_exportable_hour(now))
    wanted = list(hour_range(first, last)) if floor_hour(first) <= last else []
    missing = store.missing(wanted, now)
    report = FillReport(hours_wanted=len(wanted))
    if missing:
        clean_stale_staging(store)
    for run_start, run_end in contiguous_runs(missing):
        for start, end in tile_windows(run_start, run_end, window_hours):
            for part in client.export(start, end):
                report.windows.append(f"{format_hour(part.start)}..{format_hour(part.end)}")
                report.events += store_window(store, client, part, now)
                report.hours_downloaded += part.hours
                if progress:
                    progress(part.hours)
    return report


def load_archive(store: HourStore, path: Path, first: datetime | None = None, last: datetime | None = None) -> int:
    """Load an export zip downloaded by hand (UI or S3 export format) into the store; returns events stored.

    Its hours are taken as complete. With ``first``/``last``, hours of that range without events are
    recorded as empty and events outside it are ignored.
    """
    window = Window(floor_hour(first), floor_hour(last)) if first and last else None
    try:
        staging, events = _stage_archive(store, path, window)
    except ArchiveError as exc:
        raise AmplitudeError(f"{path} is not a readable Amplitude export: {exc}") from None
    hours = hour_range(window.start, window.end) if window else staging.hours
    staging.commit(hours, None)
    return events
