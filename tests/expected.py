"""Session metrics computed from raw export records in plain Python, independently of the connector."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

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
