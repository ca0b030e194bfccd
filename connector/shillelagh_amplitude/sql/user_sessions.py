"""User sessions: one person's periods of activity across devices and session ids, split by an inactivity gap.

Amplitude's sessions (:mod:`.sessions`) follow the SDK: every device and every app restart starts a new
``session_id``, and the project's timeout decides the splits once and for all. A user session is computed here,
at query time, from the same events:
- the events are those with ``session_id != -1`` (those Amplitude's sessions count), per ``amplitude_id``
  (Amplitude's user, already merged across devices), in ``client_event_time`` order;
- a new user session starts at the user's first event, at an event more than ``gap_minutes`` after the previous
  one, or at an event more than 24 h after the session's first event (so no session is longer than a day);
- ``session_start`` is its first event's ``client_event_time`` (the session is dated by it), ``session_end`` its
  last event's, ``length_s`` their difference;
- attributes (``user_id``, ``platform``, ``country``, ``device_type``, ``user_properties``,
  ``user_creation_time``) come from the first event, as for Amplitude's sessions; events at the same instant
  keep their stored order.
Only events from ``since`` on are read (the look-back of a query): a user active without any gap since before it
has a session starting at their first event at or after ``since``.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..schema import TIMESTAMP, micros
from .sessions import MAX_LENGTH_S, encode_event_types, event_type_lists, length_bucket, span_seconds

DEFAULT_GAP_MINUTES = 30
MIN_GAP_MINUTES = 1
MAX_GAP_MINUTES = 1440
#: Attributes taken from the first event of the user session.
FIRST_EVENT_COLUMNS = ("user_id", "platform", "country", "device_type", "user_creation_time", "user_properties")
#: Event columns needed to build user sessions.
EVENT_COLUMNS = ("amplitude_id", "session_id", "client_event_time", "event_type", "device_id", *FIRST_EVENT_COLUMNS)

USER_SESSION_SCHEMA = pa.schema(
    [
        ("session_start", TIMESTAMP),
        ("session_end", TIMESTAMP),
        ("length_s", pa.float64()),
        ("length_bucket", pa.string()),
        ("event_count", pa.int64()),
        ("gap_minutes", pa.int64()),
        ("amplitude_id", pa.int64()),
        ("user_id", pa.string()),
        ("devices", pa.int64()),
        ("amplitude_sessions", pa.int64()),
        ("first_event_type", pa.string()),
        ("last_event_type", pa.string()),
        ("event_types", pa.string()),
        ("platform", pa.string()),
        ("country", pa.string()),
        ("device_type", pa.string()),
        ("user_creation_time", TIMESTAMP),
        ("user_properties", pa.string()),
    ]
)

_MICROS = 1_000_000
_DAY_US = int(MAX_LENGTH_S) * _MICROS


def session_starts(users: np.ndarray, times: np.ndarray, gap_minutes: int) -> np.ndarray:
    """True at each event that starts a user session; events sorted by user, then time (int64 microseconds)."""
    starts = np.ones(len(times), dtype=bool)
    starts[1:] = (users[1:] != users[:-1]) | (times[1:] - times[:-1] > gap_minutes * 60 * _MICROS)
    firsts = np.flatnonzero(starts)
    ends = np.append(firsts[1:], len(times))
    # the 24 h rule: only runs longer than a day are walked, a day at a time
    longer = times[ends - 1] - times[firsts] > _DAY_US
    for first, end in zip(firsts[longer].tolist(), ends[longer].tolist(), strict=True):
        while True:
            first += int(np.searchsorted(times[first:end], times[first] + _DAY_US, side="right"))
            if first >= end:
                break
            starts[first] = True
    return starts


def first_occurrences(groups: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each (group, code) pair, in row order, leaving out codes of -1 (null);
    ``groups``: each row's group number; ``codes``: small non-negative integers (dictionary indices)."""
    pairs = groups * (int(codes.max(initial=0)) + 2) + codes + 1
    firsts = np.sort(np.unique(pairs, return_index=True)[1])
    return firsts[codes[firsts] >= 0]


def distinct_counts(groups: np.ndarray, codes: np.ndarray, count: int) -> np.ndarray:
    """The number of distinct codes other than -1 (null) in each of ``count`` groups."""
    return np.bincount(groups[first_occurrences(groups, codes)], minlength=count)


