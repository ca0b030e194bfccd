"""Faults while queries run in several threads: the Export API answering 5xx and 429 in bursts during a sync, and
an object store that stops answering. Each query gets the exact answer or a readable error; no hour is partial.

Expected values come from the generated records (``dataset.records``), never from the code under test.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pyarrow.feather as feather

from shillelagh_amplitude.export.loader import fill
from shillelagh_amplitude.hours import hour_range
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY, client_for
from .expected import sessions_from_records
from .helpers import Outcome, QueryLoad, amplitude_sql, parse_ts
from .test_object_store import AWS, bucket, bucket_of, events_per_hour, filled, whole_hours  # noqa: F401

FIRST, LAST = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, 23, tzinfo=UTC)
DAYS = [FIRST + timedelta(days=n) for n in range(4)]
THREADS = 3
OFFLINE_REFUSAL = "This connection is offline and its store"


def uploads_sql(first: datetime, end: datetime) -> str:
    return (f"SELECT count(*) FROM amplitude_events WHERE server_upload_time >= '{first:%Y-%m-%d}' "
            f"AND server_upload_time < '{end:%Y-%m-%d}'")


def expected_answers(records: list[dict]) -> dict[str, list[tuple]]:
    """Each query's exact rows, counted from the generated records."""
    uploaded = [parse_ts(r["server_upload_time"]) for r in records]
    answers = {uploads_sql(day, day + timedelta(days=1)): [(sum(day <= t < day + timedelta(days=1)
                                                                for t in uploaded),)] for day in DAYS}
    types = Counter(r["event_type"] for r, t in zip(records, uploaded, strict=True)
                    if FIRST <= t < DAYS[-1] + timedelta(days=1))
    answers[(f"SELECT event_type, count(*) FROM amplitude_events WHERE server_upload_time >= '{FIRST:%Y-%m-%d}' "
             f"AND server_upload_time < '{DAYS[-1] + timedelta(days=1):%Y-%m-%d}' GROUP BY event_type "
             "ORDER BY event_type")] = sorted(types.items())
    return answers


def wrong(outcomes: list[Outcome], answers: dict[str, list[tuple]], readable: str) -> list[Outcome]:
    """The outcomes that are neither the exact answer nor an error containing ``readable``."""
    return [o for o in outcomes if (o.rows != answers[o.sql] if o.error is None else readable not in o.error)]


def stored_hours(root, records: list[dict]) -> list[datetime]:
    """The hours of a local store, each asserted whole (read with pyarrow alone): one file an hour, holding
    exactly its events, an empty marker for an hour without any; no temporary file left."""
    per_hour = events_per_hour(records)
    hours = []
    for day in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        assert not [p for p in day.iterdir() if p.name.startswith(".")], day  # no temporary file
        names = sorted(p.name for p in day.iterdir())
        assert len({name[:2] for name in names}) == len(names), names  # one file an hour
        for name in names:
            hour = datetime.strptime(day.name + name[:2], "%Y%m%d%H").replace(tzinfo=UTC)
            rows = feather.read_table(day / name).num_rows if name.endswith(".arrow") else 0
            assert rows == per_hour[hour] and (name.endswith(".empty") or rows), (day.name, name)
            hours.append(hour)
    return hours


