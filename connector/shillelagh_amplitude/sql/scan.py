"""Tables built from stored hours, kept in memory sorted by time, and the rows a query selects as SQLite values.

A :class:`ScanTable` holds the Arrow columns of one set of stored hours, sorted by its main time column, so a
pushed-down range is a slice found by binary search. Columns are read from the store on first use: a query reads
only the columns it uses. A :class:`Selection` is the rows of one scan; it makes their Python values in chunks of
:data:`CHUNK_ROWS` rows, so one day of ``SELECT *`` costs one day of conversion and memory stays bounded whatever
the range. :data:`TABLE_CACHE` keeps recent scan tables for the process, bounded by the bytes of their Arrow
buffers: repeated scans of one query (``IN`` lists, joins) and dashboard refreshes reuse them.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shillelagh.exceptions import ProgrammingError
from shillelagh.typing import Row

from ..memory import use_returning_pool
from ..schema import TIMESTAMP, micros

#: Rows converted to Python values at a time: bounds the memory of a scan whatever its length.
CHUNK_ROWS = 32_768
CACHE_BYTES = 768 * 1024 * 1024

#: Reads the named columns of a scan's stored hours, in stored order.
Reader = Callable[[list[str]], pa.Table]
#: Rows of a selection: the first one's number, their count, and one Arrow array per requested column.
Chunk = tuple[int, int, list[pa.Array | pa.ChunkedArray]]


@dataclass(frozen=True)
class TimeRange:
    """A UTC range of a timestamp column; a ``None`` end is open."""

    start: datetime | None
    end: datetime | None
    include_start: bool = True
    include_end: bool = False


class IsoTimestamp(str):
    """A UTC timestamp already written as ISO text, for shillelagh's generic row path.

    That path turns TIMESTAMP values into SQLite text with ``value.isoformat()``; text made in bulk by Arrow
    (instead of one ``datetime`` per value) takes most of the per-row cost out of large scans.
    """

    __slots__ = ()
    tzinfo = None

    def isoformat(self) -> str:
        return str(self)


def sqlite_values(column: pa.Array | pa.ChunkedArray, text: type[str] = str) -> list[Any]:
    """A column as the values SQLite stores: int, float, 0/1, text, ISO text for timestamps (wrapped in ``text``),
    None.

    Made through numpy (``to_numpy().tolist()``), about 20 times faster than ``to_pylist()``'s scalar per value.
    """
    if column.type == TIMESTAMP:
        naive = pc.cast(pc.cast(column, pa.timestamp("us")), pa.string())  # "2026-03-01 05:03:12.123000"
        column = pc.binary_join_element_wise(pc.utf8_replace_slice(naive, 10, 11, "T"), "+00:00", "")
        values = column.to_numpy(zero_copy_only=False).tolist()  # nulls come out as None
        return values if text is str else [None if value is None else text(value) for value in values]
    if pa.types.is_boolean(column.type):
        column = pc.cast(column, pa.int8())
    if pa.types.is_string(column.type):
        return column.to_numpy(zero_copy_only=False).tolist()
    if not column.null_count:
        return column.to_numpy().tolist()
    values = pc.fill_null(column, 0).to_numpy().tolist()
    for position in np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False)).tolist():
        values[position] = None
    return values


def _sort_keys(column: pa.ChunkedArray) -> np.ndarray:
    """A timestamp column as int64 microseconds, nulls last."""
    return pc.fill_null(pc.cast(column, pa.int64()), np.iinfo(np.int64).max).to_numpy()


class StoreChanged(ProgrammingError):
    """An hour was re-published (by a sync, say) between the listing of a query's files and their read."""


def read_checked(read: Reader, names: list[str], rows: int | None = None) -> pa.Table:
    """``read(names)``, holding ``rows`` rows when given. A file gone, or other rows: an hour was re-published
    (fresh -> final, or refreshed) since the files were listed (the store's reads already fetch again a local copy
    another process trimmed)."""
    try:
        table = read(names)
    except FileNotFoundError:
        table = None
    if table is None or (rows is not None and table.num_rows != rows):
        raise StoreChanged("The hour store changed while this query read it; run the query again.")
    return table


