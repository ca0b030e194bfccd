"""Publishing a project's hour store as the lake: partitioned Parquet that Spark, DuckDB, Trino or Athena read.

**What a partition holds.** The partition of day D is built from the upload hours that ``amplitude://`` reads for
a query of that day (:meth:`.layout.LakeTable.source_hours`): events whose ``event_time`` falls on D; sessions
that start on D, built by :func:`..sql.sessions.build_sessions` (the one definition of a session) from the
events whose ``session_id`` falls on D; user sessions (30-minute gap) that start on D, built by
:func:`..sql.user_sessions.build_user_sessions` from the events of D's window whose ``client_event_time`` falls from
48 h before D (the look-back, as ``amplitude://`` reads it for a query of D) to the end of the day after D (the
last a user session started on D can reach). An event or session is in exactly one partition. Consecutive
user-session days rebuilt in one run are read and sessionised together, up to :data:`USER_SESSION_CHUNK_DAYS` at a
time (:func:`user_sessions_of_days`), and each day still gets exactly its own build: the users that build could
see differently are rebuilt alone from the day's own events.

**Incremental.** The manifest (``<lake>/_amplitude_lake.json``) records, per partition, a digest of the stored
hour files it was built from (name, size, modification time) and ``late_hours``. A run lists the hours of each
candidate partition and rewrites only those whose digest changed. A partition is *final* once every upload hour
that can add to it is stored as final: later runs skip it without listing anything. Until then it is
*provisional* and rebuilt whenever a sync stores a new or refreshed hour of its window; its file is replaced only
when its bytes change (the manifest keeps each file's SHA-256).

**The status.** After the partitions, a run publishes the lake's status (:func:`publish_status`): the end of the
newest hour the store held as final among those the lake holds, by the store's own
:meth:`~..store.hour_store.HourStore.newest_final_hour` (what ``amplitude://`` shows), one file replaced whole.

**Flat memory.** One pass reads each needed hour file once, in order (in runs of small partitions, reader threads read
and split the next :data:`READ_AHEAD` hours meanwhile), and keeps the rows of each partition being rebuilt; past
:data:`PENDING_BYTES` (:data:`SMALL_RUN_PENDING_BYTES` in runs of small partitions) the largest partition's rows go to a
local spool file (Arrow IPC, uncompressed: it is read back within hours of the pass, and compressing it cost more than
it saved). A partition is built and written as soon as the last hour of its window has been read, by a builder thread
while the pass reads on (two builder threads while every partition of the run reads at most :data:`PARALLEL_BUILD_BYTES`
of hour files, else one), then forgotten. With one builder, the pass does not wait for it: a sessions partition handed
over while it is busy is built by the pass itself, any other is queued, its rows in its spool file. So memory holds one
hour, the pending rows (bounded) and the days being built (for user sessions, one chunk's days and their look-back),
whatever the size of the lake; the disk holds the spool files of the partitions queued.

**Atomic partitions.** A partition is one file under a fixed name, replaced whole:

- in a folder: written beside its place under a hidden name (``.part-0.parquet.<id>.tmp``, skipped by Spark and
  Trino, not matched by ``*.parquet``) and renamed over the old file (``os.replace``: readers that list or open
  the file get the old one or the new one, and a reader holding the old one open keeps reading it whole);
- on object storage: uploaded under its final key in one PUT (or one multipart upload, which becomes visible only
  when completed): a reader gets the old object or the new one, never a part.

So a reader never sees a partition partly written, doubled or missing rows. DuckDB, which opens a file by its path
more than once per query, reads each version under an immutable name instead (a hard link, :mod:`.pins`), from
views the publisher rewrites after each run. Consistency holds per partition:
while a run rewrites several days, a reader spanning them may see some days already new and others still old
(every row once either way: a day's rows never move to another partition). A publisher killed midway leaves each
partition whole (old or new) and at worst a hidden temporary file; the manifest, written at most every
:data:`MANIFEST_SECONDS` and at the end of a run (also one that fails), lists only partitions already whole, so the
next run rebuilds what it does not list and removes the temporaries. Publishers of one folder lake take turns
(a ``flock`` on ``<lake>/.lock``); on object storage, two publishers at once each write whole, identical
partitions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ..hours import HOUR, LOOKBACK, floor_hour, hour_range
from ..schema import EVENT_SCHEMA, micros
from ..sql.sessions import EVENT_COLUMNS, build_sessions
from ..sql.user_sessions import DEFAULT_GAP_MINUTES, build_user_sessions
from ..sql.user_sessions import EVENT_COLUMNS as USER_EVENT_COLUMNS
from ..store.hour_store import HourStore
from ..store.location import FileEntry, StoreError, StoreLocation
from ..store.lock import FileStoreLock
from .layout import (
    EVENTS,
    MANIFEST,
    PART_FILE,
    ROW_GROUP_ROWS,
    SESSIONS,
    STATUS,
    STATUS_SCHEMA,
    TABLES,
    USER_SESSIONS,
    LakeTable,
    days_between,
    is_temp,
    parquet_options,
    temp_name,
)
from .pins import pin, refresh

DAY_US = 86_400_000_000
DAY_MS = 86_400_000
MANIFEST_FORMAT = 1
#: The spool files: uncompressed (with lz4, spilling took 1.8 s of a publish of 1M events instead of 0.9 s).
SPOOL_OPTIONS = pa.ipc.IpcWriteOptions(compression=None)
#: Rows of partitions not written yet kept in memory; beyond, the largest partition's go to its spool file (32
#: rather than 64 MB: at 10M events a month, where the pass reads beside the build, 888 rather than 948 MB peak RSS
#: publishing alone, in the same time).
PENDING_BYTES = 32 * 1024 * 1024
#: In runs that build two partitions at once: hours read and split ahead of the pass, by as many threads (at 1M
#: events a month the pass was the critical path, its builders idle half the time: the pass alone took 3.0 rather
#: than 3.8 s; in runs of one builder, the build is, and reading ahead took CPU from it: 10M events, 56 s rather
#: than 48 s).
READ_AHEAD = 2
#: Partitions built at once by the builder threads (two cores: the pass and the builders share them).
BUILDERS = 2
#: Runs whose largest partition (or user-session chunk) reads more than these bytes of hour files build one
#: partition at a time, in one thread: each thread's allocations are kept by pyarrow's pool (mimalloc) per thread,
#: and at 10M events a month builds in two threads took the publisher from about 860 MB to 1.1 GB peak RSS (one
#: build at a time in either of two threads: 1,093 MB). The pass reads on beside it (:func:`_rebuild`).
PARALLEL_BUILD_BYTES = 128 * 1024 * 1024
#: :data:`PENDING_BYTES` in the runs that build two partitions at once: small projects spill little or nothing
#: (at 1M events a month, a publish took 0.2-2 s less, for 30 MB more peak RSS).
SMALL_RUN_PENDING_BYTES = 256 * 1024 * 1024
SESSION_INPUT = pa.schema([EVENT_SCHEMA.field(name) for name in EVENT_COLUMNS])
USER_SESSION_INPUT = pa.schema([EVENT_SCHEMA.field(name) for name in USER_EVENT_COLUMNS])
#: Days (from the partition's day) of the client times of the events a user-session partition is built from.
USER_SESSION_DAYS = (-LOOKBACK.days, 1)
#: Consecutive user-session days rebuilt together from one sessionisation (:func:`user_sessions_of_days`): the
#: events of ``k + 3`` days are held at once instead of each day's four days ``k`` times (10 rather than 3: a 1M
#: publish took 0.3-0.8 s less, for 70 MB more peak RSS; :data:`USER_SESSION_CHUNK_BYTES` bounds a chunk anyway).
USER_SESSION_CHUNK_DAYS = 10
#: A chunk of several days reads at most these bytes of hour files (the rows it holds grow with them; a chunk stops
#: growing at this bound, so a larger project gets shorter chunks); beyond, days are rebuilt one at a time, as large
#: projects need to keep memory flat (about 3M events a month and more).
USER_SESSION_CHUNK_BYTES = 128 * 1024 * 1024
#: The column tagging each user-session input row with its upload hour (hours since 1970), to tell each day's own.
UPLOAD_HOUR = "upload_hour"
USER_SESSION_ROWS = USER_SESSION_INPUT.append(pa.field(UPLOAD_HOUR, pa.int64()))
#: The manifest is written at most this often while a run records partitions, and at its end (a run killed
#: between rebuilds the partitions it did not record yet). Written after each partition, it grows with the lake:
#: 10.6 ms a write at a year's 1,095 partitions, 12 s over a year's first publish, and one request each on object
#: storage.
MANIFEST_SECONDS = 5.0
#: Times a run starts over when the store re-published an hour file while it was read (a concurrent sync).
ATTEMPTS = 3


class LakeError(StoreError):
    """The lake cannot be published (another project's lake, an unreadable manifest)."""


@dataclass
class PublishReport:
    """What one run did."""

    lake: str
    written: list[str] = field(default_factory=list)
    emptied: list[str] = field(default_factory=list)
    unchanged: int = 0
    identical: int = 0
    hours_read: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    #: The status published: the end of the newest final upload hour the lake holds (None: none yet).
    complete_through: datetime | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        rows = ", ".join(f"{count} {name.removeprefix('amplitude_')}" for name, count in self.rows.items())
        return (f"lake {self.lake}: {len(self.written)} partitions written ({rows or 'no rows'}), "
                f"{len(self.emptied)} emptied, {self.unchanged} unchanged, {self.identical} rebuilt identical; "
                f"{self.hours_read} hour files read in {self.seconds:.1f} s; data complete through "
                f"{f'{self.complete_through:%Y-%m-%d %H:%M} UTC' if self.complete_through else '(no final hour)'}")


@dataclass
class Manifest:
    """Per partition: the digest of its sources, its row count and whether it is final."""

    project: str
    partitions: dict[str, dict]
    #: The pins the DuckDB views list and those retired (:func:`.pins.refresh`).
    pins: dict = field(default_factory=dict)
    #: The published status: ``data_complete_through`` (ISO, or None) and its file's SHA-256 (``content``).
    status: dict = field(default_factory=dict)
    #: Held by a builder thread while it records a partition and writes the manifest.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    #: When it was last written (``time.monotonic()``), and whether it changed since.
    written_at: float = field(default=0.0, repr=False, compare=False)
    unwritten: bool = field(default=False, repr=False, compare=False)

    @classmethod
    def read(cls, location: StoreLocation, project: str) -> Manifest:
        try:
            data = json.loads(location.read_bytes(location.path(MANIFEST)))
        except FileNotFoundError:
            return cls(project, {})
        except ValueError:
            raise LakeError(f"The lake {location.display} has an unreadable {MANIFEST}; remove it to republish "
                            "every partition.") from None
        if data.get("project") != project:
            raise LakeError(f"The lake {location.display} holds another Amplitude project (a lake holds one).")
        return cls(project, data.get("partitions", {}), data.get("pins", {}), data.get("status", {}))

    def write(self, location: StoreLocation, at_most_every: float = 0.0) -> None:
        """Write the manifest; with ``at_most_every`` (seconds), only if the last write is that old: else
        :meth:`flush` writes it later."""
        self.unwritten = True
        if time.monotonic() - self.written_at < at_most_every:
            return
        data = {"format": MANIFEST_FORMAT, "project": self.project, "partitions": self.partitions, "pins": self.pins,
                "status": self.status}
        location.publish_bytes(location.path(MANIFEST), json.dumps(data, sort_keys=True, indent=0).encode())
        self.written_at, self.unwritten = time.monotonic(), False

    def flush(self, location: StoreLocation) -> None:
        """Write what :meth:`write` left for later."""
        if self.unwritten:
            self.write(location)


@dataclass
class _Partition:
    """A partition a run considers: its window of upload hours and the hour files stored in it."""

    table: LakeTable
    day: date
    first: datetime
    last: datetime
    sources: list[tuple[datetime, FileEntry]] = field(default_factory=list)
    final: bool = False
    digest: str = ""
    pending: list[pa.Table] = field(default_factory=list)
    pending_bytes: int = 0
    spool: pa.ipc.RecordBatchFileWriter | None = None
    spool_path: Path | None = None
    #: For a chunk of consecutive user-session days read together: its partitions (the chunk is not one itself).
    members: list[_Partition] = field(default_factory=list)

    @property
    def key(self) -> str:
        return self.table.partition(self.day)

    @property
    def day_number(self) -> int:
        return _day_number(self.day)

    @property
    def last_day_number(self) -> int:
        """The last day the partition (or chunk) covers."""
        return self.members[-1].day_number if self.members else self.day_number


def open_lake(lake: str | Path) -> StoreLocation:
    """The lake's location: a folder (created) or an object storage URI, as ``cache_dir``."""
    return StoreLocation.open(lake)


def publish(
    store: HourStore,
    lake: str | Path,
    *,
    late_hours: int = 48,
    first: datetime | None = None,
    last: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> PublishReport:
    """Bring the lake up to date with the store: every partition whose upload hours intersect ``first..last``
    (default: every hour stored), rewriting only those whose hour files changed; then its status
    (:func:`publish_status`)."""
    started = time.monotonic()
    location = open_lake(lake)
    report = PublishReport(location.display)
    Manifest.read(location, store.project)  # another project's lake is refused even when there is nothing to do
    span = (floor_hour(first), floor_hour(last)) if first and last else store.stored_span()
    if span is None:
        return report
    lock = FileStoreLock(Path(location.root) / ".lock", location.display) if location.local else None
    if lock is not None:
        lock.acquire()
    try:
        # asked before the run lists the hours: an hour final now is listed final, so the run publishes it
        newest = store.newest_final_hour(through=span[1])
        for attempt in range(ATTEMPTS):
            try:
                _publish(store, location, late_hours, span, report, progress)
                break
            except FileNotFoundError:  # a sync re-published an hour while it was read: list again
                if attempt == ATTEMPTS - 1:
                    raise
        manifest = Manifest.read(location, store.project)
        report.complete_through = publish_status(location, manifest, newest if newest and newest >= span[0] else None)
        if location.local:
            contents = {key: entry.get("content") for key, entry in manifest.partitions.items()}
            contents[STATUS] = manifest.status.get("content")
            manifest.pins = refresh(location, contents, manifest.pins, time.time())
            manifest.write(location)
    finally:
        if lock is not None:
            lock.release()
    report.seconds = time.monotonic() - started
    return report


def publish_status(location: StoreLocation, manifest: Manifest, newest: datetime | None) -> datetime | None:
    """Publish the lake's status after a run (:data:`.layout.STATUS`): ``data_complete_through`` is the end of
    ``newest``, the newest hour the store held as final among those the run published (the store's own
    :meth:`~..store.hour_store.HourStore.newest_final_hour`, as ``amplitude://`` gives it), or the status published
    before if later (a run over older hours: the lake still holds the newer ones). Its file is replaced whole,
    only when its bytes change. Returns ``data_complete_through``."""
    known = manifest.status.get("data_complete_through")
    through = newest + HOUR if newest is not None else None
    if known is not None and (through is None or datetime.fromisoformat(known) > through):
        through = datetime.fromisoformat(known)
    rows = pa.Table.from_pylist([{"data_complete_through": through}], schema=STATUS_SCHEMA)
    content = replace_file(location, STATUS, STATUS_SCHEMA, rows, unless=manifest.status.get("content"))
    status = {"data_complete_through": through.isoformat() if through else None,
              "content": content or manifest.status.get("content")}
    if status != manifest.status:
        manifest.status = status
        manifest.write(location)
    return through


def candidates(span: tuple[datetime, datetime], late_hours: int) -> list[tuple[LakeTable, date]]:
    """The partitions whose window of upload hours intersects ``span``."""
    first, last = span
    widest = max(table.reach for table in TABLES)
    earliest = max(table.lookback for table in TABLES)
    days = days_between((first - 23 * HOUR - timedelta(hours=late_hours) - widest).date(),
                        (last + HOUR + earliest).date())
    found = []
    for table in TABLES:
        for day in days:
            start, end = table.source_hours(day, late_hours)
            if start <= last and end >= first:
                found.append((table, day))
    return found


def _publish(store: HourStore, location: StoreLocation, late_hours: int, span: tuple[datetime, datetime],
             report: PublishReport, progress: Callable[[str], None] | None) -> None:
    manifest = Manifest.read(location, store.project)
    plan = []
    for table, day in candidates(span, late_hours):
        part = _Partition(table, day, *table.source_hours(day, late_hours))
        known = manifest.partitions.get(part.key)
        if known and known.get("final") and known.get("late_hours") == late_hours:
            report.unchanged += 1
            continue
        plan.append(part)
    if not plan:
        return
    stored = {hour: (entry, final) for hour, entry, final in
              store.latest(hour_range(min(p.first for p in plan), max(p.last for p in plan)))}
    dirty = []
    for part in plan:
        window = [(hour, *stored[hour]) for hour in hour_range(part.first, part.last)]
        part.sources = [(hour, entry) for hour, entry, _ in window if entry is not None and
                        entry.name.endswith(".arrow")]
        part.final = all(entry is not None and final for _, entry, final in window)
        fingerprint = [late_hours] + [(f"{hour:%Y%m%d%H}", entry.name, entry.size, entry.mtime_ns)
                                      for hour, entry in part.sources]
        part.digest = hashlib.sha256(json.dumps(fingerprint).encode()).hexdigest()
        known = manifest.partitions.get(part.key)
        if known and known.get("sources") == part.digest and known.get("late_hours") == late_hours:
            report.unchanged += 1
            if part.final != known.get("final"):
                known["final"] = part.final
                manifest.write(location, at_most_every=MANIFEST_SECONDS)
        else:
            dirty.append(part)
    try:
        if dirty:
            _rebuild(store, location, manifest, dirty, late_hours, report, progress)
    finally:
        manifest.flush(location)


def _rebuild(store: HourStore, location: StoreLocation, manifest: Manifest, dirty: list[_Partition],
             late_hours: int, report: PublishReport, progress: Callable[[str], None] | None) -> None:
    """One pass over the hour files of the dirty partitions, writing each partition once its window is read (the
    user-session partitions by chunks of consecutive days, :func:`_chunks`)."""
    dirty = _chunks(dirty)
    hours = sorted({hour: entry for part in dirty for hour, entry in part.sources}.items())
    done_after: dict[datetime | None, list[_Partition]] = {}
    for part in dirty:
        done_after.setdefault(part.sources[-1][0] if part.sources else None, []).append(part)
    largest = max(sum(entry.size for _, entry in part.sources) for part in dirty)
    builders, pending_limit, read_ahead = (BUILDERS, SMALL_RUN_PENDING_BYTES, READ_AHEAD) \
        if largest <= PARALLEL_BUILD_BYTES else (1, PENDING_BYTES, 0)
    spool_dir = Path(tempfile.mkdtemp(dir=store.root, prefix=".staging-lake-"))
    try:
        with ThreadPoolExecutor(max_workers=builders, thread_name_prefix="lake-build") as builder:
            building: set[Future] = set()  # the builds running or queued

            def finish(part: _Partition) -> None:
                """Hand the partition's rows to a builder thread. If none is free: with two builders (both cores
                build) the pass waits for one; with one, the pass builds a sessions partition itself (its input
                is a few narrow columns), and queues any other behind the build running, its pending rows moved
                to its spool file, and reads on (the second core)."""
                _settle(building, {future for future in building if future.done()})
                busy = len(building) >= builders
                if busy and builders > 1:
                    _settle(building, wait(building, return_when=FIRST_COMPLETED).done)
                    busy = False
                if busy and part.table is not SESSIONS and part.pending:
                    _spill(spool_dir, part)
                spooled, pending = _detach(part)
                if busy and part.table is SESSIONS:
                    _finish(location, manifest, part, spooled, pending, late_hours, report, progress)
                else:
                    building.add(builder.submit(_finish, location, manifest, part, spooled, pending, late_hours,
                                                report, progress))

            for part in done_after.pop(None, []):
                finish(part)
            _read_hours(store, dirty, hours, done_after, spool_dir, pending_limit, read_ahead, report, finish)
            _settle(building, wait(building).done)
    finally:
        for part in dirty:
            if part.spool is not None:
                part.spool.close()
        shutil.rmtree(spool_dir, ignore_errors=True)


def _settle(building: set[Future], done: set[Future]) -> None:
    """Forget the finished builds, raising the error of one that failed (the builds queued are cancelled)."""
    for future in done:
        building.discard(future)
        if future.exception() is not None:
            for queued in building:
                queued.cancel()
        future.result()


def _read_hours(store: HourStore, dirty: list[_Partition], hours: list[tuple[datetime, FileEntry]],
                done_after: dict[datetime | None, list[_Partition]], spool_dir: Path, pending_limit: int,
                read_ahead: int, report: PublishReport, finish: Callable[[_Partition], None]) -> None:
    """Read each hour file once, in order, keeping each dirty partition's rows of it (spilling the largest's past
    ``pending_limit`` bytes in all); ``finish`` each partition after the last hour of its window. The hours are
    read and split in threads of their own, up to ``read_ahead`` hours ahead of the pass (0: one at a time)."""

    def take(hour: datetime, split: Future) -> None:
        for part, rows in split.result():
            part.pending.append(rows)
            part.pending_bytes += rows.get_total_buffer_size()
        report.hours_read += 1
        while sum(part.pending_bytes for part in dirty) > pending_limit:
            _spill(spool_dir, max(dirty, key=lambda part: part.pending_bytes))
        for part in done_after.pop(hour, []):
            finish(part)

    with ThreadPoolExecutor(max_workers=max(read_ahead, 1), thread_name_prefix="lake-read") as readers:
        ahead: deque[tuple[datetime, Future]] = deque()
        for hour, entry in hours:
            ahead.append((hour, readers.submit(_split_hour, store, dirty, hour, entry)))
            if len(ahead) > read_ahead:
                take(*ahead.popleft())
        while ahead:
            take(*ahead.popleft())


def _split_hour(store: HourStore, dirty: list[_Partition], hour: datetime,
                entry: FileEntry) -> list[tuple[_Partition, pa.Table]]:
    """An hour file's rows for each dirty partition whose window holds the hour (in a reader thread)."""
    targets = [part for part in dirty if part.first <= hour <= part.last and part.sources]
    wants_all = any(part.table is EVENTS for part in targets)
    events = store.read_files([entry], None if wants_all else list(EVENT_COLUMNS))
    days = {table.name: _day_numbers(events, table) for table in TABLES
            if any(part.table is table for part in targets)}
    split = []
    for part in targets:
        rows = _rows_in(events, _in_partition(days[part.table.name], part), _input_schema(part.table))
        if rows is not None:
            if part.table is USER_SESSIONS:
                rows = rows.append_column(UPLOAD_HOUR, pa.array(np.full(rows.num_rows, _hour_number(hour))))
            split.append((part, rows))
    return split


def _chunks(dirty: list[_Partition]) -> list[_Partition]:
    """The dirty partitions, those of user sessions grouped into chunks of at most :data:`USER_SESSION_CHUNK_DAYS`
    consecutive days whose hour files hold at most :data:`USER_SESSION_CHUNK_BYTES` (a day alone otherwise), each
    read as one partition whose window is the union of its days' windows."""
    days = sorted((part for part in dirty if part.table is USER_SESSIONS), key=lambda part: part.day)
    groups: list[list[_Partition]] = []
    files: dict[datetime, FileEntry] = {}
    for part in days:
        grown = {**files, **dict(part.sources)}
        if groups and len(groups[-1]) < USER_SESSION_CHUNK_DAYS and \
                part.day_number == groups[-1][-1].day_number + 1 and \
                sum(entry.size for entry in grown.values()) <= USER_SESSION_CHUNK_BYTES:
            groups[-1].append(part)
            files = grown
        else:
            groups.append([part])
            files = dict(part.sources)
    chunks = []
    for members in groups:
        sources = sorted({hour: entry for part in members for hour, entry in part.sources}.items())
        chunks.append(_Partition(USER_SESSIONS, members[0].day, min(part.first for part in members),
                                 max(part.last for part in members), sources, members=members))
    return [part for part in dirty if part.table is not USER_SESSIONS] + chunks


def _rows_in(events: pa.Table, mask: np.ndarray, schema: pa.Schema) -> pa.Table | None:
    """The columns of ``schema`` of the events ``mask`` selects (None if it selects none): only those columns are
    filtered, and when it selects every event they are taken without a copy."""
    if not mask.any():
        return None
    rows = events.select(schema.names)
    return rows if mask.all() else rows.filter(pa.array(mask))


def _hour_number(hour: datetime) -> int:
    """Hours since 1970-01-01 00:00 UTC."""
    return int(hour.timestamp()) // 3600


def _day_number(day: date) -> int:
    """Days since 1970-01-01 (what :func:`_day_numbers` gives the events of that UTC day)."""
    return (day - date(1970, 1, 1)).days


def _day_numbers(events: pa.Table, table: LakeTable) -> np.ndarray:
    """The UTC day (days since 1970-01-01) dating each event in ``table``: its ``event_time`` for events, its
    ``session_id`` (the session's start, ms) for sessions, its ``client_event_time`` for user sessions; -1 when it
    has none."""
    if table is not SESSIONS:
        column = "event_time" if table is EVENTS else "client_event_time"
        times = pc.fill_null(pc.cast(events[column], pa.int64()), -DAY_US).to_numpy()
        return np.floor_divide(times, DAY_US)
    return np.floor_divide(pc.fill_null(events["session_id"], -DAY_MS).to_numpy(), DAY_MS)


def _in_partition(days: np.ndarray, part: _Partition) -> np.ndarray:
    """Which events (by :func:`_day_numbers`) a partition is built from: those of its day; for user sessions,
    those of the days :data:`USER_SESSION_DAYS` around it (the rest cannot change a user session started on it:
    its events end a day after its start at the latest, and a session's splits depend only on earlier events)."""
    if part.table is USER_SESSIONS:
        first, last = USER_SESSION_DAYS
        return (days >= part.day_number + first) & (days <= part.last_day_number + last)
    return days == part.day_number


def _spill(spool_dir: Path, part: _Partition) -> None:
    """Move a partition's pending rows to its spool file (in one batch)."""
    if part.spool is None:
        part.spool_path = spool_dir / f"{part.table.name}-{part.day}.arrow"
        part.spool = pa.ipc.new_file(part.spool_path, _spool_schema(part.table), options=SPOOL_OPTIONS)
    part.spool.write_table(pa.concat_tables(part.pending).combine_chunks())
    part.pending, part.pending_bytes = [], 0


def _input_schema(table: LakeTable) -> pa.Schema:
    """The event columns a partition of ``table`` is built from."""
    if table is EVENTS:
        return EVENT_SCHEMA
    return SESSION_INPUT if table is SESSIONS else USER_SESSION_INPUT


def _spool_schema(table: LakeTable) -> pa.Schema:
    """The columns of a partition's pending rows: its input, and for user sessions each row's upload hour."""
    return USER_SESSION_ROWS if table is USER_SESSIONS else _input_schema(table)


def user_sessions_of_day(events: pa.Table, day: date) -> pa.Table:
    """The user sessions at the default gap that start on ``day``, built from ``events`` as ``amplitude://`` builds
    them for a query of that day (from the look-back before its first hour on)."""
    start = datetime.combine(day, datetime.min.time(), UTC)
    sessions = build_user_sessions(events, DEFAULT_GAP_MINUTES, since=start - LOOKBACK, starting_from=start)
    days = np.floor_divide(pc.cast(sessions["session_start"], pa.int64()).to_numpy(), DAY_US)
    return sessions.filter(pa.array(days == _day_number(day)))


def user_sessions_of_days(events: pa.Table, windows: list[tuple[date, datetime, datetime]]) -> list[pa.Table]:
    """The user sessions of consecutive days, each exactly :func:`user_sessions_of_day` over that day's own input
    (the events of its window of upload hours ``first..last`` whose client day is from two days before to the day
    after), from one sessionisation of ``events`` (with their :data:`UPLOAD_HOUR`) from the first day's look-back.

    That one build differs from a day's own only for two kinds of user, rebuilt alone from the day's own input:
    those with a session spanning the day's look-back start (active without a 30-minute pause across it: its own
    build cuts them there) and those with an event of its client days outside its window (read for a neighbour).
    For every other user, the first event at or after the look-back start begins a session in both builds, and
    from there both see the same events."""
    starts = [datetime.combine(day, datetime.min.time(), UTC) for day, _, _ in windows]
    inputs = events.drop_columns([UPLOAD_HOUR])
    # one day: only its sessions are built further; several: those of the look-back tell who spans a later cut
    sessions = build_user_sessions(inputs, DEFAULT_GAP_MINUTES, since=starts[0] - LOOKBACK,
                                   starting_from=starts[0] if len(windows) == 1 else None)
    session_starts = pc.cast(sessions["session_start"], pa.int64()).to_numpy()
    session_days = np.floor_divide(session_starts, DAY_US)
    session_ends = pc.cast(sessions["session_end"], pa.int64()).to_numpy()
    session_users = pc.fill_null(sessions["amplitude_id"], 0).to_numpy()
    event_days = _day_numbers(events, USER_SESSIONS)
    hours = events[UPLOAD_HOUR].to_numpy()
    users = pc.fill_null(events["amplitude_id"], 0).to_numpy()
    tables = []
    for (day, first, last), start in zip(windows, starts, strict=True):
        number = _day_number(day)
        cut = micros(start - LOOKBACK)
        near = (event_days >= number + USER_SESSION_DAYS[0]) & (event_days <= number + USER_SESSION_DAYS[1])
        own = near & (hours >= _hour_number(first)) & (hours <= _hour_number(last))
        spanning = (session_starts < cut) & (session_ends >= cut)
        redo = np.union1d(session_users[spanning], users[near & ~own])
        kept = sessions.filter(pa.array((session_days == number) & ~np.isin(session_users, redo)))
        if len(redo):
            rebuilt = user_sessions_of_day(inputs.filter(pa.array(own & np.isin(users, redo))), day)
            kept = pa.concat_tables([kept, rebuilt])
            kept = kept.take(pc.sort_indices(kept, [("session_start", "ascending"), ("amplitude_id", "ascending")]))
        tables.append(kept)
    return tables


def _detach(part: _Partition) -> tuple[Path | None, list[pa.Table]]:
    """Take a partition's rows away from the pass: its closed spool file (if any) and its pending rows."""
    spooled = None
    if part.spool is not None:
        part.spool.close()
        part.spool, spooled = None, part.spool_path
    pending = part.pending
    part.pending, part.pending_bytes = [], 0
    return spooled, pending


def _finish(location: StoreLocation, manifest: Manifest, part: _Partition, spooled: Path | None,
            pending: list[pa.Table], late_hours: int, report: PublishReport,
            progress: Callable[[str], None] | None) -> None:
    """Build the partition's table (a chunk's: each of its days') from its rows (spooled, then pending), publish it
    whole, and record it in the manifest (in a builder thread, while the pass reads on)."""
    parts = pending
    if part.table is EVENTS and pending:  # written as they are: in one chunk rather than in their hours' slices,
        parts = [pa.concat_tables(pending).combine_chunks()]  # the 30 days of 1M events took 1.8 s of CPU, not 2.5
    if spooled is not None:  # mapped, not read: no copy (the pages go when the table does; 10M: 4-7 s less, ~60 MB)
        parts = [pa.ipc.open_file(pa.memory_map(str(spooled))).read_all(), *parts]
        spooled.unlink()
    events = pa.concat_tables(parts) if parts else _spool_schema(part.table).empty_table()
    del parts, pending
    if part.table is USER_SESSIONS:
        tables = user_sessions_of_days(events, [(day.day, day.first, day.last) for day in part.members])
        del events
        for day, table in zip(part.members, tables, strict=True):
            _write(location, manifest, day, table, late_hours, report, progress)
        return
    table = events if part.table is EVENTS else build_sessions(events)
    del events
    _write(location, manifest, part, table, late_hours, report, progress)


def _write(location: StoreLocation, manifest: Manifest, part: _Partition, table: pa.Table, late_hours: int,
           report: PublishReport, progress: Callable[[str], None] | None) -> None:
    """Publish a partition's table whole and record it in the manifest."""
    known = manifest.partitions.get(part.key, {}).get("content")
    content, rows = None, table.num_rows
    written = emptied = False
    if rows:
        content = write_partition(location, part.table, part.day, table, unless=known)
        written = content is not None
        content = content or known  # None: rebuilt from other files (e.g. fresh hours become final), same bytes
    else:
        emptied = delete_partition(location, part.table, part.day)
    del table
    pa.default_memory_pool().release_unused()  # the day's buffers go back to the system, not to the next day
    with manifest.lock:  # another builder thread may be recording its partition
        if written:
            report.written.append(part.key)
            report.rows[part.table.name] = report.rows.get(part.table.name, 0) + rows
        elif rows:
            report.identical += 1
        elif emptied:
            report.emptied.append(part.key)
        manifest.partitions[part.key] = {"sources": part.digest, "rows": rows, "final": part.final,
                                         "late_hours": late_hours, "content": content}
        manifest.write(location, at_most_every=MANIFEST_SECONDS)
        if progress is not None:
            progress(part.key)


def write_partition(location: StoreLocation, table: LakeTable, day: date, rows: pa.Table,
                    unless: str | None = None) -> str | None:
    """Replace the partition's file whole with ``rows``: :func:`replace_file`. Sessions are sorted by their start,
    so row groups have non-overlapping time ranges that engines skip by their statistics. Events stay in the order
    the pass read them (by upload hour: nearly time order), as sorting a day's wide rows cost a tenth of publishing
    at 10M events; every row group's range still lies within the partition's day."""
    sort_by = None if table is EVENTS else table.time_column
    return replace_file(location, table.partition(day), table.schema, rows, sort_by, unless)


def replace_file(location: StoreLocation, folder_key: str, schema: pa.Schema, rows: pa.Table,
                 sort_by: str | None = None, unless: str | None = None) -> str | None:
    """Replace ``<folder_key>/part-0.parquet`` whole with ``rows`` (sorted by ``sort_by``). Returns the new file's
    SHA-256, or None when it equals ``unless`` (the file published before holds the same bytes: it is left alone,
    so readers see no replacement at all)."""
    order = pc.sort_indices(rows, [(sort_by, "ascending")]) if sort_by else None
    target = location.path(f"{folder_key}/{PART_FILE}")
    if location.local:
        folder = Path(target).parent
        folder.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(folder):  # left by a publisher killed midway (publishers of a folder take turns)
            if is_temp(name):
                (folder / name).unlink(missing_ok=True)
        temp = folder / temp_name()
    else:
        fd, name = tempfile.mkstemp(prefix=".tmp-lake-", suffix=".parquet")
        os.close(fd)
        temp = Path(name)
    try:
        with pq.ParquetWriter(temp, schema, **parquet_options(schema)) as writer:
            for offset in range(0, rows.num_rows, ROW_GROUP_ROWS):
                group = rows.slice(offset, ROW_GROUP_ROWS) if order is None else \
                    rows.take(order.slice(offset, ROW_GROUP_ROWS))
                writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
        with temp.open("rb") as written:
            content = hashlib.file_digest(written, "sha256").hexdigest()
        if content == unless and PART_FILE in location.list(folder_key):
            return None
        if location.local:
            pin(temp, content)  # the version's immutable name, for DuckDB (see .pins)
        location.publish_file(temp, target)
        return content
    finally:
        temp.unlink(missing_ok=True)


def delete_partition(location: StoreLocation, table: LakeTable, day: date) -> bool:
    """Remove a partition's file (a day left without rows); True if there was one."""
    target = location.path(table.file(day))
    existed = PART_FILE in location.list(table.partition(day))
    location.delete(target)
    return existed
