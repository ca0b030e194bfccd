"""Tables built from stored hours, kept in memory and handed to shillelagh as rows at the least per-row cost.

A :class:`ScanTable` is sorted by its main time column, so a pushed-down range is a slice found by binary
search; the Python values of each column are made once, in bulk, and then sliced. Rows are built by C-level
iteration (``map``/``zip``), without a Python frame per row. :data:`TABLE_CACHE` keeps recent tables for the
process, bounded in bytes: repeated scans of one query (``IN`` lists, joins) and dashboard refreshes reuse them.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from shillelagh.typing import Row

from ..schema import TIMESTAMP

#: Rough size of one Python value in a column list (pointer plus object), for the cache's byte budget.
PYTHON_VALUE_BYTES = 64
CACHE_BYTES = 768 * 1024 * 1024


@dataclass(frozen=True)
class TimeRange:
    """A UTC range of a timestamp column; a ``None`` end is open."""

    start: datetime | None
    end: datetime | None
    include_start: bool = True
    include_end: bool = False


class IsoTimestamp(str):
    """A UTC timestamp already written as ISO text (``2026-03-01T05:03:12.123000+00:00``).

    shillelagh turns TIMESTAMP values into SQLite text with ``value.isoformat()``; text made in bulk by Arrow
    (instead of one ``datetime`` per value) takes most of the per-row cost out of large scans.
    """

    __slots__ = ()
    tzinfo = None

    def isoformat(self) -> str:
        return str(self)


def python_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A column as Python values in the form shillelagh hands to SQLite (timestamps as ISO text)."""
    if column.type != TIMESTAMP:
        return column.to_pylist()
    naive = pc.cast(pc.cast(column, pa.timestamp("us")), pa.string())  # "2026-03-01 05:03:12.123000"
    iso = pc.binary_join_element_wise(pc.utf8_replace_slice(naive, 10, 11, "T"), "+00:00", "")
    return [None if text is None else IsoTimestamp(text) for text in iso.to_pylist()]


def _micros(value: datetime) -> int:
    return int(pa.scalar(value, TIMESTAMP).cast(pa.int64()).as_py())


@dataclass
class ScanTable:
    """An Arrow table sorted by ``sort_column``, with per-column Python values made on first use."""

    table: pa.Table
    sort_column: str
    _keys: np.ndarray = field(init=False, repr=False)
    _values: dict[str, list[Any]] = field(init=False, default_factory=dict, repr=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._keys = self._sort_keys()
        if np.any(self._keys[1:] < self._keys[:-1]):  # sessions come sorted already; events do not
            self.table = self.table.take(np.argsort(self._keys, kind="stable"))
            self._keys = self._sort_keys()

    def _sort_keys(self) -> np.ndarray:
        """The sort column as int64 microseconds, nulls last."""
        keys = pc.cast(self.table[self.sort_column], pa.int64())
        return pc.fill_null(keys, np.iinfo(np.int64).max).to_numpy()

    @property
    def nbytes(self) -> int:
        return self.table.nbytes + sum(len(values) for values in self._values.values()) * PYTHON_VALUE_BYTES

    def _slice(self, bound: TimeRange) -> tuple[int, int]:
        """Row positions ``[low, high)`` of the sort column inside ``bound``."""
        low, high = 0, len(self._keys)
        if bound.start is not None:
            side = "left" if bound.include_start else "right"
            low = int(np.searchsorted(self._keys, _micros(bound.start), side=side))
        if bound.end is not None:
            side = "right" if bound.include_end else "left"
            high = int(np.searchsorted(self._keys, _micros(bound.end), side=side))
        return low, max(low, high)

    def values(self, column: str) -> list[Any]:
        with self._lock:
            if column not in self._values:
                self._values[column] = python_values(self.table[column])
            return self._values[column]

    def rows(self, columns: list[str], ranges: dict[str, TimeRange]) -> Iterator[Row]:
        """Rows inside every range (ranges on other columns must have a start), as dicts plus ``rowid``."""
        low, high = self._slice(ranges.get(self.sort_column, TimeRange(None, None)))
        others = [(column, bound) for column, bound in ranges.items() if column != self.sort_column]
        if others:
            window = self.table.slice(low, high - low)
            keep = functools.reduce(pc.and_, [_mask(window[column], bound) for column, bound in others])
            positions = (np.flatnonzero(keep.to_numpy()) + low).tolist()
            lists = [[self.values(column)[i] for i in positions] for column in columns]
            count = len(positions)
        else:
            lists = [self.values(column)[low:high] for column in columns]
            count = high - low
        names = (*columns, "rowid")
        return map(dict, map(zip, itertools.repeat(names), zip(*lists, range(count), strict=True)))


def _mask(column: pa.ChunkedArray, bound: TimeRange) -> pa.ChunkedArray:
    """True for the values inside ``bound``, whose start is set (null never is)."""
    mask = (pc.greater_equal if bound.include_start else pc.greater)(column, pa.scalar(bound.start, TIMESTAMP))
    if bound.end is not None:
        below = (pc.less_equal if bound.include_end else pc.less)(column, pa.scalar(bound.end, TIMESTAMP))
        mask = pc.and_(mask, below)
    return pc.fill_null(mask, False)


class TableCache:
    """Process-wide LRU of scan tables, bounded in (estimated) bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[tuple, ScanTable] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> ScanTable | None:
        with self._lock:
            table = self._tables.get(key)
            if table is not None:
                self._tables.move_to_end(key)
            return table

    def put(self, key: tuple, table: ScanTable) -> None:
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > 1 and sum(t.nbytes for t in self._tables.values()) > self.max_bytes:
                self._tables.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()


TABLE_CACHE = TableCache(CACHE_BYTES)
