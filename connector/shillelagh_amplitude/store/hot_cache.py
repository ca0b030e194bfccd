"""A bounded local read-through cache of stored files, for stores on object storage.

Each process keeps copies of the hour files it read in the per-user cache folder. A copy is named by the
object's modification time, so a fresh hour replaced on the store is fetched again; the least recently used
copies are removed once the folder holds more than its budget (``AMPLITUDE_HOT_CACHE_MB``, 2 GiB by default).

Processes on one host (web server, Celery workers) share the folder and trim it each by its own needs, so a copy
may vanish at any time, even between :meth:`HotCache.fetch` and its reading: readers that find a copy gone fetch
it again, once (``HourStore.read_files``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .location import TEMP_PREFIX, FileEntry, StoreLocation

DEFAULT_MB = 2048
#: Downloads in flight at once: object stores answer each request slowly but in parallel.
PARALLEL_DOWNLOADS = 8


def budget_bytes() -> int:
    """The cache budget from ``AMPLITUDE_HOT_CACHE_MB``."""
    return int(os.environ.get("AMPLITUDE_HOT_CACHE_MB", DEFAULT_MB)) * 1024 * 1024


class HotCache:
    """Local copies of a location's files under ``folder``, at most ``max_bytes`` in all."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def copy_of(self, entry: FileEntry) -> Path:
        """Where the copy of ``entry`` lives (the day folder, the name, the object's modification time)."""
        day, name = entry.path.rsplit("/", 2)[-2:]
        return self.folder / day / f"{name}.{entry.mtime_ns}"

    def fetch(self, location: StoreLocation, entries: Iterable[FileEntry]) -> list[Path]:
        """Local copies of ``entries``, downloading the missing ones; the cache is trimmed after downloads."""
        copies = [(entry, self.copy_of(entry)) for entry in entries]
        missing = [(entry, copy) for entry, copy in copies if not _touch(copy)]
        if missing:
            with ThreadPoolExecutor(PARALLEL_DOWNLOADS) as pool:
                list(pool.map(lambda item: location.download(item[0].path, item[1], item[0].size), missing))
            self.trim(keep={copy for _, copy in copies})
        return [copy for _, copy in copies]

    def trim(self, keep: set[Path]) -> None:
        """Remove the least recently used copies while over budget (never those in ``keep``, nor the downloads
        other processes are writing); copies other processes remove meanwhile are passed over."""
        files = []
        for path in self.folder.glob("*/*"):
            if path.name.startswith(TEMP_PREFIX):
                continue
            try:
                status = path.stat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(status.st_mode):
                files.append((status, path))
        total = sum(status.st_size for status, _ in files)
        for status, path in sorted(files, key=lambda item: item[0].st_mtime):
            if total <= self.max_bytes:
                break
            if path not in keep:
                path.unlink(missing_ok=True)
                total -= status.st_size


def _touch(copy: Path) -> bool:
    """Mark a copy recently used; False when there is none (never fetched, or removed by a trim)."""
    try:
        os.utime(copy)
    except FileNotFoundError:
        return False
    return True