def test_a_sync_through_bursts_of_5xx_and_429_stores_exact_hours_while_queries_run(dataset, emulator, tmp_path):
    answers = expected_answers(dataset.records)
    store = HourStore(tmp_path, "https://amplitude.com", API_KEY)
    store.remember_secret(SECRET_KEY)
    windows = [(start, start + timedelta(hours=11)) for start in hour_range(FIRST, LAST) if start.hour % 12 == 0]
    injected = Counter()
    for start, end in windows[::3]:  # a burst on every third window: four faults, then the answer
        for status in (500, 502, 503, 429):
            emulator.add_fault("status", status=status, retry_after=1 if status == 429 else None, hours=(start, end))
            injected[status] += 1
    with QueryLoad(lambda: amplitude_sql(tmp_path, API_KEY, SECRET_KEY), list(answers), THREADS) as load:
        load.wait_for(load.each_thread("before", 1))  # every thread queries the empty store
        published = 0

        def after_each_window(hours: int) -> None:
            """Every thread runs a query on the store as it is after each window, before the next one is fetched."""
            nonlocal published
            published += 1
            load.phase = f"sync-{published}"
            load.wait_for(load.each_thread(load.phase, 1))

        load.phase = "sync-0"
        report = fill(store, client_for(emulator), FIRST, LAST, now=datetime.now(UTC), window_hours=12,
                      decode_workers=1, progress=after_each_window)
        load.phase = "after"
        load.wait_for(load.each_thread("after", len(answers)))
    assert report.hours_downloaded == len(list(hour_range(FIRST, LAST))) and published == len(windows)
    served = Counter(r.status for r in emulator.requests if r.status in injected)
    assert served == injected and emulator.pending_faults == []  # every burst was answered, and retried through
    assert stored_hours(store.root, dataset.records) == list(hour_range(FIRST, LAST))
    during = [o for o in load.outcomes if o.began.startswith("sync") and o.ended.startswith("sync")]
    assert wrong(during, answers, OFFLINE_REFUSAL) == []
    assert {o.error is None for o in during} == {True, False}  # answered once their hours were in, refused before
    after = [o for o in load.outcomes if o.began == "after"]
    assert after and [o for o in after if o.rows != answers[o.sql]] == []


def test_a_store_that_stops_answering_fails_queries_readably_then_answers_again(s3, filled, dataset):  # noqa: F811
    answers = {sql: rows for sql, rows in expected_answers(dataset.records).items() if "GROUP BY" not in sql}
    low, high = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC)
    sessions_sql = (f"SELECT count(*) FROM amplitude_sessions WHERE session_start >= '{low:%Y-%m-%d}' "
                    f"AND session_start < '{high:%Y-%m-%d}'")
    answers[sessions_sql] = [(sum(1 for s in sessions_from_records(dataset.records) if low <= s.start < high),)]
    readable = f"The hour store {filled} could not be"
    with QueryLoad(lambda: amplitude_sql(filled, API_KEY, SECRET_KEY), list(answers), THREADS) as load:
        load.wait_for(load.each_thread("before", len(answers)))
        s3.faults.down = True
        load.phase = "outage"
        back_at = time.monotonic() + 30  # the store is gone for 30 s, and until every thread felt it
        try:
            load.wait_for(lambda outcomes: load.each_thread("outage", 1, ok=False)(outcomes)
                          and time.monotonic() >= back_at, timeout=300)
        finally:
            s3.faults.down = False
        load.phase = "back"
        load.wait_for(load.each_thread("back", len(answers)))
    before = [o for o in load.outcomes if o.began == o.ended == "before"]
    assert before and [o for o in before if o.rows != answers[o.sql]] == []
    outage = [o for o in load.outcomes if o.began == o.ended == "outage"]
    assert wrong(outage, answers, readable) == []
    errors = [o.error for o in outage if o.error]
    assert errors and not [e for e in errors if AWS["AWS_SECRET_ACCESS_KEY"] in e or SECRET_KEY in e]
    back = [o for o in load.outcomes if o.began == "back"]
    assert back and [o for o in back if o.rows != answers[o.sql]] == []
    assert [status for *_, status in s3.requests_made()].count(0) > 0  # requests went unanswered
    stored = s3.keys(bucket_of(filled))
    assert not [key for key in stored if "/.tmp" in key]
    for key in (key for key in stored if "/derived/" in key):
        feather.read_table(io.BytesIO(s3.get_object(bucket_of(filled), key)))  # every derived table reads back
    assert whole_hours(s3, filled, dataset.records)

