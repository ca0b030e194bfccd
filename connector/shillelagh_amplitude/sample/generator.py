"""Realistic Amplitude events in the Export API format, written like Amplitude's export files.

Files are laid out as Amplitude's Export zip members and S3 export objects:
``<data_dir>/<app>/<app>_<YYYY-MM-DD>_<H>#<part>.json.gz`` (upload hour in UTC, ``H`` not zero-padded, part
from 0), each a gzip NDJSON file with ``\\n``-terminated lines. Every record has all 55 export keys.

``generate_dataset`` simulates a product's users and sessions; ``make_event`` and ``write_events`` build small
hand-crafted datasets; ``write_export_zip`` packs an hour range into a zip like the Export API's answer.

Run ``python -m shillelagh_amplitude.sample.generator --days 30 --events 200000 --out sample.zip`` for a demo sample:
30 whole UTC days of sessions, exported as Amplitude would serve them now.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import gzip
import itertools
import math
import random
import re
import shutil
import tempfile
import uuid
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import IO, NamedTuple

import orjson

from ..hours import floor_hour, newest_exportable_hour, to_utc, whole_days_end
from ..schema import EVENT_KEYS, TIMESTAMP_KEYS

DEFAULT_APP = 187520
EVENTS_PER_PART = 5000

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
#: Amplitude corrects ``event_time`` only when the client and server clocks differ by at least this much.
EVENT_TIME_TOLERANCE_US = 60 * SECOND_US

MEMBER_PATTERN = re.compile(
    r"^(?P<app>\d+)_(?P<date>\d{4}-\d{2}-\d{2})_(?P<hour>\d{1,2})#(?P<part>\d+)\.json\.gz$"
)
#: zlib level 4: about twice as fast as the default 6 on this data, files ~8 % larger.
_GZIP_LEVEL = 4
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --- time ---------------------------------------------------------------------------------------------------


def _to_us(value: datetime) -> int:
    delta = to_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * SECOND_US + delta.microseconds


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@functools.lru_cache(maxsize=1 << 16)
def _minute_prefix(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%d %H:%M:")


_SECONDS = tuple(f"{second:02d}." for second in range(60))
_MILLISECONDS = tuple(f"{milli:03d}000" for milli in range(1000))


def _format_us(us: int) -> str:
    """Export timestamp text of microseconds since the epoch (table look-ups for whole milliseconds)."""
    minute, rest = divmod(us, MINUTE_US)
    ms, micro = divmod(rest, 1000)
    if micro:
        return f"{_minute_prefix(minute)}{rest // SECOND_US:02d}.{rest % SECOND_US:06d}"
    second, milli = divmod(ms, 1000)
    return _minute_prefix(minute) + _SECONDS[second] + _MILLISECONDS[milli]


def _parse_us(value: str | datetime) -> int:
    if isinstance(value, datetime):
        return _to_us(value)
    return _to_us(datetime.fromisoformat(value))


# --- file and member names ----------------------------------------------------------------------------------


class Member(NamedTuple):
    """One export file: its zip member name, where it is on disk, and what its name says."""

    name: str
    path: Path
    app: int
    hour: datetime
    part: int


def member_name(app: int, hour: datetime, part: int) -> str:
    """Zip member name of an upload hour's part: ``187520/187520_2024-03-02_5#0.json.gz``."""
    hour = to_utc(hour)
    return f"{app}/{app}_{hour:%Y-%m-%d}_{hour.hour}#{part}.json.gz"


def parse_member_name(name: str) -> tuple[int, datetime, int] | None:
    """``(app, upload hour, part)`` from a member or file name, ``None`` when it is not an export file."""
    match = MEMBER_PATTERN.match(name.rsplit("/", 1)[-1])
    if match is None:
        return None
    hour = datetime.strptime(match["date"], "%Y-%m-%d").replace(hour=int(match["hour"]), tzinfo=UTC)
    return int(match["app"]), hour, int(match["part"])


def list_members(
    data_dir: Path, start_hour: datetime | None = None, end_hour: datetime | None = None
) -> list[Member]:
    """Export files under ``data_dir/<app>/`` whose upload hour is in ``[start_hour, end_hour]``, in order."""
    first = floor_hour(start_hour) if start_hour is not None else None
    last = floor_hour(end_hour) if end_hour is not None else None
    members = []
    for path in Path(data_dir).glob("*/*.json.gz"):
        parsed = parse_member_name(path.name)
        if parsed is None or path.parent.name != str(parsed[0]):
            continue
        app, hour, part = parsed
        if (first is None or hour >= first) and (last is None or hour <= last):
            members.append(Member(member_name(app, hour, part), path, app, hour, part))
    return sorted(members, key=lambda member: (member.hour, member.app, member.part))


