"""Local store of downloaded upload hours, one Arrow IPC (Feather v2, zstd) file per hour, per Amplitude project.

Layout: ``<cache_dir>/<project>/<YYYYMMDD>/<HH>.arrow`` (``.empty`` for an hour with no events), where
``<project>`` is a hash of the API host and API key: two projects never share files, and no secret is written
in clear (only a salted PBKDF2 verifier of the secret key, so a wrong secret cannot read cached data).

An upload hour is *final* once Amplitude's export latency (2 h) plus a safety margin has passed since its end:
it is written once and served from disk forever after. Newer hours are *fresh*: kept for ``FRESH_TTL`` only.
Every write goes to a temporary file renamed into place, so a crash leaves no partial hour and concurrent
writers of one hour leave one complete copy.

Why Arrow IPC and not Parquet: on 187 generated hours (185k events) reading the session columns back took
0.16 s from IPC+zstd and 0.61 s from Parquet+zstd, writing 0.66 s vs 1.39 s, for 32 MB vs 21 MB on disk;
the tables read hours back far more often than they write them.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import platformdirs
import pyarrow as pa
import pyarrow.feather as feather

from ..hours import HOUR, to_utc
from ..schema import EVENT_SCHEMA

EXPORT_LATENCY = timedelta(hours=2)
SAFETY_MARGIN = timedelta(hours=1)
FRESH_TTL = timedelta(minutes=10)
DERIVED_KEPT = 32
PBKDF2_ROUNDS = 200_000
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def default_cache_dir() -> Path:
    """Per-user cache folder (``$AMPLITUDE_CACHE_DIR`` overrides it)."""
    override = os.environ.get("AMPLITUDE_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("shillelagh-amplitude"))


def project_key(base_url: str, api_key: str) -> str:
    """Folder name of a project: a hash of host and API key (neither is readable from it)."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()[:24]


def is_final(hour: datetime, now: datetime) -> bool:
    """True once Amplitude can no longer add events to this upload hour."""
    return to_utc(hour) + HOUR + EXPORT_LATENCY + SAFETY_MARGIN <= to_utc(now)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, path)


def read_files(paths: Iterable[Path], columns: list[str] | None = None) -> pa.Table:
    """The events of stored hour files, in order; only ``columns`` are read and decompressed."""
    schema = EVENT_SCHEMA if columns is None else pa.schema([EVENT_SCHEMA.field(c) for c in columns])
    tables = [feather.read_table(path, columns=columns) for path in paths]
    return pa.concat_tables(tables) if tables else schema.empty_table()


