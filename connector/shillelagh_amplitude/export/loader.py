"""Filling the hour store: download the missing upload hours of a range, or load an export zip by hand.

A downloaded window is decoded completely into a staging folder before any of its hours is published, so a
corrupt or truncated archive never leaves a partial hour. A corrupt window is downloaded again
(``DECODE_ATTEMPTS`` times), then the error says which window failed and why.

Downloads run one at a time (Amplitude limits concurrent requests); decoding, the CPU-heavy part, runs in up to
``decode_workers`` processes while the next window downloads (in one thread inside a daemonic process, such as a
Celery prefork worker, which may not start processes).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from ..hours import contiguous_runs, floor_hour, format_hour, hour_range, newest_exportable_hour, tile_windows
from ..store.hour_store import HourStore, clean_stale_staging
from ..store.lock import LockTimeout
from ..store.staging import HourStaging
from .archive import ArchiveError, iter_batches, split_by_hour
from .client import AmplitudeError, DeadlinePassed, ExportClient, Window, seconds_left

_logger = logging.getLogger(__name__)

DECODE_ATTEMPTS = 3
#: Two workers keep a 2-core machine busy while memory stays bounded (each holds up to ~200 MB while decoding).
DEFAULT_DECODE_WORKERS = min(2, os.cpu_count() or 1)
#: How often a decode worker checks that its parent is still alive.
PARENT_CHECK_S = 0.5
Progress = Callable[[int], None]


@dataclass
class FillReport:
    """What a fill did: hours asked for, hours downloaded, windows requested, events stored."""

    hours_wanted: int = 0
    hours_downloaded: int = 0
    windows: list[str] = field(default_factory=list)
    events: int = 0


class DownloadBudgetExceeded(AmplitudeError):  # noqa: N818 - reads as what happened
    """The download budget ran out before every hour of the range was stored (the complete ones are kept)."""

    def __init__(self, stored: int, wanted: int, first: datetime, last: datetime, waiting_for: str = "") -> None:
        self.stored, self.wanted, self.first, self.last, self.waiting_for = stored, wanted, first, last, waiting_for
        super().__init__(f"{stored} of {wanted} upload hours {format_hour(first)}..{format_hour(last)} stored "
                         f"when the download budget ran out{f' ({waiting_for})' if waiting_for else ''}")


def stage_archive(
    path: Path, folder: Path, first: datetime | None, last: datetime | None
) -> tuple[list[datetime], int]:
    """Decode an archive into per-hour files in ``folder``; events outside ``first..last`` are dropped.

    Returns the hours that received events and the number of events. Runs in worker processes too.
    """
    staging = HourStaging(folder)
    events = 0
    try:
        for batch in iter_batches(path):
            for hour, rows in split_by_hour(batch):
                if first is not None and not first <= hour <= last:
                    _logger.warning("Archive %s holds events of upload hour %s; ignored", path.name, hour)
                    continue
                staging.add(hour, rows)
                events += rows.num_rows
    except BaseException:
        staging.discard()
        raise
    return staging.close(), events


class _InlineExecutor(Executor):
    """Runs submitted work at once, in this process (one window, or one worker)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            future.set_exception(exc)
        return future


@dataclass(frozen=True)
class _Clock:
    """The ``now`` a fill was asked at, and the time since: fresh hours count their validity from publication."""

    now: datetime
    started: float = field(default_factory=time.monotonic)

    def current(self) -> datetime:
        return self.now + timedelta(seconds=time.monotonic() - self.started)


@dataclass
class _Decoding:
    part: Window
    attempt: int
    folder: Path
    future: Future


