"""A safe shillelagh adapter serving ``amplitude_events``, ``amplitude_sessions`` and ``amplitude_user_sessions``
from Amplitude's Export API.

Time predicates are pushed down and filtered exactly here (``exact=True``): shillelagh hands SQLite timestamps as
ISO text with a ``T``, which SQLite would compare as text against Superset's ``'YYYY-MM-DD HH:MM:SS'`` literals and
get sub-day bounds wrong. Naive literals are UTC, zoned ones are converted, so both forms mix in one query. Only the
upload hours a query needs are read: from the local hour store, downloading the missing ones first. Tables built
from the store are kept in a small process-wide cache, so the repeated scans that ``IN`` lists and joins cause
never download or decode twice. Sessions and user sessions (per gap) are built once and kept beside the hours.

:meth:`AmplitudeAPI.select` serves both row paths: the columnar cursor of ``amplitude://`` (:mod:`.columnar`) and
shillelagh's generic one (``get_rows``, for ``shillelagh+safe://``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import apsw
import pyarrow as pa
from shillelagh.adapters.base import Adapter
from shillelagh.backends.apsw.vt import VTTable
from shillelagh.exceptions import ProgrammingError
from shillelagh.fields import Boolean, DateTime, Field, Float, Integer, String
from shillelagh.filters import Equal, Filter, Impossible, Operator, Range
from shillelagh.typing import RequestedOrder, Row

from .. import __version__
from ..export.client import (
    MISSING_KEYS,
    AmplitudeError,
    AuthenticationError,
    DeadlinePassed,
    ExportClient,
    Window,
    resolve_base_url,
)
from ..export.loader import DownloadBudgetExceeded, fill
from ..export.probe import OFFLINE_MISMATCH, OFFLINE_UNVERIFIED
from ..hours import (
    CLOCK_SKEW,
    HOUR,
    LOOKBACK,
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
from .columnar import dbapi_errors, plan
from .destination import canonical, check_base_url
from .freshness import budget_message, check_offline
from .scan import NO_ROWS, TABLE_CACHE, Reader, ScanTable, Selection, StoreChanged, TimeRange, read_checked
from .secret_binding import usable_secret
from .sessions import EVENT_COLUMNS, MAX_LENGTH_S, SESSION_SCHEMA, build_sessions, contains_any
from .user_sessions import (
    DEFAULT_GAP_MINUTES,
    MAX_GAP_MINUTES,
    MIN_GAP_MINUTES,
    USER_SESSION_SCHEMA,
    build_user_sessions,
)
from .user_sessions import EVENT_COLUMNS as USER_EVENT_COLUMNS

_logger = logging.getLogger(__name__)

EVENTS_TABLE = "amplitude_events"
SESSIONS_TABLE = "amplitude_sessions"
USER_SESSIONS_TABLE = "amplitude_user_sessions"
GAP_COLUMN = "gap_minutes"
MAX_QUERY_DAYS = 365
#: How many times a query lists the stored hours it reads when one is re-published between its listing and its
#: read (the background sync refreshes recent hours every run): only the last listing's refusal reaches the user.
LISTINGS = 3
#: Runs a background sync may miss before a query it serves downloads the newest hours itself (:meth:`_store_time`).
SYNC_RUNS_MISSED = 2
#: The sessions' filter column: ``contains_event IN ('search', 'purchase')`` keeps the sessions in which one of
#: those event types happened. Only ``amplitude://``'s cursor applies it (:mod:`.columnar`); its value reads NULL.
CONTAINS_EVENT = "contains_event"


class UTCDateTime(DateTime):
    """A TIMESTAMP column whose pushed-down bounds are aware UTC datetimes: naive literals are UTC.

    shillelagh parses each bound, then calls the column's ``format``; making every bound aware here lets a query
    mix naive and zoned literals (``>= '2026-03-03' AND < '2026-03-10T00:00:00+00:00'``) in one range.
    """

    def format(self, value: datetime | None) -> datetime | None:
        return None if value is None else to_utc(value)


def _field(arrow_type: pa.DataType, filterable: bool = False) -> Field:
    """The shillelagh field of an Arrow column; filterable timestamps take exact ``Range`` filters, a filterable
    integer (the gap of user sessions) ``Equal`` ones (``IN`` lists: one scan per value). SQLite re-checks those:
    shillelagh hands the adapter ``gap_minutes = 7.5`` as 7, and the rows of gap 7 must not answer it."""
    if arrow_type == TIMESTAMP:
        return UTCDateTime(filters=[Range], exact=True) if filterable else UTCDateTime()
    if pa.types.is_integer(arrow_type):
        return Integer(filters=[Equal]) if filterable else Integer()
    if pa.types.is_floating(arrow_type):
        return Float()
    if pa.types.is_boolean(arrow_type):
        return Boolean()
    return String()


@dataclass(frozen=True)
class TableSpec:
    """What one table serves: its schema, which timestamp columns take pushed-down ranges, which column takes
    pushed-down equalities, and its filter-only columns (not stored: a constraint on them selects rows)."""

    schema: pa.Schema
    time_columns: tuple[str, ...]
    choice_column: str | None = None
    filter_columns: tuple[str, ...] = ()

    def columns(self) -> dict[str, Field]:
        pushed = (*self.time_columns, self.choice_column)
        stored = {f.name: _field(f.type, f.name in pushed) for f in self.schema}
        return {**stored, **{name: String() for name in self.filter_columns}}


TABLES = {
    EVENTS_TABLE: TableSpec(EVENT_SCHEMA, ("event_time", "server_upload_time")),
    SESSIONS_TABLE: TableSpec(SESSION_SCHEMA, ("session_start",), filter_columns=(CONTAINS_EVENT,)),
    USER_SESSIONS_TABLE: TableSpec(USER_SESSION_SCHEMA, ("session_start",), GAP_COLUMN),
}


_VERIFIED_SECRETS: set[tuple[str, str]] = set()


def asked(ranges: dict[str, TimeRange]) -> str:
    """The time range a query asked for, in its own terms (an open end is "on")."""
    def when(value: datetime) -> str:
        return f"{value:%Y-%m-%d %H:%M}" if value.hour or value.minute else f"{value:%Y-%m-%d}"

    return " and ".join(
        f"{column} from {when(bound.start)} to {when(bound.end)} UTC" if bound.end is not None
        else f"{column} from {when(bound.start)} UTC on" for column, bound in ranges.items()
    )


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


def gap_minutes(bound: Filter | None) -> int:
    """The inactivity gap a pushed-down ``gap_minutes = n`` chooses (one ``IN`` value per scan); 30 without one."""
    if bound is None:
        return DEFAULT_GAP_MINUTES
    assert isinstance(bound, Equal)
    value = bound.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_GAP_MINUTES <= value <= MAX_GAP_MINUTES:
        raise ProgrammingError(
            f"gap_minutes must be a whole number of minutes from {MIN_GAP_MINUTES} to {MAX_GAP_MINUTES} (24 h), "
            f"not {value!r}: choose it with gap_minutes = 60 or gap_minutes IN (30, 60)."
        )
    return value


class AmplitudeAPI(Adapter):
    """Amplitude raw events, sessions and user sessions as SQL tables (``amplitude_events``,
    ``amplitude_sessions``, ``amplitude_user_sessions``)."""

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
        sync_interval_s: float | None = None,
        lake: str | None = None,
    ) -> None:
        """``sync_interval_s``: a background sync keeps this project's store current that often (Superset with
        Celery: ``superset_config.py``), see :meth:`_store_time`. ``lake``: where the background sync publishes
        this project's lake (``superset/tasks.py``); queries do not use it."""
        super().__init__()
        if table not in TABLES:
            raise ProgrammingError(f"Unknown table {table!r}: use {', '.join(TABLES)}.")
        for name, value, lowest in (("window_hours", window_hours, 1), ("late_hours", late_hours, 0),
                                    ("default_days", default_days, 1)):
            if not isinstance(value, int) or value < lowest:
                raise ProgrammingError(f"{name} must be an integer of at least {lowest}, not {value!r}.")
        if window_hours > MAX_QUERY_DAYS * 24:
            raise ProgrammingError("window_hours cannot exceed 8760 (the Export API's 365-day limit).")
        if not api_key:
            raise ProgrammingError(MISSING_KEYS)
        try:
            self.base_url = resolve_base_url(region, base_url)
            check_base_url(base_url)
            secret_key = usable_secret(secret_key, api_key, canonical(self.base_url))
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
        if sync_interval_s is not None and (not isinstance(sync_interval_s, int | float) or sync_interval_s <= 0):
            raise ProgrammingError(f"sync_interval_s must be a positive number, not {sync_interval_s!r}.")
        self.sync_interval_s = sync_interval_s
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
        """The requested stored columns in table order (all of them when shillelagh names none); filter-only
        columns are left out (their value is NULL)."""
        stored = [name for name in self._columns if name not in self.spec.filter_columns]
        if requested_columns is None:
            return stored
        return [name for name in stored if name in requested_columns]

    def select(self, bounds: dict[str, Filter], columns: list[str],
               contains_event: Sequence[set[str]] = ()) -> Selection:
        """The rows the pushed-down bounds select, with ``columns`` read into memory; each set of
        ``contains_event`` keeps the sessions holding one of its event types."""
        ranges = {column: time_range(bounds.get(column)) for column in self.spec.time_columns}
        choice = bounds.get(self.spec.choice_column) if self.spec.choice_column else None
        if any(bound is None for bound in ranges.values()) or isinstance(choice, Impossible):
            return NO_ROWS
        gap = gap_minutes(choice) if self.table == USER_SESSIONS_TABLE else None
        now = datetime.now(UTC)
        with dbapi_errors():
            ranges = self._effective_ranges(ranges, now)
            key, scan = self._load(ranges, now, gap)
            selection = scan.select(ranges)
            for wanted in contains_event:
                selection = selection.where("event_types", functools.partial(contains_any, wanted=wanted))
            if len(selection):
                scan.columns(columns)
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
        User sessions also read the ``LOOKBACK`` before the range (:meth:`_since`).
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
            if self.table == USER_SESSIONS_TABLE:
                first -= LOOKBACK
            spans.append((first, last))
        first, last = max(span[0] for span in spans), min(span[1] for span in spans)
        core_first, core_last = max(core[0] for core in cores), min(core[1] for core in cores)
        # a range reaching the present (no end: the default window) needs no hour a late upload may still change
        settled = floor_hour(now) - timedelta(hours=self.late_hours)
        if self.table == SESSIONS_TABLE:
            settled -= timedelta(seconds=MAX_LENGTH_S)
        return first, min(last, floor_hour(now)), core_first, min(core_last, settled)

    @staticmethod
    def _since(ranges: dict[str, TimeRange]) -> datetime:
        """Where user sessions start being built: ``LOOKBACK`` before the hour of the range's start."""
        return floor_hour(ranges["session_start"].start) - LOOKBACK

    def _load(self, ranges: dict[str, TimeRange], now: datetime, gap: int | None) -> tuple[tuple, ScanTable]:
        """The scan table holding every row the ranges can select (from the cache when the hours are unchanged)."""
        first, last, core_first, core_last = self._upload_hours(ranges, now)
        hours = list(hour_range(first, last)) if first <= last else []
        store = HourStore(self.cache_dir, self.base_url, self.api_key)
        seen = self._store_time(now)
        self._fill_and_verify(store, first, last, seen)
        for _ in range(LISTINGS - 1):
            with contextlib.suppress(StoreChanged):  # a sync re-published a listed hour before its read: list again
                return self._listed(store, hours, ranges, seen, gap, core_first, core_last)
        return self._listed(store, hours, ranges, seen, gap, core_first, core_last)

    def _store_time(self, now: datetime) -> datetime:
        """The time at which the store must be current for this query: ``now``; with a background sync
        (``sync_interval_s``), ``SYNC_RUNS_MISSED`` runs earlier. The hours that became exportable since, and the
        fresh hours' refreshes, are the sync's to download: a query reads what the sync stored and downloads
        only what it has missed for that long (a sync that stopped), so that the web processes do not all race
        the sync to the Export API at every hour's turn or fresh hour's expiry."""
        if self.sync_interval_s is None:
            return now
        return now - timedelta(seconds=SYNC_RUNS_MISSED * self.sync_interval_s)

    def _listed(self, store: HourStore, hours: list[datetime], ranges: dict[str, TimeRange], seen: datetime,
                gap: int | None, core_first: datetime, core_last: datetime) -> tuple[tuple, ScanTable]:
        """The scan table of the hours stored now (one listing), from the cache when their files are unchanged;
        ``seen``: :meth:`_store_time`, for which fresh hours are still valid."""
        stored = store.stored(hours, seen, any_age=self.offline)  # one listing per day
        if self.offline:
            check_offline(store, stored, core_first, core_last, asked(ranges))
        hour_files = [(hour, entry) for hour, entry in stored if entry is not None and entry.name.endswith(".arrow")]
        files = [entry for _, entry in hour_files]
        key = (self.table, store.location.display, tuple((entry.path, entry.mtime_ns) for entry in files))
        if gap is not None:
            since = self._since(ranges)
            key += (gap, since.isoformat())
        # each file's version by its hour: a table of a refreshed hour's older file is dropped from the cache
        sources = {(store.location.display, store.project, hour): entry.mtime_ns for hour, entry in hour_files}

        def make() -> ScanTable:
            main = self.spec.time_columns[0]
            if self.table == SESSIONS_TABLE:
                return ScanTable(self._derived(store, files, key, build_sessions, EVENT_COLUMNS), main, sources=sources)
            if gap is not None:
                build = functools.partial(build_user_sessions, gap_minutes=gap, since=since)
                return ScanTable(self._derived(store, files, key, build, USER_EVENT_COLUMNS), main, sources=sources)
            return ScanTable(functools.partial(store.read_files, files), main, sources=sources)

        return key, TABLE_CACHE.get_or_make(key, make)

    def _derived(self, store: HourStore, files: list[FileEntry], key: tuple, build: Callable[[pa.Table], pa.Table],
                 columns: tuple[str, ...]) -> Reader:
        """The reader of a table built from the listed hour files' ``columns`` once, and kept beside them for every
        process (same files, same key): it reads the columns a query asks for, as it asks for them. A kept table
        removed meanwhile (the store keeps the most recent ones) is built again."""
        digest = hashlib.sha256(f"{__version__}{self.spec.schema}{key}".encode()).hexdigest()[:32]

        def read(names: list[str]) -> pa.Table:
            table = store.read_derived(digest, names)
            if table is None:
                table = build(read_checked(functools.partial(store.read_files, files), list(columns)))
                store.write_derived(digest, table)
            return table.select(names)

        return read

    # --- downloading and credentials ----------------------------------------------------------------
    def _client(self) -> ExportClient:
        return ExportClient(self.api_key, self._secret_key, base_url=self.base_url)

    def _fill_and_verify(self, store: HourStore, first: datetime, last: datetime, now: datetime) -> None:
        """Download missing hours; make sure the secret key is right even when every hour is already stored.

        A store remembers a salted hash of the last secret Amplitude accepted. A different secret is tried
        against Amplitude (one request for the newest exportable hour, its body left unread) before any stored
        data is served; offline, it is refused outright, and so is any secret when the store has no verifier
        (the API key alone, which is not secret, never opens a store).
        """
        memo = (str(store.root), hashlib.sha256(self._secret_key.encode()).hexdigest())
        known = memo in _VERIFIED_SECRETS or store.secret_status(self._secret_key)
        if self.offline:
            if not known:
                raise AuthenticationError(OFFLINE_UNVERIFIED if known is None else OFFLINE_MISMATCH)
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


_SHILLELAGH_BEST_INDEX = VTTable.BestIndexObject


def _best_index(table: VTTable, index_info: apsw.IndexInfo) -> bool:
    """The generic path's planning (``shillelagh+safe://``, shillelagh's own ``VTTable``): this adapter's tables are
    planned by :func:`.columnar.plan`, so that an ``IN`` list written before the time range no longer makes SQLite
    fail with "xBestIndex malfunction"; other adapters' tables keep shillelagh's planning."""
    if not isinstance(table.adapter, AmplitudeAPI):
        return _SHILLELAGH_BEST_INDEX(table, index_info)
    plan(table, index_info, set())  # SQLite re-checks gap_minutes: shillelagh's cursor hands 7.5 on as 7
    return True


VTTable.BestIndexObject = _best_index
