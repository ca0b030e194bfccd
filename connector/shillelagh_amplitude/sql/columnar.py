"""A columnar SQLite virtual-table cursor for the Amplitude adapter: values served by position from column lists.

shillelagh's ``VTCursor`` turns every row into a dict, formats each value, then builds a tuple over every declared
column (56 for events), whatever the query uses. This cursor keeps shillelagh's planning (``VTTable.BestIndexObject``:
pushed-down bounds, order, requested columns) and its bound parsing (``get_all_bounds``, ``get_bounds``), then asks
the adapter for a :class:`~.scan.Selection` and holds one chunk of Python values per requested column. ``Next`` and
``Eof`` only move and test a position; ``Column(i)`` indexes the i-th column's list. Values are what SQLite stores:
integers as integers, booleans as 0/1, timestamps as ISO text.

Planning is shillelagh's with one fix (:func:`plan`): a consumed constraint is marked at its own position among all
the constraints SQLite offers, not at its rank in shillelagh's list (which skips unusable constraints and those it
does not consume): that numbering made SQLite fail with "xBestIndex malfunction" whenever such a constraint came
first, e.g. ``gap_minutes IN (30, 60) AND session_start >= …`` (SQLite also plans an ``IN`` list as unusable). The
generic path's tables of this adapter are planned by it too (:mod:`.adapter` installs it).

Written against shillelagh 1.4.5 and apsw 3.54 (pinned in ``pyproject.toml``); ``tests/test_columnar.py`` fails if
``amplitude://`` stops running this cursor.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator
from typing import Any

import apsw
import pyarrow as pa
from apsw.ext import index_info_to_dict
from shillelagh.adapters.base import Adapter
from shillelagh.backends.apsw.vt import VTModule, VTTable, get_all_bounds
from shillelagh.exceptions import OperationalError, ProgrammingError
from shillelagh.lib import get_bounds

from ..errors import AmplitudeError, AmplitudeFault
from .budget import QueryClock
from .scan import NO_ROWS, Selection, sqlite_values

#: The literal forms a TIMESTAMP bound accepts (Python's ``datetime.fromisoformat``), for error messages.
ACCEPTED_TIMESTAMPS = "'2026-11-20', '2026-11-20 13:45:00', '2026-11-20T13:45:00Z' or '2026-11-20T13:45:00+01:00'"


class _Nulls:
    """Stands for a column the query does not use: SQLite never asks for it, and would read NULL."""

    def __getitem__(self, position: int) -> None:
        return None


NULLS = _Nulls()


@contextlib.contextmanager
def dbapi_errors() -> Iterator[None]:
    """The adapter's errors as DB-API ones: a fault (the network, Amplitude or the store failed) an
    ``OperationalError`` keeping its traceback, a refusal (a range too long, hours missing offline, wrong keys) a
    ``ProgrammingError``."""
    try:
        yield
    except AmplitudeFault as exc:
        raise OperationalError(str(exc)) from exc
    except AmplitudeError as exc:
        raise ProgrammingError(str(exc)) from None


class _Pending:
    """A chunk of one column not read nor converted yet: the first read of a value reads the column (from the
    store, if no query read it before), converts the chunk and puts the list in its slot.

    SQLite names a column as used even when it reads it only for a constraint the adapter consumed (the time
    range), or when it is a subquery's column the outer query never uses (SQLite computes NULL in its place, as
    for every column of a ``UNION ALL`` dataset a chart does not use), so a column is read and converted only
    when SQLite really asks for one of its values.
    """

    __slots__ = ("values", "slot", "read")

    def __init__(self, values: list[Any], slot: int, read: Callable[[], pa.Array | pa.ChunkedArray]) -> None:
        self.values, self.slot, self.read = values, slot, read

    def __getitem__(self, position: int) -> Any:
        with dbapi_errors():
            part = self.read()
        converted = self.values[self.slot] = sqlite_values(part)
        return converted[position]


class ColumnarModule(VTModule):
    """Creates :class:`ColumnarTable` virtual tables for one adapter class; their adapters share the connection's
    ``clock`` (one download budget per query)."""

    def __init__(self, adapter: type[Adapter], clock: QueryClock) -> None:
        super().__init__(adapter)
        self.clock = clock

    def Create(self, connection: apsw.Connection, modulename: str, dbname: str, tablename: str,
               *args: str) -> tuple[str, VTTable]:
        create_table, table = super().Create(connection, modulename, dbname, tablename, *args)
        table.adapter.query_clock = self.clock
        return create_table, ColumnarTable(table.adapter)

    Connect = Create


def plan(table: VTTable, index_info: apsw.IndexInfo, exact: set[int]) -> None:
    """shillelagh's plan (``VTTable.BestIndexObject``), each used constraint marked at its own position; the
    columns numbered in ``exact`` have their consumed constraints omitted from SQLite's own check."""
    names = list(table.adapter.get_columns())
    info = index_info_to_dict(index_info, column_names=names)
    usable = [position for position, constraint in enumerate(info["aConstraint"]) if constraint["usable"]]
    constraints = [(info["aConstraint"][position].get("iColumn", -1), info["aConstraint"][position]["op"])
                   for position in usable]
    orderbys = [(orderby["iColumn"], orderby["desc"]) for orderby in info["aOrderBy"]]
    _, index_number, indexes, orderbys_to_process, orderby_consumed, cost = table._build_index(constraints, orderbys)
    argv = 0  # consumed constraints are numbered in order, as ``indexes`` lists them
    for position, constraint in zip(usable, constraints, strict=True):
        used = table._build_index([constraint], [])[0]  # [(0, omit)] when consumed, [None] or [] when not
        if used and used[0] is not None:
            argv += 1
            index_info.set_aConstraintUsage_argvIndex(position, argv)
            index_info.set_aConstraintUsage_omit(position, used[0][1] or constraint[0] in exact)
    index_info.idxNum = index_number
    index_info.idxStr = json.dumps({"indexes": indexes, "orderbys_to_process": orderbys_to_process,
                                    "requested_columns": sorted(info["colUsed_names"])})
    index_info.orderByConsumed = orderby_consumed
    index_info.estimatedCost = cost


