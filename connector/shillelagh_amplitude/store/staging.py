"""Staging: the hours of one archive decoded into a private folder, published by the store once complete."""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

import pyarrow as pa

from ..hours import to_utc
from ..schema import EVENT_SCHEMA

#: Hour files a staging keeps open at once (each holds a file descriptor; ``ulimit -n`` is often 256 or 1024).
MAX_OPEN_WRITERS = 32
IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


class HourStaging:
    """Writes the hours of one archive into a private folder; nothing is visible until the store publishes it.

    At most ``max_open`` hour files are open at once (an archive may span thousands of hours; each open file
    holds a descriptor): the least recently written one is closed, and should more events of its hour follow
    (archives come roughly, not strictly, in hour order), they go to a further part file, merged on close.
    Holds no reference to the store, so a worker process can fill it.
    """

    def __init__(self, folder: Path, max_open: int = MAX_OPEN_WRITERS) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_open = max_open
        self._writers: OrderedDict[datetime, pa.ipc.RecordBatchFileWriter] = OrderedDict()
        self._parts: dict[datetime, int] = {}

    def add(self, hour: datetime, batch: pa.RecordBatch) -> None:
        writer = self._writers.get(hour)
        if writer is None:
            if len(self._writers) >= self.max_open:
                self._writers.popitem(last=False)[1].close()
            part = self._parts.get(hour, 0)
            writer = pa.ipc.new_file(self._part_file(hour, part), EVENT_SCHEMA, options=IPC_OPTIONS)
            self._writers[hour] = writer
            self._parts[hour] = part + 1
        else:
            self._writers.move_to_end(hour)
        writer.write_batch(batch)

    def close(self) -> list[datetime]:
        """Finish every file (an hour written in parts: one file); returns the hours that received events."""
        self._close_writers()
        for hour, parts in self._parts.items():
            if parts > 1:
                self._merge(hour, parts)
        hours = sorted(self._parts)
        self._parts.clear()
        return hours

    def discard(self) -> None:
        """Drop everything staged (a failed or abandoned decode)."""
        self._close_writers()
        self._parts.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _close_writers(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def _part_file(self, hour: datetime, part: int) -> Path:
        """The first part is the hour's staged file itself."""
        return staged_file(self.folder, hour) if part == 0 else self.folder / f"{to_utc(hour):%Y%m%d%H}.{part}.part"

    def _merge(self, hour: datetime, parts: int) -> None:
        """Copy the parts of an hour, batch by batch in the order they were written, into its staged file."""
        merged = self.folder / f"{to_utc(hour):%Y%m%d%H}.merged"
        with pa.ipc.new_file(merged, EVENT_SCHEMA, options=IPC_OPTIONS) as writer:
            for part in range(parts):
                with pa.memory_map(str(self._part_file(hour, part))) as source:
                    reader = pa.ipc.open_file(source)
                    for index in range(reader.num_record_batches):
                        writer.write_batch(reader.get_batch(index))
        for part in range(1, parts):
            self._part_file(hour, part).unlink()
        os.replace(merged, staged_file(self.folder, hour))


def staged_file(folder: Path, hour: datetime) -> Path:
    return folder / f"{to_utc(hour):%Y%m%d%H}.arrow"