class _WindowPipeline:
    """Downloads go in, complete hours come out in the store; a corrupt window is downloaded again."""

    def __init__(self, store: HourStore, client: ExportClient, clock: _Clock, executor: Executor, workers: int,
                 report: FillReport, progress: Progress | None, deadline: float | None = None) -> None:
        self.store, self.client, self.clock = store, client, clock
        self.executor, self.workers, self.deadline = executor, workers, deadline
        self.report, self.progress = report, progress
        self.in_flight: deque[_Decoding] = deque()

    def add(self, part: Window, attempt: int = 0) -> None:
        if part.path is None:  # 404: every hour of the window is empty
            self._publish(self.store.staging().folder, part)
            self._done(part, 0)
            return
        folder = self.store.staging().folder
        future = self.executor.submit(stage_archive, part.path, folder, part.start, part.end)
        self.in_flight.append(_Decoding(part, attempt, folder, future))
        while len(self.in_flight) > self.workers:
            self._finish_oldest()

    def drain(self) -> None:
        while self.in_flight:
            self._finish_oldest()

    def abandon(self) -> None:
        """After a failure or the deadline: remove the downloads and staging left behind (a decode still running
        past the deadline fails for want of its download, or leaves a folder that :func:`clean_stale_staging`
        removes later; nothing of it is published)."""
        for decoding in self.in_flight:
            decoding.part.path.unlink(missing_ok=True)
            shutil.rmtree(decoding.folder, ignore_errors=True)
        self.in_flight.clear()

    def _finish_oldest(self) -> None:
        """Publish the oldest window once decoded. A decode still running at the deadline is not waited for
        (:class:`DeadlinePassed`): it stays in flight, to be abandoned like a download still running then."""
        oldest = self.in_flight[0]
        if not oldest.future.done():
            wait([oldest.future], timeout=seconds_left(self.deadline))
            if not oldest.future.done():
                raise DeadlinePassed(f"decoding upload hours {oldest.part} had not finished at the deadline")
        self._finish(self.in_flight.popleft())

    def _finish(self, decoding: _Decoding) -> None:
        part = decoding.part
        try:
            _, events = decoding.future.result()
        except ArchiveError as exc:
            if decoding.attempt + 1 >= DECODE_ATTEMPTS:
                raise AmplitudeError(
                    f"Amplitude's export of upload hours {part} was unreadable {DECODE_ATTEMPTS} times ({exc}); "
                    "nothing of it was stored. Try again later."
                ) from None
            _logger.warning("Export %s unreadable (%s); downloading again", part, exc)
            again = self.client.download(Window(part.start, part.end))
            if again is None:
                raise AmplitudeError(f"Amplitude now finds upload hours {part} too large to export.") from None
            self.add(again, decoding.attempt + 1)
            return
        finally:
            part.path.unlink(missing_ok=True)
        self._publish(decoding.folder, part)
        self._done(part, events)

    def _publish(self, folder: Path, part: Window) -> None:
        """Final or fresh by the hours' age when they were asked for; fresh ones valid from now on."""
        self.store.publish(folder, hour_range(part.start, part.end), self.clock.now, self.clock.current())

    def _done(self, part: Window, events: int) -> None:
        self.report.events += events
        self.report.hours_downloaded += part.hours
        if self.progress:
            self.progress(part.hours)


def _executor(windows: int, workers: int) -> tuple[Executor, int]:
    """What decodes the windows, and how many windows may be in flight (downloaded, not yet published) at once."""
    if windows < 2 or workers < 2:
        return _InlineExecutor(), 1
    if multiprocessing.current_process().daemon:
        # A daemonic process (a Celery prefork worker) may not start child processes. One thread still decodes a
        # window while the next one downloads (waiting for Amplitude releases the GIL); more threads would add
        # memory but no speed, as decoding (msgspec, building Arrow columns from Python values) holds the GIL.
        return ThreadPoolExecutor(1, thread_name_prefix="amplitude-decode"), 1
    return ProcessPoolExecutor(min(workers, windows), mp_context=multiprocessing.get_context("spawn"),
                               initializer=exit_with_parent, initargs=(os.getpid(),)), workers


