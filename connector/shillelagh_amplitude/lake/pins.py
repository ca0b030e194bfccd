"""Pins: an immutable name for each version of a partition's file, for readers that open a file more than once.

DuckDB opens a Parquet file by its path more than once per query (to list it, for its footer, for its row
groups), so a query overlapping the replacement of ``part-0.parquet`` can read one version's footer against the
other's bytes: it fails, or could misread. No file scheme behind a fixed glob can prevent it (a path a query
listed must stay readable while new listings must not return it), so DuckDB reads pins instead:

- every version of a partition's file (and of the status table's one file) is also linked (a hard link: no extra
  bytes) as ``<partition>/.part-0.<sha256[:16]>.pin``, named by its content and never rewritten. Spark, Trino and
  pyarrow skip names starting with ``.``, and no ``*.parquet`` glob matches the ``.pin`` ending;
- the DuckDB views list the current pins by name (:func:`current_pins`), not a glob, and the publisher keeps them
  in ``<lake>/_amplitude_lake.duckdb`` (:data:`VIEWS_FILE`): written whole beside its place and renamed over it
  after each run that changed a partition or the status, so a connection opened later reads the lake as the
  run left it, every partition and the status at once;
- a pin no view lists any more is deleted :data:`GRACE` after the run that stopped listing it: a DuckDB
  connection opened before keeps reading the versions it listed for that long.

Folder lakes only (hard links; DuckDB cannot read object storage here): on object storage the DuckDB views glob.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path

from ..store.location import StoreLocation
from .layout import PART_FILE, STATUS, TABLES

#: The DuckDB database holding the views over the current pins (a name starting with '_': no engine reads it).
VIEWS_FILE = "_amplitude_lake.duckdb"
#: How long a pin stays after the views stopped listing it: longer than any DuckDB connection stays open.
GRACE = timedelta(hours=1)
PIN_SUFFIX = ".pin"


def pin_name(content: str) -> str:
    """The pin of the file whose SHA-256 is ``content``."""
    return f".{PART_FILE.removesuffix('.parquet')}.{content[:16]}{PIN_SUFFIX}"


def is_pin(name: str) -> bool:
    return name.startswith(f".{PART_FILE.removesuffix('.parquet')}.") and name.endswith(PIN_SUFFIX)


def pin(source: Path, content: str) -> None:
    """Link ``source`` (a finished partition file whose SHA-256 is ``content``) as its pin beside it."""
    target = source.parent / pin_name(content)
    if not target.exists():
        os.link(source, target)


def _pinned(folder: Path, known: str | None) -> str | None:
    """The pin of ``folder``'s current file (linked now if missing, named by the file's own bytes), or None."""
    part = folder / PART_FILE
    if known and (folder / pin_name(known)).exists():
        return pin_name(known)
    if not part.exists():
        return None
    with part.open("rb") as handle:
        content = hashlib.file_digest(handle, "sha256").hexdigest()
    pin(part, content)
    return pin_name(content)


def refresh(location: StoreLocation, contents: dict[str, str | None], pins: dict, now: float) -> dict:
    """After a run: pin every partition's current file and the status file, rewrite the views file if the pins
    changed, retire pins no longer listed and delete those retired for :data:`GRACE`. ``contents``: each
    partition's (and the status's) SHA-256 from the manifest; ``pins``: the manifest's previous record. Returns
    the new record (``current``: table -> pins, ``retired``: pin -> when it stopped being listed)."""
    root = Path(location.root)
    current: dict[str, list[str]] = {}
    on_disk = []
    groups = [(table.name, sorted(path for path in (root / table.name).glob(f"{table.partition_column}=*")
                                  if path.is_dir())) for table in TABLES]
    groups.append((STATUS, [root / STATUS] if (root / STATUS).is_dir() else []))
    for name, folders in groups:
        current[name] = []
        for folder in folders:
            key = folder.relative_to(root).as_posix()
            pinned = _pinned(folder, contents.get(key))
            if pinned is not None:
                current[name].append(f"{key}/{pinned}")
            on_disk += [f"{key}/{entry}" for entry in os.listdir(folder) if is_pin(entry)]
    if current != pins.get("current") or not (root / VIEWS_FILE).exists():
        write_views(root, current)
    listed = {path for paths in current.values() for path in paths}
    retired = {path: when for path, when in pins.get("retired", {}).items() if path not in listed}
    for path in on_disk:
        if path in listed:
            continue
        retired.setdefault(path, now)
        if now - retired[path] >= GRACE.total_seconds():
            (root / path).unlink(missing_ok=True)
            del retired[path]
    return {"current": current, "retired": retired}


def write_views(root: Path, current: dict[str, list[str]]) -> None:
    """Write the DuckDB views over ``current`` into a new database and rename it over :data:`VIEWS_FILE` (a
    connection open on the old one keeps it; the publisher never opens the file readers hold). Skipped when
    DuckDB is not installed."""
    try:
        import duckdb
    except ImportError:
        return
    from .ddl import duckdb_views

    temp = root / f".{VIEWS_FILE}.{uuid.uuid4().hex}.tmp"
    try:
        with duckdb.connect(str(temp)) as connection:
            for statement in duckdb_views(root, current):
                connection.execute(statement)
        os.replace(temp, root / VIEWS_FILE)
    finally:
        temp.unlink(missing_ok=True)
        Path(f"{temp}.wal").unlink(missing_ok=True)