def _codes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A column's values as dictionary indices, -1 for null."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column).combine_chunks()
    return pc.fill_null(column.indices, -1).to_numpy()


def build_user_sessions(events: pa.Table, gap_minutes: int, since: datetime | None = None,
                        starting_from: datetime | None = None) -> pa.Table:
    """One row per user session of the given events (from ``since`` on), sorted by ``session_start``; only those
    starting at or after ``starting_from``, if given (the events before it still decide where sessions split).

    See the module docstring for the rules. The key columns are sorted (stably: events at the same instant keep
    their order), split and counted in numpy, where a session's events are contiguous; the wide attribute
    columns are read from the first events' rows alone. With ``starting_from``, the sessions are split on the key
    columns of every event, and only the events of the sessions kept are read further.
    """
    times = pc.cast(events["client_event_time"], pa.int64())
    keep = pc.and_(pc.and_(pc.is_valid(events["amplitude_id"]), pc.is_valid(times)),
                   pc.not_equal(events["session_id"], -1))
    if since is not None:
        keep = pc.and_(keep, pc.greater_equal(events["client_event_time"], pa.scalar(since, TIMESTAMP)))
    rows = np.flatnonzero(pc.fill_null(keep, False).to_numpy())
    if len(rows) == 0:
        return USER_SESSION_SCHEMA.empty_table()
    users = pc.fill_null(events["amplitude_id"], 0).to_numpy()[rows]
    times = pc.fill_null(times, 0).to_numpy()[rows]
    order = np.lexsort((times, users))
    rows, users, times = rows[order], users[order], times[order]
    starts = session_starts(users, times, gap_minutes)
    if starting_from is not None:
        kept = (times[np.flatnonzero(starts)] >= micros(starting_from))[np.cumsum(starts) - 1]
        rows, users, times, starts = rows[kept], users[kept], times[kept], starts[kept]
        if len(rows) == 0:
            return USER_SESSION_SCHEMA.empty_table()
        selected = np.zeros(events.num_rows, dtype=bool)
        selected[rows] = True  # filtered in stored order, then indexed: taking rows out of order cost more
        events, rows = events.filter(pa.array(selected)), (np.cumsum(selected) - 1)[rows]
    firsts = np.flatnonzero(starts)
    lasts = np.append(firsts[1:], len(times)) - 1
    session = np.cumsum(starts) - 1
    event_types = encode_event_types(events)
    types = _codes(event_types)[rows]
    type_firsts = first_occurrences(session, types)  # each session's event types in order of first occurrence
    type_offsets = pa.array(np.searchsorted(session[type_firsts], np.arange(len(firsts) + 1)), pa.int32())
    attributes = events.select(["event_type", *FIRST_EVENT_COLUMNS]).take(pa.array(rows[firsts]))
    session_start = pa.array(times[firsts]).cast(TIMESTAMP)
    session_end = pa.array(times[lasts]).cast(TIMESTAMP)
    length_s = span_seconds(session_start, session_end)
    columns = {
        "session_start": session_start,
        "session_end": session_end,
        "length_s": length_s,
        "length_bucket": length_bucket(length_s),
        "event_count": pa.array(lasts - firsts + 1),
        "gap_minutes": pa.array(np.full(len(firsts), gap_minutes, dtype=np.int64)),
        "amplitude_id": pa.array(users[firsts]),
        "devices": distinct_counts(session, _codes(events["device_id"])[rows], len(firsts)),
        "amplitude_sessions": distinct_counts(session, _codes(events["session_id"])[rows], len(firsts)),
        "first_event_type": attributes["event_type"],
        "last_event_type": events["event_type"].take(pa.array(rows[lasts])),
        "event_types": event_type_lists(event_types.dictionary, type_offsets, pa.array(types[type_firsts])),
        **{column: attributes[column] for column in FIRST_EVENT_COLUMNS},
    }
    table = pa.table([columns[name] for name in USER_SESSION_SCHEMA.names], schema=USER_SESSION_SCHEMA)
    return table.take(pc.sort_indices(table, [("session_start", "ascending"), ("amplitude_id", "ascending")]))
