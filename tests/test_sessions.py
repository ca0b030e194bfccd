"""Sessionization by Amplitude's definition, checked against a plain-Python computation."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from shillelagh_amplitude.schema import EVENT_SCHEMA
from shillelagh_amplitude.sql.sessions import EVENT_COLUMNS, LENGTH_BUCKETS, build_sessions, length_bucket

T0 = datetime(2026, 3, 1, 23, 50, tzinfo=UTC)
SCHEMA = pa.schema([EVENT_SCHEMA.field(name) for name in EVENT_COLUMNS])


def _event(amplitude_id, session_start, offset_s, event_type, **extra):
    row = dict.fromkeys(EVENT_COLUMNS)
    session_id = -1 if session_start is None else int(session_start.timestamp() * 1000)
    time = (session_start or T0) + timedelta(seconds=offset_s)
    row.update(amplitude_id=amplitude_id, session_id=session_id, client_event_time=time, event_type=event_type)
    row.update(extra)
    return row


EVENTS = [
    # a session crossing midnight, events out of order, first event's attributes win
    _event(1, T0, 30, "search", country="DE"),
    _event(1, T0, 0, "session_start", country="FR", user_properties='{"plan":"pro"}'),
    _event(1, T0, 1200, 'quote"d', country="DE"),
    # the same session_id for another user: a separate session
    _event(2, T0, 0, "page_view", country="US"),
    # out-of-session events are excluded
    _event(1, None, 0, "push_received"),
    _event(2, None, 99, "push_received"),
    # a session longer than a day is capped
    _event(3, T0, 0, "session_start"),
    _event(3, T0, 90_000, "session_end"),
    # anonymous user (no user_id), one event: length 0
    _event(4, T0 + timedelta(hours=5), 0, "page_view", device_id="d4"),
]


def _expected(events):
    groups = defaultdict(list)
    for event in events:
        if event["session_id"] != -1:
            groups[event["amplitude_id"], event["session_id"]].append(event)
    expected = {}
    for key, group in groups.items():
        group.sort(key=lambda e: e["client_event_time"])
        length = (group[-1]["client_event_time"] - group[0]["client_event_time"]).total_seconds()
        expected[key] = {
            "length_s": min(length, 86_400.0),
            "event_count": len(group),
            "first_event_type": group[0]["event_type"],
            "last_event_type": group[-1]["event_type"],
            "event_types": list(dict.fromkeys(e["event_type"] for e in group)),
            "country": group[0]["country"],
            "session_start": datetime.fromtimestamp(key[1] / 1000, UTC),
        }
    return expected


def test_sessions_match_the_definition():
    sessions = build_sessions(pa.Table.from_pylist(EVENTS, schema=SCHEMA)).to_pylist()
    expected = _expected(EVENTS)
    assert len(sessions) == len(expected) == 4
    for row in sessions:
        want = expected[row["amplitude_id"], row["session_id"]]
        assert row["length_s"] == want["length_s"]
        assert row["event_count"] == want["event_count"]
        assert row["first_event_type"] == want["first_event_type"]
        assert row["last_event_type"] == want["last_event_type"]
        assert json.loads(row["event_types"]) == want["event_types"]
        assert row["country"] == want["country"]
        assert row["session_start"] == want["session_start"]
    first = next(row for row in sessions if row["amplitude_id"] == 1)
    assert first["session_end"].date() > first["session_start"].date()  # crossed midnight, dated by its start
    assert json.loads(first["user_properties"]) == {"plan": "pro"}


def test_no_events_no_sessions():
    assert build_sessions(SCHEMA.empty_table()).num_rows == 0
    only_out_of_session = pa.Table.from_pylist([_event(1, None, 0, "push")], schema=SCHEMA)
    assert build_sessions(only_out_of_session).num_rows == 0


@pytest.mark.parametrize(
    "length,label",
    [(0, "1: 0-3 s"), (2.999, "1: 0-3 s"), (3, "2: 3-10 s"), (59.9, "4: 30-60 s"), (60, "5: 1-3 min"),
     (3599, "8: 30-60 min"), (3600, "9: 1-24 h"), (86_400, "9: 1-24 h")],
)
def test_length_buckets(length, label):
    assert length_bucket(pa.array([float(length)])).to_pylist() == [label]
    labels = [label for _, label in LENGTH_BUCKETS]
    assert labels == sorted(labels)