class HourStore:
    """Downloaded upload hours of one Amplitude project."""

    def __init__(self, cache_dir: Path | str | None, base_url: str, api_key: str) -> None:
        root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.root = root / project_key(base_url, api_key)
        self.root.mkdir(parents=True, exist_ok=True)

    # --- where hours live -------------------------------------------------------------------------
    def _path(self, hour: datetime, final: bool, kind: str) -> Path:
        """``<day>/<HH>.arrow``, ``<HH>.empty``, or ``<HH>.fresh.*`` for a fresh hour."""
        hour = to_utc(hour)
        return self.root / hour.strftime("%Y%m%d") / f"{hour:%H}{'' if final else '.fresh'}.{kind}"

    def _stored(self, hour: datetime, now: datetime) -> Path | None:
        """The file holding ``hour`` (``.arrow`` or ``.empty``) if it is stored and still valid."""
        for final in (True, False):
            for kind in ("arrow", "empty"):
                path = self._path(hour, final, kind)
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if final or to_utc(now).timestamp() - mtime < FRESH_TTL.total_seconds():
                    return path
        return None

    def has(self, hour: datetime, now: datetime) -> bool:
        return self._stored(hour, now) is not None

    def has_final(self, hour: datetime) -> bool:
        return any(self._path(hour, True, kind).exists() for kind in ("arrow", "empty"))

    def missing(self, hours: Iterable[datetime], now: datetime, refresh: bool = False) -> list[datetime]:
        """The hours that must be downloaded (absent, or fresh and expired; ``refresh``: every hour not final)."""
        if refresh:
            return [hour for hour in hours if not self.has_final(hour)]
        return [hour for hour in hours if not self.has(hour, now)]

    def stored_span(self) -> tuple[datetime, datetime] | None:
        """The first and the last hour stored (final or fresh, with or without events), or None."""
        days = sorted(p for p in self.root.iterdir() if p.name.isdigit() and len(p.name) == 8)
        ends = []
        for ordered in (days, days[::-1]):
            for day in ordered:
                hours = sorted(p.name[:2] for p in day.iterdir() if p.name[:2].isdigit())
                if hours:
                    hour = hours[0] if ordered is days else hours[-1]
                    ends.append(to_utc(datetime.strptime(day.name + hour, "%Y%m%d%H")))
                    break
        return (ends[0], ends[1]) if len(ends) == 2 else None

    # --- reading ------------------------------------------------------------------------------------
    def files(self, hours: Iterable[datetime], now: datetime) -> list[Path]:
        """Arrow files of the stored, non-empty hours among ``hours``."""
        paths = (self._stored(hour, now) for hour in hours)
        return [path for path in paths if path is not None and path.suffix == ".arrow"]

    def read(self, hours: Iterable[datetime], now: datetime, columns: list[str] | None = None) -> pa.Table:
        """The stored events of ``hours`` (missing hours contribute nothing)."""
        return read_files(self.files(hours, now), columns)

    def newest_final_hour(self) -> datetime | None:
        """The newest stored final hour: data is complete through its end."""
        for day in sorted((p for p in self.root.iterdir() if p.name.isdigit()), reverse=True):
            finals = sorted(p.name[:2] for p in day.iterdir() if p.name[:2].isdigit() and ".fresh" not in p.name)
            if finals:
                return to_utc(datetime.strptime(day.name + finals[-1], "%Y%m%d%H"))
        return None

    # --- writing ------------------------------------------------------------------------------------
    def staging(self) -> HourStaging:
        return HourStaging(self.root / f".staging-{uuid.uuid4().hex}")

    def publish(self, folder: Path, hours: Iterable[datetime], now: datetime | None) -> None:
        """Publish every hour of a completely decoded download staged in ``folder`` (absent hours: empty).

        Hours are final or fresh by their age at ``now``; ``now=None`` publishes them all as final
        (an archive loaded by hand is taken as complete).
        """
        for hour in hours:
            source = staged_file(folder, hour)
            fresh_at = None if now is None or is_final(hour, now) else now
            self._publish(hour, source if source.exists() else None, fresh_at)
        shutil.rmtree(folder, ignore_errors=True)

    def _publish(self, hour: datetime, source: Path | None, fresh_at: datetime | None) -> None:
        """Move a complete hour file (None: no events) into place, atomically.

        ``fresh_at``: the hour is fresh, fetched at that time (kept as its file's mtime); None: it is final.
        """
        final = fresh_at is None
        data, empty = self._path(hour, final, "arrow"), self._path(hour, final, "empty")
        published, stale = (empty, data) if source is None else (data, empty)
        if source is None:
            _atomic_write_bytes(empty, b"")
        else:
            data.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, data)
        stale.unlink(missing_ok=True)
        if fresh_at is not None:
            os.utime(published, (fresh_at.timestamp(), fresh_at.timestamp()))
        else:
            for kind in ("arrow", "empty"):
                self._path(hour, False, kind).unlink(missing_ok=True)

    # --- tables derived from hours (sessions) ----------------------------------------------------------
    def read_derived(self, key: str) -> pa.Table | None:
        """A table derived from stored hours earlier (by any process), or None."""
        path = self.root / "derived" / f"{key}.arrow"
        try:
            table = feather.read_table(path)
        except (FileNotFoundError, pa.ArrowInvalid):
            return None
        os.utime(path)  # recently used: kept by the clean-up below
        return table

    def write_derived(self, key: str, table: pa.Table) -> None:
        """Keep a derived table (atomically); only the ``DERIVED_KEPT`` most recently used ones stay."""
        folder = self.root / "derived"
        folder.mkdir(exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        os.close(fd)
        feather.write_feather(table, temp, compression="zstd")
        os.replace(temp, folder / f"{key}.arrow")
        derived = sorted(folder.glob("*.arrow"), key=lambda path: path.stat().st_mtime, reverse=True)
        for stale in derived[DERIVED_KEPT:]:
            stale.unlink(missing_ok=True)

    # --- coordination between processes -----------------------------------------------------------
    def lock(self) -> StoreLock:
        """The lock a process holds while it downloads into this store (see :class:`StoreLock`)."""
        return FileStoreLock(self.root / ".download.lock")

    def mark_synced(self) -> None:
        """Record that a sync (re-reading every hour not yet final) just completed."""
        _atomic_write_bytes(self.root / "synced", str(time.time()).encode())

    def synced_at(self) -> float:
        """When the last complete sync ended (epoch seconds; 0 if never)."""
        try:
            return float((self.root / "synced").read_text())
        except (FileNotFoundError, ValueError):
            return 0.0

    # --- the secret key verifier --------------------------------------------------------------------
    def _verifier_path(self) -> Path:
        return self.root / "secret.verifier"

    def secret_status(self, secret_key: str) -> bool | None:
        """True if the secret matches the one this store was filled with, False if not, None if unknown."""
        try:
            salt, digest = self._verifier_path().read_text().split(":")
        except (FileNotFoundError, ValueError):
            return None
        candidate = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), bytes.fromhex(salt), PBKDF2_ROUNDS)
        return hmac.compare_digest(candidate.hex(), digest)

    def remember_secret(self, secret_key: str) -> None:
        """Record a (salted, hashed) verifier of a secret that Amplitude accepted."""
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), salt, PBKDF2_ROUNDS)
        _atomic_write_bytes(self._verifier_path(), f"{salt.hex()}:{digest.hex()}".encode())