def write_zip(
    target: Path | IO[bytes], members: Iterable[Member], replace: Mapping[str, bytes] | None = None
) -> int:
    """Zip ``members`` (STORED, they are gzip already) into ``target``; ``replace`` swaps a member's bytes."""
    replace = replace or {}
    count = 0
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as archive:
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=member.hour.timetuple()[:6])
            info.external_attr = 0o644 << 16
            if member.name in replace:
                archive.writestr(info, replace[member.name])
            else:
                info.file_size = member.path.stat().st_size
                with member.path.open("rb") as source, archive.open(info, "w") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
            count += 1
    return count


def write_export_zip(
    data_dir: Path, zip_path: Path, start_hour: datetime | None = None, end_hour: datetime | None = None
) -> int:
    """Zip the export files of upload hours ``[start_hour, end_hour]`` (all when ``None``) as the Export API.

    Returns the number of members. Amplitude's UI download and S3 export use the same member format.
    """
    return write_zip(Path(zip_path), list_members(data_dir, start_hour, end_hour))


def _write_hour(
    data_dir: Path, app: int, hour: datetime, lines: list[bytes], events_per_part: int
) -> list[Path]:
    """Write one upload hour's lines as parts after the parts already on disk."""
    folder = Path(data_dir) / str(app)
    folder.mkdir(parents=True, exist_ok=True)
    part = 0
    while (folder / member_name(app, hour, part).rsplit("/", 1)[1]).exists():
        part += 1
    paths = []
    for offset in range(0, len(lines), events_per_part):
        path = folder / member_name(app, hour, part).rsplit("/", 1)[1]
        data = b"".join(lines[offset : offset + events_per_part])
        path.write_bytes(gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0))
        paths.append(path)
        part += 1
    return paths


def write_events(
    data_dir: Path, events: Iterable[dict], *, events_per_part: int = EVENTS_PER_PART
) -> list[Path]:
    """Write records to export files, bucketed by ``app`` and ``server_upload_time`` hour, in the given order.

    A new part starts every ``events_per_part`` lines. Parts already on disk for an hour are kept and new
    parts are numbered after them. Returns the files written, in upload-hour order.
    """
    buckets: dict[tuple[int, datetime], list[bytes]] = defaultdict(list)
    for event in events:
        upload = event["server_upload_time"]
        upload_time = upload if isinstance(upload, datetime) else datetime.fromisoformat(upload)
        buckets[int(event["app"]), floor_hour(upload_time)].append(orjson.dumps(event) + b"\n")
    paths = []
    for (app, hour), lines in sorted(buckets.items(), key=lambda item: (item[0][1], item[0][0])):
        paths.extend(_write_hour(data_dir, app, hour, lines, events_per_part))
    return paths


# --- one event ----------------------------------------------------------------------------------------------

_DEFAULT_CLIENT_EVENT_TIME = "2024-03-02 05:03:12.123000"
_event_ids = itertools.count(1)


def _uuid_text(bits: int) -> str:
    """A version-4 UUID string from 128 random bits."""
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-4{text[13:16]}-{'89ab'[int(text[16], 16) & 3]}{text[17:20]}-{text[20:]}"


def _data(updated: bool, path: str = "/batch") -> dict[str, object]:
    return {"path": path, "user_properties_updated": updated, "group_first_event": {}, "group_ids": {}}


def _event_time_us(client_event: int, client_upload: int, server_received: int) -> int:
    """Amplitude's ``event_time``: client time corrected by the clock gap, unless the gap is under 60 s."""
    gap = server_received - client_upload
    return client_event + gap if abs(gap) >= EVENT_TIME_TOLERANCE_US else client_event


