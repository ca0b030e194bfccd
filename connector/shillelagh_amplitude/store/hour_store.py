"""The store of downloaded upload hours, one Arrow IPC (Feather v2, zstd) file per hour, per Amplitude project.

Layout: ``<cache_dir>/<project>/<YYYYMMDD>/<HH>.arrow`` (``.empty`` for an hour with no events), where
``<project>`` is a hash of the API host and API key: two projects never share files, and no secret is written
in clear (only a salted PBKDF2 verifier of the secret key, so a wrong secret cannot read cached data).
``cache_dir`` is a local folder or an object storage URI (``s3://bucket/prefix``, ``gs://…``): see
:mod:`.location`, the one place where the two differ (how a finished file is published). On object storage
each process reads through a bounded local copy of the hot hours (:mod:`.hot_cache`).

An upload hour is *final* once Amplitude's export latency (2 h) plus a safety margin has passed since its end:
it is written once and served from the store forever after. Newer hours are *fresh*: kept for ``FRESH_TTL``
only. Every hour is decoded completely in a local staging folder, then published in one step (a rename, or one
PUT), so a crash leaves no partial hour and concurrent writers of one hour leave one complete copy.

Why Arrow IPC and not Parquet: on 187 generated hours (185k events) reading the session columns back took
0.16 s from IPC+zstd and 0.61 s from Parquet+zstd, writing 0.66 s vs 1.39 s, for 32 MB vs 21 MB on disk;
the tables read hours back far more often than they write them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path

import platformdirs
import pyarrow as pa
import pyarrow.feather as feather

from ..errors import AuthenticationError
from ..hours import EXPORT_LATENCY, HOUR, to_utc
from ..memory import read_table
from ..schema import EVENT_SCHEMA
from .hot_cache import HotCache, budget_bytes
from .location import TEMP_PREFIX, FileEntry, StoreLocation, write_atomically
from .lock import FileStoreLock, StoreLock
from .staging import HourStaging, staged_file

SAFETY_MARGIN = timedelta(hours=1)
FRESH_TTL = timedelta(minutes=10)
DERIVED_KEPT = 32
PBKDF2_ROUNDS = 200_000
VERIFIER_NAME = "secret.verifier"
#: A verifier's content when the operator opened the store to any secret key (sample data).
OPEN_VERIFIER = b"open to any secret key\n"
#: Day folders of object storage listed at once (each listing is one slow request).
PARALLEL_LISTINGS = 8
#: Days of object storage whose 24 hours are all stored and final: they never change, so they are listed once.
_COMPLETE_DAYS: dict[tuple[str, str], dict[str, FileEntry]] = {}
_COMPLETE_DAYS_LOCK = threading.Lock()


def user_cache_dir() -> Path:
    """The per-user cache folder (the default store, and local copies of object storage)."""
    return Path(platformdirs.user_cache_dir("shillelagh-amplitude"))


def default_cache_dir() -> str | Path:
    """``$AMPLITUDE_CACHE_DIR`` (a folder or an object storage URI), else the per-user cache folder."""
    return os.environ.get("AMPLITUDE_CACHE_DIR") or user_cache_dir()


def project_key(base_url: str, api_key: str) -> str:
    """Folder name of a project: a hash of host and API key (neither is readable from it)."""
    return hashlib.sha256(f"{base_url.rstrip('/')}\n{api_key}".encode()).hexdigest()[:24]


def is_final(hour: datetime, now: datetime) -> bool:
    """True once Amplitude can no longer add events to this upload hour."""
    return to_utc(hour) + HOUR + EXPORT_LATENCY + SAFETY_MARGIN <= to_utc(now)


def _name(hour: datetime, final: bool, kind: str) -> str:
    """``<HH>.arrow``, ``<HH>.empty``, or ``<HH>.fresh.*`` for a fresh hour."""
    return f"{hour:%H}{'' if final else '.fresh'}.{kind}"


class HourStore:
    """Downloaded upload hours of one Amplitude project.

    ``root`` is the project's local working folder: the store itself for a local ``cache_dir``; for object
    storage, the folder of the local copies (staging and hot hours) in the per-user cache folder.
    """

    def __init__(self, cache_dir: Path | str | None, base_url: str, api_key: str) -> None:
        self.location = StoreLocation.open(cache_dir or default_cache_dir())
        self.project = project_key(base_url, api_key)
        if self.location.local:
            self.root = Path(self.location.root) / self.project
            self.hot: HotCache | None = None
        else:
            where = hashlib.sha256(self.location.display.encode()).hexdigest()[:16]
            self.root = user_cache_dir() / "object-stores" / where / self.project
            self.hot = HotCache(self.root / "hot", budget_bytes())
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def where(self) -> str:
        """The project's folder, for messages (never with credentials)."""
        return str(self.root) if self.location.local else f"{self.location.display} (project {self.project})"

    def _path(self, *names: str) -> str:
        return self.location.path(self.project, *names)

    # --- where hours live -------------------------------------------------------------------------
    def _day(self, day: str, now: datetime) -> dict[str, FileEntry]:
        """The files of one day folder; on object storage a complete, final day is listed only once."""
        key = (self.location.display, self._path(day))
        if not self.location.local and (entries := _COMPLETE_DAYS.get(key)) is not None:
            return entries
        entries = self.location.list(self.project, day)
        last_hour = to_utc(datetime.strptime(day, "%Y%m%d")) + 23 * HOUR
        finals = {name[:2] for name in entries if ".fresh" not in name}
        if not self.location.local and len(finals) == 24 and is_final(last_hour, now):
            with _COMPLETE_DAYS_LOCK:
                _COMPLETE_DAYS[key] = entries
        return entries

    @staticmethod
    def _stored_in(entries: dict[str, FileEntry], hour: datetime, now: datetime,
                   final_only: bool = False, any_age: bool = False) -> FileEntry | None:
        """The file holding ``hour`` (``.arrow`` or ``.empty``) if it is stored and still valid (and final;
        ``any_age``: a fresh one however old)."""
        for final in (True,) if final_only else (True, False):
            for kind in ("arrow", "empty"):
                entry = entries.get(_name(hour, final, kind))
                if entry is not None and (final or any_age or to_utc(now).timestamp() - entry.mtime_ns / 1e9
                                          < FRESH_TTL.total_seconds()):
                    return entry
        return None

    def stored(self, hours: Iterable[datetime], now: datetime, final_only: bool = False,
               any_age: bool = False) -> list[tuple[datetime, FileEntry | None]]:
        """Each hour with its valid stored file, or None; one listing per day (on object storage, in parallel).

        ``any_age``: fresh hours count however old they are (offline, where nothing can refresh them)."""
        hours = [to_utc(hour) for hour in hours]
        names = sorted({f"{hour:%Y%m%d}" for hour in hours})
        if self.location.local or len(names) < 2:
            listings = [self._day(day, now) for day in names]
        else:
            with ThreadPoolExecutor(PARALLEL_LISTINGS) as pool:
                listings = list(pool.map(lambda day: self._day(day, now), names))
        days = dict(zip(names, listings, strict=True))
        return [(hour, self._stored_in(days[f"{hour:%Y%m%d}"], hour, now, final_only, any_age)) for hour in hours]

    def latest(self, hours: Iterable[datetime]) -> list[tuple[datetime, FileEntry | None, bool]]:
        """Each hour with its newest stored file whatever its age (final first, else fresh; ``.arrow`` or
        ``.empty``), None when absent, and whether that file is final. What copies of the store (the lake) are
        built from: they publish what is stored, and never download."""
        hours = [to_utc(hour) for hour in hours]
        listings = {day: self.location.list(self.project, day) for day in sorted({f"{h:%Y%m%d}" for h in hours})}
        found = []
        for hour in hours:
            entries = listings[f"{hour:%Y%m%d}"]
            stored = next(((entries[name], final) for final in (True, False) for kind in ("arrow", "empty")
                           if (name := _name(hour, final, kind)) in entries), (None, False))
            found.append((hour, *stored))
        return found

    def has(self, hour: datetime, now: datetime) -> bool:
        return self.stored([hour], now)[0][1] is not None

    def missing(self, hours: Iterable[datetime], now: datetime, refresh: bool = False) -> list[datetime]:
        """The hours that must be downloaded (absent, or fresh and expired; ``refresh``: every hour not final)."""
        return [hour for hour, entry in self.stored(hours, now, final_only=refresh) if entry is None]

    def stored_span(self) -> tuple[datetime, datetime] | None:
        """The first and the last hour stored (final or fresh, with or without events), or None."""
        days = sorted(name for name in self.location.folders(self.project) if name.isdigit() and len(name) == 8)
        ends = []
        for ordered in (days, days[::-1]):
            for day in ordered:
                hours = sorted(name[:2] for name in self.location.list(self.project, day) if name[:2].isdigit())
                if hours:
                    hour = hours[0] if ordered is days else hours[-1]
                    ends.append(to_utc(datetime.strptime(day + hour, "%Y%m%d%H")))
                    break
        return (ends[0], ends[1]) if len(ends) == 2 else None

    # --- reading ------------------------------------------------------------------------------------
    def files(self, hours: Iterable[datetime], now: datetime) -> list[FileEntry]:
        """Arrow files of the stored, non-empty hours among ``hours``."""
        return [entry for _, entry in self.stored(hours, now) if entry is not None and entry.name.endswith(".arrow")]

    def read_files(self, entries: list[FileEntry], columns: list[str] | None = None) -> pa.Table:
        """The events of stored hour files, in order; only ``columns`` are read and decompressed.

        A file re-published since it was listed (a fresh hour refreshed under the same name) is gone for this
        read: :class:`FileNotFoundError`, so columns read at different times always come from the same rows.
        (On object storage, an object whose size differs from the listed one is refused the same way.)
        """
        schema = EVENT_SCHEMA if columns is None else pa.schema([EVENT_SCHEMA.field(c) for c in columns])
        if self.hot is not None:
            hot = self.hot

            def read_copies() -> list[pa.Table]:
                return [read_table(path, columns=columns) for path in hot.fetch(self.location, entries)]

            try:
                tables = read_copies()
            except FileNotFoundError:  # another process trimmed a copy before it was read: fetched again, once
                tables = read_copies()
        else:
            tables = [_read_as_listed(entry, columns) for entry in entries]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def read(self, hours: Iterable[datetime], now: datetime, columns: list[str] | None = None) -> pa.Table:
        """The stored events of ``hours`` (missing hours contribute nothing)."""
        return self.read_files(self.files(hours, now), columns)

    def newest_final_hour(self, through: datetime | None = None) -> datetime | None:
        """The newest stored final hour (at or before ``through``, if given): data is complete through its end."""
        last = f"{to_utc(through):%Y%m%d%H}" if through is not None else None
        for day in sorted((name for name in self.location.folders(self.project) if name.isdigit()), reverse=True):
            if last is not None and day > last[:8]:
                continue
            finals = sorted(name[:2] for name in self.location.list(self.project, day)
                            if name[:2].isdigit() and ".fresh" not in name and (last is None or day + name[:2] <= last))
            if finals:
                return to_utc(datetime.strptime(day + finals[-1], "%Y%m%d%H"))
        return None

    # --- writing ------------------------------------------------------------------------------------
    def staging(self) -> HourStaging:
        return HourStaging(self.root / f".staging-{uuid.uuid4().hex}")

    def publish(self, folder: Path, hours: Iterable[datetime], now: datetime | None,
                published_at: datetime | None = None) -> None:
        """Publish every hour of a completely decoded download staged in ``folder`` (absent hours: empty).

        Hours are final or fresh by their age at ``now`` (when they were asked for); ``now=None`` publishes them
        all as final (an archive loaded by hand is taken as complete). A fresh hour stays valid ``FRESH_TTL``
        from ``published_at`` (default: ``now``), so a long download does not publish hours already expired.
        """
        listings: dict[str, dict[str, FileEntry]] = {}
        for hour in map(to_utc, hours):
            day = f"{hour:%Y%m%d}"
            if day not in listings:
                listings[day] = self.location.list(self.project, day)
            source = staged_file(folder, hour)
            fresh_at = None if now is None or is_final(hour, now) else published_at or now
            self._publish(hour, source if source.exists() else None, fresh_at, listings[day])
        shutil.rmtree(folder, ignore_errors=True)

    def _publish(self, hour: datetime, source: Path | None, fresh_at: datetime | None,
                 existing: dict[str, FileEntry]) -> None:
        """Publish a complete hour file (None: no events) in one step, then remove the variants it replaces
        among the ``existing`` files of its day.

        ``fresh_at``: the hour is fresh, fetched at that time (a local file's mtime; on object storage the
        PUT's own time); None: it is final.
        """
        final = fresh_at is None
        day = f"{hour:%Y%m%d}"
        kind = "empty" if source is None else "arrow"
        published = self._path(day, _name(hour, final, kind))
        stamp = fresh_at is not None and self.location.local
        if source is None:
            self.location.publish_bytes(published, b"")
        else:
            if stamp:  # before it is visible: a listing never sees another mtime than the one it keeps
                os.utime(source, (fresh_at.timestamp(), fresh_at.timestamp()))
            self.location.publish_file(source, published)
        replaced = [_name(hour, final, "arrow" if source is None else "empty")]
        if final:
            replaced += [_name(hour, False, "arrow"), _name(hour, False, "empty")]
        for name in replaced:
            if name in existing:
                self.location.delete(self._path(day, name))
        if stamp and source is None:
            os.utime(published, (fresh_at.timestamp(), fresh_at.timestamp()))

    # --- tables derived from hours (sessions) ----------------------------------------------------------
    def read_derived(self, key: str, columns: list[str] | None = None) -> pa.Table | None:
        """A table derived from stored hours earlier (by any process, on any host), or None; ``columns``: only
        those (only their buffers are read and decompressed)."""
        entry = self.location.list(self.project, "derived").get(f"{key}.arrow")
        if entry is None:
            return None
        try:
            path = entry.path if self.hot is None else self.hot.fetch(self.location, [entry])[0]
            table = read_table(path, columns=columns)
        except (FileNotFoundError, pa.ArrowInvalid):
            return None
        if self.location.local:
            os.utime(path)  # recently used: kept by the clean-up below
        return table

    def write_derived(self, key: str, table: pa.Table) -> None:
        """Keep a derived table (in one step); only the ``DERIVED_KEPT`` most recently used ones stay."""
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=TEMP_PREFIX)
        os.close(fd)
        try:
            feather.write_feather(table, temp, compression="zstd")
            self.location.publish_file(Path(temp), self._path("derived", f"{key}.arrow"))
        finally:
            Path(temp).unlink(missing_ok=True)  # left only when writing or publishing failed
        derived = sorted(self.location.list(self.project, "derived").values(), key=lambda e: e.mtime_ns,
                         reverse=True)
        for stale in derived[DERIVED_KEPT:]:
            self.location.delete(stale.path)

    # --- coordination between processes -----------------------------------------------------------
    def lock(self) -> StoreLock:
        """The lock a process holds while it downloads into this store (see :class:`StoreLock`).

        It lives in the local working folder: on object storage it is held per host, so two hosts may both
        download an hour (at most twice); each publishes it whole, and one complete object remains."""
        return FileStoreLock(self.root / ".download.lock", self.where)

    def mark_synced(self) -> None:
        """Record that a sync (re-reading every hour not yet final) just completed."""
        write_atomically(self.root / "synced", str(time.time()).encode())

    def synced_at(self) -> float:
        """When the last complete sync ended (epoch seconds; 0 if never)."""
        try:
            return float((self.root / "synced").read_text())
        except (FileNotFoundError, ValueError):
            return 0.0

    # --- the secret key verifier --------------------------------------------------------------------
    def _verifier(self) -> str:
        return self._path(VERIFIER_NAME)

    def secret_status(self, secret_key: str) -> bool | None:
        """True if the secret matches the one this store was filled with (or the operator opened the store to any
        secret), False if not, None if the store has no verifier yet (nothing can be checked offline then).

        A verifier that exists but cannot be read raises :class:`VerifierUnreadable`: never taken as unknown."""
        try:
            content = self.location.read_bytes(self._verifier())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VerifierUnreadable(self.where, exc.strerror or type(exc).__name__) from None
        if content == OPEN_VERIFIER:
            return True
        try:
            salt, digest = (bytes.fromhex(part) for part in content.decode().split(":"))
        except ValueError:
            raise VerifierUnreadable(self.where, "not a salt:digest pair") from None
        if not salt or len(digest) != hashlib.sha256().digest_size:
            raise VerifierUnreadable(self.where, "not a salt:digest pair")
        candidate = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), salt, PBKDF2_ROUNDS)
        return hmac.compare_digest(candidate, digest)

    def remember_secret(self, secret_key: str) -> None:
        """Record a (salted, hashed) verifier of a secret that Amplitude (or the operator) vouched for."""
        if not secret_key:
            raise ValueError("an empty secret key cannot be remembered")
        salt = os.urandom(16)
        digest = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), salt, PBKDF2_ROUNDS)
        self.location.publish_bytes(self._verifier(), f"{salt.hex()}:{digest.hex()}".encode())

    def open_to_any_secret(self) -> None:
        """The operator's choice for a store of public sample data: any secret key reads it (``amplitude-load
        --open-to-any-secret``). A secret Amplitude accepts later binds the store to that secret again."""
        self.location.publish_bytes(self._verifier(), OPEN_VERIFIER)


