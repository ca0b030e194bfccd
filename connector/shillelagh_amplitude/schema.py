"""The exported event record: Amplitude's 55 keys, their SQL names and Arrow types.

Source: Amplitude Export API docs (https://amplitude.com/docs/apis/analytics/export) and the keys of real
exported records (every key present, ``null`` when unknown). Keys starting with ``$`` lose the ``$`` in SQL.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")


def micros(value: datetime) -> int:
    """An instant as a :data:`TIMESTAMP` column holds it: microseconds since 1970-01-01 UTC."""
    return int(pa.scalar(value, TIMESTAMP).cast(pa.int64()).as_py())

#: Columns holding a timestamp (``YYYY-MM-DD HH:MM:SS.ffffff``, UTC, no zone in the export).
TIMESTAMP_KEYS = (
    "event_time",
    "client_event_time",
    "server_upload_time",
    "server_received_time",
    "client_upload_time",
    "processed_time",
    "user_creation_time",
)
INTEGER_KEYS = ("$schema", "amplitude_id", "app", "event_id", "session_id")
FLOAT_KEYS = ("location_lat", "location_lng", "sample_rate")
BOOLEAN_KEYS = ("paying", "is_attribution_event")
#: Objects (or anything not scalar) kept as JSON text, so SQL can use ``json_extract``.
JSON_KEYS = (
    "user_properties",
    "event_properties",
    "group_properties",
    "groups",
    "data",
    "plan",
    "global_user_properties",
    "amplitude_attribution_ids",
)
STRING_KEYS = (
    "$insert_id",
    "$insert_key",
    "adid",
    "amplitude_event_type",
    "city",
    "country",
    "data_type",
    "device_brand",
    "device_carrier",
    "device_family",
    "device_id",
    "device_manufacturer",
    "device_model",
    "device_type",
    "dma",
    "event_type",
    "idfa",
    "ip_address",
    "language",
    "library",
    "os_name",
    "os_version",
    "partner_id",
    "platform",
    "region",
    "source_id",
    "start_version",
    "user_id",
    "uuid",
    "version_name",
)

EVENT_KEYS: tuple[str, ...] = tuple(
    sorted(TIMESTAMP_KEYS + INTEGER_KEYS + FLOAT_KEYS + BOOLEAN_KEYS + JSON_KEYS + STRING_KEYS)
)


def column_name(key: str) -> str:
    """SQL column name of an export key: ``$insert_id`` -> ``insert_id``."""
    return key.lstrip("$")


def _arrow_type(key: str) -> pa.DataType:
    if key in TIMESTAMP_KEYS:
        return TIMESTAMP
    if key in INTEGER_KEYS:
        return pa.int64()
    if key in FLOAT_KEYS:
        return pa.float64()
    if key in BOOLEAN_KEYS:
        return pa.bool_()
    return pa.string()


#: Schema of a stored hour: one column per export key, under its SQL name.
EVENT_SCHEMA = pa.schema([pa.field(column_name(key), _arrow_type(key)) for key in EVENT_KEYS])
