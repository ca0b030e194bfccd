"""Decoding of Export API archives: a zip of gzip NDJSON members, into Arrow record batches per upload hour.

The body is read from a file member by member and line block by line block, so memory does not grow with the
archive. Each line is decoded by msgspec into a typed struct (nested objects kept as raw JSON text); a line whose
values do not fit the documented types is coerced field by field; a line that is not JSON is an error.
"""

from __future__ import annotations

import gzip
import json
import zipfile
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import (
    BOOLEAN_KEYS,
    EVENT_KEYS,
    EVENT_SCHEMA,
    FLOAT_KEYS,
    INTEGER_KEYS,
    JSON_KEYS,
    TIMESTAMP,
    TIMESTAMP_KEYS,
    column_name,
)

#: Bytes of decompressed NDJSON decoded at a time (bounds memory per batch).
BLOCK_BYTES = 8 * 1024 * 1024
_NULL_RAW = msgspec.Raw(b"null")
_ZIP_MAGIC = b"PK\x03\x04"


class ArchiveError(Exception):
    """The archive is not a complete, valid export (not a zip, truncated, corrupt gzip, a line not JSON)."""


def _struct_field_type(key: str) -> Any:
    if key in JSON_KEYS:
        return msgspec.Raw
    if key in INTEGER_KEYS:
        return int | None
    if key in FLOAT_KEYS:
        return float | None
    if key in BOOLEAN_KEYS:
        return bool | None
    return str | None


_EventStruct = msgspec.defstruct(
    "ExportedEvent",
    [
        (column_name(key), _struct_field_type(key), _NULL_RAW if key in JSON_KEYS else None)
        for key in EVENT_KEYS
    ],
    rename={column_name(key): key for key in EVENT_KEYS},
)
_FAST_DECODER = msgspec.json.Decoder(_EventStruct, strict=False)
_FIELD_NAMES = _EventStruct.__struct_fields__


def is_zip_file(path: Path) -> bool:
    """True when the file starts with the zip magic (a 200 can carry an HTML error page instead)."""
    with open(path, "rb") as handle:
        return handle.read(4) == _ZIP_MAGIC


def _coerce(key: str, value: Any) -> Any:
    """A value of an unexpected JSON type made to fit the column (or None when it cannot)."""
    if value is None:
        return None
    if key in JSON_KEYS:
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":")) if key not in INTEGER_KEYS + FLOAT_KEYS else None
    try:
        if key in INTEGER_KEYS:
            return int(value)
        if key in FLOAT_KEYS:
            return float(value)
    except (TypeError, ValueError):
        return None
    if key in BOOLEAN_KEYS:
        return value if isinstance(value, bool) else str(value).lower() in {"true", "1"}
    return str(value)


def _decode_line_leniently(line: bytes, where: str) -> Any:
    """Decode one line whose values do not fit the fast path; raise ArchiveError if it is not JSON."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ArchiveError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        raise ArchiveError(f"{where} is not a JSON object")
    coerced = {key: _coerce(key, record.get(key)) for key in EVENT_KEYS}
    return _FAST_DECODER.decode(msgspec.json.encode(coerced))


def _decode_block(block: bytes, member: str, first_line: int) -> list[Any]:
    """Decode a block of whole NDJSON lines into structs."""
    try:
        return _FAST_DECODER.decode_lines(block)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    records = []
    for offset, line in enumerate(block.split(b"\n")):
        if not line.strip():
            continue
        where = f"line {first_line + offset} of {member}"
        try:
            records.append(_FAST_DECODER.decode(line))
        except (msgspec.ValidationError, msgspec.DecodeError):
            records.append(_decode_line_leniently(line, where))
    return records


def _timestamp_column(values: list[str | None]) -> pa.Array:
    """Export timestamps (``YYYY-MM-DD HH:MM:SS.ffffff`` or with ``T``, UTC) as Arrow timestamps."""
    text = pa.array(values, pa.string())
    try:
        return text.cast(pa.timestamp("us")).cast(TIMESTAMP)
    except pa.ArrowInvalid:
        try:
            return text.cast(TIMESTAMP)
        except pa.ArrowInvalid as exc:
            raise ArchiveError(f"unreadable timestamp: {exc}") from None


def _json_column(values: list[msgspec.Raw]) -> pa.Array:
    text = pa.array([bytes(raw) for raw in values], pa.binary()).cast(pa.string())
    return pc.if_else(pc.equal(text, "null"), pa.scalar(None, pa.string()), text)


def records_to_batch(records: list[Any]) -> pa.RecordBatch:
    """Typed columns (the stored hour schema) from decoded structs."""
    columns = list(zip(*(msgspec.structs.astuple(record) for record in records), strict=True))
    arrays = []
    for key, values in zip(EVENT_KEYS, columns, strict=True):
        if key in TIMESTAMP_KEYS:
            arrays.append(_timestamp_column(values))
        elif key in JSON_KEYS:
            arrays.append(_json_column(values))
        else:
            arrays.append(pa.array(values, EVENT_SCHEMA.field(column_name(key)).type))
    return pa.RecordBatch.from_arrays(arrays, schema=EVENT_SCHEMA)


def _member_blocks(archive: zipfile.ZipFile, member: str) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines from one gzip member, with the number of the block's first line."""
    line_number = 1
    pending = b""
    with archive.open(member) as raw, gzip.GzipFile(fileobj=raw) as lines:
        while True:
            chunk = lines.read(BLOCK_BYTES)
            if not chunk:
                break
            pending += chunk
            cut = pending.rfind(b"\n")
            if cut < 0:
                continue
            block, pending = pending[: cut + 1], pending[cut + 1 :]
            yield block, line_number
            line_number += block.count(b"\n")
    if pending.strip():
        yield pending, line_number


def iter_batches(path: Path) -> Iterator[pa.RecordBatch]:
    """Every event of an export archive on disk, as record batches; ArchiveError if anything is wrong."""
    if not is_zip_file(path):
        raise ArchiveError("the response is not a zip archive")
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if member.endswith("/") or not member.endswith(".gz"):
                    continue
                for block, first_line in _member_blocks(archive, member):
                    records = _decode_block(block, member, first_line)
                    if records:
                        yield records_to_batch(records)
    except ArchiveError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, gzip.BadGzipFile, OSError) as exc:
        raise ArchiveError(f"corrupt or truncated archive: {exc}") from None


def upload_hours(batch: pa.RecordBatch) -> pa.Array:
    """The UTC upload hour of each row (what the Export API selects by)."""
    return pc.floor_temporal(batch.column("server_upload_time"), unit="hour")


def split_by_hour(batch: pa.RecordBatch) -> Iterator[tuple[datetime, pa.RecordBatch]]:
    """Split a batch into one batch per upload hour."""
    hours = upload_hours(batch)
    for hour in pc.unique(hours).to_pylist():
        if hour is None:
            raise ArchiveError("an event has no server_upload_time")
        yield hour, batch.filter(pc.equal(hours, pa.scalar(hour, TIMESTAMP)))
