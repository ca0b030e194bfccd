"""The hour store on GCS: gcp-storage-emulator on 127.0.0.1, reached through pyarrow's GCS file system as in
production (credentials from ``GOOGLE_APPLICATION_CREDENTIALS``), behind the proxy of ``object_store.py``. The
promises of sharing a bucket run on S3 and GCS alike in ``test_object_store.py``; here: GCS's readable faults and
its listing (folders exist only as prefixes).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from shillelagh.exceptions import OperationalError

from shillelagh_amplitude.export.loader import load_archive
from shillelagh_amplitude.store.hour_store import HourStore

from .conftest import API_KEY, SECRET_KEY
from .expected import kpis, sessions_from_records
from .test_object_store import END, START, new_bucket, offline_kpis


@pytest.fixture
def bucket(gcs, monkeypatch, tmp_path) -> str:
    return new_bucket(gcs, monkeypatch, tmp_path)


def test_errors_are_readable_and_a_retry_answers_exactly(gcs, bucket, dataset, monkeypatch, tmp_path):
    store = HourStore(bucket, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path)
    store.remember_secret(SECRET_KEY)
    expected = kpis([s for s in sessions_from_records(dataset.records) if START <= s.start < END])
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-1"))
    gcs.faults.fail = 1  # pyarrow's GCS client retries a 500 (within the URI's retry_limit_seconds)
    assert offline_kpis(bucket)[0] == expected[0]
    assert [status for *_, status in gcs.requests_made()].count(500) == 1
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-2"))
    gcs.faults.fail = 10_000
    with pytest.raises(OperationalError) as failure:  # a fault, not the query's mistake
        offline_kpis(bucket)
    assert str(failure.value).startswith(f"The hour store {bucket} could not be")
    gcs.faults.fail = 0
    assert offline_kpis(bucket)[0] == expected[0]


def test_the_stored_span_and_the_newest_final_hour_are_listed(gcs, bucket, dataset):
    """Day folders exist only as prefixes of the hour objects: they are listed all the same."""
    store = HourStore(bucket, "https://amplitude.com", API_KEY)
    load_archive(store, dataset.zip_path, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC))
    assert store.stored_span() == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, 23, tzinfo=UTC))
    assert store.newest_final_hour() == datetime(2026, 3, 3, 23, tzinfo=UTC)
