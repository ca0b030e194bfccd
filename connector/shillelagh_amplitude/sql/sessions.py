"""Sessions from exported events, by Amplitude's definition.

Amplitude (https://amplitude.com/docs/data/sources/session-length, .../instrument-track-sessions):
- a session is the events sharing one ``session_id`` (its start, ms since epoch) for one user; the id need not be
  unique across users, so events are grouped by (``amplitude_id``, ``session_id``);
- events with ``session_id = -1`` are out of session and excluded from every session metric;
- length = max(``client_event_time``) - min(``client_event_time``), capped at one day (86,400 s);
- a session is dated by its start (``session_id``), whatever day its last event falls on;
- the default length distribution uses nine bins: 0-3 s, 3-10 s, 10-30 s, 30-60 s, 1-3 min, 3-10 min,
  10-30 min, 30-60 min, 1-24 h.
Session attributes (platform, country, user properties, ...) come from the session's first event by
``client_event_time``, like Amplitude's "first property value".
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import TIMESTAMP

MAX_LENGTH_S = 86_400.0
#: Lower bounds (seconds) and labels of Amplitude's nine default session length bins; labels sort in order.
LENGTH_BUCKETS: tuple[tuple[float, str], ...] = (
    (0, "1: 0-3 s"),
    (3, "2: 3-10 s"),
    (10, "3: 10-30 s"),
    (30, "4: 30-60 s"),
    (60, "5: 1-3 min"),
    (180, "6: 3-10 min"),
    (600, "7: 10-30 min"),
    (1800, "8: 30-60 min"),
    (3600, "9: 1-24 h"),
)
#: Attributes taken from the first event of the session.
FIRST_EVENT_COLUMNS = (
    "user_id",
    "device_id",
    "platform",
    "os_name",
    "device_type",
    "country",
    "region",
    "city",
    "language",
    "version_name",
    "user_creation_time",
    "user_properties",
)
#: Event columns needed to build sessions.
EVENT_COLUMNS = ("amplitude_id", "session_id", "client_event_time", "event_type", *FIRST_EVENT_COLUMNS)

SESSION_SCHEMA = pa.schema(
    [
        ("session_start", TIMESTAMP),
        ("session_end", TIMESTAMP),
        ("length_s", pa.float64()),
        ("length_bucket", pa.string()),
        ("event_count", pa.int64()),
        ("first_event_type", pa.string()),
        ("last_event_type", pa.string()),
        ("event_types", pa.string()),
        ("amplitude_id", pa.int64()),
        ("session_id", pa.int64()),
        ("user_id", pa.string()),
        ("device_id", pa.string()),
        ("platform", pa.string()),
        ("os_name", pa.string()),
        ("device_type", pa.string()),
        ("country", pa.string()),
        ("region", pa.string()),
        ("city", pa.string()),
        ("language", pa.string()),
        ("version_name", pa.string()),
        ("user_creation_time", TIMESTAMP),
        ("user_properties", pa.string()),
    ]
)


def length_bucket(length_s: pa.Array) -> pa.Array:
    """The label of the Amplitude length bin of each length (in seconds)."""
    labels = pa.array([label for _, label in LENGTH_BUCKETS])
    index = pa.array([0] * len(length_s), pa.int64())
    for lower, _ in LENGTH_BUCKETS[1:]:
        index = pc.add(index, pc.cast(pc.greater_equal(length_s, lower), pa.int64()))
    return pc.take(labels, index)


_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


def json_string_lists(lists: pa.ListArray) -> pa.Array:
    """Each list of strings as JSON array text, e.g. ``["page_view","search"]``."""
    values = pc.list_flatten(lists)
    for old, new in _JSON_ESCAPES:
        values = pc.replace_substring(values, old, new)
    joined = pc.binary_join(pa.ListArray.from_arrays(lists.offsets, values), '","')
    text = pc.binary_join_element_wise('["', joined, '"]', "")
    return pc.if_else(pc.equal(pc.list_value_length(lists), 0), "[]", text)


def _json_text(value: str) -> str:
    """One string as :func:`json_string_lists` writes it between its quotes."""
    for old, new in _JSON_ESCAPES:
        value = value.replace(old, new)
    return value


def _literal(text: str) -> str:
    """``text`` as an RE2 pattern matching exactly it (every character but letters and digits as ``\\x{..}``)."""
    return "".join(char if char.isascii() and char.isalnum() else f"\\x{{{ord(char):x}}}" for char in text)


def contains_any(event_types: pa.Array | pa.ChunkedArray, wanted: Iterable[str]) -> np.ndarray:
    """For each ``event_types`` JSON list (as :func:`json_string_lists` writes it): does it hold one of ``wanted``?

    Exact: an element is matched with the delimiters around it (``["`` or ``","`` before, ``"]`` or ``","``
    after), and an escaped quote inside an element is never a delimiter.
    """
    names = sorted(set(wanted))
    if not names:
        return np.zeros(len(event_types), dtype=bool)
    elements = "|".join(_literal(_json_text(name)) for name in names)
    pattern = f'(^\\[|",)"({elements})"(,"|\\]$)'
    matched = pc.match_substring_regex(event_types, pattern)
    return np.asarray(pc.fill_null(matched, False).to_numpy(zero_copy_only=False), dtype=bool)


def span_seconds(first: pa.Array | pa.ChunkedArray, last: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Seconds from ``first`` to ``last`` (timestamps), capped at one day; 0 when unknown."""
    span = pc.subtract(last, first)
    return pc.fill_null(pc.min_element_wise(pc.divide(pc.cast(span, pa.int64()), 1e6), MAX_LENGTH_S), 0.0)


