"""Archive decoding: typed columns, both timestamp forms, lenient types, and clear errors on broken input."""

from __future__ import annotations

import gzip
import json
import zipfile
from datetime import UTC, datetime

import pyarrow as pa
import pytest

from shillelagh_amplitude.export import archive
from shillelagh_amplitude.export.archive import ArchiveError, iter_batches, split_by_hour
from shillelagh_amplitude.sample.generator import make_event
from shillelagh_amplitude.schema import EVENT_KEYS, column_name

from .helpers import export_zip, parse_ts, read_zip


def _decode(path):
    return [row for batch in iter_batches(path) for row in batch.to_pylist()]


def test_every_key_is_decoded_with_its_type(tmp_path):
    events = [make_event(event_type=f"e{i}", server_upload_time="2026-03-01 05:10:00.000000") for i in range(50)]
    path = export_zip(tmp_path, events)
    rows = _decode(path)
    expected = read_zip(path)
    assert len(rows) == len(expected) == 50
    by_uuid = {row["uuid"]: row for row in rows}
    for record in expected:
        row = by_uuid[record["uuid"]]
        assert set(row) == {column_name(key) for key in EVENT_KEYS}
        assert row["event_time"] == parse_ts(record["event_time"])
        assert row["server_upload_time"] == parse_ts(record["server_upload_time"])
        assert row["session_id"] == record["session_id"]
        assert row["insert_id"] == record["$insert_id"]
        assert json.loads(row["user_properties"]) == record["user_properties"]
        assert json.loads(row["data"]) == record["data"]


def test_timestamp_forms_and_lenient_types(tmp_path):
    records = [
        make_event(client_event_time="2026-03-01 05:03:12.123000", server_upload_time="2026-03-01 05:10:00.000000"),
        make_event(client_event_time="2026-03-01T05:03:12", server_upload_time="2026-03-01T05:10:00.5"),
    ]
    records[1]["user_id"] = 12345  # a number where a string is documented
    records[1]["amplitude_id"] = "987"  # a string where a number is documented
    path = export_zip(tmp_path, records)
    rows = sorted(_decode(path), key=lambda row: row["server_upload_time"])
    assert rows[0]["client_event_time"] == datetime(2026, 3, 1, 5, 3, 12, 123000, tzinfo=UTC)
    assert rows[1]["client_event_time"] == datetime(2026, 3, 1, 5, 3, 12, tzinfo=UTC)
    assert rows[1]["server_upload_time"] == datetime(2026, 3, 1, 5, 10, 0, 500000, tzinfo=UTC)
    assert rows[1]["user_id"] == "12345"
    assert rows[1]["amplitude_id"] == 987


def test_small_blocks_keep_every_line(tmp_path, monkeypatch):
    """Members are read in blocks; lines cut by a block boundary are joined again."""
    monkeypatch.setattr(archive, "BLOCK_BYTES", 1000)
    events = [make_event(server_upload_time="2026-03-01 05:10:00.000000") for _ in range(300)]
    path = export_zip(tmp_path, events)
    assert sorted(row["uuid"] for row in _decode(path)) == sorted(event["uuid"] for event in events)


def test_split_by_hour(tmp_path):
    events = [make_event(server_upload_time=f"2026-03-01 0{h}:59:59.999999") for h in (1, 2, 2, 3)]
    table = pa.Table.from_batches(list(iter_batches(export_zip(tmp_path, events))))
    batch = table.combine_chunks().to_batches()[0]
    assert batch.num_rows == 4
    counts = {hour: rows.num_rows for hour, rows in split_by_hour(batch)}
    assert counts == {datetime(2026, 3, 1, h, tzinfo=UTC): n for h, n in ((1, 1), (2, 2), (3, 1))}


def _zip_with(tmp_path, payload: bytes, name="187/187_2026-03-01_5#0.json.gz"):
    path = tmp_path / "broken.zip"
    with zipfile.ZipFile(path, "w") as zipped:
        zipped.writestr(name, payload)
    return path


def test_not_a_zip(tmp_path):
    path = tmp_path / "page.zip"
    path.write_text("<html>Too many requests</html>")
    with pytest.raises(ArchiveError, match="not a zip"):
        list(iter_batches(path))


def test_truncated_zip(tmp_path):
    good = export_zip(tmp_path, [make_event() for _ in range(200)])
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        list(iter_batches(cut))


def test_corrupt_gzip_member(tmp_path):
    line = json.dumps(make_event()).encode() + b"\n"
    payload = gzip.compress(line * 100)
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        list(iter_batches(_zip_with(tmp_path, payload[: len(payload) // 2])))


def test_line_that_is_not_json_names_its_place(tmp_path):
    line = json.dumps(make_event()).encode() + b"\n"
    payload = gzip.compress(line * 3 + b"{not json\n" + line)
    with pytest.raises(ArchiveError, match=r"line 4 of 187/187_2026-03-01_5#0.json.gz is not valid JSON"):
        list(iter_batches(_zip_with(tmp_path, payload)))