class ScanTable:
    """The columns of one set of stored hours, sorted by ``sort_column``; each column is read on first use.

    Columns already read are used without locking; only readers of missing columns wait for each other (a column
    is read once). ``on_growth`` is called, outside any lock, after columns were added.
    """

    def __init__(self, read: Reader | None, sort_column: str, columns: dict[str, pa.ChunkedArray] | None = None,
                 sources: Mapping[Hashable, int] | None = None):
        self._read = read
        self.sort_column = sort_column
        #: The version (modification time) of each stored file the table was read from, by the file's identity
        #: across re-publications (its hour): what makes it stale (:class:`TableCache`).
        self.sources: Mapping[Hashable, int] = sources or {}
        self._reading = threading.Lock()
        self._columns = dict(columns or {})
        keys = _sort_keys(self._columns[sort_column] if columns else read_checked(read, [sort_column])[sort_column])
        self._order = np.argsort(keys, kind="stable") if np.any(keys[1:] < keys[:-1]) else None
        self._keys = keys if self._order is None else keys[self._order]
        if self._order is not None:
            self._columns = {name: column.take(self._order) for name, column in self._columns.items()}
        self._nbytes = self._keys.nbytes + sum(column.nbytes for column in self._columns.values())
        self.on_growth: Callable[[], None] | None = None

    @classmethod
    def of(cls, table: pa.Table, sort_column: str) -> ScanTable:
        """A scan table holding every column of ``table`` (sessions: built whole, nothing left to read)."""
        return cls(None, sort_column, {name: table[name] for name in table.column_names})

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def nbytes(self) -> int:
        """Bytes held: the sort keys and the Arrow buffers of the columns read so far."""
        return self._nbytes

    def columns(self, names: Iterable[str]) -> dict[str, pa.ChunkedArray]:
        """The named columns in sorted order, reading the missing ones from the store in one pass."""
        names = list(names)
        if any(name not in self._columns for name in names):
            self._read_missing(names)
        columns = self._columns
        return {name: columns[name] for name in names}

    def _read_missing(self, names: list[str]) -> None:
        """Read those of ``names`` no other reader has read meanwhile; the column dict is replaced, never changed."""
        with self._reading:
            missing = [name for name in names if name not in self._columns]
            if not missing:
                return
            table = read_checked(self._read, missing, len(self._keys))
            added = {name: table[name] if self._order is None else table[name].take(self._order) for name in missing}
            self._columns = {**self._columns, **added}
            self._nbytes += sum(column.nbytes for column in added.values())
        if self.on_growth is not None:
            self.on_growth()

    def select(self, ranges: dict[str, TimeRange]) -> Selection:
        """The rows inside every range; ranges on columns other than the sort column must have a start."""
        low, high = self._slice(ranges.get(self.sort_column, TimeRange(None, None)))
        others = {column: bound for column, bound in ranges.items() if column != self.sort_column}
        if not others or low == high:
            return Selection(self, low, high)
        columns = self.columns(others)
        keep = functools.reduce(pc.and_, [_mask(columns[name].slice(low, high - low), bound)
                                          for name, bound in others.items()])
        positions = np.flatnonzero(keep.to_numpy(zero_copy_only=False)) + low
        return Selection(self, 0, len(positions), positions)

    def _slice(self, bound: TimeRange) -> tuple[int, int]:
        """Row positions ``[low, high)`` of the sort column inside ``bound``."""
        low, high = 0, len(self._keys)
        if bound.start is not None:
            side = "left" if bound.include_start else "right"
            low = int(np.searchsorted(self._keys, micros(bound.start), side=side))
        if bound.end is not None:
            side = "right" if bound.include_end else "left"
            high = int(np.searchsorted(self._keys, micros(bound.end), side=side))
        return low, max(low, high)


@dataclass(frozen=True)
class Selection:
    """Rows of a scan table: ``[start, stop)``, or those ``positions`` when other columns were filtered."""

    table: ScanTable | None
    start: int
    stop: int
    positions: np.ndarray | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def chunks(self, columns: list[str]) -> Iterator[Chunk]:
        """``(first row, row count, Arrow values per column)`` for every :data:`CHUNK_ROWS` rows, cut when reached."""
        for first, count in self.spans():
            yield first - self.start, count, [self.part(name, first, count) for name in columns]

    def spans(self) -> Iterator[tuple[int, int]]:
        """``(first, count)`` of every chunk of :data:`CHUNK_ROWS` rows, cut when reached: ``first`` numbers the
        table's rows (``positions``' when set) as :meth:`part` takes it."""
        return ((first, min(CHUNK_ROWS, self.stop - first)) for first in range(self.start, self.stop, CHUNK_ROWS))

    def part(self, column: str, first: int, count: int) -> pa.Array | pa.ChunkedArray:
        """The values of ``column`` in one span (:meth:`spans`), the column read from the store if not yet."""
        values = self.table.columns([column])[column]
        if self.positions is None:
            return values.slice(first, count)
        return values.take(pa.array(self.positions[first:first + count]))

    def where(self, column: str, keep: Callable[[pa.ChunkedArray], np.ndarray]) -> Selection:
        """The rows of this selection for which ``keep`` (given their values of ``column``) is true."""
        if self.table is None or not len(self):
            return self
        values = self.table.columns([column])[column]
        if self.positions is None:
            base = np.arange(self.start, self.stop)
            part = values.slice(self.start, len(self))
        else:
            base = self.positions[self.start:self.stop]
            part = values.take(pa.array(base))
        positions = base[keep(part)]
        return Selection(self.table, 0, len(positions), positions)

    def rows(self, columns: list[str]) -> Iterator[Row]:
        """Rows as dicts plus ``rowid``, for shillelagh's generic path (built in C: no Python frame per row)."""
        names = (*columns, "rowid")

        def chunk_rows(chunk: Chunk) -> Iterator[Row]:
            first, count, parts = chunk
            lists = [sqlite_values(part, IsoTimestamp) for part in parts]
            return map(dict, map(zip, itertools.repeat(names), zip(*lists, range(first, first + count), strict=True)))

        return itertools.chain.from_iterable(map(chunk_rows, self.chunks(columns)))