class ColumnarTable(VTTable):
    """shillelagh's virtual table (planning, DDL), opening columnar cursors; it also consumes equality and ``IN``
    constraints on the adapter's filter-only columns (``contains_event``), an ``IN`` list all at once."""

    def BestIndexObject(self, index_info: apsw.IndexInfo) -> bool:
        """:func:`plan` (the choice column's equality exact: :meth:`ColumnarCursor.Filter` checks its value), then
        the filter-only columns' equality and ``IN`` constraints consumed after it."""
        names = list(self.adapter.get_columns())
        choice = self.adapter.spec.choice_column
        plan(self, index_info, {names.index(choice)} if choice is not None else set())
        filter_columns = {names.index(name) for name in self.adapter.spec.filter_columns}
        constraints = range(index_info.nConstraint)
        argument = max((index_info.get_aConstraintUsage_argvIndex(i) for i in constraints), default=0)
        consumed: list[list[Any]] = []
        for i in constraints:
            if (index_info.get_aConstraint_usable(i) and index_info.get_aConstraint_iColumn(i) in filter_columns
                    and index_info.get_aConstraint_op(i) == apsw.SQLITE_INDEX_CONSTRAINT_EQ):
                argument += 1
                index_info.set_aConstraintUsage_argvIndex(i, argument)
                index_info.set_aConstraintUsage_omit(i, True)
                if index_info.get_aConstraintUsage_in(i):
                    index_info.set_aConstraintUsage_in(i, True)
                consumed.append([argument - 1, names[index_info.get_aConstraint_iColumn(i)]])
        if consumed:
            planned = json.loads(index_info.idxStr)
            index_info.idxStr = json.dumps({**planned, "filter_columns": consumed})
            index_info.estimatedCost /= 10  # a plan applying them reads fewer rows
        return True

    def Open(self) -> ColumnarCursor:
        return ColumnarCursor(self.adapter)


