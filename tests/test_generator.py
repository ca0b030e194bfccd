"""The generator writes realistic Amplitude export files; read back here with plain gzip + json."""

from __future__ import annotations

import gzip
import json
import re
import zipfile
from collections import Counter, defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from shillelagh_amplitude.sample.generator import (
    DatasetSummary,
    generate_dataset,
    list_members,
    main,
    make_event,
    member_name,
    parse_member_name,
    sample_window,
    write_events,
    write_export_zip,
)
from shillelagh_amplitude.schema import EVENT_KEYS, TIMESTAMP_KEYS

START = datetime(2024, 3, 1, tzinfo=UTC)
END = datetime(2024, 3, 4, tzinfo=UTC)
APP = 187520
MAX_LATE_HOURS = 36
TIMESTAMP_TEXT = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
FILE_NAME = re.compile(r"^(\d+)_(\d{4}-\d{2}-\d{2})_(\d{1,2})#(\d+)\.json\.gz$")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)


def read_files(data_dir: Path) -> dict[Path, list[bytes]]:
    """Raw lines of every ``*.json.gz`` under ``data_dir``."""
    files = {}
    for path in sorted(data_dir.rglob("*.json.gz")):
        with gzip.open(path, "rb") as handle:
            files[path] = handle.read().splitlines(keepends=True)
    return files


def read_events(data_dir: Path) -> list[dict]:
    return [json.loads(line) for lines in read_files(data_dir).values() for line in lines]


def sessions_of(events: list[dict]) -> dict[tuple[int, int], list[dict]]:
    """Events per (amplitude_id, session_id), out-of-session events left out."""
    sessions = defaultdict(list)
    for event in events:
        if event["session_id"] != -1:
            sessions[event["amplitude_id"], event["session_id"]].append(event)
    return sessions


def span(events: list[dict], key: str = "client_event_time") -> timedelta:
    times = [parse(event[key]) for event in events]
    return max(times) - min(times)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetSummary, list[dict]]:
    data_dir = tmp_path_factory.mktemp("generated")
    summary = generate_dataset(data_dir, START, END, events=5000, seed=7, events_per_part=50)
    return data_dir, summary, read_events(data_dir)


def test_every_record_has_the_55_keys_in_export_formats(generated):
    _, _, events = generated
    uuids = Counter(event["uuid"] for event in events)
    assert uuids.most_common(1)[0][1] == 1
    for event in events:
        assert list(event) == list(EVENT_KEYS)
        for key in TIMESTAMP_KEYS:
            assert TIMESTAMP_TEXT.match(event[key]), (key, event[key])
        assert event["app"] == APP
        assert isinstance(event["amplitude_id"], int)
        assert isinstance(event["session_id"], int)
        assert event["session_id"] == -1 or event["session_id"] > 1_600_000_000_000
        assert isinstance(event["$insert_id"], str) and isinstance(event["uuid"], str)
        assert isinstance(event["event_id"], int)
        assert isinstance(event["user_properties"], dict)
        assert event["data"]["path"] in ("/batch", "/2/httpapi")
        assert event["data"]["group_first_event"] == {} and event["data"]["group_ids"] == {}
        assert event["plan"] == event["groups"] == event["group_properties"] == {}
        assert event["data_type"] == "event"
        assert event["device_id"]


def test_timestamps_are_consistent_and_follow_the_event_time_rule(generated):
    _, _, events = generated
    corrected = 0
    for event in events:
        received, client_upload = parse(event["server_received_time"]), parse(event["client_upload_time"])
        gap = received - client_upload
        expected = parse(event["client_event_time"]) + (
            gap if abs(gap) >= timedelta(seconds=60) else timedelta()
        )
        assert parse(event["event_time"]) == expected
        corrected += event["event_time"] != event["client_event_time"]
        assert received <= parse(event["server_upload_time"]) <= parse(event["processed_time"])
    assert corrected > 0  # devices with a wrong clock