class VerifierUnreadable(AuthenticationError):
    """A store's secret key verifier exists but cannot be read: no secret can be checked, so none is accepted."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(
            f"The secret key verifier of the store at {where} ({VERIFIER_NAME}) is unreadable ({reason}), so no "
            f"secret key can be checked against it. To repair it, delete that {VERIFIER_NAME} file, then run "
            "amplitude-sync, or amplitude-load with the project's secret key in AMPLITUDE_SECRET_KEY."
        )


def _read_as_listed(entry: FileEntry, columns: list[str] | None) -> pa.Table:
    """A local file's table, if the file is still the one listed (same modification time and size)."""

    def check() -> None:
        stat = os.stat(entry.path)
        if (stat.st_mtime_ns, stat.st_size) != (entry.mtime_ns, entry.size):
            raise FileNotFoundError(entry.path)

    check()
    table = read_table(entry.path, columns=columns)
    check()  # not replaced while it was read
    return table


def clean_stale_staging(store: HourStore, older_than: timedelta = timedelta(hours=6)) -> None:
    """Remove staging folders left behind by crashed processes."""
    cutoff = time.time() - older_than.total_seconds()
    for folder in store.root.glob(".staging-*"):
        with suppress(FileNotFoundError):  # another process published or removed it meanwhile
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