def make_event(**overrides: object) -> dict:
    """One export record with all 55 keys; ``overrides`` replace defaults (use ``**{"$insert_id": ...}``).

    Timestamps may be given as export text or datetimes (naive = UTC). Unset timestamps follow the given
    ``client_event_time`` and/or ``server_upload_time``: a one-event session uploaded within seconds, and
    ``event_time`` by Amplitude's rule. ``session_id`` defaults to the client event time in ms.
    """
    unknown = set(overrides) - set(EVENT_KEYS)
    if unknown:
        raise TypeError(f"not export keys: {sorted(unknown)}")
    given = {
        key: _format_us(_parse_us(value)) if key in TIMESTAMP_KEYS and isinstance(value, datetime) else value
        for key, value in overrides.items()
    }
    times = {key: _parse_us(given[key]) for key in TIMESTAMP_KEYS if isinstance(given.get(key), str)}
    if "client_event_time" not in times:
        if "server_upload_time" in times:
            times["client_event_time"] = times["server_upload_time"] - 2 * SECOND_US
        else:
            times["client_event_time"] = _parse_us(_DEFAULT_CLIENT_EVENT_TIME)
    client_event = times["client_event_time"]
    upload = times.setdefault(
        "server_upload_time",
        max(
            client_event + 2 * SECOND_US,
            times.get("client_upload_time", 0) + 500_000,
            times.get("server_received_time", 0) + 300_000,
        ),
    )
    client_upload = times.setdefault("client_upload_time", max(client_event, upload - 500_000))
    received = times.setdefault("server_received_time", max(client_upload, upload - 300_000))
    times.setdefault("processed_time", upload + 1_200_000)
    times.setdefault("event_time", _event_time_us(client_event, client_upload, received))
    times.setdefault("user_creation_time", _parse_us("2023-06-14 09:21:44.512000"))
    event = {
        "$insert_id": str(uuid.uuid4()),
        "$insert_key": None,
        "$schema": None,
        "adid": None,
        "amplitude_attribution_ids": None,
        "amplitude_event_type": None,
        "amplitude_id": 550106004607,
        "app": DEFAULT_APP,
        "city": "San Francisco",
        "country": "United States",
        "data": _data(True),
        "data_type": "event",
        "device_brand": None,
        "device_carrier": None,
        "device_family": "Mac",
        "device_id": "6c4a4c1e-3f8b-4f0e-9a57-2f1e8b7d9c10",
        "device_manufacturer": None,
        "device_model": None,
        "device_type": "Mac",
        "dma": "San Francisco-Oakland-San Jose, CA",
        "event_id": next(_event_ids),
        "event_properties": {"path": "/dashboards"},
        "event_type": "page_view",
        "global_user_properties": None,
        "group_properties": {},
        "groups": {},
        "idfa": None,
        "ip_address": "198.51.100.23",
        "is_attribution_event": None,
        "language": "English",
        "library": "amplitude-ts/2.11.3",
        "location_lat": None,
        "location_lng": None,
        "os_name": "Chrome",
        "os_version": "122",
        "partner_id": None,
        "paying": True,
        "plan": {},
        "platform": "Web",
        "region": "California",
        "sample_rate": None,
        "session_id": client_event // 1000,
        "source_id": None,
        "start_version": None,
        "user_id": "user-000001",
        "user_properties": {"plan": "pro", "user_type": "team", "company_size": "11-50"},
        "uuid": str(uuid.uuid4()),
        "version_name": None,
    }
    event.update({key: _format_us(us) for key, us in times.items()})
    event.update(given)
    return {key: event[key] for key in EVENT_KEYS}


# --- simulated population -----------------------------------------------------------------------------------