def test_files_are_named_and_bucketed_by_upload_hour(generated):
    data_dir, summary, _ = generated
    files = read_files(data_dir)
    assert sorted(files) == sorted(summary.files)
    assert {path.parent for path in files} == {data_dir / str(APP)}
    parts = defaultdict(list)
    for path, lines in files.items():
        app, date, hour, part = FILE_NAME.match(path.name).groups()
        assert app == str(APP) and hour == str(int(hour))  # the hour is not zero-padded
        parts[date, int(hour)].append(int(part))
        assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
        for line in lines:
            uploaded = parse(json.loads(line)["server_upload_time"])
            assert (uploaded.strftime("%Y-%m-%d"), uploaded.hour) == (date, int(hour))
    assert all(sorted(numbers) == list(range(len(numbers))) for numbers in parts.values())
    hours = sorted(datetime.strptime(date, "%Y-%m-%d").replace(hour=h, tzinfo=UTC) for date, h in parts)
    assert (summary.first_upload_hour, summary.last_upload_hour) == (hours[0], hours[-1])
    assert summary.bytes_written == sum(path.stat().st_size for path in files)


def test_busy_hours_are_split_into_parts(generated):
    data_dir, _, _ = generated
    by_hour = defaultdict(dict)
    for path, lines in read_files(data_dir).items():
        _, date, hour, part = FILE_NAME.match(path.name).groups()
        by_hour[date, hour][int(part)] = len(lines)
    split = [sizes for sizes in by_hour.values() if len(sizes) > 1]
    assert split
    for sizes in by_hour.values():
        counts = [sizes[part] for part in sorted(sizes)]
        assert all(count == 50 for count in counts[:-1]) and 0 < counts[-1] <= 50


def test_event_and_session_counts(generated):
    _, summary, events = generated
    sessions = sessions_of(events)
    assert summary.events == len(events)
    assert 0.85 * 5000 <= len(events) <= 1.15 * 5000
    assert summary.sessions == len(sessions)
    assert 8 <= len(events) / len(sessions) <= 15
    assert summary.users >= len({event["amplitude_id"] for event in events})


def test_sessions_start_in_the_range_and_files_are_in_upload_order(generated):
    data_dir, _, events = generated
    sessions = sessions_of(events)
    users_per_id = Counter(session_id for _, session_id in sessions)
    for (_, session_id), session in sessions.items():
        if all(event["event_time"] == event["client_event_time"] for event in session):  # a device on time
            start = min(parse(event["client_event_time"]) for event in session)
            assert START <= start < END
            if users_per_id[session_id] == 1:  # a shared id may come from the other device's clock
                assert session_id == int(start.timestamp() * 1000)
    for lines in read_files(data_dir).values():
        uploads = [json.loads(line)["server_upload_time"] for line in lines]
        assert uploads == sorted(uploads)


def test_edge_cases_are_present(generated):
    _, _, events = generated
    sessions = sessions_of(events)
    out_of_session = [event for event in events if event["session_id"] == -1]
    assert out_of_session and {event["event_type"] for event in out_of_session} <= {
        "push_notification_received",
        "subscription_renewed",
        "invoice_paid",
        "email_opened",
        "trial_reminder_sent",
    }
    users_per_id = defaultdict(set)
    for amplitude_id, session_id in sessions:
        users_per_id[session_id].add(amplitude_id)
    assert any(len(users) > 1 for users in users_per_id.values())
    assert any(
        len({parse(event["client_event_time"]).date() for event in session}) > 1
        and span(session) < timedelta(hours=2)
        for session in sessions.values()
    )
    assert any(span(session) > timedelta(hours=24) for session in sessions.values())
    assert sum(span(session) == timedelta() for session in sessions.values()) > 0
    anonymous = [event for event in events if event["user_id"] is None and event["session_id"] != -1]
    assert anonymous and all(event["device_id"] and event["amplitude_id"] for event in anonymous)
    across_hours = [s for s in sessions.values() if len({e["server_upload_time"][:13] for e in s}) > 1]
    assert across_hours
    types = Counter(event["event_type"] for event in events)
    assert {"session_start", "session_end", "page_view", "feature_used", "search"} <= set(types)
    assert any(
        len({event["user_properties"].get("plan") for event in session}) > 1 for session in sessions.values()
    )


