"""The DB-API connection behind ``amplitude://``: shillelagh's APSW connection with the columnar cursor registered.

:class:`AmplitudeConnection` is shillelagh's ``APSWConnection`` with only the safe Amplitude adapter; after
shillelagh registers its generic module, the adapter's module name is registered again with
:class:`~.columnar.ColumnarModule`, so every virtual table the connection creates serves values by position.
Its cursors turn SQLite values into Python ones with one converter per result column, chosen once per query,
instead of a new field object per value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import apsw
from shillelagh.backends.apsw.db import APSWConnection, APSWCursor
from shillelagh.backends.apsw.vt import type_map
from shillelagh.fields import Blob, Float, String

from .adapter import AmplitudeAPI
from .columnar import ColumnarModule

#: Result types whose SQLite values are already the Python values.
IDENTITY_TYPES = frozenset(field.type for field in (Blob, Float, String))


class AmplitudeCursor(APSWCursor):
    """shillelagh's cursor, converting result values with converters picked once per query."""

    def _convert(self, cursor: apsw.Cursor) -> Iterator[tuple[Any, ...]]:
        if not self.description:
            return iter(())
        converters: list[tuple[int, Callable[[Any], Any]]] = [
            (i, type_map[column[1].type]().parse)
            for i, column in enumerate(self.description)
            if column[1].type not in IDENTITY_TYPES
        ]
        if not converters:
            return iter(cursor)
        return (_converted(row, converters) for row in cursor)


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
        self._connection.createmodule(AmplitudeAPI.__name__, ColumnarModule(AmplitudeAPI), use_bestindex_object=True)

    def cursor(self) -> AmplitudeCursor:
        cursor = AmplitudeCursor(self._connection.cursor(), self._adapters, self._adapter_kwargs,
                                 self.isolation_level, self.schema)
        self.cursors.append(cursor)
        return cursor