class LockTimeout(Exception):
    """The store lock stayed held by another process for the whole wait."""

    def __init__(self, holder: dict) -> None:
        self.holder = holder
        who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
        super().__init__(f"the hour store is being filled by {who}")


class StoreLock:
    """Mutual exclusion of the processes downloading into one store (web, Celery workers, ``amplitude-sync``).

    What a lock *is* stays here; how it is *held* is the subclass's: a local or shared POSIX file system uses
    :class:`FileStoreLock`, an object-storage store would hold a lease object instead. The policy is the same:
    waiting polls until a deadline, the holder's identity (host, pid, since when) is readable for messages, and a
    holder that crashes cannot keep the lock.
    """

    poll_s = 0.1

    def acquire(self, timeout: float | None = None) -> None:
        """Wait for the lock, at most ``timeout`` seconds (None: as long as it takes); else :class:`LockTimeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._try_hold():
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeout(self.holder())
            time.sleep(self.poll_s)

    def release(self) -> None:
        self._let_go()

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @staticmethod
    def identity() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "since": datetime.now(UTC).isoformat()}

    # --- how it is held (per backend) ---------------------------------------------------------------
    def _try_hold(self) -> bool:
        raise NotImplementedError

    def _let_go(self) -> None:
        raise NotImplementedError

    def holder(self) -> dict:
        raise NotImplementedError


class FileStoreLock(StoreLock):
    """An exclusive ``flock`` on a lock file. The kernel drops it when its holder exits or crashes (even with
    SIGKILL), so a stale holder never blocks the store; the file's content only names the holder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def _try_hold(self) -> bool:
        if self._fd is not None:
            raise RuntimeError("this lock is already held")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self.identity()).encode(), 0)
        self._fd = fd
        return True

    def _let_go(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (FileNotFoundError, ValueError):
            return {}


class HourStaging:
    """Writes the hours of one archive into a private folder; nothing is visible until the store publishes it.

    Holds no reference to the store, so a worker process can fill it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writers: dict[datetime, pa.ipc.RecordBatchFileWriter] = {}

    def add(self, hour: datetime, batch: pa.RecordBatch) -> None:
        writer = self._writers.get(hour)
        if writer is None:
            writer = pa.ipc.new_file(staged_file(self.folder, hour), EVENT_SCHEMA, options=IPC_OPTIONS)
            self._writers[hour] = writer
        writer.write_batch(batch)

    def close(self) -> list[datetime]:
        """Finish every file; returns the hours that received events."""
        hours = sorted(self._writers)
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        return hours

    def discard(self) -> None:
        """Drop everything staged (a failed or abandoned decode)."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def staged_file(folder: Path, hour: datetime) -> Path:
    return folder / f"{to_utc(hour):%Y%m%d%H}.arrow"


def clean_stale_staging(store: HourStore, older_than: timedelta = timedelta(hours=6)) -> None:
    """Remove staging folders left behind by crashed processes."""
    cutoff = time.time() - older_than.total_seconds()
    for folder in store.root.glob(".staging-*"):
        if folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