def test_late_uploads(generated):
    _, _, events = generated
    lateness = [parse(e["server_upload_time"]) - parse(e["client_event_time"]) for e in events]
    late = [delay for delay in lateness if delay >= timedelta(hours=1)]
    assert 0.02 <= len(late) / len(events) <= 0.07
    assert max(late) <= timedelta(hours=MAX_LATE_HOURS)
    assert max(late) > timedelta(hours=MAX_LATE_HOURS - 1)
    on_time = sorted(lateness)[len(lateness) // 2]
    assert on_time < timedelta(minutes=1)


def test_population(generated):
    _, _, events = generated
    identified = [
        event for event in events if event["user_id"] is not None and event["library"] != "http/2.0"
    ]
    assert {event["user_properties"]["plan"] for event in identified} == {
        "free",
        "starter",
        "pro",
        "enterprise",
    }
    assert {event["user_properties"]["user_type"] for event in identified} == {"individual", "team", "admin"}
    sizes = {event["user_properties"].get("company_size") for event in identified}
    assert sizes == {None, "1-10", "11-50", "51-200", "201-1000", "1000+"}
    assert {event["platform"] for event in events} == {"Web", "iOS", "Android", None}
    assert len({event["country"] for event in events}) > 5
    for key in ("city", "region", "language", "version_name", "device_carrier", "os_version"):
        values = {event[key] for event in events}
        assert None in values and len(values) > 1, key
    creation = {parse(event["user_creation_time"]) for event in events}
    assert min(creation) >= START - timedelta(days=366) and max(creation) <= START
    assert max(creation) - min(creation) > timedelta(days=200)
    ids_per_user = defaultdict(set)
    devices_per_user = defaultdict(set)
    for event in events:
        ids_per_user[event["user_id"] or event["amplitude_id"]].add(event["amplitude_id"])
        devices_per_user[event["amplitude_id"]].add(event["device_id"])
    assert all(len(ids) == 1 for user, ids in ids_per_user.items() if isinstance(user, str))
    assert max(len(devices) for devices in devices_per_user.values()) == 2


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    first = generate_dataset(tmp_path / "a", START, START + timedelta(hours=12), events=800, seed=3)
    again = generate_dataset(tmp_path / "b", START, START + timedelta(hours=12), events=800, seed=3)
    generate_dataset(tmp_path / "c", START, START + timedelta(hours=12), events=800, seed=4)
    assert [path.name for path in first.files] == [path.name for path in again.files]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(first.files, again.files, strict=True))
    assert read_events(tmp_path / "a") != read_events(tmp_path / "c")


def test_generate_rejects_an_empty_range(tmp_path):
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, START, START, events=10)


def test_make_event_defaults():
    event = make_event()
    assert list(event) == list(EVENT_KEYS)
    assert event["session_id"] == int(parse(event["client_event_time"]).timestamp() * 1000)
    assert event["event_time"] == event["client_event_time"]
    assert parse(event["client_event_time"]) <= parse(event["server_upload_time"])
    assert make_event()["uuid"] != event["uuid"]
    assert make_event()["$insert_id"] != event["$insert_id"]
    assert event["data"] == {
        "path": "/batch",
        "user_properties_updated": True,
        "group_first_event": {},
        "group_ids": {},
    }


def test_make_event_overrides_and_derived_times():
    event = make_event(
        user_id=None,
        session_id=-1,
        client_event_time=datetime(2024, 3, 2, 5, 0),
        server_upload_time="2024-03-02 09:10:00.000000",
        **{"$insert_id": "abc"},
    )
    assert event["user_id"] is None and event["session_id"] == -1 and event["$insert_id"] == "abc"
    assert event["client_event_time"] == "2024-03-02 05:00:00.000000"
    assert (
        parse(event["client_upload_time"])
        <= parse(event["server_received_time"])
        <= parse(event["server_upload_time"])
    )
    assert event["event_time"] == event["client_event_time"]  # uploaded late, but the clocks agree
    skewed = make_event(
        client_event_time="2024-03-02 05:00:00.000000",
        client_upload_time="2024-03-02 04:00:05.000000",
        server_received_time="2024-03-02 05:00:05.000000",
    )
    assert skewed["event_time"] == "2024-03-02 06:00:00.000000"
    assert parse(skewed["server_upload_time"]) >= parse(skewed["server_received_time"])
    with pytest.raises(TypeError):
        make_event(not_a_key=1)


def test_member_names():
    hour = datetime(2024, 3, 2, 5, tzinfo=UTC)
    assert member_name(APP, hour, 0) == "187520/187520_2024-03-02_5#0.json.gz"
    assert parse_member_name("187520/187520_2024-03-02_17#1.json.gz") == (APP, hour.replace(hour=17), 1)
    assert parse_member_name("187520/") is None
    assert parse_member_name("notes.txt") is None