NO_ROWS = Selection(None, 0, 0)


def _mask(column: pa.ChunkedArray, bound: TimeRange) -> pa.ChunkedArray:
    """True for the values inside ``bound``, whose start is set (null never is)."""
    mask = (pc.greater_equal if bound.include_start else pc.greater)(column, pa.scalar(bound.start, TIMESTAMP))
    if bound.end is not None:
        below = (pc.less_equal if bound.include_end else pc.less)(column, pa.scalar(bound.end, TIMESTAMP))
        mask = pc.and_(mask, below)
    return pc.fill_null(mask, False)


class TableCache:
    """Process-wide LRU of scan tables, bounded by the bytes they hold (tables grow as columns are read).

    The bytes are a running total, recounted for a table when it is put or reports growth; the cache's lock is
    never held while a table reads (a slow read holds only that table's readers, and a table being made only the
    threads asking for it: it is made once however many want it at once, :meth:`get_or_make`). A table read from
    a file version that was re-published since (the background sync refreshes the hours not final yet, then makes
    them final) can never be asked for again: it is dropped as soon as a table of the newer version is put,
    instead of holding the budget until it is the oldest.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[tuple, ScanTable] = OrderedDict()
        self._sizes: dict[tuple, int] = {}
        self._total = 0
        self._lock = threading.Lock()
        #: The newest version put of every source (a stored file, by identity).
        self._newest: dict[Hashable, int] = {}
        #: A lock per key being made, held by the thread making it.
        self._making: dict[tuple, threading.Lock] = {}

    def __len__(self) -> int:
        return len(self._tables)

    @property
    def total_bytes(self) -> int:
        """The bytes of the tables kept, as counted."""
        return self._total

    def get(self, key: tuple) -> ScanTable | None:
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
            return table

    def get_or_make(self, key: tuple, make: Callable[[], ScanTable]) -> ScanTable:
        """The table kept under ``key``, else ``make()``'s, put; threads asking for a key being made wait for it
        (after a sync, every chart of a dashboard asks at once for the same new table)."""
        table = self.get(key)
        if table is not None:
            return table
        with self._lock:
            making = self._making.setdefault(key, threading.Lock())
        try:
            with making:
                table = self.get(key)
                if table is None:
                    table = make()
                    self.put(key, table)
                return table
        finally:
            with self._lock:
                if self._making.get(key) is making:
                    del self._making[key]

    def put(self, key: tuple, table: ScanTable) -> None:
        """Keep ``table`` as the most recent, unless a newer version of one of its sources was put; drop the tables
        of older versions; evict the oldest while over budget (the newest always stays)."""
        table.on_growth = functools.partial(self._grew, key, table)
        with self._lock:
            newer = {source: version for source, version in table.sources.items()
                     if version > self._newest.get(source, version - 1)}
            self._newest.update(newer)
            if newer:
                for stale in [kept for kept, other in self._tables.items() if self._stale(other)]:
                    self._drop(stale)
            if self._stale(table):  # read before a re-publication another query already saw: used once, not kept
                if self._tables.get(key) is table:
                    self._drop(key)
                return
            self._tables[key] = table
            self._tables.move_to_end(key)
            self._count(key, table)
            while len(self._tables) > 1 and self._total > self.max_bytes:
                self._drop(next(iter(self._tables)))

    def _stale(self, table: ScanTable) -> bool:
        """A source of ``table`` has a newer version (the caller holds the lock)."""
        newest = self._newest
        return any(newest.get(source, version) > version for source, version in table.sources.items())

    def _drop(self, key: tuple) -> None:
        """Forget a kept table (the caller holds the lock)."""
        del self._tables[key]
        self._total -= self._sizes.pop(key)

    def _grew(self, key: tuple, table: ScanTable) -> None:
        """``table`` read more columns: count it again (evicting waits for the next :meth:`put`, as it always did)."""
        with self._lock:
            if self._tables.get(key) is table:
                self._count(key, table)

    def _count(self, key: tuple, table: ScanTable) -> None:
        """Bring ``table``'s bytes in the total up to date (the caller holds the lock)."""
        size = table.nbytes
        self._total += size - self._sizes.get(key, 0)
        self._sizes[key] = size

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self._sizes.clear()
            self._newest.clear()
            self._total = 0


use_returning_pool()  # tables evicted and builds ended are given back to the system, not kept by the pool
TABLE_CACHE = TableCache(CACHE_BYTES)
