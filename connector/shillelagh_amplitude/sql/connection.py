"""The DB-API connection behind ``amplitude://``: shillelagh's APSW connection with the columnar cursor registered.

:class:`AmplitudeConnection` is shillelagh's ``APSWConnection`` with only the safe Amplitude adapter; after
shillelagh registers its generic module, the adapter's module name is registered again with
:class:`~.columnar.ColumnarModule`, so every virtual table the connection creates serves values by position.
Its cursors turn SQLite values into Python ones with one converter per result column, chosen once per query,
instead of a new field object per value.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import apsw
from shillelagh.backends.apsw.db import APSWConnection, APSWCursor
from shillelagh.backends.apsw.vt import type_map
from shillelagh.fields import Blob, Float, String

from .adapter import AmplitudeAPI
from .budget import QueryClock
from .columnar import ColumnarModule

#: Result types whose SQLite values are already the Python values.
IDENTITY_TYPES = frozenset(field.type for field in (Blob, Float, String))
#: Builtins doing what shillelagh's parsers do for the values this connection's tables hand SQLite (timestamps are
#: always ISO text in UTC, ``+00:00``), without a Python frame per value.
BUILTIN_PARSERS: dict[str, Callable[[Any], Any]] = {
    "TIMESTAMP": datetime.fromisoformat,
    "INTEGER": int,
    "BOOLEAN": bool,
}


def result_parser(type_name: str) -> Callable[[Any], Any]:
    """The function turning a non-null SQLite value of a result column of this SQL type into its Python value."""
    return BUILTIN_PARSERS.get(type_name) or type_map[type_name]().parse


class AmplitudeCursor(APSWCursor):
    """shillelagh's cursor, converting result values with converters picked once per query; each query starts
    the connection's :class:`~.budget.QueryClock` (its tables share one download budget)."""

    def __init__(self, *args: Any, clock: QueryClock, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clock = clock

    def execute(self, operation: str, parameters: tuple[Any, ...] | None = None) -> AmplitudeCursor:
        self._clock.start()
        return super().execute(operation, parameters)

    def _convert(self, cursor: apsw.Cursor) -> Iterator[tuple[Any, ...]]:
        """Rows as Python values. The description is final once a row exists (with no row, shillelagh leaves
        apsw's raw one), so converters are picked from it after the first row."""
        rows = iter(cursor)
        first = next(rows, None)
        if first is None or not self.description:
            return iter(())
        rows = itertools.chain((first,), rows)
        converters = [(i, result_parser(column[1].type)) for i, column in enumerate(self.description)
                      if column[1].type not in IDENTITY_TYPES]
        return map(_converted, rows, itertools.repeat(converters)) if converters else rows


def _converted(row: tuple[Any, ...], converters: list[tuple[int, Callable[[Any], Any]]]) -> tuple[Any, ...]:
    values = list(row)
    for i, parse in converters:
        if values[i] is not None:
            values[i] = parse(values[i])
    return tuple(values)


class AmplitudeConnection(APSWConnection):
    """An in-memory, safe APSW connection serving the Amplitude tables through the columnar cursor."""

    def __init__(self, adapter_kwargs: dict[str, Any], isolation_level: str | None = None) -> None:
        super().__init__(":memory:", [AmplitudeAPI], {AmplitudeAPI.__name__.lower(): adapter_kwargs},
                         isolation_level, safe=True)
        self.clock = QueryClock()
        self._connection.createmodule(AmplitudeAPI.__name__, ColumnarModule(AmplitudeAPI, self.clock),
                                      use_bestindex_object=True)

    def cursor(self) -> AmplitudeCursor:
        cursor = AmplitudeCursor(self._connection.cursor(), self._adapters, self._adapter_kwargs,
                                 self.isolation_level, self.schema, clock=self.clock)
        self.cursors.append(cursor)
        return cursor