class ColumnarCursor:
    """Serves the adapter's selection chunk by chunk; the hot methods do the least possible work."""

    __slots__ = ("adapter", "values", "position", "size", "first", "eof", "_chunks")

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.values: list[Any] = []
        self.position = self.size = self.first = 0
        self.eof = True
        self._chunks: Iterator[tuple[int, int, list[Any]]] = iter(())

    def Filter(self, indexnumber: int, indexname: str, constraintargs: list[Any]) -> None:
        """Bounds, order and requested columns as shillelagh plans them; then the first chunk of values."""
        columns = self.adapter.get_columns()
        names = list(columns)
        index = json.loads(indexname)
        try:
            all_bounds = get_all_bounds(index["indexes"], constraintargs, columns)
        except ProgrammingError as exc:
            raise ProgrammingError(f"{exc}: a time bound must be ISO 8601 text such as {ACCEPTED_TIMESTAMPS} "
                                   "(no zone means UTC).") from None
        except ValueError:  # shillelagh's int() of text compared with the one filterable INTEGER column
            raise ProgrammingError("gap_minutes is compared with text: write a whole number of minutes, "
                                   "e.g. gap_minutes = 60.") from None
        bounds = get_bounds(columns, all_bounds)  # no column declares an order: SQLite sorts, nothing to pass on
        requested = self.adapter.requested(index.get("requested_columns"))
        contains_event = [_value_set(constraintargs[argument]) for argument, _ in index.get("filter_columns", [])]
        choice = self.adapter.spec.choice_column
        fractional = choice is not None and any(
            column == names.index(choice) and _fractional(value)
            for (column, _), value in zip(index["indexes"], constraintargs, strict=False))
        # no column read yet: each is read on SQLite's first request for one of its values (_Pending)
        selection = NO_ROWS if fractional else self.adapter.select(bounds, [], contains_event)
        columns = {names.index(name): name for name in requested}
        self._chunks = (_spread(selection, first, count, columns, len(names)) for first, count in selection.spans())
        self.size = self.position = 0
        self.Next()

    def Next(self) -> None:
        self.position += 1
        if self.position >= self.size:
            self._next_chunk()

    def _next_chunk(self) -> None:
        for first, size, values in self._chunks:
            if size:
                self.first, self.size, self.values, self.position, self.eof = first, size, values, 0, False
                return
        self.values, self.eof = [], True

    def Eof(self) -> bool:
        return self.eof

    def Column(self, column: int) -> Any:
        return self.values[column][self.position]

    def Rowid(self) -> int:
        return self.first + self.position

    def Close(self) -> None:
        self.values, self._chunks = [], iter(())


def _fractional(value: Any) -> bool:
    """A number that is not whole (``gap_minutes = 7.5``): shillelagh hands it on truncated (7), it matches no
    row."""
    return isinstance(value, float) and not value.is_integer()


def _value_set(argument: Any) -> set[str]:
    """The values of an ``IN`` list passed all at once (a set), or of one equality, as text."""
    values = argument if isinstance(argument, set) else {argument}
    return {str(value) for value in values if value is not None}


def _spread(selection: Selection, first: int, count: int, columns: dict[int, str],
            width: int) -> tuple[int, int, list[Any]]:
    """One span of a selection: the requested ``columns`` at their column numbers, read and converted on first
    use; the others read as NULL."""
    values: list[Any] = [NULLS] * width
    for slot, name in columns.items():
        values[slot] = _Pending(values, slot, functools.partial(selection.part, name, first, count))
    return first - selection.start, count, values
