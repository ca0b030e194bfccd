"""Session metrics computed from raw export records in plain Python (user sessions in DuckDB SQL), independently of
the connector."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa

from .helpers import parse_ts


@dataclass
class Session:
    amplitude_id: int
    session_id: int
    start: datetime
    length_s: float
    event_count: int
    first: dict
    event_types: list[str]


def sessions_from_records(records: list[dict]) -> list[Session]:
    """Group by (amplitude_id, session_id), drop -1, length = max - min client_event_time capped at 1 day."""
    groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for record in records:
        if record["session_id"] not in (None, -1) and record["amplitude_id"] is not None:
            groups[record["amplitude_id"], record["session_id"]].append(record)
    sessions = []
    for (amplitude_id, session_id), events in groups.items():
        events.sort(key=lambda e: parse_ts(e["client_event_time"]))
        times = [parse_ts(e["client_event_time"]) for e in events]
        sessions.append(
            Session(
                amplitude_id=amplitude_id,
                session_id=session_id,
                start=datetime.fromtimestamp(session_id / 1000, UTC),
                length_s=min((times[-1] - times[0]).total_seconds(), 86_400.0),
                event_count=len(events),
                first=events[0],
                event_types=list(dict.fromkeys(e["event_type"] for e in events)),
            )
        )
    return sessions


def percentile(values: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (what SQLite's percentile() does)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * p / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def kpis(sessions: list[Session]) -> tuple[int, float, float, float]:
    lengths = [s.length_s for s in sessions]
    return len(lengths), sum(lengths) / len(lengths), percentile(lengths, 50), percentile(lengths, 95)


def user_property(session: Session, key: str) -> str | None:
    raw = session.first.get("user_properties")
    properties = raw if isinstance(raw, dict) else json.loads(raw or "{}")
    return properties.get(key)


def _events_table(records: list[dict]) -> pa.Table:
    """The records' columns a user session needs, with their stored order (``rn``), parsed without the connector."""
    names = ("amplitude_id", "session_id", "device_id", "event_type", "user_id", "platform", "country",
             "device_type")
    columns = {name: [r[name] for r in records] for name in names}
    columns["t"] = [parse_ts(r["client_event_time"]) for r in records]
    columns["uploaded"] = [parse_ts(r["server_upload_time"]) for r in records]
    columns["user_creation_time"] = [parse_ts(r["user_creation_time"]) for r in records]
    columns["user_properties"] = [p if p is None or isinstance(p, str) else json.dumps(p)
                                  for p in (r["user_properties"] for r in records)]
    columns["rn"] = list(range(len(records)))
    return pa.table(columns)


#: User sessions in DuckDB: a recursive walk per user over the events in time order (the 24 h rule needs the
#: session's first event, so it cannot be a window function alone).
INDEPENDENT = """
WITH RECURSIVE ev AS (
    SELECT *, row_number() OVER (PARTITION BY amplitude_id ORDER BY t, uploaded, rn) AS k
    FROM events WHERE session_id <> -1 AND amplitude_id IS NOT NULL AND t >= $since
), walk AS (
    SELECT amplitude_id, k, t, t AS first_t, 0 AS n FROM ev WHERE k = 1
    UNION ALL
    SELECT e.amplitude_id, e.k, e.t,
           CASE WHEN e.t - w.t > to_minutes($gap) OR e.t - w.first_t > INTERVAL 1 DAY THEN e.t ELSE w.first_t END,
           CASE WHEN e.t - w.t > to_minutes($gap) OR e.t - w.first_t > INTERVAL 1 DAY THEN w.n + 1 ELSE w.n END
    FROM walk w JOIN ev e ON e.amplitude_id = w.amplitude_id AND e.k = w.k + 1
)
SELECT min(ev.t) AS session_start, max(ev.t) AS session_end,
       date_diff('microsecond', min(ev.t), max(ev.t)) / 1e6 AS length_s, count(*) AS event_count, ev.amplitude_id,
       count(DISTINCT device_id) AS devices, count(DISTINCT session_id) AS amplitude_sessions,
       arg_min(event_type, k) AS first_event_type, arg_max(event_type, k) AS last_event_type,
       arg_min(platform, k) AS platform, arg_min(country, k) AS country, arg_min(user_id, k) AS user_id,
       arg_min(device_type, k) AS device_type, arg_min(user_creation_time, k) AS user_creation_time,
       list(event_type ORDER BY k) AS event_types, arg_min(user_properties, k) AS user_properties
FROM walk JOIN ev USING (amplitude_id, k)
GROUP BY ev.amplitude_id, walk.n
HAVING min(ev.t) >= $start AND min(ev.t) < $end
ORDER BY session_start, amplitude_id
"""
USER_SESSION_COLUMNS = ("session_start", "session_end", "length_s", "event_count", "amplitude_id", "devices",
                        "amplitude_sessions", "first_event_type", "last_event_type", "platform", "country",
                        "user_id", "device_type", "user_creation_time", "event_types", "user_properties")


def user_sessions(records: list[dict], start: datetime, end: datetime, gap: int) -> list[tuple]:
    """User sessions started in [start, end) at ``gap`` minutes, from the records since 48 h before the hour of
    ``start`` (the look-back): ``USER_SESSION_COLUMNS``, event types as a list, user properties parsed."""
    duck = duckdb.connect()
    duck.execute("SET TimeZone = 'UTC'")
    duck.register("events", _events_table(records))
    since = start.replace(minute=0, second=0, microsecond=0) - timedelta(hours=48)
    rows = duck.execute(INDEPENDENT, {"since": since, "gap": gap, "start": start,
                                      "end": end}).fetchall()
    return [(*row[:14], list(dict.fromkeys(row[14])), json.loads(row[15] or "null")) for row in rows]