#: (country, language, ((city, region, DMA), ...), weight); all choice tables end with a weight.
_COUNTRIES: tuple[tuple[str, str, tuple[tuple[str, str, str | None], ...], float], ...] = (
    (
        "United States",
        "English",
        (
            ("San Francisco", "California", "San Francisco-Oakland-San Jose, CA"),
            ("New York", "New York", "New York, NY"),
            ("Austin", "Texas", "Austin, TX"),
            ("Seattle", "Washington", "Seattle-Tacoma, WA"),
            ("Chicago", "Illinois", "Chicago, IL"),
        ),
        38,
    ),
    ("United Kingdom", "English", (("London", "England", None), ("Manchester", "England", None)), 10),
    ("Germany", "German", (("Berlin", "Land Berlin", None), ("Munich", "Bavaria", None)), 9),
    ("India", "English", (("Bengaluru", "Karnataka", None), ("Mumbai", "Maharashtra", None)), 9),
    ("France", "French", (("Paris", "Île-de-France", None), ("Lyon", "Auvergne-Rhône-Alpes", None)), 6),
    ("Canada", "English", (("Toronto", "Ontario", None), ("Vancouver", "British Columbia", None)), 6),
    ("Brazil", "Portuguese", (("São Paulo", "São Paulo", None),), 6),
    ("Japan", "Japanese", (("Tokyo", "Tokyo", None),), 5),
    ("Australia", "English", (("Sydney", "New South Wales", None),), 4),
    ("Netherlands", "Dutch", (("Amsterdam", "North Holland", None),), 4),
    ("Spain", "Spanish", (("Madrid", "Madrid", None),), 3),
)
_PLANS = (("free", 55), ("starter", 20), ("pro", 18), ("enterprise", 7))
_PLAN_UPGRADES = {"free": "starter", "starter": "pro", "pro": "enterprise"}
_USER_TYPES = (("individual", 45), ("team", 45), ("admin", 10))
_COMPANY_SIZES = (("1-10", 30), ("11-50", 30), ("51-200", 20), ("201-1000", 12), ("1000+", 8))
_PLATFORMS = (("Web", 55), ("iOS", 25), ("Android", 20))
_BROWSERS = (("Chrome", "122", 62), ("Safari", "17.3", 20), ("Edge", "121", 10), ("Firefox", "123", 8))
_DESKTOPS = (("Mac", 45), ("Windows", 45), ("Linux", 10))
#: (brand, manufacturer, model, family)
_IPHONES = (
    ("Apple", "Apple", "iPhone15,2", "Apple iPhone 14 Pro"),
    ("Apple", "Apple", "iPhone14,5", "Apple iPhone 13"),
    ("Apple", "Apple", "iPhone16,1", "Apple iPhone 15 Pro"),
    ("Apple", "Apple", "iPad13,18", "Apple iPad"),
)
_ANDROIDS = (
    ("samsung", "samsung", "SM-S918B", "Samsung Galaxy S23 Ultra"),
    ("google", "Google", "Pixel 8", "Google Pixel 8"),
    ("xiaomi", "Xiaomi", "2201116SG", "Xiaomi Redmi Note 11"),
    ("samsung", "samsung", "SM-A546B", "Samsung Galaxy A54"),
)
_CARRIERS = ("Verizon", "AT&T", "T-Mobile", "Vodafone", "O2", "Orange", "Telekom", "Jio")
_APP_VERSIONS = ("4.12.0", "4.13.1", "4.14.0", "4.15.2")
_LIBRARIES = {
    "Web": "amplitude-ts/2.11.3",
    "iOS": "amplitude-swift/1.4.4",
    "Android": "amplitude-analytics-android/1.16.7",
}
_PAGES = ("/home", "/dashboards", "/dashboards/42", "/reports", "/settings", "/search", "/team", "/billing")
_FEATURES = ("dark_mode", "shortcuts", "templates", "alerts", "sharing", "ai_summary", "annotations")
#: (event type, weight, properties)
_PRODUCT_EVENTS: tuple[tuple[str, float, Callable[[random.Random], dict[str, object]]], ...] = (
    ("page_view", 30, lambda rng: {"path": rng.choice(_PAGES)}),
    ("feature_used", 18, lambda rng: {"feature": rng.choice(_FEATURES)}),
    ("dashboard_viewed", 12, lambda rng: {"dashboard_id": rng.randint(1, 400)}),
    ("search", 9, lambda rng: {"query_length": rng.randint(1, 40), "results": rng.randint(0, 120)}),
    ("filter_applied", 8, lambda rng: {"filter": rng.choice(("date", "country", "plan", "platform"))}),
    ("chart_created", 5, lambda rng: {"chart_type": rng.choice(("line", "bar", "table", "pie"))}),
    ("comment_added", 3, lambda rng: {"length": rng.randint(3, 400)}),
    (
        "export_report",
        3,
        lambda rng: {"format": rng.choice(("csv", "pdf", "xlsx")), "rows": rng.randint(1, 50000)},
    ),
    ("notification_clicked", 2, lambda rng: {"channel": "in_app"}),
    ("invite_sent", 1.5, lambda rng: {"role": rng.choice(("viewer", "editor", "admin"))}),
    ("settings_updated", 1.5, lambda rng: {"section": rng.choice(("profile", "notifications", "security"))}),
)
_PRODUCT_CUM_WEIGHTS = tuple(itertools.accumulate(weight for _, weight, _ in _PRODUCT_EVENTS))
_PRODUCT_PROPERTIES = {name: make for name, _, make in _PRODUCT_EVENTS}
_SERVER_EVENTS = ("subscription_renewed", "invoice_paid", "email_opened", "trial_reminder_sent")
#: Session-start weight per UTC hour (the product's users are mostly in Europe and the Americas).
_HOURLY_WEIGHTS = (
    0.45, 0.38, 0.33, 0.32, 0.36, 0.45, 0.60, 0.75, 0.90, 1.00, 1.05, 1.10,
    1.15, 1.20, 1.25, 1.30, 1.28, 1.20, 1.05, 0.90, 0.80, 0.70, 0.60, 0.52,
)  # fmt: skip
_WEEKDAY_WEIGHTS = (1.0, 1.02, 1.03, 1.0, 0.92, 0.55, 0.6)
#: Empirical mean number of events per ordinary session (calibrates the session count to ``events``).
_MEAN_SESSION_EVENTS = 10.0
_SESSIONS_PER_USER = 6


def _weighted(rng: random.Random, options: tuple[tuple, ...]) -> tuple:
    """One option of ``(value..., weight)`` tuples, drawn by weight."""
    return rng.choices(options, weights=[option[-1] for option in options])[0]


@dataclass(slots=True)
class _Device:
    """A device with its static export fields (``base``) and SDK behaviour."""

    base: dict[str, object]
    mobile: bool
    tracks_sessions: bool
    max_gap_us: int
    skew_us: int
    event_id: int = 0


@dataclass(slots=True)
class _User:
    """A user (or anonymous visitor) and their devices; ``properties`` change when the plan changes."""

    user_id: str | None
    amplitude_id: int
    properties: dict[str, str]
    devices: list[_Device]
    seen: bool = False


