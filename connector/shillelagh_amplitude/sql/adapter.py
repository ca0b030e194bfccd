"""A safe shillelagh adapter serving ``amplitude_events`` and ``amplitude_sessions`` from Amplitude's Export API.

Time predicates are pushed down and filtered exactly here (``exact=True``): shillelagh hands SQLite timestamps as
ISO text with a ``T``, which SQLite would compare as text against Superset's ``'YYYY-MM-DD HH:MM:SS'`` literals and
get sub-day bounds wrong. Naive literals are UTC, zoned ones are converted, so both forms mix in one query. Only the
upload hours a query needs are read: from the local hour store, downloading the missing ones first. Tables built
from the store are kept in a small process-wide cache, so the repeated scans that ``IN`` lists and joins cause
never download or decode twice.

:meth:`AmplitudeAPI.select` serves both row paths: the columnar cursor of ``amplitude://`` (:mod:`.columnar`) and
shillelagh's generic one (``get_rows``, for ``shillelagh+safe://``).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from shillelagh.adapters.base import Adapter
from shillelagh.exceptions import OperationalError, ProgrammingError
from shillelagh.fields import Boolean, DateTime, Field, Float, Integer, String
from shillelagh.filters import Filter, Impossible, Operator, Range
from shillelagh.typing import RequestedOrder, Row

from .. import __version__
from ..export.client import (
    AmplitudeError,
    AmplitudeFault,
    AuthenticationError,
    DeadlinePassed,
    ExportClient,
    Window,
    resolve_base_url,
)
from ..export.loader import DownloadBudgetExceeded, fill
from ..hours import (
    CLOCK_SKEW,
    HOUR,
    ceil_hour,
    floor_hour,
    hour_range,
    newest_exportable_hour,
    to_utc,
    whole_days_end,
)
from ..schema import EVENT_SCHEMA, TIMESTAMP
from ..store.hour_store import HourStore
from ..store.location import FileEntry
from .budget import QueryClock
from .freshness import budget_message, check_offline
from .scan import NO_ROWS, TABLE_CACHE, ScanTable, Selection, TimeRange, read_checked
from .sessions import EVENT_COLUMNS, MAX_LENGTH_S, SESSION_SCHEMA, build_sessions

_logger = logging.getLogger(__name__)

EVENTS_TABLE = "amplitude_events"
SESSIONS_TABLE = "amplitude_sessions"
MAX_QUERY_DAYS = 365


class UTCDateTime(DateTime):
    """A TIMESTAMP column whose pushed-down bounds are aware UTC datetimes: naive literals are UTC.

    shillelagh parses each bound, then calls the column's ``format``; making every bound aware here lets a query
    mix naive and zoned literals (``>= '2026-03-03' AND < '2026-03-10T00:00:00+00:00'``) in one range.
    """

    def format(self, value: datetime | None) -> datetime | None:
        return None if value is None else to_utc(value)


def _field(arrow_type: pa.DataType, filterable: bool = False) -> Field:
    """The shillelagh field of an Arrow column; filterable timestamps take exact ``Range`` filters."""
    if arrow_type == TIMESTAMP:
        return UTCDateTime(filters=[Range], exact=True) if filterable else UTCDateTime()
    if pa.types.is_integer(arrow_type):
        return Integer()
    if pa.types.is_floating(arrow_type):
        return Float()
    if pa.types.is_boolean(arrow_type):
        return Boolean()
    return String()


@dataclass(frozen=True)
class TableSpec:
    """What one table serves: its schema and which timestamp columns take pushed-down ranges."""

    schema: pa.Schema
    time_columns: tuple[str, ...]

    def columns(self) -> dict[str, Field]:
        return {f.name: _field(f.type, f.name in self.time_columns) for f in self.schema}


TABLES = {
    EVENTS_TABLE: TableSpec(EVENT_SCHEMA, ("event_time", "server_upload_time")),
    SESSIONS_TABLE: TableSpec(SESSION_SCHEMA, ("session_start",)),
}


_VERIFIED_SECRETS: set[tuple[str, str]] = set()


def time_range(bound: Filter | None) -> TimeRange | None:
    """The range of a pushed-down filter; None when it is impossible (``x > b AND x < a``)."""
    if bound is None:
        return TimeRange(None, None)
    if isinstance(bound, Impossible):
        return None
    assert isinstance(bound, Range)
    start = to_utc(bound.start) if bound.start is not None else None
    end = to_utc(bound.end) if bound.end is not None else None
    if start is not None and end is not None and (start > end or (start == end and not (
            bound.include_start and bound.include_end))):
        return None
    return TimeRange(start, end, bound.include_start, bound.include_end)


class AmplitudeAPI(Adapter):
    """Amplitude raw events and sessions as SQL tables (``amplitude_events``, ``amplitude_sessions``)."""

    safe = True
    supports_limit = False
    supports_offset = False
    supports_requested_columns = True

    @staticmethod
    def supports(uri: str, fast: bool = True, **kwargs: Any) -> bool:
        return uri in TABLES

    @staticmethod
    def parse_uri(uri: str) -> tuple[str]:
        return (uri,)

    def __init__(
        self,
        table: str,
        api_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us",
        base_url: str | None = None,
        cache_dir: str | None = None,
        window_hours: int = 24,
        late_hours: int = 48,
        default_days: int = 30,
        offline: bool = False,
        download_budget_s: float | None = None,
    ) -> None:
        super().__init__()
        if table not in TABLES:
            raise ProgrammingError(f"Unknown table {table!r}: use {EVENTS_TABLE} or {SESSIONS_TABLE}.")
        for name, value, lowest in (("window_hours", window_hours, 1), ("late_hours", late_hours, 0),
                                    ("default_days", default_days, 1)):
            if not isinstance(value, int) or value < lowest:
                raise ProgrammingError(f"{name} must be an integer of at least {lowest}, not {value!r}.")
        if window_hours > MAX_QUERY_DAYS * 24:
            raise ProgrammingError("window_hours cannot exceed 8760 (the Export API's 365-day limit).")
        if not api_key:
            raise ProgrammingError("The amplitude adapter needs api_key (and secret_key) in its adapter kwargs.")
        try:
            self.base_url = resolve_base_url(region, base_url)
        except AmplitudeError as exc:
            raise ProgrammingError(str(exc)) from None
        self.table = table
        self.spec = TABLES[table]
        self.api_key = api_key
        self._secret_key = secret_key or ""
        self.cache_dir = cache_dir
        self.window_hours = window_hours
        self.late_hours = late_hours
        self.default_days = default_days
        self.offline = offline
        if download_budget_s is not None and (not isinstance(download_budget_s, int | float) or download_budget_s <= 0):
            raise ProgrammingError(f"download_budget_s must be a positive number, not {download_budget_s!r}.")
        self.download_budget_s = download_budget_s
        #: Replaced by the connection's clock on ``amplitude://``, so that the tables of one query share a budget.
        self.query_clock = QueryClock()
        self._columns = self.spec.columns()

    def get_columns(self) -> dict[str, Field]:
        return self._columns

    def get_metadata(self) -> dict[str, Any]:
        store = HourStore(self.cache_dir, self.base_url, self.api_key)
        newest = store.newest_final_hour()
        return {
            "table": self.table,
            "data_complete_through": (newest + HOUR).isoformat() if newest else None,
            "region_host": self.base_url,
        }

    def get_cost(self, filtered_columns: list[tuple[str, Operator]], order: list[tuple[str, RequestedOrder]]) -> float:
        """Cheaper when a time column is bounded, so SQLite prefers plans that push the range down."""
        bounded = any(column in self.spec.time_columns for column, _ in filtered_columns)
        return 1_000.0 if bounded else 100_000.0

    def get_rows(
        self,
        bounds: dict[str, Filter],
        order: list[tuple[str, RequestedOrder]],
        **kwargs: Any,
    ) -> Iterator[Row]:
        """Rows are built in their final Python types already: no per-value parsing."""
        return self.get_data(bounds, order, **kwargs)

    def get_data(
        self,
        bounds: dict[str, Filter],
        order: list[tuple[str, RequestedOrder]],
        requested_columns: set[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[Row]:
        """Rows of the time ranges pushed down (a plain iterator, not a generator: no Python frame per row)."""
        columns = self.requested(requested_columns)
        return self.select(bounds, columns).rows(columns)

    def requested(self, requested_columns: Iterable[str] | None) -> list[str]:
        """The requested columns in table order (all of them when shillelagh names none)."""
        if requested_columns is None:
            return list(self._columns)
        return [name for name in self._columns if name in requested_columns]

    def select(self, bounds: dict[str, Filter], columns: list[str]) -> Selection:
        """The rows the pushed-down bounds select, with ``columns`` read into memory."""
        ranges = {column: time_range(bounds.get(column)) for column in self.spec.time_columns}
        if any(bound is None for bound in ranges.values()):
            return NO_ROWS
        now = datetime.now(UTC)
        try:
            ranges = self._effective_ranges(ranges, now)
            key, scan = self._load(ranges, now)
            selection = scan.select(ranges)
            if len(selection):
                scan.columns(columns)
        except AmplitudeFault as exc:  # the network, Amplitude or the store failed: the traceback is kept
            raise OperationalError(str(exc)) from exc
        except AmplitudeError as exc:  # a refusal (a range too long, hours missing offline, wrong keys)
            raise ProgrammingError(str(exc)) from None
        TABLE_CACHE.put(key, scan)  # again: the columns read may have grown it past the budget
        return selection

    # --- reading ------------------------------------------------------------------------------------
    def _effective_ranges(self, ranges: dict[str, TimeRange], now: datetime) -> dict[str, TimeRange]:
        """Close open starts with the ``default_days`` window; with no time predicate, read the main column over
        the ``default_days`` whole UTC days before :func:`whole_days_end` and on: as the background sync and the
        dashboard cover them."""
        default_span = timedelta(days=self.default_days)
        bounded = {
            column: replace(bound, start=bound.start or floor_hour((bound.end or now) - default_span))
            for column, bound in ranges.items()
            if bound.start is not None or bound.end is not None
        }
        if not bounded:
            main = self.spec.time_columns[0]
            bounded[main] = TimeRange(whole_days_end(now) - default_span, None)
        for bound in bounded.values():
            if (bound.end or now) - bound.start > timedelta(days=MAX_QUERY_DAYS):
                raise AmplitudeError(
                    f"The time range {bound.start:%Y-%m-%d} to {bound.end or now:%Y-%m-%d} is over "
                    f"{MAX_QUERY_DAYS} days; narrow it."
                )
        return bounded

    def _upload_hours(self, ranges: dict[str, TimeRange],
                      now: datetime) -> tuple[datetime, datetime, datetime, datetime]:
        """Upload hours to read: every hour in which events of the queried range can have been uploaded; and the
        core of them, without that padding and short of the hours late uploads may still change (the hours an
        offline store must hold).

        Events reach Amplitude after they happen, up to ``late_hours`` later, and a session's last event up to
        a day after its start; a device whose clock runs ahead uploads up to ``CLOCK_SKEW`` "before" its events.
        """
        spans, cores = [], []
        for column, bound in ranges.items():
            first = floor_hour(bound.start)
            # an inclusive end on the hour (BETWEEN ... AND '2026-03-02') needs the hour that starts there
            end_hour = floor_hour(bound.end) if bound.end and bound.include_end else ceil_hour(bound.end or now) - HOUR
            last = max(first, end_hour)
            cores.append((first, last))
            if column != "server_upload_time":
                first -= CLOCK_SKEW
                last += timedelta(hours=self.late_hours)
            if column == "session_start":
                last += timedelta(seconds=MAX_LENGTH_S)
            spans.append((first, last))
        first, last = max(span[0] for span in spans), min(span[1] for span in spans)
        core_first, core_last = max(core[0] for core in cores), min(core[1] for core in cores)
        # a range reaching the present (no end: the default window) needs no hour a late upload may still change
        settled = floor_hour(now) - timedelta(hours=self.late_hours)
        if self.table == SESSIONS_TABLE:
            settled -= timedelta(seconds=MAX_LENGTH_S)
        return first, min(last, floor_hour(now)), core_first, min(core_last, settled)

    def _load(self, ranges: dict[str, TimeRange], now: datetime) -> tuple[tuple, ScanTable]:
        """The scan table holding every row the ranges can select (from the cache when the hours are unchanged)."""
        first, last, core_first, core_last = self._upload_hours(ranges, now)
        hours = list(hour_range(first, last)) if first <= last else []
        store = HourStore(self.cache_dir, self.base_url, self.api_key)
        self._fill_and_verify(store, first, last, now)
        stored = store.stored(hours, now, any_age=self.offline)  # one listing per day
        if self.offline:
            check_offline(store, stored, core_first, core_last)
        files = [entry for _, entry in stored if entry is not None and entry.name.endswith(".arrow")]
        key = (self.table, store.location.display, tuple((entry.path, entry.mtime_ns) for entry in files))
        scan = TABLE_CACHE.get(key)
        if scan is None:
            main = self.spec.time_columns[0]
            if self.table == SESSIONS_TABLE:
                scan = ScanTable.of(self._sessions(store, files, key), main)
            else:
                scan = ScanTable(functools.partial(store.read_files, files), main)
            TABLE_CACHE.put(key, scan)
        return key, scan

    @staticmethod
    def _sessions(store: HourStore, files: list[FileEntry], key: tuple) -> pa.Table:
        """Sessions of the listed hour files, built once and kept beside them for every process (same files,
        same key)."""
        digest = hashlib.sha256(f"{__version__}{SESSION_SCHEMA}{key}".encode()).hexdigest()[:32]
        table = store.read_derived(digest)
        if table is None:
            table = build_sessions(read_checked(functools.partial(store.read_files, files), list(EVENT_COLUMNS)))
            store.write_derived(digest, table)
        return table

    # --- downloading and credentials ----------------------------------------------------------------
    def _client(self) -> ExportClient:
        return ExportClient(self.api_key, self._secret_key, base_url=self.base_url)

    def _fill_and_verify(self, store: HourStore, first: datetime, last: datetime, now: datetime) -> None:
        """Download missing hours; make sure the secret key is right even when every hour is already stored.

        A store remembers a salted hash of the last secret Amplitude accepted. A different secret is tried
        against Amplitude (one request for the newest exportable hour, its body left unread) before any stored
        data is served; offline, it is refused outright.
        """
        memo = (str(store.root), hashlib.sha256(self._secret_key.encode()).hexdigest())
        known = memo in _VERIFIED_SECRETS or store.secret_status(self._secret_key)
        if self.offline:
            if known is False:
                raise AuthenticationError(
                    "The secret key does not match the one this project's local store was filled with."
                )
            if known:
                _VERIFIED_SECRETS.add(memo)
            return
        client = self._client()
        deadline = self.query_clock.deadline(self.download_budget_s)
        try:
            downloaded = first <= last and fill(store, client, first, last, now=now, window_hours=self.window_hours,
                                                deadline=deadline).windows
        except DownloadBudgetExceeded as exc:
            raise AmplitudeError(budget_message(exc, self.download_budget_s, self.base_url)) from None
        if not downloaded and known is not True:
            probe = newest_exportable_hour(now)
            client.deadline = deadline
            try:
                client.answer(Window(probe, probe))
            except DeadlinePassed:
                raise AmplitudeError(
                    f"Amplitude did not answer within this connection's download budget of "
                    f"{self.download_budget_s:g} s, so this new secret key could not be checked; try again."
                ) from None
        if known is not True:
            store.remember_secret(self._secret_key)
        _VERIFIED_SECRETS.add(memo)