def test_write_events_buckets_by_upload_hour_and_appends_parts(tmp_path):
    events = [
        make_event(client_event_time=f"2024-03-02 0{minute % 3}:59:00.000000", event_id=minute)
        for minute in range(5)
    ] + [
        make_event(client_event_time="2024-03-01 22:00:00.000000", server_upload_time="2024-03-02 05:00:01.5")
    ]
    paths = write_events(tmp_path, events, events_per_part=1)
    names = [path.name for path in paths]
    assert names[0] == "187520_2024-03-02_0#0.json.gz" and "187520_2024-03-02_5#0.json.gz" in names
    assert Counter(name.rsplit("#", 1)[0] for name in names) == {
        "187520_2024-03-02_0": 2,
        "187520_2024-03-02_1": 2,
        "187520_2024-03-02_2": 1,
        "187520_2024-03-02_5": 1,
    }
    assert [json.loads(gzip.decompress(p.read_bytes()))["event_id"] for p in paths[:2]] == [0, 3]
    more = write_events(tmp_path, [make_event(server_upload_time="2024-03-02 05:30:00.000000")])
    assert [path.name for path in more] == ["187520_2024-03-02_5#1.json.gz"]
    other_app = write_events(tmp_path, [make_event(app=42)])
    assert other_app[0].relative_to(tmp_path).as_posix() == "42/42_2024-03-02_5#0.json.gz"


def test_write_export_zip_selects_an_inclusive_hour_range(generated, tmp_path):
    data_dir, summary, _ = generated
    first = summary.first_upload_hour + timedelta(hours=2)
    last = first + timedelta(hours=3)
    zip_path = tmp_path / "export.zip"
    count = write_export_zip(data_dir, zip_path, first, last)
    expected = [m for m in list_members(data_dir) if first <= m.hour <= last]
    with zipfile.ZipFile(zip_path) as archive:
        infos = archive.infolist()
        assert count == len(infos) == len(expected)
        assert [info.filename for info in infos] == [member.name for member in expected]
        assert {parse_member_name(info.filename)[1] for info in infos} == {
            first + timedelta(hours=h) for h in range(4)
        }
        assert all(info.compress_type == zipfile.ZIP_STORED for info in infos)
        for info, member in zip(infos, expected, strict=True):
            assert archive.read(info) == member.path.read_bytes()
    assert write_export_zip(data_dir, tmp_path / "all.zip") == len(summary.files)


def test_command_line_writes_whole_utc_days_through_the_newest_exportable_hour(tmp_path, capsys):
    """Exported at 2024-03-03 05:40 UTC: Amplitude serves upload hours through 02:00 (about 3 h behind), so the
    sample's sessions fill the two whole days 03-01 and 03-02, and uploads run on to 03-03 02:00."""
    out = tmp_path / "sample.zip"
    main(["--days", "2", "--events", "3000", "--seed", "1", "--out", str(out), "--now", "2024-03-03T05:40"])
    with zipfile.ZipFile(out) as archive:
        hours = {parse_member_name(name)[1] for name in archive.namelist()}
        events = [
            json.loads(line)
            for name in archive.namelist()
            for line in gzip.decompress(archive.read(name)).splitlines()
        ]
    assert min(hours) == datetime(2024, 3, 1, tzinfo=UTC)
    assert max(hours) == datetime(2024, 3, 3, 2, tzinfo=UTC)
    starts = {datetime.fromtimestamp(e["session_id"] / 1000, UTC) for e in events if e["session_id"] != -1}
    # every hour of both days holds session starts (the first day is as full as the other); none after them
    # (a session id can run a few minutes early or late: about 2 % of devices have a skewed clock)
    assert max(starts) < datetime(2024, 3, 3, 1, tzinfo=UTC)
    by_day_hour = {(s.date(), s.hour) for s in starts if s >= datetime(2024, 3, 1, tzinfo=UTC)}
    assert by_day_hour == {(date(2024, 3, d), h) for d in (1, 2) for h in range(24)}
    assert 2000 < len(events) < 4000
    assert "2024-03-01 .. 2024-03-02 (UTC days)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ("2024-03-03T05:40", ("2024-03-01", "2024-03-03", "2024-03-03T02")),
        ("2024-03-03T02:00", ("2024-03-01", "2024-03-03", "2024-03-02T23")),  # 23:00 just exportable
        ("2024-03-03T01:59", ("2024-02-29", "2024-03-02", "2024-03-02T22")),  # yesterday not complete yet
    ],
)
def test_sample_window(now, expected):
    start, end, last = sample_window(2, datetime.fromisoformat(now).replace(tzinfo=UTC))
    assert (f"{start:%Y-%m-%d}", f"{end:%Y-%m-%d}", f"{last:%Y-%m-%dT%H}") == expected