def _make_device(rng: random.Random, user_fields: dict[str, object], platform: str, skew: bool) -> _Device:
    base = dict.fromkeys(EVENT_KEYS)
    base.update(user_fields)
    base.update(data_type="event", plan={}, groups={}, group_properties={}, library=_LIBRARIES[platform])
    base["platform"] = platform
    base["ip_address"] = (
        f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    )
    mobile = platform != "Web"
    if mobile:
        models = _IPHONES if platform == "iOS" else _ANDROIDS
        brand, manufacturer, model, family = rng.choice(models)
        start_version = rng.choice(_APP_VERSIONS)
        base.update(
            device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            os_name="ios" if platform == "iOS" else "android",
            os_version=rng.choice(("17.3.1", "17.4", "16.7.5") if platform == "iOS" else ("14", "13", "12")),
            device_brand=brand,
            device_manufacturer=manufacturer,
            device_model=model,
            device_family=family,
            device_type=family,
            device_carrier=rng.choice(_CARRIERS) if rng.random() < 0.85 else None,
            start_version=start_version,
            version_name=rng.choice([v for v in _APP_VERSIONS if v >= start_version]),
        )
        if platform == "iOS" and rng.random() < 0.1:
            base["idfa"] = str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()
        if platform == "Android" and rng.random() < 0.2:
            base["adid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    else:
        browser, version, _ = _weighted(rng, _BROWSERS)
        desktop = _weighted(rng, _DESKTOPS)[0]
        base.update(
            device_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            os_name=browser,
            os_version=version,
            device_family=desktop,
            device_type=desktop,
        )
    if rng.random() < 0.02:
        base["os_version"] = None
    skew_us = 0
    if skew and rng.random() < 0.02:
        skew_us = rng.choice((-1, 1)) * rng.randint(2 * MINUTE_US // 1000, 45 * MINUTE_US // 1000) * 1000
    return _Device(
        base=base,
        mobile=mobile,
        tracks_sessions=mobile or rng.random() < 0.6,
        max_gap_us=(4 if mobile else 25) * MINUTE_US,
        skew_us=skew_us,
        event_id=rng.randint(1, 500),
    )


def _make_user(rng: random.Random, index: int, app: int, start_us: int, skew: bool) -> _User:
    anonymous = index % 8 == 7
    country, language, places, _ = _weighted(rng, _COUNTRIES)
    city, region, dma = rng.choice(places)
    if rng.random() < 0.01:
        country = city = region = dma = None
    fields: dict[str, object] = {
        "app": app,
        "country": country,
        "city": city if rng.random() > 0.05 else None,
        "region": region if rng.random() > 0.03 else None,
        "dma": dma,
        "language": language if rng.random() > 0.03 else None,
        "amplitude_id": 400_000_000_000 + index * 1000 + rng.randrange(1000),
        "user_id": None if anonymous else f"user-{index + 1:06d}",
        # Signup cohorts over the 12 months before the dataset, more of them recently.
        "user_creation_time": _format_us(
            start_us - int(365 * DAY_US * (1 - math.sqrt(rng.random()))) // 1000 * 1000
        ),
    }
    if anonymous:
        properties: dict[str, str] = {}
        platforms = ["Web"]
    else:
        plan = _weighted(rng, _PLANS)[0]
        user_type = _weighted(rng, _USER_TYPES)[0]
        properties = {"plan": plan, "user_type": user_type}
        if user_type != "individual":
            sizes = _COMPANY_SIZES[3:] if plan == "enterprise" else _COMPANY_SIZES
            properties["company_size"] = _weighted(rng, sizes)[0]
        platforms = [_weighted(rng, _PLATFORMS)[0]]
        if rng.random() < 0.2:
            platforms.append("Web" if platforms[0] != "Web" else rng.choice(("iOS", "Android")))
    devices = [_make_device(rng, fields, platform, skew) for platform in platforms]
    return _User(fields["user_id"], fields["amplitude_id"], properties, devices)


def _session_size(rng: random.Random) -> int:
    """Events in an ordinary session: many short sessions, a long tail, ~15 % single events."""
    if rng.random() < 0.15:
        return 1
    return min(500, 2 + int(rng.lognormvariate(1.9, 0.9)))


# --- simulation ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSummary:
    """What ``generate_dataset`` wrote."""

    events: int
    sessions: int
    users: int
    first_upload_hour: datetime | None
    last_upload_hour: datetime | None
    files: tuple[Path, ...]
    bytes_written: int


class _HourBuckets:
    """Encoded lines per upload hour, written out once no later event can land in the hour."""

    def __init__(self, data_dir: Path, app: int, events_per_part: int) -> None:
        self.data_dir, self.app, self.events_per_part = data_dir, app, events_per_part
        self.pending: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
        self.files: list[Path] = []
        self.hours: list[int] = []
        self.events = 0

    def add(self, upload_us: int, line: bytes) -> None:
        self.pending[upload_us // HOUR_US].append((upload_us, line))
        self.events += 1

    def flush_before(self, hour: float) -> None:
        """Write every hour before ``hour`` (hours since the epoch)."""
        for done in sorted(h for h in self.pending if h < hour):
            rows = self.pending.pop(done)
            rows.sort(key=itemgetter(0))
            lines = [line for _, line in rows]
            hour_start = _from_us(done * HOUR_US)
            self.files.extend(_write_hour(self.data_dir, self.app, hour_start, lines, self.events_per_part))
            self.hours.append(done)


class _Simulation:
    """Users having sessions; every event goes straight to the hour buckets."""

    def __init__(
        self, rng: random.Random, users: list[_User], buckets: _HourBuckets, max_late_us: int
    ) -> None:
        self.rng, self.users, self.buckets, self.max_late_us = rng, users, buckets, max_late_us
        weights = [rng.lognormvariate(0, 1.0) * (0.3 if user.user_id is None else 1.0) for user in users]
        self.cum_weights = list(itertools.accumulate(weights))
        self.anonymous = [index for index, user in enumerate(users) if user.user_id is None]
        self.ordinal = 0
        self.sessions = 0

    def pick_user(self) -> _User:
        point = self.rng.random() * self.cum_weights[-1]
        return self.users[min(bisect.bisect(self.cum_weights, point), len(self.users) - 1)]

    def emit(
        self,
        user: _User,
        device: _Device,
        event_type: str,
        properties: dict[str, object],
        client_us: int,
        upload_us: int,
        session_id: int,
    ) -> None:
        """Encode one event logged at true time ``client_us`` and sent at true time ``upload_us``."""
        rng = self.rng
        received = upload_us + 40_000 + int(rng.random() * 360_000) // 1000 * 1000
        server_upload = received + 5_000 + int(rng.random() * 1_500_000) // 1000 * 1000
        client_event = client_us + device.skew_us
        client_upload = upload_us + device.skew_us
        record = device.base.copy()
        device.event_id += 1
        record["$insert_id"] = _uuid_text(rng.getrandbits(128))
        record["uuid"] = _uuid_text(rng.getrandbits(128))
        record["event_id"] = device.event_id
        record["event_type"] = event_type
        record["event_properties"] = properties
        record["user_properties"] = user.properties
        record["paying"] = True if user.properties.get("plan", "free") != "free" else None
        record["session_id"] = session_id
        record["client_event_time"] = _format_us(client_event)
        record["client_upload_time"] = _format_us(client_upload)
        record["server_received_time"] = _format_us(received)
        record["server_upload_time"] = _format_us(server_upload)
        record["processed_time"] = _format_us(server_upload + 200_000 + int(rng.random() * 15_000) * 1000)
        record["event_time"] = _format_us(_event_time_us(client_event, client_upload, received))
        record["data"] = _data(
            not user.seen, "/2/httpapi" if device.base["library"] == "http/2.0" else "/batch"
        )
        user.seen = True
        self.buckets.add(server_upload, orjson.dumps(record) + b"\n")

    def session(
        self,
        user: _User,
        device: _Device,
        start_us: int,
        size: int,
        *,
        session_id: int | None = None,
        min_span_us: int = 0,
        late_cut: int | None = None,
        late_by_us: int | None = None,
        upgrade: bool = False,
    ) -> None:
        """One session of ``size`` events starting at true time ``start_us``.

        ``min_span_us`` stretches it (evenly spaced events); events from index ``late_cut`` on are uploaded in
        one offline batch ``late_by_us`` (default: random hours) after the last one; ``upgrade`` changes the
        user's plan half-way.
        """
        rng = self.rng
        self.sessions += 1
        if min_span_us:
            size = max(size, 3, 2 + min_span_us // (device.max_gap_us * 6 // 10))
            mean_gap = min_span_us / (size - 1)
            gaps = [int(mean_gap * (0.5 + rng.random())) // 1000 * 1000 for _ in range(size - 1)]
            scale = min_span_us / max(1, sum(gaps))
            gaps = [max(1000, int(gap * scale) // 1000 * 1000 + 1000) for gap in gaps]
        else:
            gaps = [
                min(device.max_gap_us, int(rng.lognormvariate(9.9, 1.2)) * 1000 + 1000)
                for _ in range(size - 1)
            ]
        times = list(itertools.accumulate(gaps, initial=start_us))
        types: list[str] = []
        with_markers = device.tracks_sessions and (size > 1 or rng.random() < 0.7)
        for index in range(size):
            if with_markers and index == 0:
                types.append("session_start")
            elif with_markers and index == size - 1:
                types.append("session_end")
            elif not types and not device.mobile:
                types.append("page_view")
            else:
                point = rng.random() * _PRODUCT_CUM_WEIGHTS[-1]
                types.append(_PRODUCT_EVENTS[bisect.bisect(_PRODUCT_CUM_WEIGHTS, point)][0])
        if with_markers and size > 2:  # session_end is logged right after the last event
            times[-1] = times[-2] + rng.randint(1, 500) * 1000
        upgrade_at = (
            size // 2 if upgrade and size >= 4 and user.properties.get("plan") in _PLAN_UPGRADES else None
        )
        if upgrade_at is not None:
            types[upgrade_at] = "plan_upgraded"
        batch_us = self._late_batch(device, times, late_cut, late_by_us) if late_cut is not None else None
        session_id = (start_us + device.skew_us) // 1000 if session_id is None else session_id
        upload_delay = (500_000, 30_000_000) if device.mobile else (50_000, 1_500_000)
        for index, (event_type, client_us) in enumerate(zip(types, times, strict=True)):
            properties: dict[str, object] = {}
            if index == upgrade_at:
                old = user.properties["plan"]
                user.properties = {**user.properties, "plan": _PLAN_UPGRADES[old]}
                user.seen = False  # so this event says user_properties_updated
                properties = {"from_plan": old, "to_plan": user.properties["plan"]}
            elif event_type not in ("session_start", "session_end"):
                properties = _PRODUCT_PROPERTIES[event_type](rng)
            if batch_us is not None and index >= late_cut:
                upload_us = batch_us + index * 1000
            else:
                upload_us = client_us + rng.randint(*upload_delay) // 1000 * 1000
            self.emit(user, device, event_type, properties, client_us, upload_us, session_id)

    def _late_batch(
        self, device: _Device, times: list[int], late_cut: int, late_by_us: int | None
    ) -> int | None:
        """True upload time of an offline batch: every event stays within ``max_late_us`` of its upload, by
        the server's clock and by the device's (``None`` when the session is too long for that)."""
        latest = times[late_cut] + min(0, device.skew_us) + self.max_late_us - 2 * MINUTE_US
        if latest <= times[-1] + MINUTE_US:
            return None
        if late_by_us is None:
            late_by_us = HOUR_US + int(self.rng.expovariate(1 / (5 * HOUR_US)))
        return min(times[-1] + late_by_us, latest) // 1000 * 1000

    def out_of_session(self, user: _User, after_us: int) -> None:
        """A ``session_id = -1`` event: a push received on the phone, or a server-side event."""
        rng = self.rng
        at = after_us + rng.randint(1, 180 * 60_000) * 1000
        mobile = next((device for device in user.devices if device.mobile), None)
        if mobile is not None and rng.random() < 0.5:
            properties = {"campaign": rng.choice(("weekly_digest", "mention", "alert_triggered"))}
            upload = at + rng.randint(500, 30_000) * 1000
            self.emit(user, mobile, "push_notification_received", properties, at, upload, -1)
            return
        device = user.devices[0]
        base = dict.fromkeys(EVENT_KEYS)
        base.update(
            app=device.base["app"],
            amplitude_id=user.amplitude_id,
            user_id=user.user_id,
            device_id=device.base["device_id"],
            user_creation_time=device.base["user_creation_time"],
            data_type="event",
            library="http/2.0",
            plan={},
            groups={},
            group_properties={},
        )
        server = _Device(base=base, mobile=False, tracks_sessions=False, max_gap_us=0, skew_us=0)
        event_type = rng.choice(_SERVER_EVENTS)
        upload = at + rng.randint(50, 900) * 1000
        self.emit(user, server, event_type, {"source": "billing"}, at, upload, -1)

    def start(self, start_us: int, last_of_day_hour: bool, is_last: bool) -> None:
        """Everything that starts at ``start_us``: a session, plus the scenarios its ordinal calls for."""
        rng = self.rng
        ordinal, self.ordinal = self.ordinal, self.ordinal + 1
        block = ordinal % 200
        user = self.users[rng.choice(self.anonymous)] if block == 50 else self.pick_user()
        device = user.devices[0] if len(user.devices) == 1 or rng.random() < 0.75 else user.devices[1]
        size = 1 if block == 70 else _session_size(rng)
        options: dict[str, object] = {}
        if ordinal % 5000 == 30:  # a session longer than a day (an always-open dashboard)
            device = next((d for d in user.devices if not d.mobile), device)
            options["min_span_us"] = 24 * HOUR_US + rng.randint(30, 360) * MINUTE_US
        elif last_of_day_hour and is_last:  # the day's last session runs past midnight
            midnight = (start_us // DAY_US + 1) * DAY_US
            options["min_span_us"] = midnight - start_us + rng.randint(60, 900) * SECOND_US
        elif ordinal % 1000 == 90:  # uploaded as late as allowed
            size = max(size, 4)
            options.update(late_cut=0, late_by_us=self.max_late_us)
        elif block == 130 or (
            rng.random() < (0.14 if device.mobile else 0.03)
        ):  # offline: part uploaded late
            size = max(size, 4) if block == 130 else size
            options["late_cut"] = size // 2 if block == 130 else rng.randrange(size)
        if ordinal % 300 == 120 and user.user_id is not None:
            size = max(size, 6)
            options["upgrade"] = True
        self.session(user, device, start_us, size, **options)
        if block == 10:  # another user's session with the same session_id
            other = self.pick_user()
            while other is user:
                other = self.users[rng.randrange(len(self.users))]
            session_id = (start_us + device.skew_us) // 1000
            self.session(other, other.devices[0], start_us, _session_size(rng), session_id=session_id)
        if ordinal % 25 == 13 or rng.random() < 0.01:
            self.out_of_session(user, start_us)


def _session_starts(
    rng: random.Random, start_us: int, end_us: int, sessions: int
) -> Iterable[tuple[int, list[int]]]:
    """Per UTC hour of ``[start_us, end_us)``: sorted session starts, ``sessions`` in all, by daily rhythm."""
    first_hour, last_hour = start_us // HOUR_US, (end_us - 1) // HOUR_US
    spans = []
    for hour in range(first_hour, last_hour + 1):
        low, high = max(start_us, hour * HOUR_US), min(end_us, (hour + 1) * HOUR_US)
        if high // 1000 <= low // 1000:
            continue
        moment = _from_us(hour * HOUR_US)
        weight = _HOURLY_WEIGHTS[moment.hour] * _WEEKDAY_WEIGHTS[moment.weekday()] * (high - low) / HOUR_US
        spans.append((hour, low, high, weight))
    total = sum(weight for *_, weight in spans) or 1.0
    expected = 0.0
    allotted = 0
    for hour, low, high, weight in spans:
        expected += sessions * weight / total
        count = round(expected) - allotted
        allotted += count
        yield hour, sorted(rng.randrange(low // 1000, high // 1000) * 1000 for _ in range(count))


def generate_dataset(
    data_dir: Path,
    start: datetime,
    end: datetime,
    *,
    events: int,
    seed: int = 0,
    app: int = DEFAULT_APP,
    max_late_hours: int = 36,
    events_per_part: int = EVENTS_PER_PART,
) -> DatasetSummary:
    """Write a realistic, seeded dataset of about ``events`` events whose sessions start in ``[start, end)``.

    Files go to ``data_dir/<app>/`` by upload hour. Scenarios are placed by session ordinal, so every dataset
    of a few thousand events holds: out-of-session events (``session_id = -1``), a ``session_id`` shared by
    two users, a session over 24 h (every 5000 sessions, from the 31st), anonymous users (``user_id`` null),
    uploads up to ``max_late_hours`` late (~3-5 % of events), sessions uploaded across several hours, a plan
    upgrade mid-session, single-event sessions, and (each UTC day in range) a session across midnight.
    Start times are true (server) time; ~2 % of devices have a clock off by 2-45 min, so their client-side
    times and ``session_id`` carry that skew while ``event_time`` is corrected by Amplitude's rule. Memory
    stays bounded: an upload hour is written as soon as no later event can land in it.
    """
    rng = random.Random(seed)
    start_us, end_us = _to_us(start), _to_us(end)
    if end_us <= start_us:
        raise ValueError("end must be after start")
    sessions = max(1, round(events / _MEAN_SESSION_EVENTS))
    skew = max_late_hours >= 1
    users = [
        _make_user(rng, index, app, start_us, skew) for index in range(max(8, sessions // _SESSIONS_PER_USER))
    ]
    buckets = _HourBuckets(Path(data_dir), app, events_per_part)
    simulation = _Simulation(rng, users, buckets, max_late_hours * HOUR_US)
    for hour, starts in _session_starts(rng, start_us, end_us, sessions):
        buckets.flush_before(hour)
        last_of_day_hour = hour % 24 == 23
        for index, start_at in enumerate(starts):
            simulation.start(start_at, last_of_day_hour, index == len(starts) - 1)
    buckets.flush_before(math.inf)
    hours = sorted(buckets.hours)
    return DatasetSummary(
        events=buckets.events,
        sessions=simulation.sessions,
        users=len(users),
        first_upload_hour=_from_us(hours[0] * HOUR_US) if hours else None,
        last_upload_hour=_from_us(hours[-1] * HOUR_US) if hours else None,
        files=tuple(buckets.files),
        bytes_written=sum(path.stat().st_size for path in buckets.files),
    )


# --- command line -------------------------------------------------------------------------------------------


def sample_window(days: int, now: datetime) -> tuple[datetime, datetime, datetime]:
    """``(start, end, last_upload_hour)`` of a sample exported at ``now``: sessions start in ``days`` whole UTC
    days ``[start, end)``, ``end`` being the midnight at or before the end of the newest exportable hour, and
    the export holds the upload hours through that newest exportable hour (late uploads included)."""
    end = whole_days_end(now)
    return end - timedelta(days=days), end, newest_exportable_hour(now)


def main(argv: list[str] | None = None) -> None:
    """Write a zip of ``--days`` whole UTC days of generated events, shaped like an Export API answer."""
    parser = argparse.ArgumentParser(
        prog="python -m shillelagh_amplitude.sample.generator", description=main.__doc__
    )
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--app", type=int, default=DEFAULT_APP)
    parser.add_argument("--out", type=Path, required=True, help="zip file to write")
    parser.add_argument(
        "--now", default="now", help="when the export is made: 'now' or an ISO time, e.g. 2024-03-02T05:00"
    )
    args = parser.parse_args(argv)
    now = datetime.now(UTC) if args.now == "now" else to_utc(datetime.fromisoformat(args.now))
    start, end, last_upload_hour = sample_window(args.days, now)
    with tempfile.TemporaryDirectory() as data_dir:
        summary = generate_dataset(
            Path(data_dir), start, end, events=args.events, seed=args.seed, app=args.app
        )
        # Like a real export made at ``now``: the upload hours Amplitude can serve, nothing newer.
        members = write_export_zip(Path(data_dir), args.out, start, last_upload_hour)
    print(
        f"{args.out}: {members} files, {summary.events} events, {summary.sessions} sessions started "
        f"{start:%Y-%m-%d} .. {end - timedelta(days=1):%Y-%m-%d} (UTC days), uploads through {last_upload_hour}"
    )


if __name__ == "__main__":
    main()
