"""pyarrow's memory in a query process: a pool that gives freed memory back to the system, and reads into it.

pyarrow's default pool on Linux is mimalloc (its wheels' default since pyarrow 13), which keeps the pages of freed
buffers: a process's RSS then stays near the high-water mark of its Arrow allocations (the table cache plus every
table being built at once), not at what it holds. jemalloc, as pyarrow configures it (a background thread returns
unused pages after about a second), gives them back. :func:`use_returning_pool` makes it the default of Python's
calls (``pa.set_memory_pool``); the C++ default, which the Feather/IPC reader decompresses into, is fixed when
pyarrow is loaded (``ARROW_DEFAULT_MEMORY_POOL``, read once), so the store reads its files with
:func:`read_table`, into Python's default pool. An operator's own ``ARROW_DEFAULT_MEMORY_POOL`` is kept.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.ipc as ipc

RETURNING_BACKEND = "jemalloc"


def use_returning_pool() -> str:
    """Make jemalloc pyarrow's default pool, unless the operator chose one or the wheel lacks it; the backend used.

    Buffers allocated before keep their own pool: switching at any time is safe."""
    if not os.environ.get("ARROW_DEFAULT_MEMORY_POOL") and RETURNING_BACKEND in pa.supported_memory_backends():
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    return pa.default_memory_pool().backend_name


def read_table(path: str | os.PathLike[str], columns: list[str] | None = None) -> pa.Table:
    """A Feather v2 (Arrow IPC) file's table, or only ``columns`` (only theirs are read and decompressed), in that
    order; its buffers come from Python's default pool (``feather.read_table`` uses the C++ default)."""
    with pa.OSFile(os.fspath(path)) as source:
        schema = ipc.open_file(source).schema
        included = None if columns is None else sorted({_index(schema, name) for name in columns})
        options = ipc.IpcReadOptions(included_fields=included)
        table = ipc.open_file(source, options=options, memory_pool=pa.default_memory_pool()).read_all()
    return table if columns is None else table.select(columns)


def _index(schema: pa.Schema, name: str) -> int:
    index = schema.get_field_index(name)
    if index < 0:
        raise pa.ArrowInvalid(f"No column {name!r} in the file")
    return index