def encode_event_types(events: pa.Table) -> pa.DictionaryArray:
    """The events' ``event_type`` as one dictionary array: its indices group cheaply, its dictionary names them."""
    return pc.dictionary_encode(events["event_type"]).combine_chunks()


def event_type_lists(names: pa.Array, offsets: pa.Array, indices: pa.Array) -> pa.Array:
    """JSON array text of each group's event types: ``indices`` into ``names``, group i at
    ``offsets[i]:offsets[i + 1]``."""
    return json_string_lists(pa.ListArray.from_arrays(offsets, pc.take(names, indices)))


def build_sessions(events: pa.Table) -> pa.Table:
    """One row per (amplitude_id, session_id) of the given events, sorted by ``session_start``.

    See the module docstring for the rules. Only the key columns are filtered and put in time order; each
    session's first and last event are found by row number, and the wide attribute columns (user properties)
    are read from the first events' rows alone.
    """
    event_types = encode_event_types(events)
    keyed = pa.table(
        {
            "amplitude_id": events["amplitude_id"],
            "session_id": events["session_id"],
            "time": events["client_event_time"],
            "row": np.arange(events.num_rows, dtype=np.int64),
            "type": event_types.indices,
        }
    )
    in_session = pc.and_(pc.is_valid(keyed["amplitude_id"]), pc.not_equal(keyed["session_id"], -1))
    keyed = keyed.filter(pc.fill_null(in_session, False))
    if keyed.num_rows == 0:
        return SESSION_SCHEMA.empty_table()
    keyed = keyed.take(pc.sort_indices(keyed, [("time", "ascending")]))
    # single-threaded, so that "first"/"last" follow the time order
    grouped = keyed.group_by(["amplitude_id", "session_id"], use_threads=False).aggregate(
        [
            ("time", "min"),
            ("time", "max"),
            ("row", "first"),
            ("row", "last"),
            ("row", "count"),
            ("type", "distinct", pc.CountOptions(mode="only_valid")),
        ]
    )
    grouped = grouped.take(pc.sort_indices(grouped, [("session_id", "ascending"), ("amplitude_id", "ascending")]))
    first_rows = events.select(["event_type", *FIRST_EVENT_COLUMNS]).take(grouped["row_first"])
    length_s = span_seconds(grouped["time_min"], grouped["time_max"])
    distinct = grouped["type_distinct"].combine_chunks()
    columns = {
        "session_start": pc.multiply(grouped["session_id"], 1000).cast(TIMESTAMP),
        "session_end": grouped["time_max"],
        "length_s": length_s,
        "length_bucket": length_bucket(length_s),
        "event_count": grouped["row_count"],
        "first_event_type": first_rows["event_type"],
        "last_event_type": events["event_type"].take(grouped["row_last"]),
        "event_types": event_type_lists(event_types.dictionary, distinct.offsets, distinct.flatten()),
        "amplitude_id": grouped["amplitude_id"],
        "session_id": grouped["session_id"],
        **{column: first_rows[column] for column in FIRST_EVENT_COLUMNS},
    }
    return pa.table([columns[name] for name in SESSION_SCHEMA.names], schema=SESSION_SCHEMA)