def exit_with_parent(parent: int) -> None:
    """A decode worker's initializer: the worker exits once the process that started it is gone.

    A parent killed with SIGKILL (``timeout -s KILL``, an OOM kill) cannot stop its workers, and the pool's
    queues never tell them (each worker holds both ends of its pipes): without this they would stay behind,
    idle and holding their memory, for good. A worker killed mid-decode leaves only its staging folder, which
    :func:`clean_stale_staging` removes later.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)

    threading.Thread(target=watch, name="amplitude-parent-watch", daemon=True).start()


def fill(
    store: HourStore,
    client: ExportClient,
    first: datetime,
    last: datetime,
    *,
    now: datetime,
    window_hours: int = 24,
    progress: Progress | None = None,
    decode_workers: int = DEFAULT_DECODE_WORKERS,
    deadline: float | None = None,
    refresh: bool = False,
) -> FillReport:
    """Make every exportable upload hour of ``first..last`` available in the store.

    Downloads run under the store's lock, so two processes never download the same hour at once: the second
    waits, then finds the hours stored. The wait is bounded (:mod:`..store.lock`): without a ``deadline``, a
    holder that stopped renewing its lease or a wait over ``MAX_WAIT_S`` ends in :class:`LockTimeout`.
    ``refresh`` (the background sync) re-reads every hour not yet final,
    unless another sync completed while this one waited. ``deadline`` (``time.monotonic()``): no request starts
    after it and a window still downloading is dropped; the complete hours are kept and
    :class:`DownloadBudgetExceeded` says how far it got.
    """
    clock = _Clock(now)
    last = min(floor_hour(last), newest_exportable_hour(now))
    wanted = list(hour_range(first, last)) if floor_hour(first) <= last else []
    report = FillReport(hours_wanted=len(wanted))
    if not store.missing(wanted, now, refresh=refresh):
        return report
    asked_at = time.time()
    lock = store.lock()
    try:
        lock.acquire(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except LockTimeout as exc:
        if deadline is None:  # a sync or the CLI: the lock's own message (who holds it, since when)
            raise
        raise _budget_exceeded(store, wanted, now, f"waiting for {exc.holding}") from None
    try:
        refresh = refresh and store.synced_at() < asked_at  # else a sync completed meanwhile: nothing to re-read
        missing = store.missing(wanted, now, refresh=refresh)
        if missing:
            _download(store, client, missing, clock, window_hours, progress, decode_workers, deadline, report)
        if refresh:
            store.mark_synced()
    finally:
        lock.release()
    if deadline is not None and report.hours_downloaded < len(missing):
        raise _budget_exceeded(store, wanted, now)
    return report


def _budget_exceeded(store: HourStore, wanted: list[datetime], now: datetime, why: str = "") -> DownloadBudgetExceeded:
    stored = len(wanted) - len(store.missing(wanted, now))
    return DownloadBudgetExceeded(stored, len(wanted), wanted[0], wanted[-1], why)


def _download(store: HourStore, client: ExportClient, missing: list[datetime], clock: _Clock, window_hours: int,
              progress: Progress | None, decode_workers: int, deadline: float | None, report: FillReport) -> None:
    clean_stale_staging(store)
    windows = [w for run in contiguous_runs(missing) for w in tile_windows(*run, window_hours)]
    executor, in_flight = _executor(len(windows), decode_workers)
    pipeline = _WindowPipeline(store, client, clock, executor, in_flight, report, progress, deadline)
    client.deadline = deadline
    try:
        with suppress(DeadlinePassed):  # the windows downloaded whole are published; the caller says how far
            for start, end in windows:
                for part in client.export(start, end):
                    report.windows.append(f"{format_hour(part.start)}..{format_hour(part.end)}")
                    pipeline.add(part)
        with suppress(DeadlinePassed):  # a corrupt window is downloaded again: that too stops at the deadline
            pipeline.drain()
    finally:
        client.deadline = None
        # past the deadline a decode still running is not waited for: it ends in the background, unpublished
        late = deadline is not None and time.monotonic() >= deadline
        executor.shutdown(wait=not late, cancel_futures=True)
        pipeline.abandon()


def load_archive(store: HourStore, path: Path, first: datetime | None = None, last: datetime | None = None) -> int:
    """Load an export zip downloaded by hand (UI or S3 export format) into the store; returns events stored.

    Its hours are taken as complete. With ``first``/``last``, hours of that range without events are
    recorded as empty and events outside it are ignored.
    """
    first, last = (floor_hour(first), floor_hour(last)) if first and last else (None, None)
    folder = store.staging().folder
    try:
        hours, events = stage_archive(path, folder, first, last)
    except ArchiveError as exc:
        raise AmplitudeError(f"{path} is not a readable Amplitude export: {exc}") from None
    store.publish(folder, hour_range(first, last) if first else hours, None)
    return events
