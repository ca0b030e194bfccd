"""HTTP behaviour pinned with pytest-recording cassettes (recorded against the emulator, replayed offline).

Record again with ``pytest tests/test_cassettes.py --record-mode=rewrite``. The Authorization header is
filtered out of every cassette; CI replays them (``record_mode=none``) without contacting any server.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shillelagh_amplitude.export.archive import iter_batches
from shillelagh_amplitude.export.client import AuthenticationError, Window

from .conftest import API_KEY, SECRET_KEY, client_for
from .helpers import parse_ts

CASSETTES = Path(__file__).parent / "cassettes" / "test_cassettes"
HOUR = datetime(2026, 3, 2, 14, tzinfo=UTC)


@pytest.fixture(scope="module")
def vcr_config():
    return {
        "filter_headers": [("authorization", "REDACTED")],
        "match_on": ["method", "path", "query"],
    }


def _replayed(vcr) -> bool:
    return vcr.rewound or vcr.play_count > 0


@pytest.mark.vcr
def test_one_hour_window(vcr, emulator, dataset):
    window = client_for(emulator).download(Window(HOUR, HOUR))
    rows = [row for batch in iter_batches(window.path) for row in batch.to_pylist()]
    window.path.unlink()
    expected = [r for r in dataset.records if parse_ts(r["server_upload_time"]).replace(minute=0, second=0,
                                                                                         microsecond=0) == HOUR]
    assert sorted(r["uuid"] for r in rows) == sorted(r["uuid"] for r in expected) and expected
    (request,) = vcr.requests
    assert request.path == "/api/2/export" and request.query == [("end", "20260302T14"), ("start", "20260302T14")]
    if _replayed(vcr):
        assert emulator.requests == []


@pytest.mark.vcr
def test_empty_window(vcr, emulator):
    empty = datetime(2025, 1, 1, tzinfo=UTC)
    window = client_for(emulator).download(Window(empty, empty))
    assert window.path is None
    assert [response["status"]["code"] for response in vcr.responses] == [404]


@pytest.mark.vcr
def test_wrong_secret(vcr, emulator):
    with pytest.raises(AuthenticationError, match="Invalid API Key"):
        client_for(emulator, secret_key="a-wrong-secret").download(Window(HOUR, HOUR))
    assert [response["status"]["code"] for response in vcr.responses] == [403]


def test_cassettes_hold_no_credentials():
    files = sorted(CASSETTES.glob("*.yaml"))
    assert len(files) == 3
    basic = base64.b64encode(f"{API_KEY}:{SECRET_KEY}".encode()).decode()
    for path in files:
        text = path.read_text()
        assert SECRET_KEY not in text and "a-wrong-secret" not in text and basic not in text
        assert "REDACTED" in text
